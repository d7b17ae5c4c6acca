"""Synthetic-world generation: wall time per preset and the speed-up of worker processes.

Target (issue 4): `geobind synth OUT --preset demo` < 60 s on 2 cores. Prints, for each preset,
the wall time with all cores and with one worker (their ratio is the parallel speed-up).

    python benchmarks/synth.py [--presets tiny demo] [--bench]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from geobind.synth import PRESETS, generate_world


def _run(preset: str, workers: int, root: Path) -> float:
    t0 = time.perf_counter()
    generate_world(root / f"{preset}-{workers}", preset, workers=workers)
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["tiny", "demo"])
    parser.add_argument(
        "--bench", action="store_true", help="also the 8192² bench preset (minutes)"
    )
    parser.add_argument("--single", action="store_true", help="also time one worker (speed-up)")
    args = parser.parse_args()
    presets = args.presets + (["bench"] if args.bench else [])
    cores = os.cpu_count() or 1
    print(f"cores: {cores}")
    head = ("preset", "workers", "wall s", "Mpx/s", "photos", "clips", "speed-up")
    print("".join(f"{h:>9}" for h in head))
    with tempfile.TemporaryDirectory() as tmp:
        for name in presets:
            p = PRESETS[name]
            mpx = sum(s.width * s.height for s in p.scenes) / 1e6
            t_all = _run(name, cores, Path(tmp))
            print(
                f"{name:<8}{cores:>8}{t_all:>9.1f}{mpx / t_all:>8.2f}{p.n_ground:>8}{p.n_audio:>7}"
            )
            if args.single and cores > 1:
                t_one = _run(name, 1, Path(tmp))
                print(
                    f"{name:<8}{1:>8}{t_one:>9.1f}{mpx / t_one:>8.2f}{'':>15}{t_one / t_all:>10.2f}"
                )


if __name__ == "__main__":
    main()
