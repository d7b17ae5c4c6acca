"""A search index kept with each store: the best cells of millions, in milliseconds.

:func:`build_index` indexes the valid cells of every group of a store
(:func:`~geobind.inference.store.embed_to_zarr`) with `faiss <https://faiss.ai>`_; a search
(:func:`geobind.search`) then reads a few thousand candidates instead of every cell. The index
lives in the store, in ``STORE/_index/`` (no group can take that name), and is updated in place
when :func:`~geobind.inference.store.embed_to_zarr` appends groups (or finishes tiles) to the store.
A store in an object store (``s3://``, ``gs://``, ``az://``, ``memory://``) keeps the same files
as objects; they are built in, and read from, a local cache
(:mod:`geobind.inference.index_location`).

**Layout**::

    STORE/_index/
      index.json          format, kind and settings, the store's satellite encoder hash
                          (sat_sha256), each group's number, cells, grid (shape, transform, CRS)
                          and whether its tiles were all done; sizes and SHA-256 of the files
      faiss.index         the faiss index (IVF-PQ codes and ids, or the vectors when flat)
      groups/<n>.cells    the flat cell index (row · width + col) of each indexed cell, in order
      groups/<n>.f32|f16  those cells' vectors (n_cells, embed_dim) in the store's dtype
                          (float32, else float16): the re-ranking copy

**Ids.** Cell ``i`` of group number ``g`` has id ``g · 2⁴⁰ + i``; ``groups/<g>.cells[i]`` gives
its row and column, so a hit maps back to ``(group, row, col)`` with no table in memory.

**Kinds.** ``"flat"`` (stores of fewer than :data:`FLAT_BELOW` cells): every vector in the
store's dtype, scanned in full; exact. ``"ivfpq"``: an inverted file of ``nlist`` lists (k-means
centroids; their own HNSW graph from :data:`HNSW_QUANTIZER_FROM` lists on) whose unit vectors
are product-quantised to ``pq`` bytes and compared by L2 distance (for unit vectors it ranks as
the inner product does; see :meth:`StoreIndex.search`); a query scans the ``nprobe`` nearest
lists, takes the ``rerank × k`` best by their codes and re-ranks them exactly with the copy,
which is memory-mapped (read from disk as needed, not held in memory), so the scores are the
exact scan's. :func:`index_params` sizes these from the number of cells; every one can be
overridden.

**Recall.** What limits it, measured (``benchmarks/search.py``: the demo model's embeddings, all
within a narrow cone, mean vector of norm 0.95): codes compared by inner product put only 0.80
of "places like this" queries' exact top 100 among 30 · k candidates (their top 100 span
scores 0.002 apart, less than the codes' error, in which the inner product of a code with a
norm off 1 is biased); compared by L2 distance, 1.00. Text queries of the demo model lie far
from every cell (cosine ~0.1): their best cells spread over many lists, so they set ``nprobe``;
and an HNSW graph over the centroids missed their lists (capped at 0.90 at 3 M cells),
so the centroids are scanned in full up to 65 536 lists.

**Why faiss.** Measured on this project's 2-core machine, shared with other jobs
(``python benchmarks/search.py --libraries``; 1 M cells of the demo model's 128-d embeddings,
100 queries, recall@100 against the exact scan, *tied*: a cell within 1e-3 of the 100th best
score counts; inner-product codes then, before the L2 codes above): faiss ``IVF4096,PQ32``
with float16 re-ranking of 10 · k candidates, nprobe 64:
recall 1.000 (strict 0.905), 1.0 ms a query, 0.17× the float16 grid in memory; without
re-ranking recall 0.79; the 4-bit fast-scan variant ``PQ32x4fs`` ≤ 0.78 even re-ranked. usearch
HNSW (16 links, ef 256): float16 vectors recall 0.937 (strict 0.79) at 0.6 ms, int8 vectors 0.41
(these embeddings sit in a narrow cone that int8 flattens), both 2.1× the float16 grid in memory;
builds took 222 s for faiss (with polysemous training, since left out: it was most of that) and
319–342 s for usearch. At continent scale memory decides, so faiss IVF-PQ, with its codes in
memory and the re-ranking copy on disk (the split DiskANN makes).

**Guarantees.** A search refuses an index that no longer matches its store (another satellite
encoder: :class:`~geobind.errors.IndexMismatchError`; groups added since and not yet indexed:
the same error, whose hint adds them) and a damaged one (:class:`~geobind.errors.SearchIndexError`,
with the command that rebuilds it); it never writes to the store. Building or updating takes the
store's one-writer lock (an object store's lease). A new index is written next to the old one
and swapped in (in an object store: uploaded, ``index.json`` last), so a failed build leaves the
old index (and the store) as they were.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from geobind._hashing import sha256_file
from geobind._version import __version__
from geobind.errors import IndexMismatchError, IndexNotFoundError, InputDataError
from geobind.inference.index_location import IndexLocation, write_json
from geobind.inference.index_open import (
    _COPIES,
    _GROUP_SHIFT,
    _OPEN,
    INDEX_DIR,
    INDEX_FORMAT,
    StoreIndex,
    _check_model,
    _copy_dtype,
    _faiss,
    _fetch,
    _folder,
    _group_arrays,
    _group_state,
    _index_files,
    _load_meta,
    _no_index,
    _quantizer_ef,
    _read_index,
    _rebuild_hint,
    _stale_groups,
    _store_root,
    _unit,
    open_index,
)

__all__ = [
    "FLAT_BELOW",
    "HNSW_QUANTIZER_FROM",
    "INDEX_DIR",
    "SCAN_AT_LEAST",
    "IndexSummary",
    "StoreIndex",
    "build_index",
    "index_params",
    "open_index",
    "update_index",
]

log = logging.getLogger(__name__)

FLAT_BELOW = 65_536  # fewer cells: scan them all (a few ms); more: IVF-PQ
# lists from which the centroids get an HNSW graph of their own. Below, the query is compared
# with every centroid (nlist · dim values: 0.5 M for 4096 lists of 128-d, ~0.1 ms): an HNSW graph
# picks the wrong lists for queries far from the cells (text), whose recall@100 it capped at 0.90
# at 3 M cells however many lists were scanned (benchmarks/search.py)
HNSW_QUANTIZER_FROM = 65_536
SCAN_AT_LEAST = 65_536  # cells whose codes a query scans at least (about a millisecond)
_BATCH = 1 << 18  # cells read, encoded and added at a time (bounds memory)
_KINDS = ("auto", "flat", "ivfpq")


def index_params(cells: int, dim: int, **overrides: Any) -> dict[str, Any]:
    """The index settings for ``cells`` vectors of ``dim`` values, with ``overrides`` applied.

    - ``kind``: ``"flat"`` below :data:`FLAT_BELOW` cells, else ``"ivfpq"``.
    - ``nlist``: inverted lists, a power of two near ``√cells`` (k-means trains on
      ``64 · nlist`` samples; more lists make queries faster and builds slower).
    - ``pq``: bytes per vector code, ``dim / 4`` (4 dimensions per byte, 8-bit codebooks):
      32 for 128-d, 128 for 512-d.
    - ``nprobe``: lists a query scans, an eighth of them, at least 32, and enough to hold
      :data:`SCAN_AT_LEAST` cells (small stores: lists are small and scanning them cheap; on
      a 71 k-cell store, 256 lists, text queries of the ``tiny`` model found 0.83 of their
      exact top 100 in an eighth of the lists, 0.98 in half). Text queries lie
      far from the cells (cosine ~0.1 with all of them) and their best cells spread over many
      lists, unlike "places like this", whose best cells share one or two (measured at 3 M
      cells of 128-d, 2048 lists: the share of text queries' exact top 100 in the lists scanned
      was 0.94 with a 32nd of them, 0.98 with a 16th, 0.99 with an 8th; cell queries' 1.00).
    - ``rerank``: candidates gathered by their codes and re-ranked exactly, per result wanted
      (50: ``50 · k``; at 3 M cells, 30 · k candidates held 0.95 of text queries' exact top 100,
      50 · k 0.97; cell queries' 1.00 from 30 · k on).
    - ``train``: vectors sampled to train the centroids and codebooks.

    Example:
        >>> p = index_params(10_000_000, 128)
        >>> p["kind"], p["nlist"], p["pq"], p["nprobe"], p["rerank"]
        ('ivfpq', 4096, 32, 512, 50)
        >>> index_params(5_000, 64)["kind"]
        'flat'
        >>> index_params(10_000_000, 128, nprobe=8)["nprobe"]
        8
        >>> index_params(70_000, 64)["nprobe"]  # 256 lists of ~270 cells
        240
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
    floor = math.ceil(SCAN_AT_LEAST * nlist / max(cells, 1))  # lists holding that many cells
    params = {
        "kind": kind,
        "nlist": nlist,
        "pq": int(given.get("pq", max(1, dim // 4))),
        "nprobe": int(given.get("nprobe", min(nlist, max(32, nlist // 8, floor)))),
        "rerank": int(given.get("rerank", 50)),
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


def _factory(params: dict[str, Any], dtype: str = "float16") -> str:
    """The faiss ``index_factory`` string of a kind and its settings (``dtype``: the store's,
    which a flat index keeps).

    Example:
        >>> _factory({"kind": "ivfpq", "nlist": 1024, "pq": 32})
        'IVF1024,PQ32np'
        >>> _factory({"kind": "ivfpq", "nlist": 4096, "pq": 32})
        'IVF4096,PQ32np'
        >>> _factory({"kind": "ivfpq", "nlist": 65536, "pq": 32})
        'IVF65536_HNSW32,PQ32np'
        >>> _factory({"kind": "flat"}), _factory({"kind": "flat"}, "float32")
        ('IDMap,SQfp16', 'IDMap,Flat')
    """
    if params["kind"] == "flat":
        return "IDMap,Flat" if dtype == "float32" else "IDMap,SQfp16"
    quantizer = "_HNSW32" if params["nlist"] >= HNSW_QUANTIZER_FROM else ""
    # np: no polysemous training (a Hamming-distance filter geobind does not use; it was 3/4 of
    # the training time here)
    return f"IVF{params['nlist']}{quantizer},PQ{params['pq']}np"


@dataclass
class IndexSummary:
    """What :func:`build_index` or :func:`update_index` did."""

    store: Path | str  # a folder, or an object store URL
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
                f", on disk {self.disk_bytes / 2**20:.1f} MiB (with the re-ranking copy)",
            ]
        )


# -- reading the store -----------------------------------------------------------------------------


def _georef(root: IndexLocation, name: str) -> dict[str, Any]:
    """A group's grid: shape, transform (6 numbers) and CRS (WKT)."""
    from geobind.inference.store.read import open_store

    grid = open_store(root.store, group=name)
    t = grid.rio.transform(recalc=True)
    return {
        "shape": [int(grid.sizes["y"]), int(grid.sizes["x"])],
        "transform": [t.a, t.b, t.c, t.d, t.e, t.f],
        "crs": grid.rio.crs.to_wkt(),
    }


def _embed_dim(root: IndexLocation, names: list[str]) -> int:
    """The store's embedding length, from its first group's array."""
    import zarr

    from geobind.inference.store.metadata import _quiet

    if not names:
        raise InputDataError(f"store {root} has no group to index")
    with _quiet(), root.store.errors("read"):
        return int(zarr.open_array(root.zarr, path=f"{names[0]}/embedding", mode="r").shape[0])


def _read_group(root: IndexLocation, name: str, dim: int, dtype: str = "float16"):
    """``(flat cell indices, vectors as dtype)`` of a group's valid cells, chunk by chunk."""
    import zarr

    from geobind.inference.store.metadata import _quiet

    with _quiet():
        emb = zarr.open_array(root.zarr, path=f"{name}/embedding", mode="r")
    _, ny, nx = emb.shape
    _, cy, cx = emb.chunks
    for r0 in range(0, ny, cy):
        for c0 in range(0, nx, cx):
            block = emb[:, r0 : r0 + cy, c0 : c0 + cx]
            w = block.shape[2]
            flat = block.reshape(dim, -1)
            valid = np.isfinite(flat).all(0)
            if not valid.any():
                continue
            rr, cc = np.divmod(np.flatnonzero(valid), w)
            cells = (rr + r0).astype(np.int64) * nx + (cc + c0)
            yield cells, np.ascontiguousarray(flat[:, valid].T, dtype=dtype)


# -- files ---------------------------------------------------------------------------------------


def _write_group_files(
    folder: Path, number: int, chunks, dtype: str = "float16"
) -> tuple[int, int, dict[str, dict[str, Any]]]:
    """Write a group's ``.cells`` and re-ranking copy (``.f16`` or ``.f32``) files; returns
    ``(cells, dim, files)``, ``files`` the bytes and SHA-256 of each (by name in the index)."""
    (folder / "groups").mkdir(parents=True, exist_ok=True)
    suffix, code = _COPIES[dtype]
    names = (f"groups/{number}.cells", f"groups/{number}.{suffix}")
    hashes = [hashlib.sha256(), hashlib.sha256()]
    n, dim, size = 0, 0, [0, 0]
    # written aside, then swapped in: a search may have the old files memory-mapped
    tmp = [folder / f"{name}.tmp" for name in names]
    with open(tmp[0], "wb") as fc, open(tmp[1], "wb") as fv:
        for cells, vectors in chunks:
            for i, (out, data) in enumerate(
                ((fc, cells.astype("<i8").tobytes()), (fv, vectors.astype(code).tobytes()))
            ):
                out.write(data)
                hashes[i].update(data)
                size[i] += len(data)
            n += len(cells)
            dim = vectors.shape[1]
    for path, name in zip(tmp, names, strict=True):
        os.replace(path, folder / name)
    files = {
        name: {"bytes": b, "sha256": h.hexdigest()}
        for name, b, h in zip(names, size, hashes, strict=True)
    }
    return n, dim, files


def _disk_bytes(meta: dict[str, Any]) -> int:
    """Bytes of an index's files (faiss.index, the cell lists and the re-ranking copy)."""
    width = np.dtype(_COPIES[_copy_dtype(meta)][1]).itemsize * int(meta["embed_dim"])
    cells = sum(g["cells"] for g in meta["groups"].values())
    return int(meta["files"]["faiss.index"]["bytes"]) + cells * (8 + width)


# -- building ------------------------------------------------------------------------------------
def _train_sample(
    folder: Path, groups: dict[str, Any], dim: int, size: int, dtype: str = "float16"
) -> np.ndarray:
    """Up to ``size`` unit vectors drawn evenly (seeded) from the groups' re-ranking copies."""
    total = sum(g["cells"] for g in groups.values())
    rng = np.random.default_rng(0)
    take = np.sort(rng.choice(total, min(size, total), replace=False))
    out, start = [], 0
    for g in groups.values():
        _, vectors = _group_arrays(folder, g["number"], g["cells"], dim, dtype)
        mine = take[(take >= start) & (take < start + g["cells"])] - start
        out.append(_unit(vectors[mine]))
        start += g["cells"]
    return np.concatenate(out)


def _add_group(index: Any, folder: Path, g: dict[str, Any], meta: dict[str, Any]) -> None:
    """Add a group's vectors (unit vectors for an L2 index) with their ids."""
    _quantizer_ef(index, 32)
    dim, dtype = meta["embed_dim"], _copy_dtype(meta)
    _, vectors = _group_arrays(folder, g["number"], g["cells"], dim, dtype)
    unit = meta.get("metric") == "l2"
    base = g["number"] << _GROUP_SHIFT
    for i in range(0, g["cells"], _BATCH):
        block = np.asarray(vectors[i : i + _BATCH], np.float32)
        if unit:
            block = _unit(block)
        index.add_with_ids(block, base + np.arange(i, i + len(block), dtype=np.int64))


def _remove_group(index: Any, number: int) -> None:
    faiss = _faiss()
    lo = number << _GROUP_SHIFT
    index.remove_ids(faiss.IDSelectorRange(lo, lo + (1 << _GROUP_SHIFT)))


def _memory_bytes(index: Any) -> int:
    """Bytes the faiss index holds in memory (its serialised size; the re-ranking copy and the
    cell lists are memory-mapped, not held)."""
    return int(_faiss().serialize_index(index).nbytes)


def _save(index: Any, folder: Path, meta: dict[str, Any]) -> None:
    faiss = _faiss()
    tmp = folder / "faiss.index.tmp"
    faiss.write_index(index, str(tmp))
    os.replace(tmp, folder / "faiss.index")
    meta.setdefault("files", {})["faiss.index"] = {
        "bytes": (folder / "faiss.index").stat().st_size,
        "sha256": sha256_file(folder / "faiss.index"),
    }
    meta["memory_bytes"] = _memory_bytes(index)
    meta["updated"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    write_json(folder / "index.json", meta)


def _index_groups(
    root: IndexLocation, folder: Path, names: list[str], meta: dict, progress: bool
) -> None:
    """Copy the named groups' valid cells into the index folder and record them in ``meta``."""
    from tqdm.auto import tqdm

    dim = meta["embed_dim"]
    desc = f"reading → {root.store.name}/{INDEX_DIR}"
    for name in tqdm(names, desc=desc, disable=not progress):
        old = meta["groups"].get(name)
        number = old["number"] if old else meta["next_number"]
        state = _group_state(root, name)
        dtype = _copy_dtype(meta)
        with root.store.errors("read"):
            chunks = _read_group(root, name, dim, dtype)
            cells, _, files = _write_group_files(folder, number, chunks, dtype)
        meta.setdefault("files", {}).update(files)
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


def _build(
    root: IndexLocation, settings: dict, params: dict, progress: bool, lease: Any = None
) -> IndexSummary:
    """Build a new index in ``_index.new`` (an object store's: in the cache, then uploaded),
    then swap it in."""
    faiss = _faiss()
    start = time.perf_counter()
    folder = root.staging()
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
        # IVF-PQ: codes of unit vectors, compared by L2 (which ranks unit vectors as the inner
        # product does, and estimates the codes' error far better: see StoreIndex.search)
        meta["metric"] = "l2" if auto["kind"] == "ivfpq" else "ip"
        timings = {"read": time.perf_counter() - t0}
        t0 = time.perf_counter()
        metric = faiss.METRIC_L2 if meta["metric"] == "l2" else faiss.METRIC_INNER_PRODUCT
        index = faiss.index_factory(dim, _factory(auto, _copy_dtype(meta)), metric)
        if auto["kind"] == "ivfpq":
            if cells < auto["nlist"] * 4:
                raise InputDataError(
                    f"nlist={auto['nlist']} is too many lists for {cells:,} cells; pass a "
                    f"smaller nlist (≤ {max(1, cells // 39)}) or leave it to the index"
                )
            sample = _train_sample(folder, meta["groups"], dim, auto["train"], _copy_dtype(meta))
            # small stores: no faiss warnings on stderr (the re-ranking makes up for coarser
            # codebooks; fewer than 1024 cells are refused below)
            index.cp.min_points_per_centroid = 4
            faiss.downcast_index(index).pq.cp.min_points_per_centroid = 4
            if sample.shape[0] < 256 * 4:
                raise InputDataError(
                    f"{cells:,} cells are too few to train 8-bit product quantisers (≥ 1024); "
                    "pass kind='flat'"
                )
            index.train(sample)
            timings["train"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        for g in meta["groups"].values():
            _add_group(index, folder, g, meta)
        timings["add"] = time.perf_counter() - t0
        _save(index, folder, meta)
        if lease is not None:
            lease.check()  # another job took the store over: upload nothing
        t0 = time.perf_counter()
        root.publish(folder, [*_index_files(meta), "index.json"], replace=True)
        if root.remote:
            timings["upload"] = time.perf_counter() - t0
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    root.install(folder)
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
        # the re-ranking copy keeps a float32 store's values (exact scores), else float16
        "copy_dtype": "float32" if settings.get("dtype") == "float32" else "float16",
        "asked": {k: v for k, v in params.items() if v is not None},
        "params": {},
        "store_groups": settings["groups"],
        "groups": {},
        "next_number": 0,
    }


def _summary(
    root: IndexLocation, meta: dict, added: list[str], seconds: float, timings
) -> IndexSummary:
    cells = sum(g["cells"] for g in meta["groups"].values())
    return IndexSummary(
        store=root.store.path if root.store.local else root.store.url,
        kind=meta["params"]["kind"],
        params=meta["params"],
        cells=cells,
        groups=list(meta["groups"]),
        added=added,
        seconds=seconds,
        memory_bytes=int(meta["memory_bytes"]),
        disk_bytes=_disk_bytes(meta),
        grid_bytes=cells * meta["embed_dim"] * 2,
        timings=timings,
    )


def _refresh(
    root: IndexLocation, settings: dict[str, Any], progress: bool = False, lease: Any = None
) -> IndexSummary | None:
    """Index the groups an existing index lacks (the caller holds the store's lock); ``None``
    when the store has no index."""
    folder = _folder(root)
    if root.load() is None:  # index.json (into the cache, for an object store)
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
    _fetch(root, meta, ["faiss.index"])  # the other groups' files are not needed
    index = _read_index(root, meta)
    # the files this update rewrites: the cache no longer holds the store's copy of them
    numbers, following = [], meta["next_number"]
    for name in stale:
        if name in meta["groups"]:
            numbers.append(meta["groups"][name]["number"])
        else:
            numbers.append(following)
            following += 1
    suffix = _COPIES[_copy_dtype(meta)][0]
    changed = [f"groups/{n}.{end}" for n in numbers for end in ("cells", suffix)]
    changed += ["faiss.index", "index.json"]
    root.forget(changed)
    meta["store_groups"] = settings["groups"]
    for name in stale:
        if name in meta["groups"]:
            _remove_group(index, meta["groups"][name]["number"])
    t0 = time.perf_counter()
    _index_groups(root, folder, stale, meta, progress)
    timings = {"read": time.perf_counter() - t0}
    t0 = time.perf_counter()
    for name in stale:
        _add_group(index, folder, meta["groups"][name], meta)
    timings["add"] = time.perf_counter() - t0
    _save(index, folder, meta)
    if lease is not None:
        lease.check()
    t0 = time.perf_counter()
    root.publish(folder, changed)
    if root.remote:
        timings["upload"] = time.perf_counter() - t0
    _OPEN.clear()
    cells = sum(g["cells"] for g in meta["groups"].values())
    params = meta["params"]
    outgrown = (params["kind"] == "flat" and cells >= 4 * FLAT_BELOW) or (
        params["kind"] == "ivfpq" and cells > 16 * params["nlist"] ** 2
    )
    if outgrown:
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
    storage_options: Mapping[str, Any] | None = None,
) -> IndexSummary:
    """Build (or bring up to date) a store's search index, kept in ``STORE/_index/``.

    Without an index, or with ``rebuild=True``, indexes every valid cell of every group.
    With one, indexes only the groups added (or tiles finished) since, with the settings it was
    built with; settings given then must match them (else pass ``rebuild=True``).
    :func:`~geobind.inference.store.embed_to_zarr` does this update itself when it appends
    to a store that has an index. Settings left out are sized from the number of cells by
    :func:`index_params`.

    A store in an object store (``s3://bucket/x.zarr``, ``gs://…``, ``az://…``) gets the same
    files as objects under ``_index/``: they are built in a local cache, then uploaded, under
    the store's lease (:mod:`geobind.inference.index_location`).

    Args:
        store: a store written by :func:`~geobind.inference.store.embed_to_zarr`: a folder or
            an object store URL.
        kind: ``"auto"``, ``"flat"`` (exact; every vector in the store's dtype) or ``"ivfpq"``.
        nlist: inverted lists (IVF-PQ).
        pq: bytes per product-quantised code; must divide ``embed_dim``.
        nprobe: lists a query scans by default (a search may pass another).
        rerank: candidates re-ranked exactly per result (``rerank · k``); 0 keeps the codes'
            approximate scores.
        train: vectors sampled to train the centroids and codebooks.
        rebuild: build anew even when an index exists (e.g. a damaged one).
        progress: show progress bars.
        storage_options: credentials and endpoint of a store URL (default: the standard
            environment, ``AWS_ENDPOINT_URL`` …).

    Returns:
        An :class:`IndexSummary` (kind, settings, cells, groups added, seconds, memory).

    Raises:
        InputDataError: not a store, no valid cell, impossible settings.
        IndexMismatchError: an existing index made with other settings or for another model
            (pass ``rebuild=True``).
        StoreLockedError: another job is writing the store.
        StoreError: the object store refused (credentials, endpoint, an fsspec store).

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
    from geobind.inference.store.lease import writer_lock

    params = {"kind": kind, "nlist": nlist, "pq": pq, "nprobe": nprobe, "rerank": rerank}
    params["train"] = train
    index_params(FLAT_BELOW, 64 if pq is None else pq * 4, **params)  # validates early
    root, settings = _store_root(store, storage_options)
    root.store.check_writable()
    with root.store.errors("write the search index of"), writer_lock(root.store) as lease:
        if not rebuild and root.load() is not None:
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
            summary = _refresh(root, settings, progress, lease)
            if summary is not None:  # None: the index went away meanwhile
                return summary
        return _build(root, settings, params, progress, lease)


def update_index(
    store: str | os.PathLike,
    *,
    progress: bool = False,
    storage_options: Mapping[str, Any] | None = None,
) -> IndexSummary:
    """Index the groups added to a store (or tiles finished) since its index was built.

    ``store``: a folder or an object store URL (``storage_options``: its credentials and
    endpoint, as for :func:`build_index`).

    Raises:
        IndexNotFoundError: the store has no index (build one with :func:`build_index`).
        IndexMismatchError: the index was built for another satellite encoder.

    Example:
        >>> update_index(getfixture("tmp_path") / "missing.zarr")
        Traceback (most recent call last):
        ...
        geobind.errors.InputDataError: store ... does not exist (no zarr.json there)
    """
    from geobind.inference.store.lease import writer_lock

    root, settings = _store_root(store, storage_options)
    root.store.check_writable()
    with root.store.errors("write the search index of"), writer_lock(root.store) as lease:
        summary = _refresh(root, settings, progress, lease)
    if summary is None:
        raise IndexNotFoundError(_no_index(root))
    return summary


def refresh_after_write(store: Any) -> None:
    """Bring the index of a store just written (a folder, URL or
    :class:`~geobind.inference.store.location.StoreLocation`) up to date; the writer holds the
    store's lock or lease. Does nothing without an index. A failure is logged, never raised: the
    store itself is fine, and a search names the fix."""
    root = IndexLocation(store)
    try:
        if root.token() is None:
            return
        _, settings = _store_root(root)
        summary = _refresh(root, settings)
        if summary is not None and summary.added:
            log.info("index of %s updated: %s", root, ", ".join(summary.added))
    except Exception as err:  # reported, and the store itself is complete
        log.warning(
            "the search index of %s was not updated (%s); %s", root, err, _rebuild_hint(root)
        )
