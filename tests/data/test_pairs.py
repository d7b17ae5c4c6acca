"""Pair datasets: the four layouts, bad samples, streaming order, and the same chips as scenes."""

from __future__ import annotations

import io
import json
import logging
import tarfile

import numpy as np
import pandas as pd
import pytest
import torch

import geobind
from geobind.data.pairs import BadSampleError, PairChips, PairSampler, detect_format, open_pairs
from geobind.errors import InputDataError
from geobind.synth import export_pairs
from geobind.training.config import TrainConfig
from geobind.training.sources import paired_data
from geobind.training.stages import anchor_embeddings

LAYOUTS = {
    "manifest": "ground",
    "webdataset": "ground",
    "soundingearth-hub": "audio",
    "soundingearth": "audio",
}


@pytest.fixture(scope="module")
def exported(tiny_world, tmp_path_factory):
    root = tmp_path_factory.mktemp("pairs")
    return {
        layout: export_pairs(tiny_world, root / layout, layout=layout, size=64)
        for layout in LAYOUTS
    }


@pytest.fixture(scope="module")
def tiny():
    return geobind.load("tiny", device="cpu")


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_each_layout_is_detected_indexed_and_decoded(exported, layout):
    path = exported[layout]
    assert detect_format(path) == layout
    pairs = open_pairs(path, gsd=1.0)
    assert (pairs.format, pairs.kind) == (layout, LAYOUTS[layout])
    assert len(pairs) > 20 and set(pairs.table["split"]) == {"train", "val", "test"}
    assert pairs.table["longitude"].between(14.9, 15.1).all()  # the tiny world is at 15° E
    image = pairs.overhead(len(pairs) - 1)
    assert image.shape == (3, 64, 64) and image.dtype == np.uint8
    item = pairs.item(0)
    if pairs.kind == "ground":
        assert item.size[0] > 0 and item.mode == "RGB"
    else:
        samples, rate = item
        assert rate > 8000 and samples.ndim == 1 and len(samples) > rate  # a clip of seconds
    points = pairs.split("val").points()
    assert points.crs.to_epsg() == 4326 and (points["split"] == "val").all()


def test_pair_chips_equal_the_scene_chips_and_give_the_same_metrics(
    exported, tiny_world, tiny, tmp_path
):
    """Exported losslessly (PNG, manifest layout), a pair's chip is the scene's chip: the same
    anchors, and evaluation gives the same numbers as on the scenes."""
    pairs_cfg = TrainConfig(pairs=str(exported["manifest"]), pairs_gsd=1.0)
    from_pairs = paired_data(pairs_cfg, tiny, "ground", "train")
    scene_cfg = TrainConfig(world=str(tiny_world.root))
    from_scenes = paired_data(scene_cfg, tiny, "ground", "train")
    keys = from_pairs.points["key"].str.split("-").str[1].astype(int).to_numpy()
    rows = {idx: i for i, idx in enumerate(from_scenes.points.index)}
    order = [rows[k] for k in keys]  # the scene dataset's items for the exported points
    assert from_pairs.chips.crop == tiny.config["sat"]["chip_size"]  # 32 px at 1 m
    for i in (0, 7, len(keys) - 1):
        np.testing.assert_array_equal(
            from_pairs.chips.raw(i)[0], from_scenes.chips.raw(order[i])[0]
        )
    a = anchor_embeddings(tiny["sat"], from_pairs.chips)
    b = anchor_embeddings(tiny["sat"], from_scenes.chips)[order]
    torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
    import geobind.data.pairs as pairs_module
    from geobind.training.evaluate import evaluate

    opened = []
    real_open = pairs_module.open_pairs

    def counted(*args, **kwargs):
        opened.append(args)
        return real_open(*args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(pairs_module, "open_pairs", counted)
        by_pairs = evaluate(tiny, pairs=exported["manifest"], pairs_gsd=1.0, split="train")
    assert len(opened) == 1  # the pair dataset is indexed once
    assert by_pairs["sat→ground"]["model"]["gallery_size"] == len(keys)
    assert "untrained" in by_pairs["sat→ground"] and "random" in by_pairs["ground→sat"]
    # the same points through the scene path: the same numbers (tolerance: float rounding)
    manifest = from_scenes.points.iloc[order]
    manifest.to_parquet(tmp_path / "points.parquet")
    by_scenes = evaluate(tiny, scenes=list(tiny_world.scenes.values()),
                         ground_manifest=tmp_path / "points.parquet", split="train")  # fmt: skip
    for task in ("sat→ground", "ground→sat"):
        for run in ("model", "untrained"):
            for key, value in by_pairs[task][run].items():
                assert by_scenes[task][run][key] == pytest.approx(value, abs=1e-6), (task, key)


def test_footprint_crop_follows_the_model_and_the_datasets_gsd(exported, tiny):
    pairs = open_pairs(exported["webdataset"], gsd=0.5)  # say the 64 px cover 32 m
    chips = PairChips(pairs, chip_size=32, model_gsd=1.0, out_size=32)
    assert chips.crop == 64 and chips.raw(0)[0].shape == (3, 64, 64)
    assert chips[0]["image"].shape == (3, 32, 32)
    unknown = PairChips(open_pairs(exported["webdataset"]), chip_size=32, model_gsd=1.0)
    assert unknown.crop is None and unknown.raw(0)[0].shape == (3, 64, 64)  # the whole image
    aug = PairChips(pairs.subset([0]), chip_size=16, model_gsd=1.0, augment=True, seed=3)
    aug.set_epoch(1)
    first = aug[0]["image"]
    aug.set_epoch(1)
    assert torch.equal(first, aug[0]["image"])  # draws depend on (seed, epoch, index) only


def test_bad_samples_are_skipped_and_counted(exported, tmp_path, tiny, caplog):
    src = exported["webdataset"] / "train-000000.tar"
    broken = tmp_path / "train-000000.tar"
    with tarfile.open(src) as tar, tarfile.open(broken, "w") as out:
        for n, member in enumerate(tar):
            data = tar.extractfile(member).read()
            if n < 6 and member.name.endswith("overhead.jpg"):
                data = b"not a jpeg"
            info = tarfile.TarInfo(member.name)
            info.size = len(data)
            out.addfile(info, io.BytesIO(data))
    pairs = open_pairs(broken)
    with pytest.raises(BadSampleError, match="cannot decode the overhead image"):
        pairs.overhead(0)
    with caplog.at_level(logging.WARNING, logger="geobind.training.sources"):
        data = paired_data(TrainConfig(pairs=str(broken)), tiny, "ground", "train")
    assert len(data.chips) == len(pairs) - 2 and data.record["skipped"] == 2
    assert "2 undecodable sample(s) skipped" in caplog.text


def test_bad_tables_are_one_line_errors(exported, tmp_path, caplog):
    table = pd.read_csv(exported["manifest"] / "pairs.csv")
    table.drop(columns="sat_path").to_csv(tmp_path / "no_sat.csv", index=False)
    with pytest.raises(InputDataError, match=r"lacks the column\(s\) \['sat_path'\]"):
        open_pairs(tmp_path / "no_sat.csv", format="manifest")
    bad = table.copy()
    bad.loc[:2, "latitude"] = 123.0  # out of range: skipped, counted
    bad["sat_path"] = [str(exported["manifest"] / p) for p in bad["sat_path"]]
    bad.to_csv(tmp_path / "bad.csv", index=False)
    with caplog.at_level(logging.WARNING, logger="geobind.data.pairs"):
        pairs = open_pairs(tmp_path / "bad.csv")
    assert len(pairs) == len(table) - 3 and "3 sample(s) without valid" in caplog.text
    with pytest.raises(InputDataError, match="no 'holdout' samples"):
        pairs.split("holdout")
    with pytest.raises(InputDataError, match="does not exist"):
        open_pairs(tmp_path / "missing")
    with pytest.raises(InputDataError, match="unknown pair format"):
        open_pairs(tmp_path / "bad.csv", format="zip")
    meta = pd.read_csv(exported["soundingearth"] / "metadata.csv").drop(columns="mp3name")
    (tmp_path / "se").mkdir()
    meta.to_csv(tmp_path / "se" / "metadata.csv", index=False)
    with pytest.raises(InputDataError, match="mp3name"):
        open_pairs(tmp_path / "se")


def test_streaming_order_reads_each_row_group_once(exported):
    pairs = open_pairs(exported["soundingearth-hub"])
    sampler = PairSampler(pairs, shuffle=True, seed=0)
    order = list(sampler)
    assert sorted(order) == list(range(len(pairs))) and order != sorted(order)
    groups = (pairs.table["file"] + ":" + pairs.table["row_group"].astype(str)).to_numpy()[order]
    changes = int((groups[1:] != groups[:-1]).sum())
    assert changes == len(set(groups)) - 1  # every row group visited in one run
    sampler.set_epoch(1)
    assert list(sampler) != order


def test_hub_structs_and_metadata_match_the_published_layout(exported):
    import pyarrow.parquet as pq

    schema = pq.read_schema(next(exported["soundingearth-hub"].glob("train-*.parquet")))
    assert str(schema.field("googleearth_image").type) == "struct<bytes: binary, path: string>"
    assert str(schema.field("audio").type) == "struct<bytes: binary, path: string>"
    with tarfile.open(next(exported["webdataset"].glob("train-*.tar"))) as tar:
        names = tar.getnames()[:3]
        meta = json.loads(tar.extractfile(names[2]).read())
    assert [n.split(".", 1)[1] for n in names] == [
        "overhead.jpg",
        "groundlevel.jpg",
        "metadata.json",
    ]
    assert set(meta) == {"latitude", "longitude", "date_taken"}


# -- the batched fetch (DataLoader's ``__getitems__``): the per-chip chips, bitwise -------------
@pytest.mark.parametrize("layout", ["webdataset", "soundingearth-hub"])
@pytest.mark.parametrize(
    "augment",
    [{}, {"augment": True}, {"augment": True, "gain_jitter": 0.15, "haze_jitter": 0.25}],
    ids=["plain", "flips-turns-jitter", "radiometric"],
)
@pytest.mark.parametrize("gsd", [1.0, 0.5], ids=["no-resize", "resize"])
def test_batched_fetch_equals_the_per_chip_items(exported, layout, augment, gsd):
    pairs = open_pairs(exported[layout], gsd=gsd)
    chips = PairChips(pairs, chip_size=32, model_gsd=1.0, out_size=32, **augment, seed=4)
    chips.set_epoch(2)
    order = list(PairSampler(pairs, shuffle=True, seed=1))[:40]
    batch = chips.__getitems__(order)
    assert [b["index"] for b in batch] == order
    for item, i in zip(batch, order, strict=True):
        assert item["image"].shape == (3, 32, 32) and item["image"].dtype == torch.float32
        assert torch.equal(item["image"], chips[i]["image"]), i
    if not augment:  # no augmentation: the stored crop, scaled (and resized) only
        image = batch[0]["image"].numpy()
        raw = chips.raw(order[0])[0]
        if gsd == 1.0:
            np.testing.assert_array_equal(image, raw.astype(np.float32) / np.float32(255))
        assert image.min() >= 0 and image.max() <= 1


def test_dataloader_batches_and_anchored_pairs_use_the_batched_fetch(exported, monkeypatch):
    from torch.utils.data import DataLoader

    from geobind.training.datasets import Anchored

    pairs = open_pairs(exported["soundingearth-hub"], gsd=1.0)
    chips = PairChips(pairs, chip_size=32, model_gsd=1.0, augment=True, gain_jitter=0.1)
    anchored = Anchored(chips, torch.randn(len(chips), 4))
    sampler = PairSampler(pairs, shuffle=True)
    calls = []
    batched = PairChips.__getitems__
    monkeypatch.setattr(
        PairChips, "__getitems__", lambda s, idx: calls.append(idx) or batched(s, idx)
    )
    loader = DataLoader(anchored, batch_size=16, sampler=sampler)
    got = next(iter(loader))
    first = list(sampler)[:16]
    assert calls == [first] and got["index"].tolist() == first
    expected = torch.stack([chips[i]["image"] for i in first])
    assert torch.equal(got["input"], expected) and torch.equal(
        got["anchor"], anchored.anchors[first]
    )


def test_apply_batch_is_apply_per_chip():
    from geobind.data import augment

    rng = np.random.default_rng(0)
    x = rng.random((6, 3, 8, 8), np.float32)
    invalid = rng.random((6, 8, 8)) < 0.2
    radiometric = {"gain_jitter": 0.2, "haze_jitter": 0.3}
    draws = [
        augment.draw(
            seed=1, epoch=0, index=k, jitter_px=2, bands=3, **(radiometric if k % 3 else {})
        )
        for k in range(5)
    ] + [None]  # a mix: radiometric or not, and one chip left alone
    out = augment.apply_batch(x.copy(), draws, invalid)
    for k, d in enumerate(draws):
        one = x[k] if d is None else augment.apply(x[k].copy(), d, invalid[k])
        np.testing.assert_array_equal(out[k], one)
        if d is not None and d.gains is not None:  # the radiometry, written out
            want = np.clip(x[k] * d.gains[:, None, None] * (1 - d.haze) + d.haze * augment.HAZE,
                           0, 1)  # fmt: skip
            want[:, invalid[k]] = 0
            np.testing.assert_allclose(out[k], augment.orient(want, d), rtol=0, atol=1e-6)
    assert out.dtype == np.float32
    same = augment.apply_batch(x.copy(), [None] * 6)  # nothing to do: the chips as they were
    np.testing.assert_array_equal(same, x)
    with pytest.raises(ValueError, match="6 chips but 2 draws"):
        augment.apply_batch(x, draws[:2])


def test_jpeg_decoding_gives_pils_pixels_and_refuses_broken_bytes():
    from PIL import Image

    from geobind.data.pairs import _decode_image

    rng = np.random.default_rng(0)
    px = np.cumsum(rng.integers(0, 40, (37, 53, 3)), axis=1).astype(np.uint8)
    for mode, options in [("RGB", {}), ("RGB", {"subsampling": 0}), ("L", {}), ("CMYK", {}),
                          ("RGB", {"progressive": True, "quality": 60})]:  # fmt: skip
        buffer = io.BytesIO()
        Image.fromarray(px).convert(mode).save(buffer, "JPEG", **options)
        with Image.open(io.BytesIO(buffer.getvalue())) as im:
            expected = np.asarray(im.convert("RGB")).transpose(2, 0, 1)
        got = _decode_image(buffer.getvalue(), "test image")
        assert got.dtype == np.uint8 and got.shape == (3, 37, 53)
        np.testing.assert_array_equal(got, expected, err_msg=f"{mode} {options}")
    truncated = buffer.getvalue()[: len(buffer.getvalue()) // 2]
    with pytest.raises(BadSampleError, match="cannot decode the test image"):
        _decode_image(truncated, "test image")


def test_webdataset_members_are_read_at_their_offsets_or_through_tarfile(exported, tmp_path):
    import gzip

    src = exported["webdataset"] / "val-000000.tar"
    plain = open_pairs(src)
    assert (plain.table["sat_offset"] > 0).all()
    with tarfile.open(src) as tar:
        for i in (0, len(plain) - 1):
            row = plain.table.iloc[i]
            assert plain._bytes(i, "sat") == tar.extractfile(row["sat_member"]).read()
            assert plain._bytes(i, "item") == tar.extractfile(row["item_member"]).read()
    packed = tmp_path / "val-000000.tar"  # gzip inside a .tar name: no offsets, tarfile reads
    packed.write_bytes(gzip.compress(src.read_bytes()))
    zipped = open_pairs(packed)
    assert (zipped.table["sat_offset"] == -1).all()
    np.testing.assert_array_equal(zipped.overhead(3), plain.overhead(3))
