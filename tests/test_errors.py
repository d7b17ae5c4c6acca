"""Errors whose messages are built in one place: BandsError and ModelMismatchError."""

from __future__ import annotations

import pickle

import pytest

from geobind.errors import BandsError, GeoBindError, InputDataError, ModelMismatchError


def test_bands_error_message_and_classes():
    err = BandsError([1, 2, 3], 1, where="dem.tif")
    assert isinstance(err, InputDataError) and isinstance(err, ValueError)
    assert str(err) == (
        "the model reads bands [1, 2, 3] (1-based) but dem.tif has 1 band(s); pass bands=[...] "
        "naming the red, green and blue bands (e.g. bands=[1, 1, 1] for a single-band raster)"
    )
    assert "but the raster has 4 band(s)" in str(BandsError((1, 2, 9), 4))
    assert (err.bands, err.count, err.where) == ([1, 2, 3], 1, "dem.tif")


def test_model_mismatch_error_names_both_encoders_and_the_fix():
    names = {"where": "store s.zarr", "made_by": "stage1", "given": "other"}
    err = ModelMismatchError(
        **names, made_sha256="a" * 64, given_sha256="b" * 64, source="/models/stage1"
    )
    assert isinstance(err, GeoBindError) and isinstance(err, ValueError)
    text = str(err)
    assert text.startswith("store s.zarr holds embeddings of model 'stage1'")
    assert "a" * 12 + "…" in text and "b" * 12 + "…" in text and "a" * 13 not in text
    assert "model='/models/stage1'" in text and "later stage" in text
    assert "\n" not in text  # one line on the command line
    legacy = ModelMismatchError(**names, made_sha256="c" * 64, given_sha256="d" * 64,
                                weights_hash=True)  # fmt: skip
    assert "(model sha256 cccccccccccc…)" in str(legacy)


@pytest.mark.parametrize(
    "err",
    [
        BandsError([4, 3, 2], 1, where="a chip"),
        ModelMismatchError(
            where="this grid", made_by="a", made_sha256="1" * 64, given="b", given_sha256="2" * 64
        ),
    ],
)
def test_errors_survive_pickling(err):
    """Errors raised on dask workers travel back pickled."""
    back = pickle.loads(pickle.dumps(err))
    assert type(back) is type(err) and str(back) == str(err)
