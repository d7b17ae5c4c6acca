"""Point-centred chips: centring, multi-CRS scenes, resampling, nodata, augmentation, workers."""

from __future__ import annotations

import logging
import pickle
import shutil
import warnings
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import torch
from rasterio.transform import from_origin
from rasterio.windows import Window
from torch.utils.data import DataLoader
from torchgeo.datasets import RasterDataset
from torchgeo.samplers import GeoSampler

from geobind.data import read_manifest
from geobind.data.datasets import PairedChips, chips_per_second
from geobind.data.samplers import PointSampler
from geobind.errors import CRSError, CRSMismatchWarning, InputDataError

LANDSAT = Path("/work/shared/data/real/RGB.byte.tif")
X0, Y0, RES = 500_000.0, 4_600_000.0, 2.0  # the grid raster: 64 × 64 pixels of 2 m, EPSG:32633


@pytest.fixture(scope="module")
def grid_tif(tmp_path_factory) -> Path:
    """uint16 raster whose band 1 holds the row and band 2 the column of each pixel."""
    path = tmp_path_factory.mktemp("grid") / "grid.tif"
    rows, cols = np.mgrid[0:64, 0:64].astype(np.uint16)
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=64,
        height=64,
        count=3,
        dtype="uint16",
        crs="EPSG:32633",
        transform=from_origin(X0, Y0, RES, RES),
    ) as dst:
        dst.write(np.stack([rows, cols, np.full_like(rows, 7)]))
    return path


@pytest.fixture
def landsat(tmp_path) -> Path:
    return Path(shutil.copy(LANDSAT, tmp_path / "landsat.tif"))


@pytest.fixture(scope="module")
def ground(tiny_world) -> gpd.GeoDataFrame:
    return read_manifest(tiny_world.ground_manifest)


@pytest.fixture(scope="module")
def world_chips(tiny_world, ground) -> PairedChips:
    with pytest.warns(CRSMismatchWarning, match="EPSG:32633 for alpha.tif; EPSG:3857 for beta"):
        return PairedChips(
            [tiny_world.scenes["alpha"], tiny_world.scenes["beta"]], ground, chip_size=32
        )


def _at(xy, crs="EPSG:32633") -> gpd.GeoDataFrame:
    xy = np.asarray(xy, np.float64).reshape(-1, 2)
    return gpd.GeoDataFrame(geometry=gpd.points_from_xy(xy[:, 0], xy[:, 1]), crs=crs)


def _rows_cols(image: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    values = np.rint(image.numpy().astype(np.float64) * 10_000).astype(int)
    return values[0], values[1]


@pytest.mark.parametrize(
    ("chip_size", "where", "first_row", "first_col"),
    [
        (5, (20.5, 30.5), 18, 28),  # odd chip at a pixel centre: that pixel is the central one
        (4, (20.0, 30.0), 18, 28),  # even chip at a grid vertex: it is the 4 central pixels' corner
        (4, (20.3, 29.8), 18, 28),  # off the vertex by < half a pixel: the nearest placement
        (4, (20.5, 30.5), 19, 29),  # even chip at a pixel centre: that pixel is the upper-left one
        (1, (20.5, 30.5), 20, 30),
    ],
)
def test_chip_is_centred_on_the_point(grid_tif, chip_size, where, first_row, first_col):
    row, col = where
    ds = PairedChips(grid_tif, _at([X0 + col * RES, Y0 - row * RES]), chip_size=chip_size)
    rows, cols = _rows_cols(ds[0]["image"])
    expected_rows = np.arange(first_row, first_row + chip_size)
    expected_cols = np.arange(first_col, first_col + chip_size)
    np.testing.assert_array_equal(rows, np.repeat(expected_rows[:, None], chip_size, axis=1))
    np.testing.assert_array_equal(cols, np.repeat(expected_cols[None, :], chip_size, axis=0))
    assert float(ds[0]["image"][2, 0, 0]) == pytest.approx(7 / 10_000)


def test_point_sampler_yields_torchgeo_queries_with_offsets(grid_tif):
    dataset = RasterDataset(str(grid_tif))
    xy = [[X0 + 30 * RES, Y0 - 20 * RES], [X0 + 10.5 * RES, Y0 - 40.5 * RES]]
    sampler = PointSampler(dataset, xy, chip_size=4, offsets=[[0, 0], [2, -1]])
    assert isinstance(sampler, GeoSampler) and len(sampler) == 2
    queries = list(sampler)
    x, y, t = queries[0]
    assert (x.start, x.stop, x.step, y.start, y.stop, y.step) == (
        X0 + 28 * RES, X0 + 32 * RES, RES, Y0 - 22 * RES, Y0 - 18 * RES, RES,
    )  # fmt: skip
    assert t.start == dataset.bounds[2].start
    image = dataset[queries[1]]["image"]  # torchgeo reads the query: 2 px east, 1 px south
    assert image.shape == (3, 4, 4)
    assert image[0, 0, 0] == 40 and image[1, 0, 0] == 11


def test_point_sampler_reprojects_geodataframes_with_a_warning(grid_tif):
    dataset = RasterDataset(str(grid_tif))
    pts = _at([X0 + 30 * RES, Y0 - 20 * RES]).to_crs("EPSG:4326")
    with pytest.warns(CRSMismatchWarning, match="EPSG:4326.*EPSG:32633") as record:
        sampler = PointSampler(dataset, pts, chip_size=4)
    assert record[0].filename == __file__
    np.testing.assert_allclose(sampler.xy, [[X0 + 30 * RES, Y0 - 20 * RES]], atol=1e-6)


def test_points_go_to_their_own_scene_across_crss(tiny_world, ground, world_chips):
    ds = world_chips
    names = np.array(["alpha", "beta"])[ds.scene_index]
    assert (names == ds.points.scene.to_numpy()).all()
    assert set(names) == {"alpha", "beta"}
    assert ds.points.index.isin(ground.index).all() and ds.points.crs == ground.crs
    assert len(ds) > 0.8 * len(ground)
    checked = 0
    for name in ("alpha", "beta"):
        with rasterio.open(tiny_world.scenes[name]) as src:
            pts = ds.points[names == name].to_crs(src.crs)
            for i, x, y in zip(
                np.flatnonzero(names == name), pts.geometry.x, pts.geometry.y, strict=True
            ):
                # world points sit at pixel centres: that pixel is the upper-left central one
                row, col = (int(v) for v in np.floor(~src.transform * (x, y))[::-1])
                window = Window(col - 15, row - 15, 32, 32)
                expected = src.read([1, 2, 3], window=window).astype(np.float32) / 255
                np.testing.assert_array_equal(ds[i]["image"].numpy(), expected)
                checked += 1
    assert checked == len(ds)


def test_scene_order_decides_nothing_when_scenes_do_not_overlap(tiny_world, ground, world_chips):
    with pytest.warns(CRSMismatchWarning):
        swapped = PairedChips(
            [tiny_world.scenes["beta"], tiny_world.scenes["alpha"]], ground, chip_size=32
        )
    assert sorted(swapped.points.index) == sorted(world_chips.points.index)
    assert (1 - swapped.scene_index[np.argsort(swapped.points.index)]).tolist() == (
        world_chips.scene_index[np.argsort(world_chips.points.index)].tolist()
    )


def test_first_scene_holding_the_whole_chip_wins(grid_tif, tmp_path):
    east = tmp_path / "east.tif"  # the grid again, 20 px further east, band 3 = 9
    with rasterio.open(grid_tif) as src:
        profile, data = src.profile, src.read()
    profile["transform"] = from_origin(X0 + 20 * RES, Y0, RES, RES)
    with rasterio.open(east, "w", **profile) as dst:
        dst.write(np.stack([data[0], data[1], np.full_like(data[2], 9)]))
    pts = _at([[X0 + c * RES, Y0 - 30 * RES] for c in (30, 62, 78)])  # both, east only, east only
    ds = PairedChips([grid_tif, east], pts, chip_size=8)
    assert ds.scene_index.tolist() == [0, 1, 1]
    assert [round(float(ds[i]["image"][2, 0, 0]) * 10_000) for i in range(3)] == [7, 9, 9]
    assert PairedChips([east, grid_tif], pts, chip_size=8).scene_index.tolist() == [0, 0, 0]


def test_web_mercator_chips_cover_the_model_footprint_in_stored_pixels(tiny_world, ground):
    from geobind.georef import GeoBox

    lat = next(s for s in tiny_world.info["scenes"] if s["name"] == "beta")["center_lonlat"][1]
    per_metre = 1 / np.cos(np.radians(lat))  # EPSG:3857 units per ground metre
    with pytest.warns(CRSMismatchWarning):
        ds = PairedChips(
            [tiny_world.scenes["alpha"], tiny_world.scenes["beta"]], ground, chip_size=32, gsd=1.0
        )
    assert ds.chips[0] == 32  # UTM's 0.9996 scale reads 32 of the stored 1 m pixels
    box = GeoBox.from_path(tiny_world.scenes["beta"])
    assert ds.chips[1] == box.chip_pixels(32, 1.0) == round(32 * per_metre / 0.6)  # 76 px
    beta = np.flatnonzero(ds.scene_index == 1)
    assert len(beta) > 5
    for i in beta:
        x, y, _ = ds.query(i)
        # 32 ground metres, to within one stored pixel
        assert abs((x.stop - x.start) / per_metre - 32) <= 0.6 / per_metre
        assert abs((y.stop - y.start) / per_metre - 32) <= 0.6 / per_metre
        assert x.step == pytest.approx(0.6)  # the stored pixels, never resampled
        assert ds.raw(i)[0].shape == (3, 76, 76)
        assert ds[i]["image"].shape == (3, 32, 32)  # resized to the model's input
    with rasterio.open(tiny_world.scenes["beta"]) as src:  # the same place, seen at 1 m
        x, y, _ = ds.query(beta[0])
        window = rasterio.windows.from_bounds(x.start, y.start, x.stop, y.stop, src.transform)
        expected = src.read([1, 2, 3], window=window, out_shape=(3, 32, 32)) / 255
    assert np.abs(ds[beta[0]]["image"].numpy() - expected).mean() < 0.05


def test_outside_and_mostly_nodata_points_are_dropped_and_counted(landsat, caplog):
    with rasterio.open(landsat) as src:
        t, crs = src.transform, src.crs
    pixels = {"inside": (350, 400), "border": (10, 10), "edge": (3, 400), "far": (-500, 400)}
    xy = [t * (c + 0.5, r + 0.5) for r, c in pixels.values()]
    pts = gpd.GeoDataFrame(
        {"name": list(pixels)},
        geometry=gpd.points_from_xy(*zip(*xy, strict=True)),
        crs=crs,
        index=[10, 20, 30, 40],
    )
    with caplog.at_level(logging.INFO, logger="geobind.data.datasets"):
        ds = PairedChips(landsat, pts, chip_size=16)
    messages = [r.getMessage() for r in caplog.records if r.name == "geobind.data.datasets"]
    assert messages == [
        "PairedChips: 4 points, 2 outside every scene, 1 more than 50% nodata, 1 kept"
    ]
    assert list(ds.points.index) == [10] and list(ds.points.name) == ["inside"]
    assert ds[0]["image"].min() > 0
    kept_all = PairedChips(landsat, pts, chip_size=16, nodata_fraction=1.0)
    assert list(kept_all.points.name) == ["inside", "border"]
    assert float(kept_all[1]["image"].abs().max()) == 0.0


def _uint8_tif(path: Path, data: np.ndarray) -> Path:
    """A (3, 8, 8) uint8 GeoTIFF at 1 m in EPSG:32633 with nodata 255."""
    profile = dict(driver="GTiff", width=8, height=8, count=3, dtype="uint8", nodata=255)
    with rasterio.open(
        path, "w", crs="EPSG:32633", transform=from_origin(0, 8, 1, 1), **profile
    ) as dst:
        dst.write(data)
    return path


def test_nodata_pixels_become_zero(tmp_path):
    data = np.full((3, 8, 8), 200, np.uint8)
    data[:, :2, :] = 255  # nodata rows
    data[0, 2, :] = 255  # only one band at nodata: a valid pixel
    path = _uint8_tif(tmp_path / "n.tif", data)
    image = PairedChips(path, _at([4.0, 4.0]), chip_size=8)[0]["image"].numpy()
    assert (image[:, :2] == 0).all()
    assert (image[0, 2] == 1.0).all() and image[1, 2] == pytest.approx(200 / 255)
    assert image[:, 3:] == pytest.approx(200 / 255)


def test_augmentation_is_deterministic_per_seed_and_epoch(tiny_world, ground):
    scenes = [tiny_world.scenes["alpha"], tiny_world.scenes["beta"]]
    with pytest.warns(CRSMismatchWarning):
        plain = PairedChips(scenes, ground.iloc[:40], chip_size=16)
        a = PairedChips(scenes, ground.iloc[:40], chip_size=16, augment=True, seed=1)
        b = PairedChips(scenes, ground.iloc[:40], chip_size=16, augment=True, seed=1)
        c = PairedChips(scenes, ground.iloc[:40], chip_size=16, augment=True, seed=2)

    def images(ds):
        return torch.stack([ds[i]["image"] for i in range(len(ds))])

    assert torch.equal(images(plain), images(plain))
    assert torch.equal(images(a), images(b))
    assert not torch.equal(images(a), images(c))
    assert not torch.equal(images(a), images(plain))
    epoch0 = images(a)
    a.set_epoch(1)
    assert not torch.equal(images(a), epoch0)
    a.set_epoch(0)
    assert torch.equal(images(a), epoch0)
    for i in range(len(a)):  # jitter moves the query by whole pixels, at most jitter_px
        (px, py, _), (ax, ay, _) = plain.query(i), a.query(i)
        shift = np.array([ax.start - px.start, ay.start - py.start]) / px.step
        assert np.allclose(shift, np.rint(shift)) and np.abs(shift).max() <= 3


def test_jitter_never_moves_a_chip_off_its_scene(grid_tif):
    ds = PairedChips(grid_tif, _at([X0 + 4 * RES, Y0 - 4 * RES]), chip_size=8, augment=True)
    starts = set()
    for epoch in range(30):
        ds.set_epoch(epoch)
        x, y, _ = ds.query(0)
        assert x.start >= X0 and y.stop <= Y0
        starts.add((x.start, y.stop))
    assert len(starts) > 4


def test_augmentation_without_jitter_only_flips_and_turns(grid_tif):
    pts = _at([[X0 + c * RES, Y0 - r * RES] for r, c in [(20, 20), (30, 35), (40, 12)]])
    plain = PairedChips(grid_tif, pts, chip_size=6)
    aug = PairedChips(grid_tif, pts, chip_size=6, augment=True, jitter_px=0, seed=3)
    seen = set()
    for epoch in range(6):
        aug.set_epoch(epoch)
        for i in range(len(aug)):
            base, out = plain[i]["image"], aug[i]["image"]
            matches = [
                (k, f)
                for k in range(4)
                for f in (False, True)
                if torch.equal(torch.rot90(base.flip(-1) if f else base, k, dims=(1, 2)), out)
            ]
            assert matches
            seen.add(matches[0])
    assert len(seen) > 3


def test_radiometric_jitter_scales_bands_adds_haze_and_keeps_nodata(tmp_path):
    from geobind.data.augment import HAZE

    data = np.full((3, 8, 8), 200, np.uint8)
    data[:, :2, :] = 255  # nodata rows
    path = _uint8_tif(tmp_path / "r.tif", data)
    kw = {"chip_size": 8, "augment": True, "jitter_px": 0, "seed": 4}
    geometric = PairedChips(path, _at([4.0, 4.0]), **kw)
    ds = PairedChips(path, _at([4.0, 4.0]), gain_jitter=0.2, haze_jitter=0.3, **kw)
    values = []
    for epoch in range(40):
        ds.set_epoch(epoch)
        geometric.set_epoch(epoch)
        assert ds.query(0) == geometric.query(0)  # radiometry leaves the geometric draws alone
        image = ds[0]["image"].numpy()
        valid = geometric[0]["image"].numpy() != 0  # where the nodata rows were turned to
        assert (image[~valid] == 0).all()
        per_band = [np.unique(band[v]) for band, v in zip(image, valid, strict=True)]
        assert all(len(u) == 1 for u in per_band)  # one gain per band, one haze per chip
        values.append([float(u[0]) for u in per_band])
    values = np.array(values)
    v = np.float32(200 / 255)
    assert (values >= v * 0.8 * 0.7 - 1e-6).all() and (values <= v * 1.2 + 1e-6).all()
    assert values.std(0).min() > 0.02  # varies between epochs
    assert (np.ptp(values, axis=1) > 0).mean() > 0.9  # and between the bands of one chip
    hazy = PairedChips(path, _at([4.0, 4.0]), haze_jitter=1.0, **kw)
    assert HAZE <= float(hazy[0]["image"][0, 4, 4]) < v  # haze alone: between the pixel and HAZE
    for bad in ({"gain_jitter": 1.0}, {"gain_jitter": -0.1}, {"haze_jitter": 1.5}):
        with pytest.raises(InputDataError, match="gain_jitter"):
            PairedChips(path, _at([4.0, 4.0]), chip_size=8, **bad)


def test_dataloader_workers_read_what_one_process_reads(tiny_world, ground):
    with pytest.warns(CRSMismatchWarning):
        ds = PairedChips(
            [tiny_world.scenes["alpha"], tiny_world.scenes["beta"]],
            ground,
            chip_size=32,
            augment=True,
            seed=5,
        )
    ds[0]  # opens files in this process before the workers fork

    def read_all(loader):
        batches = list(loader)
        return torch.cat([b["image"] for b in batches]), torch.cat([b["index"] for b in batches])

    single, index = read_all(DataLoader(ds, batch_size=16, num_workers=0))
    assert index.tolist() == list(range(len(ds)))
    loader = DataLoader(ds, batch_size=16, num_workers=2, persistent_workers=True)
    assert torch.equal(read_all(loader)[0], single)
    ds.set_epoch(1)  # reaches the running (persistent) workers
    epoch1, _ = read_all(DataLoader(ds, batch_size=16, num_workers=0))
    assert not torch.equal(epoch1, single)
    assert torch.equal(read_all(loader)[0], epoch1)


def test_pickles_and_reads_the_same(world_chips):
    world_chips[0]
    again = pickle.loads(pickle.dumps(world_chips))
    assert len(again) == len(world_chips)
    for i in (0, len(again) // 2, -1):
        assert torch.equal(again[i]["image"], world_chips[i]["image"])


def test_chips_per_second_counts_chips(world_chips):
    assert chips_per_second(world_chips, n=32, batch_size=8) > 0


def test_empty_points_give_an_empty_dataset(grid_tif, caplog):
    with caplog.at_level(logging.INFO, logger="geobind.data.datasets"):
        ds = PairedChips(grid_tif, _at(np.zeros((0, 2))), chip_size=4)
    assert len(ds) == 0 and "0 points" in caplog.text
    with pytest.raises(IndexError):
        ds[0]


def test_scene_and_point_errors(grid_tif, tmp_path):
    pts = _at([X0 + 30, Y0 - 30])
    with pytest.raises(InputDataError, match="does not exist"):
        PairedChips(tmp_path / "missing.tif", pts, chip_size=4)
    with pytest.raises(InputDataError, match="has 3 band"):
        PairedChips(grid_tif, pts, chip_size=4, bands=[1, 2, 4])
    with pytest.raises(CRSError, match="points have no CRS"):
        PairedChips(grid_tif, pts.set_crs(None, allow_override=True), chip_size=4)
    poly = gpd.GeoDataFrame(geometry=pts.buffer(5), crs=pts.crs)
    with pytest.raises(InputDataError, match="Polygon"):
        PairedChips(grid_tif, poly, chip_size=4)
    for crs, match in [("EPSG:4326", "geographic CRS"), (None, "has no CRS")]:
        path = tmp_path / f"{crs}.tif"
        with rasterio.open(
            path, "w", driver="GTiff", width=4, height=4, count=3, dtype="uint8", crs=crs,
            transform=from_origin(15, 42, 0.001, 0.001),
        ) as dst:  # fmt: skip
            dst.write(np.ones((3, 4, 4), np.uint8))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # rasterio's NotGeoreferencedWarning
            with pytest.raises(CRSError, match=match):
                PairedChips(path, pts, chip_size=2)


def test_native_resolution_window_reads_equal_torchgeo_merge(tiny_world, ground, landsat):
    """Scenes read at their own resolution skip rasterio.merge: same pixels, same dtype."""
    from torchgeo.datasets.utils import array_to_tensor

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CRSMismatchWarning)
        world = PairedChips(tiny_world.scenes["alpha"], ground, chip_size=32, augment=True)
        real = PairedChips(
            landsat,
            _at(
                [[x, y] for x in (192_000.0, 252_000.0) for y in (2_676_000.0, 2_737_000.0)],
                crs="EPSG:32618",
            ),
            chip_size=16,
            bands=[3, 2, 1],
            augment=True,
        )
    for ds in (world, real):
        assert len(ds) > 0
        scene = ds.datasets[0]
        for epoch in range(3):
            ds.set_epoch(epoch)
            for i in range(min(len(ds), 20)):
                query = ds.query(i)
                window = scene.read(query)  # what PairedChips and scene[query] read
                merged = scene._merge_files(scene._paths, query, scene.band_indexes)
                assert window.dtype == scene._scene.dtype
                torch.testing.assert_close(array_to_tensor(window), merged, rtol=0, atol=0)
                assert torch.equal(scene[query]["image"], merged.to(scene.dtype))
