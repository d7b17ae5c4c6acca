"""glibc's heap is kept between forwards once a model is built (geobind._heap)."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only"
)

# Page faults while a 48 MiB block (a batch's activations) is allocated, filled and freed 5 times
# after a model is built (and twice before counting): the kept heap serves it again, glibc's
# default maps it afresh each time.
PROBE = """
import resource, torch, geobind
geobind.load("tiny", device="cpu")
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(2):  # the first times take their pages anyway
    x = torch.empty(12 << 20); x.fill_(1.0); del x
before = faults()
for _ in range(5):
    x = torch.empty(12 << 20); x.fill_(1.0); del x
print(faults() - before)
"""


def _faults(**env: str) -> int:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    out = subprocess.run(
        [sys.executable, "-c", PROBE], env={**environ, **env}, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    return int(out.stdout.split()[-1])


def test_a_built_model_keeps_freed_activations_in_the_heap():
    kept, default = _faults(), _faults(GEOBIND_MALLOC="default")
    pages = 5 * (48 << 20) // 4096
    assert default > pages // 2  # mapped and faulted in afresh each time
    assert kept < pages // 50  # served from the kept heap


def test_the_users_own_malloc_settings_are_left_alone():
    pages = 5 * (48 << 20) // 4096
    assert _faults(MALLOC_MMAP_THRESHOLD_="1048576") > pages // 2  # theirs: 1 MiB blocks mapped
