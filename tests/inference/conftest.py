"""Fixtures of the store tests: one small scene and the store of an uninterrupted local run, per
test module (tests may write beside them)."""

from __future__ import annotations

import pytest
from test_store import STRIDE, TILE, write_scene

from geobind.inference.store import embed_to_zarr


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    """A 4-band uint8 GeoTIFF with a nodata corner (:func:`test_store.write_scene`)."""
    return write_scene(tmp_path_factory.mktemp("scenes") / "scene.tif")


@pytest.fixture(scope="module")
def reference(scene, tmp_path_factory):
    """The store of an uninterrupted local run (tile 4, stride 16)."""
    root = tmp_path_factory.mktemp("ref") / "ref.zarr"
    embed_to_zarr(scene, root, model="tiny", stride=STRIDE, tile=TILE, client=False)
    return root
