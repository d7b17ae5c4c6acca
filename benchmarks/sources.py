"""Remote sources: embedding a COG over HTTP and S3 vs the same file on local disk.

On a square crop (``--size`` px) of a synthetic-world scene written as a Cloud-Optimised GeoTIFF,
served on loopback by a real HTTP server with Range requests and by moto's S3 API (the servers
of ``tests/_servers.py``, child processes), measured in one run:

- ``embed_to_zarr`` (local store) from the HTTP COG and from the S3 COG vs from the file on disk:
  local seconds / remote seconds. Target: ≥ 0.9 (the tile reader's background thread overlaps
  the range reads with the forward).
- the host side alone: chips/s with the encoder's forward stubbed out (it returns zeros), for the
  file, HTTP and S3 sources, and chips per CPU-second of this process ("per core"): the rate a
  GPU forward needs the host to keep up with. Printed beside the bare forward of the model on
  this CPU and of the paper architecture (ViT-B/32 at 224 px) for scale.

Loopback has no latency or bandwidth limit, so this measures GDAL's request overhead and the
overlap, not a real network.

    python benchmarks/sources.py [--world DIR | --scene TIF] [--model demo] [--size 1024]
                                 [--repeat 3] [--tile 64]
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _servers():
    spec = importlib.util.spec_from_file_location("_servers", ROOT / "tests" / "_servers.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _cog(scene: Path, out: Path, size: int) -> Path:
    """The centre ``size × size`` crop of ``scene`` as a COG (512-px blocks, deflate)."""
    import rasterio
    from rasterio.shutil import copy
    from rasterio.windows import Window

    with rasterio.open(scene) as src:
        size = min(size, src.width, src.height)
        window = Window((src.width - size) // 2, (src.height - size) // 2, size, size)
        profile = {
            **src.profile,
            "width": size,
            "height": size,
            "transform": src.window_transform(window),
            "tiled": True,
            "blockxsize": 256,
            "blockysize": 256,
        }
        plain = out.with_suffix(".plain.tif")
        with rasterio.open(plain, "w", **profile) as dst:
            dst.write(src.read(window=window))
    copy(str(plain), str(out), driver="COG", compress="deflate", blocksize=512)
    plain.unlink()
    return out


def _timed(jobs: dict[str, object], repeat: int) -> dict[str, tuple[float, float]]:
    """Best wall seconds of each job and the CPU seconds of that run, after one warm-up call
    each; the jobs run interleaved, so a change of the machine's load hits them alike."""
    best = {name: (math.inf, math.inf) for name in jobs}
    for fn in jobs.values():
        fn()
    for _ in range(repeat):
        for name, fn in jobs.items():
            r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
            fn()
            wall = time.perf_counter() - t0
            r1 = resource.getrusage(resource.RUSAGE_SELF)
            cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
            best[name] = min(best[name], (wall, cpu))
    return best


def _bare_rate(model, batch: int = 32, seconds: float = 3.0) -> float:
    """Chips/s of the encoder's bare forward on random prepared chips."""
    import torch

    sat = model["sat"]
    x = torch.randn(batch, len(sat.bands), sat.image_size, sat.image_size)
    with torch.inference_mode():
        sat._run(x)
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            sat._run(x)
            n += batch
    return n / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--world", type=Path, help="a generated world (default: a new demo one)")
    parser.add_argument("--scene", type=Path, help="a GeoTIFF to crop instead of a world scene")
    parser.add_argument("--model", default="demo")
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--tile", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    import geobind
    from geobind.inference.store import embed_to_zarr

    sys.path.insert(0, str(Path(__file__).parent))
    from embed import _load_model  # the sibling benchmark: presets and the paper architecture

    tmp = Path(tempfile.mkdtemp(prefix="geobind-bench-sources-"))
    if args.scene is None:
        world = args.world or geobind.generate_world(tmp / "world", "demo", seed=0).root
        args.scene = Path(world) / "scenes" / "gamma.tif"
    (tmp / "serve").mkdir()
    cog = _cog(args.scene, tmp / "serve" / "scene.tif", args.size)
    servers = _servers()
    http = servers.HTTPServer(tmp).start()
    s3 = servers.S3Server().start()
    os.environ.update(s3.env)
    try:
        s3.bucket("geobind-bench")
        sources = {
            "file": str(cog),
            "http": http.url(cog),
            "s3": s3.upload(cog, "s3://geobind-bench/scene.tif"),
        }
        model = _load_model(args.model)
        sat = model["sat"]
        stores = iter(range(10**6))

        def job(source: str):
            store = tmp / f"s{next(stores)}.zarr"
            return lambda: embed_to_zarr(
                source, store, model, tile=args.tile, client=False, overwrite=True
            )

        cells = embed_to_zarr(cog, tmp / "count.zarr", model, tile=args.tile, client=False).cells
        print(f"{args.scene.name}, {args.size}² crop as a COG, model {args.model}: {cells} chips")
        print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores\n")

        full = _timed({name: job(src) for name, src in sources.items()}, args.repeat)
        for name in ("http", "s3"):
            ratio = full["file"][0] / full[name][0]
            verdict = "ok" if ratio >= 0.9 else "below target"
            print(
                f"embed_to_zarr from {name:4s}: {full[name][0]:.2f} s vs file "
                f"{full['file'][0]:.2f} s → file/{name} {ratio:.2f} (target ≥ 0.9: {verdict})"
            )

        import torch

        run = sat._run
        sat._run = lambda x: torch.zeros(len(x), sat.embed_dim)  # the forward stubbed out
        try:
            host = _timed({name: job(src) for name, src in sources.items()}, args.repeat)
        finally:
            sat._run = run
        print("\nhost side only (forward stubbed out):")
        for name, (wall, cpu) in host.items():
            print(
                f"  {name:4s}: {cells / wall:8.0f} chips/s, {cells / max(cpu, 1e-9):8.0f} chips "
                f"per CPU-second"
            )
        print(f"\nbare forward on this CPU, {args.model}: {_bare_rate(model):.0f} chips/s")
        paper = _load_model("paper")
        print(
            f"bare forward on this CPU, paper architecture (ViT-B/32, 224 px): "
            f"{_bare_rate(paper, batch=16):.0f} chips/s (no GPU here to measure its GPU rate)"
        )
    finally:
        http.stop()
        s3.stop()


if __name__ == "__main__":
    main()
