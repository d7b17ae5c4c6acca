"""Chips centred on points: GeoTIFF scenes read through torchgeo, one chip per manifest point.

Training pairs a satellite chip centred on a location with what was recorded there (a photo, a
clip). :class:`PairedChips` is the chip half: a ``torch.utils.data.Dataset`` over the points that
fall inside one of several GeoTIFF scenes, each scene read in its own CRS at its own resolution by
a torchgeo ``RasterDataset``, each chip located by :class:`~geobind.data.samplers.PointSampler`.

A chip covers the model's footprint on the ground: ``chip_size`` pixels at ``gsd`` metres, which
is :meth:`GeoBox.chip_pixels <geobind.georef.GeoBox.chip_pixels>` pixels of each scene (pyproj's
scale factors: a Web-Mercator scene at 45.5° N with 0.6 CRS units per pixel has 0.42 ground
metres, so a 32 px chip at 1 m is 76 of its pixels), exactly what inference cuts from a raster.
Chips are read as stored pixels and go through the chip steps of :mod:`geobind.data.chips`
(validity, the encoder's scaling, resizing to the model's input), the steps
:meth:`~geobind.models.encoders.SatEncoder.embed_pixels` takes at inference.
"""

from __future__ import annotations

import logging
import os
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import geopandas as gpd
import numpy as np
import rasterio
import torch
from rasterio.errors import RasterioIOError
from rasterio.windows import Window
from torch.utils.data import Dataset
from torchgeo.datasets import RasterDataset
from torchgeo.datasets.utils import GeoSlice, array_to_tensor

from geobind.data import augment as _augment
from geobind.data.chips import has_dataset_mask, invalid_mask, read_dataset_mask, resize, to_unit
from geobind.data.samplers import PointSampler, _check_chip_size, chip_bounds
from geobind.data.scaling import scale_divisor
from geobind.errors import BandsError, CRSError, CRSMismatchWarning, InputDataError
from geobind.georef import GeoBox, crs_name

__all__ = ["PairedChips", "SceneFile", "chips_per_second", "open_scene"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SceneFile:
    """A GeoTIFF scene as training reads it: its georeferencing and what its pixels are."""

    path: str
    geobox: GeoBox
    count: int
    nodata: float | None
    dtype: np.dtype
    masked: bool  # an alpha band or an internal mask (GDAL's dataset mask)

    @property
    def origin(self) -> tuple[float, float]:
        """``(x, y)`` of the upper-left corner."""
        return self.geobox.transform.c, self.geobox.transform.f

    @classmethod
    def from_rasterio(cls, src: Any) -> SceneFile:
        """What an open rasterio dataset says of itself (no checks: see :func:`open_scene`).

        Example:
            >>> import numpy as np, rasterio
            >>> tif = GeoBox.from_origin(0, 2, 1, (2, 2), "EPSG:32633").write_geotiff(
            ...     getfixture("tmp_path") / "f.tif", np.zeros((3, 2, 2), np.uint16), nodata=0)
            >>> with rasterio.open(tif) as src:
            ...     scene = SceneFile.from_rasterio(src)
            >>> scene.count, scene.nodata, scene.dtype.name, scene.masked
            (3, 0.0, 'uint16', False)
        """
        nodata = None if src.nodata is None else float(src.nodata)
        return cls(
            src.name,
            GeoBox.from_rasterio(src),
            src.count,
            nodata,
            np.dtype(src.dtypes[0]),
            has_dataset_mask(src),
        )


def open_scene(path: str | os.PathLike[str], bands: Sequence[int]) -> SceneFile:
    """Open a scene's header: refuse files training cannot read (with a clear error).

    Raises:
        InputDataError: missing or unreadable, a rotated or flipped grid, a band of ``bands``
            missing, a dtype geobind cannot scale.
        CRSError: no CRS, or a geographic one.

    Example:
        >>> import numpy as np
        >>> box = GeoBox.from_origin(0, 4, 1, (4, 4), "EPSG:32633")
        >>> tif = box.write_geotiff(getfixture("tmp_path") / "s.tif", np.zeros((3, 4, 4), np.uint8))
        >>> open_scene(tif, [1, 2, 3]).geobox.shape
        (4, 4)
    """
    from geobind.sources import gdal_path, is_remote, open_dataset

    if is_remote(path):  # an http(s)/s3 URL of a COG: read with Range requests
        with open_dataset(path) as src:
            scene = SceneFile.from_rasterio(src)
        path = gdal_path(path)
    else:
        path = os.path.abspath(os.fspath(path))
        if not os.path.isfile(path):
            raise InputDataError(f"scene {path} does not exist; expected a GeoTIFF file")
        try:
            with rasterio.open(path) as src:
                scene = SceneFile.from_rasterio(src)
        except RasterioIOError as err:
            raise InputDataError(f"cannot read scene {path}: {err}") from None
    geobox, t = scene.geobox, scene.geobox.transform
    if geobox.crs is None:
        raise CRSError(
            f"scene {path} has no CRS; write the CRS its coordinates are in, e.g. "
            "raster.rio.write_crs('EPSG:32633') or gdal_edit.py -a_srs EPSG:32633"
        )
    if not geobox.crs.is_projected:
        raise CRSError(
            f"scene {path} is in {crs_name(geobox.crs)}, a geographic CRS (degrees); chips "
            "need a projected CRS in metres. Reproject it first, e.g. gdalwarp -t_srs EPSG:326xx"
        )
    if t.b != 0 or t.d != 0 or t.a <= 0 or t.e >= 0:
        raise InputDataError(
            f"scene {path} has a rotated or flipped grid ({tuple(t)[:6]}); expected a north-up "
            "grid. Warp it first, e.g. gdalwarp in.tif out.tif"
        )
    if max(bands) > scene.count:
        raise BandsError(bands, scene.count, where=f"scene {path}")
    scale_divisor(scene.dtype)  # raises InputDataError for dtypes it cannot scale
    return scene


class _SceneRaster(RasterDataset):
    """One GeoTIFF read by torchgeo in its own CRS at its own resolution, opened once per process.

    torchgeo 0.8.1 caches open files with an ``lru_cache`` on the class, keyed by the dataset:
    handles opened before a DataLoader forks would be shared by every worker (GDAL file offsets are
    not process-safe) and are never released. Here each process opens its own. The file is read
    in its own CRS, so it is opened directly: torchgeo would wrap a file whose transform differs
    from its own ``calculate_default_transform`` in the last digit (EPSG:3857 at 0.6 m does) in a
    ``WarpedVRT``. ``bounds`` is computed once (torchgeo recomputes it twice a query).

    ``__getitem__`` skips torchgeo's per-query pandas look-ups in the file index (the index holds
    this one file): they took ~3.5 of the ~4.5 ms a 64 px chip cost (measured on 2 cores). Queries
    are snapped to the scene's pixel grid, so each is read as the pixel window it covers, which
    is what ``rasterio.merge`` gives (tested); ``rasterio.merge``'s set-up cost ~1.9 of the
    ~2.2 ms such a chip took. :meth:`read` gives the pixels in the scene's dtype, which the chip
    datasets use: a round trip through a float32 tensor cost ~0.1 ms a chip.
    """

    filename_glob = "*"
    is_image = True
    separate_files = False

    def __init__(self, scene: SceneFile, bands: Sequence[int]) -> None:
        self.all_bands = tuple(str(b) for b in range(1, scene.count + 1))
        from geobind.sources import gdal_env, is_remote

        res = scene.geobox.resolution
        with gdal_env(remote=is_remote(scene.path)):  # torchgeo opens it to index it
            super().__init__(
                scene.path, crs=scene.geobox.crs, res=res, bands=[str(b) for b in bands]
            )
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

    def window(self, query: GeoSlice) -> Window:
        """The pixel window under a query's bounds (whole pixels of the scene's grid)."""
        x, y, _ = self._disambiguate_slice(query)
        bx, by, _ = self._bounds
        if x.start >= bx.stop or x.stop <= bx.start or y.start >= by.stop or y.stop <= by.start:
            raise IndexError(f"query: {query} not found in index with bounds: {self._bounds}")
        (x0, y0), (rx, ry) = self._scene.origin, self._scene.geobox.resolution
        return Window(
            round((x.start - x0) / rx),
            round((y0 - y.stop) / ry),
            round((x.stop - x.start) / rx),
            round((y.stop - y.start) / ry),
        )

    def read(self, query: GeoSlice) -> np.ndarray:
        """The pixels ``__getitem__`` returns, as a numpy array in the scene's own dtype."""
        return self._src().read(self.band_indexes, window=self.window(query))

    def read_valid(self, query: GeoSlice) -> np.ndarray | None:
        """The scene's dataset mask under the query (nonzero = valid), ``None`` without one."""
        if not self._scene.masked:
            return None
        return read_dataset_mask(self._src(), self.window(query))

    def _src(self) -> Any:
        return self._cached_load_warp_file(self._paths[0])

    def _cached_load_warp_file(self, filepath: str) -> Any:
        if self._pid != os.getpid():
            self._handles, self._pid = {}, os.getpid()
        if filepath not in self._handles:
            from geobind.sources import gdal_env, is_remote

            with gdal_env(remote=is_remote(filepath)):  # remote: the environment's endpoint
                self._handles[filepath] = rasterio.open(filepath)
        return self._handles[filepath]

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_handles": {}}


class PairedChips(_augment.Augmented, Dataset):
    """Chips centred on points, read from one or more GeoTIFF scenes through torchgeo.

    Each point is assigned to the first scene that holds its whole chip; points whose chip lies
    (partly) outside every scene, or whose chip has more than ``nodata_fraction`` invalid pixels,
    are dropped when the dataset is built (one INFO line on the ``geobind.data.datasets`` logger
    gives the counts). Validity is :func:`~geobind.data.chips.invalid_mask`'s (GDAL's dataset
    mask: every selected band at nodata, an alpha band or internal mask at 0, or NaN). Points
    without a geometry count as outside.

    Scenes may be in different projected CRSs and resolutions: each is read in its own CRS at its
    own resolution, and a chip covers ``chip_size`` pixels of ``gsd`` ground metres (default: the
    scene's own ground resolution, ``chip_size`` of its pixels), see the module docstring.

    Items are ``{"image": float32 tensor (len(bands), out_size, out_size), "index": i}``: the
    stored pixels scaled by ``scale`` (:func:`~geobind.data.scaling.scale_to_unit`; invalid
    pixels 0) and resized to ``out_size`` (the model's input size; default ``chip_size``) with
    :func:`~geobind.data.chips.resize`. :meth:`raw` gives the stored pixels and their validity,
    which the stage anchors embed with
    :meth:`~geobind.models.encoders.SatEncoder.embed_pixels`, as inference does.

    With ``augment=True`` (for training) each read shifts the centre by a whole number of pixels
    drawn uniformly from ``[-jitter_px, jitter_px]`` in x and y, then flips the chip left-right and
    top-bottom (each with probability 1/2) and turns it by a random multiple of 90°. The draws are a
    function of ``(seed, epoch, index)`` only (:mod:`geobind.data.augment`), so runs repeat exactly
    and DataLoader workers never repeat each other; call :meth:`set_epoch` before each epoch (it
    reaches running workers, also persistent ones). Near a scene's edge the shift is clipped so the
    chip stays inside the scene. ``gain_jitter`` and ``haze_jitter`` add radiometric jitter: each
    band is multiplied by a gain drawn from ``[1 - gain_jitter, 1 + gain_jitter]``, then the chip
    is blended towards a bright haze (:data:`~geobind.data.augment.HAZE`) with a weight drawn from
    ``[0, haze_jitter]``, and clipped to [0, 1]; invalid pixels stay 0. ``augment=False`` reads
    exactly the same chip every time.

    Files are opened lazily in each process, so the dataset pickles and works in DataLoader workers.

    Args:
        scenes: one or more GeoTIFF paths (a single path is accepted too).
        points: the points, in any CRS (reprojected to each scene's CRS with one
            :class:`~geobind.errors.CRSMismatchWarning` when it differs).
        chip_size: chip width and height in pixels at ``gsd``.
        gsd: the model's ground sample distance in metres per pixel (default: each scene's own).
        out_size: the side chips are resized to (default ``chip_size``).
        bands: 1-based band numbers to read, in order.
        scale: the encoder's scaling (``"auto"`` or a divisor).
        nodata_fraction: drop chips with a larger share of invalid pixels.
        augment: random jitter, flips and 90° turns (training only).
        jitter_px: the largest centre shift in pixels when ``augment``.
        gain_jitter: the largest relative change of each band's gain when ``augment``.
        haze_jitter: the largest haze weight when ``augment``.
        seed: seed of the augmentation draws.

    Attributes:
        points: the kept rows of ``points`` (original index and CRS).
        scene_index: for each kept point, the position of its scene in ``scenes``.
        scenes: the scene paths, as strings.
        chips: for each scene, the chip side in its pixels.
        datasets: the torchgeo dataset of each scene.
        samplers: the :class:`~geobind.data.samplers.PointSampler` of each scene.

    Raises:
        InputDataError: a scene is missing or unreadable, lacks a band of ``bands``, has a
            rotated grid or a dtype geobind cannot scale; ``points`` is not a GeoDataFrame or
            holds non-point geometries; an argument is out of range.
        CRSError: a scene or ``points`` has no CRS, or a scene is not in a projected CRS.

    Example:
        >>> import geopandas as gpd, numpy as np
        >>> tif = GeoBox.from_origin(500000, 4600000, 1, (32, 32), "EPSG:32633").write_geotiff(
        ...     getfixture("tmp_path") / "scene.tif", np.full((3, 32, 32), 255, np.uint8))
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
        out_size: int | None = None,
        bands: Sequence[int] = (1, 2, 3),
        scale: str | float = "auto",
        nodata_fraction: float = 0.5,
        augment: bool = False,
        jitter_px: int = 3,
        gain_jitter: float = 0.0,
        haze_jitter: float = 0.0,
        seed: int = 0,
    ) -> None:
        chip_size = _check_chip_size(chip_size)
        out_size = chip_size if out_size is None else _check_chip_size(out_size)
        paths = [scenes] if isinstance(scenes, str | os.PathLike) else list(scenes)
        if not paths:
            raise InputDataError("scenes is empty; pass one or more GeoTIFF paths")
        if gsd is not None and not (gsd > 0 and np.isfinite(gsd)):
            raise InputDataError(f"gsd must be positive metres per pixel (or None); got {gsd!r}")
        bands = [int(b) for b in bands]
        if not bands or min(bands) < 1:
            raise InputDataError(f"bands must be 1-based band numbers; got {bands}")
        if not 0.0 <= nodata_fraction <= 1.0:
            raise InputDataError(f"nodata_fraction must be in [0, 1]; got {nodata_fraction}")
        self.set_augmentation(
            augment=augment,
            jitter_px=jitter_px,
            gain_jitter=gain_jitter,
            haze_jitter=haze_jitter,
            seed=seed,
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
        self.chip_size, self.out_size, self.gsd = chip_size, out_size, gsd
        self.bands, self.scale = bands, scale
        self.nodata_fraction = float(nodata_fraction)

        infos = [open_scene(p, bands) for p in paths]
        self.scenes = [s.path for s in infos]
        self._infos = infos
        self.chips = [
            chip_size if gsd is None else s.geobox.chip_pixels(chip_size, gsd) for s in infos
        ]
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
        scene_of, xy_of, bounds_of, reprojected = _assign(geoms, located, infos, self.chips)
        if reprojected:
            warnings.warn(
                f"points in {crs_name(points.crs)} were reprojected to the scenes' CRS "
                f"({'; '.join(reprojected)})",
                CRSMismatchWarning,
                stacklevel=2,
            )
        fraction = np.zeros(n)
        for k, scene in enumerate(infos):
            idx = np.flatnonzero(scene_of == k)
            fraction[idx] = _nodata_fractions(scene, bounds_of[idx], bands)
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
                    ds,
                    xy_of[kept[mine]],
                    chip_size=self.chips[k],
                    res=scene.geobox.resolution,
                    origin=scene.origin,
                )
            )

    def query(self, i: int) -> GeoSlice:
        """The torchgeo query item ``i`` reads now (with this epoch's jitter when ``augment``).

        The query is in the CRS of scene ``scenes[scene_index[i]]``.

        Example:
            >>> import geopandas as gpd, numpy as np
            >>> tif = GeoBox.from_origin(0, 8, 1, (8, 8), "EPSG:32633").write_geotiff(
            ...     getfixture("tmp_path") / "q.tif", np.ones((1, 8, 8), np.uint8))
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

    def _plan(self, i: int) -> tuple[int, GeoSlice, _augment.Draw | None]:
        k = int(self.scene_index[i])
        sampler = self.samplers[k]
        j = int(self._local[i])
        if not self.augment:
            return k, sampler.query(j), None
        d = _augment.draw_for(self, i)
        west, east, south, north = self._room[i]
        dx, dy = d.shift
        dx, dy = min(max(dx, -west), east), min(max(dy, -south), north)
        return k, sampler.query(j, (float(dx), float(dy))), d

    def raw(self, i: int) -> tuple[np.ndarray, np.ndarray | None]:
        """Chip ``i`` as stored, without augmentation: ``(pixels (bands, c, c) in the scene's
        dtype, invalid (c, c) bool or None)``, ``c`` = its scene's chip side (:attr:`chips`).

        Example:
            >>> import geopandas as gpd, numpy as np
            >>> tif = GeoBox.from_origin(0, 8, 1, (8, 8), "EPSG:32633").write_geotiff(
            ...     getfixture("tmp_path") / "r.tif", np.arange(64, dtype="u1").reshape(1, 8, 8),
            ...     nodata=0)
            >>> pts = gpd.GeoDataFrame(geometry=gpd.points_from_xy([1], [7]), crs="EPSG:32633")
            >>> px, bad = PairedChips(tif, pts, chip_size=2, bands=[1]).raw(0)
            >>> px.tolist(), bad.tolist()
            ([[[0, 1], [8, 9]]], [[True, False], [False, False]])
        """
        i = self._position(i)
        k = int(self.scene_index[i])
        query = self.samplers[k].query(int(self._local[i]))
        return self._read(k, query)

    def read_order(self) -> np.ndarray:
        """Indices scene by scene (each scene's chips share a size; files are read in turn).

        Example:
            >>> ds = PairedChips.__new__(PairedChips)
            >>> ds.scene_index = np.array([1, 0, 1])
            >>> ds.read_order().tolist()
            [1, 0, 2]
        """
        return np.argsort(self.scene_index, kind="stable")

    def _read(self, k: int, query: GeoSlice) -> tuple[np.ndarray, np.ndarray | None]:
        ds = self.datasets[k]
        raw = ds.read(query)  # the torchgeo sample's pixels, in the scene's dtype
        return raw, invalid_mask(raw, self._infos[k].nodata, ds.read_valid(query))

    def __getitem__(self, i: int) -> dict[str, Any]:
        """Chip ``i`` as ``{"image": (bands, out_size, out_size) float32 tensor, "index": i}``."""
        i = self._position(i)
        k, query, d = self._plan(i)
        raw, invalid = self._read(k, query)
        image = to_unit(raw, invalid, self.scale)
        if image.shape[-1] != self.out_size:
            image = resize(image[None], self.out_size)[0]
            if invalid is not None:  # where the resized chip is mostly invalid pixels
                invalid = resize(invalid[None, None].astype(np.float32), self.out_size)[0, 0] > 0.5
        if d is not None:
            image = _augment.apply(image, d, invalid)
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
        >>> import geopandas as gpd, numpy as np
        >>> tif = GeoBox.from_origin(0, 16, 1, (16, 16), "EPSG:32633").write_geotiff(
        ...     getfixture("tmp_path") / "c.tif", np.ones((3, 16, 16), np.uint8))
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


def _assign(
    geoms: gpd.GeoSeries, located: np.ndarray, scenes: Sequence[SceneFile], chips: Sequence[int]
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
        crs = scene.geobox.crs
        if not sub.crs.equals(crs):
            reprojected.append(f"{crs_name(crs)} for {os.path.basename(scene.path)}")
            sub = sub.to_crs(crs)
        xy = np.column_stack([sub.x.to_numpy(), sub.y.to_numpy()])
        res = scene.geobox.resolution
        b = np.column_stack(chip_bounds(xy.T, np.zeros_like(xy.T), chips[k], res, scene.origin))
        inside = _within(b, scene.geobox.bounds, res)
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


def _room(b: np.ndarray, scene: SceneFile) -> np.ndarray:
    xmin, ymin, xmax, ymax = scene.geobox.bounds
    rx, ry = scene.geobox.resolution
    room = np.column_stack(
        [(b[:, 0] - xmin) / rx, (xmax - b[:, 2]) / rx, (b[:, 1] - ymin) / ry, (ymax - b[:, 3]) / ry]
    )
    return np.maximum(np.floor(room + 1e-6), 0).astype(np.int64)


def _nodata_fractions(scene: SceneFile, bounds: np.ndarray, bands: Sequence[int]) -> np.ndarray:
    """Share of invalid pixels in each chip (stored pixels, :func:`invalid_mask`)."""
    out = np.zeros(len(bounds))
    if not len(bounds):
        return out
    from geobind.sources import open_dataset

    (x0, y0), (rx, ry) = scene.origin, scene.geobox.resolution
    with open_dataset(scene.path) as src:
        for i, (xmin, ymin, xmax, ymax) in enumerate(bounds):
            window = Window(
                round((xmin - x0) / rx),
                round((y0 - ymax) / ry),
                round((xmax - xmin) / rx),
                round((ymax - ymin) / ry),
            )
            chip = src.read(bands, window=window)
            valid = read_dataset_mask(src, window) if scene.masked else None
            bad = invalid_mask(chip, scene.nodata, valid)
            out[i] = 0.0 if bad is None else bad.mean()
    return out
