"""Training output as a person sees it: one bar per stage, each message once, no advertisements;
``--verbose`` brings Lightning's own messages back (still once each)."""

from __future__ import annotations

import logging
import re
import subprocess
import sys

import pytest

from geobind.training.progress import lightning_messages

ADVERTS = ("Tip:", "litlogger", "litmodels", "Lightning Experiments")


def messages(text: str) -> list[str]:
    """Printed lines, progress-bar redraws (``\\r``) split apart and left out."""
    lines = [part.strip() for line in text.split("\n") for part in line.split("\r")]
    return [line for line in lines if line and not re.search(r"\d+%\|", line)]


def train(world, out, *extra: str) -> str:
    """``geobind pretrain-clip`` in a fresh process (the CLI configures logging as for a user)."""
    args = ["pretrain-clip", "--model", "tiny", "--world", str(world.root), "--out", str(out)]
    run = subprocess.run(
        [sys.executable, "-m", "geobind.cli", *args, "--epochs", "2", *extra],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    return run.stdout + run.stderr


@pytest.mark.slow
def test_training_prints_each_message_once_and_a_bar_with_its_numbers(tiny_world, tmp_path):
    printed = train(tiny_world, tmp_path / "clip")
    for word in (*ADVERTS, "GPU available", "TPU available", "Trainer.fit", "LeafSpec"):
        assert word not in printed, word
    lines = messages(printed)
    repeated = {line for line in lines if lines.count(line) > 1}
    assert not repeated, repeated
    assert lines[0].startswith("pretrain-clip: model written to"), lines
    # the bar: the stage, the epoch, the last loss and the last validation R@10
    final = re.findall(r"pretrain-clip: 100%\|[^\r\n]*", printed)[-1]
    assert re.search(r"epoch 2/2, loss \d+\.\d{3}, val R@10 \d\.\d{3}", final), final


@pytest.mark.slow
def test_verbose_brings_lightning_messages_back_once(tiny_world, tmp_path):
    printed = train(tiny_world, tmp_path / "clip", "--verbose", "--no-progress")
    assert printed.count("GPU available") == 1
    assert printed.count("`Trainer.fit` stopped") == 1
    assert not [word for word in ADVERTS if word in printed]
    assert "pretrain-clip: 100%" not in printed  # --no-progress: no bar
    lines = messages(printed)
    assert len(lines) == len(set(lines))


def test_lightning_messages_puts_everything_back():
    top = logging.getLogger("lightning")
    pytorch = logging.getLogger("lightning.pytorch")
    before = (pytorch.level, top.propagate, [list(h.filters) for h in top.handlers])
    with lightning_messages(verbose=False):
        assert pytorch.getEffectiveLevel() == logging.WARNING
        with lightning_messages():  # the stages' own block keeps an enclosing quiet one
            assert pytorch.getEffectiveLevel() == logging.WARNING
    assert (pytorch.level, top.propagate, [list(h.filters) for h in top.handlers]) == before


def test_adverts_are_dropped_and_other_messages_kept():
    import io

    import lightning  # noqa: F401 - installs its console handler

    top = logging.getLogger("lightning")
    seen = logging.StreamHandler(io.StringIO())
    top.addHandler(seen)
    try:
        log = logging.getLogger("lightning.pytorch.utilities.rank_zero")
        with lightning_messages(verbose=True):
            log.info("💡 Tip: For seamless cloud logging, try installing [litlogger](...)")
            log.info("GPU available: False, used: False")
        log.info("💡 Tip: outside the block, Lightning's own rules")
    finally:
        top.removeHandler(seen)
    lines = seen.stream.getvalue().splitlines()
    assert lines == [
        "GPU available: False, used: False",
        "💡 Tip: outside the block, Lightning's own rules",
    ]
