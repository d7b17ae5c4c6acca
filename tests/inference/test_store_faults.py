"""Zarr stores under faults: corrupt source tiles, transient read errors, a full disk."""

from __future__ import annotations

import errno
import shutil
from pathlib import Path

import numpy as np
import pytest
import rasterio
import xarray as xr
import zarr
from test_store import STRIDE, TILE, tree, write_scene

from geobind.errors import GeoBindError
from geobind.inference import store as zstore
from geobind.inference.store import StoreError, embed_to_zarr
from geobind.inference.store import tiles as ztiles


@pytest.fixture(scope="module")
def clean(tmp_path_factory) -> tuple[Path, Path]:
    """A scene and the store of an uninterrupted run."""
    folder = tmp_path_factory.mktemp("clean")
    scene = write_scene(folder / "scene.tif")
    embed_to_zarr(scene, folder / "ref.zarr", model="tiny", stride=STRIDE, tile=TILE)
    return scene, folder / "ref.zarr"


def corrupt_block(path: Path, row: int, col: int) -> None:
    """Zero the compressed bytes of one 64 × 64 GeoTIFF block, so reading it fails."""
    with rasterio.open(path) as src:
        offset = int(src.get_tag_item(f"BLOCK_OFFSET_{col}_{row}", "TIFF", bidx=1))
        size = int(src.get_tag_item(f"BLOCK_SIZE_{col}_{row}", "TIFF", bidx=1))
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(b"\x00" * size)


def test_corrupt_source_tile_is_reported_and_the_rest_finishes(clean, tmp_path):
    scene, reference = clean
    broken = tmp_path / "scene.tif"
    shutil.copy(scene, broken)
    corrupt_block(broken, row=2, col=2)  # pixels 128–192 × 128–160
    summary = embed_to_zarr(broken, tmp_path / "s.zarr", model="tiny", stride=STRIDE, tile=TILE)
    # tiles whose chips (halo included) read that block: cell rows/cols 4–11 cover pixels 64–208
    bad = {(1, 1), (1, 2), (2, 1), (2, 2)}
    assert summary.done == 5 and {f.tile for f in summary.failed} == bad
    failed = next(f for f in summary.failed if f.tile == (2, 2))
    assert failed.group == "scene" and failed.source == str(broken)
    assert (failed.rows, failed.cols) == ((128, 192), (128, 160))  # the block that failed
    assert failed.bounds == (500_128, 4_600_000 - 192, 500_160, 4_600_000 - 128)
    assert "RasterioIOError" in failed.error and "IReadBlock failed" in failed.error
    assert "tile (2, 2)" in str(summary) and str(broken) in str(summary)

    stored = xr.open_zarr(tmp_path / "s.zarr", group="scene")["embedding"].values
    expected = xr.open_zarr(reference, group="scene")["embedding"].values
    lost = np.zeros(stored.shape[1:], bool)
    for i, j in bad:
        lost[i * TILE : (i + 1) * TILE, j * TILE : (j + 1) * TILE] = True
    assert np.isnan(stored[:, lost]).all()  # failed tiles stay NaN, the rest is as usual
    assert np.array_equal(stored[:, ~lost], expected[:, ~lost], equal_nan=True)
    recorded = zarr.open_group(tmp_path / "s.zarr", path="scene/tiles").attrs["failed"]
    assert sorted(tuple(f["tile"]) for f in recorded) == sorted(bad)

    again = embed_to_zarr(broken, tmp_path / "s.zarr", model="tiny", stride=STRIDE, tile=TILE)
    assert (again.skipped, again.done, len(again.failed)) == (5, 0, 4)  # retried, fails again


def test_transient_read_error_is_retried_by_a_rerun(clean, tmp_path, monkeypatch):
    scene, reference = clean
    read = ztiles._read_block

    def flaky(src, job, rows, cols):
        if job.tile == (1, 0):
            raise rasterio.errors.RasterioIOError("Read failed (network hiccup)")
        return read(src, job, rows, cols)

    monkeypatch.setattr(ztiles, "_read_block", flaky)
    root = tmp_path / "s.zarr"
    first = embed_to_zarr(scene, root, model="tiny", stride=STRIDE, tile=TILE)
    assert [f.tile for f in first.failed] == [(1, 0)] and "network hiccup" in first.failed[0].error
    monkeypatch.setattr(ztiles, "_read_block", read)
    second = embed_to_zarr(scene, root, model="tiny", stride=STRIDE, tile=TILE)
    assert (second.done, second.skipped, second.failed) == (1, 8, [])
    assert tree(root) == tree(reference)


def test_disk_full_is_a_clear_error_and_a_rerun_completes(clean, tmp_path, monkeypatch):
    scene, reference = clean
    write = ztiles._write_chunk
    calls = []

    def full(*args):
        calls.append(1)
        if len(calls) > 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        write(*args)

    monkeypatch.setattr(ztiles, "_write_chunk", full)
    root = tmp_path / "s.zarr"
    with pytest.raises(StoreError, match="no space left on device") as err:
        embed_to_zarr(scene, root, model="tiny", stride=STRIDE, tile=TILE)
    assert isinstance(err.value, GeoBindError) and isinstance(err.value, OSError)
    assert "rerun the same command" in str(err.value)
    assert not (root / zstore.LOCK_NAME).exists()
    partial = xr.open_zarr(root, group="scene")["embedding"]  # still a valid store
    assert partial.shape == (64, 11, 9)
    monkeypatch.setattr(ztiles, "_write_chunk", write)
    summary = embed_to_zarr(scene, root, model="tiny", stride=STRIDE, tile=TILE)
    assert summary.skipped == 3 and summary.done == 6
    assert tree(root) == tree(reference)
