"""Whole scenes → a resumable Zarr store of embedding grids: :func:`embed_to_zarr`.

Plans each scene's grid, creates its group (metadata, coordinates and CRS, no data) and its tile
flags, then runs the unfinished tiles (:mod:`geobind.inference.store.tiles`) under the store's
lock (:mod:`geobind.inference.store.lock`). See :mod:`geobind.inference.store` for the layout and
the guarantees.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from geobind.errors import BandsError, InputDataError, OutputExistsError
from geobind.inference.provenance import grid_attrs, sat_sha256
from geobind.inference.store.lease import writer_lock
from geobind.inference.store.location import StoreLocation, is_backend_error, store_location
from geobind.inference.store.metadata import (
    DTYPES,
    FORMAT,
    _check_compatible,
    _clear,
    _consolidate,
    _group_name,
    _quiet,
    _remove_partials,
    _resolve,
    _root_settings,
    _same_model,
    _store_bytes,
    _write_root,
)
from geobind.inference.store.tiles import (
    FailedTile,
    _client,
    _jobs,
    _run_distributed,
    _run_local,
    _Scene,
    _TileJob,
)
from geobind.sources import resolve_sources

__all__ = ["StoreSummary", "embed_to_zarr"]

log = logging.getLogger(__name__)


@dataclass
class StoreSummary:
    """What :func:`embed_to_zarr` did: tiles written, skipped (finished earlier) and failed."""

    store: Path | str  # the folder, or the URL of a store in an object store
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


def _plan_scenes(sources, model, settings, stored_groups, bands) -> list[_Scene]:
    from geobind.data.datasets import SceneFile
    from geobind.inference.raster import model_chip_grid
    from geobind.sources import open_dataset

    by_source = {g["source"]: name for name, g in stored_groups.items()}
    taken = set(stored_groups)
    scenes = []
    for source in sources:
        name = by_source.get(source.label) or _group_name(source.name, taken)
        taken.add(name)
        if name in stored_groups and stored_groups[name]["sha256"] != source.identity:
            raise OutputExistsError(
                f"{source.label} changed since it was embedded into group {name!r} (identity "
                f"{stored_groups[name]['sha256'][-24:]} → {source.identity[-24:]}); its tiles "
                "would mix two versions. Write to a new store or pass overwrite=True (--overwrite)"
            )
        with open_dataset(source) as src:
            file = dataclasses.replace(SceneFile.from_rasterio(src), path=source.path)
        grid = model_chip_grid(
            file.geobox,
            model,
            chip_size=settings["chip_size"],
            stride=settings["stride"],
            gsd=settings["gsd"],
        )
        BandsError.check(bands, file.count, where=source.label)
        scenes.append(_Scene(name, source.identity, file, grid, source))
    return scenes


def _chunks(scene: _Scene, tile: int) -> tuple[int, int]:
    ny, nx = scene.grid.shape
    return min(tile, ny), min(tile, nx)


def _shown(root: StoreLocation) -> Path | str:
    return root.path if root.path is not None else root.url


def _create_group(root: StoreLocation, scene: _Scene, model: Any, settings: dict[str, Any]) -> None:
    """Write a scene's group: metadata, coordinates and CRS (no data), then its tile flags."""
    import dask.array as da
    import zarr

    from geobind.inference.raster import grid_dataarray

    if root.exists(scene.name):  # left by a job that died while creating it
        root.delete_prefix(scene.name)
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
            root.zarr_store(),
            group=scene.name,
            mode="w-",
            compute=False,
            zarr_format=3,
            consolidated=False,
            encoding={
                "embedding": {"chunks": (model.embed_dim, ty, tx), "dtype": settings["dtype"]}
            },
        )
        emb = zarr.open_array(root.zarr_store(), path=f"{scene.name}/embedding", mode="r+")
        emb.attrs["grid_mapping"] = "spatial_ref"
        tiles = zarr.open_group(
            root.zarr_store(), path=f"{scene.name}/tiles", mode="w", zarr_format=3
        )
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


def _finished(
    root: StoreLocation, stored: dict[str, Any] | None, sources: list, model: Any, asked: dict
) -> StoreSummary | None:
    """The summary of a job with nothing left to do, found without loading the model."""
    import zarr

    if stored is None or stored.get("format") != FORMAT or not _same_model(model, stored):
        return None
    if any(v is not None and stored.get(k) != v for k, v in asked.items()):
        return None
    by_source = {g["source"]: name for name, g in stored["groups"].items()}
    names, tiles = [], 0
    for source in sources:
        name = by_source.get(source.label)
        if name is None or stored["groups"][name]["sha256"] != source.identity:
            return None
        with _quiet():
            done = zarr.open_array(root.zarr_store(), path=f"{name}/tiles/done", mode="r")[...]
        if not np.all(done == 1):
            return None
        names.append(name)
        tiles += done.size
    return StoreSummary(_shown(root), names, tiles, 0, tiles, [], 0, 0.0, 0, {})


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
    storage_options: Mapping[str, Any] | None = None,
) -> StoreSummary:
    """Embed whole scenes into a Zarr store, tile by tile; resumes an interrupted job.

    Each source (GeoTIFF, VRT, anything rasterio reads) becomes one group of the store, named
    after its file stem. Rerunning the same call skips finished tiles and retries failed ones;
    adding sources appends groups. See the module docs for the layout and guarantees.

    Args:
        sources: a path, an ``http(s)://`` or ``s3://`` URL of a (Cloud-Optimised) GeoTIFF, a
            STAC Item/ItemCollection/catalogue (one group per item), or a list of them
            (:mod:`geobind.sources`). A remote source's identity is its URL, ETag, size and
            modification time; a local file's, its SHA-256.
        store: a local folder (``scenes.zarr``) or an object store URL (``s3://bucket/x.zarr``,
            ``gs://…``, ``az://…``, ``memory://…``; :mod:`~geobind.inference.store.location`);
            created when missing. A store URL's credentials and endpoint come from the standard
            environment or ``storage_options``.
        model: a preset name, model folder or loaded model (default: the model an existing
            store was written with, else :func:`geobind.use_model`'s). An existing store takes
            any model with its satellite encoder (e.g. a later binding stage of its model).
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
        storage_options: credentials and endpoint for remote sources (and the store), with
            fsspec's names (``endpoint_url``, ``key``, ``secret``, ``region``, ``anon``); by
            default the standard environment (``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID`` …).

    Returns:
        A :class:`StoreSummary` (tiles written, skipped, failed with their locations; cells;
        seconds; store size).

    Raises:
        ModelMismatchError: the store holds another satellite encoder's embeddings.
        OutputExistsError: the store was written with other settings (or is not a store).
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
    resolved = resolve_sources(sources, storage_options)  # paths, URLs, STAC items: each once
    root = store_location(store, storage_options)
    if dtype not in DTYPES:
        raise InputDataError(f"dtype must be one of {DTYPES}; got {dtype!r}")
    if int(tile) < 1 or int(batch_size) < 1:
        raise InputDataError(f"tile ({tile}) and batch_size ({batch_size}) must be ≥ 1")
    if not 0 <= nodata_fraction <= 1:
        raise InputDataError(f"nodata_fraction must be in [0, 1]; got {nodata_fraction}")
    if gsd is not None and not gsd > 0:
        raise InputDataError(f"gsd is the pixel size in metres and must be > 0; got {gsd}")
    dask_client, connected = _client(client)
    if dask_client is not None and root.in_process:
        raise InputDataError(
            f"{root} lives in this process's memory; dask workers cannot write to it. Use an "
            "object store (s3://…) or a folder the workers share"
        )
    root.check_writable()
    with root.errors("reach"):
        created = not root.exists()
    try:
        with writer_lock(root) as lease:
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
            summary = _finished(root, stored, resolved, model, asked)
            if summary is not None:  # rerun of a finished job: no model to load
                summary.seconds = time.perf_counter() - start
                summary.store_bytes = _store_bytes(root)
                return summary
            model = _resolve(model, stored)
            bands = tuple(int(b) for b in (bands or model["sat"].bands))
            settings = {
                "model": model.name,
                "sat_sha256": sat_sha256(model),
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
                _check_compatible(root, stored, settings, model)
            groups = dict(stored.get("groups", {})) if stored else {}
            scenes = _plan_scenes(resolved, model, settings, groups, bands)
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
            summary = _run(root, jobs, model, dask_client, progress, tqdm, lease)
            from geobind.inference.index import refresh_after_write

            refresh_after_write(root)  # the index (if any) follows its groups
    except BaseException as err:
        if created and root.local:  # nothing of a new store was written: leave no empty folder
            with contextlib.suppress(OSError):
                root.path.rmdir()
        if is_backend_error(err):  # the object store refused (credentials, bucket, network)
            raise root.backend_error(err, "write") from None
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


def _run(root: StoreLocation, jobs, model, client, progress: bool, tqdm, lease) -> StoreSummary:
    timings = {"tiles": 0.0, "read": 0.0, "embed": 0.0, "write": 0.0}
    summary = StoreSummary(_shown(root), [], 0, 0, 0, [], 0, 0.0, 0, timings)
    start = time.perf_counter()
    failed: dict[str, list[FailedTile]] = {job.group: [] for job in jobs}
    bar = tqdm(total=len(jobs), unit="tile", desc=f"embedding → {root.name}", disable=not progress)

    def report(job: _TileJob, failure: FailedTile | None) -> None:
        lease.check()  # another job took the store over: stop writing
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
        try:  # a full disk, or an object store refusing, must not hide the original error
            if lease.lost is None:  # a lost store is another job's now
                _remove_partials(root)  # chunk files a dead worker had begun
                _record_failures(root, failed)
                _consolidate(root, list(failed))
        except Exception as err:
            if not (isinstance(err, OSError) or is_backend_error(err)):
                raise
            log.warning("could not record the job's failed tiles in %s: %s", root, err)
    return summary


def _record_failures(root: StoreLocation, failed: dict[str, list[FailedTile]]) -> None:
    import zarr

    with _quiet():
        for group, tiles in failed.items():
            node = zarr.open_group(
                root.zarr_store(), path=f"{group}/tiles", mode="r+", use_consolidated=False
            )
            node.attrs["failed"] = [
                {**vars(t), "tile": list(t.tile), "rows": list(t.rows), "cols": list(t.cols)}
                for t in sorted(tiles, key=lambda t: t.tile)
            ]
