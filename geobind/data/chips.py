"""The steps every satellite chip goes through, in training and in inference.

One rule each, used by the training datasets, raster grids, point chips, evaluation and stores
(composed by :meth:`geobind.models.encoders.SatEncoder.embed_pixels`):

- **Validity** (:func:`invalid_mask`), GDAL's dataset mask: a pixel is invalid where every band
  read equals the raster's nodata value, where an alpha band or the file's internal mask is 0
  (:func:`read_dataset_mask`), or where float data is NaN in any band (a NaN cannot be scaled).
  So with nodata = 0 an RGB pixel (255, 0, 0) is valid: GDAL's rule, not "any band".
- **Scaling** (:func:`to_unit`): the encoder's ``scale``
  (:func:`~geobind.data.scaling.scale_to_unit`), invalid pixels 0.
- **Resizing** (:func:`resize`): a chip of another size than the model's input is resized with
  bilinear, antialiased interpolation (torch's), after scaling.

Example:
    >>> import numpy as np
    >>> px = np.array([[[255, 0]], [[0, 0]], [[0, 0]]], np.uint8)  # (255, 0, 0) and (0, 0, 0)
    >>> invalid_mask(px, nodata=0).tolist()
    [[False, True]]
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from geobind.data.scaling import scale_to_unit

__all__ = ["has_dataset_mask", "invalid_mask", "read_dataset_mask", "resize", "to_unit"]


def invalid_mask(
    pixels: np.ndarray, nodata: float | None, valid: np.ndarray | None = None
) -> np.ndarray | None:
    """``(..., H, W)`` True where a pixel of ``(..., bands, H, W)`` pixels is invalid.

    Invalid: every band equals ``nodata``; any band is NaN (float data); or ``valid`` (a dataset
    mask, ``(..., H, W)``, nonzero = valid) is 0. ``None`` when no pixel can be invalid (integer
    data, no nodata, no mask): callers skip the mask work.

    Example:
        >>> import numpy as np
        >>> invalid_mask(np.array([[[1.0, np.nan]], [[0.0, 2.0]]]), nodata=0).tolist()
        [[False, True]]
        >>> invalid_mask(np.zeros((3, 1, 2), np.uint8), None, valid=np.array([[255, 0]])).tolist()
        [[False, True]]
    """
    mask = None
    if nodata is not None and not math.isnan(nodata) and _representable(pixels, nodata):
        mask = (pixels == nodata).all(axis=-3)
    if np.issubdtype(pixels.dtype, np.floating):
        nan = np.isnan(pixels).any(axis=-3)
        mask = nan if mask is None else mask | nan
    if valid is not None:
        off = np.asarray(valid) == 0
        mask = off if mask is None else mask | off
    return mask


def _representable(pixels: np.ndarray, nodata: float) -> bool:
    """Whether ``nodata`` is a value of ``pixels``' dtype (nodata -9999 on uint8 never matches)."""
    if np.issubdtype(pixels.dtype, np.integer):
        info = np.iinfo(pixels.dtype)
        return float(nodata).is_integer() and info.min <= nodata <= info.max
    return True


def to_unit(pixels: np.ndarray, invalid: np.ndarray | None, scale: str | float) -> np.ndarray:
    """Chips ``(..., bands, H, W)`` as float32 in [0, 1] by the encoder's ``scale``; invalid
    pixels (``(..., H, W)``) are 0.

    Example:
        >>> import numpy as np
        >>> to_unit(np.full((1, 1, 2), 255, np.uint8), np.array([[False, True]]), "auto").tolist()
        [[[1.0, 0.0]]]
    """
    if invalid is not None:
        pixels = np.where(np.expand_dims(invalid, -3), np.zeros((), pixels.dtype), pixels)
    return scale_to_unit(pixels, scale)


def resize(x: Any, size: int) -> Any:
    """Resize ``(B, C, H, W)`` float chips to ``size × size`` (bilinear, antialiased).

    Takes and returns a numpy array or a torch tensor (on its device); chips already at ``size``
    are returned as they are.

    Example:
        >>> import numpy as np
        >>> resize(np.ones((1, 3, 8, 8), np.float32), 4).shape
        (1, 3, 4, 4)
    """
    if tuple(x.shape[-2:]) == (size, size):
        return x
    import torch
    import torch.nn.functional as F

    tensor = torch.from_numpy(np.ascontiguousarray(x)) if isinstance(x, np.ndarray) else x
    out = F.interpolate(tensor, size=(size, size), mode="bilinear", antialias=True)
    return out.numpy() if isinstance(x, np.ndarray) else out


def has_dataset_mask(src: Any) -> bool:
    """Whether a rasterio dataset has an alpha band or an internal (per-dataset) mask.

    Nodata-only files need no mask read: :func:`invalid_mask` applies the nodata rule itself.

    Example:
        >>> import numpy as np, rasterio
        >>> from geobind.georef import GeoBox
        >>> tif = GeoBox.from_origin(0, 1, 1, (1, 2)).write_geotiff(
        ...     getfixture("tmp_path") / "n.tif", np.zeros((3, 1, 2), np.uint8), nodata=0)
        >>> with rasterio.open(tif) as src:
        ...     has_dataset_mask(src)
        False
    """
    from rasterio.enums import MaskFlags

    return any(
        MaskFlags.per_dataset in flags or MaskFlags.alpha in flags for flags in src.mask_flag_enums
    )


def read_dataset_mask(src: Any, window: Any = None) -> np.ndarray | None:
    """GDAL's dataset mask (alpha band or internal mask; 0 = invalid) for ``window`` of an open
    rasterio dataset, or ``None`` where the file has neither.

    Pixels of the window beyond the file's edge read as 0 (invalid).

    Example:
        >>> import numpy as np, rasterio
        >>> from geobind.georef import GeoBox
        >>> rgba = np.array([[[9, 9]], [[9, 9]], [[9, 9]], [[255, 0]]], np.uint8)
        >>> tif = GeoBox.from_origin(0, 1, 1, (1, 2)).write_geotiff(
        ...     getfixture("tmp_path") / "m.tif", rgba, photometric="RGB", alpha="YES")
        >>> with rasterio.open(tif) as src:
        ...     read_dataset_mask(src).tolist()
        [[255, 0]]
    """
    if not has_dataset_mask(src):
        return None
    if window is None:
        return src.dataset_mask()
    return src.dataset_mask(window=window, boundless=True)
