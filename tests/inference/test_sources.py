"""Remote sources: COGs over HTTP (Range requests) and S3 for the accessor, stores and training.

Every server is real and on loopback (tests/_servers.py): an HTTP server with Range support and
moto's S3 API checking credentials. A remote run must equal the all-local run bitwise.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import xarray as xr
from rasterio.shutil import copy as rio_copy
from test_store import STRIDE, TILE, write_scene

import geobind
from geobind.errors import GeoBindError, InputDataError, OutputExistsError
from geobind.inference.store import embed_to_zarr
from geobind.sources import gdal_path, is_remote, resolve_source


def _cog(src, dst):
    """The scene as a Cloud-Optimised GeoTIFF (what analysts serve over HTTP and S3)."""
    rio_copy(str(src), str(dst), driver="COG", compress="deflate", blocksize=128)
    return dst


@pytest.fixture(scope="module")
def cog(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cogs")
    return _cog(write_scene(folder / "plain.tif"), folder / "scene.tif")


@pytest.fixture(scope="module")
def local_store(cog, tmp_path_factory):
    root = tmp_path_factory.mktemp("local") / "local.zarr"
    embed_to_zarr(cog, root, model="tiny", stride=STRIDE, tile=TILE, client=False)
    return root


def _grid(root, group="scene"):
    with xr.open_zarr(root, group=group) as ds:
        return ds["embedding"].values


def test_paths_and_urls_are_told_apart():
    assert is_remote("https://host/a.tif") and is_remote("s3://b/a.tif")
    assert not is_remote("a.tif") and not is_remote("file:///tmp/a.tif")
    assert gdal_path("gs://b/k.tif") == "/vsigs/b/k.tif"
    assert gdal_path("file:///tmp/a.tif") == "/tmp/a.tif"


def test_http_cog_store_equals_local_store_bitwise(cog, local_store, http_server, tmp_path):
    url = http_server.url(cog)
    root = tmp_path / "http.zarr"
    summary = embed_to_zarr(url, root, model="tiny", stride=STRIDE, tile=TILE, client=False)
    assert not summary.failed and summary.done == summary.tiles
    np.testing.assert_array_equal(_grid(root), _grid(local_store))
    groups = geobind.store_groups(root)
    assert groups == ["scene"]
    import zarr

    recorded = zarr.open_group(root, mode="r").attrs["geobind"]["groups"]["scene"]
    assert recorded["source"] == url  # the URL the user gave, not GDAL's /vsicurl/ path
    assert "etag=" in recorded["sha256"] and "size=" in recorded["sha256"]
    # a rerun of the finished job reads the server's headers only, and runs no tile
    again = embed_to_zarr(url, root, model="tiny", stride=STRIDE, tile=TILE, client=False)
    assert again.done == 0 and again.skipped == summary.tiles


def test_s3_cog_and_accessor_equal_local(cog, local_store, s3, tmp_path):
    url = s3.upload(cog, f"{s3.url}/imagery/scene.tif")
    root = tmp_path / "s3src.zarr"
    embed_to_zarr(url, root, model="tiny", stride=STRIDE, tile=TILE, client=False)
    np.testing.assert_array_equal(_grid(root), _grid(local_store))
    # the accessor's path (rioxarray, read lazily after opening)
    raster = geobind.open_raster(url)
    local = geobind.open_raster(cog)
    np.testing.assert_array_equal(raster.values, local.values)
    assert raster.rio.crs == local.rio.crs and raster.rio.transform() == local.rio.transform()
    remote = raster.geobind.embed(model="tiny", stride=STRIDE)
    np.testing.assert_array_equal(remote.values, local.geobind.embed(model="tiny", stride=STRIDE))


def test_remote_source_changed_since_embedding_is_refused(cog, s3, tmp_path):
    url = s3.upload(cog, f"{s3.url}/scene.tif")
    root = tmp_path / "s.zarr"
    embed_to_zarr(url, root, model="tiny", stride=STRIDE, tile=TILE, client=False)
    other = write_scene(tmp_path / "other.tif", seed=3)
    s3.upload(_cog(other, tmp_path / "other_cog.tif"), url)  # new bytes, new ETag
    with pytest.raises(OutputExistsError, match="changed since it was embedded"):
        embed_to_zarr(url, root, model="tiny", stride=STRIDE, tile=TILE, client=False)


def test_storage_options_carry_credentials(cog, s3, tmp_path, monkeypatch):
    url = s3.upload(cog, f"{s3.url}/scene.tif")
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(var)
    options = {"endpoint_url": s3.endpoint, "key": s3.ACCESS_KEY, "secret": s3.SECRET_KEY}
    src = resolve_source(url, options)
    assert "etag=" in src.identity
    raster = geobind.open_raster(url, storage_options=options)
    assert raster.shape == (4, 192, 160)
    root = tmp_path / "opts.zarr"
    summary = embed_to_zarr(
        url, root, model="tiny", stride=STRIDE, tile=TILE, client=False, storage_options=options
    )
    assert not summary.failed


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("404", "not found"),
        ("credentials", "access refused"),
        ("unreachable", "could not be reached"),
    ],
)
def test_bad_remote_sources_give_one_line_errors(
    case, message, cog, http_server, s3, tmp_path, monkeypatch
):
    if case == "404":
        url = http_server.url(cog.parent / "missing.tif")
    elif case == "credentials":
        url = s3.upload(cog, f"{s3.url}/scene.tif")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    else:
        url = "http://127.0.0.1:9/scene.tif"  # the discard port: nothing listens
    root = tmp_path / "bad.zarr"
    with pytest.raises(InputDataError, match=message) as err:
        embed_to_zarr(url, root, model="tiny", stride=STRIDE, tile=TILE, client=False)
    assert "\n" not in str(err.value) and url in str(err.value)
    assert not root.exists()  # nothing written
    with pytest.raises(GeoBindError, match=message):
        geobind.open_raster(url)


def test_cli_embeds_a_url(cog, local_store, http_server, tmp_path):
    root = tmp_path / "cli.zarr"
    args = ["embed", http_server.url(cog), "-o", str(root), "--model", "tiny"]
    args += ["--stride", str(STRIDE), "--tile", str(TILE)]
    run = subprocess.run(
        [sys.executable, "-m", "geobind.cli", *args], capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 0, run.stderr
    np.testing.assert_array_equal(_grid(root), _grid(local_store))


def test_training_reads_remote_scenes(cog, http_server, s3):
    """Training chips cut from a COG over HTTP and over S3 equal those cut from the file."""
    import geopandas as gpd

    from geobind.data.datasets import PairedChips, open_scene

    s3_url = s3.upload(cog, f"{s3.url}/scene.tif")
    xy = [(500_050, 4_599_950), (500_100, 4_599_900), (500_120, 4_599_850)]
    pts = gpd.GeoDataFrame(geometry=gpd.points_from_xy(*zip(*xy, strict=True)), crs=32633)
    local = PairedChips(cog, pts, chip_size=32, bands=[1, 2, 3], out_size=32)
    for url in (http_server.url(cog), s3_url):
        assert open_scene(url, [1, 2, 3]).geobox == open_scene(cog, [1, 2, 3]).geobox
        remote = PairedChips(url, pts, chip_size=32, bands=[1, 2, 3], out_size=32)
        assert len(remote) == len(local) == 3
        for i in range(len(local)):
            np.testing.assert_array_equal(remote.raw(i)[1], local.raw(i)[1])


def test_connection_dropped_mid_read_fails_tiles_and_leaves_a_valid_store(
    cog, http_server, tmp_path
):
    """The server answers the header, then cuts every transfer short: each tile fails with its
    location (one line), the store stays readable, and the job can be rerun."""
    url = http_server.url(cog, drop=True)
    root = tmp_path / "drop.zarr"
    summary = embed_to_zarr(url, root, model="tiny", stride=STRIDE, tile=TILE, client=False)
    # (a tile whose blocks GDAL already holds from the header read may still succeed)
    assert len(summary.failed) >= summary.tiles - 1
    assert all("\n" not in str(f) and f.source == url for f in summary.failed)
    grid = _grid(root)  # readable; the failed tiles' cells are NaN
    for failure in summary.failed:
        (ty, tx) = failure.tile
        assert np.isnan(grid[:, ty * TILE : (ty + 1) * TILE, tx * TILE : (tx + 1) * TILE]).all()
    again = embed_to_zarr(url, root, model="tiny", stride=STRIDE, tile=TILE, client=False)
    assert len(again.failed) == len(summary.failed)  # retried, not skipped
