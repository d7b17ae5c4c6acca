"""Model presets: small JSON files shipped in ``geobind/models/presets/``."""

from __future__ import annotations

import copy
import json
from functools import cache
from importlib import resources
from typing import Any

from geobind.errors import InputDataError

__all__ = ["get_preset", "list_models"]


@cache
def _presets() -> dict[str, dict[str, Any]]:
    folder = resources.files("geobind.models") / "presets"
    out = {}
    for entry in folder.iterdir():
        if entry.name.endswith(".json"):
            cfg = json.loads(entry.read_text())
            out[cfg["name"]] = cfg
    return out


def list_models() -> list[str]:
    """Names of the model presets, for :func:`geobind.load`.

    Example:
        >>> list_models()
        ['demo', 'paper', 'tiny']
    """
    return sorted(_presets())


def get_preset(name: str) -> dict[str, Any]:
    """A copy of preset ``name``'s configuration.

    Example:
        >>> get_preset("tiny")["embed_dim"]
        64
    """
    presets = _presets()
    if name not in presets:
        raise InputDataError(
            f"unknown model preset {name!r}; choose one of {', '.join(sorted(presets))}"
        )
    return copy.deepcopy(presets[name])
