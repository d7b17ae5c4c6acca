"""The synthetic world: determinism, georeferencing, manifests, splits, balance, audio, preview."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import rioxarray
import soundfile as sf
from PIL import Image
from pyproj import CRS
from scipy.spatial import cKDTree

from geobind.errors import InputDataError, OutputExistsError
from geobind.synth import CLASSES, PRESETS, generate_world, load_world
from geobind.synth.scene import make_layout, render_rows


def _digests(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_same_seed_is_byte_identical_whatever_the_workers(tiny_world, tmp_path):
    again = generate_world(tmp_path / "again", "tiny", seed=0, workers=1)
    assert _digests(again.root) == _digests(tiny_world.root)


def test_other_seed_gives_another_world(tiny_world, tmp_path):
    other = generate_world(tmp_path / "other", "tiny", seed=1, workers=1)
    a, b = _digests(tiny_world.root), _digests(other.root)
    assert a.keys() == b.keys()
    assert a["scenes/alpha.tif"] != b["scenes/alpha.tif"]
    assert a["ground.parquet"] != b["ground.parquet"]


def test_strips_equal_whole_scene():
    lay = make_layout(
        3, 200, 150, 0.7, region_m=60, n_highways=1, highway_half_width=10, cloud_cover=0.05
    )
    whole_img, whole_lc = render_rows(lay, 0, 150, 4)
    parts = [render_rows(lay, r0, r1, 4) for r0, r1 in ((0, 37), (37, 100), (100, 150))]
    assert np.array_equal(np.concatenate([p[0] for p in parts], axis=1), whole_img)
    assert np.array_equal(np.concatenate([p[1] for p in parts]), whole_lc)


@pytest.mark.parametrize("name", ["alpha", "beta"])
def test_scenes_read_back_with_crs_transform_nodata(tiny_world, name):
    spec = next(s for s in tiny_world.info["scenes"] if s["name"] == name)
    preset = {s.name: s for s in PRESETS["tiny"].scenes}[name]
    img = rioxarray.open_rasterio(tiny_world.scenes[name])
    lc = rioxarray.open_rasterio(tiny_world.landcover[name])
    assert img.rio.crs == CRS.from_user_input(preset.crs)
    assert img.rio.crs.is_projected
    assert img.shape == (preset.bands, preset.height, preset.width)
    assert img.dtype == np.uint8
    assert img.rio.nodata == 0 and lc.rio.nodata == 0
    assert img.rio.resolution() == (preset.gsd, -preset.gsd)
    assert tuple(img.rio.transform())[:6] == pytest.approx(spec["transform"])
    assert lc.rio.transform() == img.rio.transform() and lc.rio.crs == img.rio.crs
    # pixel-centre coordinates, as rioxarray writes them
    assert float(img.x[0]) == pytest.approx(spec["transform"][2] + preset.gsd / 2)
    # scene centre lies where the preset put it
    lon, lat = preset.center
    cx, cy = float(img.x.mean()), float(img.y.mean())
    from pyproj import Transformer

    back = Transformer.from_crs(preset.crs, "EPSG:4326", always_xy=True).transform(cx, cy)
    assert back == pytest.approx((lon, lat), abs=1e-3)
    data, truth = img.values, lc.values[0]
    nodata = (data == 0).all(axis=0)
    assert np.array_equal(nodata, truth == 0)
    assert 0.01 < nodata.mean() < 0.2
    assert ((data == 0).any(axis=0) == nodata).all(), "valid pixels never hold the nodata value"
    with rasterio.open(tiny_world.scenes[name]) as src:
        assert src.profile["tiled"] and src.profile["blockxsize"] == 256
        assert src.compression.name.lower() == "deflate"
        assert src.descriptions[:3] == ("red", "green", "blue")


def test_second_scene_uses_another_crs_and_gsd(tiny_world):
    crs = {s["crs"] for s in tiny_world.info["scenes"]}
    gsd = {s["gsd"] for s in tiny_world.info["scenes"]}
    assert len(crs) == 2 and len(gsd) == 2
    beta = next(s for s in tiny_world.info["scenes"] if s["name"] == "beta")
    assert beta["crs"] == "EPSG:3857"
    assert beta["ground_gsd_m"] == pytest.approx(0.6 * np.cos(np.radians(45.46)), rel=1e-6)


def _lda_accuracy(feats: np.ndarray, labels: np.ndarray) -> float:
    """Held-out accuracy of linear discriminant analysis (fit on even rows, scored on odd rows)."""
    fit = np.arange(len(labels)) % 2 == 0
    classes = np.unique(labels)
    mu = np.array([feats[fit & (labels == k)].mean(0) for k in classes])
    resid = feats[fit] - mu[np.searchsorted(classes, labels[fit])]
    inv = np.linalg.inv(np.cov(resid.T) + 1e-3 * np.eye(feats.shape[1]))
    diff = feats[~fit][:, None] - mu[None]
    dist = np.einsum("nkd,de,nke->nk", diff, inv, diff)
    return float((classes[dist.argmin(1)] == labels[~fit]).mean())


def test_all_classes_present_with_structure_beyond_mean_colour(tiny_world):
    seen = set()
    colour, texture, labels = [], [], []
    c = 16
    for name, path in tiny_world.scenes.items():
        with rasterio.open(path) as src, rasterio.open(tiny_world.landcover[name]) as lsrc:
            img = src.read()[:3].astype(np.float32)
            lc = lsrc.read(1)
        seen |= set(np.unique(lc)) - {0}
        for r in range(0, lc.shape[0] - c, c):
            for q in range(0, lc.shape[1] - c, c):
                vals, counts = np.unique(lc[r : r + c, q : q + c], return_counts=True)
                if vals[0] == 0 or counts.max() < 0.9 * c * c:
                    continue
                chip = img[:, r : r + c, q : q + c]
                colour.append(chip.mean(axis=(1, 2)))
                grad_y = np.abs(np.diff(chip, axis=1)).mean(axis=(1, 2))
                grad_x = np.abs(np.diff(chip, axis=2)).mean(axis=(1, 2))
                texture.append(np.r_[chip.std(axis=(1, 2)), grad_x, grad_y])
                labels.append(vals[np.argmax(counts)])
    assert seen == set(range(1, len(CLASSES) + 1))
    colour, texture, labels = np.array(colour), np.array(texture), np.array(labels)
    by_colour = _lda_accuracy(colour, labels)
    with_texture = _lda_accuracy(np.c_[colour, texture], labels)
    # mean colour alone leaves many chips wrong; texture and structure carry the class further
    assert by_colour < 0.85, by_colour
    assert with_texture > by_colour + 0.05, (by_colour, with_texture)


@pytest.mark.parametrize("kind", ["ground", "audio"])
def test_manifest_schema_crs_and_truth(tiny_world, kind):
    gdf = gpd.read_parquet(tiny_world.root / f"{kind}.parquet")
    assert gdf.crs == CRS.from_epsg(4326)
    expected = {"geometry", "path", "caption", "landcover", "landcover_id", "split", "scene"}
    assert expected <= set(gdf.columns)
    assert (gdf.geom_type == "Point").all()
    assert set(gdf["split"]) == {"train", "val", "test"}
    assert set(gdf["landcover"]) <= set(CLASSES)
    assert gdf["caption"].str.len().min() > 0
    assert gdf["path"].is_unique
    assert all((tiny_world.root / p).is_file() for p in gdf["path"])
    for name, part in gdf.groupby("scene"):
        with rasterio.open(tiny_world.landcover[name]) as src:
            pts = part.to_crs(src.crs)
            xy = zip(pts.geometry.x, pts.geometry.y, strict=True)
            values = np.array([v[0] for v in src.sample(xy)])
        assert (values == part["landcover_id"].to_numpy()).all(), "manifest class = truth at point"
        assert (part["landcover"] == [CLASSES[v - 1] for v in values]).all()


def test_ground_and_audio_points_are_distinct(tiny_world):
    g = gpd.read_parquet(tiny_world.ground_manifest)
    a = gpd.read_parquet(tiny_world.audio_manifest)
    g_xy = set(zip(g.geometry.x.round(9), g.geometry.y.round(9), strict=True))
    a_xy = set(zip(a.geometry.x.round(9), a.geometry.y.round(9), strict=True))
    assert not g_xy & a_xy


@pytest.mark.parametrize("kind", ["ground", "audio"])
def test_no_test_point_within_a_chip_of_a_train_point(tiny_world, kind):
    gdf = gpd.read_parquet(tiny_world.root / f"{kind}.parquet")
    chip_m = tiny_world.info["chip_m"]
    for _, part in gdf.groupby("scene"):
        local = part.to_crs(part.estimate_utm_crs())  # metres on the ground, whatever the scene CRS
        xy = np.c_[local.geometry.x, local.geometry.y]
        train = cKDTree(xy[(part["split"] == "train").to_numpy()])
        for other in ("val", "test"):
            sel = (part["split"] == other).to_numpy()
            if sel.any():
                dist, _ = train.query(xy[sel])
                assert dist.min() >= chip_m, (other, dist.min())


@pytest.mark.parametrize("kind", ["ground", "audio"])
def test_class_balance_within_stated_bounds(tiny_world, kind):
    lo, hi = tiny_world.info["class_balance_bounds"]
    share = gpd.read_parquet(tiny_world.root / f"{kind}.parquet")["landcover"].value_counts(
        normalize=True
    )
    assert set(share.index) == set(CLASSES)
    assert share.min() >= lo and share.max() <= hi, share.to_dict()


def test_audio_rate_length_and_level(tiny_world):
    gdf = gpd.read_parquet(tiny_world.audio_manifest)
    seconds = tiny_world.info["audio_seconds"]
    for rel in gdf["path"]:
        info = sf.info(tiny_world.root / rel)
        assert info.samplerate == 48_000 and info.channels == 1
        assert info.frames == int(seconds * 48_000)
        assert info.subtype == "PCM_16"
    samples, _ = sf.read(tiny_world.root / gdf["path"].iloc[0], dtype="float32")
    rms = float(np.sqrt(np.mean(samples**2)))
    assert 1e-3 < rms < 0.5 and np.abs(samples).max() < 1.0
    levels = [
        np.sqrt(np.mean(sf.read(tiny_world.root / p, dtype="float32")[0] ** 2))
        for p in gdf["path"].iloc[:10]
    ]
    assert max(levels) / min(levels) > 1.5, "loudness varies between clips"


def test_audio_differs_by_land_cover(tiny_world):
    """A highway clip has more low-frequency energy than a forest clip (birdsong is high)."""
    gdf = gpd.read_parquet(tiny_world.audio_manifest)

    def low_share(rel):
        x, sr = sf.read(tiny_world.root / rel, dtype="float64")
        spec = np.abs(np.fft.rfft(x)) ** 2
        f = np.fft.rfftfreq(len(x), 1 / sr)
        return spec[f < 1000].sum() / spec.sum()

    hw = [low_share(p) for p in gdf.loc[gdf["landcover"] == "highway", "path"]]
    fo = [low_share(p) for p in gdf.loc[gdf["landcover"] == "forest", "path"]]
    assert np.median(hw) > np.median(fo)


def test_photos_and_distractors(tiny_world):
    gdf = gpd.read_parquet(tiny_world.ground_manifest)
    size = tiny_world.info["photo_size"]
    for rel in gdf["path"].iloc[:20]:
        with Image.open(tiny_world.root / rel) as im:
            assert im.mode == "RGB" and im.size == (size, size)
    share = (gdf["distractor"] != "").mean()
    assert 0.02 < share < 0.25
    assert set(gdf["distractor"]) <= {"", "indoor", "closeup", "wrong"}


def test_world_json_records_preset_seed_classes_and_counts(tiny_world):
    info = load_world(tiny_world.root).info
    assert info["preset"]["name"] == "tiny" and info["seed"] == 0
    assert [c["name"] for c in info["classes"]] == list(CLASSES)
    assert {s["crs"] for s in info["scenes"]} == {s.crs for s in PRESETS["tiny"].scenes}
    assert info["counts"]["ground"]["total"] == PRESETS["tiny"].n_ground
    assert info["counts"]["audio"]["total"] == PRESETS["tiny"].n_audio


def test_existing_output_is_kept_unless_overwrite(tiny_world, tmp_path):
    out = tmp_path / "w"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    with pytest.raises(OutputExistsError, match="overwrite"):
        generate_world(out, "tiny", workers=1)
    assert (out / "notes.txt").read_text() == "keep me"
    generate_world(out, "tiny", workers=1, overwrite=True)
    assert not (out / "notes.txt").exists() and (out / "world.json").exists()


def test_failure_leaves_nothing_behind(tmp_path, monkeypatch):
    def broken(args):
        raise OSError("no space left on device")

    monkeypatch.setattr("geobind.synth.world._audio_task", broken)
    with pytest.raises(OSError, match="no space"):
        generate_world(tmp_path / "w", "tiny", workers=1)
    assert list(tmp_path.iterdir()) == []


def test_bad_arguments():
    with pytest.raises(InputDataError, match="tiny, demo, bench"):
        generate_world("/nonexistent/x", "huge")
    with pytest.raises(InputDataError, match="not a synthetic world"):
        load_world("/nonexistent/x")


def test_cli_synth_with_preview(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "geobind.cli", "synth", str(tmp_path / "w"), "--preset", "tiny",
         "--seed", "2", "--preview", "--no-progress"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "160 ground photos" in out.stdout
    with Image.open(tmp_path / "w" / "preview.png") as im:
        assert im.format == "PNG" and im.width > 800 and im.height > 600
        # the contact sheet is not blank: scenes, photos and spectrograms fill it with colour
        assert np.asarray(im.convert("RGB")).std() > 20


@pytest.mark.slow
def test_demo_world(tmp_path):
    world = generate_world(tmp_path / "demo", "demo")
    preset = PRESETS["demo"]
    assert world.info["counts"]["ground"]["total"] == preset.n_ground
    assert world.info["counts"]["audio"]["total"] == preset.n_audio
    held = [s["name"] for s in world.info["scenes"] if s["heldout"]]
    gdf = gpd.read_parquet(world.ground_manifest)
    assert held and (gdf.loc[gdf["scene"].isin(held), "split"] == "test").all()
    lo, hi = world.info["class_balance_bounds"]
    share = gdf["landcover"].value_counts(normalize=True)
    assert share.min() >= lo and share.max() <= hi
    for split in ("train", "val", "test"):
        assert (gdf["split"] == split).sum() >= 0.1 * len(gdf)


def test_photo_details_follow_the_place():
    """A farmland photo shows the crop of its parcel; a residential one, the roofs of its lot."""
    from geobind.synth.photos import render_photo
    from geobind.synth.scene import _CROPS, FARMLAND, RESIDENTIAL, make_layout, point_detail

    lay = make_layout(5, 256, 256, 1.0, region_m=60, n_highways=0, highway_half_width=10,
                      cloud_cover=0)  # fmt: skip
    details = {point_detail(x + 0.5, 40.5, lay, FARMLAND) for x in range(0, 256, 7)}
    assert len(details) > 1 and details <= {0, 1, 2, 3}
    for detail in range(4):
        img, _ = render_photo(np.random.default_rng(detail), FARMLAND, FARMLAND, 64, None, detail)
        ground = img[48:].reshape(-1, 3).mean(0) / 255
        nearest = np.argmin(((_CROPS - ground) ** 2).sum(1))
        assert nearest == detail
    _, text = render_photo(np.random.default_rng(3), RESIDENTIAL, RESIDENTIAL, 64, None, 0)
    assert isinstance(text, str) and text
