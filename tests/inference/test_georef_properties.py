"""Property-based georeferencing: any CRS, resolution, size, chip and stride gives exact grids."""

from __future__ import annotations

import numpy as np
import pytest
import rioxarray  # noqa: F401 - registers .rio
from affine import Affine
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import geobind
from geobind.inference.grid import ChipGrid, embed_pixels
from geobind.inference.raster import grid_dataarray

CRSS = [32633, 32718, 3857, 3035, 2154, 4326, 27700]


@st.composite
def grids(draw):
    chip = draw(st.integers(1, 48))
    height = draw(st.integers(chip, 160))
    width = draw(st.integers(chip, 160))
    stride = draw(st.integers(1, 48))
    res_x = draw(st.floats(0.05, 500, allow_nan=False))
    res_y = draw(st.sampled_from([res_x, draw(st.floats(0.05, 500, allow_nan=False))]))
    x0 = draw(st.floats(-1e6, 1e6, allow_nan=False))
    y0 = draw(st.floats(-1e6, 1e7, allow_nan=False))
    return ChipGrid(height, width, chip, stride, Affine(res_x, 0, x0, 0, -res_y, y0))


@settings(max_examples=100, deadline=None)
@given(grid=grids(), crs=st.sampled_from(CRSS), data=st.data())
def test_cell_centres_are_chip_centres(grid, crs, data):
    ny, nx = grid.shape
    assert ny == (grid.height - grid.chip) // grid.stride + 1
    assert nx == (grid.width - grid.chip) // grid.stride + 1
    assert (ny - 1) * grid.stride + grid.chip <= grid.height  # every chip inside the raster
    assert ny * grid.stride + grid.chip > grid.height  # and no whole chip left out
    i = data.draw(st.integers(0, ny - 1))
    j = data.draw(st.integers(0, nx - 1))
    t, s, c = grid.raster_transform, grid.stride, grid.chip
    want = t * (j * s + c / 2, i * s + c / 2)  # the chip's centre, through the raster's transform
    got = grid.transform * (j + 0.5, i + 0.5)  # the cell's centre, through the grid's
    scale = max(abs(t.c), abs(t.f), abs(t.a) * grid.width, 1.0)
    assert got == pytest.approx(want, abs=1e-9 * scale)
    ys, xs = grid.coords()
    assert (xs[j], ys[i]) == pytest.approx(want, abs=1e-9 * scale)
    rows, cols = grid.window(slice(i, i + 1), slice(j, j + 1))
    assert (rows.start, rows.stop, cols.start, cols.stop) == (i * s, i * s + c, j * s, j * s + c)
    # the grid as written by rioxarray reads back with the same CRS and transform
    da = grid_dataarray(np.zeros((2, ny, nx), np.float32), grid, crs)
    assert da.rio.crs.to_epsg() == crs
    back = da.rio.transform(recalc=True)
    assert tuple(back)[:6] == pytest.approx(tuple(grid.transform)[:6], abs=1e-9 * scale)


@pytest.fixture(scope="module")
def sat():
    return geobind.load("tiny", device="cpu")["sat"]


@settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    chip=st.integers(8, 24),
    stride=st.integers(3, 20),
    extra=st.tuples(st.integers(0, 40), st.integers(0, 40)),
    tile=st.integers(1, 4),
    seed=st.integers(0, 2**16),
)
def test_tile_by_tile_equals_whole(sat, chip, stride, extra, tile, seed):
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 255, (3, chip + extra[0], chip + extra[1]), dtype=np.uint8)
    pixels[:, : chip // 2, : chip // 2] = 0  # some nodata, so some cells may be NaN
    kw = {"chip": chip, "stride": stride, "nodata": 0, "batch_size": 7}
    whole = embed_pixels(sat, pixels, **kw)
    grid = ChipGrid(pixels.shape[1], pixels.shape[2], chip, stride)
    tiled = np.full_like(whole, np.nan)
    for rows, cols in grid.tiles(tile):
        wr, wc = grid.window(rows, cols)
        tiled[:, rows, cols] = embed_pixels(sat, pixels[:, wr, wc], **kw)
    np.testing.assert_array_equal(np.isnan(tiled), np.isnan(whole))
    np.testing.assert_allclose(tiled, whole, atol=1e-5)
