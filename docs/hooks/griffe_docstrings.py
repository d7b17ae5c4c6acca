"""griffe extension: geobind's docstrings, as mkdocstrings' Google parser reads them.

geobind's Google-style docstrings head their doctests ``Example:`` (STYLE.md). griffe's Google
parser knows only the plural, ``Examples:``, and renders the singular as an admonition of plain
Markdown: the ``>>>`` lines lose their code formatting, and list reprs such as ``[10, 10, 10]``
are taken for cross-references (``mkdocs_autorefs: Could not find cross-reference target``).
Renaming the heading before parsing gives a proper, highlighted example block instead.

The docstrings also use Sphinx roles (``:func:`~geobind.errors.GeoBindError` ``), which Markdown
shows as literal ``:func:`` text; they become code spans naming the object (the last dotted part
when ``~`` asks for it). They are not turned into links: several name objects that griffe cannot
see statically (``geobind.load`` is loaded lazily) or that live in other projects (numpy,
torchgeo), and unresolved links fail the ``--strict`` build.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_EXAMPLE = re.compile(r"^(\s*)Example:[ \t]*$", re.MULTILINE)
_ROLE = re.compile(r":(?:func|class|meth|mod|attr|data|exc|obj):`(~?)([^`]+)`")


def _role_to_code(match: re.Match[str]) -> str:
    short, target = match.groups()
    return f"`{target.rsplit('.', 1)[-1] if short else target}`"


class GeobindDocstrings(griffe.Extension):
    """Turn ``Example:`` headings into ``Examples:`` and Sphinx roles into code, everywhere."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            text = _EXAMPLE.sub(r"\1Examples:", obj.docstring.value)
            obj.docstring.value = _ROLE.sub(_role_to_code, text)
