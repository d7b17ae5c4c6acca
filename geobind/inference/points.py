"""Point chips: the chip centred on each point, read from a raster block by block.

A chip centred on a point starts at the pixel :func:`geobind.georef.chip_origins` gives (the
centring rule training uses too). Pixels beyond the raster's edge read as invalid; the pixels go
through the one chip pipeline (:meth:`~geobind.models.encoders.SatEncoder.embed_pixels`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from geobind.data.chips import invalid_mask
from geobind.errors import BandsError
from geobind.inference.raster import band_pixels

__all__ = ["read_chips"]

_TILE = 1024  # read blocks of rasters without dask chunks (pixels)
_BLOCKS = 16  # raster blocks held in memory at once while reading chips


def _bounds(chunks: Sequence[int]) -> np.ndarray:
    return np.concatenate([[0], np.cumsum(chunks)]).astype(np.int64)


def read_chips(
    raster: Any,
    rows: np.ndarray,
    cols: np.ndarray,
    chip: int,
    *,
    bands: Sequence[int] = (1, 2, 3),
) -> tuple[np.ndarray, np.ndarray]:
    """Read ``chip × chip`` chips with upper-left pixels ``rows, cols`` from a raster.

    Returns ``(pixels (n, len(bands), chip, chip), invalid (n, chip, chip))``: pixels beyond the
    raster's edge are 0 and invalid, as are invalid pixels by
    :func:`~geobind.data.chips.invalid_mask` (nodata in every band read, NaN, or 0 in the file's
    alpha band or internal mask, :func:`~geobind.inference.raster.dataset_mask`). The raster is
    read block by block (its dask chunks, else windows of 1024 pixels), only the blocks some chip
    overlaps and at most 16 at a time (one ``dask.compute`` each time), so memory stays bounded
    and a lazily opened GeoTIFF is read only where the chips are.

    Example:
        >>> import numpy as np, xarray as xr, rioxarray  # noqa: F401
        >>> r = xr.DataArray(np.arange(16, dtype=np.uint8).reshape(1, 4, 4),
        ...                  dims=("band", "y", "x"),
        ...                  coords={"y": [3.5, 2.5, 1.5, 0.5], "x": [0.5, 1.5, 2.5, 3.5]})
        >>> r = r.rio.write_crs(32633)
        >>> px, bad = read_chips(r, np.array([-1]), np.array([2]), 2, bands=[1])  # row -1: off
        >>> px[0, 0].tolist(), bad[0].tolist()
        ([[0, 0], [2, 3]], [[True, True], [False, False]])
    """
    from geobind.inference.raster import dataset_mask, read_pixels

    arr, lay = band_pixels(raster)
    BandsError.check(bands, arr.shape[0])
    arr = arr.isel({arr.dims[0]: [b - 1 for b in bands]})
    masked = dataset_mask(lay, slice(0, 1), slice(0, 1)) is not None  # alpha or internal mask
    rows, cols = np.asarray(rows, np.int64), np.asarray(cols, np.int64)
    n, nb, height, width = rows.size, *arr.shape
    pixels = np.zeros((n, nb, chip, chip), arr.dtype)
    invalid = np.ones((n, chip, chip), bool)
    r0, r1 = np.clip(rows, 0, height), np.clip(rows + chip, 0, height)
    c0, c1 = np.clip(cols, 0, width), np.clip(cols + chip, 0, width)
    some = np.flatnonzero((r1 > r0) & (c1 > c0))
    if some.size == 0:
        return pixels, invalid
    if arr.chunks is None:
        ys, xs = (np.append(np.arange(0, size, _TILE), size) for size in (height, width))

        def load(keys: list[tuple[int, int]]) -> list[np.ndarray]:
            return [read_pixels(arr[:, ys[i] : ys[i + 1], xs[j] : xs[j + 1]]) for i, j in keys]
    else:
        import dask

        data = arr.data.rechunk({0: -1})
        ys, xs = _bounds(data.chunks[1]), _bounds(data.chunks[2])

        def load(keys: list[tuple[int, int]]) -> list[np.ndarray]:
            return list(dask.compute(*[data.blocks[0, i, j] for i, j in keys]))

    by, bx = np.searchsorted(ys, r0, "right") - 1, np.searchsorted(xs, c0, "right") - 1
    ey, ex = np.searchsorted(ys, r1 - 1, "right") - 1, np.searchsorted(xs, c1 - 1, "right") - 1

    def fill(todo: list[int], keys: list[tuple[int, int]]) -> None:
        blocks = dict(zip(keys, load(keys), strict=True))
        valid = {
            (i, j): dataset_mask(lay, slice(ys[i], ys[i + 1]), slice(xs[j], xs[j + 1]))
            for i, j in (keys if masked else [])
        }
        for i in todo:
            for bi in range(by[i], ey[i] + 1):
                for bj in range(bx[i], ex[i] + 1):
                    y0, y1 = max(r0[i], ys[bi]), min(r1[i], ys[bi + 1])
                    x0, x1 = max(c0[i], xs[bj]), min(c1[i], xs[bj + 1])
                    part = blocks[bi, bj][:, y0 - ys[bi] : y1 - ys[bi], x0 - xs[bj] : x1 - xs[bj]]
                    at = (slice(y0 - rows[i], y1 - rows[i]), slice(x0 - cols[i], x1 - cols[i]))
                    pixels[i][(slice(None), *at)] = part
                    mask = valid.get((bi, bj))
                    if mask is not None:
                        mask = mask[y0 - ys[bi] : y1 - ys[bi], x0 - xs[bj] : x1 - xs[bj]]
                    bad = invalid_mask(part, lay.nodata, mask)
                    invalid[i][at] = False if bad is None else bad

    # chips in block order; a group holds chips until it needs more than _BLOCKS blocks
    todo: list[int] = []
    keys: dict[tuple[int, int], None] = {}
    for i in some[np.lexsort((bx[some], by[some]))]:
        mine = [(a, b) for a in range(by[i], ey[i] + 1) for b in range(bx[i], ex[i] + 1)]
        if todo and len(keys.keys() | set(mine)) > max(_BLOCKS, len(mine)):
            fill(todo, list(keys))
            todo, keys = [], {}
        todo.append(i)
        keys.update(dict.fromkeys(mine))
    fill(todo, list(keys))
    return pixels, invalid
