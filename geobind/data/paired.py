"""Chips centred on points: GeoTIFF scenes read through torchgeo, one chip per manifest point.

Training pairs a satellite chip centred on a location with what was recorded there (a photo, a
clip). :class:`PairedChips` is the chip half: a ``torch.utils.data.Dataset`` over the points that
fall inside one of several GeoTIFF scenes, each scene read in its own CRS by a torchgeo
``RasterDataset`` at the model's ground sample distance, each chip located by
:class:`PointSampler`, a torchgeo ``GeoSampler``.

Centring rule. A chip is an ``n × n`` block of the scene's grid at the read resolution (the grid
anchored at the scene's upper-left corner), the block whose centre is nearest the point. With an
even ``n`` the point lies within half a pixel of the shared corner of the 4 central pixels (exactly
on it when the point is a grid vertex); with an odd ``n`` the point lies in the central pixel. A
point exactly half-way (an even chip at a pixel centre, an odd chip on a pixel edge) goes to the
block with the larger column and row offset: an even chip centred at a pixel centre has that
pixel as the upper-left of its 4 central pixels. Snapping to the grid, as torchgeo's own samplers
do, means a chip at the scene's own resolution is the stored pixels, never an interpolation of
them; the centring error (at most half a pixel) is far below the position error of a phone's GPS.
"""

from __future__ import annotations

import logging
import math
import os
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import geopandas as gpd
import numpy as np
import rasterio
import torch
from pyproj import CRS, Proj, Transformer
from rasterio.enums import Resampling
from rasterio.errors import RasterioIOError
from rasterio.windows import Window, from_bounds
from torch.utils.data import Dataset
from torchgeo.datasets import GeoDataset, RasterDataset
from torchgeo.datasets.utils import GeoSlice, array_to_tensor
from torchgeo.samplers import GeoSampler

from geobind.data.manifest import _crs_name
from geobind.data.scaling import scale_to_unit  # one rule for training and inference chips
from geobind.errors import CRSError, CRSMismatchWarning, InputDataError

__all__ = ["HAZE", "PairedChips", "PointSampler", "chips_per_second"]

#: The haze colour ``haze_jitter`` blends chips towards (in [0, 1] units, every band).
HAZE = 0.75

log = logging.getLogger(__name__)

# a point this close (in pixels) to half-way between two chip placements takes the larger offset,
# so points written at pixel centres and reprojected (float noise ~1e-9 px) land the same way
_TIE = 1e-6
# a requested resolution this close to the scene's own reads the scene's own (no resampling): UTM's
# scale factor stays within 0.9996..1.001, which would otherwise resample every 1 m UTM scene
_SAME_RES = 2e-3


class PointSampler(GeoSampler):
    """A torchgeo sampler yielding one chip query centred on each point.

    Each query is a torchgeo ``GeoSlice``, ``(x, y, t)`` slices
    ``[xmin:xmax:xres, ymin:ymax:yres, tmin:tmax]`` in the dataset's CRS, covering
    ``chip_size × chip_size`` pixels of ``res``. Chips are placed by the centring rule in this
    module's docstring: snapped to the grid of ``res`` anchored at ``origin``.

    Args:
        dataset: the torchgeo dataset the queries are for.
        points: a GeoDataFrame or GeoSeries of points (reprojected to the dataset's CRS with a
            :class:`~geobind.errors.CRSMismatchWarning` when in another CRS), or an ``(N, 2)``
            array of ``x, y`` already in the dataset's CRS.
        chip_size: chip width and height in pixels.
        res: pixel size in CRS units, one number or ``(xres, yres)`` (default: ``dataset.res``).
        offsets: ``(N, 2)`` centre offsets ``(dx, dy)`` in pixels, ``dx`` east and ``dy`` north
            (jitter chosen by the caller; default none). Whole pixels keep chips on the grid.
        origin: ``(x, y)`` of a grid vertex, normally the scene's upper-left corner (default: the
            upper-left corner of ``dataset.bounds``).

    Raises:
        InputDataError: ``chip_size``, ``res``, ``points`` or ``offsets`` are malformed.
        CRSError: ``points`` has no CRS.

    Example:
        >>> import numpy as np, rasterio
        >>> from rasterio.transform import from_origin
        >>> from torchgeo.datasets import RasterDataset
        >>> tif = str(getfixture("tmp_path") / "s.tif")
        >>> with rasterio.open(tif, "w", driver="GTiff", width=16, height=16, count=1,
        ...                    dtype="uint8", crs="EPSG:32633",
        ...                    transform=from_origin(500000, 4600000, 1, 1)) as dst:
        ...     dst.write(np.zeros((1, 16, 16), np.uint8))
        >>> sampler = PointSampler(RasterDataset(tif), [[500008.0, 4599992.0]], chip_size=4)
        >>> x, y, t = next(iter(sampler))
        >>> (x.start, x.stop, x.step), (y.start, y.stop, y.step)
        ((500006.0, 500010.0, 1.0), (4599990.0, 4599994.0, 1.0))
    """

    def __init__(
        self,
        dataset: GeoDataset,
        points: gpd.GeoDataFrame | gpd.GeoSeries | Any,
        *,
        chip_size: int,
        res: float | tuple[float, float] | None = None,
        offsets: Any = None,
        origin: tuple[float, float] | None = None,
    ) -> None:
        super().__init__(dataset)
        self.chip_size = _check_chip_size(chip_size)
        res = dataset.res if res is None else res
        rx, ry = (res, res) if isinstance(res, int | float) else res
        if not (rx > 0 and ry > 0 and math.isfinite(rx) and math.isfinite(ry)):
            raise InputDataError(f"res must be positive CRS units per pixel; got {res!r}")
        self.res = (float(rx), float(ry))
        if origin is None:
            x, y, _ = dataset.bounds
            origin = (x.start, y.stop)
        self.origin = (float(origin[0]), float(origin[1]))
        self.xy = _points_xy(points, dataset.crs, stacklevel=3)
        self.offsets = _offsets(offsets, len(self.xy))
        self._t = slice(self.toi.left, self.toi.right)

    def chip_bounds(self, offsets: Any = None) -> np.ndarray:
        """Chip bounds ``(xmin, ymin, xmax, ymax)`` of every point, an ``(N, 4)`` array.

        Args:
            offsets: ``(N, 2)`` centre offsets in pixels (default: the sampler's own).

        Example:
            >>> from torchgeo.datasets import RasterDataset
            >>> tif = str(getfixture("tmp_path") / "b.tif")
            >>> with rasterio.open(tif, "w", driver="GTiff", width=8, height=8, count=1,
            ...                    dtype="uint8", crs="EPSG:3857",
            ...                    transform=rasterio.transform.from_origin(0, 8, 1, 1)) as dst:
            ...     dst.write(np.zeros((1, 8, 8), np.uint8))
            >>> PointSampler(RasterDataset(tif), [[4.5, 4.5]], chip_size=3).chip_bounds()
            array([[3., 3., 6., 6.]])
        """
        off = self.offsets if offsets is None else _offsets(offsets, len(self.xy))
        return np.column_stack(
            _chip_bounds(self.xy.T, off.T, self.chip_size, self.res, self.origin)
        )

    def query(self, i: int, offset: tuple[float, float] | None = None) -> GeoSlice:
        """The query of point ``i``, shifted by ``offset`` pixels ``(dx, dy)`` when given.

        Example:
            >>> from torchgeo.datasets import RasterDataset
            >>> tif = str(getfixture("tmp_path") / "q.tif")
            >>> with rasterio.open(tif, "w", driver="GTiff", width=8, height=8, count=1,
            ...                    dtype="uint8", crs="EPSG:3857",
            ...                    transform=rasterio.transform.from_origin(0, 8, 1, 1)) as dst:
            ...     dst.write(np.zeros((1, 8, 8), np.uint8))
            >>> s = PointSampler(RasterDataset(tif), [[4.0, 4.0]], chip_size=2)
            >>> x, y, _ = s.query(0, offset=(1, -1))
            >>> x.start, y.start
            (4.0, 2.0)
        """
        off = self.offsets[i] if offset is None else offset
        xmin, ymin, xmax, ymax = _chip_bounds(
            self.xy[i], off, self.chip_size, self.res, self.origin
        )  # on scalars: ~10 µs instead of ~60 µs on 1-row arrays, the same float64 arithmetic
        rx, ry = self.res
        return (
            slice(float(xmin), float(xmax), rx),
            slice(float(ymin), float(ymax), ry),
            self._t,
        )

    def __iter__(self) -> Iterator[GeoSlice]:
        """Yield the query of each point in order.

        Yields:
            ``[xmin:xmax:xres, ymin:ymax:yres, tmin:tmax]`` slices to index the dataset with.
        """
        for i in range(len(self)):
            yield self.query(i)

    def __len__(self) -> int:
        """The number of points (one query each)."""
        return len(self.xy)


@dataclass(frozen=True)
class _Scene:
    path: str
    crs: CRS
    origin: tuple[float, float]
    bounds: tuple[float, float, float, float]  # xmin, ymin, xmax, ymax
    res: tuple[float, float]  # the read resolution, CRS units per pixel
    count: int
    nodata: float | None
    dtype: np.dtype
    native: bool  # read at the file's own resolution (no resampling)


class _SceneRaster(RasterDataset):
    """One GeoTIFF read by torchgeo in its own CRS at a chosen resolution, opened once per process.

    torchgeo 0.8.1 caches open files with an ``lru_cache`` on the class, keyed by the dataset:
    handles opened before a DataLoader forks would be shared by every worker (GDAL file offsets are
    not process-safe) and are never released. Here each process opens its own. The file is always
    read in its own CRS, so it is opened directly: torchgeo would wrap a file whose transform
    differs from its own ``calculate_default_transform`` in the last digit (EPSG:3857 at 0.6 m
    does) in a ``WarpedVRT``. ``bounds`` is computed once (torchgeo recomputes it twice a query).

    ``__getitem__`` skips torchgeo's per-query pandas look-ups in the file index (the index holds
    this one file): they took ~3.5 of the ~4.5 ms a 64 px chip cost (measured on 2 cores). A scene
    read at its own resolution is read as the pixel window the query covers (queries are snapped
    to the scene's pixel grid, so the window is whole pixels and the result is what
    ``rasterio.merge`` gives, tested); ``rasterio.merge``'s set-up cost ~1.9 of the ~2.2 ms such a
    chip took. A resampled scene is read by torchgeo's ``_merge_files`` (``rasterio.merge`` at the
    query's bounds and resolution). Loading must outrun training (the demo's stage 1 trains ~280
    chips/s on 2 cores with patch dropout). :meth:`read` gives the pixels in the scene's dtype,
    which the chip datasets use: a round trip through a float32 tensor cost ~0.1 ms a chip.
    """

    filename_glob = "*"
    is_image = True
    separate_files = False

    def __init__(self, scene: _Scene, bands: Sequence[int]) -> None:
        self.all_bands = tuple(str(b) for b in range(1, scene.count + 1))
        super().__init__(scene.path, crs=scene.crs, res=scene.res, bands=[str(b) for b in bands])
        self._scene = scene
        self._bounds = super().bounds
        self._paths = [str(f) for f in self.index.filepath]  # no globbing on every read
        self._handles: dict[str, Any] = {}
        self._pid = os.getpid()

    @property
    def bounds(self) -> tuple[slice, slice, slice]:
        """Bounding x, y and t slices of the scene (computed once)."""
        return self._bounds

    def __getitem__(self, query: GeoSlice) -> dict[str, Any]:
        """Read ``query`` (``[xmin:xmax:xres, ymin:ymax:yres, tmin:tmax]``) from the scene."""
        data = array_to_tensor(self.read(query)).to(self.dtype)
        sample: dict[str, Any] = {"crs": self.crs, "bounds": query, "image": data}
        if self.transforms is not None:
            sample = self.transforms(sample)
        return sample

    def read(self, query: GeoSlice) -> np.ndarray:
        """The pixels ``__getitem__`` returns, as a numpy array in the scene's own dtype (the
        chip datasets scale it themselves: no round trip through a float32 tensor)."""
        x, y, _ = self._disambiguate_slice(query)
        bx, by, _ = self._bounds
        if x.start >= bx.stop or x.stop <= bx.start or y.start >= by.stop or y.stop <= by.start:
            raise IndexError(f"query: {query} not found in index with bounds: {self._bounds}")
        if self._scene.native:
            return self._read_window(x, y)
        merged = self._merge_files(self._paths, query, self.band_indexes).numpy()
        return merged.astype(self._scene.dtype, copy=False)

    def _read_window(self, x: slice, y: slice) -> np.ndarray:
        """The pixels under ``x``/``y`` bounds on the scene's own pixel grid (whole pixels)."""
        (x0, y0), (rx, ry) = self._scene.origin, self._scene.res
        window = Window(
            round((x.start - x0) / rx),
            round((y0 - y.stop) / ry),
            round((x.stop - x.start) / rx),
            round((y.stop - y.start) / ry),
        )
        src = self._cached_load_warp_file(self._paths[0])
        return src.read(self.band_indexes, window=window)

    def _cached_load_warp_file(self, filepath: str) -> Any:
        if self._pid != os.getpid():
            self._handles, self._pid = {}, os.getpid()
        if filepath not in self._handles:
            self._handles[filepath] = rasterio.open(filepath)
        return self._handles[filepath]

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_handles": {}}


class PairedChips(Dataset):
    """Chips centred on points, read from one or more GeoTIFF scenes through torchgeo.

    Each point is assigned to the first scene that holds its whole chip; points whose chip lies
    (partly) outside every scene, or whose chip is more than ``nodata_fraction`` nodata, are
    dropped when the dataset is built (one INFO line on the ``geobind.data.paired`` logger gives
    the counts). A pixel is nodata when every selected band equals the scene's nodata value or is
    NaN. Points without a geometry count as outside.

    Scenes may be in different projected CRSs and resolutions: each is read in its own CRS by a
    torchgeo ``RasterDataset`` at ``gsd`` ground metres per pixel, converted to CRS units with the
    projection's scale factor at the scene centre (EPSG:3857 at latitude 45° reads 1 m as 1.41 CRS
    units). A resolution within 0.2 % of the scene's own reads the stored pixels (UTM's scale factor
    0.9996 would otherwise resample a 1 m UTM scene for a 1 m model).

    Items are ``{"image": float32 tensor (len(bands), chip_size, chip_size), "index": i}``, scaled
    as geobind scales chips (uint8 / 255, 16/32-bit integers / 10 000, floats as they are, clipped
    to [0, 1]; nodata and NaN become 0). The chip is centred on its point by the rule in this
    module's docstring.

    With ``augment=True`` (for training) each read shifts the centre by a whole number of pixels
    drawn uniformly from ``[-jitter_px, jitter_px]`` in x and y, then flips the chip left-right and
    top-bottom (each with probability 1/2) and turns it by a random multiple of 90°. The draws are a
    function of ``(seed, epoch, index)`` only, so runs repeat exactly and DataLoader workers never
    repeat each other; call :meth:`set_epoch` before each epoch (it reaches running workers, also
    persistent ones). Near a scene's edge the shift is clipped so the chip stays inside the scene.
    ``gain_jitter`` and ``haze_jitter`` add radiometric jitter, the way scenes differ from each
    other (sensor gain, atmosphere): each band is multiplied by a gain drawn from
    ``[1 - gain_jitter, 1 + gain_jitter]``, then the chip is blended towards a bright haze
    (:data:`HAZE`, 0.75 in every band) with a weight drawn from ``[0, haze_jitter]``, and clipped to
    [0, 1]; nodata pixels stay 0. ``augment=False`` reads exactly the same chip every time.

    Files are opened lazily in each process, so the dataset pickles and works in DataLoader workers.

    Args:
        scenes: one or more GeoTIFF paths (a single path is accepted too).
        points: the points, in any CRS (reprojected to each scene's CRS with one
            :class:`~geobind.errors.CRSMismatchWarning` when it differs).
        chip_size: chip width and height in pixels.
        gsd: ground sample distance in metres per pixel (default: each scene's own resolution).
        bands: 1-based band numbers to read, in order.
        nodata_fraction: drop chips with a larger share of nodata pixels.
        augment: random jitter, flips and 90° turns (training only).
        jitter_px: the largest centre shift in pixels when ``augment``.
        gain_jitter: the largest relative change of each band's gain when ``augment``.
        haze_jitter: the largest haze weight when ``augment``.
        seed: seed of the augmentation draws.

    Attributes:
        points: the kept rows of ``points`` (original index and CRS).
        scene_index: for each kept point, the position of its scene in ``scenes``.
        scenes: the scene paths, as strings.
        datasets: the torchgeo dataset of each scene.
        samplers: the :class:`PointSampler` of each scene (over its kept points).

    Raises:
        InputDataError: a scene is missing or unreadable, lacks a band of ``bands``, has a
            rotated grid or a dtype geobind cannot scale; ``points`` is not a GeoDataFrame or
            holds non-point geometries; an argument is out of range.
        CRSError: a scene or ``points`` has no CRS, or a scene is not in a projected CRS.

    Example:
        >>> import geopandas as gpd, numpy as np, rasterio
        >>> from rasterio.transform import from_origin
        >>> tif = getfixture("tmp_path") / "scene.tif"
        >>> with rasterio.open(tif, "w", driver="GTiff", width=32, height=32, count=3,
        ...                    dtype="uint8", crs="EPSG:32633",
        ...                    transform=from_origin(500000, 4600000, 1, 1)) as dst:
        ...     dst.write(np.full((3, 32, 32), 255, np.uint8))
        >>> pts = gpd.GeoDataFrame(geometry=gpd.points_from_xy([500016, 0], [4599984, 0]),
        ...                        crs="EPSG:32633")
        >>> ds = PairedChips([tif], pts, chip_size=8)
        >>> len(ds), ds[0]["image"].shape, float(ds[0]["image"].min())
        (1, torch.Size([3, 8, 8]), 1.0)
    """

    def __init__(
        self,
        scenes: Sequence[str | os.PathLike[str]] | str | os.PathLike[str],
        points: gpd.GeoDataFrame,
        *,
        chip_size: int,
        gsd: float | None = None,
        bands: Sequence[int] = (1, 2, 3),
        nodata_fraction: float = 0.5,
        augment: bool = False,
        jitter_px: int = 3,
        gain_jitter: float = 0.0,
        haze_jitter: float = 0.0,
        seed: int = 0,
    ) -> None:
        chip_size = _check_chip_size(chip_size)
        paths = [scenes] if isinstance(scenes, str | os.PathLike) else list(scenes)
        if not paths:
            raise InputDataError("scenes is empty; pass one or more GeoTIFF paths")
        if gsd is not None and not (gsd > 0 and math.isfinite(gsd)):
            raise InputDataError(f"gsd must be positive metres per pixel (or None); got {gsd!r}")
        bands = [int(b) for b in bands]
        if not bands or min(bands) < 1:
            raise InputDataError(f"bands must be 1-based band numbers; got {bands}")
        if not 0.0 <= nodata_fraction <= 1.0:
            raise InputDataError(f"nodata_fraction must be in [0, 1]; got {nodata_fraction}")
        if int(jitter_px) != jitter_px or jitter_px < 0:
            raise InputDataError(f"jitter_px must be a whole number ≥ 0; got {jitter_px!r}")
        if not (0 <= gain_jitter < 1 and 0 <= haze_jitter <= 1):
            raise InputDataError(
                f"gain_jitter must be in [0, 1) and haze_jitter in [0, 1]; got {gain_jitter!r}, "
                f"{haze_jitter!r}"
            )
        if not isinstance(points, gpd.GeoDataFrame):
            raise InputDataError(
                f"points must be a GeoDataFrame; got {type(points).__name__}. Read a manifest "
                "with geobind.data.read_manifest(...)"
            )
        if points.crs is None:
            raise CRSError(
                "points have no CRS; set the CRS their coordinates are in, e.g. "
                "points.set_crs('EPSG:4326')"
            )
        self.chip_size = chip_size
        self.gsd = gsd
        self.bands = bands
        self.nodata_fraction = float(nodata_fraction)
        self.augment = bool(augment)
        self.jitter_px = int(jitter_px)
        self.gain_jitter, self.haze_jitter = float(gain_jitter), float(haze_jitter)
        self.seed = int(seed)
        # shared memory, so set_epoch reaches DataLoader workers that are already running
        self._epoch = torch.zeros((), dtype=torch.int64).share_memory_()

        infos = [_open_scene(p, gsd, bands) for p in paths]
        self.scenes = [s.path for s in infos]
        self._nodata = [s.nodata for s in infos]
        self.datasets = [_SceneRaster(s, bands) for s in infos]

        n = len(points)
        geoms = points.geometry
        located = ~(geoms.isna().to_numpy() | geoms.is_empty.to_numpy())
        kinds = geoms.geom_type.to_numpy()
        if (located & (kinds != "Point")).any():
            other = sorted(set(kinds[located & (kinds != "Point")]))
            raise InputDataError(
                f"points hold {', '.join(other)} geometries; chips are centred on points. "
                "Convert them first, e.g. gdf.set_geometry(gdf.representative_point())"
            )
        scene_of, xy_of, bounds_of, reprojected = _assign(geoms, located, infos, chip_size)
        if reprojected:
            warnings.warn(
                f"points in {_crs_name(points.crs)} were reprojected to the scenes' CRS "
                f"({'; '.join(reprojected)})",
                CRSMismatchWarning,
                stacklevel=2,
            )
        fraction = np.zeros(n)
        for k, scene in enumerate(infos):
            idx = np.flatnonzero(scene_of == k)
            fraction[idx] = _nodata_fractions(scene, bounds_of[idx], bands, chip_size)
        mostly_nodata = (scene_of >= 0) & (fraction > nodata_fraction)
        kept = np.flatnonzero((scene_of >= 0) & ~mostly_nodata)
        log.info(
            "PairedChips: %d points, %d outside every scene, %d more than %g%% nodata, %d kept",
            n,
            int((scene_of < 0).sum()),
            int(mostly_nodata.sum()),
            100 * nodata_fraction,
            len(kept),
        )
        self.points = points.iloc[kept]
        self.scene_index = scene_of[kept]
        self._local = np.zeros(len(kept), np.int64)
        # whole pixels each chip may move west, east, south, north and stay inside its scene
        self._room = np.zeros((len(kept), 4), np.int64)
        self.samplers = []
        for k, (scene, ds) in enumerate(zip(infos, self.datasets, strict=True)):
            mine = np.flatnonzero(self.scene_index == k)
            self._local[mine] = np.arange(len(mine))
            self._room[mine] = _room(bounds_of[kept[mine]], scene)
            self.samplers.append(
                PointSampler(
                    ds, xy_of[kept[mine]], chip_size=chip_size, res=scene.res, origin=scene.origin
                )
            )

    @property
    def epoch(self) -> int:
        """The epoch the augmentation draws belong to."""
        return int(self._epoch)

    def set_epoch(self, epoch: int) -> None:
        """Set the epoch for the augmentation draws (no effect without ``augment``).

        Example:
            >>> import geopandas as gpd, numpy as np, rasterio
            >>> tif = getfixture("tmp_path") / "e.tif"
            >>> with rasterio.open(tif, "w", driver="GTiff", width=8, height=8, count=1,
            ...                    dtype="uint8", crs="EPSG:32633",
            ...                    transform=rasterio.transform.from_origin(0, 8, 1, 1)) as dst:
            ...     dst.write(np.ones((1, 8, 8), np.uint8))
            >>> pts = gpd.GeoDataFrame(geometry=gpd.points_from_xy([4], [4]), crs="EPSG:32633")
            >>> ds = PairedChips(tif, pts, chip_size=2, bands=[1], augment=True, jitter_px=1)
            >>> ds.set_epoch(3)
            >>> ds.epoch
            3
        """
        self._epoch.fill_(int(epoch))

    def query(self, i: int) -> GeoSlice:
        """The torchgeo query item ``i`` reads now (with this epoch's jitter when ``augment``).

        The query is in the CRS of scene ``scenes[scene_index[i]]``.

        Example:
            >>> import geopandas as gpd, numpy as np, rasterio
            >>> tif = getfixture("tmp_path") / "q.tif"
            >>> with rasterio.open(tif, "w", driver="GTiff", width=8, height=8, count=1,
            ...                    dtype="uint8", crs="EPSG:32633",
            ...                    transform=rasterio.transform.from_origin(0, 8, 1, 1)) as dst:
            ...     dst.write(np.ones((1, 8, 8), np.uint8))
            >>> pts = gpd.GeoDataFrame(geometry=gpd.points_from_xy([4], [4]), crs="EPSG:32633")
            >>> x, y, _ = PairedChips(tif, pts, chip_size=2, bands=[1]).query(0)
            >>> (x.start, x.stop), (y.start, y.stop)
            ((3.0, 5.0), (3.0, 5.0))
        """
        return self._plan(self._position(i))[1]

    def _position(self, i: int) -> int:
        n = len(self)
        i = int(i)
        if not -n <= i < n:
            raise IndexError(f"index {i} is out of range for {n} chips")
        return i % n

    def _plan(self, i: int) -> tuple[int, GeoSlice, bool, bool, int, Any]:
        k = int(self.scene_index[i])
        sampler = self.samplers[k]
        j = int(self._local[i])
        if not self.augment:
            return k, sampler.query(j), False, False, 0, None
        rng = np.random.default_rng([self.seed, self.epoch, i])
        dx, dy = rng.integers(-self.jitter_px, self.jitter_px, size=2, endpoint=True)
        west, east, south, north = self._room[i]
        dx, dy = min(max(dx, -west), east), min(max(dy, -south), north)
        flip_lr, flip_ud = rng.random(2) < 0.5
        turns = int(rng.integers(4))
        radiometry = None  # drawn last: the geometric draws do not depend on it
        if self.gain_jitter or self.haze_jitter:
            g = self.gain_jitter
            gains = rng.uniform(1 - g, 1 + g, len(self.bands)).astype(np.float32)
            radiometry = gains, np.float32(rng.uniform(0, self.haze_jitter))
        query = sampler.query(j, (float(dx), float(dy)))
        return k, query, bool(flip_lr), bool(flip_ud), turns, radiometry

    def __getitem__(self, i: int) -> dict[str, Any]:
        """Chip ``i`` as ``{"image": (bands, chip_size, chip_size) float32 tensor, "index": i}``."""
        i = self._position(i)
        k, query, flip_lr, flip_ud, turns, radiometry = self._plan(i)
        raw = self.datasets[k].read(query)  # the torchgeo sample's pixels, in the scene's dtype
        image = scale_to_unit(raw, "auto")  # the scene's own dtype decides the scale
        if radiometry is not None:
            gains, haze = radiometry
            image = image * (gains[:, None, None] * (1 - haze)) + haze * HAZE
            np.clip(image, 0.0, 1.0, out=image)
        image[:, _invalid(raw, self._nodata[k])] = 0.0
        if flip_lr:
            image = image[:, :, ::-1]
        if flip_ud:
            image = image[:, ::-1, :]
        if turns:
            image = np.rot90(image, turns, axes=(1, 2))
        return {"image": torch.from_numpy(np.ascontiguousarray(image)), "index": i}

    def __len__(self) -> int:
        """The number of kept points."""
        return len(self.points)


def chips_per_second(
    ds: Dataset, n: int = 256, batch_size: int = 64, num_workers: int = 0
) -> float:
    """Chips per second a DataLoader reads from the first ``n`` items of ``ds``.

    The time runs from creating the loader's iterator (worker start-up included) to the last batch.

    Example:
        >>> import geopandas as gpd, numpy as np, rasterio
        >>> tif = getfixture("tmp_path") / "c.tif"
        >>> with rasterio.open(tif, "w", driver="GTiff", width=16, height=16, count=3,
        ...                    dtype="uint8", crs="EPSG:32633",
        ...                    transform=rasterio.transform.from_origin(0, 16, 1, 1)) as dst:
        ...     dst.write(np.ones((3, 16, 16), np.uint8))
        >>> pts = gpd.GeoDataFrame(geometry=gpd.points_from_xy([8], [8]), crs="EPSG:32633")
        >>> chips_per_second(PairedChips(tif, pts, chip_size=4), n=8) > 0
        True
    """
    from torch.utils.data import DataLoader, Subset

    count = min(int(n), len(ds))
    if count < 1:
        raise InputDataError(f"cannot time an empty dataset (len {len(ds)}, n={n})")
    loader = DataLoader(Subset(ds, range(count)), batch_size=batch_size, num_workers=num_workers)
    start = time.perf_counter()
    read = sum(len(batch["image"]) for batch in loader)
    return read / (time.perf_counter() - start)


def _check_chip_size(chip_size: Any) -> int:
    if isinstance(chip_size, bool) or not isinstance(chip_size, int | np.integer):
        raise InputDataError(f"chip_size must be a whole number of pixels; got {chip_size!r}")
    if chip_size < 1:
        raise InputDataError(f"chip_size must be at least 1 pixel; got {chip_size}")
    return int(chip_size)


def _chip_bounds(
    xy: Any, offsets: Any, n: int, res: tuple[float, float], origin: tuple[float, float]
):
    """``(xmin, ymin, xmax, ymax)`` of the chips centred on ``xy = (x, y)`` shifted by ``offsets``
    pixels: scalars for one point, arrays for ``(2, N)`` inputs."""
    rx, ry = res
    x0, y0 = origin
    cx = xy[0] + offsets[0] * rx
    cy = xy[1] + offsets[1] * ry
    col = np.floor((cx - x0) / rx - n / 2 + 0.5 + _TIE)
    row = np.floor((y0 - cy) / ry - n / 2 + 0.5 + _TIE)
    xmin = x0 + col * rx
    ymax = y0 - row * ry
    return xmin, ymax - n * ry, xmin + n * rx, ymax


def _assign(
    geoms: gpd.GeoSeries, located: np.ndarray, scenes: Sequence[_Scene], chip_size: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """Each point's scene (the first holding its whole chip; -1: none), x/y there, chip bounds."""
    n = len(geoms)
    scene_of = np.full(n, -1)
    xy_of = np.full((n, 2), np.nan)
    bounds_of = np.full((n, 4), np.nan)
    reprojected = []
    for k, scene in enumerate(scenes):
        todo = np.flatnonzero(located & (scene_of < 0))
        if not len(todo):
            break
        sub = geoms.iloc[todo]
        if not sub.crs.equals(scene.crs):
            reprojected.append(f"{_crs_name(scene.crs)} for {os.path.basename(scene.path)}")
            sub = sub.to_crs(scene.crs)
        xy = np.column_stack([sub.x.to_numpy(), sub.y.to_numpy()])
        b = np.column_stack(
            _chip_bounds(xy.T, np.zeros_like(xy.T), chip_size, scene.res, scene.origin)
        )
        inside = _within(b, scene.bounds, scene.res)
        scene_of[todo[inside]] = k
        xy_of[todo[inside]] = xy[inside]
        bounds_of[todo[inside]] = b[inside]
    return scene_of, xy_of, bounds_of, reprojected


def _within(b: np.ndarray, bounds: tuple[float, ...], res: tuple[float, float]) -> np.ndarray:
    xmin, ymin, xmax, ymax = bounds
    ex, ey = 1e-6 * res[0], 1e-6 * res[1]
    with np.errstate(invalid="ignore"):
        return (
            (b[:, 0] >= xmin - ex)
            & (b[:, 1] >= ymin - ey)
            & (b[:, 2] <= xmax + ex)
            & (b[:, 3] <= ymax + ey)
        )


def _room(b: np.ndarray, scene: _Scene) -> np.ndarray:
    xmin, ymin, xmax, ymax = scene.bounds
    rx, ry = scene.res
    room = np.column_stack(
        [(b[:, 0] - xmin) / rx, (xmax - b[:, 2]) / rx, (b[:, 1] - ymin) / ry, (ymax - b[:, 3]) / ry]
    )
    return np.maximum(np.floor(room + _TIE), 0).astype(np.int64)


def _points_xy(points: Any, crs: CRS, *, stacklevel: int) -> np.ndarray:
    if isinstance(points, gpd.GeoDataFrame | gpd.GeoSeries):
        geoms = points.geometry
        if geoms.crs is None:
            raise CRSError(
                "points have no CRS; set the CRS their coordinates are in, e.g. "
                "points.set_crs('EPSG:4326')"
            )
        kinds = set(geoms.geom_type.dropna())
        if kinds - {"Point"}:
            raise InputDataError(
                f"points hold {', '.join(sorted(kinds - {'Point'}))} geometries; chips are "
                "centred on points"
            )
        if not geoms.crs.equals(crs):
            warnings.warn(
                f"points in {_crs_name(geoms.crs)} were reprojected to the dataset's CRS "
                f"{_crs_name(CRS.from_user_input(crs))}",
                CRSMismatchWarning,
                stacklevel=stacklevel,
            )
            geoms = geoms.to_crs(crs)
        return np.column_stack([geoms.x.to_numpy(), geoms.y.to_numpy()]).astype(np.float64)
    xy = np.asarray(points, dtype=np.float64)
    if xy.ndim != 2 or xy.shape[1] != 2:
        raise InputDataError(
            f"points must be a GeoDataFrame, a GeoSeries or an (N, 2) array of x, y; "
            f"got an array of shape {xy.shape}"
        )
    return xy


def _offsets(offsets: Any, n: int) -> np.ndarray:
    if offsets is None:
        return np.zeros((n, 2))
    off = np.asarray(offsets, dtype=np.float64)
    if off.shape != (n, 2):
        raise InputDataError(
            f"offsets must be an ({n}, 2) array of (dx, dy) pixels, one row per point; "
            f"got shape {off.shape}"
        )
    return off


def _open_scene(path: str | os.PathLike[str], gsd: float | None, bands: Sequence[int]) -> _Scene:
    path = os.path.abspath(os.fspath(path))
    if not os.path.isfile(path):
        raise InputDataError(f"scene {path} does not exist; expected a GeoTIFF file")
    try:
        with rasterio.open(path) as src:
            crs, t, width, height = src.crs, src.transform, src.width, src.height
            count, nodata, dtype = src.count, src.nodata, np.dtype(src.dtypes[0])
    except RasterioIOError as err:
        raise InputDataError(f"cannot read scene {path}: {err}") from None
    if crs is None:
        raise CRSError(
            f"scene {path} has no CRS; write the CRS its coordinates are in, e.g. "
            "raster.rio.write_crs('EPSG:32633') or gdal_edit.py -a_srs EPSG:32633"
        )
    crs = CRS.from_user_input(crs)
    if not crs.is_projected:
        raise CRSError(
            f"scene {path} is in {_crs_name(crs)}, a geographic CRS (degrees); chips need a "
            "projected CRS in metres. Reproject it first, e.g. gdalwarp -t_srs EPSG:326xx (UTM)"
        )
    if t.b != 0 or t.d != 0 or t.a <= 0 or t.e >= 0:
        raise InputDataError(
            f"scene {path} has a rotated or flipped grid ({tuple(t)[:6]}); expected a north-up "
            "grid. Warp it first, e.g. gdalwarp in.tif out.tif"
        )
    if max(bands) > count:
        raise InputDataError(
            f"bands {list(bands)} (1-based) asked for, but scene {path} has {count} band(s); "
            "pass bands=[...] naming existing bands (e.g. bands=[1, 1, 1] for one band)"
        )
    scale_to_unit(
        np.zeros((1, 1, 1), dtype), "auto"
    )  # raises InputDataError for dtypes it cannot scale
    native = (t.a, -t.e)
    res = native
    if gsd is not None:
        cx, cy = t * (width / 2, height / 2)
        kx, ky = _crs_units_per_metre(crs, cx, cy, path)
        res = (gsd * kx, gsd * ky)
        if all(abs(r / s - 1) <= _SAME_RES for r, s in zip(res, native, strict=True)):
            res = native
    return _Scene(
        path=path,
        crs=crs,
        origin=(t.c, t.f),
        bounds=(t.c, t.f + height * t.e, t.c + width * t.a, t.f),
        res=(float(res[0]), float(res[1])),
        count=count,
        nodata=None if nodata is None else float(nodata),
        dtype=dtype,
        native=res == native,
    )


def _crs_units_per_metre(crs: CRS, x: float, y: float, path: str) -> tuple[float, float]:
    """CRS units per ground metre east and north at ``(x, y)``, from the projection's scale."""
    lon, lat = Transformer.from_crs(crs, crs.geodetic_crs, always_xy=True).transform(x, y)
    factors = Proj(crs).get_factors(lon, lat)
    metres = crs.axis_info[0].unit_conversion_factor  # PROJ's factors ignore the CRS's unit
    kx, ky = factors.parallel_scale / metres, factors.meridional_scale / metres
    if not (math.isfinite(kx) and math.isfinite(ky) and kx > 0 and ky > 0):
        raise CRSError(
            f"cannot compute the scale of {_crs_name(crs)} at the centre of scene {path} "
            f"({lon:.5f}, {lat:.5f}); pass gsd=None to read it at its own resolution"
        )
    return kx, ky


def _invalid(chip: np.ndarray, nodata: float | None) -> np.ndarray:
    """``(bands, h, w)`` → ``(h, w)``: True where every band is nodata or NaN."""
    bad = np.isnan(chip) if chip.dtype.kind == "f" else np.zeros(chip.shape, bool)
    if nodata is not None and not math.isnan(nodata):
        bad |= chip == nodata
    return bad.all(axis=0)


def _nodata_fractions(
    scene: _Scene, bounds: np.ndarray, bands: Sequence[int], chip_size: int
) -> np.ndarray:
    """Share of nodata pixels in each chip, read with rasterio at the chip's size (nearest)."""
    out = np.zeros(len(bounds))
    if not len(bounds):
        return out
    shape = (len(bands), chip_size, chip_size)
    with rasterio.open(scene.path) as src:
        for i, (xmin, ymin, xmax, ymax) in enumerate(bounds):
            window = from_bounds(xmin, ymin, xmax, ymax, src.transform)
            chip = src.read(bands, window=window, out_shape=shape, resampling=Resampling.nearest)
            out[i] = _invalid(chip, scene.nodata).mean()
    return out
