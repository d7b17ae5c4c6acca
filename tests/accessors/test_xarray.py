"""The xarray accessor: exact georeferencing, dask = eager, nodata, every query type, maps."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import rioxarray
import xarray as xr
from affine import Affine

import geobind
from geobind.errors import CRSError, InputDataError

REAL = "/work/shared/data/real/RGB.byte.tif"


@pytest.fixture(scope="module")
def tiny():
    return geobind.load("tiny", device="cpu")


def _raster(h=80, w=72, bands=3, dtype=np.uint8, crs=32633, res=1.0, seed=0):
    rng = np.random.default_rng(seed)
    data = rng.integers(1, 255, (bands, h, w)).astype(dtype)  # 0 is free for nodata
    y = 5000 - (np.arange(h) + 0.5) * res
    x = 300 + (np.arange(w) + 0.5) * res
    r = xr.DataArray(
        data, dims=("band", "y", "x"), coords={"band": np.arange(1, bands + 1), "y": y, "x": x}
    )
    return r.rio.write_crs(crs) if crs else r


def _check_cells(raster, grid, model, chip, stride, cells):
    """Cell centres map to chip centres; cell vectors equal the encoder run on the chip itself."""
    t = raster.rio.transform()
    for i, j in cells:
        col, row = ~t * (float(grid.x[j]), float(grid.y[i]))
        assert col == pytest.approx(j * stride + chip / 2, abs=1e-6)
        assert row == pytest.approx(i * stride + chip / 2, abs=1e-6)
        chip_px = raster.values[:3, i * stride : i * stride + chip, j * stride : j * stride + chip]
        want = model["sat"].embed(chip_px)[0].numpy()
        np.testing.assert_allclose(grid.values[:, i, j], want, atol=1e-5)


@pytest.mark.parametrize("scene", ["alpha", "beta"])
def test_grid_cells_are_chip_centres_on_synthetic_scenes(tiny_world, tiny, scene):
    raster = rioxarray.open_rasterio(tiny_world.scenes[scene])
    grid = raster.geobind.embed(tiny, chip_size=32, stride=24, progress=False)
    assert grid.rio.crs == raster.rio.crs
    assert grid.rio.transform() == raster.rio.transform() * Affine.translation(4, 4) * Affine.scale(
        24
    )
    valid = np.argwhere(~np.isnan(grid.values[0]))
    assert len(valid) > 0.5 * grid.values[0].size
    _check_cells(raster, grid, tiny, 32, 24, [tuple(v) for v in valid[[0, len(valid) // 3, -1]]])
    assert (
        grid.attrs["model"] == "tiny"
        and grid.attrs["stride"] == 24
        and grid.attrs["chip_size"] == 32
    )
    assert (
        len(grid.attrs["sat_sha256"]) == 64 and grid.attrs["geobind_version"] == geobind.__version__
    )


def test_grid_on_real_landsat_file_and_geotiff_round_trip(tiny, tmp_path):
    raster = rioxarray.open_rasterio(REAL)  # 300 m pixels, nodata 0 around the scene
    grid = raster.geobind.embed(tiny, chip_size=16, stride=8, progress=False)
    assert grid.shape == (64, (718 - 16) // 8 + 1, (791 - 16) // 8 + 1)
    valid = np.argwhere(~np.isnan(grid.values[0]))
    _check_cells(raster, grid, tiny, 16, 8, [tuple(valid[0]), tuple(valid[len(valid) // 2])])
    sim = grid.geobind.similarity("a river", model=tiny)
    sim.rio.to_raster(tmp_path / "sim.tif")
    back = rioxarray.open_rasterio(tmp_path / "sim.tif")
    assert back.rio.crs == grid.rio.crs
    assert back.rio.transform().almost_equals(grid.rio.transform(), precision=1e-6)
    np.testing.assert_array_equal(back.values[0], sim.values)


def test_default_chip_keeps_the_model_footprint(tiny):
    half_metre = _raster(h=140, w=140, res=0.5)
    grid = half_metre.geobind.embed(tiny, progress=False)  # tiny: 32 px at 1 m = 64 px at 0.5 m
    assert (grid.attrs["chip_size"], grid.attrs["stride"]) == (64, 32)
    assert grid.shape[1:] == ((140 - 64) // 32 + 1,) * 2
    with pytest.raises(InputDataError, match="less than 2 pixels"):
        _raster(res=30.0).geobind.embed(tiny)


def test_geographic_crs_needs_a_gsd(tiny):
    raster = _raster(crs=4326, res=1e-5)
    with pytest.raises(CRSError, match="geographic"):
        raster.geobind.embed(tiny)
    assert raster.geobind.embed(tiny, gsd=1.0, progress=False).attrs["chip_size"] == 32
    assert raster.geobind.embed(tiny, chip_size=16, progress=False).attrs["chip_size"] == 16
    with pytest.raises(CRSError, match="no CRS"):
        _raster(crs=None).geobind.embed(tiny)


@pytest.mark.parametrize(
    ("h", "w", "chip", "stride"), [(80, 72, 32, 16), (50, 33, 32, 7), (40, 40, 12, 20)]
)
def test_dask_tiles_equal_the_eager_grid(tiny, h, w, chip, stride):
    raster = _raster(h=h, w=w)
    eager = raster.geobind.embed(tiny, chip_size=chip, stride=stride, progress=False)
    lazy = raster.chunk({"y": 17, "x": 23}).geobind.embed(tiny, chip_size=chip, stride=stride)
    assert lazy.chunks is not None  # stays lazy until computed
    assert lazy.shape == eager.shape == (64, (h - chip) // stride + 1, (w - chip) // stride + 1)
    np.testing.assert_allclose(lazy.values, eager.values, atol=1e-5)
    assert lazy.rio.transform() == eager.rio.transform()
    lazy_sim = lazy.geobind.similarity("a lake", model=tiny)
    assert lazy_sim.chunks is not None
    np.testing.assert_allclose(
        lazy_sim.values, eager.geobind.similarity("a lake", model=tiny).values, atol=1e-5
    )


def test_dask_workers_load_the_model_once_per_process(tiny):
    import pickle

    from geobind.inference.context import ModelRef

    ref = pickle.loads(pickle.dumps(ModelRef(tiny)))
    assert ref.get() is ref.get()  # loaded once, cached
    assert ref.get() is pickle.loads(pickle.dumps(ModelRef(tiny))).get()  # one per process
    unsaved = geobind.load("tiny", seed=3)
    with pytest.raises(InputDataError, match="save it"):
        pickle.dumps(ModelRef(unsaved))


def test_raster_smaller_than_a_chip_is_a_clear_error(tiny):
    with pytest.raises(InputDataError, match="smaller than one chip"):
        _raster(h=20, w=50).geobind.embed(tiny, chip_size=32)


def test_nodata_and_nan_cells(tiny):
    raster = _raster(h=64, w=64).rio.write_nodata(0)
    data = raster.values.copy()
    data[:, :32, :32] = 0  # the upper-left chip is all nodata
    data[:, 32:48, 32:64] = 0  # half of the lower-right chip
    raster = raster.copy(data=data)
    grid = raster.geobind.embed(tiny, chip_size=32, stride=32, progress=False)
    nan = np.isnan(grid.values).all(axis=0)
    assert nan.tolist() == [[True, False], [False, False]]  # half nodata is not more than 0.5
    strict = raster.geobind.embed(
        tiny, chip_size=32, stride=32, nodata_fraction=0.4, progress=False
    )
    assert np.isnan(strict.values).all(axis=0).tolist() == [[True, False], [False, True]]
    floats = raster.astype(np.float32) / 255
    floats.values[:, :32, :32] = np.nan
    floats = floats.rio.write_nodata(None)
    assert np.isnan(
        floats.geobind.embed(tiny, chip_size=32, stride=32, progress=False).values[0, 0, 0]
    )
    assert np.isnan(
        floats.geobind.similarity("a lake", model=tiny, chip_size=32, stride=32).values[0, 0]
    )


def test_band_rules(tiny):
    one = _raster(bands=1)
    with pytest.raises(InputDataError, match=r"bands=\[1, 1, 1\]"):
        one.geobind.embed(tiny, chip_size=32)
    assert one.geobind.embed(tiny, chip_size=32, bands=[1, 1, 1], progress=False).shape[0] == 64
    two_d = one.isel(band=0, drop=True)  # (y, x) rasters work too
    a = two_d.geobind.embed(tiny, chip_size=32, bands=[1, 1, 1], progress=False)
    b = one.geobind.embed(tiny, chip_size=32, bands=[1, 1, 1], progress=False)
    np.testing.assert_array_equal(a.values, b.values)
    reflectance = _raster(bands=4, dtype=np.uint16)
    assert not np.isnan(reflectance.geobind.embed(tiny, chip_size=32, progress=False).values).any()


def test_every_query_type(tiny_world, tiny):
    import geopandas as gpd
    from PIL import Image
    from shapely.geometry import box

    raster = rioxarray.open_rasterio(tiny_world.scenes["alpha"])
    grid = raster.geobind.embed(tiny, chip_size=32, stride=32, progress=False)
    audio = gpd.read_parquet(tiny_world.audio_manifest)
    photos = gpd.read_parquet(tiny_world.ground_manifest)
    wav = tiny_world.root / audio["path"].iloc[0]
    jpg = tiny_world.root / photos["path"].iloc[0]

    def sim(*args, **kw):
        return grid.geobind.similarity(*args, model=tiny, **kw).values

    text = sim("a busy highway")
    np.testing.assert_allclose(text, sim(text="a busy highway"))
    np.testing.assert_allclose(
        text, sim(vector=tiny["text"].embed("a busy highway")[0].numpy()), atol=1e-6
    )
    both = grid.geobind.similarity(["a lake", "a busy highway"], model=tiny)
    assert both.dims == ("query", "y", "x")
    np.testing.assert_allclose(both.sel(query="a busy highway").values, text, atol=1e-6)
    via_path = sim(str(wav))
    np.testing.assert_allclose(via_path, sim(audio=wav), atol=1e-6)
    import soundfile as sf

    samples, rate = sf.read(wav, dtype="float32")
    np.testing.assert_allclose(via_path, sim((samples, rate)), atol=1e-5)
    photo = sim(str(jpg))
    np.testing.assert_allclose(photo, sim(Image.open(jpg)), atol=1e-6)
    assert not np.allclose(photo, text)
    # a geometry: the mean embedding of the cells it covers; here exactly cells (0, 0) and (0, 1)
    t = grid.rio.transform()
    cells = box(*(t * (0, 1)), *(t * (2, 0)))
    mean = grid.values[:, 0, :2].mean(axis=1)
    np.testing.assert_allclose(sim(cells), sim(vector=mean), atol=1e-5)
    gdf = gpd.GeoDataFrame(geometry=[cells], crs=grid.rio.crs).to_crs(4326)
    with pytest.warns(geobind.errors.CRSMismatchWarning):
        np.testing.assert_allclose(sim(gdf), sim(vector=mean), atol=1e-3)
    with pytest.raises(InputDataError, match="does not exist"):
        sim("missing.wav")
    with pytest.raises(InputDataError, match="embedding of 64"):
        sim(np.zeros(10))
    with pytest.raises(InputDataError, match="exactly one query"):
        sim("a", text="b")


def test_queries_on_a_grid_need_the_model_that_made_it(tiny):
    grid = _raster().geobind.embed(tiny, chip_size=32, progress=False)
    raster_sim = _raster().geobind.similarity("a lake", model=tiny, chip_size=32, progress=False)
    np.testing.assert_array_equal(
        grid.geobind.similarity("a lake", model=tiny).values, raster_sim.values
    )
    with pytest.raises(InputDataError, match="embedded by model"):
        grid.geobind.similarity("a lake", model=geobind.load("tiny", seed=1))


def test_classify_top_k_and_plot(tiny):
    import matplotlib.pyplot as plt

    raster = _raster(h=96, w=96)
    grid = raster.geobind.embed(tiny, chip_size=32, stride=16, progress=False)
    out = grid.geobind.classify(["a lake", "a forest", "a highway"], model=tiny)
    scores = out["scores"].values
    np.testing.assert_array_equal(out["class"].values, scores.argmax(axis=0))
    np.testing.assert_allclose(out["score"].values, scores.max(axis=0))
    sim = grid.geobind.similarity("a lake", model=tiny)
    hits = grid.geobind.top_k("a lake", k=5, model=tiny)
    assert hits.crs == grid.rio.crs and list(hits["rank"]) == [1, 2, 3, 4, 5]
    assert np.all(np.diff(hits["score"]) <= 0)
    assert hits["score"].iloc[0] == pytest.approx(float(sim.max()))
    for _, hit in hits.iterrows():  # each polygon is its cell: centred on the cell's coordinates
        c = hit.geometry.centroid
        assert (c.x, c.y) == pytest.approx((float(grid.x[hit.col]), float(grid.y[hit.row])))
        assert hit.geometry.area == pytest.approx(16 * 16)
        assert sim.values[hit.row, hit.col] == pytest.approx(hit.score)
    fig = raster.geobind.plot(["a lake", "a forest"], model=tiny, chip_size=32, progress=False)
    assert len(fig.axes) == 4 and fig.axes[0].get_title() == "a lake"
    assert len(fig.axes[0].images) == 2  # the scene and the map over it
    plt.close("all")


def test_use_model_sets_the_default(tiny):
    raster = _raster()
    with pytest.raises(InputDataError, match="use_model"):
        raster.geobind.embed(chip_size=32)
    with geobind.use_model(tiny) as model:
        assert model is tiny
        grid = raster.geobind.embed(chip_size=32, progress=False)
    assert grid.attrs["model"] == "tiny"
    with pytest.raises(InputDataError, match="use_model"):
        raster.geobind.embed(chip_size=32)


def test_dataset_accessor_on_embedding_and_band_variables(tiny, tmp_path):
    raster = _raster()
    grid = raster.geobind.embed(tiny, chip_size=32, progress=False)
    grid.to_dataset().to_zarr(tmp_path / "grid.zarr", consolidated=False)
    for ds in (grid.to_dataset(), xr.open_zarr(tmp_path / "grid.zarr", consolidated=False)):
        np.testing.assert_array_equal(
            ds.geobind.similarity("a lake", model=tiny).values,
            grid.geobind.similarity("a lake", model=tiny).values,
        )
    bands = raster.to_dataset("band").rename({1: "r", 2: "g", 3: "b"})
    np.testing.assert_allclose(
        bands.geobind.embed(tiny, chip_size=32, progress=False).values, grid.values, atol=1e-6
    )


@pytest.mark.parametrize(
    "order",
    [
        "import geobind, xarray",
        "import xarray, geobind",
        # torch looks xarray up without importing it; the hook must wait for the real import
        "import geobind, importlib.util; importlib.util.find_spec('xarray'); import xarray",
    ],
)
def test_accessors_register_in_any_import_order_without_slowing_import(order):
    code = (
        f"import sys; {order}; import pandas as pd\n"
        "assert hasattr(xarray.DataArray, 'geobind') and hasattr(xarray.Dataset, 'geobind')\n"
        "assert hasattr(pd.DataFrame, 'geobind')\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    code = "import sys, geobind; assert 'xarray' not in sys.modules and 'pandas' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_float16_grids_score_like_float32(tiny):
    grid = _raster(h=96, w=96).geobind.embed(tiny, chip_size=32, stride=8, progress=False)
    grid.values[:, 0, 0] = np.nan
    from geobind.inference.query import cosine

    q = tiny["text"].embed(["a lake", "a forest"]).numpy()
    full = cosine(grid.values, q)
    half = cosine(grid.values.astype(np.float16), q, chunk=7)  # several chunks and a remainder
    np.testing.assert_allclose(half, full, atol=2e-3)
    assert np.isnan(half[:, 0, 0]).all() and np.isnan(full[:, 0, 0]).all()
    assert np.isfinite(half[:, 1:, 1:]).all()
