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


def _pack(model: Any) -> tuple[str, dict[str, bytes]]:
    """The model folder's files (saving an in-memory model first), and a digest naming them."""
    import hashlib
    import tempfile

    spec = getattr(model, "source", None)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(spec) if spec is not None else model.save(Path(tmp) / "model")
        files = {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}
    digest = hashlib.sha256()
    for name, data in files.items():
        digest.update(name.encode() + b"\0" + hashlib.sha256(data).digest())
    return digest.hexdigest(), files


def _unpack(digest: str, files: dict[str, bytes]) -> Path:
    """The shipped files as a model folder in this user's part of the temporary folder (written
    once per machine, atomically: concurrent workers race harmlessly; other users cannot write
    there, and loading checks the weights against ``geobind.json``'s SHA-256)."""
    import shutil
    import tempfile

    mine = (
        Path(tempfile.gettempdir())
        / f"geobind-models-{os.getuid() if hasattr(os, 'getuid') else 0}"
    )
    mine.mkdir(mode=0o700, exist_ok=True)
    folder = mine / digest[:32]
    if not (folder / "geobind.json").is_file():
        partial = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
        for name, data in files.items():
            (partial / name).write_bytes(data)
        try:
            partial.rename(folder)
        except OSError:  # another worker won the race: its folder holds the same files
            shutil.rmtree(partial, ignore_errors=True)
    return folder


class ModelRef:
    """A model handle for dask tasks: the live model in this process, its spec in others.

    Pickling keeps only the spec (a preset name, hub tag or folder), so a worker loads the model
    once (cached) and reuses it for every block. With ``ship=True`` a model whose spec is a
    local folder, or that was built in memory, travels as its files instead (weights and
    ``geobind.json``), for workers that share no disk with this machine: scatter the ref once
    (``client.scatter(ref, broadcast=True)``) and each worker writes the folder once to its own
    temporary folder. Without ``ship``, a model built in memory cannot travel.

    Example:
        >>> import pickle
        >>> ref = pickle.loads(pickle.dumps(ModelRef(resolve_model("tiny"))))
        >>> ref.get().name
        'tiny'
        >>> from geobind.models import GeoBind
        >>> memory = GeoBind.from_config(resolve_model("tiny").config)  # never saved
        >>> pickle.loads(pickle.dumps(ModelRef(memory, ship=True))).get().embed_dim
        64
    """

    def __init__(self, model: Any, *, ship: bool = False):
        self._model = model
        self.spec = getattr(model, "source", None)
        self._shipped: tuple[str, dict[str, bytes]] | None = None
        if ship and (self.spec is None or Path(str(self.spec)).is_dir()):
            self._shipped = _pack(model)

    def get(self) -> Any:
        """The model (loaded from its spec, or its shipped files, on first use in a process)."""
        if self._model is None:
            spec = self.spec if self._shipped is None else _unpack(*self._shipped)
            self._model = _load(spec)  # (the bytes stay: dask may copy this ref to a new worker)
        return self._model

    def __getstate__(self) -> dict[str, Any]:
        if self.spec is None and self._shipped is None:
            raise InputDataError(
                "this model was built in memory and cannot be sent to dask workers; save it "
                "with model.save(folder) and pass the folder as model="
            )
        return {"spec": self.spec, "_model": None, "_shipped": self._shipped}
