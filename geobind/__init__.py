"""geobind: satellite imagery, ground photos, audio and text in one embedding space.

``import geobind`` stays fast: torch, open_clip, transformers, lightning and torchgeo load only
when a feature that needs them is first used.

The functions that embed and query rasters, grids, Zarr stores and GeoDataFrames
(``geobind.embed``, ``similarity``, ``change``, ``top_k``, ``classify``, ``plot``,
``explore``) live in :mod:`geobind.inference.api`; the ``.geobind`` accessors wrap them.

Example:
    >>> import geobind
    >>> geobind.__version__ != ""
    True
"""

from __future__ import annotations

from geobind._version import __version__
from geobind.accessors import install as _install_accessors
from geobind.errors import GeoBindError, GeoBindWarning

__all__ = [
    "GeoBind",
    "GeoBindError",
    "GeoBindWarning",
    "__version__",
    "build_index",
    "change",
    "classify",
    "embed",
    "embed_to_zarr",
    "explore",
    "generate_world",
    "list_models",
    "load",
    "open_raster",
    "open_store",
    "plot",
    "query_store",
    "search",
    "similarity",
    "store_groups",
    "top_k",
    "use_model",
]

# PEP 562: public names from submodules (and torch behind them) load on first access
_LAZY = {
    "generate_world": "geobind.synth",
    "GeoBind": "geobind.models",
    "load": "geobind.models",
    "list_models": "geobind.models.presets",
    "use_model": "geobind.inference.context",
    "embed_to_zarr": "geobind.inference.store",
    "open_store": "geobind.inference.store",
    "query_store": "geobind.inference.store",
    "store_groups": "geobind.inference.store",
    "open_raster": "geobind.inference.raster",
    "embed": "geobind.inference.api",
    "similarity": "geobind.inference.api",
    "change": "geobind.inference.api",
    "top_k": "geobind.inference.api",
    "classify": "geobind.inference.api",
    "plot": "geobind.inference.api",
    "explore": "geobind.inference.api",
    "build_index": "geobind.inference.index",
    "search": "geobind.inference.search",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'geobind' has no attribute {name!r}")


_install_accessors()  # .geobind on xarray / GeoPandas objects, registered once those load
