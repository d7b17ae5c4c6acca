"""Search at scale: the store's index vs the exact scan, at 1 M, 3 M and 10 M cells.

Real embeddings first: the demo world's scenes embedded by the demo model (``--model``, default
the ``demo`` preset) at ``--stride`` into a float16 store. They are then **replicated with
perturbation** to reach each size (each new cell mixes a real cell with its grid neighbour,
``(1 − t)·a + t·b`` with ``t`` uniform, plus Gaussian noise of a quarter of the median
neighbour distance, made unit again), and for ``--dims 512`` projected to 512-d by a fixed
random Gaussian matrix. Each size is written as a real geobind store (float16, groups of
≤ 1 M cells, in UTM zones 31–36N: stores mix CRSs) and indexed with ``geobind.build_index``
(automatic settings). Measured in one run, per size:

- query latency p50 / p95, one query at a time: the index (``search_vectors``: IVF-PQ scan,
  float16 re-ranking, ids → cells) vs the exact scan of the store (``exact=True``, dask over
  chunks; ``--exact-queries`` of them). Target at 10 M: index ≥ 20× faster.
- recall@k (k = ``--k``, 100) against the exact top-k, over ``--queries`` queries (half the demo
  model's text prompts, half perturbed real cells: "places like this"): *strict* (the share
  of the exact top-k cells returned; also split by text and cell queries) and *tied* (a
  returned cell also counts when its exact score equals the k-th best within 1e-5, i.e. float32
  summation order: the index re-ranks with the store's own float16 values, so any larger gap is
  a real miss). Target ≥ 0.95.
- build time (reading the store, training, adding), the index's memory (its faiss structures;
  the float16 re-ranking copy is memory-mapped) vs the cells as a float16 grid (target
  ≤ 0.25×), and its size on disk; then how each grows with the cells.

``--libraries`` instead compares the candidate libraries on ``--sizes``' first size held in
memory (faiss IVF-PQ ± float16 re-ranking, faiss IVF-PQ fast-scan, usearch HNSW int8 / float16),
the measurement behind the choice of faiss (see :mod:`geobind.inference.index`).

``--quantisation`` instead measures what storing a store's embeddings in fewer bits would cost
(issue 22, point 3): a world's scenes embedded by ``--model`` (``--world``, default: generate the
demo world; ``--scenes`` a subset) at ``--stride`` in float32, then each cell stored as float16,
as int8 with a per-cell scale (``max |x| / 127``, as quantised embedding releases do), or as int8
of ``x − m`` with a per-cell scale (``m`` the store's mean vector, stored once), read back and
made unit again. Per variant: recall@k of the exact scan's top k against float32's (the same
queries as above: text prompts and perturbed cells; strict and tied), and the text-query maps'
mean AUROC against the world's land-cover truth (as :func:`geobind.inference.mapeval.map_auroc`
scores them; the largest change of any class's AUROC beside it). A trained model shows the maps'
cost; the presets' random weights give maps near chance.

The machine has 2 cores shared with others: timings vary with their load; ratios are measured
in the same run. 10 M × 512-d would need ~20 GB of disk for the store and the index's copy and
a long build; ``--dims`` and ``--sizes`` choose what runs (512-d defaults to sizes ≤ 3 M,
``--max-512``).

    python benchmarks/search.py [--store DIR] [--model demo] [--stride 8] [--sizes 1e6,3e6,1e7]
                                [--dims 128,512] [--max-512 3e6] [--queries 50] [--k 100]
                                [--exact-queries 5] [--libraries] [--quick] [--keep DIR]
    python benchmarks/search.py --quantisation [--model MODEL] [--world DIR]
                                [--scenes gamma,…] [--stride 8] [--queries 50] [--k 100]
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

PROMPTS = [
    "a lake",
    "a river",
    "a busy highway",
    "a road",
    "dense forest",
    "trees",
    "a wheat field",
    "farmland",
    "houses",
    "a town",
    "a sandy beach",
    "bare rock",
    "grassland",
    "a meadow",
    "an industrial area",
    "a parking lot",
    "wetland",
    "an airport",
    "a railway",
    "a park",
    "snow",
    "a quarry",
    "a vineyard",
    "an orchard",
    "a harbour",
]
GROUP_SIDE = 1000  # synthetic groups of 1000 × 1000 cells
TIED = 1e-5  # the same float16 values' dot product summed in another order


# -- real embeddings ------------------------------------------------------------------------------
def real_store(args: argparse.Namespace, tmp: Path) -> Path:
    """The demo world embedded by the demo model at ``--stride`` (float16), or ``--store``."""
    from geobind.inference.store import embed_to_zarr
    from geobind.synth import generate_world

    if args.store:
        return Path(args.store)
    t0 = time.perf_counter()
    world = generate_world(tmp / "world", "tiny" if args.quick else "demo", workers=2)
    store = tmp / "real.zarr"
    embed_to_zarr(
        list(world.scenes.values()),
        store,
        model=args.model,
        stride=args.stride,
        dtype="float16",
        batch_size=128,
    )
    print(f"real embeddings: world and store made in {time.perf_counter() - t0:.0f} s")
    return store


def _valid_cells(grid: np.ndarray, offset: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A ``(d, ny, nx)`` grid as float32 rows ``(ny·nx, d)``, which rows are valid, and for each
    valid cell the index (from ``offset``) of its right-hand neighbour (left on the last column;
    itself when that one is NaN): the perturbed-cell queries."""
    d, ny, nx = grid.shape
    flat = grid.reshape(d, -1).T.astype(np.float32)
    valid = np.isfinite(flat).all(1)
    position = np.full(ny * nx, -1, np.int64)
    position[valid] = np.arange(valid.sum()) + offset
    r, c = np.divmod(np.flatnonzero(valid), nx)
    right = position[r * nx + np.where(c + 1 < nx, c + 1, c - 1)]
    return flat, valid, np.where(right >= 0, right, position[r * nx + c])


def real_vectors(store: Path) -> tuple[np.ndarray, np.ndarray, dict]:
    """Unit vectors of a store's valid cells, the index of each one's right (else left)
    neighbour, and the store's root settings."""
    from geobind.inference.store import open_store, store_groups

    vectors, neighbours, offset = [], [], 0
    for name in store_groups(store):
        flat, valid, right = _valid_cells(open_store(store, group=name).values, offset)
        neighbours.append(right)
        vectors.append(flat[valid])
        offset += int(valid.sum())
    x = np.concatenate(vectors)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    settings = json.loads((store / "zarr.json").read_text())["attributes"]["geobind"]
    return x, np.concatenate(neighbours), settings


class Replicator:
    """New cells from the real ones: a real cell mixed with its neighbour, plus noise."""

    def __init__(self, real: np.ndarray, neighbours: np.ndarray, dim: int):
        self.real, self.nb = real, neighbours
        gaps = np.linalg.norm(real - real[neighbours], axis=1)
        self.sigma = 0.25 * float(np.median(gaps[gaps > 0])) / math.sqrt(real.shape[1])
        rng = np.random.default_rng(1)
        d = real.shape[1]
        self.project = None if dim == d else rng.standard_normal((d, dim), np.float32)

    def lift(self, x: np.ndarray) -> np.ndarray:
        """To the benchmark's dimension (unit vectors)."""
        if self.project is not None:
            x = x @ self.project
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    def cells(self, start: int, n: int, seed: int) -> np.ndarray:
        """Cells ``start … start + n`` of the replicated set (the real ones first)."""
        rng = np.random.default_rng(seed)
        out = np.empty((n, self.real.shape[1]), np.float32)
        real = max(0, min(n, len(self.real) - start))
        out[:real] = self.real[start : start + real]
        m = n - real
        if m:
            i = rng.integers(0, len(self.real), m)
            t = rng.random((m, 1), np.float32)
            out[real:] = (1 - t) * self.real[i] + t * self.real[self.nb[i]]
            out[real:] += rng.standard_normal((m, out.shape[1]), np.float32) * self.sigma
        return self.lift(out)


def queries(model_name: str, rep: Replicator, n: int) -> tuple[np.ndarray, list[str]]:
    """Half text prompts (the model's text tower), half perturbed real cells."""
    import geobind

    model = geobind.load(model_name)
    texts = (PROMPTS * (1 + n // len(PROMPTS)))[: n // 2]
    vec = model["text"].embed(texts).numpy().astype(np.float32)
    rng = np.random.default_rng(7)
    cells = rep.real[rng.integers(0, len(rep.real), n - len(texts))].copy()
    cells += rng.standard_normal(cells.shape, np.float32) * rep.sigma
    both = np.concatenate([vec, cells])
    return rep.lift(both), [f"text {t!r}" for t in texts] + ["cell"] * len(cells)


# -- synthetic stores -----------------------------------------------------------------------------
class TopK:
    """Exact top-k of several queries, fed block by block."""

    def __init__(self, q: np.ndarray, k: int):
        self.q, self.k = q, k
        self.scores = np.full((len(q), 0), -np.inf, np.float32)
        self.ids = np.empty((len(q), 0), np.int64)

    def add(self, x16: np.ndarray, ids: np.ndarray) -> None:
        s = self.q @ x16.astype(np.float32).T
        s = np.concatenate([self.scores, s], 1)
        i = np.concatenate([self.ids, np.broadcast_to(ids, (len(self.q), len(ids)))], 1)
        keep = np.argpartition(-s, self.k - 1, axis=1)[:, : self.k]
        self.scores = np.take_along_axis(s, keep, 1)
        self.ids = np.take_along_axis(i, keep, 1)


def write_store(
    path: Path, n: int, rep: Replicator, settings: dict, truth: TopK, dim: int
) -> tuple[float, list[str]]:
    """A geobind store of ``n`` cells (groups of ≤ GROUP_SIDE², several UTM zones); the exact
    top-k of the queries is computed on the way. Returns seconds and group names."""
    import dask.array as da
    import rioxarray  # noqa: F401
    import xarray as xr
    import zarr

    from geobind.inference.store.metadata import _consolidate, _quiet, _write_root

    t0 = time.perf_counter()
    per = GROUP_SIDE * GROUP_SIDE
    names, groups = [], {}
    for g in range(math.ceil(n / per)):
        cells = min(per, n - g * per)
        ny = math.ceil(cells / GROUP_SIDE)
        name = f"g{g:03d}"
        x = rep.cells(g * per, cells, seed=100 + g).astype(np.float16)
        truth.add(x, (g << 40) + np.arange(cells, dtype=np.int64))
        grid = np.full((dim, ny * GROUP_SIDE), np.nan, np.float16)
        grid[:, :cells] = x.T
        zone = 31 + g % 6
        x0, y0 = 300_000.0 + 10 * (g // 6) * GROUP_SIDE, 5_000_000.0
        ds = xr.Dataset(
            {
                "embedding": (
                    ("embedding", "y", "x"),
                    da.from_array(grid.reshape(dim, ny, GROUP_SIDE), chunks=(dim, 256, 256)),
                )
            },
            coords={
                "y": y0 - 10 * (np.arange(ny) + 0.5),
                "x": x0 + 10 * (np.arange(GROUP_SIDE) + 0.5),
            },
        )
        ds = ds.rio.write_crs(f"EPSG:{32600 + zone}")
        attrs = {"model": settings["model"], "sat_sha256": settings["sat_sha256"]}
        ds.attrs = attrs
        with _quiet():
            ds.to_zarr(
                path,
                group=name,
                mode="w-",
                zarr_format=3,
                consolidated=False,
                encoding={"embedding": {"chunks": (dim, 256, 256)}},
            )
            tiles = zarr.open_group(path, path=f"{name}/tiles", mode="w", zarr_format=3)
            tiles.attrs["failed"] = []
            done = tiles.create_array("done", shape=(1, 1), chunks=(1, 1), dtype="int8")
            done[...] = 1
        names.append(name)
        groups[name] = {"source": f"synthetic/{name}", "sha256": f"{g:064x}"}
        del grid, x
    keep = {k: v for k, v in settings.items() if k not in ("groups", "format")}
    _write_root(path, keep, groups)
    _consolidate(path, names)
    return time.perf_counter() - t0, names


# -- measuring ------------------------------------------------------------------------------------
def _pct(times: list[float]) -> tuple[float, float]:
    return float(np.percentile(times, 50)), float(np.percentile(times, 95))


def recalls(found: list[tuple], truth: TopK, store: Path, q: np.ndarray, k: int):
    """Strict and tied recall@k of the index's results, per query."""
    from geobind.inference.index import open_index

    index = open_index(store)
    strict, tied = [], []
    for i, ids in enumerate(found):
        exact = set(truth.ids[i].tolist())
        numbers, pos = np.divmod(ids, 1 << 40)
        # index ids count cells in the order they were read (chunk by chunk); the truth's ids
        # count them row by row: compare (group, flat cell index)
        flat = [int(index._group(int(g))[0][p]) for g, p in zip(numbers, pos, strict=True)]
        cells = {(int(g) << 40) + f for g, f in zip(numbers, flat, strict=True)}
        strict.append(len(exact & cells) / k)
        scores = np.array(
            [
                float(np.asarray(index._group(int(g))[1][p], np.float32) @ q[i])
                for g, p in zip(numbers, pos, strict=True)
            ]
        )
        kth = truth.scores[i].min()
        tied.append(float(np.mean(scores >= kth - TIED)))
    return np.array(strict), np.array(tied)


def bench_size(
    n: int, dim: int, rep: Replicator, q: np.ndarray, settings: dict, args, tmp: Path
) -> dict:
    from geobind.inference.index import build_index, open_index
    from geobind.inference.search import search_vectors

    path = tmp / f"s{dim}_{n}.zarr"
    truth = TopK(q, args.k)
    write_s, names = write_store(path, n, rep, settings, truth, dim)
    summary = build_index(path)
    index = open_index(path)
    found, times = [], []
    for v in q:  # warm: the first query maps the float16 copy's pages
        search_vectors(path, v[None], args.k)
    for v in q:
        t0 = time.perf_counter()
        search_vectors(path, v[None], args.k)
        times.append(time.perf_counter() - t0)
        _, ids = index.search(v[None], args.k)
        found.append(ids[0])
    strict, tied = recalls(found, truth, path, q, args.k)
    variants = []  # other search settings on the same index: what strict recall costs
    base = summary.params
    if base["kind"] == "ivfpq":
        p, r = base["nprobe"], base["rerank"]
        for nprobe, rerank in (
            (max(1, p // 4), r),
            (p, max(2, r // 5)),
            (min(4 * p, base["nlist"]), r),
        ):
            vfound, vtimes = [], []
            for v in q:
                t0 = time.perf_counter()
                _, ids = index.search(v[None], args.k, nprobe=nprobe, rerank=rerank)
                vtimes.append(time.perf_counter() - t0)
                vfound.append(ids[0])
            vs, vt = recalls(vfound, truth, path, q, args.k)
            variants.append((nprobe, rerank, _pct(vtimes), float(vs.mean()), float(vt.mean())))
    exact_times = []
    for v in q[: args.exact_queries]:
        t0 = time.perf_counter()
        search_vectors(path, v[None], args.k, exact=True)
        exact_times.append(time.perf_counter() - t0)
    grid16 = n * dim * 2
    row = {
        "cells": n,
        "dim": dim,
        "groups": len(names),
        "write_s": write_s,
        "build_s": summary.seconds,
        "timings": summary.timings,
        "params": summary.params,
        "index_p50": _pct(times)[0],
        "index_p95": _pct(times)[1],
        "exact_p50": _pct(exact_times)[0],
        "exact_p95": _pct(exact_times)[1],
        "strict": float(strict.mean()),
        "strict_min": float(strict.min()),
        "strict_text": float(strict[: len(q) // 2].mean()),
        "strict_cells": float(strict[len(q) // 2 :].mean()),
        "tied": float(tied.mean()),
        "tied_text": float(tied[: len(q) // 2].mean()),
        "tied_cells": float(tied[len(q) // 2 :].mean()),
        "memory": summary.memory_bytes / grid16,
        "memory_mib": summary.memory_bytes / 2**20,
        "disk": summary.disk_bytes / grid16,
        "variants": variants,
        "store_mib": sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 2**20,
    }
    if not args.keep:
        shutil.rmtree(path)
    return row


def report(rows: list[dict], k: int) -> None:
    print(
        f"\n{'cells':>10} {'dim':>4} | {'index p50/p95 ms':>17} | {'exact p50/p95 s':>16} | "
        f"{'speed-up':>8} | recall@{k} strict (text, cells; min) / tied | {'build s':>8} | "
        f"memory×f16 | disk×f16 | settings"
    )
    for r in rows:
        p = r["params"]
        print(
            f"{r['cells']:>10,} {r['dim']:>4} | {r['index_p50'] * 1e3:>7.2f} / "
            f"{r['index_p95'] * 1e3:>7.2f} | {r['exact_p50']:>7.2f} / {r['exact_p95']:>6.2f} | "
            f"{r['exact_p50'] / r['index_p50']:>7.0f}× | {r['strict']:.3f} "
            f"({r['strict_text']:.3f}, {r['strict_cells']:.3f}; min {r['strict_min']:.2f}) / "
            f"{r['tied']:.3f} | "
            f"{r['build_s']:>8.0f} | {r['memory']:>10.3f} | {r['disk']:>8.2f} | "
            f"nlist {p.get('nlist')}, pq {p.get('pq')}, nprobe {p.get('nprobe')}, "
            f"rerank {p.get('rerank')}"
        )
    for dim in sorted({r["dim"] for r in rows}):
        mine = [r for r in rows if r["dim"] == dim]
        if len(mine) < 2:
            continue
        a, b = mine[0], mine[-1]
        grow = b["cells"] / a["cells"]
        print(
            f"growth {a['cells']:,} → {b['cells']:,} cells ({grow:.0f}×), {dim}-d: index p50 "
            f"{b['index_p50'] / a['index_p50']:.1f}×, exact p50 "
            f"{b['exact_p50'] / a['exact_p50']:.1f}×, build {b['build_s'] / a['build_s']:.1f}×, "
            f"memory {b['memory_mib'] / a['memory_mib']:.1f}×"
        )
    for r in rows:
        for nprobe, rerank, (p50, p95), strict, tied in r["variants"]:
            print(
                f"  {r['cells']:,} × {r['dim']} with nprobe {nprobe}, rerank {rerank}: index "
                f"p50 {p50 * 1e3:.2f} ms p95 {p95 * 1e3:.2f} ms (faiss + re-ranking only), "
                f"recall strict {strict:.3f} tied {tied:.3f}"
            )
    for r in rows:
        t = r["timings"]
        print(
            f"build {r['cells']:,} × {r['dim']}: read {t.get('read', 0):.0f} s, train "
            f"{t.get('train', 0):.0f} s, add {t.get('add', 0):.0f} s (store written in "
            f"{r['write_s']:.0f} s, {r['store_mib']:.0f} MiB)"
        )


# -- libraries ------------------------------------------------------------------------------------
def libraries(n: int, rep: Replicator, q: np.ndarray, k: int) -> None:
    """faiss IVF-PQ (± float16 re-ranking), IVF-PQ fast-scan and usearch HNSW, in memory."""
    import faiss

    x16 = np.concatenate(
        [
            rep.cells(s, min(500_000, n - s), 100 + s).astype(np.float16)
            for s in range(0, n, 500_000)
        ]
    )
    dim = x16.shape[1]
    truth = TopK(q, k)
    for s in range(0, n, 500_000):
        truth.add(x16[s : s + 500_000], np.arange(s, min(n, s + 500_000)))
    kth = truth.scores.min(1)
    grid = x16.nbytes

    def score(ids: np.ndarray) -> tuple[float, float]:
        ids = np.clip(ids, 0, n - 1)
        true = np.einsum("qd,qkd->qk", q, x16[ids].astype(np.float32))
        strict = np.mean([len(set(a) & set(b)) / k for a, b in zip(ids, truth.ids, strict=True)])
        return float(strict), float(np.mean(true >= kth[:, None] - TIED))

    def timed(fn) -> tuple[np.ndarray, float, float]:
        out, times = [], []
        for v in q:
            t0 = time.perf_counter()
            out.append(fn(v[None]))
            times.append(time.perf_counter() - t0)
        return np.stack(out), *_pct(times)

    def line(name, build, mem, ids, p50, p95):
        strict, tied = score(ids)
        print(
            f"{name:<44} recall strict {strict:.3f} tied {tied:.3f} | p50 {p50 * 1e3:6.2f} ms "
            f"p95 {p95 * 1e3:6.2f} ms | build {build:5.0f} s | memory {mem / grid:.2f}× f16",
            flush=True,
        )

    print(f"\nlibraries: {n:,} cells × {dim}-d in memory, {len(q)} queries, k={k}")
    nlist = 2 ** round(math.log2(math.sqrt(n)))
    # np: no polysemous training, as geobind builds them (it only slows the build)
    for spec in (f"IVF{nlist},PQ{dim // 4}np", f"IVF{nlist},PQ{dim // 2}x4fs"):
        t0 = time.perf_counter()
        index = faiss.index_factory(dim, spec, faiss.METRIC_INNER_PRODUCT)
        rng = np.random.default_rng(0)
        index.train(
            x16[rng.choice(n, min(n, max(64 * nlist, 100_000)), replace=False)].astype(np.float32)
        )
        for s in range(0, n, 250_000):
            index.add(x16[s : s + 250_000].astype(np.float32))
        build = time.perf_counter() - t0
        mem = faiss.serialize_index(index).nbytes
        for nprobe in (16, 64):
            index.nprobe = nprobe
            for factor in (1, 10):

                def fn(v, factor=factor, index=index):
                    _, cand = index.search(v, k * factor)
                    if factor == 1:
                        return cand[0]
                    c = cand[0][cand[0] >= 0]
                    s = x16[np.sort(c)].astype(np.float32) @ v[0]
                    return np.sort(c)[np.argsort(-s)[:k]]

                ids, p50, p95 = timed(fn)
                rr = f"rerank {factor}×k f16" if factor > 1 else "no rerank"
                line(f"faiss {spec} nprobe {nprobe} {rr}", build, mem, ids, p50, p95)
        del index
    try:
        from usearch.index import Index
    except ImportError:
        print("usearch is not installed: pip install usearch to compare it")
        return
    for dtype in ("i8", "f16"):
        t0 = time.perf_counter()
        index = Index(ndim=dim, metric="ip", dtype=dtype, connectivity=16, expansion_add=128)
        for s in range(0, n, 250_000):
            block = x16[s : s + 250_000].astype(np.float32)
            index.add(np.arange(s, s + len(block)), block, threads=2)
        build = time.perf_counter() - t0
        for ef in (128, 256):
            index.expansion_search = ef
            ids, p50, p95 = timed(lambda v, i=index: i.search(v, k, threads=1).keys.reshape(-1))
            name = f"usearch HNSW {dtype} M=16 ef {ef}"
            line(name, build, index.memory_usage, ids.astype(np.int64), p50, p95)
        del index


# -- storage quantisation ------------------------------------------------------------------------
QUANTISED = ("float32", "float16", "int8 per-cell scale", "int8 of x − mean, per-cell scale")


def quantise(x: np.ndarray, how: str, mean: np.ndarray) -> np.ndarray:
    """Cells ``(n, d)`` as a store of ``how`` would hold them, read back as unit float32."""
    if how == "float16":
        x = x.astype(np.float16).astype(np.float32)
    elif how.startswith("int8"):
        base = mean if "mean" in how else np.zeros_like(mean)
        r = x - base
        scale = (np.abs(r).max(1, keepdims=True) / 127).astype(np.float32)  # one float a cell
        q = np.round(r / np.where(scale > 0, scale, 1)).astype(np.int8)
        x = q.astype(np.float32) * scale + base
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def quantisation(args: argparse.Namespace, tmp: Path) -> None:
    """Recall@k and map AUROC of quantised copies of a world's embeddings (see the docs)."""
    import rioxarray

    import geobind
    from geobind.georef import GeoBox
    from geobind.inference.raster import embed_raster
    from geobind.synth import generate_world, load_world
    from geobind.training.evaluate import text_classes
    from geobind.training.metrics import auroc

    t0 = time.perf_counter()
    world = load_world(args.world) if args.world else generate_world(tmp / "world", "demo")
    model = geobind.load(args.model)
    names = [c["name"] for c in world.info["classes"]]
    text = text_classes(model, names).numpy().astype(np.float32)
    scenes = args.scenes.split(",") if args.scenes else list(world.scenes)
    cells, truths, neighbours, offset = [], [], [], 0
    for name in scenes:
        grid = embed_raster(rioxarray.open_rasterio(world.scenes[name]), model, stride=args.stride)
        with rioxarray.open_rasterio(world.landcover[name]) as lc:
            truth, box = lc.values[0], GeoBox.from_dataarray(lc)
        ys, xs = np.meshgrid(grid["y"].values, grid["x"].values, indexing="ij")
        c, r = ~box.transform * (xs.ravel(), ys.ravel())
        r = np.clip(r.astype(int), 0, truth.shape[0] - 1)
        c = np.clip(c.astype(int), 0, truth.shape[1] - 1)
        flat, valid, right = _valid_cells(grid.values, offset)
        neighbours.append(right)
        cells.append(flat[valid])
        truths.append(truth[r, c][valid])
        offset += int(valid.sum())
    x = np.concatenate(cells)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    truth = np.concatenate(truths)
    mean = x.mean(0)
    rep = Replicator(x, np.concatenate(neighbours), x.shape[1])
    q, labels = queries(args.model, rep, args.queries)
    is_text = np.array([label.startswith("text") for label in labels])
    exact = q @ x.T
    top = np.argsort(-exact, axis=1)[:, : args.k]
    kth = np.take_along_axis(exact, top, 1)[:, -1]
    print(
        f"{len(x):,} cells of {', '.join(scenes)} ({args.model}, stride {args.stride}, "
        f"{x.shape[1]}-d; mean vector norm {np.linalg.norm(mean):.2f}) embedded in "
        f"{time.perf_counter() - t0:.0f} s; {len(q)} queries ({is_text.sum()} text), k={args.k}"
    )
    print(
        f"{'stored as':<34} | bytes/cell | recall@{args.k} strict (text, cells) / tied | "
        "map AUROC mean (max |Δ| of a class)"
    )
    reference = None
    for how in QUANTISED:
        y = quantise(x, how, mean)
        s = q @ y.T
        found = np.argsort(-s, axis=1)[:, : args.k]
        strict = np.array([len(set(a) & set(b)) / args.k for a, b in zip(found, top, strict=True)])
        tied = (np.take_along_axis(exact, found, 1) >= kth[:, None] - TIED).mean(1)
        known = truth > 0  # cells whose land cover is known
        sim = y[known] @ text.T
        aurocs = np.array(
            [
                auroc(sim[:, j], truth[known] == j + 1)
                for j in range(len(names))
                if 0 < (truth[known] == j + 1).sum() < known.sum()
            ]
        )
        reference = aurocs if reference is None else reference
        size = {"float32": 4 * x.shape[1], "float16": 2 * x.shape[1]}.get(how, x.shape[1] + 4)
        print(
            f"{how:<34} | {size:>10} | {strict.mean():.3f} ({strict[is_text].mean():.3f}, "
            f"{strict[~is_text].mean():.3f}) / {tied.mean():.3f} | {aurocs.mean():.4f} "
            f"({np.abs(aurocs - reference).max():.4f})"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", help="A store of real embeddings (default: embed the world).")
    parser.add_argument("--model", default="demo")
    parser.add_argument("--stride", type=int, default=8)
    parser.add_argument("--sizes", default="1e6,3e6,1e7")
    parser.add_argument("--dims", default="128,512")
    parser.add_argument("--max-512", type=float, default=3e6)
    parser.add_argument("--queries", type=int, default=50)
    parser.add_argument("--k", type=int, default=100)
    parser.add_argument("--exact-queries", type=int, default=5)
    parser.add_argument("--libraries", action="store_true", help="Compare libraries instead.")
    parser.add_argument("--keep", help="Keep the stores in this folder.")
    parser.add_argument("--quick", action="store_true", help="Tiny world, 100 k and 300 k cells.")
    parser.add_argument(
        "--quantisation", action="store_true", help="Cost of float16 / int8 storage instead."
    )
    parser.add_argument("--world", help="--quantisation: a world folder (default: generate one).")
    parser.add_argument("--scenes", help="--quantisation: these scenes only (a,b).")
    args = parser.parse_args()
    if args.quantisation:
        with tempfile.TemporaryDirectory(dir=args.keep) as tmp:
            quantisation(args, Path(tmp))
        return
    if args.quick:
        args.sizes, args.queries, args.exact_queries = "1e5,3e5", 20, 3
        args.max_512 = 3e5
    sizes = [int(float(s)) for s in args.sizes.split(",")]
    dims = [int(d) for d in args.dims.split(",")]
    with tempfile.TemporaryDirectory(dir=args.keep) as tmp:
        tmp = Path(tmp)
        real, neighbours, settings = real_vectors(real_store(args, tmp))
        print(
            f"{len(real):,} real {real.shape[1]}-d embeddings of the "
            f"{'tiny' if args.quick else 'demo'} world (model {settings['model']!r}, stride "
            f"{settings.get('stride') or args.stride}); replicated with perturbation (a real "
            "cell mixed with its neighbour, plus noise) to reach each size"
            + ("; also projected to 512-d by a fixed random matrix" if 512 in dims else "")
        )
        rows = []
        for dim in dims:
            rep = Replicator(real, neighbours, dim)
            q, _ = queries(
                settings["model"] if args.model == "demo" else args.model, rep, args.queries
            )
            if args.libraries:
                libraries(sizes[0], rep, q, args.k)
                continue
            for n in sizes:
                if dim > 128 and n > args.max_512:
                    print(f"skipped {n:,} × {dim}-d (over --max-512 {args.max_512:,.0f})")
                    continue
                t0 = time.perf_counter()
                rows.append(bench_size(n, dim, rep, q, settings, args, tmp))
                print(f"done {n:,} × {dim}-d in {time.perf_counter() - t0:.0f} s", flush=True)
        if rows:
            report(rows, args.k)
            top = [r for r in rows if r["dim"] == 128][-1:]
            for r in top:
                print(
                    f"at {r['cells']:,} cells × {r['dim']}: index "
                    f"{r['exact_p50'] / r['index_p50']:.0f}× "
                    f"faster than the exact scan (target ≥ 20×), recall@{args.k} strict "
                    f"{r['strict']:.3f} tied {r['tied']:.3f} (target ≥ 0.95), memory "
                    f"{r['memory']:.2f}× the float16 grid (target ≤ 0.25×)"
                )


if __name__ == "__main__":
    main()
