"""Georeferencing: one truth for a raster's grid, its ground resolution and its chips.

:class:`GeoBox` (modelled on odc-geo's ``GeoBox``) is a raster's ``shape``, affine ``transform``
and ``crs``. Training, inference, stores and plots all ask it the same questions:

- **Ground resolution** (:meth:`GeoBox.ground_resolution`, :attr:`GeoBox.gsd`): metres on the
  ground per pixel, by one rule. A projected CRS's scale factors at the location come from PROJ
  (:meth:`pyproj.Proj.get_factors`): a UTM metre is 0.9996–1.001 ground metres, a Web-Mercator
  "metre" at 45.5° N is 0.70 (``cos φ``). A geographic CRS uses the ellipsoid's radii of curvature
  (metres per degree east ``N cos φ · π/180``, north ``M · π/180``).
- **Chips**: a model sees ``chip_size`` pixels at ``gsd`` metres; on a raster of another ground
  resolution the chip keeps the model's footprint (:meth:`GeoBox.chip_pixels`), and a chip
  centred on a point starts at the pixel :func:`chip_origins` gives.
- **The chip-centre grid** (:class:`ChipGrid`): cell ``(i, j)`` is the chip whose upper-left
  pixel is ``(i·stride, j·stride)``; the grid's transform is the raster's, shifted by
  ``(chip − stride) / 2`` pixels and scaled by ``stride``, so each cell's centre is its chip's.
- **Cell polygons** (:func:`cell_polygons`) and **vectors in the raster's CRS** (:func:`to_crs`,
  with a :class:`~geobind.errors.CRSMismatchWarning` when it reprojects).

This module sits at the bottom layer: it imports numpy, affine and pyproj (and shapely or
geopandas where a method needs them), never torch.

Example:
    >>> from affine import Affine
    >>> box = GeoBox((1000, 1000), Affine(0.6, 0, 0, 0, -0.6, 5_700_000), "EPSG:3857")
    >>> round(box.gsd, 2)  # 0.6 Web-Mercator units at ~45.5° N are 0.42 ground metres
    0.42
    >>> box.chip_pixels(32, 1.0)  # a 32 px chip at 1 m covers 76 px of this raster
    76
"""

from __future__ import annotations

import math
import os
import sys
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from affine import Affine

from geobind.errors import CRSError, CRSMismatchWarning, InputDataError

__all__ = [
    "ChipGrid",
    "GeoBox",
    "cell_polygons",
    "chip_origins",
    "crs_name",
    "footprint_pixels",
    "to_crs",
]

#: Ground resolutions this close (relative) read as the same: a UTM scene's scale factor stays
#: within 0.9996..1.001, which would otherwise resample every 1 m UTM scene for a 1 m model.
SAME_GSD = 2e-3
# a point this close (in pixels) to half-way between two chip placements takes the larger offset,
# so points written at pixel centres and reprojected (float noise ~1e-9 px) land the same way
_TIE = 1e-6
_PACKAGE = str(Path(__file__).resolve().parent)


def crs_name(crs: Any) -> str:
    """``EPSG:nnnn`` where the CRS has a code, else its name.

    Example:
        >>> crs_name("EPSG:32633")
        'EPSG:32633'
    """
    from pyproj import CRS

    crs = CRS.from_user_input(crs)
    epsg = crs.to_epsg()
    return f"EPSG:{epsg}" if epsg else crs.name


def _stacklevel() -> int:
    """``stacklevel`` that points a warning at the first frame outside geobind (the caller's)."""
    frame, level = sys._getframe(1), 1
    while frame is not None and frame.f_code.co_filename.startswith(_PACKAGE):
        frame, level = frame.f_back, level + 1
    return level


def to_crs(data: Any, crs: Any, *, what: str = "the raster's CRS") -> Any:
    """A GeoDataFrame or GeoSeries in ``crs``: as it is, or reprojected with a warning.

    Raises:
        CRSError: when ``data`` or ``crs`` is missing a CRS.

    Example:
        >>> import geopandas as gpd, shapely, warnings
        >>> pts = gpd.GeoSeries([shapely.Point(15, 41.9)], crs="EPSG:4326")
        >>> with warnings.catch_warnings(record=True) as caught:
        ...     warnings.simplefilter("always")
        ...     utm = to_crs(pts, "EPSG:32633")
        >>> round(utm.x.item()), caught[0].category.__name__
        (500000, 'CRSMismatchWarning')
    """
    from pyproj import CRS

    if crs is None:
        raise CRSError(
            "the raster has no CRS; write one with raster.rio.write_crs('EPSG:...') first"
        )
    if getattr(data, "crs", None) is None:
        raise CRSError(
            "the geometries have no CRS; set the CRS their coordinates are in, e.g. "
            "gdf.set_crs('EPSG:4326')"
        )
    target = CRS.from_user_input(crs)
    if data.crs.equals(target, ignore_axis_order=True):
        return data
    warnings.warn(
        f"geometries in {crs_name(data.crs)} were reprojected to {what} {crs_name(target)}",
        CRSMismatchWarning,
        stacklevel=_stacklevel(),
    )
    return data.to_crs(target)


def chip_origins(x: Any, y: Any, transform: Affine, chip: int) -> tuple[np.ndarray, np.ndarray]:
    """Upper-left pixel ``(rows, cols)`` of the ``chip × chip`` chips centred on points ``x, y``.

    The centring rule shared by training and inference: the chip whose centre is nearest the
    point. With an even ``chip`` the point lies within half a pixel of the shared corner of the 4
    central pixels; with an odd one it lies in the central pixel. A point exactly half-way takes
    the larger row and column.

    Example:
        >>> from affine import Affine
        >>> t = Affine(2, 0, 100, 0, -2, 500)  # 2 m pixels
        >>> [v.tolist() for v in chip_origins([132.0], [468.0], t, 8)]  # pixel (16, 16)
        [[12], [12]]
    """
    col, row = ~transform @ (np.asarray(x, np.float64), np.asarray(y, np.float64))
    half = chip / 2
    return (
        np.floor(np.asarray(row) - half + 0.5 + _TIE).astype(np.int64),
        np.floor(np.asarray(col) - half + 0.5 + _TIE).astype(np.int64),
    )


def footprint_pixels(chip_size: int, model_gsd: float | None, gsd: float | None) -> int:
    """Pixels of an image at ``gsd`` ground metres that cover a model's chip footprint
    (``chip_size`` pixels at ``model_gsd`` metres): the rule GeoTIFF chips and pair datasets'
    overhead images share.

    Within :data:`SAME_GSD` of the model's resolution (or with either unknown) the chip is
    ``chip_size`` pixels; otherwise ``round(chip_size · model_gsd / gsd)``.

    Raises:
        InputDataError: ``gsd`` is not a positive number, or the chip would cover less than 2
            pixels.

    Example:
        >>> footprint_pixels(64, 1.0, 0.5), footprint_pixels(64, 1.0, 1.0008), footprint_pixels(
        ...     64, None, 30.0)
        (128, 64, 64)
    """
    if not model_gsd or gsd is None:
        return int(chip_size)
    if not (gsd > 0 and math.isfinite(gsd)):
        raise InputDataError(f"gsd must be positive metres per pixel; got {gsd!r}")
    if abs(gsd / model_gsd - 1) <= SAME_GSD:
        return int(chip_size)
    chip = round(chip_size * model_gsd / gsd)
    if chip < 2:
        raise InputDataError(
            f"a {chip_size}-pixel chip at the model's {model_gsd:g} m covers less than 2 "
            f"pixels of this {gsd:g} m image; pass chip_size=<pixels> to choose the chip size "
            "in image pixels"
        )
    return chip


def cell_polygons(transform: Affine, rows: Any, cols: Any) -> np.ndarray:
    """Shapely boxes of cells ``(rows, cols)`` of a grid with ``transform`` (any sign of scale).

    Example:
        >>> from affine import Affine
        >>> [p.bounds for p in cell_polygons(Affine(10, 0, 0, 0, -10, 40), [0], [1])]
        [(10.0, 30.0, 20.0, 40.0)]
    """
    import shapely

    rows, cols = np.asarray(rows), np.asarray(cols)
    x0, y0 = transform * (cols, rows)
    x1, y1 = transform * (cols + 1, rows + 1)
    return shapely.box(
        np.minimum(x0, x1), np.minimum(y0, y1), np.maximum(x0, x1), np.maximum(y0, y1)
    )


def _north_up(transform: Affine) -> None:
    if transform.b != 0 or transform.d != 0:
        raise InputDataError(
            "the raster's transform is rotated or sheared; warp it to a north-up grid first "
            "(e.g. raster.rio.reproject(raster.rio.crs) or gdalwarp in.tif out.tif)"
        )


@dataclass(frozen=True)
class ChipGrid:
    """Chip placement over a ``height × width`` raster with affine ``raster_transform``.

    Example:
        >>> from affine import Affine
        >>> g = ChipGrid(100, 70, 32, 16, Affine(2, 0, 500, 0, -2, 900))
        >>> g.shape
        (5, 3)
        >>> g.transform  # the raster's, shifted by (32 - 16) / 2 pixels, scaled by 16
        Affine(32.0, 0.0, 516.0,
               0.0, -32.0, 884.0)
        >>> g.window(slice(1, 3), slice(0, 3))  # pixel rows and columns that cells need
        (slice(16, 64, None), slice(0, 64, None))
    """

    height: int
    width: int
    chip: int
    stride: int
    raster_transform: Affine = Affine(1, 0, 0, 0, 1, 0)  # noqa: RUF009 - immutable

    def __post_init__(self) -> None:
        if self.chip < 1 or self.stride < 1:
            raise InputDataError(f"chip ({self.chip}) and stride ({self.stride}) must be ≥ 1 pixel")
        if self.height < self.chip or self.width < self.chip:
            raise InputDataError(
                f"the raster ({self.height} × {self.width} pixels) is smaller than one chip "
                f"({self.chip} × {self.chip} pixels); use a larger raster or pass a smaller "
                "chip_size"
            )
        _north_up(self.raster_transform)

    @property
    def shape(self) -> tuple[int, int]:
        """``(rows, columns)`` of the grid."""
        return (
            (self.height - self.chip) // self.stride + 1,
            (self.width - self.chip) // self.stride + 1,
        )

    @property
    def offset(self) -> float:
        """Pixels from a cell's upper-left corner (grid) to its chip's: ``(chip − stride) / 2``."""
        return (self.chip - self.stride) / 2

    @property
    def transform(self) -> Affine:
        """The grid's transform (the raster's, shifted by :attr:`offset` and scaled by stride)."""
        return (
            self.raster_transform
            * Affine.translation(self.offset, self.offset)
            * Affine.scale(self.stride)
        )

    def coords(self) -> tuple[np.ndarray, np.ndarray]:
        """``(y, x)`` coordinates of the cell centres (= chip centres), in the raster's CRS."""
        t = self.transform
        ny, nx = self.shape
        return t.f + (np.arange(ny) + 0.5) * t.e, t.c + (np.arange(nx) + 0.5) * t.a

    def window(self, rows: slice, cols: slice) -> tuple[slice, slice]:
        """Pixel rows and columns read by the chips of cells ``rows × cols`` (slices of cells)."""
        (r0, r1, _), (c0, c1, _) = rows.indices(self.shape[0]), cols.indices(self.shape[1])
        s, c = self.stride, self.chip
        return slice(r0 * s, (r1 - 1) * s + c), slice(c0 * s, (c1 - 1) * s + c)

    def tiles(self, cells: int) -> Iterator[tuple[slice, slice]]:
        """Cell blocks of at most ``cells × cells``, row-major, covering the grid once.

        Example:
            >>> g = ChipGrid(64, 64, chip=8, stride=8)
            >>> [(r.start, r.stop, c.start, c.stop) for r, c in g.tiles(5)][:3]
            [(0, 5, 0, 5), (0, 5, 5, 8), (5, 8, 0, 5)]
        """
        ny, nx = self.shape
        for r in range(0, ny, cells):
            for c in range(0, nx, cells):
                yield slice(r, min(r + cells, ny)), slice(c, min(c + cells, nx))

    def cell_polygons(self, rows: Any, cols: Any) -> np.ndarray:
        """Boxes of cells ``(rows, cols)``: ``stride × stride`` pixels around each chip centre.

        Example:
            >>> ChipGrid(8, 8, 4, 2).cell_polygons([0], [1])[0].bounds  # chip 1 centred at x = 4
            (3.0, 1.0, 5.0, 3.0)
        """
        return cell_polygons(self.transform, rows, cols)


def _metres_per_unit(crs: Any) -> float:
    """Metres per CRS axis unit (PROJ's scale factors ignore the unit, e.g. US survey feet)."""
    return float(crs.axis_info[0].unit_conversion_factor)


@dataclass(frozen=True)
class GeoBox:
    """A raster's georeferencing: ``shape`` ``(height, width)``, ``transform`` and ``crs``.

    Args:
        shape: ``(height, width)`` in pixels.
        transform: the affine transform from pixel ``(col, row)`` to CRS ``(x, y)``.
        crs: anything pyproj reads (``"EPSG:32633"``, a ``CRS``, rasterio's ``CRS``) or ``None``.

    Example:
        >>> from affine import Affine
        >>> box = GeoBox((80, 60), Affine(10, 0, 500_000, 0, -10, 4_600_000), "EPSG:32633")
        >>> box.bounds
        (500000.0, 4599200.0, 500600.0, 4600000.0)
        >>> round(box.gsd, 4)  # 10 UTM metres, 15° E: UTM's scale factor near its meridian
        10.004
    """

    shape: tuple[int, int]
    transform: Affine
    crs: Any = None

    def __post_init__(self) -> None:
        from pyproj import CRS

        object.__setattr__(self, "shape", (int(self.shape[0]), int(self.shape[1])))
        if self.crs is not None and not isinstance(self.crs, CRS):
            object.__setattr__(self, "crs", CRS.from_user_input(self.crs))

    # -- constructors -------------------------------------------------------------------------
    @classmethod
    def from_rasterio(cls, src: Any) -> GeoBox:
        """The GeoBox of an open rasterio dataset.

        Example:
            >>> import numpy as np, rasterio
            >>> box = GeoBox((4, 6), Affine(1, 0, 0, 0, -1, 4), "EPSG:32633")
            >>> with rasterio.open(box.write_geotiff(getfixture("tmp_path") / "g.tif",
            ...                                      np.zeros((1, 4, 6), np.uint8))) as src:
            ...     GeoBox.from_rasterio(src).shape
            (4, 6)
        """
        return cls((src.height, src.width), src.transform, src.crs)

    @classmethod
    def from_dataarray(cls, raster: Any) -> GeoBox:
        """The GeoBox of a DataArray georeferenced for rioxarray (``.rio``).

        Example:
            >>> import numpy as np, xarray as xr, rioxarray  # noqa: F401
            >>> r = xr.DataArray(np.zeros((2, 3)), dims=("y", "x"),
            ...                  coords={"y": [1.5, 0.5], "x": [0.5, 1.5, 2.5]})
            >>> GeoBox.from_dataarray(r.rio.write_crs(32633)).transform.a
            1.0
        """
        import rioxarray  # noqa: F401 - registers .rio

        rio = raster.rio
        return cls((raster.sizes[rio.y_dim], raster.sizes[rio.x_dim]), rio.transform(), rio.crs)

    @classmethod
    def from_origin(
        cls, x: float, y: float, res: float, shape: tuple[int, int], crs: Any = None
    ) -> GeoBox:
        """A north-up grid of square ``res`` pixels whose upper-left corner is ``(x, y)``.

        Example:
            >>> GeoBox.from_origin(500_000, 4_600_000, 10, (3, 4), "EPSG:32633").bounds
            (500000.0, 4599970.0, 500040.0, 4600000.0)
        """
        return cls(shape, Affine(res, 0, x, 0, -res, y), crs)

    @classmethod
    def from_path(cls, path: str | os.PathLike[str]) -> GeoBox:
        """The GeoBox of a raster file (anything rasterio opens).

        Example:
            >>> import numpy as np
            >>> box = GeoBox.from_origin(0, 4, 1, (4, 6), "EPSG:32633")
            >>> GeoBox.from_path(box.write_geotiff(getfixture("tmp_path") / "p.tif",
            ...                                    np.zeros((1, 4, 6), np.uint8))).shape
            (4, 6)
        """
        import rasterio

        with rasterio.open(path) as src:
            return cls.from_rasterio(src)

    # -- geometry -----------------------------------------------------------------------------
    @property
    def height(self) -> int:
        """Rows of pixels."""
        return self.shape[0]

    @property
    def width(self) -> int:
        """Columns of pixels."""
        return self.shape[1]

    @property
    def resolution(self) -> tuple[float, float]:
        """Pixel size ``(x, y)`` in CRS units (both positive)."""
        return abs(self.transform.a), abs(self.transform.e)

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """``(left, bottom, right, top)`` in the CRS."""
        x0, y0 = self.transform * (0, 0)
        x1, y1 = self.transform * (self.width, self.height)
        return (
            float(min(x0, x1)),
            float(min(y0, y1)),
            float(max(x0, x1)),
            float(max(y0, y1)),
        )

    @property
    def center(self) -> tuple[float, float]:
        """``(x, y)`` of the raster's centre, in the CRS."""
        x, y = self.transform * (self.width / 2, self.height / 2)
        return float(x), float(y)

    def units_per_metre(self, x: float | None = None, y: float | None = None):
        """CRS units per ground metre ``(east, north)`` at ``(x, y)`` (default: the centre).

        ``None`` without a CRS.

        Raises:
            CRSError: PROJ gives no finite scale there (e.g. outside the projection's domain).

        Example:
            >>> from affine import Affine
            >>> box = GeoBox((10, 10), Affine(1, 0, 0, 0, -1, 5_700_000), "EPSG:3857")
            >>> [round(k, 3) for k in box.units_per_metre()]  # 1 / cos(45.5°)
            [1.427, 1.427]
        """
        if self.crs is None:
            return None
        from pyproj import Proj, Transformer

        if x is None or y is None:
            x, y = self.center
        crs = self.crs
        lon, lat = Transformer.from_crs(crs, crs.geodetic_crs, always_xy=True).transform(x, y)
        if crs.is_projected:
            factors = Proj(crs).get_factors(lon, lat)
            per_unit = _metres_per_unit(crs)
            kx, ky = factors.parallel_scale / per_unit, factors.meridional_scale / per_unit
        else:  # degrees: metres per unit from the ellipsoid's radii of curvature at lat
            ell = crs.ellipsoid
            a, b = ell.semi_major_metre, ell.semi_minor_metre
            e2 = 1 - (b / a) ** 2
            w = math.sqrt(1 - e2 * math.sin(math.radians(lat)) ** 2)
            radians = _metres_per_unit(crs)  # an angular axis: radians per unit
            kx = 1 / (a / w * math.cos(math.radians(lat)) * radians)
            ky = 1 / (a * (1 - e2) / w**3 * radians)
        if not (math.isfinite(kx) and math.isfinite(ky) and kx > 0 and ky > 0):
            raise CRSError(
                f"cannot compute the scale of {crs_name(crs)} at ({lon:.5f}, {lat:.5f}); pass "
                "gsd=<metres per pixel> or chip_size=<pixels>"
            )
        return float(kx), float(ky)

    def ground_resolution(self) -> tuple[float, float] | None:
        """Ground metres per pixel ``(east, north)`` at the centre; ``None`` without a CRS.

        Example:
            >>> from affine import Affine
            >>> box = GeoBox((10, 10), Affine(0.6, 0, 0, 0, -0.6, 5_700_000), "EPSG:3857")
            >>> [round(g, 3) for g in box.ground_resolution()]
            [0.421, 0.421]
        """
        k = self.units_per_metre()
        if k is None:
            return None
        rx, ry = self.resolution
        return rx / k[0], ry / k[1]

    @property
    def gsd(self) -> float | None:
        """Ground sample distance: metres per pixel at the centre (the geometric mean of east
        and north), ``None`` without a CRS."""
        g = self.ground_resolution()
        return None if g is None else math.sqrt(g[0] * g[1])

    def chip_pixels(self, chip_size: int, model_gsd: float | None, gsd: float | None = None):
        """Chip side in this raster's pixels that keeps a model's footprint.

        A model sees ``chip_size`` pixels at ``model_gsd`` metres; this raster's ground
        resolution is ``gsd`` (default :attr:`gsd`). Within :data:`SAME_GSD` of the model's the
        chip is ``chip_size`` (no resampling); otherwise ``round(chip_size · model_gsd / gsd)``,
        resized to the model's input by the chip pipeline.

        Raises:
            CRSError: the model has a GSD, and this raster has no CRS (pass ``gsd``) or a
                geographic one (chips would not be square on the ground).
            InputDataError: the chip would cover less than 2 pixels.

        Example:
            >>> from affine import Affine
            >>> box = GeoBox((100, 100), Affine(0.5, 0, 500_000, 0, -0.5, 0), "EPSG:32633")
            >>> box.chip_pixels(64, 1.0), box.chip_pixels(64, None), box.chip_pixels(64, 1.0, 2)
            (128, 64, 32)
        """
        if not model_gsd:
            return int(chip_size)
        if gsd is None:
            if self.crs is None or not self.crs.is_projected:
                what = (
                    "has no CRS, so its ground sample distance is unknown"
                    if self.crs is None
                    else f"is in a geographic CRS ({crs_name(self.crs)}), so its pixels are not "
                    "square on the ground"
                )
                raise CRSError(
                    f"the raster {what}; reproject it to a projected CRS "
                    "(raster.rio.reproject(...)), or pass gsd=<metres per pixel> or "
                    "chip_size=<pixels>"
                )
            gsd = self.gsd
        return footprint_pixels(chip_size, model_gsd, gsd)

    def chip_grid(self, chip: int, stride: int | None = None) -> ChipGrid:
        """The grid of chip centres for ``chip`` pixels at ``stride`` (default half a chip).

        Example:
            >>> from affine import Affine
            >>> GeoBox((100, 70), Affine(2, 0, 500, 0, -2, 900)).chip_grid(32, 16).shape
            (5, 3)
        """
        stride = max(1, chip // 2) if stride is None else int(stride)
        return ChipGrid(self.height, self.width, int(chip), stride, self.transform)

    def chip_origins(self, x: Any, y: Any, chip: int) -> tuple[np.ndarray, np.ndarray]:
        """Upper-left pixels of the chips centred on ``x, y`` (see :func:`chip_origins`)."""
        return chip_origins(x, y, self.transform, chip)

    def chip_bounds(self, rows: Any, cols: Any, chip: int) -> np.ndarray:
        """``(N, 4)`` bounds ``(xmin, ymin, xmax, ymax)`` of chips with upper-left pixels
        ``rows, cols``.

        Example:
            >>> from affine import Affine
            >>> GeoBox((8, 8), Affine(1, 0, 0, 0, -1, 8)).chip_bounds([3], [3], 3).tolist()
            [[3.0, 2.0, 6.0, 5.0]]
        """
        rows, cols = np.asarray(rows, np.float64), np.asarray(cols, np.float64)
        x0, y0 = self.transform * (cols, rows)
        x1, y1 = self.transform * (cols + chip, rows + chip)
        return np.column_stack(
            [np.minimum(x0, x1), np.minimum(y0, y1), np.maximum(x0, x1), np.maximum(y0, y1)]
        )

    def inside(self, rows: Any, cols: Any, chip: int) -> np.ndarray:
        """Whether each chip (upper-left pixels ``rows, cols``) lies wholly on the raster.

        Example:
            >>> GeoBox.from_origin(0, 8, 1, (8, 8)).inside([0, 5, -1], [0, 5, 2], 4).tolist()
            [True, False, False]
        """
        rows, cols = np.asarray(rows), np.asarray(cols)
        return (
            (rows >= 0) & (cols >= 0) & (rows + chip <= self.height) & (cols + chip <= self.width)
        )

    def to_crs(self, data: Any) -> Any:
        """Vectors (GeoDataFrame / GeoSeries) in this raster's CRS (see :func:`to_crs`).

        Example:
            >>> import geopandas as gpd, shapely
            >>> box = GeoBox.from_origin(0, 8, 1, (8, 8), "EPSG:32633")
            >>> box.to_crs(gpd.GeoSeries([shapely.Point(1, 2)], crs=32633)).crs.to_epsg()
            32633
        """
        return to_crs(data, self.crs)

    def write_geotiff(
        self, path: str | os.PathLike[str], pixels: np.ndarray, **profile: Any
    ) -> Path:
        """Write ``(bands, height, width)`` pixels on this grid as a GeoTIFF; returns the path.

        ``profile`` adds to or overrides rasterio's creation options (``nodata=0``,
        ``compress="deflate"``, ``tiled=True`` …).

        Example:
            >>> import numpy as np
            >>> box = GeoBox((4, 6), Affine(1, 0, 0, 0, -1, 4), "EPSG:32633")
            >>> tif = box.write_geotiff(getfixture("tmp_path") / "g.tif", np.zeros((1, 4, 6), "u1"))
            >>> GeoBox.from_path(tif) == box
            True
        """
        import rasterio

        pixels = np.asarray(pixels)
        if pixels.ndim != 3 or pixels.shape[1:] != self.shape:
            raise InputDataError(
                f"pixels must be (bands, {self.height}, {self.width}); got shape {pixels.shape}"
            )
        options = {
            "driver": "GTiff",
            "count": pixels.shape[0],
            "height": self.height,
            "width": self.width,
            "dtype": pixels.dtype.name,
            "crs": self.crs,
            "transform": self.transform,
            **profile,
        }
        with rasterio.open(path, "w", **options) as dst:
            dst.write(pixels)
        return Path(path)
