"""Model presets: small JSON files shipped in ``geobind/models/presets/``; and the names
:func:`geobind.load` takes (presets and the registry's published models)."""

from __future__ import annotations

import copy
import json
from functools import cache
from importlib import resources
from typing import Any

from geobind.errors import InputDataError

__all__ = ["get_preset", "list_models", "list_presets"]


@cache
def _presets() -> dict[str, dict[str, Any]]:
    folder = resources.files("geobind.models") / "presets"
    out = {}
    for entry in folder.iterdir():
        if entry.name.endswith(".json"):
            cfg = json.loads(entry.read_text())
            out[cfg["name"]] = cfg
    return out


def list_presets() -> list[str]:
    """Names of the model presets (architectures shipped as JSON; random or tagged weights).

    Example:
        >>> list_presets()
        ['demo', 'paper', 'tiny']
    """
    return sorted(_presets())


def list_models() -> list[str]:
    """Names :func:`geobind.load` takes: the presets, then the published models of the registry
    (:mod:`geobind.models.registry`; ``geobind models`` shows which are in the local cache).

    Example:
        >>> list_models()
        ['demo', 'paper', 'tiny', 'georsclip-vit-b-32', 'openai-clip-vit-b-32',
         'remoteclip-vit-b-32', 'sat2cap', 'skyclip-vit-b-32']
    """
    from geobind.models.registry import list_registered

    return list_presets() + list_registered(loadable=True)


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
