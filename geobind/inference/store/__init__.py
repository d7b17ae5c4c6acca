"""Whole scenes → a resumable Zarr store of embedding grids, and queries over such stores.

:func:`embed_to_zarr` streams each scene in tiles (never the whole scene), embeds them with the
shared chip rules of :mod:`geobind.inference.grid`, and writes each tile as whole Zarr chunks.
:func:`query_store` scores a stored grid against a text, audio or photo query chunk by chunk and
writes a Cloud-Optimised GeoTIFF, a rendered PNG, or the best cells as vectors
(:mod:`geobind.inference.outputs`).

**Where.** A store is a local folder or an object store URL (``s3://bucket/x.zarr``, ``gs://…``,
``az://…``, ``memory://…``; :mod:`~geobind.inference.store.location`), with credentials and the
endpoint from the standard environment (``AWS_ENDPOINT_URL`` …) or ``storage_options=``.

**Layout** (Zarr v3; one group per scene, so each keeps its own CRS and grid)::

    STORE.zarr/                      root attrs["geobind"]: model, sat_sha256, model_source,
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
reruns in about the time it takes to hash the sources. Appending scenes with another satellite
encoder (:class:`~geobind.errors.ModelMismatchError`; a later binding stage of the store's model
keeps it, so it may append and query), chip size, stride, tile, dtype, band selection or nodata
rule is refused, as is a scene whose file changed since it was written (its SHA-256 is recorded).

**One writer.** In a folder, ``STORE/.geobind.lock`` holds an exclusive ``flock`` and the writer's
pid and host while a job runs; in an object store, ``STORE/.geobind.lease`` is a lease created
with a conditional put and renewed by a heartbeat (:mod:`~geobind.inference.store.lease`). A
second writer is refused with :class:`StoreLockedError`. A lock or lease left by a process that
died (``kill -9``), or a lease that expired, is taken over. A backend that cannot write
conditionally is refused with a :class:`StoreError`.

**Distributed.** With a dask ``Client`` (or a scheduler address), each tile is a task: the worker
loads the model once (:class:`~geobind.inference.context.ModelRef`: a preset by name, a folder or
an in-memory model as its files, scattered once per worker), reads its window (a file or a COG
URL), embeds it and writes its chunk and flag itself: a store in object storage is opened by each
worker from its URL (no shared disk), a local store must be on a file system the workers share.
A task lost with its worker is rerun by dask; a tile whose workers keep dying is reported as
failed, and finished tiles stay. geobind never starts a cluster.

**Faults.** A read error in a source fails that tile only: it is logged with its location, listed
in the returned :class:`StoreSummary` (and the store's ``tiles`` attrs), its cells stay NaN, and a
rerun retries it. A write error (disk full) stops the job with a :class:`StoreError`; finished
tiles are kept, the store stays readable, and a rerun finishes the job.

**Modules.** :mod:`~geobind.inference.store.location` (folders and object stores),
:mod:`~geobind.inference.store.lock` (the one-writer lock of a folder),
:mod:`~geobind.inference.store.lease` (the one-writer lease of an object store),
:mod:`~geobind.inference.store.metadata` (root settings, compatibility, group names, sources),
:mod:`~geobind.inference.store.tiles` (tile jobs, reading blocks, running tiles here or on dask),
:mod:`~geobind.inference.store.write` (:func:`embed_to_zarr`) and
:mod:`~geobind.inference.store.read` (:func:`store_groups`, :func:`open_store`,
:func:`query_store`).
"""

from __future__ import annotations

from geobind.errors import StoreError, StoreLockedError
from geobind.inference.store.lock import LOCK_NAME as LOCK_NAME
from geobind.inference.store.metadata import DTYPES as DTYPES
from geobind.inference.store.metadata import FORMAT as FORMAT
from geobind.inference.store.read import open_store, query_store, store_groups
from geobind.inference.store.tiles import FailedTile
from geobind.inference.store.write import StoreSummary, embed_to_zarr

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
