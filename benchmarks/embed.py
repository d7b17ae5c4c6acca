"""Raster embedding and similarity: ``embed()`` vs the bare forward and the naive loop, and
``similarity()`` vs this machine's memory bandwidth.

On a scene of a synthetic world (a centre crop of about ``--chips`` chips), measured in one run:

- ``raster.geobind.embed(model)`` chips/s, the file read included, vs the bare encoder forward
  (``model["sat"]._run``) over the same chips in the same batches, prepared beforehand.
  Target: ≥ 0.95. Timed separately, the two move with the machine's load; so the same ratio is
  also measured inside one ``embed()`` call: the share of its wall time spent in the encoder's
  forward (the rest is reading, chip preparation and assembling the grid). Target: ≥ 0.95.
  The same ``embed()`` on the crop already loaded into memory (``geobind.embed(loaded, model,
  cache=False)``) is the chip pipeline without the file: the GeoTIFF's decode (deflate with a
  predictor, ~28 ms of one core per 1,024 demo chips) runs beside the forward, and with both
  cores in the forward (2 threads run it 1.98× as fast as one) it costs the forward about as
  much time as it takes. Target: ≥ 0.95.
- the same vs the naive way: one ``rasterio`` window read and one ``model["sat"].embed(chip)``
  per grid cell (``--naive`` of them, scaled per chip). Target: ≥ 2× (≥ 1.3× with ``--model
  paper``): this 2-core CPU's ceiling is 2–3.6× on the demo model and ~1.3–1.5× on ViT-B/32, as
  a batch-1 forward costs little more per chip than a batched one; the team decided to keep it
  there. All four are timed best of ``--repeat``, interleaved.
- a second ``raster.geobind.similarity(...)`` on the same raster (a new text) vs the first, which
  reads and embeds the crop: the accessor keeps the grid it embedded. Target: ≥ 50×.
- ``grid.geobind.similarity("text", model=model)`` on an in-memory grid (``--grid-mib`` of
  float32 unit vectors with the attrs ``embed()`` writes, and the same grid as float16), as grid
  bytes read per second vs this machine's read bandwidth (best of 5 ``sum`` over a 1 GiB float32
  array, numpy and torch, the faster taken). Target: ≥ 0.4× for both dtypes. Repeated calls
  reuse the text's vector (``TextEncoder`` caches query-sized calls), as a loop over tiles or a
  similarity → top_k → plot session does; the row below them gives a new text each call (the
  text tower runs every time). The ``cosine`` kernel alone is shown for reference.

torch's default of one thread per core loses much of its speed when other processes hold the
cores (each op waits for a descheduled thread); on a shared machine compare with ``--threads 1``.
``--model paper`` is the paper's architecture (ViT-B/32, 224 px) with random weights, as in
``benchmarks/encoders.py``; it is slow on CPU, so it defaults to 128 chips.

    python benchmarks/embed.py [--world DIR | --preset demo] [--model demo] [--chips 1024]
                               [--batch-size 64] [--grid-mib 128] [--threads 0] [--quick]
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

QUERY = "a busy highway"


def _best(fn: Callable[[], object], repeat: int) -> float:
    """Best-of-``repeat`` seconds of ``fn`` (after one warm-up call)."""
    fn()
    best = math.inf
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def _load_model(name: str):
    import geobind

    if name == "paper":  # the pretrained weights need the network: same architecture, random
        from encoders import _paper_architecture  # the sibling benchmark

        from geobind.models import GeoBind

        return GeoBind.from_config(_paper_architecture()).eval()
    return geobind.load(name, device="cpu")


def _world(args: argparse.Namespace, tmp: Path):
    """``--world`` if given, else a world of ``--preset`` generated in ``tmp``."""
    from geobind.synth import generate_world, load_world

    if args.world:
        return load_world(args.world)
    t0 = time.perf_counter()
    world = generate_world(tmp / "world", args.preset)
    print(f"world: preset {args.preset!r} generated in {time.perf_counter() - t0:.0f} s")
    return world


def _scene(args: argparse.Namespace, tmp: Path) -> Path:
    scenes = _world(args, tmp).scenes
    return scenes[args.scene] if args.scene else next(iter(scenes.values()))


def _crop(path: Path, model, chips: int) -> tuple[dict[str, slice], int, int]:
    """A centre crop holding about ``chips`` grid cells; returns ``(isel, chip, stride)``."""
    import rioxarray

    from geobind.inference.raster import plan_grid

    raster = rioxarray.open_rasterio(path)
    _, grid = plan_grid(raster, model)
    side = [max(1, min(n, math.isqrt(chips))) for n in grid.shape]
    sel = {}
    for dim, n, size in zip(("y", "x"), side, (grid.height, grid.width), strict=True):
        pixels = (n - 1) * grid.stride + grid.chip
        start = (size - pixels) // 2
        sel[dim] = slice(start, start + pixels)
    return sel, grid.chip, grid.stride


def bench_embed(path: Path, model, args: argparse.Namespace) -> tuple[list[tuple], list[str]]:
    """Rows for embed() vs bare and vs naive, and notes."""
    import rasterio
    import rioxarray
    from rasterio.windows import Window

    import geobind
    from geobind.data.scaling import scale_to_unit

    sat, bs = model["sat"], args.batch_size
    sel, chip, stride = _crop(path, model, args.chips)

    def pipeline():
        raster = rioxarray.open_rasterio(path).isel(sel)
        return raster.geobind.embed(model, batch_size=bs, progress=False)

    loaded = rioxarray.open_rasterio(path).isel(sel).load()

    def in_memory():  # the chip pipeline alone: no file to open, read or decode
        return geobind.embed(loaded, model, batch_size=bs, cache=False)

    grid = pipeline()
    values = grid.values
    rows, cols = np.nonzero(~np.isnan(values[0]))
    n = rows.size
    notes = [
        f"scene {path.name}, crop {sel['y'].stop - sel['y'].start}×{sel['x'].stop - sel['x'].start}"
        f" px, chip {chip} px, stride {stride} px: {n} chips embedded"
        f" ({values[0].size - n} NaN cells), batch {bs}"
    ]

    # The same chips, gathered and preprocessed as embed() does it, before the clock starts.
    pixels = np.asarray(rioxarray.open_rasterio(path).isel(sel).values)[[b - 1 for b in sat.bands]]
    windows = np.lib.stride_tricks.sliding_window_view(pixels, (chip, chip), axis=(1, 2))
    windows = windows[:, ::stride, ::stride]
    prepared = [
        sat.normalize(
            torch.from_numpy(
                scale_to_unit(
                    np.moveaxis(windows[:, rows[i : i + bs], cols[i : i + bs]], 0, 1), sat.scale
                )
            )
        )
        for i in range(0, n, bs)
    ]

    def bare():
        with torch.inference_mode():
            return torch.cat([sat._run(x) for x in prepared])

    diff = float(np.abs(bare().numpy() - values[:, rows, cols].T).max())
    notes.append(f"bare forward vs embed(): max |Δ| {diff:.1e} over the same chips")

    k = min(n, args.naive)
    r0, c0 = sel["y"].start, sel["x"].start
    cells = list(zip(rows[:k], cols[:k], strict=True))
    with rasterio.open(path) as src:

        def naive(cells=cells):
            return [
                sat.embed(src.read(window=Window(c0 + c * stride, r0 + r * stride, chip, chip)))
                for r, c in cells
            ]

        first = naive(cells[:1])[0].numpy()[0]  # warm-up, and a correctness check
        # Interleaved best-of, so that machine noise hits all four alike.
        runs = {"pipeline": pipeline, "in memory": in_memory, "bare": bare, "naive": naive}
        best = dict.fromkeys(runs, math.inf)
        for _ in range(args.repeat):
            for name, fn in runs.items():
                t0 = time.perf_counter()
                fn()
                best[name] = min(best[name], time.perf_counter() - t0)
    # The same ratio measured inside one call, so it does not move with the machine's load:
    # the share of embed()'s wall time spent in the encoder's forward (the rest is reading,
    # chip preparation and assembling the grid).
    forward = [0.0]
    run = sat._run

    def timed_run(x):
        t0 = time.perf_counter()
        out = run(x)
        forward[0] += time.perf_counter() - t0
        return out

    sat._run, shares = timed_run, []
    try:
        for _ in range(max(1, args.repeat)):
            forward[0], t0 = 0.0, time.perf_counter()
            pipeline()
            shares.append(forward[0] / (time.perf_counter() - t0))
    finally:
        sat._run = run
    r_pipe, r_bare, r_naive = n / best["pipeline"], n / best["bare"], k / best["naive"]
    naive_target = 1.3 if args.model == "paper" else 2.0  # the decided ceilings (see above)
    notes.append(
        f"naive loop: {k} chips timed; its first vector vs embed(): max |Δ| "
        f"{float(np.abs(first - values[:, rows[0], cols[0]]).max()):.1e}"
    )
    rows_out = [
        ("embed() vs bare forward", r_pipe, r_bare, "chips/s", 0.95),
        ("  in-memory raster vs bare", n / best["in memory"], r_bare, "chips/s", 0.95),
        ("forward share of embed()", float(np.median(shares)), 1.0, "share", 0.95),
        ("embed() vs naive window loop", r_pipe, r_naive, "chips/s", naive_target),
    ]
    return rows_out, notes


def bench_repeat(path: Path, model, args: argparse.Namespace) -> tuple[list[tuple], list[str]]:
    """Row for a second query on a raster vs its first (which embeds it), and notes."""
    import rioxarray

    sel, bs = _crop(path, model, args.chips)[0], args.batch_size
    fresh = (f"lake shore {i}" for i in range(1 << 30))  # new texts: the text tower runs too
    first = second = math.inf
    for _ in range(args.repeat):
        raster = rioxarray.open_rasterio(path).isel(sel)  # a new raster object: nothing kept
        t0 = time.perf_counter()
        raster.geobind.similarity(QUERY, model=model, batch_size=bs, progress=False)
        t1 = time.perf_counter()
        raster.geobind.similarity(next(fresh), model=model, batch_size=bs, progress=False)
        t2 = time.perf_counter()
        first, second = min(first, t1 - t0), min(second, t2 - t1)
    notes = [
        f"a new raster object each repeat: first similarity() {first * 1e3:.0f} ms (read, "
        f"embed, score), second {second * 1e3:.1f} ms (the kept grid, a new text query)"
    ]
    return [("second query vs first", 1 / second, 1 / first, "calls/s", 50.0)], notes


def bandwidth(gib: float, repeat: int) -> tuple[float, str]:
    """Read bandwidth in bytes/s: best of ``repeat`` sums over ``gib`` GiB of float32."""
    a = np.ones(int(gib * 2**30) // 4, np.float32)
    t_np = _best(a.sum, repeat)
    t_torch = _best(torch.from_numpy(a).sum, repeat)
    how = f"numpy sum {a.nbytes / t_np / 1e9:.2f} GB/s, torch sum {a.nbytes / t_torch / 1e9:.2f}"
    return a.nbytes / min(t_np, t_torch), how


def bench_similarity(model, args: argparse.Namespace, crs) -> tuple[list[tuple], list[str]]:
    """Rows for similarity() bytes/s vs memory bandwidth (float32 and float16 grids), and notes."""
    from geobind.inference.grid import ChipGrid
    from geobind.inference.query import cosine, embed_query
    from geobind.inference.raster import grid_attrs, grid_dataarray

    dim = model.embed_dim
    side = math.isqrt(int(args.grid_mib * 2**20) // (4 * dim))
    rng = np.random.default_rng(0)
    data = rng.standard_normal((dim, side, side), dtype=np.float32)
    data /= np.linalg.norm(data, axis=0, keepdims=True)
    cells = ChipGrid((side - 1) * 32 + 64, (side - 1) * 32 + 64, chip=64, stride=32)
    grid32 = grid_dataarray(data, cells, crs, attrs=grid_attrs(model, cells))
    vectors = embed_query(model, QUERY)[0]

    fresh = (f"{QUERY} {i}" for i in range(1 << 30))  # texts the model has not embedded (cache)
    t_query = _best(lambda: embed_query(model, next(fresh)), args.repeat + 3)
    bw, how = bandwidth(args.bandwidth_gib, 5)
    notes = [
        f"memory read bandwidth: {how}",
        f"similarity grids: {dim} × {side} × {side} cells; embedding a new text query like "
        f"{QUERY!r} alone takes {t_query * 1e3:.1f} ms",
    ]
    out = []
    for dtype in ("float32", "float16"):
        grid = grid32 if dtype == "float32" else grid32.astype(dtype)
        values = grid.values
        t = _best(lambda grid=grid: grid.geobind.similarity(QUERY, model=model), args.repeat + 3)
        t_kernel = _best(lambda values=values: cosine(values, vectors), args.repeat + 3)
        out.append((f"similarity() {dtype} grid", grid.nbytes / t, bw, "GB/s", 0.4))
        if dtype == "float32":  # each call a text the model has not embedded yet
            t_new = _best(
                lambda g=grid, f=fresh: g.geobind.similarity(next(f), model=model), args.repeat + 3
            )
            out.append(("  with a new text each call", grid.nbytes / t_new, bw, "GB/s", None))
        notes.append(
            f"{dtype}: {grid.nbytes / 2**20:.0f} MiB in {t * 1e3:.0f} ms; the cosine kernel alone "
            f"{t_kernel * 1e3:.0f} ms ({grid.nbytes / t_kernel / bw:.2f}× bandwidth)"
        )
        del grid, values
    return out, notes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--world", help="reuse a synthetic world folder")
    parser.add_argument(
        "--preset", default="demo", help="world preset when no --world (bench: 8192² px, ~8 min)"
    )
    parser.add_argument("--scene", help="scene name (default: the world's first)")
    parser.add_argument("--model", default="demo", help="preset or model folder (paper: random)")
    parser.add_argument("--chips", type=int, help="cap on the chips embedded (default 1024)")
    parser.add_argument("--naive", type=int, default=200, help="chips timed in the naive loop")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--grid-mib", type=float, default=128, help="float32 similarity grid")
    parser.add_argument("--bandwidth-gib", type=float, default=1.0)
    parser.add_argument("--repeat", type=int, default=5, help="best-of repeats")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--quick", action="store_true", help="256 chips, 50 naive, 32 MiB grid")
    args = parser.parse_args()
    if args.chips is None:
        args.chips = 128 if args.model == "paper" else 1024
    if args.quick:
        args.chips, args.naive, args.grid_mib, args.repeat = min(args.chips, 256), 50, 32, 1
    if args.threads:
        torch.set_num_threads(args.threads)

    # Imported before any model loads: torch then probes for xarray with importlib.util.find_spec,
    # which consumes geobind's register-on-import hook and leaves xarray without ``.geobind``.
    import rioxarray

    from geobind._heap import keep_heap

    print(
        f"torch {torch.__version__}, numpy {np.__version__}, {torch.get_num_threads()} threads; "
        f"glibc heap kept between forwards: {keep_heap()} (GEOBIND_MALLOC=default: not)"
    )
    with tempfile.TemporaryDirectory() as tmp:
        path = _scene(args, Path(tmp))
        model = _load_model(args.model)
        rows, notes = bench_embed(path, model, args)
        repeat_rows, repeat_notes = bench_repeat(path, model, args)
        rows, notes = rows + repeat_rows, notes + repeat_notes
        crs = rioxarray.open_rasterio(path).rio.crs
        more_rows, more_notes = bench_similarity(model, args, crs)

    print(f"model {args.model!r}")
    print(f"{'measure':<30}{'value':>10}{'reference':>11}{'unit':>9}{'ratio':>8}{'target':>8}  ok")
    for name, value, ref, unit, target in rows + more_rows:
        scale = 1e9 if unit == "GB/s" else 1.0
        ratio = value / ref
        goal = "–" if target is None else "≥ " + format(target, "g")
        ok = "" if target is None else "ok" if ratio >= target else "NO"
        print(
            f"{name:<30}{value / scale:>10.2f}{ref / scale:>11.2f}{unit:>9}{ratio:>8.2f}"
            f"{goal:>8}  {ok}"
        )
    for note in notes + more_notes:
        print(f"  {note}")


if __name__ == "__main__":
    main()
