"""Queries into the shared space: text, audio, ground photos or vectors → unit vectors.

:func:`embed_query` reads what a query is from its type (or from the keyword it was passed
under) and embeds it with the matching encoder; :func:`cosine` scores embedding grids against the
query vectors chunk by chunk, in float32 whatever the grid's dtype.
"""

from __future__ import annotations

import functools
import itertools
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from geobind.errors import InputDataError

__all__ = ["AUDIO_SUFFIXES", "IMAGE_SUFFIXES", "cosine", "embed_query"]

AUDIO_SUFFIXES = frozenset({".wav", ".flac", ".ogg", ".mp3", ".aif", ".aiff", ".opus"})
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".heic"})


def _kind(item: Any, embed_dim: int) -> str:
    """``"text"``, ``"audio"``, ``"ground"`` or ``"vector"`` for one query item."""
    if isinstance(item, str | os.PathLike):
        suffix = Path(item).suffix.lower()
        if suffix in AUDIO_SUFFIXES | IMAGE_SUFFIXES or isinstance(item, os.PathLike):
            if not Path(item).is_file():
                raise InputDataError(f"query file {item} does not exist")
            if suffix in AUDIO_SUFFIXES:
                return "audio"
            if suffix in IMAGE_SUFFIXES:
                return "ground"
            raise InputDataError(
                f"cannot tell what {item} is from its suffix; pass audio=..., image=... or text=..."
            )
        return "text"
    if isinstance(item, tuple) and len(item) == 2 and np.isscalar(item[1]):
        return "audio"  # (samples, rate)
    if type(item).__module__.startswith("PIL."):
        return "ground"
    if hasattr(item, "shape"):
        if item.shape[-1:] == (embed_dim,) and len(item.shape) in (1, 2):
            return "vector"
        raise InputDataError(
            f"an array query must be an embedding of {embed_dim} values (or (n, {embed_dim})); got "
            f"shape {tuple(item.shape)}. Pass audio arrays as audio=(samples, rate)"
        )
    raise InputDataError(
        f"cannot use a {type(item).__name__} as a query; pass text, an audio or photo path, "
        "(samples, rate), a PIL image or an embedding vector"
    )


def _label(item: Any, kind: str) -> str:
    if isinstance(item, str | os.PathLike):
        return str(item) if kind == "text" else Path(item).name
    return kind


def embed_query(
    model: Any,
    query: Any = None,
    *,
    text: str | Sequence[str] | None = None,
    audio: Any = None,
    image: Any = None,
    vector: Any = None,
    templates: Sequence[str] | None = None,
) -> tuple[np.ndarray, list[str], bool]:
    """Embed a query: returns ``(vectors (n, embed_dim) float32, labels, several)``.

    ``query`` is read by type: a string is text unless it names an audio (``.wav``, ``.flac``
    …) or photo (``.jpg``, ``.png`` …) file; a ``Path`` must be a file; ``(samples, rate)`` is
    audio; a PIL image is a photo; an array of ``embed_dim`` values (or ``(n, embed_dim)``) is
    used as it is. A list mixes any of these. The keywords force a kind. ``several`` is True
    when the query was a list (the result gets a ``query`` dimension).

    Example:
        >>> import geobind
        >>> vecs, labels, several = embed_query(geobind.load("tiny"), ["a lake", "a forest"])
        >>> vecs.shape, labels, several
        ((2, 64), ['a lake', 'a forest'], True)
    """
    given = {
        k: v
        for k, v in {
            "query": query,
            "text": text,
            "audio": audio,
            "ground": image,
            "vector": vector,
        }.items()
        if v is not None
    }
    if len(given) != 1:
        raise InputDataError(
            "pass exactly one query: a positional query, or one of text=, audio=, image=, vector="
        )
    kind, value = next(iter(given.items()))
    several = isinstance(value, list) or (
        kind in ("vector", "query") and getattr(value, "ndim", 0) == 2
    )
    if kind == "text" and isinstance(value, tuple):
        value = list(value)
    items = value if isinstance(value, list) else [value]
    if not items:
        raise InputDataError("the query list is empty")
    kinds = [kind if kind != "query" else _kind(item, model.embed_dim) for item in items]
    vectors: list[np.ndarray | None] = [None] * len(items)
    for k in dict.fromkeys(kinds):
        idx = [i for i, ki in enumerate(kinds) if ki == k]
        chosen = [items[i] for i in idx]
        if k == "vector":
            vecs = np.concatenate([np.atleast_2d(np.asarray(v, np.float32)) for v in chosen])
            if vecs.shape[1] != model.embed_dim or not np.isfinite(vecs).all():
                raise InputDataError(
                    f"query vectors must hold {model.embed_dim} finite values each; got "
                    f"shape {vecs.shape}"
                )
            vecs = vecs / np.maximum(np.linalg.norm(vecs, axis=1, keepdims=True), 1e-12)
            if len(chosen) == 1 and len(vecs) > 1:  # one (n, D) array
                return vecs, [f"vector {i}" for i in range(len(vecs))], True
        elif k == "text":
            vecs = model["text"].embed(chosen, templates=templates).numpy()
        else:
            vecs = model[k].embed(chosen).numpy()
        for i, v in zip(idx, vecs, strict=True):
            vectors[i] = v
    labels = [_label(item, k) for item, k in zip(items, kinds, strict=True)]
    return np.stack(vectors).astype(np.float32), labels, several


def cosine(
    grid: np.ndarray, vectors: np.ndarray, *, chunk: int = 4096, threads: int | None = None
) -> np.ndarray:
    """Cosine similarity of an ``(embed_dim, …)`` grid of unit vectors with ``(n, embed_dim)``
    query vectors: ``(n, …)`` float32, NaN where the grid is NaN.

    float32 and float16 grids are read in place by a compiled kernel
    (:func:`geobind.inference.kernels.dot_rows`: float16 is widened in registers, never copied),
    ``chunk`` cells at a time, the cells split across ``threads`` threads (default
    ``torch.get_num_threads()``) when there are at least 2¹⁸ cells. Other dtypes (float64, a
    non-native byte order) are converted to a float32 copy first.

    Example:
        >>> import numpy as np
        >>> g = np.array([[1.0, 0.0], [0.0, 1.0]], np.float32)  # 2 cells: (1, 0) and (0, 1)
        >>> cosine(g, np.array([[1.0, 0.0]], np.float32)).tolist()
        [[1.0, 0.0]]
    """
    from geobind.inference.kernels import dot_rows

    if chunk < 1:
        raise ValueError(f"chunk must be at least 1 cell; got {chunk}")
    d = grid.shape[0]
    flat = np.ascontiguousarray(grid).reshape(d, -1)
    if flat.dtype == np.float16:
        flat = flat.view(np.uint16)
    elif flat.dtype != np.float32:
        flat = flat.astype(np.float32)
    q = np.ascontiguousarray(vectors, np.float32)
    if q.ndim != 2 or q.shape[1] != d:
        raise ValueError(f"query vectors of shape {q.shape} do not match a {d}-band grid")
    if threads is None:
        import torch

        threads = torch.get_num_threads()
    cells = flat.shape[1]
    out = np.empty((len(q), cells), np.float32)
    parts = max(1, min(threads, cells >> 17))
    edges = np.linspace(0, cells, parts + 1).astype(int).tolist()
    # the caller scores the first part while helper threads (kept between calls) score the rest
    helpers = _helpers(parts - 1) if parts > 1 else None
    jobs = [
        helpers.submit(dot_rows, flat, q, out, a, b, chunk)
        for a, b in itertools.pairwise(edges[1:])
    ]
    try:
        dot_rows(flat, q, out, 0, edges[1], chunk)
    finally:
        for job in jobs:
            job.result()
    return out.reshape((len(q), *grid.shape[1:]))


@functools.cache
def _helpers(n: int) -> ThreadPoolExecutor:
    """``n`` threads for :func:`cosine`, started once per process."""
    return ThreadPoolExecutor(n, thread_name_prefix="geobind-cosine")


# A forked child inherits the pool object but not its threads: it would wait on them forever.
os.register_at_fork(after_in_child=_helpers.cache_clear)
