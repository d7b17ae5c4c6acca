"""Zarr stores: round trip against the in-memory grid, resume, refusals, locking."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio
import xarray as xr
from rasterio.transform import from_origin

import geobind
from geobind.errors import GeoBindError, InputDataError, ModelMismatchError, OutputExistsError
from geobind.inference import store as zstore
from geobind.inference.raster import embed_raster
from geobind.inference.store import StoreLockedError, embed_to_zarr
from geobind.inference.store import tiles as ztiles
from geobind.inference.store import write as zwrite
from geobind.inference.store.lock import _StoreLock

STRIDE = 16  # tiny: 32-px chips at 1 m; a 192 × 160 scene gives an 11 × 9 grid
TILE = 4  # 3 × 3 tiles


def write_scene(path: Path, *, seed: int = 0, height: int = 192, width: int = 160) -> Path:
    """A 4-band uint8 GeoTIFF (UTM 33N, 1 m) with smooth structure and a nodata corner."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    base = np.stack(
        [128 + 100 * np.sin(xx / (9 + 3 * b) + b) * np.cos(yy / (13 + b) - seed) for b in range(4)]
    )
    data = np.clip(base + rng.normal(0, 12, base.shape), 1, 255).astype(np.uint8)
    data[:, :40, :40] = 0  # nodata corner: its chips are NaN cells
    profile = {
        "driver": "GTiff",
        "width": width,
        "height": height,
        "count": 4,
        "dtype": "uint8",
        "crs": "EPSG:32633",
        "transform": from_origin(500_000, 4_600_000, 1.0, 1.0),
        "nodata": 0,
        "tiled": True,
        "blockxsize": 64,
        "blockysize": 64,
        "compress": "deflate",
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
    return path


def slow_job(scene: Path, store: str | Path) -> subprocess.Popen:
    """``embed_to_zarr(scene, store)`` in a child process, slowed between tiles so a test can
    kill it mid-job (the child inherits the environment: AWS_* for S3 stores)."""
    script = textwrap.dedent(
        f"""
        import time
        from geobind.inference import store
        from geobind.inference.store import tiles
        write = tiles._write_chunk
        def slow(*args):
            write(*args)
            time.sleep(0.4)  # widen the window between tiles for the kill
        tiles._write_chunk = slow
        store.embed_to_zarr({str(scene)!r}, {str(store)!r}, model="tiny", stride={STRIDE},
                            tile={TILE})
        """
    )
    return subprocess.Popen([sys.executable, "-c", script])


def tree(root: Path) -> dict[str, bytes]:
    """Every file of a store, by relative path (the lock file must be gone)."""
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def test_round_trip_equals_in_memory_embed(scene, reference):
    import rioxarray

    memory = embed_raster(rioxarray.open_rasterio(scene), "tiny", stride=STRIDE)
    ds = xr.open_zarr(reference, group="scene")
    grid = ds["embedding"]
    assert grid.dims == ("embedding", "y", "x") and grid.dtype == np.float32
    assert grid.data.chunksize == (64, TILE, TILE)
    np.testing.assert_allclose(grid.values, memory.values, atol=1e-6, rtol=0)
    assert np.isnan(grid.values).any()  # the nodata corner
    assert np.array_equal(np.isnan(grid.values), np.isnan(memory.values))
    assert grid.rio.crs == memory.rio.crs == ds.rio.crs
    assert grid.rio.transform() == memory.rio.transform()
    np.testing.assert_array_equal(grid.y, memory.y)
    np.testing.assert_array_equal(grid.x, memory.x)
    for key in ("model", "sat_sha256", "chip_size", "stride", "geobind_version"):
        assert grid.attrs[key] == memory.attrs[key]
    assert grid.attrs["source"] == str(scene.resolve())
    assert len(grid.attrs["source_sha256"]) == 64
    root = json.loads((reference / "zarr.json").read_text())["attributes"]["geobind"]
    assert root["groups"] == {
        "scene": {"source": str(scene.resolve()), "sha256": grid.attrs["source_sha256"]}
    }
    assert root["model"] == "tiny" and root["model_source"] == "tiny"
    assert not (reference / zstore.LOCK_NAME).exists()


def test_one_tile_is_bitwise_equal_to_in_memory_embed(scene, tmp_path):
    import rioxarray

    summary = embed_to_zarr(scene, tmp_path / "s.zarr", model="tiny", stride=STRIDE)
    assert summary.tiles == summary.done == 1
    memory = embed_raster(rioxarray.open_rasterio(scene), "tiny", stride=STRIDE)
    stored = zstore.open_store(tmp_path / "s.zarr").values
    assert np.array_equal(stored, memory.values, equal_nan=True)


def test_small_read_blocks_and_vrt_sources(scene, reference, tmp_path, monkeypatch):
    import rasterio.shutil

    vrt = tmp_path / "scene.vrt"
    rasterio.shutil.copy(scene, vrt, driver="VRT")
    monkeypatch.setattr(ztiles, "_BLOCK_BYTES", 1)  # one grid row per read block
    embed_to_zarr(vrt, tmp_path / "v.zarr", model="tiny", stride=STRIDE, tile=TILE)
    blocks = zstore.open_store(tmp_path / "v.zarr").values
    np.testing.assert_allclose(blocks, zstore.open_store(reference).values, atol=1e-6, rtol=0)
    assert np.array_equal(np.isnan(blocks), np.isnan(zstore.open_store(reference).values))


def test_float16_store(scene, reference, tmp_path):
    embed_to_zarr(
        scene, tmp_path / "h.zarr", model="tiny", stride=STRIDE, tile=TILE, dtype="float16"
    )
    half = zstore.open_store(tmp_path / "h.zarr")
    assert half.dtype == np.float16
    full = zstore.open_store(reference).values
    np.testing.assert_allclose(half.values.astype(np.float32), full, atol=2e-3)


def test_summary_and_finished_rerun_does_nothing(scene, tmp_path, monkeypatch):
    first = embed_to_zarr(scene, tmp_path / "s.zarr", model="tiny", stride=STRIDE, tile=TILE)
    assert (first.tiles, first.done, first.skipped, first.failed) == (9, 9, 0, [])
    assert first.cells == 11 * 9 and first.store_bytes > 0 and first.groups == ["scene"]
    assert "9 tiles written" in str(first)

    def boom(*args, **kwargs):
        raise AssertionError("a finished store must not embed again")

    monkeypatch.setattr(ztiles, "embed_pixels", boom)
    monkeypatch.setattr(zwrite, "_resolve", boom)  # not even the model is loaded
    again = embed_to_zarr(scene, tmp_path / "s.zarr", model="tiny", stride=STRIDE, tile=TILE)
    assert (again.tiles, again.done, again.skipped, again.cells) == (9, 0, 9, 0)


@pytest.mark.slow
def test_kill_9_mid_job_then_rerun_is_bitwise_equal(scene, reference, tmp_path):
    root = tmp_path / "killed.zarr"
    proc = slow_job(scene, root)
    flags = root / "scene" / "tiles" / "done" / "c"
    deadline = time.monotonic() + 120
    while len(list(flags.rglob("*"))) < 5 and time.monotonic() < deadline:  # dirs + flag files
        assert proc.poll() is None, "the job ended before it could be killed"
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert (root / zstore.LOCK_NAME).exists()  # left behind by the dead writer
    done = zstore.open_store(root)  # an interrupted store still opens
    assert done.shape == (64, 11, 9)

    summary = embed_to_zarr(scene, root, model="tiny", stride=STRIDE, tile=TILE)
    assert 0 < summary.skipped < 9 and summary.done == 9 - summary.skipped
    assert tree(root) == tree(reference)


def test_appending_with_another_model_or_setting_is_refused(scene, reference, tmp_path):
    import shutil

    root = tmp_path / "s.zarr"
    shutil.copytree(reference, root)
    before = tree(root)
    other = geobind.load("tiny", seed=1)
    with pytest.raises(ModelMismatchError, match="holds embeddings of model 'tiny'"):
        embed_to_zarr(scene, root, model=other, stride=STRIDE, tile=TILE)
    with pytest.raises(OutputExistsError, match=r"stride=16.*stride=8"):
        embed_to_zarr(scene, root, model="tiny", stride=8, tile=TILE)
    with pytest.raises(OutputExistsError, match=r"dtype='float32'.*dtype='float16'"):
        embed_to_zarr(scene, root, model="tiny", stride=STRIDE, tile=TILE, dtype="float16")
    assert tree(root) == before  # refused before anything was written


def test_model_defaults_to_the_stores(scene, reference, tmp_path):
    import shutil

    root = tmp_path / "s.zarr"
    shutil.copytree(reference, root)
    summary = embed_to_zarr(scene, root, stride=STRIDE, tile=TILE)
    assert summary.skipped == 9


def test_changed_source_is_refused(tmp_path):
    path = write_scene(tmp_path / "scene.tif")
    embed_to_zarr(path, tmp_path / "s.zarr", model="tiny", stride=STRIDE, tile=TILE)
    write_scene(path, seed=1)
    with pytest.raises(OutputExistsError, match="changed since it was embedded"):
        embed_to_zarr(path, tmp_path / "s.zarr", model="tiny", stride=STRIDE, tile=TILE)


def test_scenes_become_groups_with_unique_names(scene, reference, tmp_path):
    import shutil

    root = tmp_path / "s.zarr"
    shutil.copytree(reference, root)
    second = write_scene(tmp_path / "other" / "scene.tif", seed=2, height=96, width=128)
    summary = embed_to_zarr([scene, second], root, model="tiny", stride=STRIDE, tile=TILE)
    assert summary.groups == ["scene", "scene_2"] and summary.skipped == 9
    assert zstore.store_groups(root) == ["scene", "scene_2"]
    assert zstore.open_store(root, group="scene_2").shape == (64, 5, 7)
    tree_ = xr.open_datatree(root, engine="zarr")
    assert {"scene", "scene_2"} <= set(tree_.children)
    with pytest.raises(InputDataError, match="pass group=NAME"):
        zstore.open_store(root)


def test_second_writer_is_refused_and_stale_lock_taken_over(scene, tmp_path):
    root = tmp_path / "s.zarr"
    with _StoreLock(root):
        with pytest.raises(StoreLockedError, match="being written by another job") as err:
            embed_to_zarr(scene, root, model="tiny", stride=STRIDE, tile=TILE)
        assert isinstance(err.value, GeoBindError)
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        text=True,
        capture_output=True,
        check=True,
    )
    (root / zstore.LOCK_NAME).write_text(
        json.dumps({"pid": int(dead.stdout), "host": os.uname().nodename, "start": "0"})
    )
    summary = embed_to_zarr(scene, root, model="tiny", stride=STRIDE, tile=TILE)
    assert summary.done == 9 and not (root / zstore.LOCK_NAME).exists()


def test_bad_inputs_leave_nothing_behind(scene, tmp_path):
    with pytest.raises(InputDataError, match="does not exist"):
        embed_to_zarr(tmp_path / "missing.tif", tmp_path / "a.zarr", model="tiny")
    with pytest.raises(InputDataError, match="dtype"):
        embed_to_zarr(scene, tmp_path / "a.zarr", model="tiny", dtype="int8")
    with pytest.raises(InputDataError, match="bands"):
        embed_to_zarr(scene, tmp_path / "a.zarr", model="tiny", bands=[1, 2, 7])
    assert not (tmp_path / "a.zarr").exists()
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "notes.txt").write_text("mine")
    with pytest.raises(OutputExistsError, match="not a Zarr store"):
        embed_to_zarr(scene, tmp_path / "foreign", model="tiny")
    assert (tmp_path / "foreign" / "notes.txt").read_text() == "mine"
