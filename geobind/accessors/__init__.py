"""The ``.geobind`` accessors on xarray and GeoPandas objects (thin shells over ``inference``).

``import geobind`` must stay fast, and importing xarray and pandas costs about a second here
(measured: ``import xarray`` 1.0–1.2 s, ``import geobind`` 0.02 s, 2 cores). So the accessors
register when those libraries are imported: at once if they already are, else by a small import
hook that runs right after ``import xarray`` / ``import pandas`` completes. Either import order
works: ``import geobind; import rioxarray`` or the reverse.
"""

from __future__ import annotations

import importlib
import importlib.abc
import sys
from typing import Any

__all__ = ["install"]

_ACCESSORS = {"xarray": "geobind.accessors.xarray", "pandas": "geobind.accessors.geopandas"}


class _RegisterAfterImport(importlib.abc.MetaPathFinder):
    """Finds nothing itself: wraps the real loader of xarray/pandas to register afterwards."""

    def __init__(self, pending: dict[str, str]):
        self.pending = pending

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        if fullname not in self.pending:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None and spec.loader is not None:
                break
        else:
            return None
        run = spec.loader.exec_module

        def exec_module(module: Any) -> None:
            run(module)
            # only now: other code (torch) calls find_spec("xarray") without importing it
            accessor = self.pending.pop(fullname, None)
            if not self.pending and self in sys.meta_path:
                sys.meta_path.remove(self)
            if accessor:
                _register(accessor)

        spec.loader.exec_module = exec_module
        return spec


def _register(accessor: str) -> None:
    try:
        importlib.import_module(accessor)
    except Exception as err:  # never break the user's own import of xarray or pandas
        import warnings

        from geobind.errors import GeoBindWarning

        warnings.warn(f"geobind: {accessor} did not register: {err}", GeoBindWarning, stacklevel=2)


def install() -> None:
    """Register the accessors now for imported libraries, and on import for the others."""
    pending = {}
    for library, accessor in _ACCESSORS.items():
        if library in sys.modules:
            _register(accessor)
        else:
            pending[library] = accessor
    if pending and not any(isinstance(f, _RegisterAfterImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _RegisterAfterImport(pending))
