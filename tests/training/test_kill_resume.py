"""kill -9 in the middle of training, then --resume continues from the last checkpoint."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from geobind.synth import generate_world


@pytest.mark.slow
def test_kill_9_during_training_then_resume(tmp_path):
    world = generate_world(tmp_path / "w", "tiny", workers=1)
    out = tmp_path / "s1"
    args = [
        sys.executable,
        "-m",
        "geobind.cli",
        "train",
        "stage1",
        "--world",
        str(world.root),
        "--model",
        "tiny",
        "--out",
        str(out),
        "--batch-size",
        "32",
        "--lr",
        "1e-3",
        "--patience",
        "50",
        "--no-progress",
    ]
    proc = subprocess.Popen(
        [*args, "--epochs", "50"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    last = tmp_path / "s1.train" / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 240
    while not last.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.5)
    assert last.exists(), "no checkpoint was written before the deadline"
    os.kill(proc.pid, signal.SIGKILL)  # mid-run: no cleanup, no model folder
    proc.wait()
    assert not (out / "geobind.json").exists()
    done = subprocess.run(
        [*args, "--epochs", "3", "--resume", "--overwrite"], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-2000:]
    record = json.loads((out / "geobind.json").read_text())["stages"][-1]
    assert record["resumed_from"].endswith("last.ckpt")
    assert record["epochs_run"] == 3
