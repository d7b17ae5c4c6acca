"""Opening a store's search index: the checks that it matches its store, and the search itself.

:func:`open_index` reads ``STORE/_index`` (:mod:`geobind.inference.index` builds it; for a store
in an object store, through the local cache of :mod:`geobind.inference.index_location`), refuses
it when it no longer matches the store or is damaged (each refusal names the command that fixes
it), and returns a :class:`StoreIndex`, which searches vectors and maps ids back to cells.
Opened indexes are kept for the process and reopened when the index or the store changes.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from geobind._hashing import sha256_file
from geobind.errors import (
    IndexMismatchError,
    IndexNotFoundError,
    InputDataError,
    MissingDependencyError,
    SearchIndexError,
)
from geobind.inference.index_location import INDEX_DIR, IndexLocation

__all__ = ["INDEX_DIR", "StoreIndex", "open_index"]

INDEX_FORMAT = "geobind-index/1"
_GROUP_SHIFT = 40  # id = group number · 2⁴⁰ + position: 2⁴⁰ cells a group, 2²³ groups


def _faiss() -> Any:
    try:
        import faiss
    except ImportError as err:  # a dependency; only a broken install gets here
        raise MissingDependencyError(
            f"searching with an index needs faiss ({err}); pip install faiss-cpu"
        ) from None
    return faiss


def _rebuild_hint(root: Any) -> str:
    return (
        f"rebuild it with `geobind index {root} --rebuild` (or "
        "geobind.build_index(..., rebuild=True))"
    )


def _store_root(
    store: Any, storage_options: Mapping[str, Any] | None = None
) -> tuple[IndexLocation, dict[str, Any]]:
    """The store's index location and root settings; refuses what is not a geobind store.

    ``store`` may be an :class:`IndexLocation` already read (its settings are reused)."""
    if isinstance(store, IndexLocation) and getattr(store, "root_settings", None) is not None:
        return store, store.root_settings
    place = store if isinstance(store, IndexLocation) else IndexLocation(store, storage_options)
    place.root_settings, place.root_token = place.settings()
    return place, place.root_settings


def _group_state(root: IndexLocation, name: str) -> dict[str, Any]:
    """A group's tile state: ``done`` tiles, ``tiles`` in all, tiles that ``failed``."""
    import zarr

    from geobind.inference.store.metadata import _quiet

    with _quiet(), root.store.errors("read"):
        node = zarr.open_group(root.zarr, path=f"{name}/tiles", mode="r", use_consolidated=False)
        done = node["done"][...]
    failed = len(node.attrs.get("failed", []))
    return {"done": int((done == 1).sum()), "tiles": int(done.size), "failed": failed}


def _folder(root: IndexLocation) -> Path:
    return root.folder


_COPIES = {"float16": ("f16", "<f2"), "float32": ("f32", "<f4")}  # re-ranking copy: suffix, dtype


def _copy_dtype(meta: dict[str, Any]) -> str:
    """The dtype of an index's re-ranking copy: the store's (float32 or float16); indexes
    written before it was recorded hold float16."""
    return meta.get("copy_dtype", "float16")


def _group_arrays(
    folder: Path, number: int, cells: int, dim: int, dtype: str = "float16"
) -> tuple[np.ndarray, Any]:
    """A group's cell indices and vectors, memory-mapped (empty arrays for an empty group)."""
    suffix, code = _COPIES[dtype]
    if cells == 0:
        return np.empty(0, np.int64), np.empty((0, dim), code)
    flat = np.memmap(folder / "groups" / f"{number}.cells", "<i8", "r", shape=(cells,))
    vectors = np.memmap(folder / "groups" / f"{number}.{suffix}", code, "r", shape=(cells, dim))
    return flat, vectors


def _unit(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero), float32 and contiguous.

    Example:
        >>> _unit(np.array([[3.0, 4.0], [0.0, 0.0]])).tolist()
        [[0.6000000238418579, 0.800000011920929], [0.0, 0.0]]
    """
    x = np.asarray(x, np.float32)
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return np.ascontiguousarray(x / np.where(norm > 0, norm, 1), np.float32)


def _quantizer_ef(index: Any, nprobe: int) -> None:
    """Let an HNSW quantizer find at least the ``nprobe`` nearest lists (its default, 16, finds
    fewer than asked for)."""
    faiss = _faiss()
    if not hasattr(index, "nprobe"):
        return
    quantizer = faiss.downcast_index(faiss.extract_index_ivf(index).quantizer)
    if hasattr(quantizer, "hnsw"):
        quantizer.hnsw.efSearch = max(64, 2 * int(nprobe))


def _stale_groups(root: IndexLocation, settings: dict[str, Any], meta: dict[str, Any]) -> list[str]:
    """Store groups the index lacks, or whose tiles changed since they were indexed."""
    stale = []
    for name, g in settings["groups"].items():
        have = meta["groups"].get(name)
        changed = have is None or have["source_sha256"] != g["sha256"]
        if changed or (not have["complete"] and _group_state(root, name)["done"] != have["done"]):
            stale.append(name)
    return stale


def _no_index(root: Any) -> str:
    return (
        f"store {root} has no search index; build one with `geobind index {root}` (or "
        "geobind.build_index(store)), or search every cell with exact=True (--exact)"
    )


def _load_meta(root: IndexLocation) -> dict[str, Any]:
    path = _folder(root) / "index.json"
    if not path.exists():
        raise IndexNotFoundError(_no_index(root))
    try:
        meta = json.loads(path.read_text())
        if meta.get("format") != INDEX_FORMAT:
            raise ValueError(f"format {meta.get('format')!r}, expected {INDEX_FORMAT!r}")
        missing = {"params", "groups", "sat_sha256", "embed_dim", "files"} - set(meta)
        if missing:
            raise KeyError(", ".join(sorted(missing)))
        if "faiss.index" not in meta["files"]:
            raise KeyError("files/faiss.index")
    except (ValueError, KeyError, TypeError) as err:
        raise SearchIndexError(
            f"the search index of {root} is damaged ({path.name}: {err}); " + _rebuild_hint(root)
        ) from None
    return meta


def _check_model(root: Any, settings: dict[str, Any], meta: dict[str, Any]) -> None:
    made = settings.get("sat_sha256") or settings.get("model_sha256")
    if meta["sat_sha256"] != made:
        raise IndexMismatchError(
            f"the search index of {root} was built for model {meta.get('model')!r} (satellite "
            f"encoder sha256 {str(meta['sat_sha256'])[:12]}…) but the store now holds embeddings "
            f"of {settings.get('model')!r} (sha256 {str(made)[:12]}…); " + _rebuild_hint(root)
        )


def _index_files(meta: dict[str, Any]) -> dict[str, str | None]:
    """The files of an index, ``{name: sha256}`` (``None`` where older indexes recorded none)."""
    suffix = _COPIES[_copy_dtype(meta)][0]
    files = {"faiss.index": meta["files"]["faiss.index"]["sha256"]}
    for g in meta["groups"].values():
        for name in (f"groups/{g['number']}.cells", f"groups/{g['number']}.{suffix}"):
            files[name] = meta["files"].get(name, {}).get("sha256")
    return files


def _fetch(root: IndexLocation, meta: dict[str, Any], names: Any = None) -> None:
    """Bring an index's files (or the ``names`` of them) into its local folder; refuses those
    that do not match the hashes ``index.json`` recorded."""
    files = _index_files(meta)
    if names is not None:
        files = {name: files.get(name) for name in names}
    bad = root.sync(files)
    if bad:
        raise SearchIndexError(
            f"the search index of {root} is damaged ({', '.join(bad)} in the store do not match "
            "the hashes recorded when they were written: damaged, or being rewritten by a build "
            "that is not finished); " + _rebuild_hint(root)
        )


def _read_index(root: IndexLocation, meta: dict[str, Any]) -> Any:
    """The faiss index, after checking its size and hash against ``index.json``."""
    faiss = _faiss()
    path = _folder(root) / "faiss.index"
    want = meta["files"]["faiss.index"]
    damaged = None
    if not path.is_file():
        damaged = "faiss.index is missing"
    elif path.stat().st_size != want["bytes"]:
        damaged = f"faiss.index has {path.stat().st_size} bytes, {want['bytes']} were written"
    elif sha256_file(path) != want["sha256"]:
        damaged = "faiss.index does not match the hash recorded when it was written"
    if damaged is None:
        try:
            return faiss.read_index(str(path))
        except RuntimeError as err:
            damaged = f"faiss cannot read faiss.index: {str(err).splitlines()[0]}"
    raise SearchIndexError(
        f"the search index of {root} is damaged ({damaged}); " + _rebuild_hint(root)
    )


class StoreIndex:
    """An opened store index: :meth:`search` vectors, :meth:`locate` ids.

    Get one with :func:`open_index`.
    """

    def __init__(self, root: IndexLocation, meta: dict[str, Any], index: Any):
        self.root, self.meta, self.index = root, meta, index
        self.params = meta["params"]
        self.embed_dim = int(meta["embed_dim"])
        self.groups = list(meta["groups"])
        self.cells = sum(g["cells"] for g in meta["groups"].values())
        self._by_number = {g["number"]: name for name, g in meta["groups"].items()}
        self._arrays: dict[int, tuple[np.ndarray, Any]] = {}
        self.copy_dtype = _copy_dtype(meta)
        folder = _folder(root)
        copy = _COPIES[self.copy_dtype][0]
        width = np.dtype(_COPIES[self.copy_dtype][1]).itemsize * self.embed_dim
        for name, g in meta["groups"].items():
            for suffix, size in (("cells", 8), (copy, width)):
                path = folder / "groups" / f"{g['number']}.{suffix}"
                have = path.stat().st_size if path.is_file() else -1
                if g["cells"] and have != g["cells"] * size:
                    raise SearchIndexError(
                        f"the search index of {root} is damaged (the file of group {name!r} "
                        f"{path.name} has {have} bytes, {g['cells'] * size} expected); "
                        + _rebuild_hint(root)
                    )

    def _group(self, number: int) -> tuple[np.ndarray, Any]:
        if number not in self._arrays:
            g = self.meta["groups"][self._by_number[number]]
            self._arrays[number] = _group_arrays(
                _folder(self.root), number, g["cells"], self.embed_dim, self.copy_dtype
            )
        return self._arrays[number]

    def search(
        self, vectors: np.ndarray, k: int, *, nprobe: int | None = None, rerank: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` best cells for each of ``(n, embed_dim)`` unit vectors: ``(scores, ids)``,
        each ``(n, k)``, best first (ids ``-1`` and scores ``-inf`` past the end of a short list).

        ``nprobe`` and ``rerank`` override the index's defaults for this search. An IVF-PQ index
        gathers ``rerank · k`` candidates from the ``nprobe`` nearest lists by their codes, then
        scores them exactly with the re-ranking copy (the store's values: float32 stores keep a
        float32 copy, so these scores equal the exact scan's). Its codes are of unit vectors
        compared by L2 distance, which ranks them as the inner product does
        (``|q − x|² = |q|² + 1 − 2 q·x`` for unit ``x``) but estimates the codes' error far
        better than the inner product of the codes (whose norms stray from 1); indexes built
        before ``metric`` was recorded compare by inner product.

        Example:
            >>> import numpy as np
            >>> from geobind.georef import GeoBox
            >>> from geobind.inference.store import embed_to_zarr
            >>> from geobind.inference.index import build_index
            >>> pixels = np.random.default_rng(0).integers(0, 255, (3, 96, 96), dtype=np.uint8)
            >>> tif = GeoBox.from_origin(0, 96, 1, (96, 96), "EPSG:32633").write_geotiff(
            ...     getfixture("tmp_path") / "a.tif", pixels)
            >>> _ = embed_to_zarr(tif, tif.with_name("s.zarr"), model="tiny", stride=16)
            >>> _ = build_index(tif.with_name("s.zarr"))
            >>> index = open_index(tif.with_name("s.zarr"))
            >>> q = np.asarray(index._group(0)[1][:1], np.float32)  # the first cell's vector
            >>> scores, ids = index.search(q / np.linalg.norm(q), 3)
            >>> index.locate(ids[0, :1]), round(float(scores[0, 0]), 3)
            ((['a'], array([0]), array([0])), 1.0)
        """
        q = np.ascontiguousarray(np.atleast_2d(vectors), np.float32)
        if q.shape[1] != self.embed_dim:
            raise InputDataError(
                f"query vectors have {q.shape[1]} values; this index holds {self.embed_dim}-d "
                "embeddings"
            )
        if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
            raise InputDataError(f"k must be a positive integer; got {k!r}")
        if k > self.cells:
            raise InputDataError(
                f"k={k} is more than the {self.cells:,} cells indexed in {self.root}; pass "
                f"k ≤ {self.cells}"
            )
        params = self.params
        if params["kind"] == "flat":
            scores, ids = self.index.search(q, k)
            return scores, ids
        self.index.nprobe = int(nprobe or params["nprobe"])
        _quantizer_ef(self.index, self.index.nprobe)
        factor = params["rerank"] if rerank is None else int(rerank)
        l2 = self.meta.get("metric") == "l2"
        probe = _unit(q) if l2 else q
        if factor <= 1:
            scores, ids = self.index.search(probe, k)
            if l2:  # |q̂ − x|² = 2 − 2 q̂·x for unit q̂ and x: back to q·x
                scores = (1 - scores / 2) * np.linalg.norm(q, axis=1, keepdims=True)
                scores[ids < 0] = -np.inf
            return scores, ids
        _, ids = self.index.search(probe, min(self.cells, k * factor))
        return self._rerank(q, ids, k)

    def _rerank(self, q: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Exact scores of the candidates from the re-ranking copy; the best ``k`` of each row."""
        out_s = np.full((len(q), k), -np.inf, np.float32)
        out_i = np.full((len(q), k), -1, np.int64)
        for r in range(len(q)):
            cand = ids[r][ids[r] >= 0]
            numbers, pos = np.divmod(cand, 1 << _GROUP_SHIFT)
            exact = np.empty(len(cand), np.float32)
            for number in np.unique(numbers):
                sel = numbers == number
                order = np.argsort(pos[sel])  # sequential reads of the memory-mapped copy
                rows = pos[sel][order]
                vecs = np.asarray(self._group(int(number))[1][rows], np.float32)
                part = np.empty(len(rows), np.float32)
                # einsum, not BLAS: a threaded matrix-vector product of a few thousand rows
                # waits for its threads to wake (6 ms against 0.13 ms on a shared 2-core machine)
                part[order] = np.einsum("ij,j->i", vecs, q[r])
                exact[sel] = part
            best = np.lexsort((cand, -exact))[:k]
            out_s[r, : len(best)], out_i[r, : len(best)] = exact[best], cand[best]
        return out_s, out_i

    def locate(self, ids: np.ndarray) -> tuple[list[str], np.ndarray, np.ndarray]:
        """``(groups, rows, cols)`` of index ids.

        Example:
            >>> # see :meth:`search`
        """
        ids = np.asarray(ids, np.int64).reshape(-1)
        numbers, pos = np.divmod(ids, 1 << _GROUP_SHIFT)
        rows = np.empty(len(ids), np.int64)
        cols = np.empty(len(ids), np.int64)
        names = []
        for i, (number, p) in enumerate(zip(numbers.tolist(), pos.tolist(), strict=True)):
            name = self._by_number[number]
            width = self.meta["groups"][name]["shape"][1]
            rows[i], cols[i] = divmod(int(self._group(number)[0][p]), width)
            names.append(name)
        return names, rows, cols

    @property
    def memory_bytes(self) -> int:
        """Bytes the index holds in memory (the re-ranking copy is memory-mapped, not counted)."""
        return int(self.meta["memory_bytes"])


def open_index(
    store: str | os.PathLike, *, storage_options: Mapping[str, Any] | None = None
) -> StoreIndex:
    """Open a store's search index, after checking that it matches the store.

    Opened indexes are kept for the process (reopened when the index or the store changes).
    The index of a store in an object store (``s3://…``) is read from a local cache, where only
    the files that changed since the last search are downloaded
    (:mod:`geobind.inference.index_location`); ``storage_options``: its credentials and
    endpoint (default: the standard environment, ``AWS_ENDPOINT_URL`` …).

    Raises:
        IndexNotFoundError: the store has no index.
        IndexMismatchError: the store changed since (another satellite encoder, new groups).
        SearchIndexError: the index files are damaged.

    Example:
        >>> open_index(getfixture("tmp_path") / "missing.zarr")
        Traceback (most recent call last):
        ...
        geobind.errors.InputDataError: store ... does not exist (no zarr.json there)
    """
    root, settings = _store_root(store, storage_options)
    token = root.token()
    if token is None:
        raise IndexNotFoundError(_no_index(root))
    stamp = (str(root), token, root.root_token)
    if stamp in _OPEN:
        meta = _OPEN[stamp].meta
    else:
        token = root.load()  # index.json into the cache (an object store's index)
        if token is None:
            raise IndexNotFoundError(_no_index(root))
        stamp = (str(root), token, root.root_token)
        meta = _load_meta(root)
    _check_model(root, settings, meta)
    stale = _stale_groups(root, settings, meta)
    if stale:
        raise IndexMismatchError(
            f"the search index of {root} lacks group(s) {', '.join(stale)} written since it was "
            f"built; add them with `geobind index {root}` (only they are indexed)"
        )
    gone = [name for name in meta["groups"] if name not in settings["groups"]]
    if gone:
        raise IndexMismatchError(
            f"the index of {root} holds group(s) {', '.join(gone)} that the store no longer has; "
            + _rebuild_hint(root)
        )
    if stamp not in _OPEN:
        _fetch(root, meta)  # an object store's index files into the cache (those that changed)
        for key in [key for key in _OPEN if key[0] == str(root)]:
            del _OPEN[key]
        _OPEN[stamp] = StoreIndex(root, meta, _read_index(root, meta))
    return _OPEN[stamp]


_OPEN: dict[tuple, StoreIndex] = {}

with contextlib.suppress(AttributeError):  # forked children reopen their own copies
    os.register_at_fork(after_in_child=_OPEN.clear)
