"""Vector geometries → embeddings: chips centred on points, area-weighted means over polygons.

The GeoPandas layer over the raster grid (:mod:`geobind.inference.raster`), point chips
(:mod:`geobind.inference.points`) and zonal weights (:mod:`geobind.inference.zonal`). One rule per
kind of geometry:

- **Points** (and the parts of a MultiPoint): with a raster, the chip centred on the point
  (:func:`geobind.georef.chip_origins`, the rule training uses), so a point on a grid cell's
  centre reads exactly that cell's chip. Pixels beyond the raster's edge read as nodata; a chip
  with more than ``nodata_fraction`` nodata is not embedded (NaN), and a point off the raster is
  NaN. With only an embedding grid, the cell that contains the point.
- **Polygons** (and lines): the mean of the grid cells they cover, weighted by the covered share
  of each cell (:func:`~geobind.inference.zonal.cell_weights`); only the cells a geometry
  touches are embedded (with a grid: read).
- **Collections** follow their highest dimension; empty or missing geometries give NaN rows, and
  invalid ones are repaired with :func:`shapely.make_valid` first.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from geobind.errors import InputDataError
from geobind.georef import chip_origins, to_crs
from geobind.inference.points import read_chips
from geobind.inference.zonal import (
    _flat_weights,
    _geometries,
    _point_parts,
    _split,
    cell_weights,
    compact_weights,
    grid_cells,
    grid_transform,
    zonal_mean,
)

__all__ = [
    "cell_weights",
    "chip_origins",
    "embed_geometries",
    "read_chips",
    "to_crs",
    "zonal_mean",
]

_GROUP = 1024  # chips read and embedded at a time (bounds memory)
_TILE = 1024  # chips are grouped by the 1024-pixel block they start in (shared reads)
# names other modules used before the split
_compact, _grid_cells, _grid_transform = compact_weights, grid_cells, grid_transform


def _open(raster: Any) -> Any:
    from geobind.inference.raster import open_raster

    if isinstance(raster, str | os.PathLike):
        return open_raster(raster)
    if not hasattr(raster, "dims") or not hasattr(raster, "rio"):
        raise InputDataError(
            f"raster must be an xarray DataArray or a GeoTIFF path; got {type(raster).__name__}"
        )
    return raster


def embed_geometries(
    geoms: Any,
    raster: Any = None,
    *,
    grid: Any = None,
    model: Any = None,
    chip_size: int | None = None,
    stride: int | None = None,
    batch_size: int = 64,
    nodata_fraction: float = 0.5,
    bands: Sequence[int] | None = None,
    gsd: float | None = None,
) -> np.ndarray:
    """Embed a GeoSeries (or GeoDataFrame) of geometries: ``(n, embed_dim)`` float32, NaN rows.

    Pass a ``raster`` (a DataArray read by rioxarray, or a GeoTIFF path) to embed from pixels
    with a model (``model=`` or the :func:`geobind.use_model` default), or an embedding ``grid``
    (``DataArray(embedding, y, x)``) to read cells already embedded. Points take the chip centred
    on them (with a grid: the cell that holds them); polygons and lines the weighted mean of
    the grid cells they cover; see the module docstring. ``chip_size``, ``stride``, ``bands``,
    ``gsd`` and ``nodata_fraction`` mean what they mean for
    :func:`~geobind.inference.raster.embed_raster`; with a raster, only the chips that some
    geometry needs are read and embedded. Geometries in another CRS are reprojected to the
    raster's with a :class:`~geobind.errors.CRSMismatchWarning`.

    Raises:
        CRSError: geometries or raster without a CRS.
        InputDataError: neither or both of ``raster`` and ``grid``; unusable raster.

    Example:
        >>> import geobind, geopandas as gpd, numpy as np, shapely, xarray as xr, rioxarray
        >>> pixels = np.random.default_rng(0).integers(1, 255, (3, 96, 96), dtype=np.uint8)
        >>> raster = xr.DataArray(pixels, dims=("band", "y", "x"), coords={
        ...     "y": 4_600_095.5 - np.arange(96), "x": 500_000.5 + np.arange(96)})
        >>> raster = raster.rio.write_crs(32633)
        >>> geoms = gpd.GeoSeries([shapely.Point(500_040, 4_600_050),    # a 32-px chip
        ...                        shapely.box(500_020, 4_600_020, 500_070, 4_600_070),  # cells
        ...                        shapely.Point(0, 0)], crs=32633)     # off the raster
        >>> out = embed_geometries(geoms, raster, model=geobind.load("tiny"))
        >>> out.shape, np.isnan(out).all(axis=1).tolist()
        ((3, 64), [False, False, True])
    """
    from geobind.inference.context import resolve_model
    from geobind.inference.raster import EMBEDDING, is_grid, plan_grid

    if (raster is None) == (grid is None):
        raise InputDataError(
            "pass either raster= (pixels to embed) or grid= (an embedding grid), not "
            f"{'both' if raster is not None else 'neither'}"
        )
    if raster is not None:
        raster = _open(raster)
        if is_grid(raster):
            grid, raster = raster, None
    if grid is not None:
        if isinstance(grid, str | os.PathLike):
            raise InputDataError(
                f"grid= takes a DataArray, not a path ({grid}); open a store with "
                "geobind.inference.store.open_store(path) or xr.open_zarr(path)['embedding']"
            )
        grid = _open(grid)
        if not is_grid(grid):
            raise InputDataError(
                f"grid must be an embedding grid with an {EMBEDDING!r} dimension (from "
                f"raster.geobind.embed() or xr.open_zarr(store)[{EMBEDDING!r}]); got dims "
                f"{grid.dims}"
            )
        dim = grid.sizes[EMBEDDING]
        crs = grid.rio.crs
    else:
        if not 0 <= nodata_fraction <= 1:
            raise InputDataError(f"nodata_fraction must be in [0, 1]; got {nodata_fraction}")
        model = resolve_model(model)
        dim = model.embed_dim
        lay, cells = plan_grid(raster, model, chip_size=chip_size, stride=stride, gsd=gsd)
        crs = lay.crs
    n = len(geoms)
    if n == 0:
        return np.empty((0, dim), np.float32)
    geoms = to_crs(getattr(geoms, "geometry", geoms), crs)
    values = _geometries(geoms)

    if grid is not None:
        owner, cell, weight = _flat_weights(
            values, grid_transform(grid), (grid.sizes[grid.rio.y_dim], grid.sizes[grid.rio.x_dim])
        )
        used, weights = compact_weights(n, owner, cell, weight)
        return zonal_mean(grid_cells(grid, used), weights)

    import shapely

    dims = shapely.get_dimensions(values)
    dims[shapely.is_empty(values) | shapely.is_missing(values)] = -1
    # areal geometries → grid cells; chips of cell (i, j) start at pixel (i·stride, j·stride)
    owner, cell, weight = _flat_weights(
        np.where(dims >= 1, values, None), cells.transform, cells.shape
    )
    used, pos = np.unique(cell, return_inverse=True)
    # points → the chip centred on each part; off-raster parts are dropped (NaN)
    pts = np.flatnonzero(dims == 0)
    parts, part_owner = _point_parts(values[pts])
    xy = shapely.get_coordinates(parts)
    px, py = ~lay.transform @ (xy[:, 0], xy[:, 1])
    on = (px >= 0) & (px < cells.width) & (py >= 0) & (py < cells.height)
    prow, pcol = chip_origins(xy[on, 0], xy[on, 1], lay.transform, cells.chip)
    # one list of chips: the grid cells some geometry covers, then one per point (never shared)
    origins = np.concatenate(
        [np.stack(np.divmod(used, cells.shape[1]), 1) * cells.stride, np.stack([prow, pcol], 1)]
    ).astype(np.int64)
    n_pts = prow.size
    chip_owner = np.concatenate([owner, pts[part_owner[on]]])
    chip_unit = np.concatenate([pos, used.size + np.arange(n_pts)]).astype(np.int64)
    chip_weight = np.concatenate([weight, np.ones(n_pts)])
    vectors = np.full((origins.shape[0], dim), np.nan, np.float32)
    sat = model["sat"]
    bands = list(bands or sat.bands)
    # groups of nearby chips share the raster blocks they read
    near = np.lexsort((origins[:, 1], origins[:, 0], *(origins // _TILE).T[::-1]))
    for i in range(0, near.size, _GROUP):
        o = near[i : i + _GROUP]
        pixels, invalid = read_chips(raster, *origins[o].T, cells.chip, bands=bands)
        vectors[o] = sat.embed_pixels(
            pixels, ~invalid, nodata_fraction=nodata_fraction, batch_size=batch_size
        )
    return zonal_mean(vectors.T, _split(n, chip_owner, chip_unit, chip_weight))
