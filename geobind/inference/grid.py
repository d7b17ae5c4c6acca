"""Chip grids: the one function that turns a block of pixels into a block of embeddings.

These rules are shared by the xarray accessor, the GeoPandas accessor and Zarr streaming:

- **Chips.** A chip is ``chip × chip`` raster pixels. Cell ``(i, j)`` of the grid is the chip
  whose upper-left pixel is ``(i·stride, j·stride)``, so the grid has
  ``(height − chip) // stride + 1`` rows (likewise columns). Pixels beyond the last whole chip
  (when ``height − chip`` is not a multiple of ``stride``) are not covered.
- **Georeferencing** (:class:`~geobind.georef.ChipGrid`). The grid's transform is the raster's,
  translated by ``(chip − stride) / 2`` pixels and scaled by ``stride``: each cell's centre is
  exactly its chip's centre.
- **Ground sample distance** (:meth:`~geobind.georef.GeoBox.chip_pixels`). A model sees chips of
  ``chip_size`` pixels at ``gsd`` metres. On a raster of another ground resolution (pyproj's scale
  factors: a Web-Mercator scene at 45° has 0.7 ground metres per CRS unit) the chip keeps the
  model's footprint, resized to the model's input by the encoder (bilinear, antialiased).
- **Nodata** (:func:`~geobind.data.chips.invalid_mask`, GDAL's dataset-mask rule). A chip with more
  than ``nodata_fraction`` invalid pixels gives a NaN cell and is never embedded; invalid pixels
  inside other chips read as 0. Chips go through
  :meth:`~geobind.models.encoders.SatEncoder.embed_pixels`, as every satellite chip does.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from geobind.data.chips import invalid_mask
from geobind.errors import BandsError, InputDataError
from geobind.georef import ChipGrid

__all__ = ["ChipGrid", "embed_pixels", "nodata_fractions"]


def nodata_fractions(invalid: np.ndarray | None, shape: tuple[int, int], chip: int, stride: int):
    """Share of nodata pixels in each chip of a grid over ``invalid`` (a summed-area table).

    Example:
        >>> import numpy as np
        >>> m = np.zeros((4, 4), bool); m[:2, :2] = True
        >>> nodata_fractions(m, (2, 2), chip=2, stride=2).tolist()
        [[1.0, 0.0], [0.0, 0.0]]
    """
    if invalid is None:
        return np.zeros(shape)
    table = np.zeros((invalid.shape[0] + 1, invalid.shape[1] + 1), np.int64)
    np.cumsum(np.cumsum(invalid, axis=0, dtype=np.int64), axis=1, out=table[1:, 1:])
    r = np.arange(shape[0]) * stride
    c = np.arange(shape[1]) * stride
    count = (
        table[np.ix_(r + chip, c + chip)]
        - table[np.ix_(r, c + chip)]
        - table[np.ix_(r + chip, c)]
        + table[np.ix_(r, c)]
    )
    return count / float(chip * chip)


def embed_pixels(
    encoder: Any,
    pixels: np.ndarray,
    *,
    chip: int,
    stride: int,
    nodata: float | None = None,
    valid: np.ndarray | None = None,
    nodata_fraction: float = 0.5,
    bands: Sequence[int] | None = None,
    batch_size: int = 64,
    progress: bool = False,
) -> np.ndarray:
    """Embed every chip of a ``(bands, H, W)`` block: ``(embed_dim, rows, cols)`` float32.

    ``encoder`` is a model's satellite encoder (``model["sat"]``). ``bands`` (1-based) overrides
    the encoder's. ``valid`` is the block's dataset mask (``(H, W)``, 0 = invalid; alpha band or
    internal mask, see :func:`~geobind.data.chips.read_dataset_mask`). Chips are gathered batch by
    batch (``batch_size``) and embedded by
    :meth:`~geobind.models.encoders.SatEncoder.embed_pixels`; chips with more than
    ``nodata_fraction`` invalid pixels give NaN and are skipped before they are gathered.

    Example:
        >>> import geobind, numpy as np
        >>> sat = geobind.load("tiny")["sat"]
        >>> embed_pixels(sat, np.zeros((3, 48, 40), np.uint8), chip=32, stride=8).shape
        (64, 3, 2)
    """
    from tqdm.auto import tqdm

    if pixels.ndim != 3:
        raise InputDataError(f"pixels must be (bands, height, width); got shape {pixels.shape}")
    if not 0 <= nodata_fraction <= 1:
        raise InputDataError(f"nodata_fraction must be in [0, 1]; got {nodata_fraction}")
    bands = list(bands or encoder.bands)
    BandsError.check(bands, pixels.shape[0])
    grid = ChipGrid(pixels.shape[1], pixels.shape[2], chip=chip, stride=stride)
    ny, nx = grid.shape
    picked = [b - 1 for b in bands]  # consecutive bands (most often): a view, not a copy
    consecutive = picked == list(range(picked[0], picked[0] + len(picked)))
    pixels = pixels[picked[0] : picked[0] + len(picked)] if consecutive else pixels[picked]
    invalid = invalid_mask(pixels, nodata, valid)
    if invalid is not None and not invalid.any():
        invalid = None  # no summed-area table to build (20 ms per megapixel)
    keep = nodata_fractions(invalid, (ny, nx), chip, stride) <= nodata_fraction
    out = np.full((encoder.embed_dim, ny, nx), np.nan, np.float32)
    rows, cols = np.nonzero(keep)
    if rows.size == 0:
        return out
    view = np.lib.stride_tricks.sliding_window_view
    # (rows, cols, bands, chip, chip), a view: a batch gathered from it is contiguous
    windows = view(pixels, (chip, chip), axis=(1, 2))[:, ::stride, ::stride]
    windows = windows.transpose(1, 2, 0, 3, 4)
    masks = None if invalid is None else view(invalid, (chip, chip))[::stride, ::stride]
    with tqdm(total=rows.size, disable=not progress, desc="chips", unit="chip") as bar:
        for i in range(0, rows.size, batch_size):
            r, c = rows[i : i + batch_size], cols[i : i + batch_size]
            x = windows[r, c]  # (batch, bands, chip, chip), a copy
            ok = None if masks is None else ~masks[r, c]
            vectors = encoder.embed_pixels(
                x, ok, nodata_fraction=nodata_fraction, batch_size=batch_size
            )
            out[:, r, c] = vectors.T
            bar.update(r.size)
    return out
