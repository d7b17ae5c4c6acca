"""The GeoPandas accessor: centred point chips, weighted zonal means, NaN rules, CRS, queries."""

from __future__ import annotations

import warnings

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import rioxarray
import shapely
import xarray as xr
from affine import Affine

import geobind
from geobind.errors import CRSError, CRSMismatchWarning, InputDataError
from geobind.inference.raster import embed_raster

REAL = "/work/shared/data/real/RGB.byte.tif"
CHIP, STRIDE = 32, 16


@pytest.fixture(scope="module")
def tiny():
    return geobind.load("tiny", device="cpu")


@pytest.fixture(scope="module")
def alpha(tiny_world):
    """The synthetic UTM scene (1 m, 384 × 384, 4 bands, nodata corner top right), in memory."""
    return rioxarray.open_rasterio(tiny_world.scenes["alpha"]).load()


@pytest.fixture(scope="module")
def grid(alpha, tiny):
    return embed_raster(alpha, tiny, chip_size=CHIP, stride=STRIDE)


def _unit(v):
    return v / np.linalg.norm(v)


def _cell_box(t: Affine, rows: tuple[float, float], cols: tuple[float, float]):
    """World box over fractional cell rows/cols [r0, r1) × [c0, c1) of a grid transform."""
    x0, y0 = t @ (cols[0], rows[0])
    x1, y1 = t @ (cols[1], rows[1])
    return shapely.box(min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))


def _gdf(geoms, crs=32633, **kw):
    return gpd.GeoDataFrame(geometry=list(geoms), crs=crs, **kw)


def _chip_by_hand(raster, col, row, chip):
    """The encoder's own preprocessing on the chip whose centre is pixel corner (col, row)."""
    half = chip // 2
    return raster.values[:, row - half : row + half, col - half : col + half]


def test_points_embed_the_chip_centred_on_them(alpha, tiny, grid):
    t = alpha.rio.transform()
    corners = [(100, 150), (200, 300), (40, 60)]  # pixel corners: the centre of an even chip
    pts = [shapely.Point(*(t * c)) for c in corners]
    pts.append(shapely.Point(*(t @ (120.3, 80.7))))  # nearest corner (120, 81)
    emb = _gdf(pts).geobind.embed(alpha, model=tiny, chip_size=CHIP).to_numpy()
    for got, (col, row) in zip(emb, [*corners, (120, 81)], strict=True):
        want = tiny["sat"].embed(_chip_by_hand(alpha, col, row, CHIP))[0].numpy()
        np.testing.assert_allclose(got, want, atol=1e-5)
    # near the edge the chip is padded with nodata (read as 0), up to nodata_fraction
    padded = np.zeros((4, CHIP, CHIP), alpha.dtype)
    padded[:, : 384 - 359, 6:] = alpha.values[:, 359:, :26]  # centred on corner (10, 375)
    edge = _gdf([shapely.Point(t @ (10, 375)), shapely.Point(t @ (5, 380))])
    emb = edge.geobind.embed(alpha, model=tiny, chip_size=CHIP).to_numpy()
    np.testing.assert_allclose(emb[0], tiny["sat"].embed(padded)[0].numpy(), atol=1e-5)
    assert np.isnan(emb[1]).all()  # 21 × 20 of 32 × 32 pixels on the raster: 59 % nodata
    # a point on a cell centre reads that cell's chip, also where the chip is partly nodata
    y, x = grid.y.values, grid.x.values
    nodata = (alpha.values == 0).all(0)
    share = np.array(
        [
            [nodata[r : r + CHIP, c : c + CHIP].mean() for c in range(0, 384 - CHIP + 1, STRIDE)]
            for r in range(0, 384 - CHIP + 1, STRIDE)
        ]
    )
    partly = tuple(np.argwhere((share > 0.1) & (share <= 0.5))[0])  # nodata inside the chip
    cells = [(3, 4), (20, 9), partly]
    on_cells = _gdf([shapely.Point(x[j], y[i]) for i, j in cells])
    emb = on_cells.geobind.embed(alpha, model=tiny, chip_size=CHIP).to_numpy()
    rows, cols = zip(*cells, strict=True)
    np.testing.assert_allclose(emb, grid.values[:, list(rows), list(cols)].T, atol=1e-5)


def test_points_on_the_real_landsat_scene(tiny):
    raster = rioxarray.open_rasterio(REAL)
    t = raster.rio.transform()
    corners = [(350, 360), (400, 300), (300, 420)]  # inside the valid (non-zero) footprint
    gdf = _gdf([shapely.Point(*(t * c)) for c in corners], crs=raster.rio.crs)
    emb = gdf.geobind.embed(raster, model=tiny, chip_size=16).to_numpy()
    for got, (col, row) in zip(emb, corners, strict=True):
        want = tiny["sat"].embed(_chip_by_hand(raster, col, row, 16))[0].numpy()
        np.testing.assert_allclose(got, want, atol=1e-5)
    with pytest.raises(InputDataError, match="chip_size"):  # 32 px at 1 m < 2 px at 300 m
        gdf.geobind.embed(raster, model=tiny)


def test_polygons_and_lines_are_weighted_means_of_cells(alpha, tiny, grid):
    g, t = grid.values, grid.rio.transform()
    cell = {(i, j): g[:, i, j] for i in range(10, 13) for j in range(5, 9)}
    square = _cell_box(t, (10, 12), (5, 7))  # exactly cells (10..11) × (5..6)
    half = _cell_box(t, (12, 13), (5, 6.5))  # cell (12, 5) and half of (12, 6)
    y_mid = (t @ (0, 11.5))[1]  # along the middle of row 11, from the centre of (11, 5)
    line = shapely.LineString([((t @ (5.5, 0))[0], y_mid), ((t @ (7.75, 0))[0], y_mid)])
    want = np.stack(
        [
            _unit(cell[10, 5] + cell[10, 6] + cell[11, 5] + cell[11, 6]),
            _unit(cell[12, 5] + 0.5 * cell[12, 6]),
            _unit(0.5 * cell[11, 5] + cell[11, 6] + 0.75 * cell[11, 7]),
        ]
    )
    point = shapely.Point(t @ (5.3, 10.8))  # with only a grid: the cell holding it
    want = np.concatenate([want, cell[10, 5][None]])
    gdf = _gdf([square, half, line, point])
    from_grid = gdf.geobind.embed(grid=grid).to_numpy()
    np.testing.assert_allclose(from_grid, want, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(from_grid, axis=1), 1, atol=1e-6)
    # from pixels: only the cells the geometries cover are embedded, with the same result
    from_raster = gdf.iloc[:3].geobind.embed(alpha, model=tiny, chip_size=CHIP, stride=STRIDE)
    np.testing.assert_allclose(from_raster.to_numpy(), want[:3], atol=1e-5)


def test_off_raster_nodata_empty_and_missing_geometries_are_nan(alpha, tiny, grid):
    t = alpha.rio.transform()
    inside = shapely.Point(*(t @ (100, 150)))
    nodata = shapely.Point(*(t @ (360, 20)))  # the scene's nodata corner
    far = shapely.Point(*(t @ (-500, 100)))
    far_box = shapely.box(0, 0, 10, 10)
    geoms = [inside, nodata, far, far_box, shapely.Polygon(), None]
    gdf = _gdf(geoms, index=list("abcdef"))
    for emb in (
        gdf.geobind.embed(alpha, model=tiny, chip_size=CHIP, stride=STRIDE),
        gdf.geobind.embed(grid=grid),
    ):
        assert emb.index.tolist() == list("abcdef")
        assert emb.isna().all(axis=1).tolist() == [False, True, True, True, True, True]
    # a polygon over nodata and valid cells averages only the valid ones
    gt = grid.rio.transform()
    nan_col = np.flatnonzero(np.isnan(grid.values[0, 0]))[0]
    straddle = _cell_box(gt, (0, 1), (nan_col - 1, nan_col + 1))
    emb = _gdf([straddle]).geobind.embed(grid=grid).to_numpy()[0]
    np.testing.assert_allclose(emb, grid.values[:, 0, nan_col - 1], atol=1e-5)


def test_empty_frame_gives_an_empty_result(alpha, tiny, grid):
    empty = gpd.GeoDataFrame(geometry=[], crs=32633)
    for emb in (empty.geobind.embed(alpha, model=tiny), empty.geobind.embed(grid=grid)):
        assert emb.shape == (0, 64) and emb.columns.tolist() == list(range(64))
    assert empty.geobind.similarity("a lake", raster=alpha, model=tiny).empty
    hits = empty.geobind.search("a lake", raster=alpha, model=tiny)
    assert isinstance(hits, gpd.GeoDataFrame) and "similarity" in hits and hits.empty


def test_mixed_and_invalid_geometries_each_follow_their_rule(alpha, tiny, grid):
    t, gt = alpha.rio.transform(), grid.rio.transform()
    bowtie = shapely.Polygon(
        [gt @ (5, 10), gt @ (7, 12), gt @ (7, 10), gt @ (5, 12)]
    )  # self-intersecting: made valid (two triangles), not dropped
    geoms = [
        shapely.Point(*(t @ (100, 150))),
        _cell_box(gt, (10, 12), (5, 7)),
        shapely.LineString([gt @ (5.5, 11.5), gt @ (7.75, 11.5)]),
        shapely.MultiPoint([t @ (100, 150), t @ (200, 300)]),
        bowtie,
        shapely.GeometryCollection([_cell_box(gt, (3, 4), (3, 4)), shapely.Point(t @ (5, 5))]),
    ]
    kw = {"model": tiny, "chip_size": CHIP, "stride": STRIDE}
    together = _gdf(geoms).geobind.embed(alpha, **kw).to_numpy()
    alone = np.concatenate([_gdf([g]).geobind.embed(alpha, **kw).to_numpy() for g in geoms])
    np.testing.assert_allclose(together, alone, atol=1e-6)
    assert not np.isnan(together).any()
    points = _gdf([shapely.Point(t @ (100, 150)), shapely.Point(t @ (200, 300))])
    parts = points.geobind.embed(alpha, **kw).to_numpy()
    np.testing.assert_allclose(together[3], _unit(parts.sum(0)), atol=1e-5)
    valid = _gdf([shapely.make_valid(bowtie)]).geobind.embed(grid=grid).to_numpy()[0]
    np.testing.assert_allclose(together[4], valid, atol=1e-5)
    np.testing.assert_allclose(together[5], grid.values[:, 3, 3], atol=1e-5)  # area rule


def test_crs_rules(alpha, tiny):
    t = alpha.rio.transform()
    utm = _gdf([shapely.Point(t @ (100, 150)), _cell_box(t, (100, 140), (50, 90))])
    with pytest.raises(CRSError, match="no CRS"):
        utm.set_crs(None, allow_override=True).geobind.embed(alpha, model=tiny)
    with pytest.raises(CRSError, match="no CRS"):
        utm.geobind.embed(alpha.rio.write_crs(None).drop_vars("spatial_ref"), model=tiny, gsd=1)
    lonlat = utm.to_crs(4326)
    with pytest.warns(CRSMismatchWarning, match="EPSG:4326.*EPSG:32633") as caught:
        got = lonlat.geobind.embed(alpha, model=tiny, chip_size=CHIP, stride=STRIDE)
    mismatch = [w for w in caught if w.category is CRSMismatchWarning]
    assert len(mismatch) == 1 and mismatch[0].filename == __file__  # points at the caller
    want = lonlat.to_crs(32633).geobind.embed(alpha, model=tiny, chip_size=CHIP, stride=STRIDE)
    np.testing.assert_allclose(got.to_numpy(), want.to_numpy(), atol=1e-6)
    with warnings.catch_warnings():
        warnings.simplefilter("error", CRSMismatchWarning)  # the raster's own CRS: none
        utm.geobind.embed(alpha, model=tiny, chip_size=CHIP)


def test_similarity_and_search(alpha, tiny, grid):
    t = alpha.rio.transform()
    geoms = [shapely.Point(t @ (40 + 50 * k, 200)) for k in range(6)]
    geoms[2] = shapely.Point(t @ (360, 20))  # nodata: NaN, never a hit
    gdf = _gdf(geoms, index=[f"p{k}" for k in (5, 3, 1, 0, 4, 2)])
    gdf["name"] = list("abcdef")
    emb = gdf.geobind.embed(grid=grid)
    lake = tiny["text"].embed(["a lake"])[0].numpy()
    s = gdf.geobind.similarity("a lake", grid=grid, model=tiny)
    assert isinstance(s, pd.Series) and s.name == "similarity"
    assert s.index.equals(gdf.index) and np.isnan(s["p1"])
    np.testing.assert_allclose(s.to_numpy(), emb.to_numpy() @ lake, atol=1e-5)
    both = gdf.geobind.similarity(["a lake", "a forest"], grid=grid, model=tiny)
    assert both.columns.tolist() == ["a lake", "a forest"] and both.index.equals(gdf.index)
    np.testing.assert_allclose(both["a lake"], s, atol=1e-6)
    # a vector query needs no model with a grid
    by_vector = gdf.geobind.similarity(vector=lake, grid=grid)
    np.testing.assert_allclose(by_vector, s, atol=1e-6)

    hits = gdf.geobind.search("a lake", grid=grid, model=tiny, k=3)
    assert isinstance(hits, gpd.GeoDataFrame) and len(hits) == 3
    assert hits.index.tolist() == s.dropna().sort_values(ascending=False).index[:3].tolist()
    assert hits["similarity"].is_monotonic_decreasing and "name" in hits
    assert len(gdf.geobind.search("a lake", grid=grid, model=tiny, k=50)) == 5  # one is NaN
    series_hits = gdf.geometry.geobind.search(vector=lake, grid=grid, k=2)
    assert isinstance(series_hits, gpd.GeoDataFrame) and len(series_hits) == 2
    other = grid.assign_attrs(model="other", model_sha256="0" * 64)
    with pytest.raises(InputDataError, match="embedded by model 'other'"):
        gdf.geobind.similarity("a lake", grid=other, model=tiny)
    with pytest.raises(InputDataError, match="one query"):
        gdf.geobind.search(["a lake", "a forest"], grid=grid, model=tiny)
    with pytest.raises(InputDataError, match="k must"):
        gdf.geobind.search("a lake", grid=grid, model=tiny, k=0)


def test_dask_backed_raster_and_zarr_grid_match_in_memory(tiny_world, alpha, tiny, grid, tmp_path):
    t, gt = alpha.rio.transform(), grid.rio.transform()
    gdf = _gdf(
        [
            shapely.Point(t @ (100, 150)),
            shapely.Point(t @ (10, 375)),  # near the corner: a padded chip
            _cell_box(gt, (10, 12.5), (5, 7.25)),
            shapely.LineString([t @ (10, 10), t @ (300, 250)]),
        ]
    )
    kw = {"model": tiny, "chip_size": CHIP, "stride": STRIDE}
    eager = gdf.geobind.embed(alpha, **kw).to_numpy()
    lazy_raster = rioxarray.open_rasterio(tiny_world.scenes["alpha"], chunks={"x": 40, "y": 40})
    lazy = gdf.geobind.embed(lazy_raster, **kw).to_numpy()
    np.testing.assert_allclose(lazy, eager, atol=1e-5)
    by_path = gdf.geobind.embed(str(tiny_world.scenes["alpha"]), **kw).to_numpy()
    np.testing.assert_allclose(by_path, eager, atol=1e-5)

    grid.to_dataset(name="embedding").to_zarr(tmp_path / "g.zarr", consolidated=False)
    store = xr.open_zarr(tmp_path / "g.zarr", consolidated=False, decode_coords="all")
    stored = store["embedding"]
    assert stored.chunks is not None and stored.rio.crs == grid.rio.crs
    np.testing.assert_allclose(
        gdf.geobind.embed(grid=stored).to_numpy(), gdf.geobind.embed(grid=grid).to_numpy()
    )


def test_default_model_and_bad_input(alpha, grid):
    gdf = _gdf([shapely.Point(alpha.rio.transform() @ (100, 150))])
    with geobind.use_model("tiny"):
        default = gdf.geobind.embed(alpha, chip_size=CHIP)
    np.testing.assert_allclose(default, gdf.geobind.embed(alpha, model="tiny", chip_size=CHIP))
    with pytest.raises(InputDataError, match="no model"):
        gdf.geobind.embed(alpha)
    with pytest.raises(InputDataError, match=r"either raster= .* or grid="):
        gdf.geobind.embed(alpha, grid=grid)
    with pytest.raises(InputDataError, match="either raster="):
        gdf.geobind.embed()
    with pytest.raises(InputDataError, match="embedding grid"):
        gdf.geobind.embed(grid=alpha)
    with pytest.raises(InputDataError, match="open_store"):
        gdf.geobind.embed(grid="store.zarr")

    plain = pd.DataFrame({"a": [1, 2]})
    assert not hasattr(plain, "geobind") and "geobind" not in dir(plain)
    with pytest.raises(InputDataError, match="GeoDataFrame"):
        plain.geobind.embed(alpha)
    with pytest.raises(InputDataError, match="GeoDataFrame"):
        _ = pd.Series([1.0]).geobind
