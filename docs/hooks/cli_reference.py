"""mkdocs hook: the CLI reference, generated from the typer app ``geobind.cli:app``.

``docs/cli.md`` holds the marker below; on build it is replaced by the Markdown that typer's own
generator writes (``typer geobind.cli utils docs``), with headings moved one level down so the
page keeps its title. Why not a plugin: with typer 0.29 (which carries its own copy of click),
mkdocs-click and mkdocs-typer2's ``native`` engine fail on typer's parameter objects
(``'TyperOption' object has no attribute 'type'``), and mkdocs-typer2's ``legacy`` engine runs
this same typer command but renders it without fenced code (usage lines come out as inline
``console $ …`` text, ``<path>`` metavars as raw HTML) and leaves the page empty, without an
error, when the command fails. Here a failure stops the build. Cost: ~0.8 s, one subprocess;
it imports only ``geobind.cli`` (no torch, no network).
"""

from __future__ import annotations

import subprocess
import sys

MARKER = "<!-- geobind-cli-reference -->"


def _cli_markdown() -> str:
    result = subprocess.run(
        [sys.executable, "-m", "typer", "geobind.cli", "utils", "docs", "--name", "geobind"],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"typer could not document geobind.cli:app:\n{result.stderr}")
    lines, fenced = [], False
    for line in result.stdout.splitlines():
        if line.startswith("```"):
            fenced = not fenced
        lines.append(f"#{line}" if line.startswith("#") and not fenced else line)
    return "\n".join(lines) + "\n"


def on_page_markdown(markdown: str, page, **kwargs) -> str:
    if MARKER not in markdown:
        return markdown
    return markdown.replace(MARKER, _cli_markdown())
