"""docs/bad-input.md names a test for every case; each named test must exist."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).parents[1]


def test_every_case_in_the_bad_input_page_names_an_existing_test():
    page = (ROOT / "docs" / "bad-input.md").read_text()
    cited = re.findall(r"`(tests/[\w/]+\.py)::(test_\w+)`", page)
    rows = [line for line in page.splitlines() if line.startswith("| ") and "---" not in line]
    assert len(cited) >= 40
    assert all("`tests/" in row for row in rows if not row.startswith(("| case", "| property")))
    for path, name in cited:
        tree = ast.parse((ROOT / path).read_text())
        names = {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}
        assert name in names, f"docs/bad-input.md cites {path}::{name}, which does not exist"
