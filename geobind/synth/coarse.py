"""A coarse multispectral twin of each scene: a second sensor over the same truth.

Sentinel-2-like: 10 ground metres per pixel (the scene's CRS; in Web Mercator that is 10 ground
metres scaled by the projection, :class:`geobind.georef.GeoBox`), four bands red, green, blue and
near infrared, uint8 with nodata 0. Each coarse pixel is the area average of the fine scene's
pixels under it (rasterio's ``average`` resampling); a scene without a NIR band takes NIR from its
land-cover truth (each class's typical reflectance, averaged the same way); then the twin gets
its own sensor noise (Gaussian, seeded) and gain, so it is another sensor, not a copy.

Example:
    >>> from geobind.synth import generate_world
    >>> world = generate_world(getfixture("tmp_path") / "w", "tiny")
    >>> from geobind.georef import GeoBox
    >>> box = GeoBox.from_path(world.coarse_scenes["beta"])
    >>> round(box.gsd, 3), box.shape  # beta: 512 x 448 px of 0.42 ground m
    (10.0, (18, 21))
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["COARSE_GSD", "write_coarse_twin"]

#: Ground metres per pixel of the coarse sensor.
COARSE_GSD = 10.0
#: Near-infrared reflectance by class (water, beach, forest, farmland, grassland, residential,
#: industrial, highway): vegetation bright, water dark, as a NIR band shows them.
_CLASS_NIR = np.array([0.04, 0.35, 0.55, 0.5, 0.45, 0.25, 0.2, 0.15], np.float32)
_GAIN = np.array([1.06, 0.97, 0.92, 1.0], np.float32)  # the twin's own radiometry
_NOISE = 3.0  # sensor noise, DN (1 sigma)


def write_coarse_twin(
    scene: Path, landcover: Path, out: Path, *, seed: int, gsd: float = COARSE_GSD
) -> dict[str, Any]:
    """Write the coarse twin of ``scene`` (with its ``landcover`` truth) to ``out``.

    Returns the twin's record for ``world.json``: path (relative names are the caller's),
    ground resolution, bands, shape and transform.
    """
    import rasterio
    from affine import Affine
    from rasterio.warp import Resampling, reproject

    from geobind.georef import GeoBox

    with rasterio.open(scene) as src:
        fine = GeoBox.from_rasterio(src)
        pixels = src.read().astype(np.float32)
        names = list(src.descriptions)
    with rasterio.open(landcover) as src:
        classes = src.read(1)
    kx, ky = fine.units_per_metre()
    res = (gsd * kx, gsd * ky)
    left, bottom, right, top = fine.bounds
    width, height = int((right - left) // res[0]), int((top - bottom) // res[1])
    coarse = GeoBox((height, width), Affine(res[0], 0, left, 0, -res[1], top), fine.crs)
    valid = (pixels > 0).all(axis=0).astype(np.float32)
    if "nir" not in names:  # NIR from the truth: each class's typical reflectance, in DN
        nir = np.where(classes > 0, _CLASS_NIR[np.clip(classes, 1, 8) - 1] * 255, 0)
        pixels = np.concatenate([pixels[:3], nir[None].astype(np.float32)])
    stack = np.concatenate([pixels[:4] * valid, valid[None]])  # averaged with their coverage

    out_stack = np.zeros((5, height, width), np.float32)
    for b in range(5):
        reproject(
            stack[b],
            out_stack[b],
            src_transform=fine.transform,
            src_crs=fine.crs,
            dst_transform=coarse.transform,
            dst_crs=fine.crs,
            resampling=Resampling.average,
        )
    cover = out_stack[4]
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = out_stack[:4] / cover
    rng = np.random.default_rng([seed, 10])
    noisy = mean * _GAIN[:, None, None] + rng.normal(0, _NOISE, mean.shape).astype(np.float32)
    twin = np.clip(np.rint(np.nan_to_num(noisy)), 1, 255).astype(np.uint8)
    twin[:, ~(cover > 0.5)] = 0  # mostly nodata under the coarse pixel: nodata
    path = coarse.write_geotiff(out, twin, nodata=0)
    with rasterio.open(path, "r+") as dst:
        dst.descriptions = ("red", "green", "blue", "nir")
    return {
        "gsd_m": gsd,
        "bands": ["red", "green", "blue", "nir"],
        "shape": [height, width],
        "transform": list(coarse.transform)[:6],
    }
