"""Procedural noise as pure functions of world coordinates.

Every texture in the synthetic world is a function of (x, y) in ground metres and a seed, never of
the array it is evaluated on, so a scene rendered strip by strip equals the scene rendered whole.
"""

from __future__ import annotations

import numpy as np

_M1 = np.uint32(0x8DA6B343)
_M2 = np.uint32(0xD8163841)
_M4 = np.uint32(0x5BD1E995)


def hash2(ix: np.ndarray, iy: np.ndarray, seed: int) -> np.ndarray:
    """A well-mixed uint32 hash of integer lattice coordinates."""
    h = (np.asarray(ix, dtype=np.int64).astype(np.uint32) * _M1) ^ (
        np.asarray(iy, dtype=np.int64).astype(np.uint32) * _M2
    )
    h ^= np.uint32((seed * 0xCB1AB31F) & 0xFFFFFFFF)
    h ^= h >> np.uint32(13)
    h *= _M4
    h ^= h >> np.uint32(15)
    h *= _M1
    h ^= h >> np.uint32(16)
    return h


def rand2(ix: np.ndarray, iy: np.ndarray, seed: int) -> np.ndarray:
    """Uniform float32 in [0, 1) per lattice point."""
    return (hash2(ix, iy, seed) >> np.uint32(8)).astype(np.float32) * np.float32(1.0 / (1 << 24))


def _lattice(ix: np.ndarray, iy: np.ndarray, seed: int, pad: int = 1):
    """Hash values over the bounding box of lattice cells (few), so pixels gather instead of hash.

    Returns ``(flat table, flat index of (ix, iy), row stride)``; neighbours up to ``pad`` cells
    beyond the box are included.
    """
    x0, y0 = int(ix.min()) - pad, int(iy.min()) - pad
    gx = np.arange(x0, int(ix.max()) + pad + 1)
    gy = np.arange(y0, int(iy.max()) + pad + 1)
    table = rand2(gx[None, :], gy[:, None], seed).ravel()
    return table, (iy - y0) * len(gx) + (ix - x0), len(gx)


def value_noise(x: np.ndarray, y: np.ndarray, scale: float, seed: int) -> np.ndarray:
    """Smooth value noise in [0, 1] with features of about ``scale`` metres."""
    fx = np.asarray(x, dtype=np.float32) * np.float32(1 / scale)
    fy = np.asarray(y, dtype=np.float32) * np.float32(1 / scale)
    if fx.size == 0:
        return np.zeros(fx.shape, np.float32)
    ix = np.floor(fx)
    iy = np.floor(fy)
    tx = fx - ix
    ty = fy - iy
    tx = tx * tx * (3 - 2 * tx)
    ty = ty * ty * (3 - 2 * ty)
    table, k, stride = _lattice(ix.astype(np.int32), iy.astype(np.int32), seed)
    v00 = table[k]
    v10 = table[k + 1]
    v01 = table[k + stride]
    v11 = table[k + stride + 1]
    a = v00 + (v10 - v00) * tx
    b = v01 + (v11 - v01) * tx
    return a + (b - a) * ty


def fbm(x: np.ndarray, y: np.ndarray, scale: float, seed: int, octaves: int = 4) -> np.ndarray:
    """Fractal sum of value noise, normalised to [0, 1]."""
    total = np.zeros(np.shape(x), dtype=np.float32)
    amp, norm = 1.0, 0.0
    for o in range(octaves):
        total += np.float32(amp) * value_noise(x, y, scale / 2**o, seed + 7919 * o)
        norm += amp
        amp *= 0.5
    return total / np.float32(norm)


def worley(
    x: np.ndarray, y: np.ndarray, cell: float, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Nearest jittered-grid seed: its cell indices, the distance to it and the edge distance.

    Returns ``(cx, cy, d1, d2 - d1)``: the integer cell of the nearest seed (an id for the region),
    the distance to it in metres, and how far the point is from the border with the next region.
    """
    fx = np.asarray(x, dtype=np.float64) / cell
    fy = np.asarray(y, dtype=np.float64) / cell
    ix = np.floor(fx).astype(np.int64)
    iy = np.floor(fy).astype(np.int64)
    d1 = np.full(fx.shape, np.inf)
    d2 = np.full(fx.shape, np.inf)
    bx = np.zeros(fx.shape, dtype=np.int64)
    by = np.zeros(fx.shape, dtype=np.int64)
    if fx.size == 0:
        return bx, by, d1.astype(np.float32), d2.astype(np.float32)
    jx, k, stride = _lattice(ix, iy, seed, pad=1)
    jy, _, _ = _lattice(ix, iy, seed + 1, pad=1)
    for dx in (-1, 0, 1):
        for dy in (-1, 0, 1):
            kk = k + dy * stride + dx
            sx = ix + dx + 0.1 + 0.8 * jx[kk]
            sy = iy + dy + 0.1 + 0.8 * jy[kk]
            d = np.hypot(fx - sx, fy - sy)
            closer = d < d1
            d2 = np.where(closer, d1, np.minimum(d2, d))
            d1 = np.where(closer, d, d1)
            bx = np.where(closer, ix + dx, bx)
            by = np.where(closer, iy + dy, by)
    return bx, by, (d1 * cell).astype(np.float32), ((d2 - d1) * cell).astype(np.float32)


def smoothstep(e0: float, e1: float, v: np.ndarray) -> np.ndarray:
    """Hermite step from 0 at ``e0`` to 1 at ``e1``."""
    t = np.clip((v - e0) / (e1 - e0), 0, 1)
    return t * t * (3 - 2 * t)
