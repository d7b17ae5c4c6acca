"""`geobind demo` end to end on the demo preset: the README's first command, checked."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from geobind.cli import main


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "geobind-demo"
    start = time.perf_counter()
    assert main(["demo", str(out)]) == 0
    return out, time.perf_counter() - start


@pytest.mark.slow
def test_demo_maps_text_queries_onto_their_land_cover(demo, capsys):
    out, seconds = demo
    queries = json.loads((out / "maps" / "queries.json").read_text())
    text = [q for q in queries if q["kind"] == "text"]
    assert sum(q["auroc"] >= 0.8 for q in text) >= 3, text
    assert any(q["kind"] == "audio" for q in queries)
    for q in queries:
        assert (out / "maps" / f"{q['png'].rsplit('/', 1)[-1]}").exists()
        assert q["cog"].endswith(".tif")
    metrics = json.loads((out / "eval.json").read_text())
    s2g = metrics["sat→ground"]
    assert s2g["model"]["R@10"] > 2 * s2g["random"]["R@10"]
    assert s2g["model"]["R@10"] > s2g["untrained"]["R@10"]
    assert seconds < 15 * 60  # 10 minutes on a quiet 2-core machine; slack for a busy CI box


@pytest.mark.slow
def test_demo_rerun_reuses_every_step(demo, capsys):
    out, _ = demo
    start = time.perf_counter()
    assert main(["demo", str(out)]) == 0
    assert time.perf_counter() - start < 60
    printed = capsys.readouterr().out
    assert printed.count("up to date, reused") == 7
    assert "AUROC" in printed and "geobind query" in printed


@pytest.mark.slow
def test_quickstart_notebook_on_the_demo_model(demo, tmp_path, monkeypatch):
    import nbformat
    from nbclient import NotebookClient

    out, _ = demo
    monkeypatch.setenv("GEOBIND_DEMO", str(out))
    monkeypatch.delenv("MPLBACKEND", raising=False)
    nb = nbformat.read(Path(__file__).parents[1] / "examples" / "quickstart.ipynb", as_version=4)
    client = NotebookClient(nb, timeout=600, resources={"metadata": {"path": tmp_path}})
    client.execute()
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "".join(o.get("text", "") for o in outputs)
    assert f"model {out / 'model'}, scene gamma" in text
