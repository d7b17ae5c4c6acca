"""Compiled kernels that scan stored embedding grids (numba; imported when a grid is scored).

:func:`dot_rows` is the dot product of query vectors with every cell of an ``(embed_dim, cells)``
grid, for float32 grids and for float16 grids read as their raw bits. It exists because neither
numpy nor torch scores a stored grid at memory speed on a CPU (measured on a 2-core AVX2 VM,
128 × 262 144 cells, 2 threads; ``benchmarks/embed.py`` prints the end-to-end ratio):

| query vectors | torch ``q @ grid`` | this kernel |
|---|---|---|
| 1, float32 grid | 15.0 GB/s | 21.7 GB/s |
| 4, float32 grid | 2.2 GB/s | 11.9 GB/s |
| 1, float16 grid | 2.7-4.2 GB/s (``copy_`` to float32 + matmul; half matmul: 0.36) | 16.5 GB/s |

Each float16 value is widened in registers (with F16C's instruction where the CPU has it, with
integer operations elsewhere; see ``_widen``), so the grid is read once and never copied.
Compiled code is cached on disk (numba's ``cache=True``), so only the first process on a machine
pays the 2-5 s compile; later processes load it in ~1 s on their first call. Where no cache
folder is writable (neither the install folder nor the home folder; ``NUMBA_CACHE_DIR`` names
another), each process compiles.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic


@intrinsic
def _widen(typingctx, x):
    """float32 of a float32, or of float16 bits held in a uint16.

    Where the target CPU has F16C this is LLVM's ``fpext half`` (``vcvtph2ps``). Elsewhere
    ``fpext`` would lower to a call of ``__extendhfsf2``, which numba's JIT does not link (a
    segfault under ``NUMBA_CPU_NAME=generic``), so it is integer arithmetic: shifted into
    float32's place, the exponent and mantissa bits read as the value times 2⁻¹¹² (subnormals
    included), one multiply by 2¹¹² rescales them, an all-ones exponent (inf, NaN) becomes
    float32's, and the sign is or-ed back. Through :func:`~geobind.inference.query.cosine` on 2
    threads the 64 MiB benchmark grid reads at ~16 GB/s with ``fpext``, 13 GB/s without.
    (numba's on-disk cache is keyed by the CPU's features, so neither is loaded on the other.)
    """
    if x == types.uint16:

        def codegen(context, builder, signature, args):
            i32, f32 = ir.IntType(32), ir.FloatType()
            features = getattr(context.codegen(), "_tm_features", "") or ""
            if "+f16c" in features.split(","):
                return builder.fpext(builder.bitcast(args[0], ir.HalfType()), f32)
            h = builder.zext(args[0], i32)
            bits = builder.shl(builder.and_(h, ir.Constant(i32, 0x7FFF)), ir.Constant(i32, 13))
            finite = builder.fmul(builder.bitcast(bits, f32), ir.Constant(f32, 2.0**112))
            special = builder.bitcast(builder.or_(bits, ir.Constant(i32, 0x7F800000)), f32)
            exponent = builder.and_(h, ir.Constant(i32, 0x7C00))
            is_special = builder.icmp_unsigned("==", exponent, ir.Constant(i32, 0x7C00))
            magnitude = builder.bitcast(builder.select(is_special, special, finite), i32)
            sign = builder.shl(builder.and_(h, ir.Constant(i32, 0x8000)), ir.Constant(i32, 16))
            return builder.bitcast(builder.or_(magnitude, sign), f32)

    elif x == types.float32:

        def codegen(context, builder, signature, args):
            return args[0]

    else:
        return None
    return types.float32(x), codegen


# "contract" only: FMAs, but NaN cells still give NaN (full fastmath would assume no NaNs)
_OPTIONS = {"nogil": True, "fastmath": {"contract"}}


def _compiled(fn):
    """``fn`` compiled by numba, its machine code cached on disk where a folder is writable."""
    try:
        return njit(cache=True, **_OPTIONS)(fn)
    except RuntimeError:  # numba: "cannot cache function ...: no locator available"
        return njit(**_OPTIONS)(fn)


@_compiled
def dot_rows(grid, queries, out, start, stop, chunk):
    """``out[:, start:stop] = queries @ grid[:, start:stop]``, ``chunk`` cells at a time.

    ``grid`` is ``(embed_dim, cells)`` C-contiguous float32, or float16 viewed as uint16;
    ``queries`` ``(n, embed_dim)`` and ``out`` ``(n, cells)`` are C-contiguous float32. Grid rows
    go 4 at a time, so each output value is loaded and stored once per 4 grid rows; with several
    queries the 4 rows are widened once into a small buffer first. Releases the GIL.

    Example:
        >>> import numpy as np
        >>> g = np.array([[1, 2, 3], [4, 5, 6]], np.float16)
        >>> out = np.empty((1, 3), np.float32)
        >>> dot_rows(g.view(np.uint16), np.array([[1, 10]], np.float32), out, 0, 3, 2)
        >>> out.tolist()
        [[41.0, 52.0, 63.0]]
    """
    dim = grid.shape[0]
    nq = queries.shape[0]
    four = dim - dim % 4
    buf = np.empty((4, max(1, min(chunk, stop - start))), np.float32)
    b0, b1, b2, b3 = buf[0], buf[1], buf[2], buf[3]
    for c0 in range(start, stop, chunk):
        c1 = min(c0 + chunk, stop)
        m = c1 - c0
        out[:, c0:c1] = 0.0
        for e in range(0, four, 4):
            r0, r1 = grid[e, c0:c1], grid[e + 1, c0:c1]
            r2, r3 = grid[e + 2, c0:c1], grid[e + 3, c0:c1]
            if nq == 1:
                q0, q1, q2, q3 = (
                    queries[0, e],
                    queries[0, e + 1],
                    queries[0, e + 2],
                    queries[0, e + 3],
                )
                o = out[0, c0:c1]
                for n in range(m):
                    o[n] += (q0 * _widen(r0[n]) + q1 * _widen(r1[n])) + (
                        q2 * _widen(r2[n]) + q3 * _widen(r3[n])
                    )
                continue
            for n in range(m):
                b0[n], b1[n] = _widen(r0[n]), _widen(r1[n])
                b2[n], b3[n] = _widen(r2[n]), _widen(r3[n])
            for j in range(nq):
                q0, q1, q2, q3 = (
                    queries[j, e],
                    queries[j, e + 1],
                    queries[j, e + 2],
                    queries[j, e + 3],
                )
                o = out[j, c0:c1]
                for n in range(m):
                    o[n] += (q0 * b0[n] + q1 * b1[n]) + (q2 * b2[n] + q3 * b3[n])
        for e in range(four, dim):
            r0 = grid[e, c0:c1]
            for j in range(nq):
                q0 = queries[j, e]
                o = out[j, c0:c1]
                for n in range(m):
                    o[n] += q0 * _widen(r0[n])
