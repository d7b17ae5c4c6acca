"""Whole scenes → a resumable Zarr store of embedding grids, and queries over such stores.

:func:`embed_to_zarr` streams each scene in tiles (never the whole scene), embeds them with the
shared chip rules of :mod:`geobind.inference.grid`, and writes each tile as whole Zarr chunks.
:func:`query_store` scores a stored grid against a text, audio or photo query chunk by chunk and
writes a Cloud-Optimised GeoTIFF, a rendered PNG, or the best cells as vectors.

**Layout** (Zarr v3; one group per scene, so each keeps its own CRS and grid)::

    STORE.zarr/                      root attrs["geobind"]: model, model_sha256, model_source,
                                     chip_size, stride, tile, dtype, nodata_fraction, bands, gsd,
                                     groups {name: {source, sha256}}
      <scene>/                       one per source file; name = file stem (alpha, alpha_2 …)
        embedding (embedding, y, x)  float32 | float16, chunks (embed_dim, tile, tile), NaN fill
        y, x, spatial_ref            cell-centre coordinates and the CF grid mapping (rioxarray)
        tiles/done (tile_y, tile_x)  int8, 1 once a tile's chunk is written; one chunk per tile
                                     (attrs["failed"]: tiles that failed in the last run)

``xr.open_zarr(store, group="alpha")["embedding"]`` is the same grid as
``raster.geobind.embed()`` (``.rio.crs`` and ``.rio.transform()`` included). xarray lists
``embedding`` under the coordinates because it shares its name with its first dimension.
Several files on one grid (a mosaic) are embedded as one scene by passing a VRT of them
(``gdalbuildvrt mosaic.vrt *.tif``).

**Tiles.** A tile is ``tile × tile`` grid cells (default 256, clamped to the grid), which is one
Zarr chunk, so parallel writers never share a chunk. A tile reads its pixels with the chip halo
(:meth:`ChipGrid.window`) in blocks of cell rows sized to a fixed memory budget, so memory does
not grow with the scene (or with a large ``stride``). Block and batch composition depend only on
the tile, so a tile's values never depend on which tiles ran before: a resumed store is bitwise
equal to an uninterrupted one (for the same ``batch_size``).

**Resume.** A tile's chunk is written first (Zarr writes each chunk atomically), then its flag in
``tiles/done``. Rerunning the same job skips finished tiles and retries failed ones; a finished job
reruns in about the time it takes to hash the sources. Appending scenes with another model,
chip size, stride, tile, dtype, band selection or nodata rule is refused, as is a scene whose
file changed since it was written (its SHA-256 is recorded).

**One writer.** ``STORE/.geobind.lock`` holds an exclusive ``flock`` and the writer's pid and host
while a job runs; a second writer is refused with :class:`StoreLockedError`. A lock left by a
process that died (``kill -9``) is taken over.

**Distributed.** With a dask ``Client`` (or a scheduler address), each tile is a task: the worker
loads the model once (:class:`~geobind.inference.context.ModelRef`, cached per process), reads its
window, embeds it and writes its chunk and flag itself, so the store and the sources must be on
a file system the workers share. A task lost with its worker is rerun by dask; a tile whose
workers keep dying is reported as failed, and finished tiles stay. geobind never starts a cluster.

**Faults.** A read error in a source fails that tile only: it is logged with its location, listed
in the returned :class:`StoreSummary` (and the store's ``tiles`` attrs), its cells stay NaN, and a
rerun retries it. A write error (disk full) stops the job with a :class:`StoreError`; finished
tiles are kept, the store stays readable, and a rerun finishes the job.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import math
import os
import shutil
import socket
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from geobind.errors import (
    InputDataError,
    OutputExistsError,
    StoreError,
    StoreLockedError,
)
from geobind.inference.grid import ChipGrid, embed_pixels
from geobind.inference.raster import model_sha256

__all__ = [
    "FailedTile",
    "StoreError",
    "StoreLockedError",
    "StoreSummary",
    "embed_to_zarr",
    "open_store",
    "query_store",
    "store_groups",
]

log = logging.getLogger(__name__)

FORMAT = "geobind-zarr/1"
LOCK_NAME = ".geobind.lock"
DTYPES = ("float32", "float16")
# Working memory of one read block: the pixels read, embed_pixels' band copy, its nodata mask and
# summed-area table (~17 bytes per pixel). Fixed, so memory does not grow with the scene; small
# enough that a 2048² scene already takes several blocks (more halo rows re-read: ~3 %).
_BLOCK_BYTES = 64 << 20
_PNG_MAX = 2048  # longest side of a rendered map, in pixels
_RASTER_SUFFIXES = (".tif", ".tiff")
_VECTOR_SUFFIXES = (".geojson", ".json", ".parquet", ".geoparquet", ".gpkg")


@dataclass(frozen=True)
class FailedTile:
    """A tile that could not be embedded (a read error in its source), with its location."""

    group: str
    tile: tuple[int, int]
    source: str
    rows: tuple[int, int]  # source pixel rows [start, stop) of the block that failed
    cols: tuple[int, int]
    bounds: tuple[float, float, float, float]  # (left, bottom, right, top) in the scene's CRS
    error: str

    def __str__(self) -> str:
        left, bottom, right, top = self.bounds
        return (
            f"{self.group} tile {self.tile}: {self.source} pixel rows {self.rows[0]}–{self.rows[1]}"
            f", cols {self.cols[0]}–{self.cols[1]} (x {left:.6g}–{right:.6g}, "
            f"y {bottom:.6g}–{top:.6g}): {self.error}"
        )


@dataclass
class StoreSummary:
    """What :func:`embed_to_zarr` did: tiles written, skipped (finished earlier) and failed."""

    store: Path
    groups: list[str]
    tiles: int
    done: int
    skipped: int
    failed: list[FailedTile]
    cells: int
    seconds: float
    store_bytes: int
    # seconds: tiles (wall time of the tile loop), read (in the background), embed, write
    timings: dict[str, float] = field(default_factory=dict)

    def __str__(self) -> str:
        busy = self.timings.get("tiles", 0.0)
        rate = f", {self.done / busy:.2f} tiles/s while embedding" if self.done else ""
        lines = [
            f"{self.store}: {self.done} tiles written ({self.cells:,} cells), "
            f"{self.skipped} already done, {len(self.failed)} failed, of {self.tiles} "
            f"in {len(self.groups)} group(s) ({', '.join(self.groups)})",
            f"  {self.seconds:.1f} s in all{rate}; store size {self.store_bytes / 2**20:.1f} MiB",
        ]
        lines += [f"  failed: {tile}" for tile in self.failed]
        return "\n".join(lines)


@dataclass(frozen=True)
class _Scene:
    name: str
    source: str
    sha256: str
    grid: ChipGrid
    crs: Any
    nodata: float | None
    count: int
    itemsize: int


@dataclass(frozen=True)
class _TileJob:
    """One tile: everything a worker needs to embed it and write its chunk (picklable)."""

    store: str
    group: str
    tile: tuple[int, int]
    rows: tuple[int, int]  # grid cells [start, stop)
    cols: tuple[int, int]
    source: str
    grid: ChipGrid
    read_bands: tuple[int, ...]  # 1-based bands read from the source
    bands: tuple[int, ...]  # the model's bands as positions in read_bands (1-based)
    nodata: float | None
    nodata_fraction: float
    batch_size: int
    dtype: str
    block_rows: int  # grid rows per read block

    @property
    def cells(self) -> int:
        return (self.rows[1] - self.rows[0]) * (self.cols[1] - self.cols[0])

    def blocks(self) -> list[tuple[slice, slice, slice]]:
        """``(cell rows within the tile, pixel rows, pixel cols)`` of each read block."""
        out = []
        cols = slice(*self.cols)
        for r in range(self.rows[0], self.rows[1], self.block_rows):
            rows = slice(r, min(r + self.block_rows, self.rows[1]))
            wr, wc = self.grid.window(rows, cols)
            out.append((slice(rows.start - self.rows[0], rows.stop - self.rows[0]), wr, wc))
        return out


# --------------------------------------------------------------------------- the lock


def _proc_start(pid: int) -> str | None:
    """Start time of a process (Linux), so a reused pid is not mistaken for the lock's owner."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _alive(info: dict[str, Any]) -> bool:
    if info.get("host") != socket.gethostname():
        return True  # cannot tell from here: assume it is
    pid = int(info.get("pid", -1))
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return pid > 0
    start = info.get("start")
    return start is None or _proc_start(pid) in (None, start)


class _StoreLock:
    """``STORE/.geobind.lock``: an exclusive ``flock`` plus the owner's pid and host.

    The kernel drops a dead process's ``flock``, so a lock left by ``kill -9`` is taken over;
    where ``flock`` is unavailable (some network file systems) the pid decides.
    """

    def __init__(self, root: Path):
        self.path = root / LOCK_NAME
        self._fd: int | None = None

    def _refuse(self, info: dict[str, Any]) -> StoreLockedError:
        who = f"pid {info.get('pid', '?')} on {info.get('host', '?')}"
        return StoreLockedError(
            f"{self.path.parent} is being written by another job ({who}); wait for it to finish, "
            f"or delete {self.path} if no such job is running"
        )

    def _read(self) -> dict[str, Any]:
        try:
            return json.loads(self.path.read_text() or "{}")
        except (OSError, ValueError):
            return {}

    def acquire(self) -> _StoreLock:
        try:
            import fcntl
        except ImportError:  # Windows: the pid decides
            fcntl = None
        host = socket.gethostname()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(10):
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            locked = fcntl is not None
            try:
                if locked:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise self._refuse(self._read()) from None
            except OSError:  # no flock on this file system: the recorded pid decides
                locked = False
            try:  # the file we locked may have been unlinked by its previous owner: retry
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if not same:
                os.close(fd)
                continue
            old = self._read()
            other = bool(old.get("pid")) and (old.get("host"), old.get("pid")) != (
                host,
                os.getpid(),
            )
            # a live writer that flock did not stop (flock is a no-op on some network file
            # systems); a writer on another host is only known dead by its released flock
            if other and (_alive(old) if old.get("host") == host else not locked):
                os.close(fd)
                raise self._refuse(old)
            if other:
                log.warning(
                    "taking over the lock of %s left by pid %s on %s (no longer running)",
                    self.path.parent,
                    old.get("pid"),
                    old.get("host"),
                )
            me = {"pid": os.getpid(), "host": host, "start": _proc_start(os.getpid())}
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(me).encode(), 0)
            self._fd = fd
            return self
        raise StoreLockedError(f"could not lock {self.path}: it keeps being replaced")

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                self.path.unlink()
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> _StoreLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


# --------------------------------------------------------------------------- store metadata


def _sha256(path: Path) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence zarr's notes on v3 consolidated metadata and on the lock file it lists.

    Only around metadata calls in the main thread: ``catch_warnings`` is process-global.
    """
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*[Cc]onsolidated metadata.*")
        warnings.filterwarnings("ignore", message=".*not recognized as a component of a Zarr.*")
        yield


def _root_settings(root: Path) -> dict[str, Any] | None:
    """The store's ``geobind`` attrs; ``None`` for a new store; refuses foreign folders."""
    if not root.exists():
        return None
    if not root.is_dir():
        raise OutputExistsError(f"{root} is a file, not a Zarr store; choose another path")
    meta = root / "zarr.json"
    if not meta.exists():
        if any(p.name != LOCK_NAME for p in root.iterdir()):
            raise OutputExistsError(
                f"{root} exists and is not a Zarr store; choose a new path, or pass "
                "overwrite=True (--overwrite) to replace it"
            )
        return None
    try:
        attrs = json.loads(meta.read_text()).get("attributes", {})
    except ValueError as err:
        raise OutputExistsError(
            f"{meta} is not valid JSON ({err}); is {root} a Zarr store?"
        ) from None
    if "geobind" not in attrs:
        raise OutputExistsError(
            f"{root} is a Zarr store but not one geobind wrote (no 'geobind' attributes at its "
            "root); choose a new path, or pass overwrite=True (--overwrite) to replace it"
        )
    return attrs["geobind"]


def _clear(root: Path) -> None:
    if not root.exists():
        return
    for entry in root.iterdir():
        if entry.name == LOCK_NAME:
            continue
        shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()


def _check_compatible(root: Path, stored: dict[str, Any], settings: dict[str, Any]) -> None:
    fix = (
        "Rerun with the store's settings, write to a new store, or pass overwrite=True "
        "(--overwrite) to replace it"
    )
    if stored.get("format") != FORMAT:
        raise OutputExistsError(
            f"{root} was written in format {stored.get('format')!r}; this geobind writes "
            f"{FORMAT!r}. Write to a new store or pass overwrite=True (--overwrite)"
        )
    if stored["model_sha256"] != settings["model_sha256"]:
        raise OutputExistsError(
            f"{root} holds embeddings of model {stored['model']!r} (sha256 "
            f"{stored['model_sha256'][:12]}…); this job uses model {settings['model']!r} (sha256 "
            f"{settings['model_sha256'][:12]}…), whose embeddings cannot be mixed with them. Use "
            f"the store's model (model={stored.get('model_source')!r}), write to a new store, or "
            "pass overwrite=True (--overwrite) to replace it"
        )
    for key in ("chip_size", "stride", "tile", "dtype", "nodata_fraction", "bands", "gsd"):
        if stored.get(key) != settings[key]:
            raise OutputExistsError(
                f"{root} was written with {key}={stored.get(key)!r}; this job asks for "
                f"{key}={settings[key]!r}. {fix}"
            )


def _group_name(stem: str, taken: set[str]) -> str:
    base = "".join(c if c.isalnum() or c in "-_." else "_" for c in stem).lstrip("._") or "scene"
    name, n = base, 1
    while name in taken:
        n += 1
        name = f"{base}_{n}"
    return name


def _plan_scenes(paths, model, settings, stored_groups, bands) -> list[_Scene]:
    import rasterio
    import rioxarray

    from geobind.inference.raster import plan_grid

    by_source = {g["source"]: name for name, g in stored_groups.items()}
    taken = set(stored_groups)
    scenes = []
    for path in paths:
        source = str(path)
        name = by_source.get(source) or _group_name(path.stem, taken)
        taken.add(name)
        digest = _sha256(path)
        if name in stored_groups and stored_groups[name]["sha256"] != digest:
            raise OutputExistsError(
                f"{path} changed since it was embedded into group {name!r} (sha256 "
                f"{stored_groups[name]['sha256'][:12]}… → {digest[:12]}…); its tiles would mix "
                "two versions. Write to a new store or pass overwrite=True (--overwrite)"
            )
        try:
            raster = rioxarray.open_rasterio(path, lock=False, cache=False)
        except rasterio.errors.RasterioError as err:
            raise InputDataError(f"cannot open {path} as a raster: {err}") from None
        with contextlib.closing(raster):
            lay, grid = plan_grid(
                raster,
                model,
                chip_size=settings["chip_size"],
                stride=settings["stride"],
                gsd=settings["gsd"],
            )
            count = raster.sizes[lay.band] if lay.band else 1
            itemsize = raster.dtype.itemsize
        if max(bands) > count or min(bands) < 1:
            raise InputDataError(
                f"the model reads bands {list(bands)} (1-based) but {path} has {count} band(s); "
                "pass bands=[...] naming the red, green and blue bands (e.g. bands=[1, 1, 1] for "
                "a single-band raster)"
            )
        scenes.append(_Scene(name, source, digest, grid, lay.crs, lay.nodata, count, itemsize))
    return scenes


def _chunks(scene: _Scene, tile: int) -> tuple[int, int]:
    ny, nx = scene.grid.shape
    return min(tile, ny), min(tile, nx)


def _create_group(root: Path, scene: _Scene, model: Any, settings: dict[str, Any]) -> None:
    """Write a scene's group: metadata, coordinates and CRS (no data), then its tile flags."""
    import dask.array as da
    import zarr

    from geobind.inference.raster import grid_attrs, grid_dataarray

    if (root / scene.name).exists():  # left by a job that died while creating it
        shutil.rmtree(root / scene.name)
    ty, tx = _chunks(scene, settings["tile"])
    attrs = grid_attrs(
        model,
        scene.grid,
        nodata_fraction=settings["nodata_fraction"],
        source=scene.source,
        source_sha256=scene.sha256,
    )
    template = da.empty((model.embed_dim, *scene.grid.shape), chunks=(-1, ty, tx), dtype="f4")
    grid = grid_dataarray(template, scene.grid, scene.crs, attrs=attrs)
    ds = grid.to_dataset()
    ds.attrs = {**attrs, "coordinates": "spatial_ref", "tile": settings["tile"]}
    with _quiet():
        ds.to_zarr(
            root,
            group=scene.name,
            mode="w-",
            compute=False,
            zarr_format=3,
            consolidated=False,
            encoding={
                "embedding": {"chunks": (model.embed_dim, ty, tx), "dtype": settings["dtype"]}
            },
        )
        emb = zarr.open_array(root, path=f"{scene.name}/embedding", mode="r+")
        emb.attrs["grid_mapping"] = "spatial_ref"
        tiles = zarr.open_group(root, path=f"{scene.name}/tiles", mode="w", zarr_format=3)
        tiles.attrs["failed"] = []
        tiles.create_array(
            "done",
            shape=(-(-scene.grid.shape[0] // ty), -(-scene.grid.shape[1] // tx)),
            chunks=(1, 1),  # one object per tile: parallel writers never share one
            dtype="int8",
            fill_value=0,
            compressors=None,
            dimension_names=["tile_y", "tile_x"],
        )


def _write_root(root: Path, settings: dict[str, Any], groups: dict[str, Any]) -> None:
    import zarr

    with _quiet():
        group = zarr.open_group(root, mode="a", zarr_format=3, use_consolidated=False)
        group.attrs["geobind"] = {**settings, "format": FORMAT, "groups": groups}


def _consolidate(root: Path, names: Sequence[str]) -> None:
    """Consolidated metadata, so ``xr.open_zarr`` opens groups without listing the store."""
    import zarr

    with _quiet():
        for name in names:
            zarr.consolidate_metadata(root, path=name)
        zarr.consolidate_metadata(root)


def _remove_partials(root: Path) -> None:
    """Temporary chunk files (``*.partial``) a killed writer left behind."""
    for folder, _, files in os.walk(root):
        for name in files:
            if name.endswith(".partial"):
                with contextlib.suppress(OSError):
                    os.unlink(os.path.join(folder, name))


def _store_bytes(root: Path) -> int:
    total = 0
    for folder, _, files in os.walk(root):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.stat(os.path.join(folder, name)).st_size
    return total


# --------------------------------------------------------------------------- tiles


def _block_rows(scene: _Scene, cols: int, n_read: int) -> int:
    grid = scene.grid
    width = (cols - 1) * grid.stride + grid.chip
    per_pixel = 2 * n_read * scene.itemsize + 17
    max_rows = max(grid.chip, _BLOCK_BYTES // (width * per_pixel))
    return max(1, (max_rows - grid.chip) // grid.stride + 1)


def _jobs(root: Path, scene: _Scene, settings: dict[str, Any], bands) -> tuple[list, int]:
    """The scene's unfinished tiles as jobs, and how many are finished."""
    import zarr

    with _quiet():
        done = np.asarray(zarr.open_array(root, path=f"{scene.name}/tiles/done", mode="r")[...])
    read_bands = tuple(sorted(set(bands)))
    local = tuple(read_bands.index(b) + 1 for b in bands)
    jobs = []
    for rows, cols in scene.grid.tiles(settings["tile"]):
        index = (rows.start // settings["tile"], cols.start // settings["tile"])
        if done[index]:
            continue
        jobs.append(
            _TileJob(
                store=str(root),
                group=scene.name,
                tile=index,
                rows=(rows.start, rows.stop),
                cols=(cols.start, cols.stop),
                source=scene.source,
                grid=scene.grid,
                read_bands=read_bands,
                bands=local,
                nodata=scene.nodata,
                nodata_fraction=settings["nodata_fraction"],
                batch_size=settings["batch_size"],
                dtype=settings["dtype"],
                block_rows=_block_rows(scene, cols.stop - cols.start, len(read_bands)),
            )
        )
    return jobs, int(done.astype(bool).sum())


def _read_block(src: Any, job: _TileJob, rows: slice, cols: slice) -> np.ndarray:
    from rasterio.windows import Window

    return src.read(list(job.read_bands), window=Window.from_slices(rows, cols), boundless=False)


def _failure(job: _TileJob, rows: slice, cols: slice, err: BaseException) -> FailedTile:
    from rasterio.windows import Window, bounds

    left, bottom, right, top = bounds(Window.from_slices(rows, cols), job.grid.raster_transform)
    causes, cause = [str(err)], err.__cause__ or err.__context__
    while cause is not None and len(causes) < 3:
        causes.append(str(cause))
        cause = cause.__cause__ or cause.__context__
    return FailedTile(
        group=job.group,
        tile=tuple(job.tile),
        source=job.source,
        rows=(rows.start, rows.stop),
        cols=(cols.start, cols.stop),
        bounds=(min(left, right), min(bottom, top), max(left, right), max(bottom, top)),
        error=f"{type(err).__name__}: " + " ← ".join(dict.fromkeys(c for c in causes if c)),
    )


def _tile_results(
    jobs: Sequence[_TileJob], sat: Any, timings: dict[str, float]
) -> Iterator[tuple[_TileJob, np.ndarray | None, FailedTile | None]]:
    """Each job's embedded tile ``(embed_dim, rows, cols)`` or its read failure, in order.

    A background thread reads the next block while the encoder embeds this one.
    """
    import rasterio

    from geobind.models.encoders import _background

    def produce():
        handles: dict[str, Any] = {}
        try:
            for job in jobs:
                for index, (cells, rows, cols) in enumerate(job.blocks()):
                    start = time.perf_counter()
                    try:
                        if job.source not in handles:
                            handles[job.source] = rasterio.open(job.source)
                        pixels = _read_block(handles[job.source], job, rows, cols)
                        failure = None
                    except (rasterio.errors.RasterioError, OSError) as err:
                        pixels, failure = None, _failure(job, rows, cols, err)
                    timings["read"] += time.perf_counter() - start
                    yield job, index, cells, pixels, failure
                    if failure is not None:
                        break
        finally:
            for handle in handles.values():
                handle.close()

    out = None
    with contextlib.closing(_background(produce(), depth=1)) as items:
        for job, index, cells, pixels, failure in items:
            if failure is not None:
                out = None
                yield job, None, failure
                continue
            start = time.perf_counter()
            if index == 0:
                shape = (sat.embed_dim, job.rows[1] - job.rows[0], job.cols[1] - job.cols[0])
                out = np.full(shape, np.nan, np.float32)
            out[:, cells] = embed_pixels(
                sat,
                pixels,
                chip=job.grid.chip,
                stride=job.grid.stride,
                nodata=job.nodata,
                nodata_fraction=job.nodata_fraction,
                bands=job.bands,
                batch_size=job.batch_size,
            )
            del pixels
            timings["embed"] += time.perf_counter() - start
            if cells.stop == job.rows[1] - job.rows[0]:
                tile, out = out, None
                yield job, tile, None


@lru_cache(maxsize=32)
def _arrays(store: str, group: str, token: float) -> tuple[Any, Any]:
    import zarr

    return (
        zarr.open_array(store, path=f"{group}/embedding", mode="r+"),
        zarr.open_array(store, path=f"{group}/tiles/done", mode="r+"),
    )


def _write_chunk(array: Any, job: _TileJob, data: np.ndarray) -> None:
    array[:, slice(*job.rows), slice(*job.cols)] = data.astype(job.dtype, copy=False)


def _write_tile(job: _TileJob, data: np.ndarray, timings: dict[str, float]) -> None:
    """The tile's chunk first, then its flag: a flag always means a complete chunk."""
    start = time.perf_counter()
    token = os.stat(Path(job.store) / job.group / "zarr.json").st_mtime_ns
    embedding, done = _arrays(job.store, job.group, token)
    try:
        _write_chunk(embedding, job, data)
        done[job.tile] = 1
    except OSError as err:
        reason = (
            "no space left on device"
            if err.errno in (errno.ENOSPC, errno.EDQUOT)
            else (err.strerror or str(err))
        )
        raise StoreError(
            f"writing tile {tuple(job.tile)} of group {job.group!r} to {job.store} failed: "
            f"{reason}. Finished tiles are kept and the store stays readable; free space (or fix "
            "the cause) and rerun the same command to finish"
        ) from err
    timings["write"] += time.perf_counter() - start


@lru_cache(maxsize=1)
def _worker_malloc() -> None:
    """Let large allocations come from the heap again in a dask worker (once per process).

    dask's nanny sets ``MALLOC_TRIM_THRESHOLD_``, which also turns off glibc's adaptive mmap
    threshold: every activation tensor then costs fresh zeroed pages. Measured here (demo encoder,
    one thread): 354 chips/s, 203 with dask's setting, 294 with it and a 32 MiB mmap threshold
    (glibc's own adaptive maximum), which this sets and which keeps dask's trimming.
    """
    import ctypes
    import sys

    if not sys.platform.startswith("linux") or "MALLOC_TRIM_THRESHOLD_" not in os.environ:
        return
    if "MALLOC_MMAP_THRESHOLD_" in os.environ:
        return
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").mallopt(-3, 32 << 20)  # M_MMAP_THRESHOLD


def _run_tile(job: _TileJob, ref: Any) -> tuple[dict[str, float], FailedTile | None]:
    """A dask task: embed one tile and write it (the model loads once per worker process)."""
    _worker_malloc()
    timings = {"read": 0.0, "embed": 0.0, "write": 0.0}
    for _, data, failure in _tile_results([job], ref.get()["sat"], timings):
        if failure is not None:
            return timings, failure
        _write_tile(job, data, timings)
    return timings, None


def _run_local(jobs, model, timings, report: Callable) -> None:
    with (
        ThreadPoolExecutor(1, thread_name_prefix="geobind-zarr-write") as writer,
        contextlib.closing(_tile_results(jobs, model["sat"], timings)) as results,
    ):
        pending = None
        for job, data, failure in results:
            if failure is not None:
                report(job, failure)
                continue
            if pending is not None:  # at most one tile waits for the disk
                pending[0].result()
                report(pending[1], None)
            pending = (writer.submit(_write_tile, job, data, timings), job)
        if pending is not None:
            pending[0].result()
            report(pending[1], None)


def _is_killed_worker(err: BaseException) -> bool:
    return type(err).__name__ in ("KilledWorker", "FutureCancelledError", "CancelledError")


def _run_distributed(jobs, model, client, timings, report: Callable) -> None:
    from distributed import as_completed

    from geobind.inference.context import ModelRef

    ref = ModelRef(model)
    run = uuid.uuid4().hex[:8]
    futures = {
        client.submit(_run_tile, job, ref, key=f"geobind-tile-{run}-{i}", pure=False): job
        for i, job in enumerate(jobs)
    }
    try:
        for future in as_completed(futures):
            job = futures[future]
            try:
                result, failure = future.result()
            except Exception as err:
                if not _is_killed_worker(err):
                    raise
                window = job.grid.window(slice(*job.rows), slice(*job.cols))
                report(job, _failure(job, *window, err))
                continue
            for key, value in result.items():
                timings[key] += value
            report(job, failure)
    finally:
        client.cancel([f for f in futures if not f.done()])


def _client(client: Any) -> tuple[Any, bool]:
    """``(client or None, whether we connected it)``: a Client, an address, or the default."""
    if client is False:
        return None, False
    if client is None:
        import sys

        if "distributed" not in sys.modules:
            return None, False
        from distributed import default_client

        try:
            return default_client(), False
        except ValueError:
            return None, False
    if isinstance(client, str):
        try:
            from distributed import Client
        except ImportError:
            from geobind.errors import MissingDependencyError

            raise MissingDependencyError(
                "a scheduler address needs dask.distributed: pip install 'dask[distributed]'"
            ) from None
        try:
            return Client(client, timeout="20s"), True
        except (OSError, TimeoutError) as err:
            raise InputDataError(f"cannot reach the dask scheduler at {client}: {err}") from None
    return client, False


# --------------------------------------------------------------------------- embed_to_zarr


def _source_paths(sources: Any) -> list[Path]:
    items = [sources] if isinstance(sources, str | os.PathLike) else list(sources)
    if not items:
        raise InputDataError("no source given: pass a GeoTIFF/VRT path or a list of them")
    paths = []
    for item in items:
        path = Path(item).expanduser().resolve()
        if not path.is_file():
            raise InputDataError(f"source {item} does not exist (or is not a file)")
        if path not in paths:
            paths.append(path)
    return paths


def _resolve(model: Any, stored: dict[str, Any] | None) -> Any:
    """``model``, else the store's own model, else :func:`geobind.use_model`'s default."""
    from geobind.inference.context import resolve_model

    if model is None and stored is not None and stored.get("model_source") is not None:
        return resolve_model(stored["model_source"])
    return resolve_model(model)


def _same_model(model: Any, stored: dict[str, Any]) -> bool:
    """Whether ``model`` is the store's, known without building it (``False``: build and see)."""
    import sys

    models = sys.modules.get("geobind.models")  # a loaded model means it is imported: no torch
    if models is not None and isinstance(model, models.GeoBind):
        return model_sha256(model) == stored["model_sha256"]
    spec = stored.get("model_source") if model is None else model
    if not isinstance(spec, str | os.PathLike):
        return False
    folder = Path(spec).expanduser()
    if (folder / "geobind.json").is_file():  # a model folder: its recorded weights hash
        try:
            meta = json.loads((folder / "geobind.json").read_text())
        except (OSError, ValueError):
            return False
        return meta.get("weights_sha256") == stored["model_sha256"]
    return str(spec) == stored.get("model_source")  # a preset: deterministic weights


def _finished(
    root: Path, stored: dict[str, Any] | None, paths: list[Path], model: Any, asked: dict
) -> StoreSummary | None:
    """The summary of a job with nothing left to do, found without loading the model."""
    import zarr

    if stored is None or stored.get("format") != FORMAT or not _same_model(model, stored):
        return None
    if any(v is not None and stored.get(k) != v for k, v in asked.items()):
        return None
    by_source = {g["source"]: name for name, g in stored["groups"].items()}
    names, tiles = [], 0
    for path in paths:
        name = by_source.get(str(path))
        if name is None or stored["groups"][name]["sha256"] != _sha256(path):
            return None
        with _quiet():
            done = zarr.open_array(root, path=f"{name}/tiles/done", mode="r")[...]
        if not np.all(done == 1):
            return None
        names.append(name)
        tiles += done.size
    return StoreSummary(root, names, tiles, 0, tiles, [], 0, 0.0, 0, {})


def embed_to_zarr(
    sources: str | os.PathLike | Sequence[str | os.PathLike],
    store: str | os.PathLike,
    model: Any = None,
    *,
    chip_size: int | None = None,
    stride: int | None = None,
    tile: int = 256,
    dtype: str = "float32",
    batch_size: int = 64,
    nodata_fraction: float = 0.5,
    bands: Sequence[int] | None = None,
    gsd: float | None = None,
    client: Any = None,
    overwrite: bool = False,
    progress: bool = False,
) -> StoreSummary:
    """Embed whole scenes into a Zarr store, tile by tile; resumes an interrupted job.

    Each source (GeoTIFF, VRT, anything rasterio reads) becomes one group of the store, named
    after its file stem. Rerunning the same call skips finished tiles and retries failed ones;
    adding sources appends groups. See the module docs for the layout and guarantees.

    Args:
        sources: one path or a list of paths.
        store: a local folder (``scenes.zarr``); created when missing.
        model: a preset name, model folder or loaded model (default: the model an existing
            store was written with, else :func:`geobind.use_model`'s).
        chip_size: chip side in raster pixels (default: the model's footprint at the raster's GSD).
        stride: pixels between chips (default: half a chip).
        batch_size: chips per encoder batch (results are bitwise reproducible for the same one).
        nodata_fraction: chips with a larger share of nodata pixels are NaN cells.
        bands: 1-based bands read as the model's (default: the model's, e.g. ``[1, 2, 3]``).
        gsd: the rasters' pixel size in metres, for rasters whose CRS does not say.
        tile: grid cells per side of a tile and Zarr chunk (clamped to the grid). Keep it ≥ 256
            for real scenes: small chunks make stores slow to write and read.
        dtype: ``"float32"`` or ``"float16"`` (cast on write; queries compute in float32).
        client: a dask ``Client`` or a scheduler address: tiles run as tasks on its workers.
            ``None`` uses the current default client if there is one, ``False`` never does.
        overwrite: replace whatever the store holds.
        progress: show a progress bar (tiles, tiles/s).

    Returns:
        A :class:`StoreSummary` (tiles written, skipped, failed with their locations; cells;
        seconds; store size).

    Raises:
        OutputExistsError: the store holds another model's (or another setting's) embeddings.
        StoreLockedError: another job is writing the store.
        StoreError: a write failed (e.g. disk full); finished tiles are kept.

    Example:
        >>> import numpy as np, xarray as xr, rioxarray  # noqa: F401
        >>> scene = xr.DataArray(np.full((3, 96, 96), 120, np.uint8), dims=("band", "y", "x"),
        ...     coords={"y": 4_600_000.5 - np.arange(96), "x": 500_000.5 + np.arange(96)})
        >>> tmp = getfixture("tmp_path")
        >>> scene.rio.write_crs(32633).rio.to_raster(tmp / "scene.tif")
        >>> summary = embed_to_zarr(tmp / "scene.tif", tmp / "s.zarr", model="tiny", stride=32)
        >>> summary.done, summary.failed
        (1, [])
        >>> xr.open_zarr(tmp / "s.zarr", group="scene")["embedding"].shape
        (64, 3, 3)
    """
    from tqdm.auto import tqdm

    start = time.perf_counter()
    paths = _source_paths(sources)
    root = Path(store).expanduser().resolve()
    if dtype not in DTYPES:
        raise InputDataError(f"dtype must be one of {DTYPES}; got {dtype!r}")
    if int(tile) < 1 or int(batch_size) < 1:
        raise InputDataError(f"tile ({tile}) and batch_size ({batch_size}) must be ≥ 1")
    if not 0 <= nodata_fraction <= 1:
        raise InputDataError(f"nodata_fraction must be in [0, 1]; got {nodata_fraction}")
    dask_client, connected = _client(client)
    created = not root.exists()
    try:
        with _StoreLock(root):
            if overwrite:
                _clear(root)
            stored = _root_settings(root)
            asked = {
                "chip_size": chip_size,
                "stride": stride,
                "tile": int(tile),
                "dtype": dtype,
                "nodata_fraction": float(nodata_fraction),
                "bands": None if bands is None else [int(b) for b in bands],
                "gsd": gsd,
            }
            summary = _finished(root, stored, paths, model, asked)
            if summary is not None:  # rerun of a finished job: no model to load
                summary.seconds = time.perf_counter() - start
                summary.store_bytes = _store_bytes(root)
                return summary
            model = _resolve(model, stored)
            if dask_client is not None and model.source is None:
                raise InputDataError(
                    "this model was built in memory and cannot be sent to dask workers; save it "
                    "with model.save(folder) on a file system the workers share and pass the "
                    "folder as model="
                )
            bands = tuple(int(b) for b in (bands or model["sat"].bands))
            settings = {
                "model": model.name,
                "model_sha256": model_sha256(model),
                "model_source": model.source,
                "chip_size": None if chip_size is None else int(chip_size),
                "stride": None if stride is None else int(stride),
                "tile": int(tile),
                "dtype": dtype,
                "nodata_fraction": float(nodata_fraction),
                "bands": list(bands),
                "gsd": None if gsd is None else float(gsd),
            }
            if stored is not None:
                _check_compatible(root, stored, settings)
            groups = dict(stored.get("groups", {})) if stored else {}
            scenes = _plan_scenes(paths, model, settings, groups, bands)
            _remove_partials(root)
            _write_root(root, settings, groups)  # first, so a job dying next can be rerun
            for scene in scenes:
                if scene.name not in groups:
                    _create_group(root, scene, model, settings)
                    groups[scene.name] = {"source": scene.source, "sha256": scene.sha256}
            _write_root(root, settings, groups)
            _consolidate(root, list(groups))
            settings["batch_size"] = int(batch_size)  # not recorded: it does not change results
            jobs, skipped, total = [], 0, 0
            for scene in scenes:
                pending, finished = _jobs(root, scene, settings, bands)
                jobs += pending
                skipped += finished
                total += len(pending) + finished
            summary = _run(root, jobs, model, dask_client, progress, tqdm)
    except BaseException:
        if created:  # nothing of a new store was written: leave no empty folder behind
            with contextlib.suppress(OSError):
                root.rmdir()
        raise
    finally:
        if connected:
            dask_client.close()
    summary.groups = [s.name for s in scenes]
    summary.tiles, summary.skipped = total, skipped
    summary.seconds = time.perf_counter() - start
    summary.store_bytes = _store_bytes(root)
    if summary.failed:
        log.warning(
            "%d tile(s) failed (listed in the summary); rerun the same job to retry them",
            len(summary.failed),
        )
    return summary


def _run(root: Path, jobs, model, client, progress: bool, tqdm) -> StoreSummary:
    timings = {"tiles": 0.0, "read": 0.0, "embed": 0.0, "write": 0.0}
    summary = StoreSummary(root, [], 0, 0, 0, [], 0, 0.0, 0, timings)
    start = time.perf_counter()
    failed: dict[str, list[FailedTile]] = {job.group: [] for job in jobs}
    bar = tqdm(total=len(jobs), unit="tile", desc=f"embedding → {root.name}", disable=not progress)

    def report(job: _TileJob, failure: FailedTile | None) -> None:
        if failure is None:
            summary.done += 1
            summary.cells += job.cells
        else:
            log.warning("tile failed: %s", failure)
            summary.failed.append(failure)
            failed[job.group].append(failure)
        bar.update(1)

    try:
        if jobs and client is not None:
            _run_distributed(jobs, model, client, timings, report)
        elif jobs:
            _run_local(jobs, model, timings, report)
    finally:
        timings["tiles"] = time.perf_counter() - start
        bar.close()
        with contextlib.suppress(OSError):  # a full disk must not hide the original error
            _remove_partials(root)  # chunk files a dead worker had begun
            _record_failures(root, failed)
            _consolidate(root, list(failed))
    return summary


def _record_failures(root: Path, failed: dict[str, list[FailedTile]]) -> None:
    import zarr

    with _quiet():
        for group, tiles in failed.items():
            node = zarr.open_group(root, path=f"{group}/tiles", mode="r+", use_consolidated=False)
            node.attrs["failed"] = [
                {**vars(t), "tile": list(t.tile), "rows": list(t.rows), "cols": list(t.cols)}
                for t in sorted(tiles, key=lambda t: t.tile)
            ]


# --------------------------------------------------------------------------- reading stores


def store_groups(store: str | os.PathLike) -> list[str]:
    """The scene groups of a geobind store, in the order they were added.

    Example:
        >>> store_groups(getfixture("tmp_path") / "missing.zarr")
        Traceback (most recent call last):
        ...
        geobind.errors.InputDataError: store ... does not exist (no zarr.json there)
    """
    root = Path(store).expanduser()
    if not (root / "zarr.json").is_file():
        raise InputDataError(f"store {root} does not exist (no zarr.json there)")
    try:
        attrs = json.loads((root / "zarr.json").read_text()).get("attributes", {})
    except ValueError as err:
        raise InputDataError(f"{root}/zarr.json is not valid JSON: {err}") from None
    if "geobind" not in attrs:
        raise InputDataError(f"{root} is a Zarr store but not a geobind one (no 'geobind' attrs)")
    return list(attrs["geobind"]["groups"])


def open_store(store: str | os.PathLike, *, group: str | None = None) -> Any:
    """One scene's grid from a store: a lazy (dask) ``DataArray(embedding, y, x)`` with CRS.

    ``group`` may be left out when the store holds one scene.

    Example:
        >>> import numpy as np, xarray as xr, rioxarray  # noqa: F401
        >>> scene = xr.DataArray(np.full((3, 96, 96), 120, np.uint8), dims=("band", "y", "x"),
        ...     coords={"y": 4_600_000.5 - np.arange(96), "x": 500_000.5 + np.arange(96)})
        >>> tmp = getfixture("tmp_path")
        >>> scene.rio.write_crs(32633).rio.to_raster(tmp / "scene.tif")
        >>> _ = embed_to_zarr(tmp / "scene.tif", tmp / "s.zarr", model="tiny", stride=32)
        >>> grid = open_store(tmp / "s.zarr")
        >>> grid.dims, str(grid.rio.crs)
        (('embedding', 'y', 'x'), 'EPSG:32633')
    """
    import rioxarray  # noqa: F401 - registers .rio
    import xarray as xr

    groups = store_groups(store)
    if group is None:
        if len(groups) != 1:
            raise InputDataError(
                f"store {store} holds {len(groups)} scenes ({', '.join(groups)}); pass group=NAME"
            )
        group = groups[0]
    elif group not in groups:
        raise InputDataError(f"store {store} has no group {group!r}; it has {', '.join(groups)}")
    with _quiet():
        ds = xr.open_zarr(store, group=group)
    return ds["embedding"]


def _check_model(model: Any, grid: Any, store: Any) -> None:
    if model_sha256(model) != grid.attrs.get("model_sha256"):
        raise InputDataError(
            f"{store} holds embeddings of model {grid.attrs.get('model')!r} (sha256 "
            f"{str(grid.attrs.get('model_sha256'))[:12]}…), not of {model.name!r} (sha256 "
            f"{model_sha256(model)[:12]}…): a query must be embedded by the store's model. Leave "
            "model out to use the store's"
        )


def _blocks(similarity: Any, progress: bool, desc: str) -> Iterator[tuple[slice, slice, Any]]:
    """``(rows, cols, values)`` of a lazy ``(y, x)`` map, a few chunks computed at a time."""
    import dask
    from tqdm.auto import tqdm

    data = similarity.data
    if not hasattr(data, "dask"):
        yield slice(0, data.shape[0]), slice(0, data.shape[1]), np.asarray(data)
        return
    ys, xs = (np.cumsum((0, *c)) for c in data.chunks)
    keys = [(i, j) for i in range(len(ys) - 1) for j in range(len(xs) - 1)]
    step = max(1, os.cpu_count() or 1)
    with tqdm(total=len(keys), unit="chunk", desc=desc, disable=not progress) as bar:
        for k in range(0, len(keys), step):
            group = keys[k : k + step]
            values = dask.compute(*[data.blocks[i, j] for i, j in group])
            for (i, j), value in zip(group, values, strict=True):
                yield slice(ys[i], ys[i + 1]), slice(xs[j], xs[j + 1]), value
            bar.update(len(group))


class _TopK:
    def __init__(self, k: int, width: int):
        self.k, self.width = k, width
        self.scores = np.empty(0, np.float32)
        self.index = np.empty(0, np.int64)

    def add(self, rows: slice, cols: slice, values: np.ndarray) -> None:
        r, c = np.nonzero(np.isfinite(values))
        scores = values[r, c].astype(np.float32)
        index = (r + rows.start).astype(np.int64) * self.width + (c + cols.start)
        scores, index = np.concatenate([self.scores, scores]), np.concatenate([self.index, index])
        if scores.size > self.k:
            keep = np.argpartition(-scores, self.k - 1)[: self.k]
            scores, index = scores[keep], index[keep]
        self.scores, self.index = scores, index

    def frame(self, transform: Any, crs: Any, group: str) -> Any:
        import geopandas as gpd
        import shapely

        order = np.lexsort((self.index, -self.scores))  # best first, ties in row-major order
        scores, index = self.scores[order], self.index[order]
        rows, cols = np.divmod(index, self.width)
        x0, y0 = transform * (cols, rows)
        x1, y1 = transform * (cols + 1, rows + 1)
        cells = shapely.box(
            np.minimum(x0, x1), np.minimum(y0, y1), np.maximum(x0, x1), np.maximum(y0, y1)
        )
        return gpd.GeoDataFrame(
            {
                "rank": np.arange(1, len(scores) + 1),
                "score": scores,
                "row": rows,
                "col": cols,
                "group": group,
            },
            geometry=cells,
            crs=crs,
        )


def _write_vector(frame: Any, path: Path) -> None:
    if path.suffix.lower() in (".parquet", ".geoparquet"):
        frame.to_parquet(path)
    else:
        driver = "GPKG" if path.suffix.lower() == ".gpkg" else "GeoJSON"
        if path.exists():
            path.unlink()
        frame.to_file(path, driver=driver)


def _cog(path: Path, shape: tuple[int, int], transform: Any, crs: Any):
    """A writer for windows of a float32 map; :meth:`close` turns it into a COG at ``path``."""
    import rasterio
    import rasterio.shutil
    from rasterio.windows import Window

    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tif")
    dst = rasterio.open(
        tmp,
        "w",
        driver="GTiff",
        width=shape[1],
        height=shape[0],
        count=1,
        dtype="float32",
        crs=crs,
        transform=transform,
        nodata=float("nan"),
        tiled=True,
        blockxsize=256,
        blockysize=256,
        BIGTIFF="IF_SAFER",
    )

    class Writer:
        def write(self, rows: slice, cols: slice, values: np.ndarray) -> None:
            dst.write(
                values.astype(np.float32, copy=False), 1, window=Window.from_slices(rows, cols)
            )

        def close(self, ok: bool = True) -> None:
            dst.close()
            try:
                if ok:
                    block = 512 if max(shape) > 2048 else 256
                    levels = max(1, math.ceil(math.log2(max(shape) / block)))
                    final = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.cog.tif")
                    rasterio.shutil.copy(
                        tmp,
                        final,
                        driver="COG",
                        COMPRESS="DEFLATE",
                        PREDICTOR="YES",
                        BLOCKSIZE=block,
                        OVERVIEW_COUNT=levels,
                        RESAMPLING="AVERAGE",
                        BIGTIFF="IF_SAFER",
                    )
                    os.replace(final, path)
            finally:
                with contextlib.suppress(OSError):
                    tmp.unlink()

    return Writer()


def _render_png(path: Path, image: np.ndarray, bounds, crs, title: str) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    left, bottom, right, top = bounds
    aspect = image.shape[0] / max(image.shape[1], 1)
    fig = Figure(figsize=(8, max(3.0, min(14.0, 7 * aspect + 1))), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    finite = image[np.isfinite(image)]
    vmin, vmax = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    shown = ax.imshow(
        np.ma.masked_invalid(image),
        extent=(left, right, bottom, top),
        cmap="magma",
        vmin=vmin,
        vmax=vmax,
        interpolation="nearest",
    )
    fig.colorbar(shown, ax=ax, label="cosine similarity", shrink=0.85)
    ax.set_title(title)
    units = (crs.linear_units if crs is not None and crs.is_projected else "") or ""
    ax.set_xlabel(f"x ({units})" if units else "x")
    ax.set_ylabel(f"y ({units})" if units else "y")
    ax.ticklabel_format(useOffset=False, style="plain")
    fig.tight_layout()
    fig.savefig(path)


def query_store(
    store: str | os.PathLike,
    query: Any,
    out: str | os.PathLike,
    *,
    model: Any = None,
    groups: Sequence[str] | None = None,
    top_k: int | None = None,
    png: bool = False,
    progress: bool = False,
) -> list[Path]:
    """Score a store against one query, chunk by chunk, and write maps or the best cells.

    The query is text, an audio file (``.wav`` …), a photo (``.jpg`` …) or an embedding (see
    :func:`~geobind.inference.query.embed_query`), embedded by the store's model. ``out``'s suffix
    picks the output: ``.tif`` a Cloud-Optimised GeoTIFF of cosine similarity (float32, NaN
    nodata, the store's CRS); ``.png`` a rendered map with a colour bar; ``.geojson``,
    ``.parquet`` or ``.gpkg`` the ``top_k`` best cells (default 10) as polygons, best first.
    ``png=True`` also writes a PNG next to a GeoTIFF, and ``top_k`` with a map also writes
    ``<out>.geojson``. With several groups each gets its own file (``map_<group>.tif``).

    Returns:
        The files written.

    Example:
        >>> import numpy as np, xarray as xr, rioxarray  # noqa: F401
        >>> scene = xr.DataArray(np.full((3, 96, 96), 120, np.uint8), dims=("band", "y", "x"),
        ...     coords={"y": 4_600_000.5 - np.arange(96), "x": 500_000.5 + np.arange(96)})
        >>> tmp = getfixture("tmp_path")
        >>> scene.rio.write_crs(32633).rio.to_raster(tmp / "scene.tif")
        >>> _ = embed_to_zarr(tmp / "scene.tif", tmp / "s.zarr", model="tiny", stride=32)
        >>> [p.name for p in query_store(tmp / "s.zarr", "a busy highway", tmp / "map.tif")]
        ['map.tif']
    """
    from geobind.inference.query import embed_query
    from geobind.inference.raster import scores

    out = Path(out)
    suffix = out.suffix.lower()
    if suffix not in (*_RASTER_SUFFIXES, ".png", *_VECTOR_SUFFIXES):
        raise InputDataError(
            f"cannot tell what to write from {out.name!r}: use .tif (a COG), .png (a rendered "
            "map) or .geojson/.parquet/.gpkg (the best cells)"
        )
    if top_k is not None and top_k < 1:
        raise InputDataError(f"top_k must be ≥ 1; got {top_k}")
    names = list(groups or store_groups(store))
    if not out.parent.is_dir():
        raise InputDataError(f"the output folder {out.parent} does not exist")
    written: list[Path] = []
    for name in names:
        grid = open_store(store, group=name)
        chosen = _resolve(model, _root_settings(Path(store)))
        _check_model(chosen, grid, store)
        vectors, labels, several = embed_query(chosen, query)
        if several:
            raise InputDataError("query_store takes one query at a time")
        similarity = scores(grid, vectors, labels, False)
        target = out if len(names) == 1 else out.with_name(f"{out.stem}_{name}{out.suffix}")
        written += _write_outputs(similarity, grid, target, labels[0], name, top_k, png, progress)
    return written


def _write_outputs(similarity, grid, target: Path, label: str, group: str, top_k, png, progress):
    ny, nx = similarity.shape
    transform, crs = grid.rio.transform(), grid.rio.crs
    suffix = target.suffix.lower()
    cog = _cog(target, (ny, nx), transform, crs) if suffix in _RASTER_SUFFIXES else None
    png_path = (
        target
        if suffix == ".png"
        else (target.with_suffix(".png") if png and suffix in _RASTER_SUFFIXES else None)
    )
    vector_path = (
        target
        if suffix in _VECTOR_SUFFIXES
        else (target.with_suffix(".geojson") if top_k is not None else None)
    )
    best = _TopK(top_k or 10, nx) if vector_path is not None else None
    step = max(1, math.ceil(max(ny, nx) / _PNG_MAX))
    image = np.full((-(-ny // step), -(-nx // step)), np.nan, np.float32) if png_path else None
    ok = False
    try:
        for rows, cols, values in _blocks(similarity, progress, f"query {group}"):
            if cog is not None:
                cog.write(rows, cols, values)
            if best is not None:
                best.add(rows, cols, values)
            if image is not None:
                r0, c0 = (-rows.start) % step, (-cols.start) % step
                image[
                    (rows.start + r0) // step : -(-rows.stop // step),
                    (cols.start + c0) // step : -(-cols.stop // step),
                ] = values[r0::step, c0::step]
        ok = True
    finally:
        if cog is not None:
            cog.close(ok)
    written = [target] if cog is not None else []
    if image is not None:
        _render_png(png_path, image, grid.rio.bounds(), crs, f"{label!r} — {group}")
        written.append(png_path)
    if best is not None:
        _write_vector(best.frame(transform, crs, group), vector_path)
        written.append(vector_path)
    return written
