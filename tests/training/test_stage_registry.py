"""Stages as data, and training / evaluating on pair datasets (one epoch each, tiny model)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from geobind.cli import app, main
from geobind.errors import InputDataError
from geobind.synth import export_pairs
from geobind.training import registry
from geobind.training.config import TrainConfig
from geobind.training.registry import Stage, get_stage, register_stage
from geobind.training.stages import train_stage

runner = CliRunner()


@pytest.fixture(scope="module")
def pairs(tiny_world, tmp_path_factory):
    root = tmp_path_factory.mktemp("stage-pairs")
    return {
        "webdataset": export_pairs(tiny_world, root / "wds", layout="webdataset", size=48),
        "hub": export_pairs(tiny_world, root / "hub", layout="soundingearth-hub", size=48),
    }


def _cfg(tmp_path, **kw) -> TrainConfig:
    return TrainConfig(**{"model": "tiny", "out": str(tmp_path / "m"), "epochs": 1,
                          "batch_size": 16, **kw})  # fmt: skip


def test_stage1_on_webdataset_pairs_then_stage2_on_hub_pairs(pairs, tmp_path):
    stage1 = train_stage("stage1", _cfg(tmp_path, pairs=str(pairs["webdataset"]), pairs_gsd=1.0))
    record = json.loads((stage1 / "geobind.json").read_text())["stages"][-1]
    assert record["stage"] == "stage1" and record["data"]["source"] == "pairs"
    assert record["data"]["format"] == "webdataset" and record["data"]["train"] > 0
    cfg2 = TrainConfig(model=str(stage1), out=str(tmp_path / "m2"), epochs=1, batch_size=8,
                       pairs=str(pairs["hub"]), pairs_gsd=1.0)  # fmt: skip
    stage2 = train_stage("stage2", cfg2)
    meta = json.loads((stage2 / "geobind.json").read_text())
    assert [s["stage"] for s in meta["stages"]] == ["stage1", "stage2"]
    assert meta["stages"][-1]["frozen_sha256"]["sat"] == meta["stages"][-1]["sat_sha256"]
    with pytest.raises(InputDataError, match="needs ground"):  # a stage of another kind
        train_stage("stage1", _cfg(tmp_path / "x", pairs=str(pairs["hub"])))
    result = runner.invoke(
        app,
        ["eval", str(stage2), "--pairs", str(pairs["hub"]), "--pairs-gsd", "1", "--split",
         "train", "--out", str(tmp_path / "eval.json"), "--no-progress"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "eval.json").read_text())
    assert {"sat→audio", "audio→sat"} <= set(metrics)
    assert metrics["sat→audio"]["model"]["gallery_size"] > 5
    assert "random" in metrics["audio→sat"]


def test_a_registered_stage_trains_with_no_other_change(tiny_world, tmp_path, monkeypatch):
    monkeypatch.setattr(registry, "_STAGES", dict(registry._STAGES))  # undone after the test
    stage = register_stage(
        Stage("stage1-both-ways", trained="sat", anchor="ground", kind="ground",
              bidirectional=True, summary="stage 1 with the loss in both directions")
    )  # fmt: skip
    assert get_stage("stage1-both-ways") is stage
    result = runner.invoke(app, ["train", "--help"])  # the stages registered at import
    assert " stage1: satellite chips" in result.output and " stage2: audio" in result.output
    result = runner.invoke(
        app,
        ["train", "stage1-both-ways", "--model", "tiny", "--world", str(tiny_world.root),
         "--out", str(tmp_path / "m"), "--epochs", "1", "--no-progress"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "m" / "geobind.json").read_text())["stages"][-1]
    assert record["stage"] == "stage1-both-ways"
    assert record["loss"].startswith("bidirectional InfoNCE (sat ↔ ground)")
    assert set(record["frozen_sha256"]) == {"ground", "text", "audio"}


def test_stage_definitions_are_checked(capsys):
    with pytest.raises(InputDataError, match="one side must be 'sat'"):
        Stage("x", trained="audio", anchor="ground", kind="audio", bidirectional=True)
    with pytest.raises(InputDataError, match="trains its own anchor"):
        Stage("x", trained="sat", anchor="sat", kind="ground", bidirectional=True)
    with pytest.raises(InputDataError, match="registered already"):
        register_stage(Stage("stage1", "sat", "ground", "ground", bidirectional=True))
    with pytest.raises(InputDataError, match="registered stages: stage1, stage2"):
        get_stage("stage9")
    assert main(["train", "stage9", "--model", "tiny"]) == 2
    assert "error: unknown stage 'stage9'; registered stages" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize(
    ("layout", "stage"),
    [("manifest", "stage1"), ("soundingearth", "stage2")],  # the other two: the test above
)
def test_every_layout_trains_one_epoch_and_evaluates(tiny_world, tmp_path, layout, stage):
    data = export_pairs(tiny_world, tmp_path / layout, layout=layout, size=48)
    cfg = _cfg(tmp_path, pairs=str(data), pairs_gsd=1.0, batch_size=8)
    model = train_stage(stage, cfg)
    record = json.loads((model / "geobind.json").read_text())["stages"][-1]
    assert record["data"]["format"] == layout and record["epochs_run"] >= 0
    from geobind.training.evaluate import evaluate

    kind = "ground" if stage == "stage1" else "audio"
    metrics = evaluate(model, pairs=data, pairs_gsd=1.0, split="train", baselines=False)
    assert metrics[f"sat→{kind}"]["model"]["gallery_size"] == record["data"]["train"]
