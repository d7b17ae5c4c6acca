"""Start-up cost: `import geobind` and `geobind --help` against a bare `python -c pass`.

Targets (issue 4): import < 0.5 s and --help < 1.5 s on a 2-core machine. Prints the medians of
repeated cold subprocess runs and their ratio to the bare interpreter start.

    python benchmarks/imports.py [--repeat 7]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time


def _median_seconds(cmd: list[str], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    bare = _median_seconds([sys.executable, "-c", "pass"], args.repeat)
    rows = [
        ("import geobind", [sys.executable, "-c", "import geobind"], 0.5),
        ("geobind --help", [sys.executable, "-m", "geobind.cli", "--help"], 1.5),
        ("geobind --version", [sys.executable, "-m", "geobind.cli", "--version"], 1.5),
    ]
    print(f"{'command':<20}{'median s':>10}{'x bare python':>15}{'target s':>10}  ok")
    print(f"{'python -c pass':<20}{bare:>10.3f}{1.0:>15.1f}{'':>10}")
    for name, cmd, target in rows:
        t = _median_seconds(cmd, args.repeat)
        print(
            f"{name:<20}{t:>10.3f}{t / bare:>15.1f}{target:>10.1f}  {'yes' if t < target else 'NO'}"
        )


if __name__ == "__main__":
    main()
