"""The documentation builds offline and warning-free, with its generated references."""

from __future__ import annotations

import ast
import html
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]


def _text(page: Path) -> str:
    """The words of an HTML page, tags dropped, entities decoded, whitespace collapsed."""
    words = html.unescape(re.sub(r"<[^>]+>", " ", page.read_text(encoding="utf-8")))
    return " ".join(words.split())


def _summary(path: Path, function: str) -> str:
    """The first line of a function's docstring, read without importing its module (torch)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    node = next(n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == function)
    return ast.get_docstring(node).splitlines()[0].replace("``", "")


@pytest.mark.slow
@pytest.mark.skipif(
    importlib.util.find_spec("mkdocs") is None, reason="mkdocs is not installed (the docs extra)"
)
def test_docs_build_strict(tmp_path):
    # HF_HUB_OFFLINE=1 comes from conftest.py; the other variable silences Material's banner
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout + done.stderr

    cli = _text(tmp_path / "cli" / "index.html")
    assert "geobind convert-clap" in cli and "--trust-pickle" in cli

    api = _text(tmp_path / "api" / "geobind" / "index.html")
    assert "geobind.load" in api
    assert _summary(ROOT / "geobind" / "models" / "bundle.py", "load") in api
