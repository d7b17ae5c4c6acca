"""A search index kept with each store: the best cells of millions, in milliseconds.

:func:`build_index` indexes the valid cells of every group of a store
(:func:`~geobind.inference.store.embed_to_zarr`) with `faiss <https://faiss.ai>`_; a search
(:func:`geobind.search`) then reads a few thousand candidates instead of every cell. The index
lives in the store, in ``STORE/_index/`` (no group can take that name), and is updated in place
when :func:`~geobind.inference.store.embed_to_zarr` appends groups (or finishes tiles) to the store.

**Layout**::

    STORE/_index/
      index.json          format, kind and settings, the store's satellite encoder hash
                          (sat_sha256), each group's number, cells, grid (shape, transform, CRS)
                          and whether its tiles were all done; sizes and hashes of the files
      faiss.index         the faiss index (IVF-PQ codes and ids, or float16 vectors when flat)
      groups/<n>.cells    the flat cell index (row · width + col) of each indexed cell, in order
      groups/<n>.f16      those cells' vectors, float16 (n_cells, embed_dim): the re-ranking copy

**Ids.** Cell ``i`` of group number ``g`` has id ``g · 2⁴⁰ + i``; ``groups/<g>.cells[i]`` gives
its row and column, so a hit maps back to ``(group, row, col)`` with no table in memory.

**Kinds.** ``"flat"`` (stores of fewer than :data:`FLAT_BELOW` cells): every vector as float16,
scanned in full; exact. ``"ivfpq"``: an inverted file of ``nlist`` lists (k-means centroids;
their own HNSW graph from :data:`HNSW_QUANTIZER_FROM` lists on) whose vectors are product-
quantised to ``pq`` bytes; a query scans the ``nprobe`` nearest lists, takes the
``rerank × k`` best by their codes and re-ranks them exactly with the float16 copy, which is
memory-mapped (read from disk as needed, not held in memory). :func:`index_params` sizes these
from the number of cells; every one can be overridden.

**Why faiss.** Measured on this project's 2-core machine (``python benchmarks/search.py
--libraries``; 1 M cells of the demo model's 128-d embeddings, recall@100 against the exact
scan): faiss IVF-PQ with float16 re-ranking reached recall 0.98 at 1.3 ms a query with 0.16×
the float16 grid in memory; usearch's HNSW (int8 or float16 vectors, 16 links) reached recall
≥ 0.99 at about 1 ms but needs 0.9–1.4× the float16 grid in memory (its graph alone is half of
it), and builds 5× slower. At continent scale memory decides.

**Guarantees.** A search refuses an index that no longer matches its store (another satellite
encoder: :class:`~geobind.errors.IndexMismatchError`; groups added since and not yet indexed:
the same error, whose hint adds them) and a damaged one (:class:`~geobind.errors.SearchIndexError`,
with the command that rebuilds it); it never writes to the store. Building or updating takes the
store's one-writer lock. A new index is written next to the old one and swapped in, so a failed
build leaves the old index (and the store) as they were.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from geobind._hashing import sha256_file
from geobind._version import __version__
from geobind.errors import (
    IndexMismatchError,
    IndexNotFoundError,
    InputDataError,
    MissingDependencyError,
    SearchIndexError,
)

__all__ = [
    "FLAT_BELOW",
    "HNSW_QUANTIZER_FROM",
    "INDEX_DIR",
    "IndexSummary",
    "StoreIndex",
    "build_index",
    "index_params",
    "open_index",
    "update_index",
]

log = logging.getLogger(__name__)

INDEX_DIR = "_index"  # group names never start with "_" (metadata._group_name)
INDEX_FORMAT = "geobind-index/1"
FLAT_BELOW = 65_536  # fewer cells: scan them all (a few ms); more: IVF-PQ
HNSW_QUANTIZER_FROM = 2_048  # lists from which the centroids get an HNSW graph of their own
_GROUP_SHIFT = 40  # id = group number · 2⁴⁰ + position: 2⁴⁰ cells a group, 2²³ groups
_BATCH = 1 << 18  # cells read, encoded and added at a time (bounds memory)
_KINDS = ("auto", "flat", "ivfpq")


def _faiss() -> Any:
    try:
        import faiss
    except ImportError as err:  # a dependency; only a broken install gets here
        raise MissingDependencyError(
            f"searching with an index needs faiss ({err}); pip install faiss-cpu"
        ) from None
    return faiss


def _rebuild_hint(root: Path) -> str:
    return f"rebuild it with `geobind index {root} --rebuild` (or geobind.build_index(..., rebuild=True))"


def index_params(cells: int, dim: int, **overrides: Any) -> dict[str, Any]:
    """The index settings for ``cells`` vectors of ``dim`` values, with ``overrides`` applied.

    - ``kind``: ``"flat"`` below :data:`FLAT_BELOW` cells, else ``"ivfpq"``.
    - ``nlist``: inverted lists, a power of two near ``√cells`` (k-means trains on
      ``64 · nlist`` samples; more lists make queries faster and builds slower).
    - ``pq``: bytes per vector code, ``dim / 4`` (4 dimensions per byte, 8-bit codebooks):
      32 for 128-d, 128 for 512-d.
    - ``nprobe``: lists a query scans (about 2 % of them, at least 16);
      ``rerank``: candidates re-ranked exactly per result wanted (10: ``10 · k`` candidates).
    - ``train``: vectors sampled to train the centroids and codebooks.

    Example:
        >>> p = index_params(10_000_000, 128)
        >>> p["kind"], p["nlist"], p["pq"], p["nprobe"], p["rerank"]
        ('ivfpq', 4096, 32, 64, 30)
        >>> index_params(5_000, 64)["kind"]
        'flat'
        >>> index_params(10_000_000, 128, nprobe=8)["nprobe"]
        8
    """
    unknown = set(overrides) - {"kind", "nlist", "pq", "nprobe", "rerank", "train"}
    if unknown:
        raise InputDataError(
            f"unknown index setting(s) {sorted(unknown)}; use kind, nlist, pq, nprobe, rerank "
            "or train"
        )
    given = {k: v for k, v in overrides.items() if v is not None}
    kind = given.get("kind", "auto")
    if kind not in _KINDS:
        raise InputDataError(f"kind must be one of {_KINDS}; got {kind!r}")
    if kind == "auto":
        kind = "flat" if cells < FLAT_BELOW else "ivfpq"
    nlist = 2 ** max(0, round(math.log2(max(1.0, math.sqrt(max(cells, 1))))))
    nlist = int(given.get("nlist", min(nlist, 65_536)))
    params = {
        "kind": kind,
        "nlist": nlist,
        "pq": int(given.get("pq", max(1, dim // 4))),
        "nprobe": int(given.get("nprobe", min(nlist, max(16, nlist // 64)))),
        "rerank": int(given.get("rerank", 30)),
        "train": int(given.get("train", max(64 * nlist, 65_536))),
    }
    if kind == "flat":
        params.update(nlist=0, pq=0, nprobe=0, rerank=0)
        return params
    for key in ("nlist", "pq", "nprobe", "train"):
        if params[key] < 1:
            raise InputDataError(f"{key} must be ≥ 1; got {params[key]}")
    if params["rerank"] < 0:
        raise InputDataError(f"rerank must be ≥ 0 (0: no re-ranking); got {params['rerank']}")
    if dim % params["pq"]:
        raise InputDataError(
            f"pq={params['pq']} bytes must divide the {dim} dimensions of the embeddings "
            f"(e.g. pq={dim // 4})"
        )
    params["nprobe"] = min(params["nprobe"], params["nlist"])
    return params


def _factory(params: dict[str, Any]) -> str:
    """The faiss ``index_factory`` string of a kind and its settings.

    Example:
        >>> _factory({"kind": "ivfpq", "nlist": 1024, "pq": 32})
        'IVF1024,PQ32np'
        >>> _factory({"kind": "ivfpq", "nlist": 4096, "pq": 32})
        'IVF4096_HNSW32,PQ32np'
        >>> _factory({"kind": "flat"})
        'IDMap,SQfp16'
    """
    if params["kind"] == "flat":
        return "IDMap,SQfp16"
    quantizer = "_HNSW32" if params["nlist"] >= HNSW_QUANTIZER_FROM else ""
    # np: no polysemous training (a Hamming-distance filter geobind does not use; it was 3/4 of
    # the training time here)
    return f"IVF{params['nlist']}{quantizer},PQ{params['pq']}np"


@dataclass
class IndexSummary:
    """What :func:`build_index` or :func:`update_index` did."""

    store: Path
    kind: str
    params: dict[str, Any]
    cells: int
    groups: list[str]
    added: list[str]
    seconds: float
    memory_bytes: int
    disk_bytes: int
    grid_bytes: int  # the indexed cells as a float16 grid: what memory_bytes compares with
    timings: dict[str, float] = field(default_factory=dict)

    def __str__(self) -> str:
        settings = ", ".join(f"{k}={v}" for k, v in self.params.items() if k != "kind")
        added = (
            f"{len(self.added)} group(s) indexed ({', '.join(self.added)})"
            if self.added
            else "nothing new to index"
        )
        share = self.memory_bytes / max(self.grid_bytes, 1)
        return "\n".join(
            [
                f"{self.store}/{INDEX_DIR}: {self.kind} index of {self.cells:,} cells in "
                f"{len(self.groups)} group(s); {added} in {self.seconds:.1f} s",
                f"  settings: {settings}",
                f"  memory {self.memory_bytes / 2**20:.1f} MiB ({share:.2f}× the cells as float16)"
                f", on disk {self.disk_bytes / 2**20:.1f} MiB (with the float16 re-ranking copy)",
            ]
        )


# -- reading the store -----------------------------------------------------------------------------
def _store_root(store: str | os.PathLike) -> tuple[Path, dict[str, Any]]:
    """The store's folder and root settings; refuses what is not a geobind store."""
    from geobind.inference.store.read import store_groups

    root = Path(store).expanduser().resolve()
    store_groups(root)  # the store's own checks and messages
    attrs = json.loads((root / "zarr.json").read_text())["attributes"]["geobind"]
    return root, attrs


def _group_state(root: Path, name: str) -> dict[str, Any]:
    """A group's tile state: ``done`` tiles, ``tiles`` in all, tiles that ``failed``."""
    import zarr

    from geobind.inference.store.metadata import _quiet

    with _quiet():
        node = zarr.open_group(root, path=f"{name}/tiles", mode="r", use_consolidated=False)
        done = node["done"][...]
    failed = len(node.attrs.get("failed", []))
    return {"done": int((done == 1).sum()), "tiles": int(done.size), "failed": failed}


def _georef(root: Path, name: str) -> dict[str, Any]:
    """A group's grid: shape, transform (6 numbers) and CRS (WKT)."""
    from geobind.inference.store.read import open_store

    grid = open_store(root, group=name)
    t = grid.rio.transform(recalc=True)
    return {
        "shape": [int(grid.sizes["y"]), int(grid.sizes["x"])],
        "transform": [t.a, t.b, t.c, t.d, t.e, t.f],
        "crs": grid.rio.crs.to_wkt(),
    }


def _embed_dim(root: Path, names: list[str]) -> int:
    """The store's embedding length, from its first group's array."""
    import zarr

    from geobind.inference.store.metadata import _quiet

    if not names:
        raise InputDataError(f"store {root} has no group to index")
    with _quiet():
        return int(zarr.open_array(root, path=f"{names[0]}/embedding", mode="r").shape[0])


def _read_group(root: Path, name: str, dim: int):
    """``(flat cell indices, float16 vectors)`` of a group's valid cells, chunk by chunk."""
    import zarr

    from geobind.inference.store.metadata import _quiet

    with _quiet():
        emb = zarr.open_array(root, path=f"{name}/embedding", mode="r")
    _, ny, nx = emb.shape
    _, cy, cx = emb.chunks
    for r0 in range(0, ny, cy):
        for c0 in range(0, nx, cx):
            block = emb[:, r0 : r0 + cy, c0 : c0 + cx]
            h, w = block.shape[1:]
            flat = block.reshape(dim, -1)
            valid = np.isfinite(flat).all(0)
            if not valid.any():
                continue
            rr, cc = np.divmod(np.flatnonzero(valid), w)
            cells = (rr + r0).astype(np.int64) * nx + (cc + c0)
            yield cells, np.ascontiguousarray(flat[:, valid].T, dtype=np.float16)


# -- files ---------------------------------------------------------------------------------------
def _folder(root: Path) -> Path:
    return root / INDEX_DIR


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    os.replace(tmp, path)


def _write_group_files(folder: Path, number: int, chunks) -> tuple[int, int]:
    """Write a group's ``.cells`` and ``.f16`` files; returns ``(cells, dim)``."""
    (folder / "groups").mkdir(parents=True, exist_ok=True)
    n, dim = 0, 0
    with (
        open(folder / "groups" / f"{number}.cells", "wb") as fc,
        open(folder / "groups" / f"{number}.f16", "wb") as fv,
    ):
        for cells, vectors in chunks:
            fc.write(cells.astype("<i8").tobytes())
            fv.write(vectors.astype("<f2").tobytes())
            n += len(cells)
            dim = vectors.shape[1]
    return n, dim


def _group_arrays(folder: Path, number: int, cells: int, dim: int) -> tuple[np.ndarray, Any]:
    """A group's cell indices and vectors, memory-mapped (empty arrays for an empty group)."""
    if cells == 0:
        return np.empty(0, np.int64), np.empty((0, dim), np.float16)
    flat = np.memmap(folder / "groups" / f"{number}.cells", "<i8", "r", shape=(cells,))
    vectors = np.memmap(folder / "groups" / f"{number}.f16", "<f2", "r", shape=(cells, dim))
    return flat, vectors


def _disk_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


# -- building ------------------------------------------------------------------------------------
def _train_sample(folder: Path, groups: dict[str, Any], dim: int, size: int) -> np.ndarray:
    """Up to ``size`` vectors drawn evenly (seeded) from the groups' float16 copies."""
    total = sum(g["cells"] for g in groups.values())
    rng = np.random.default_rng(0)
    take = np.sort(rng.choice(total, min(size, total), replace=False))
    out, start = [], 0
    for g in groups.values():
        _, vectors = _group_arrays(folder, g["number"], g["cells"], dim)
        mine = take[(take >= start) & (take < start + g["cells"])] - start
        out.append(np.asarray(vectors[mine], np.float32))
        start += g["cells"]
    return np.concatenate(out)


def _quantizer_ef(index: Any, nprobe: int) -> None:
    """Let an HNSW quantizer find at least the ``nprobe`` nearest lists (its default, 16, finds
    fewer than asked for)."""
    faiss = _faiss()
    if not hasattr(index, "nprobe"):
        return
    quantizer = faiss.downcast_index(faiss.extract_index_ivf(index).quantizer)
    if hasattr(quantizer, "hnsw"):
        quantizer.hnsw.efSearch = max(64, 2 * int(nprobe))


def _add_group(index: Any, folder: Path, g: dict[str, Any], dim: int) -> None:
    _quantizer_ef(index, 32)
    _, vectors = _group_arrays(folder, g["number"], g["cells"], dim)
    base = g["number"] << _GROUP_SHIFT
    for i in range(0, g["cells"], _BATCH):
        block = np.asarray(vectors[i : i + _BATCH], np.float32)
        index.add_with_ids(block, base + np.arange(i, i + len(block), dtype=np.int64))


def _remove_group(index: Any, number: int) -> None:
    faiss = _faiss()
    lo = number << _GROUP_SHIFT
    index.remove_ids(faiss.IDSelectorRange(lo, lo + (1 << _GROUP_SHIFT)))


def _memory_bytes(index: Any) -> int:
    """Bytes the faiss index holds in memory (its serialised size; the float16 copy and the
    cell lists are memory-mapped, not held)."""
    return int(_faiss().serialize_index(index).nbytes)


def _save(index: Any, folder: Path, meta: dict[str, Any]) -> None:
    faiss = _faiss()
    tmp = folder / "faiss.index.tmp"
    faiss.write_index(index, str(tmp))
    os.replace(tmp, folder / "faiss.index")
    meta["files"] = {
        "faiss.index": {
            "bytes": (folder / "faiss.index").stat().st_size,
            "sha256": sha256_file(folder / "faiss.index"),
        }
    }
    meta["memory_bytes"] = _memory_bytes(index)
    meta["updated"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    _write_json(folder / "index.json", meta)


def _index_groups(root: Path, folder: Path, names: list[str], meta: dict, progress: bool) -> None:
    """Copy the named groups' valid cells into the index folder and record them in ``meta``."""
    from tqdm.auto import tqdm

    dim = meta["embed_dim"]
    for name in tqdm(names, desc=f"reading → {root.name}/{INDEX_DIR}", disable=not progress):
        old = meta["groups"].get(name)
        number = old["number"] if old else meta["next_number"]
        state = _group_state(root, name)
        cells, _ = _write_group_files(folder, number, _read_group(root, name, dim))
        meta["groups"][name] = {
            "number": number,
            "cells": cells,
            "source_sha256": meta["store_groups"][name]["sha256"],
            "complete": state["done"] == state["tiles"] and state["failed"] == 0,
            "done": state["done"],
            **_georef(root, name),
        }
        if old is None:
            meta["next_number"] = number + 1


def _build(root: Path, settings: dict, params: dict, progress: bool) -> IndexSummary:
    """Build a new index in ``_index.new``, then swap it in."""
    faiss = _faiss()
    start = time.perf_counter()
    folder = root / (INDEX_DIR + ".new")
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()
    try:
        meta = _new_meta(settings, params)
        names = list(settings["groups"])
        meta["embed_dim"] = _embed_dim(root, names)
        t0 = time.perf_counter()
        _index_groups(root, folder, names, meta, progress)
        dim = meta["embed_dim"]
        cells = sum(g["cells"] for g in meta["groups"].values())
        if cells == 0:
            raise InputDataError(f"store {root} has no valid cell to index (are its tiles done?)")
        auto = index_params(cells, dim, **{k: v for k, v in params.items() if k != "auto"})
        meta["params"] = auto
        timings = {"read": time.perf_counter() - t0}
        t0 = time.perf_counter()
        index = faiss.index_factory(dim, _factory(auto), faiss.METRIC_INNER_PRODUCT)
        if auto["kind"] == "ivfpq":
            if cells < auto["nlist"] * 4:
                raise InputDataError(
                    f"nlist={auto['nlist']} is too many lists for {cells:,} cells; pass a "
                    f"smaller nlist (≤ {max(1, cells // 39)}) or leave it to the index"
                )
            sample = _train_sample(folder, meta["groups"], dim, auto["train"])
            index.cp.min_points_per_centroid = 4  # small stores: no faiss warnings on stderr
            if sample.shape[0] < 256 * 4:
                raise InputDataError(
                    f"{cells:,} cells are too few to train 8-bit product quantisers (≥ 1024); "
                    "pass kind='flat'"
                )
            index.train(sample)
            timings["train"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        for g in meta["groups"].values():
            _add_group(index, folder, g, dim)
        timings["add"] = time.perf_counter() - t0
        _save(index, folder, meta)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    old = _folder(root)
    trash = root / (INDEX_DIR + ".old")
    shutil.rmtree(trash, ignore_errors=True)
    if old.exists():
        os.replace(old, trash)
    os.replace(folder, old)
    shutil.rmtree(trash, ignore_errors=True)
    _OPEN.clear()
    return _summary(root, meta, list(meta["groups"]), time.perf_counter() - start, timings)


def _new_meta(settings: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
    return {
        "format": INDEX_FORMAT,
        "library": "faiss",
        "library_version": _faiss().__version__,
        "geobind_version": __version__,
        "model": settings.get("model"),
        "sat_sha256": settings.get("sat_sha256") or settings.get("model_sha256"),
        "embed_dim": None,
        "store_dtype": settings.get("dtype"),
        "asked": {k: v for k, v in params.items() if v is not None},
        "params": {},
        "store_groups": settings["groups"],
        "groups": {},
        "next_number": 0,
    }


def _summary(root: Path, meta: dict, added: list[str], seconds: float, timings) -> IndexSummary:
    cells = sum(g["cells"] for g in meta["groups"].values())
    return IndexSummary(
        store=root,
        kind=meta["params"]["kind"],
        params=meta["params"],
        cells=cells,
        groups=list(meta["groups"]),
        added=added,
        seconds=seconds,
        memory_bytes=int(meta["memory_bytes"]),
        disk_bytes=_disk_bytes(_folder(root)),
        grid_bytes=cells * meta["embed_dim"] * 2,
        timings=timings,
    )


def _stale_groups(root: Path, settings: dict[str, Any], meta: dict[str, Any]) -> list[str]:
    """Store groups the index lacks, or whose tiles changed since they were indexed."""
    stale = []
    for name, g in settings["groups"].items():
        have = meta["groups"].get(name)
        if have is None or have["source_sha256"] != g["sha256"]:
            stale.append(name)
        elif not have["complete"] and _group_state(root, name)["done"] != have["done"]:
            stale.append(name)
    return stale


def _refresh(root: Path, settings: dict[str, Any], progress: bool = False) -> IndexSummary | None:
    """Index the groups an existing index lacks (the caller holds the store's lock); ``None``
    when the store has no index."""
    folder = _folder(root)
    if not (folder / "index.json").exists():
        return None
    start = time.perf_counter()
    meta = _load_meta(root)
    _check_model(root, settings, meta)
    stale = _stale_groups(root, settings, meta)
    gone = [name for name in meta["groups"] if name not in settings["groups"]]
    if gone:
        raise IndexMismatchError(
            f"the index of {root} holds group(s) {', '.join(gone)} that the store no longer has; "
            + _rebuild_hint(root)
        )
    if not stale:
        return _summary(root, meta, [], time.perf_counter() - start, {})
    index = _read_index(root, meta)
    meta["store_groups"] = settings["groups"]
    for name in stale:
        if name in meta["groups"]:
            _remove_group(index, meta["groups"][name]["number"])
    t0 = time.perf_counter()
    _index_groups(root, folder, stale, meta, progress)
    timings = {"read": time.perf_counter() - t0}
    t0 = time.perf_counter()
    for name in stale:
        _add_group(index, folder, meta["groups"][name], meta["embed_dim"])
    timings["add"] = time.perf_counter() - t0
    _save(index, folder, meta)
    _OPEN.clear()
    cells = sum(g["cells"] for g in meta["groups"].values())
    params = meta["params"]
    if params["kind"] == "flat" and cells >= 4 * FLAT_BELOW or (
        params["kind"] == "ivfpq" and cells > 16 * params["nlist"] ** 2
    ):
        log.warning(
            "the index of %s was sized for fewer cells than the %d it now holds; searches get "
            "slower: %s",
            root,
            cells,
            _rebuild_hint(root),
        )
    return _summary(root, meta, stale, time.perf_counter() - start, timings)


def build_index(
    store: str | os.PathLike,
    *,
    kind: str = "auto",
    nlist: int | None = None,
    pq: int | None = None,
    nprobe: int | None = None,
    rerank: int | None = None,
    train: int | None = None,
    rebuild: bool = False,
    progress: bool = False,
) -> IndexSummary:
    """Build (or bring up to date) a store's search index, kept in ``STORE/_index/``.

    Without an index, or with ``rebuild=True``, indexes every valid cell of every group.
    With one, indexes only the groups added (or tiles finished) since, with the settings it was
    built with; settings given then must match them (else pass ``rebuild=True``).
    :func:`~geobind.inference.store.embed_to_zarr` does this update itself when it appends
    to a store that has an index. Settings left out are sized from the number of cells by
    :func:`index_params`.

    Args:
        store: a store written by :func:`~geobind.inference.store.embed_to_zarr`.
        kind: ``"auto"``, ``"flat"`` (exact; every vector as float16) or ``"ivfpq"``.
        nlist: inverted lists (IVF-PQ).
        pq: bytes per product-quantised code; must divide ``embed_dim``.
        nprobe: lists a query scans by default (a search may pass another).
        rerank: candidates re-ranked exactly per result (``rerank · k``); 0 keeps the codes'
            approximate scores.
        train: vectors sampled to train the centroids and codebooks.
        rebuild: build anew even when an index exists (e.g. a damaged one).
        progress: show progress bars.

    Returns:
        An :class:`IndexSummary` (kind, settings, cells, groups added, seconds, memory).

    Raises:
        InputDataError: not a store, no valid cell, impossible settings.
        IndexMismatchError: an existing index made with other settings or for another model
            (pass ``rebuild=True``).
        StoreLockedError: another job is writing the store.

    Example:
        >>> import numpy as np
        >>> from geobind.georef import GeoBox
        >>> from geobind.inference.store import embed_to_zarr
        >>> pixels = np.random.default_rng(0).integers(0, 255, (3, 160, 160), dtype=np.uint8)
        >>> tif = GeoBox.from_origin(500_000, 4_600_160, 1, (160, 160), "EPSG:32633"
        ...                          ).write_geotiff(getfixture("tmp_path") / "a.tif", pixels)
        >>> _ = embed_to_zarr(tif, tif.with_name("s.zarr"), model="tiny", stride=8)
        >>> summary = build_index(tif.with_name("s.zarr"))
        >>> summary.kind, summary.cells, summary.groups
        ('flat', 289, ['a'])
    """
    from geobind.inference.store.lock import _StoreLock

    params = {"kind": kind, "nlist": nlist, "pq": pq, "nprobe": nprobe, "rerank": rerank}
    params["train"] = train
    index_params(FLAT_BELOW, 64 if pq is None else pq * 4, **params)  # validates early
    root, settings = _store_root(store)
    with _StoreLock(root):
        meta_path = _folder(root) / "index.json"
        if not rebuild and meta_path.exists():
            meta = _load_meta(root)
            _check_model(root, settings, meta)
            asked = {k: v for k, v in params.items() if v is not None and v != "auto"}
            differ = {
                k: v for k, v in asked.items() if meta["params"].get(k, meta["asked"].get(k)) != v
            }
            if differ:
                raise IndexMismatchError(
                    f"the index of {root} was built with "
                    + ", ".join(f"{k}={meta['params'].get(k)!r}" for k in differ)
                    + "; this call asks for "
                    + ", ".join(f"{k}={v!r}" for k, v in differ.items())
                    + ". Pass rebuild=True (--rebuild) to build it anew with them"
                )
            summary = _refresh(root, settings, progress)
            if summary is not None:  # None: the index went away meanwhile
                return summary
        return _build(root, settings, params, progress)


def update_index(store: str | os.PathLike, *, progress: bool = False) -> IndexSummary:
    """Index the groups added to a store (or tiles finished) since its index was built.

    Raises:
        IndexNotFoundError: the store has no index (build one with :func:`build_index`).
        IndexMismatchError: the index was built for another satellite encoder.

    Example:
        >>> update_index(getfixture("tmp_path") / "missing.zarr")
        Traceback (most recent call last):
        ...
        geobind.errors.InputDataError: store ... does not exist (no zarr.json there)
    """
    from geobind.inference.store.lock import _StoreLock

    root, settings = _store_root(store)
    with _StoreLock(root):
        summary = _refresh(root, settings, progress)
    if summary is None:
        raise IndexNotFoundError(_no_index(root))
    return summary


def refresh_after_write(root: Path) -> None:
    """Bring the index of a store just written up to date (the writer holds the lock); does
    nothing without an index. A failure is logged, never raised: the store itself is fine, and a
    search names the fix."""
    if not (_folder(root) / "index.json").exists():
        return
    try:
        _, settings = _store_root(root)
        summary = _refresh(root, settings)
        if summary is not None and summary.added:
            log.info("index of %s updated: %s", root, ", ".join(summary.added))
    except Exception as err:  # noqa: BLE001 - reported, and the store is complete
        log.warning("the search index of %s was not updated (%s); %s", root, err, _rebuild_hint(root))


# -- opening -------------------------------------------------------------------------------------
def _no_index(root: Path) -> str:
    return (
        f"store {root} has no search index; build one with `geobind index {root}` (or "
        "geobind.build_index(store)), or search every cell with exact=True (--exact)"
    )


def _load_meta(root: Path) -> dict[str, Any]:
    path = _folder(root) / "index.json"
    if not path.exists():
        raise IndexNotFoundError(_no_index(root))
    try:
        meta = json.loads(path.read_text())
        if meta.get("format") != INDEX_FORMAT:
            raise ValueError(f"format {meta.get('format')!r}, expected {INDEX_FORMAT!r}")
        for key in ("params", "groups", "sat_sha256", "embed_dim", "files"):
            meta[key]  # noqa: B018 - raises KeyError when missing
    except (ValueError, KeyError, TypeError) as err:
        raise SearchIndexError(
            f"the search index of {root} is damaged ({path.name}: {err}); " + _rebuild_hint(root)
        ) from None
    return meta


def _check_model(root: Path, settings: dict[str, Any], meta: dict[str, Any]) -> None:
    made = settings.get("sat_sha256") or settings.get("model_sha256")
    if meta["sat_sha256"] != made:
        raise IndexMismatchError(
            f"the search index of {root} was built for model {meta.get('model')!r} (satellite "
            f"encoder sha256 {str(meta['sat_sha256'])[:12]}…) but the store now holds embeddings "
            f"of {settings.get('model')!r} (sha256 {str(made)[:12]}…); " + _rebuild_hint(root)
        )


def _read_index(root: Path, meta: dict[str, Any]) -> Any:
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


_OPEN: dict[tuple, StoreIndex] = {}


class StoreIndex:
    """An opened store index: :meth:`search` vectors, :meth:`locate` ids.

    Get one with :func:`open_index`.
    """

    def __init__(self, root: Path, meta: dict[str, Any], index: Any):
        self.root, self.meta, self.index = root, meta, index
        self.params = meta["params"]
        self.embed_dim = int(meta["embed_dim"])
        self.groups = list(meta["groups"])
        self.cells = sum(g["cells"] for g in meta["groups"].values())
        self._by_number = {g["number"]: name for name, g in meta["groups"].items()}
        self._arrays: dict[int, tuple[np.ndarray, Any]] = {}
        folder = _folder(root)
        for name, g in meta["groups"].items():
            for suffix, size in (("cells", 8), ("f16", 2 * self.embed_dim)):
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
                _folder(self.root), number, g["cells"], self.embed_dim
            )
        return self._arrays[number]

    def search(
        self, vectors: np.ndarray, k: int, *, nprobe: int | None = None, rerank: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` best cells for each of ``(n, embed_dim)`` unit vectors: ``(scores, ids)``,
        each ``(n, k)``, best first (ids ``-1`` and scores ``-inf`` past the end of a short list).

        ``nprobe`` and ``rerank`` override the index's defaults for this search.

        Example:
            >>> import numpy as np
            >>> from geobind.georef import GeoBox
            >>> from geobind.inference.store import embed_to_zarr
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
        if factor <= 1:
            return self.index.search(q, k)
        scores, ids = self.index.search(q, min(self.cells, k * factor))
        return self._rerank(q, ids, k)

    def _rerank(self, q: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Exact scores of the candidates from the float16 copy; the best ``k`` of each row."""
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
                part[order] = vecs @ q[r]
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
        """Bytes the index holds in memory (the float16 copy is memory-mapped, not counted)."""
        return int(self.meta["memory_bytes"])


def open_index(store: str | os.PathLike) -> StoreIndex:
    """Open a store's search index, after checking that it matches the store.

    Opened indexes are kept for the process (reopened when the index or the store changes).

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
    root, settings = _store_root(store)
    meta_path = _folder(root) / "index.json"
    if not meta_path.exists():
        raise IndexNotFoundError(_no_index(root))
    stamp = (root, meta_path.stat().st_mtime_ns, (root / "zarr.json").stat().st_mtime_ns)
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
        for key in [key for key in _OPEN if key[0] == root]:
            del _OPEN[key]
        _OPEN[stamp] = StoreIndex(root, meta, _read_index(root, meta))
    return _OPEN[stamp]


with contextlib.suppress(AttributeError):  # forked children reopen their own copies
    os.register_at_fork(after_in_child=_OPEN.clear)
