"""Which model the accessors and CLI use: ``model=`` when given, else :func:`use_model`'s.

Models are loaded once per process and spec (a preset name, a model folder, a mapping of
pretrained sources) and kept in a small cache; accessors never store a model on the object they
are attached to. :class:`ModelRef` carries a model to dask workers as its spec, so each worker
loads it once, never once per block.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from contextvars import ContextVar
from functools import lru_cache
from pathlib import Path
from typing import Any

from geobind.errors import InputDataError

__all__ = ["ModelRef", "resolve_model", "use_model"]

_DEFAULT: ContextVar[Any] = ContextVar("geobind_default_model", default=None)


def _key(spec: Any) -> str:
    """A hashable, picklable key for a spec; folders include their metadata's mtime."""
    if isinstance(spec, Mapping):
        return json.dumps(spec, sort_keys=True, default=str)
    path = Path(spec)
    if path.is_dir():
        meta = path / "geobind.json"
        stamp = meta.stat().st_mtime_ns if meta.exists() else 0
        return f"{path.resolve()}@{stamp}"
    return str(spec)


@lru_cache(maxsize=4)
def _load_cached(key: str, spec_json: str) -> Any:
    from geobind.models import load

    return load(json.loads(spec_json))


def _load(spec: Any) -> Any:
    if isinstance(spec, os.PathLike):
        spec = str(spec)
    return _load_cached(_key(spec), json.dumps(spec, default=str))


class use_model:  # reads as a function; also a context manager
    """Set the default model for the ``.geobind`` accessors and ``geobind.embed_to_zarr``.

    Call it (``geobind.use_model("demo-out/model")``) to set the default for the session, or
    use it in a ``with`` block to set it for the block only. ``spec`` is anything
    :func:`geobind.load` takes, or a loaded model.

    Example:
        >>> import geobind
        >>> with geobind.use_model("tiny") as model:
        ...     model.name
        'tiny'
    """

    def __init__(self, spec: Any):
        if spec is None:
            raise InputDataError("use_model needs a model: a preset name, a folder or a model")
        self._token = _DEFAULT.set(spec)

    def __enter__(self) -> Any:
        return resolve_model(None)

    def __exit__(self, *exc: object) -> None:
        _DEFAULT.reset(self._token)


def resolve_model(model: Any = None) -> Any:
    """The model to use: ``model`` (a spec or a loaded model), else the :func:`use_model` default.

    Example:
        >>> resolve_model("tiny").embed_dim
        64
    """
    from geobind.models import GeoBind

    model = _DEFAULT.get() if model is None else model
    if model is None:
        raise InputDataError(
            "no model given: pass model=... (a preset name, a model folder or a loaded model) "
            "or set a default with geobind.use_model(...)"
        )
    if isinstance(model, GeoBind):
        return model
    return _load(model)


class ModelRef:
    """A model handle for dask tasks: the live model in this process, its spec in others.

    Pickling keeps only the spec, so a worker loads the model once (cached) and reuses it for
    every block; a model without a spec (built in memory and never saved) cannot travel.

    Example:
        >>> import pickle
        >>> ref = pickle.loads(pickle.dumps(ModelRef(resolve_model("tiny"))))
        >>> ref.get().name
        'tiny'
    """

    def __init__(self, model: Any):
        self._model = model
        self.spec = getattr(model, "source", None)

    def get(self) -> Any:
        """The model (loaded from its spec on first use in this process)."""
        if self._model is None:
            self._model = _load(self.spec)
        return self._model

    def __getstate__(self) -> dict[str, Any]:
        if self.spec is None:
            raise InputDataError(
                "this model was built in memory and cannot be sent to dask workers; save it "
                "with model.save(folder) and pass the folder as model="
            )
        return {"spec": self.spec, "_model": None}
