"""Examples run as written, so they never rot."""

from __future__ import annotations

import runpy
from pathlib import Path

from PIL import Image

EXAMPLES = Path(__file__).parents[1] / "examples"


def test_synth_world_example(tmp_path, capsys):
    module = runpy.run_path(str(EXAMPLES / "synth_world.py"))
    path = module["main"](tmp_path)
    assert "EPSG:32633" in capsys.readouterr().out
    with Image.open(path) as im:
        assert im.format == "PNG" and im.width > 300
