"""geobind: satellite imagery, ground photos, audio and text in one embedding space.

``import geobind`` stays fast: torch, open_clip, transformers, lightning and torchgeo load only
when a feature that needs them is first used.

Example:
    >>> import geobind
    >>> geobind.__version__ != ""
    True
"""

from __future__ import annotations

from geobind._version import __version__
from geobind.errors import GeoBindError, GeoBindWarning

__all__ = ["GeoBindError", "GeoBindWarning", "__version__", "generate_world"]


def __getattr__(name: str):  # PEP 562: public names from submodules load on first access
    if name == "generate_world":
        from geobind.synth import generate_world

        return generate_world
    raise AttributeError(f"module 'geobind' has no attribute {name!r}")
