"""Examples run as written, so they never rot."""

from __future__ import annotations

import runpy
from pathlib import Path

import pytest
from PIL import Image

EXAMPLES = Path(__file__).parents[1] / "examples"


def test_synth_world_example(tmp_path, capsys):
    module = runpy.run_path(str(EXAMPLES / "synth_world.py"))
    path = module["main"](tmp_path)
    assert "EPSG:32633" in capsys.readouterr().out
    with Image.open(path) as im:
        assert im.format == "PNG" and im.width > 300


@pytest.mark.slow
def test_quickstart_notebook_runs(tmp_path, monkeypatch):
    import nbformat
    from nbclient import NotebookClient

    monkeypatch.setenv("GEOBIND_DEMO", str(tmp_path / "no-demo"))  # the tiny fallback
    monkeypatch.delenv("MPLBACKEND", raising=False)  # the kernel draws inline, as in Jupyter
    nb = nbformat.read(EXAMPLES / "quickstart.ipynb", as_version=4)
    NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": tmp_path}}
    ).execute()
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert sum("image/png" in o.get("data", {}) for o in outputs) >= 3  # the maps were drawn
    text = "".join(o.get("text", "") for o in outputs)
    assert "model tiny, scene alpha" in text


@pytest.mark.slow
def test_pipeline_example(tmp_path, capsys):
    import geopandas as gpd

    module = runpy.run_path(str(EXAMPLES / "pipeline.py"))
    target = module["main"](tmp_path, [])
    hits = gpd.read_file(target)
    assert hits.crs.to_epsg() == 4326 and len(hits) == 40
    assert set(hits["scene"]) == {"alpha", "beta"}
    assert hits["score"].is_monotonic_decreasing
    assert "40 hits" in capsys.readouterr().out
