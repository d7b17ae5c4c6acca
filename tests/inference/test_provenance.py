"""Provenance by satellite encoder: a later stage queries what its earlier stage embedded.

The "stage 2" model here is built without training: the ``tiny`` preset saved, then its audio
encoder changed (as stage 2 does) and saved again. Its satellite encoder is bitwise the same, so
stores and grids embedded by the first model are queried by the second without embedding again;
a model with another satellite encoder is refused with ``ModelMismatchError`` everywhere.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from test_store import STRIDE, TILE, tree, write_scene

import geobind
from geobind.cli import main
from geobind.errors import GeoBindError, ModelMismatchError
from geobind.inference.provenance import check_same_sat, grid_attrs, sat_sha256
from geobind.inference.store import embed_to_zarr, open_store, query_store
from geobind.inference.store import tiles as ztiles
from geobind.inference.store import write as zwrite


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    """Model folders: ``stage1``, ``stage2`` (only the audio encoder changed), ``other``."""
    root = tmp_path_factory.mktemp("models")
    model = geobind.load("tiny")
    model.save(root / "stage1")
    with torch.no_grad():
        for p in model["audio"].parameters():
            p.add_(0.25)
    model.save(root / "stage2")
    geobind.load("tiny", seed=1).save(root / "other")
    return {name: root / name for name in ("stage1", "stage2", "other")}


@pytest.fixture(scope="module")
def store(models, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("prov")
    scene = write_scene(folder / "scene.tif")
    embed_to_zarr(scene, folder / "s.zarr", model=str(models["stage1"]), stride=STRIDE, tile=TILE)
    return folder / "s.zarr"


def _meta(folder: Path) -> dict:
    return json.loads((folder / "geobind.json").read_text())


def _no_embedding(monkeypatch) -> None:
    def boom(*args, **kwargs):
        raise AssertionError("the store must not be embedded again")

    monkeypatch.setattr(ztiles, "embed_pixels", boom)


def test_the_stage2_like_model_keeps_the_satellite_encoder(models):
    one, two, other = (_meta(models[k]) for k in ("stage1", "stage2", "other"))
    assert one["weights_sha256"] != two["weights_sha256"]
    assert one["encoder_sha256"]["sat"] == two["encoder_sha256"]["sat"]
    assert one["encoder_sha256"]["audio"] != two["encoder_sha256"]["audio"]
    assert other["encoder_sha256"]["sat"] != one["encoder_sha256"]["sat"]
    assert sat_sha256(geobind.load(models["stage2"])) == one["encoder_sha256"]["sat"]


def test_store_records_the_satellite_encoder(models, store):
    sat = _meta(models["stage1"])["encoder_sha256"]["sat"]
    root = json.loads((store / "zarr.json").read_text())["attributes"]["geobind"]
    assert root["sat_sha256"] == sat and "model_sha256" not in root
    assert open_store(store).attrs["sat_sha256"] == sat


def test_stage2_queries_a_stage1_store_without_re_embedding(models, store, tmp_path, monkeypatch):
    before = tree(store)
    _no_embedding(monkeypatch)
    first = query_store(store, "forest", tmp_path / "one.tif", model=str(models["stage1"]))[0]
    second = query_store(store, "forest", tmp_path / "two.tif", model=str(models["stage2"]))[0]
    with rasterio.open(first) as a, rasterio.open(second) as b:
        np.testing.assert_array_equal(a.read(1), b.read(1))  # the text tower is unchanged too
    loaded = geobind.load(models["stage2"])
    query_store(store, "forest", tmp_path / "three.geojson", model=loaded, top_k=3)

    args = ["query", str(store), "forest", "--model", str(models["stage2"]), "--no-progress"]
    assert main([*args, "-o", str(tmp_path / "cli.tif")]) == 0
    with rasterio.open(first) as a, rasterio.open(tmp_path / "cli.tif") as b:
        np.testing.assert_array_equal(a.read(1), b.read(1))
    assert tree(store) == before  # not a byte of the store changed


def test_stage2_resumes_a_finished_stage1_store_without_loading(models, store, monkeypatch):
    before = tree(store)
    _no_embedding(monkeypatch)

    def no_load(*args, **kwargs):
        raise AssertionError("a finished store must not load the model")

    monkeypatch.setattr(zwrite, "_resolve", no_load)
    scene = store.parent / "scene.tif"
    summary = embed_to_zarr(scene, store, model=str(models["stage2"]), stride=STRIDE, tile=TILE)
    assert (summary.done, summary.skipped, summary.failed) == (0, 9, [])
    loaded = geobind.load(models["stage2"])
    again = embed_to_zarr(scene, store, model=loaded, stride=STRIDE, tile=TILE)
    assert (again.done, again.skipped) == (0, 9)
    assert tree(store) == before


def test_another_satellite_encoder_is_refused_everywhere(models, store, tmp_path, capsys):
    other = geobind.load(models["other"])
    with pytest.raises(ModelMismatchError, match="holds embeddings of model 'tiny'") as err:
        query_store(store, "forest", tmp_path / "m.tif", model=other)
    message, made_by = str(err.value), _meta(models["stage1"])["encoder_sha256"]["sat"]
    assert made_by[:12] in message and sat_sha256(other)[:12] in message  # which made it, given
    assert str(models["stage1"].resolve()) in message  # the fix names the store's model
    assert isinstance(err.value, GeoBindError) and isinstance(err.value, ValueError)
    assert not (tmp_path / "m.tif").exists()

    before = tree(store)
    scene = store.parent / "scene.tif"
    with pytest.raises(ModelMismatchError):
        embed_to_zarr(scene, store, model=str(models["other"]), stride=STRIDE, tile=TILE)
    assert tree(store) == before

    grid = open_store(store)
    with pytest.raises(ModelMismatchError, match="holds embeddings of model 'tiny'"):
        grid.geobind.similarity("forest", model=other)
    stage2 = grid.geobind.similarity("forest", model=geobind.load(models["stage2"]))
    assert stage2.shape == grid.shape[1:]

    capsys.readouterr()
    args = ["query", str(store), "forest", "-o", str(tmp_path / "m.tif"), "--no-progress"]
    assert main([*args, "--model", str(models["other"])]) == 2
    err_text = capsys.readouterr().err
    assert err_text.startswith("error: ") and err_text.count("\n") == 1
    assert "holds embeddings of model 'tiny'" in err_text


def test_in_memory_grids_follow_the_same_rule(models):
    import rioxarray

    raster = rioxarray.open_rasterio(write_scene(Path(models["stage1"]).parent / "g.tif"))
    stage1, stage2 = geobind.load(models["stage1"]), geobind.load(models["stage2"])
    grid = raster.geobind.embed(stage1, stride=STRIDE)
    assert grid.attrs["sat_sha256"] == sat_sha256(stage1)
    np.testing.assert_array_equal(
        grid.geobind.similarity("a lake", model=stage2).values,
        grid.geobind.similarity("a lake", model=stage1).values,
    )
    with pytest.raises(ModelMismatchError):
        grid.geobind.similarity("a lake", model=geobind.load(models["other"]))


def test_older_grids_and_stores_are_checked_against_the_weights_hash(models, store, tmp_path):
    """Written before ``sat_sha256``: ``model_sha256`` holds the weights file's hash."""
    import shutil

    stage1, stage2 = geobind.load(models["stage1"]), geobind.load(models["stage2"])
    old = {"model": "tiny", "model_sha256": stage1.weights_sha256}
    check_same_sat(old, stage1)  # the very model passes
    with pytest.raises(ModelMismatchError, match=r"model sha256 [0-9a-f]{12}…"):
        check_same_sat(old, stage2)  # as before: another weights file is refused
    check_same_sat({"model": "x", "model_sha256": sat_sha256(stage2)}, stage1)  # in-memory hash

    root = tmp_path / "old.zarr"
    shutil.copytree(store, root)
    sat = sat_sha256(stage1)
    for meta in root.rglob("zarr.json"):  # rewrite the store as an older geobind wrote it
        text = meta.read_text().replace('"sat_sha256"', '"model_sha256"')
        meta.write_text(text.replace(sat, stage1.weights_sha256))
    assert query_store(root, "forest", tmp_path / "m.tif", model=stage1)
    with pytest.raises(ModelMismatchError):
        query_store(root, "forest", tmp_path / "m.tif", model=stage2)
    scene = store.parent / "scene.tif"
    summary = embed_to_zarr(scene, root, model=str(models["stage1"]), stride=STRIDE, tile=TILE)
    assert (summary.done, summary.skipped) == (0, 9)


def test_grid_attrs_record_the_satellite_encoder():
    from geobind.inference.grid import ChipGrid

    model = geobind.load("tiny")
    attrs = grid_attrs(model, ChipGrid(64, 64, 32, 16))
    assert attrs["sat_sha256"] == model.encoder_sha256("sat") and "model_sha256" not in attrs
    check_same_sat(attrs, model)
    check_same_sat({}, model)  # nothing recorded: nothing to refuse
