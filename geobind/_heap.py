"""glibc's heap kept between model forwards.

A CPU forward allocates its activations afresh (tens of MB a batch) and frees them at its end.
glibc's malloc by default hands the freed top of its heap back to the kernel (its trim threshold
follows the largest block freed, up to 64 MiB), so the next forward takes those pages again, one
page fault per 4 KiB: about 1 GB of faults per 1,024 chips of the demo model, ~1/3 of
``embed()``'s time there and ~1/10 on ViT-B/32 (2-core VM; ``benchmarks/embed.py``, ``with
MALLOC_*`` in the issue note). :func:`keep_heap` fixes the two thresholds instead, as
``MALLOC_MMAP_THRESHOLD_`` and ``MALLOC_TRIM_THRESHOLD_`` would: blocks under 64 MiB come from
the heap, and up to 256 MiB of freed heap is kept for the next batch. The process then holds
that much more memory than it uses at the moment, in exchange.

It runs when a :class:`~geobind.models.GeoBind` is built; ``GEOBIND_MALLOC=default`` leaves
glibc as it is, and so do your own ``MALLOC_*_`` variables or ``glibc.malloc`` tunables. Other
C libraries (musl, macOS, Windows) are left alone.
"""

from __future__ import annotations

import ctypes
import os
import platform

__all__ = ["MMAP_THRESHOLD", "TRIM_THRESHOLD", "keep_heap"]

MMAP_THRESHOLD = 64 << 20  # bytes: larger blocks are mapped (and returned) on their own
TRIM_THRESHOLD = 256 << 20  # bytes of free heap top kept before any is returned

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)
_kept: bool | None = None


def keep_heap() -> bool:
    """Keep freed memory in glibc's heap for the next forward (once per process); whether the
    setting is in force.

    Example:
        >>> keep_heap()  # on Linux with glibc, unless GEOBIND_MALLOC=default or MALLOC_*_ is set
        True
    """
    global _kept
    if _kept is None:
        _kept = _apply()
    return _kept


def _glibc() -> ctypes.CDLL | None:
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:
        return None


def _apply() -> bool:
    if os.environ.get("GEOBIND_MALLOC") == "default":
        return False
    if "glibc.malloc." in os.environ.get("GLIBC_TUNABLES", "") or any(
        name.startswith("MALLOC_") and name.endswith("_") for name in os.environ
    ):
        return False  # the user's own settings
    libc = _glibc()
    if libc is None:
        return False
    # mallopt returns 1 on success; setting either freezes glibc's dynamic thresholds
    return bool(libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
        libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    )
