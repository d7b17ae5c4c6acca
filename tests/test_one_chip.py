"""One chip, one grid: training, raster grids and point chips cut and embed the same chip.

The stage-1/2 anchor path (PairedChips + anchor_embeddings), the grid cell of embed_raster
centred at a point, and embed_geometries of that point must give the same vector, on a UTM scene
and on the Web-Mercator scene (where a chip is 76 stored pixels resized to the model's 32).
The validity rule (GDAL's dataset mask) is checked on every path: one zero band of an RGB pixel,
an alpha band, an internal mask, NaN in float data.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import rioxarray
import torch
from rasterio.enums import ColorInterp
from rasterio.transform import from_origin

import geobind
from geobind.data.chips import invalid_mask, to_unit
from geobind.data.datasets import PairedChips
from geobind.errors import CRSMismatchWarning
from geobind.georef import GeoBox
from geobind.inference.raster import embed_raster, plan_grid
from geobind.inference.vector import embed_geometries
from geobind.models.preprocess import standardize
from geobind.training.stages import anchor_embeddings


def _chips(scenes, points, model) -> PairedChips:
    """Chips as the stage anchors read them (the satellite encoder's size, GSD, bands, scale)."""
    sat, cfg = model["sat"], model.config["sat"]
    return PairedChips(scenes, points, chip_size=cfg["chip_size"], gsd=cfg.get("gsd"),
                       out_size=sat.image_size, bands=sat.bands, scale=sat.scale)  # fmt: skip


@pytest.fixture(scope="module")
def tiny():
    return geobind.load("tiny", device="cpu")


def _cell_points(grid, cells):
    ys, xs = grid["y"].values, grid["x"].values
    return [(xs[j], ys[i]) for i, j in cells]


@pytest.mark.parametrize("scene", ["alpha", "beta"])
def test_anchor_grid_cell_and_point_chip_give_the_same_vector(tiny_world, tiny, scene):
    path = tiny_world.scenes[scene]
    raster = rioxarray.open_rasterio(path)
    lay, plan = plan_grid(raster, tiny)
    grid = embed_raster(raster, tiny, stride=plan.chip // 2)
    valid = np.argwhere(~np.isnan(grid.values[0]))
    cells = [tuple(v) for v in valid[np.linspace(0, len(valid) - 1, 6).astype(int)]]
    xy = np.array(_cell_points(grid, cells))
    pts = gpd.GeoDataFrame(geometry=gpd.points_from_xy(xy[:, 0], xy[:, 1]), crs=lay.crs)

    ds = _chips([path], pts, tiny)  # the stage anchors' chips
    assert len(ds) == len(cells) and ds.chips[0] == plan.chip
    anchors = anchor_embeddings(tiny["sat"], ds).numpy()
    cell_vectors = np.stack([grid.values[:, i, j] for i, j in cells])
    points = embed_geometries(pts.geometry, raster, model=tiny)
    np.testing.assert_allclose(anchors, cell_vectors, atol=1e-5, rtol=0)
    np.testing.assert_allclose(points, cell_vectors, atol=1e-5, rtol=0)
    # a training item (no augmentation) is the same chip, scaled and resized the same way
    item = ds[0]["image"][None]
    want = tiny["sat"].standardize_pixels(ds.raw(0)[0][None])
    torch.testing.assert_close(tiny["sat"].normalize(item), want, atol=1e-6, rtol=0)


def test_web_mercator_chip_covers_the_same_ground_in_training_and_inference(tiny_world, tiny):
    beta = tiny_world.scenes["beta"]
    box = GeoBox.from_path(beta)
    k = box.units_per_metre()[0]
    assert box.gsd == pytest.approx(0.6 / k, rel=1e-6)  # ~0.42 ground metres per pixel
    _, plan = plan_grid(rioxarray.open_rasterio(beta), tiny)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CRSMismatchWarning)
        ds = _chips([beta], gpd.read_parquet(tiny_world.ground_manifest), tiny)
    metres = 32 * tiny.config["sat"]["gsd"]
    assert plan.chip == ds.chips[0]
    assert abs(plan.chip * box.gsd - metres) <= box.gsd  # ± one pixel of 32 ground metres
    x, _, _ = ds.query(0)
    assert abs((x.stop - x.start) / k - metres) <= box.gsd


def _write(path: Path, data: np.ndarray, **profile) -> Path:
    count, h, w = data.shape
    kw = dict(driver="GTiff", width=w, height=h, count=count, dtype=data.dtype.name)
    with rasterio.open(
        path,
        "w",
        crs="EPSG:32633",
        transform=from_origin(500_000, 4_600_096, 1, 1),
        **kw,
        **profile,
    ) as dst:
        dst.write(data)
        if count == 4:
            dst.colorinterp = [
                ColorInterp.red,
                ColorInterp.green,
                ColorInterp.blue,
                ColorInterp.alpha,
            ]
    return path


def _texture(shape, seed=0, dtype=np.uint8):
    return np.random.default_rng(seed).integers(1, 250, shape).astype(dtype)


def _cases(tmp_path: Path) -> dict[str, tuple[Path, np.ndarray]]:
    """Files with an invalid left half by each rule, and the expected (H, W) invalid mask."""
    out = {}
    bad = np.zeros((96, 96), bool)
    bad[:, :60] = True
    rgb = _texture((3, 96, 96))
    red = rgb.copy()
    red[1:, :, :60] = 0  # (r, 0, 0): one band not at nodata is a valid pixel (GDAL's rule)...
    red[:, :48, :60] = 0  # ...all three at nodata is not
    want = np.zeros_like(bad)
    want[:48, :60] = True
    out["nodata"] = (_write(tmp_path / "nodata.tif", red, nodata=0), want)
    alpha = np.concatenate([rgb, np.where(bad, 0, 255).astype(np.uint8)[None]])
    out["alpha"] = (_write(tmp_path / "alpha.tif", alpha), bad)
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True):
        path = _write(tmp_path / "mask.tif", rgb)
        with rasterio.open(path, "r+") as dst:
            dst.write_mask(np.where(bad, 0, 255).astype(np.uint8))
    out["internal mask"] = (path, bad)
    floats = _texture((3, 96, 96), dtype=np.float32) / 255
    floats[0][bad] = np.nan
    out["nan"] = (_write(tmp_path / "nan.tif", floats), bad)
    return out


def test_one_validity_rule_on_every_path(tiny, tmp_path):
    sat = tiny["sat"]
    for name, (path, want) in _cases(tmp_path).items():
        raster = rioxarray.open_rasterio(path)
        # grid: chips over the invalid half are NaN, chips over the valid half are not
        grid = embed_raster(raster, tiny, stride=16)
        ys, xs = grid["y"].values - 4_600_096, grid["x"].values - 500_000
        for i, y in enumerate(ys):
            for j, x in enumerate(xs):
                r, c = int(-y - 16), int(x - 16)
                share = want[r : r + 32, c : c + 32].mean()
                assert np.isnan(grid.values[0, i, j]) == (share > 0.5), (name, i, j, share)
        # stores read the file's mask with each block: the same grid
        from geobind.inference.store import embed_to_zarr, open_store

        embed_to_zarr(path, tmp_path / f"{path.stem}.zarr", tiny, stride=16, tile=3)
        stored = open_store(tmp_path / f"{path.stem}.zarr", group=path.stem)
        np.testing.assert_allclose(stored.values, grid.values, atol=1e-5, err_msg=name)
        # points: the chip centred at each cell centre is the cell's vector
        xy = np.array(_cell_points(grid, [(1, 1), (1, 3), (3, 4)]))
        pts = gpd.GeoDataFrame(geometry=gpd.points_from_xy(xy[:, 0], xy[:, 1]), crs=32633)
        vectors = embed_geometries(pts.geometry, raster, model=tiny)
        cells = np.stack([grid.values[:, 1, 1], grid.values[:, 1, 3], grid.values[:, 3, 4]])
        np.testing.assert_allclose(vectors, cells, atol=1e-5, err_msg=name)
        # training: the same invalid pixels, the same dropped chips, the same anchors
        ds = PairedChips(path, pts, chip_size=32, bands=[1, 2, 3], out_size=sat.image_size)
        kept = ~np.isnan(cells[:, 0])
        assert len(ds) == kept.sum(), name
        np.testing.assert_allclose(
            anchor_embeddings(sat, ds).numpy(), cells[kept], atol=1e-5, err_msg=name
        )
        x, y, _ = ds.query(0)
        r, c = round(4_600_096 - y.stop), round(x.start - 500_000)
        np.testing.assert_array_equal(ds.raw(0)[1], want[r : r + 32, c : c + 32], err_msg=name)


def test_invalid_mask_rule():
    px = np.zeros((3, 1, 4), np.uint8)
    px[:, 0, 0] = (255, 0, 0)  # one band at nodata: valid
    px[:, 0, 2] = (0, 7, 0)
    assert invalid_mask(px, 0).tolist() == [[False, True, False, True]]
    assert invalid_mask(px, None) is None
    assert invalid_mask(px, -9999.0) is None  # not a uint8 value: nothing is nodata
    f = np.ones((3, 1, 2), np.float32)
    f[2, 0, 1] = np.nan
    assert invalid_mask(f, None).tolist() == [[False, True]]
    assert invalid_mask(f, float("nan")).tolist() == [[False, True]]


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "float32"])
@pytest.mark.parametrize("size", [32, 44])
def test_torch_standardisation_equals_the_numpy_reference(tiny, dtype, size):
    sat = tiny["sat"]
    rng = np.random.default_rng(1)
    px = rng.integers(0, 255 if dtype == "uint8" else 12_000, (5, 3, size, size)).astype(dtype)
    if dtype == "float32":
        px = px / np.float32(200)
        px[0, 1, :4] = np.nan
    invalid = rng.random((5, size, size)) < 0.2
    for bad in (None, invalid):
        before = px.copy()
        device = sat.standardize_pixels(px, bad)
        host = standardize(
            to_unit(px, bad, sat.scale), image_size=sat.image_size, mean=sat.mean, std=sat.std
        )  # the numpy reference
        assert device.shape == (5, 3, sat.image_size, sat.image_size)
        torch.testing.assert_close(device, host, atol=1e-6, rtol=0)
        np.testing.assert_array_equal(px, before)  # the caller's pixels are left as they were
