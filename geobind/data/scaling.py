"""Pixel values to [0, 1]: one rule for training and inference chips."""

from __future__ import annotations

import numpy as np

from geobind.errors import InputDataError

__all__ = ["scale_divisor", "scale_to_unit"]

_REFLECTANCE_SCALE = 10_000.0  # uint16/int16 surface reflectance × 10 000 (Sentinel-2 L2A, Landsat)


def scale_divisor(dtype: np.dtype, scale: str | float = "auto") -> float:
    """What chips of ``dtype`` are divided by: ``"auto"`` gives 255 for uint8, 10 000 for 16/32-bit
    integers (reflectance × 10 000), 1 for floats; a number is the divisor itself.

    Example:
        >>> scale_divisor(np.dtype("uint16")), scale_divisor(np.dtype("uint8"), 100)
        (10000.0, 100.0)
    """
    if scale != "auto":
        return float(scale)
    dtype = np.dtype(dtype)
    if dtype == np.uint8:
        return 255.0
    if dtype in (np.uint16, np.int16, np.uint32, np.int32):
        return _REFLECTANCE_SCALE
    if np.issubdtype(dtype, np.floating):
        return 1.0
    raise InputDataError(f"cannot scale chips of dtype {dtype}; pass scale=<divisor>")


def scale_to_unit(chip: np.ndarray, scale: str | float = "auto") -> np.ndarray:
    """Pixel values to float32 in [0, 1]: one rule for training and inference chips.

    ``"auto"``: uint8 / 255; 16/32-bit integers as reflectance × 10 000; floats as they are; a
    number divides (:func:`scale_divisor`). NaN becomes 0; values are clipped to [0, 1].

    Example:
        >>> import numpy as np
        >>> scale_to_unit(np.array([0, 255], np.uint8)).tolist()
        [0.0, 1.0]
    """
    divisor = scale_divisor(chip.dtype, scale)
    out = chip.astype(np.float32) / np.float32(divisor)
    if np.issubdtype(chip.dtype, np.integer):  # no NaN or infinity; uint8 / 255 is in [0, 1]
        # ~0.1 of the ~0.75 ms a training chip costs, and loading runs inline with the steps
        return out if chip.dtype == np.uint8 and divisor == 255.0 else np.clip(out, 0, 1, out=out)
    return np.clip(np.nan_to_num(out, nan=0.0, posinf=1.0, neginf=0.0), 0.0, 1.0)
