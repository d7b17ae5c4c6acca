"""The two-stage chain on the tiny world: loss falls, recall beats random, stage 2 leaves sat
intact."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import numpy as np
import pytest

import geobind
from geobind.synth import generate_world
from geobind.training.config import TrainConfig

FAST = {"batch_size": 32, "lr": 1e-3, "warmup_steps": 5, "patience": 20}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return generate_world(tmp_path_factory.mktemp("w") / "tiny", "tiny", workers=1)


@pytest.fixture(scope="module")
def chain(world, tmp_path_factory):
    from geobind.training.stages import pretrain_clip, train_stage1, train_stage2

    tmp = tmp_path_factory.mktemp("models")
    common = {"world": str(world.root), **FAST}
    clip = pretrain_clip(TrainConfig(model="tiny", out=str(tmp / "clip"), epochs=4, **common))
    s1 = train_stage1(TrainConfig(model=str(clip), out=str(tmp / "s1"), epochs=6, **common))
    s2 = train_stage2(TrainConfig(model=str(s1), out=str(tmp / "s2"), epochs=8, **common))
    return clip, s1, s2


def _losses(model_folder) -> list[float]:
    logs = sorted(
        (model_folder.parent / f"{model_folder.name}.train" / "logs").rglob("metrics.csv")
    )
    rows = list(csv.DictReader(logs[-1].open()))
    return [float(r["train/loss"]) for r in rows if r.get("train/loss")]


@pytest.mark.slow
def test_chain_records_stages_and_the_stand_in(chain):
    meta = json.loads((chain[2] / "geobind.json").read_text())
    assert [s["stage"] for s in meta["stages"]] == ["pretrain-clip", "stage1", "stage2"]
    assert meta["config"]["clip"]["stand_in"] is True
    assert "stand-in" in meta["stages"][0]["note"]
    assert meta["stages"][1]["trained"] == "sat" and meta["stages"][2]["trained"] == "audio"


@pytest.mark.slow
@pytest.mark.parametrize("index", [0, 1, 2])
def test_loss_falls(chain, index):
    losses = _losses(chain[index])
    assert len(losses) >= 4
    k = max(2, len(losses) // 4)
    assert sum(losses[-k:]) / k < sum(losses[:k]) / k


@pytest.mark.slow
def test_stage2_leaves_the_satellite_encoder_bitwise_unchanged(chain):
    _, s1, s2 = chain
    h1 = json.loads((s1 / "geobind.json").read_text())["encoder_sha256"]
    h2 = json.loads((s2 / "geobind.json").read_text())["encoder_sha256"]
    assert h1["sat"] == h2["sat"] and h1["ground"] == h2["ground"] and h1["text"] == h2["text"]
    assert h1["audio"] != h2["audio"]
    assert geobind.load(s2).encoder_sha256("sat") == h1["sat"]


@pytest.mark.slow
def test_stage2_keeps_stage1_metrics(chain, world):
    from geobind.training.evaluate import evaluate

    before = evaluate(geobind.load(chain[1]), world.root, split="train", baselines=False)
    after = evaluate(geobind.load(chain[2]), world.root, split="train", baselines=False)
    for task in ("sat→ground", "ground→sat", "zero-shot land cover (sat, text prompts)"):
        assert before[task]["model"] == after[task]["model"], task


@pytest.mark.slow
def test_trained_recall_beats_random_and_untrained(chain, world):
    from geobind.training.evaluate import evaluate

    m = evaluate(geobind.load(chain[1]), world.root, split="train")
    s2g = m["sat→ground"]
    assert s2g["model"]["R@1"] > 3 * s2g["random"]["R@1"]
    assert s2g["model"]["R@10"] > s2g["untrained"]["R@10"]
    assert s2g["model"]["gallery_size"] > 50


@pytest.mark.slow
def test_resume_continues_from_the_last_checkpoint(world, tmp_path):
    from geobind.training.stages import train_stage1

    common = {"world": str(world.root), "model": "tiny", "out": str(tmp_path / "m"), **FAST}
    train_stage1(TrainConfig(epochs=1, **common))
    folder = train_stage1(TrainConfig(epochs=3, resume=True, overwrite=True, **common))
    record = json.loads((folder / "geobind.json").read_text())["stages"][-1]
    assert record["resumed_from"].endswith("last.ckpt")
    assert record["epochs_run"] == 3


def test_cli_config_file_and_flags(world, tmp_path):
    config = tmp_path / "stage1.yaml"
    config.write_text(
        f"model: tiny\nworld: {world.root}\nout: {tmp_path / 'm'}\nepochs: 5\nbatch_size: 32\n"
        "progress: false\n"
    )
    out = subprocess.run(
        [sys.executable, "-m", "geobind.cli", "train", "stage1", "--config", str(config),
         "--epochs", "2", "--val-every", "2", "--patch-dropout", "0.5"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "best val R@10" in out.stdout
    meta = json.loads((tmp_path / "m" / "geobind.json").read_text())
    config = meta["stages"][-1]["config"]
    assert config["epochs"] == 2 and config["patch_dropout"] == 0.5  # flags override the file
    assert config["batch_size"] == 32  # the file sets the rest
    logs = next((tmp_path / "m.train" / "logs").rglob("metrics.csv"))
    validated = [r for r in csv.DictReader(logs.open()) if r.get("val/R@10")]
    assert [r["epoch"] for r in validated] == ["1"]  # --val-every 2: after the second epoch only
    bad = tmp_path / "bad.toml"
    bad.write_text("epochz = 3\n")
    out = subprocess.run(
        [sys.executable, "-m", "geobind.cli", "train", "stage1", "--config", str(bad)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 2 and "epochz" in out.stderr


def test_existing_output_refused_before_training(world, tmp_path):
    from geobind.errors import OutputExistsError
    from geobind.training.stages import train_stage1

    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "keep.txt").write_text("mine")
    cfg = TrainConfig(model="tiny", world=str(world.root), out=str(tmp_path / "m"), epochs=50)
    with pytest.raises(OutputExistsError, match="overwrite"):
        train_stage1(cfg)
    assert not (tmp_path / "m.train").exists()  # refused before any training


def test_config_keys_may_use_hyphens():
    cfg = TrainConfig.from_mapping({"batch-size": 8, "scenes": "a.tif"})
    assert cfg.batch_size == 8 and cfg.scenes == ["a.tif"]


def test_patch_dropout_trains_on_fewer_tokens_and_puts_the_tower_back(tmp_path):
    import torch

    from geobind.errors import InputDataError
    from geobind.training.stages import _patch_dropout, train_stage2

    visual = geobind.load("tiny")["sat"].visual
    tokens = []
    hook = visual.transformer.register_forward_pre_hook(lambda m, a: tokens.append(a[0].shape[1]))
    x = torch.rand(2, 3, visual.image_size[0], visual.image_size[1])
    patches = (visual.image_size[0] // visual.patch_size[0]) ** 2
    before = visual.patch_dropout
    with torch.no_grad(), _patch_dropout(visual.train(), 0.5):
        visual(x)  # training: half the patches and the class token
        visual.eval()(x)  # validation and inference: all of them
    visual.train()(x)
    hook.remove()
    assert tokens == [1 + patches // 2, 1 + patches, 1 + patches]
    assert visual.patch_dropout is before
    for bad in (1.0, -0.1):
        with pytest.raises(InputDataError, match="patch_dropout"):
            TrainConfig(patch_dropout=bad)
    with (
        pytest.raises(InputDataError, match="vision transformer"),
        _patch_dropout(torch.nn.Linear(2, 2), 0.5),
    ):
        pass
    with pytest.raises(InputDataError, match="audio tower"):  # before loading anything
        train_stage2(TrainConfig(model="tiny", out=str(tmp_path / "m"), patch_dropout=0.5))


def test_audio_window_changes_with_the_epoch():
    from geobind.training.datasets import AudioClips

    features = geobind.load("tiny")["audio"].features
    clip = (np.random.default_rng(0).standard_normal(48000 * 9).astype(np.float32), 48000)
    ds = AudioClips([clip], features, augment=True, seed=1)
    seen = set()
    for epoch in range(6):
        ds.set_epoch(epoch)
        seen.add(float(ds[0]["input"].sum()))
    assert len(seen) > 1
    fixed = AudioClips([clip], features, augment=False)
    assert len({float(fixed[0]["input"].sum()) for _ in range(3)}) == 1
