"""The grid kept for a raster: repeated queries embed once, and only while it is the same raster."""

from __future__ import annotations

import gc
import weakref

import numpy as np
import pytest
import rioxarray  # noqa: F401 - registers .rio
import torch
import xarray as xr

import geobind
from geobind.inference import api


def _raster(h=96, w=96, seed=0):
    data = np.random.default_rng(seed).integers(1, 255, (3, h, w)).astype(np.uint8)
    y = 5000 - (np.arange(h) + 0.5)
    x = 300 + (np.arange(w) + 0.5)
    r = xr.DataArray(data, dims=("band", "y", "x"), coords={"band": [1, 2, 3], "y": y, "x": x})
    return r.rio.write_crs(32633)


class Forwards:
    """Counts the satellite encoder's forward passes (one per batch of chips)."""

    def __init__(self, model):
        self.n = 0
        self._hook = model["sat"].register_forward_hook(self._count)

    def _count(self, *args):
        self.n += 1

    def take(self) -> int:
        n, self.n = self.n, 0
        return n

    def remove(self):
        self._hook.remove()


@pytest.fixture
def tiny():
    return geobind.load("tiny", device="cpu")


@pytest.fixture
def forwards(tiny):
    counter = Forwards(tiny)
    yield counter
    counter.remove()


KW = {"chip_size": 32, "stride": 16, "progress": False}


def test_repeated_queries_on_a_raster_embed_once(tiny, forwards):
    import matplotlib.pyplot as plt

    raster = _raster()
    highway = raster.geobind.similarity("busy highway", model=tiny, **KW)
    assert forwards.take() > 0
    lake = raster.geobind.similarity("lake shore", model=tiny, **KW)
    raster.geobind.top_k("lake shore", k=3, model=tiny, **KW)
    raster.geobind.classify(["a lake", "a forest"], model=tiny, **KW)
    raster.geobind.plot("a lake", model=tiny, **KW)
    plt.close("all")
    geobind.similarity(raster, "a forest", model=tiny, batch_size=7, **KW)  # batch size: no key
    grid = raster.geobind.embed(tiny, **KW)
    assert forwards.take() == 0
    # the kept grid gives what embedding afresh gives
    fresh = raster.geobind.similarity("lake shore", model=tiny, cache=False, **KW)
    assert forwards.take() > 0
    np.testing.assert_array_equal(lake.values, fresh.values)
    assert not np.array_equal(lake.values, highway.values)
    np.testing.assert_array_equal(grid.values, raster.geobind.embed(tiny, cache=False, **KW).values)


def test_other_settings_or_satellite_encoder_embed_again(tiny, forwards):
    raster = _raster()
    raster.geobind.similarity("a lake", model=tiny, **KW)
    assert forwards.take() > 0
    raster.geobind.similarity("a lake", model=tiny, **{**KW, "stride": 8})
    assert forwards.take() > 0
    raster.geobind.similarity("a lake", model=tiny, **KW)  # one grid per raster: the last one
    assert forwards.take() > 0
    for other in ({"nodata_fraction": 0.2}, {"bands": [3, 2, 1]}):
        raster.geobind.similarity("a lake", model=tiny, **KW, **other)
        assert forwards.take() > 0, other
    other_sat = geobind.load("tiny", seed=1, device="cpu")
    other_forwards = Forwards(other_sat)
    raster.geobind.similarity("a lake", model=other_sat, **KW)
    assert other_forwards.take() > 0
    # a later stage keeps the satellite encoder: its queries reuse the grid
    raster.geobind.similarity("a lake", model=tiny, **KW)
    assert forwards.take() > 0
    later = geobind.load("tiny", device="cpu")
    with torch.no_grad():
        next(later["text"].parameters()).add_(0.1)
    later_forwards = Forwards(later)
    raster.geobind.similarity("a lake", model=later, **KW)
    assert later_forwards.take() == 0


def test_cache_false_embeds_every_time_and_keeps_nothing(tiny, forwards):
    raster = _raster()
    for _ in range(2):
        raster.geobind.similarity("a lake", model=tiny, cache=False, **KW)
        assert forwards.take() > 0
    geobind.embed(raster, tiny, cache=False, chip_size=32)
    assert forwards.take() > 0
    assert id(raster) not in api._GRIDS


def test_another_raster_is_not_served_the_first_ones_grid(tiny, forwards):
    first, other = _raster(seed=0), _raster(seed=1)
    a = first.geobind.similarity("a lake", model=tiny, **KW)
    b = other.geobind.similarity("a lake", model=tiny, **KW)
    assert forwards.take() > 0
    assert not np.array_equal(a.values, b.values)
    same_pixels = first.copy(deep=True)  # another object: its own grid
    same_pixels.geobind.similarity("a lake", model=tiny, **KW)
    assert forwards.take() > 0
    first.geobind.similarity("a lake", model=tiny, **KW)
    other.geobind.similarity("a lake", model=tiny, **KW)
    assert forwards.take() == 0


def test_a_raster_changed_in_place_is_embedded_again(tiny, forwards):
    raster = _raster()
    before = raster.geobind.similarity("a lake", model=tiny, **KW)
    raster.values[:, :40, :40] = 0  # in place: same object, other pixels
    after = raster.geobind.similarity("a lake", model=tiny, **KW)
    assert forwards.take() > 0
    assert not np.array_equal(before.values, after.values)
    want = raster.copy(deep=True).geobind.similarity("a lake", model=tiny, **KW)
    np.testing.assert_array_equal(after.values, want.values)
    raster.rio.write_nodata(0, inplace=True)  # nodata changes which chips are embedded
    masked = raster.geobind.similarity("a lake", model=tiny, **KW)
    assert forwards.take() > 0
    assert np.isnan(masked.values[0, 0]) and not np.isnan(after.values[0, 0])
    raster["x"] = raster["x"] + 1000.0  # coordinates replaced in place
    moved = raster.geobind.similarity("a lake", model=tiny, **KW)
    assert forwards.take() > 0
    assert float(moved.x[0]) == pytest.approx(float(masked.x[0]) + 1000)


def test_embed_returns_a_copy_of_the_kept_grid(tiny, forwards):
    raster = _raster()
    grid = raster.geobind.embed(tiny, **KW)
    assert forwards.take() > 0
    grid.values[:] = 0
    grid.attrs["model"] = "changed"
    again = raster.geobind.embed(tiny, **KW)
    assert forwards.take() == 0
    assert again.attrs["model"] == "tiny" and np.abs(again.values).sum() > 0


def test_the_kept_grid_is_released_with_its_raster(tiny):
    raster = _raster()
    raster.geobind.similarity("a lake", model=tiny, **KW)
    kept = weakref.ref(api._GRIDS[id(raster)].grid)
    assert kept() is not None
    del raster
    gc.collect()  # the accessor and the raster reference each other: a cycle
    assert kept() is None


def test_a_dataset_of_bands_keeps_its_grid(tiny, forwards):
    bands = _raster().to_dataset("band").rename({1: "r", 2: "g", 3: "b"})
    first = bands.geobind.similarity("a lake", model=tiny, **KW)
    assert forwards.take() > 0
    second = bands.geobind.similarity("a lake", model=tiny, **KW)
    assert forwards.take() == 0
    np.testing.assert_array_equal(first.values, second.values)


def test_a_dask_raster_keeps_its_lazy_grid_until_its_graph_changes(tiny):
    raster = _raster().chunk({"y": 48, "x": 48})
    grid = raster.geobind.embed(tiny, **KW)
    assert grid.chunks is not None
    kept = api._GRIDS[id(raster)].grid
    raster.geobind.similarity("a lake", model=tiny, **KW)
    assert api._GRIDS[id(raster)].grid is kept
    raster[0, 0, 0] = 0  # a new graph: embedded again
    raster.geobind.similarity("a lake", model=tiny, **KW)
    assert api._GRIDS[id(raster)].grid is not kept
