"""Tiles: cutting a scene's grid into tile jobs, embedding them, and running them here or on dask.

A tile is ``tile × tile`` grid cells, one Zarr chunk, so parallel writers never share a chunk. A
tile reads its pixels with the chip halo (:meth:`ChipGrid.window`) in blocks of cell rows sized to
a fixed memory budget, so memory does not grow with the scene (or with a large ``stride``). Block
and batch composition depend only on the tile, so a tile's values never depend on which tiles ran
before. A tile's chunk is written first (Zarr writes each chunk atomically), then its flag in
``tiles/done``. A read error fails that tile only (:class:`FailedTile`); a write error stops the
job with a :class:`~geobind.errors.StoreError`.

Locally, a background thread reads the next block while the encoder embeds this one, and a writer
thread stores the previous tile. With dask each tile is a task: the worker loads the model once
(:class:`~geobind.inference.context.ModelRef`), reads, embeds and writes its tile itself.
"""

from __future__ import annotations

import contextlib
import errno
import os
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np

from geobind.data.datasets import SceneFile
from geobind.errors import InputDataError, StoreError
from geobind.inference.grid import ChipGrid, embed_pixels
from geobind.inference.store.metadata import _quiet

# Working memory of one read block: the pixels read, embed_pixels' band copy, its nodata mask and
# summed-area table (~17 bytes per pixel). Fixed, so memory does not grow with the scene; small
# enough that a 2048² scene already takes several blocks (more halo rows re-read: ~3 %).
_BLOCK_BYTES = 64 << 20


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


@dataclass(frozen=True)
class _Scene:
    """A source as one group of the store: the file (its GeoBox, nodata, dtype, mask) and the
    chip grid embedded on it."""

    name: str
    sha256: str  # the source's identity (a file's SHA-256; a URL's ETag, size and mtime)
    file: SceneFile
    grid: ChipGrid
    origin: Any = None  # the geobind.sources.Source it was opened from

    @property
    def source(self) -> str:
        """The path or URL the user gave (recorded in the store)."""
        return self.origin.label if self.origin is not None else self.file.path

    @property
    def crs(self) -> Any:
        return self.file.geobox.crs


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
    masked: bool  # the source has an alpha band or internal mask (read with each block)
    nodata_fraction: float
    batch_size: int
    dtype: str
    block_rows: int  # grid rows per read block
    # credentials for a remote source (never shown: dask logs a failed task's arguments)
    storage_options: tuple[tuple[str, Any], ...] = field(default=(), repr=False)
    path: str = ""  # what rasterio opens (a GDAL /vsi… path, VRT XML), when not ``source``
    store_options: tuple[tuple[str, Any], ...] = field(default=(), repr=False)  # the store's

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


def _block_rows(scene: _Scene, cols: int, n_read: int) -> int:
    grid = scene.grid
    width = (cols - 1) * grid.stride + grid.chip
    per_pixel = 2 * n_read * scene.file.dtype.itemsize + 17
    max_rows = max(grid.chip, _BLOCK_BYTES // (width * per_pixel))
    return max(1, (max_rows - grid.chip) // grid.stride + 1)


def _jobs(root: Any, scene: _Scene, settings: dict[str, Any], bands) -> tuple[list, int]:
    """The scene's unfinished tiles as jobs, and how many are finished."""
    import zarr

    with _quiet():
        done = zarr.open_array(root.zarr_store(), path=f"{scene.name}/tiles/done", mode="r")
        done = np.asarray(done[...])
    read_bands = tuple(sorted(set(bands)))
    local = tuple(read_bands.index(b) + 1 for b in bands)
    jobs = []
    for rows, cols in scene.grid.tiles(settings["tile"]):
        index = (rows.start // settings["tile"], cols.start // settings["tile"])
        if done[index]:
            continue
        jobs.append(
            _TileJob(
                store=str(root),  # a folder or a URL: workers open it themselves
                group=scene.name,
                tile=index,
                rows=(rows.start, rows.stop),
                cols=(cols.start, cols.stop),
                source=scene.source,
                grid=scene.grid,
                read_bands=read_bands,
                bands=local,
                nodata=scene.file.nodata,
                masked=scene.file.masked,
                nodata_fraction=settings["nodata_fraction"],
                batch_size=settings["batch_size"],
                dtype=settings["dtype"],
                block_rows=_block_rows(scene, cols.stop - cols.start, len(read_bands)),
                storage_options=scene.origin.storage_options if scene.origin else (),
                path=scene.file.path,
                store_options=root.options_key,
            )
        )
    return jobs, int(done.astype(bool).sum())


def _read_block(src: Any, job: _TileJob, rows: slice, cols: slice):
    """A block's pixels (the bands read) and its dataset mask (``None`` without one)."""
    from rasterio.windows import Window

    from geobind.data.chips import read_dataset_mask

    window = Window.from_slices(rows, cols)
    pixels = src.read(list(job.read_bands), window=window, boundless=False)
    return pixels, read_dataset_mask(src, window) if job.masked else None


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
    from geobind.sources import gdal_env, is_remote

    def produce():
        handles: dict[str, Any] = {}
        try:
            for job in jobs:
                for index, (cells, rows, cols) in enumerate(job.blocks()):
                    start = time.perf_counter()
                    try:  # remote sources: endpoint, credentials, retries (not across a yield:
                        path = job.path or job.source  # the generator may be closed elsewhere)
                        with gdal_env(dict(job.storage_options), remote=is_remote(path)):
                            if path not in handles:
                                handles[path] = rasterio.open(path)
                            pixels = _read_block(handles[path], job, rows, cols)
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
            pixels, valid = pixels
            out[:, cells] = embed_pixels(
                sat,
                pixels,
                chip=job.grid.chip,
                stride=job.grid.stride,
                nodata=job.nodata,
                valid=valid,
                nodata_fraction=job.nodata_fraction,
                bands=job.bands,
                batch_size=job.batch_size,
            )
            del pixels, valid
            timings["embed"] += time.perf_counter() - start
            if cells.stop == job.rows[1] - job.rows[0]:
                tile, out = out, None
                yield job, tile, None


def _location(job: _TileJob) -> Any:
    """The store a job writes to, opened in this process (cached per URL and options)."""
    from geobind.inference.store.location import store_location

    return store_location(job.store, dict(job.store_options))


@lru_cache(maxsize=32)
def _arrays(store: str, options: tuple, group: str, token: str) -> tuple[Any, Any]:
    import zarr

    from geobind.inference.store.location import store_location

    target = store_location(store, dict(options)).zarr_store()
    return (
        zarr.open_array(target, path=f"{group}/embedding", mode="r+"),
        zarr.open_array(target, path=f"{group}/tiles/done", mode="r+"),
    )


def _write_chunk(array: Any, job: _TileJob, data: np.ndarray) -> None:
    array[:, slice(*job.rows), slice(*job.cols)] = data.astype(job.dtype, copy=False)


def _write_tile(job: _TileJob, data: np.ndarray, timings: dict[str, float]) -> None:
    """The tile's chunk first, then its flag: a flag always means a complete chunk."""
    start = time.perf_counter()
    location = _location(job)
    try:  # a group rewritten since (overwrite) has another stamp: its arrays are opened anew
        token = location.stamp(f"{job.group}/zarr.json")
        embedding, done = _arrays(job.store, job.store_options, job.group, token)
        _write_chunk(embedding, job, data)  # one chunk: one atomic file or object
        done[job.tile] = 1  # only once the chunk is stored
    except Exception as err:
        from geobind.inference.store.location import is_backend_error

        if is_backend_error(err):  # the object store refused or failed
            doing = f"write tile {tuple(job.tile)} of group {job.group!r} to"
            raise location.backend_error(err, doing) from err
        if not isinstance(err, OSError):
            raise
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

    # the model travels as its files, once per worker: workers need no disk shared with us
    ref = client.scatter(ModelRef(model, ship=True), broadcast=True)
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
