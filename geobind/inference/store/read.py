"""Reading stores: their groups, one group's grid, and queries scored chunk by chunk.

:func:`query_store` scores a stored grid against a text, audio or photo query a few chunks at a
time, so stores larger than memory work, and streams the map into the writers of
:mod:`geobind.inference.outputs` (a COG, a PNG, an interactive page) or keeps the best cells (a
top-k scan).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from geobind.errors import InputDataError
from geobind.inference.outputs import (
    CogWriter,
    output_kind,
    png_step,
    write_html,
    write_png,
    write_vector,
)
from geobind.inference.provenance import check_same_sat
from geobind.inference.store.location import store_location
from geobind.inference.store.metadata import _quiet, _resolve, _root_settings

__all__ = ["open_store", "query_store", "store_groups"]


def store_groups(
    store: str | os.PathLike, *, storage_options: Mapping[str, Any] | None = None
) -> list[str]:
    """The scene groups of a geobind store (a folder or an object store URL), in the order they
    were added. ``storage_options``: credentials and endpoint of a store URL (default: the
    standard environment, ``AWS_ENDPOINT_URL`` …).

    Example:
        >>> store_groups(getfixture("tmp_path") / "missing.zarr")
        Traceback (most recent call last):
        ...
        geobind.errors.InputDataError: store ... does not exist (no zarr.json there)
    """
    root = store_location(store, storage_options)
    with root.errors("read"):
        raw = root.read("zarr.json")
    if raw is None:
        raise InputDataError(f"store {root} does not exist (no zarr.json there)")
    try:
        attrs = json.loads(raw).get("attributes", {})
    except ValueError as err:
        raise InputDataError(f"{root}/zarr.json is not valid JSON: {err}") from None
    if "geobind" not in attrs:
        raise InputDataError(f"{root} is a Zarr store but not a geobind one (no 'geobind' attrs)")
    return list(attrs["geobind"]["groups"])


def open_store(
    store: str | os.PathLike,
    *,
    group: str | None = None,
    storage_options: Mapping[str, Any] | None = None,
) -> Any:
    """One scene's grid from a store: a lazy (dask) ``DataArray(embedding, y, x)`` with CRS.

    ``group`` may be left out when the store holds one scene. ``store`` is a folder or an object
    store URL (``s3://bucket/x.zarr``; credentials from the environment or ``storage_options``).

    Example:
        >>> import numpy as np
        >>> from geobind.georef import GeoBox
        >>> from geobind.inference.store import embed_to_zarr
        >>> tif = GeoBox.from_origin(500_000, 4_600_096, 1, (96, 96), "EPSG:32633").write_geotiff(
        ...     getfixture("tmp_path") / "scene.tif", np.full((3, 96, 96), 120, np.uint8))
        >>> _ = embed_to_zarr(tif, tif.with_name("s.zarr"), model="tiny", stride=32)
        >>> grid = open_store(tif.with_name("s.zarr"))
        >>> grid.dims, str(grid.rio.crs)
        (('embedding', 'y', 'x'), 'EPSG:32633')
    """
    import rioxarray  # noqa: F401 - registers .rio
    import xarray as xr

    groups = store_groups(store, storage_options=storage_options)
    if group is None:
        if len(groups) != 1:
            raise InputDataError(
                f"store {store} holds {len(groups)} scenes ({', '.join(groups)}); pass group=NAME"
            )
        group = groups[0]
    elif group not in groups:
        raise InputDataError(f"store {store} has no group {group!r}; it has {', '.join(groups)}")
    root = store_location(store, storage_options)
    with _quiet(), root.errors("read"):
        ds = xr.open_zarr(root.zarr_store(read_only=True), group=group)
    return ds["embedding"]


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

        from geobind.georef import cell_polygons

        order = np.lexsort((self.index, -self.scores))  # best first, ties in row-major order
        scores, index = self.scores[order], self.index[order]
        rows, cols = np.divmod(index, self.width)
        cells = cell_polygons(transform, rows, cols)
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


def query_store(
    store: str | os.PathLike,
    query: Any,
    out: str | os.PathLike,
    *,
    model: Any = None,
    groups: Sequence[str] | None = None,
    top_k: int | None = None,
    png: bool = False,
    tiles: str | None = "OpenStreetMap",
    progress: bool = False,
    storage_options: Mapping[str, Any] | None = None,
) -> list[Path]:
    """Score a store against one query, chunk by chunk, and write maps or the best cells.

    The query is text, an audio file (``.wav`` …), a photo (``.jpg`` …) or an embedding (see
    :func:`~geobind.inference.query.embed_query`), embedded by ``model`` (default: the store's),
    which must carry the satellite encoder that embedded the store: the store's model or a later
    binding stage of it. ``out``'s suffix picks the output: ``.tif`` a Cloud-Optimised GeoTIFF of
    cosine similarity (float32, NaN nodata, the store's CRS); ``.png`` a rendered map with a
    colour bar; ``.html`` an interactive map (the page :func:`geobind.explore` makes: the map as
    an overlay with its legend, the ``top_k`` best cells (default 10) with rank and score, the
    scene's RGB when the store's source file is still there, and ``tiles`` as the base map, or
    none with ``tiles=None``: the page then needs no network); ``.geojson``, ``.parquet`` or
    ``.gpkg`` the ``top_k`` best cells (default 10) as polygons, best first. ``png=True`` also
    writes a PNG next to a GeoTIFF, and ``top_k`` with a map also writes ``<out>.geojson``.
    With several groups each gets its own file (``map_<group>.tif``). The files are written by
    :mod:`geobind.inference.outputs`. ``store`` may be an object store URL (``s3://…``; its
    credentials from the environment or ``storage_options``); ``out`` is a local path.

    Returns:
        The files written.

    Raises:
        ModelMismatchError: ``model`` has another satellite encoder than the store's.
        InputDataError: an output suffix it cannot tell, a missing store, group or folder.

    Example:
        >>> import numpy as np
        >>> from geobind.inference.store import embed_to_zarr
        >>> from geobind.georef import GeoBox
        >>> tmp = getfixture("tmp_path")
        >>> scene = np.random.default_rng(0).integers(0, 255, (3, 96, 96), dtype=np.uint8)
        >>> tif = GeoBox.from_origin(0, 96, 1, (96, 96), "EPSG:32633").write_geotiff(tmp / "a.tif",
        ...                                                                          scene)
        >>> _ = embed_to_zarr(tif, tmp / "s.zarr", model="tiny", stride=32)
        >>> [p.name for p in query_store(tmp / "s.zarr", "a busy highway", tmp / "map.tif")]
        ['map.tif']
    """
    from geobind.inference.query import embed_query
    from geobind.inference.raster import scores

    out = Path(out)
    output_kind(out)  # refuses a suffix it cannot tell, before any work
    if top_k is not None and top_k < 1:
        raise InputDataError(f"top_k must be ≥ 1; got {top_k}")
    names = list(groups or store_groups(store, storage_options=storage_options))
    if not out.parent.is_dir():
        raise InputDataError(f"the output folder {out.parent} does not exist")
    written: list[Path] = []
    for name in names:
        grid = open_store(store, group=name, storage_options=storage_options)
        with store_location(store, storage_options).errors("read"):
            stored = _root_settings(store_location(store, storage_options)) or {}
        chosen = _resolve(model, stored)
        # the group records who embedded it; the root, which model to name in the fix
        made_by = {**grid.attrs, "model_source": stored.get("model_source")}
        check_same_sat(made_by, chosen, where=str(store))
        vectors, labels, several = embed_query(chosen, query)
        if several:
            raise InputDataError("query_store takes one query at a time")
        similarity = scores(grid, vectors, labels, False)
        target = out if len(names) == 1 else out.with_name(f"{out.stem}_{name}{out.suffix}")
        bands = getattr(chosen, "config", {}).get("sat", {}).get("bands", [1, 2, 3])
        page = {"tiles": tiles, "bands": bands}
        written += _write_outputs(
            similarity, grid, target, labels[0], name, top_k, png, progress, page
        )
    return written


def _write_outputs(
    similarity, grid, target: Path, label: str, group: str, top_k, png, progress, page=None
):
    """Stream a lazy ``(y, x)`` map, a few chunks at a time, into the outputs ``target`` asks
    for: a COG (and its PNG), a PNG sampled to at most ``PNG_MAX_SIDE`` a side, the best cells,
    an interactive page (the sampled map and the best cells; ``page``: its ``tiles`` and the
    ``bands`` of the scene's RGB)."""
    ny, nx = similarity.shape
    transform, crs = grid.rio.transform(), grid.rio.crs
    kind = output_kind(target)
    cog = CogWriter(target, (ny, nx), transform, crs) if kind == "cog" else None
    png_path = (
        target if kind == "png" else (target.with_suffix(".png") if png and kind == "cog" else None)
    )
    vector_path = (
        target
        if kind == "vector"
        else (target.with_suffix(".geojson") if top_k is not None else None)
    )
    html = kind == "html"
    best = _TopK(top_k or 10, nx) if vector_path is not None or html else None
    step = png_step((ny, nx))
    sampled = png_path is not None or html
    image = np.full((-(-ny // step), -(-nx // step)), np.nan, np.float32) if sampled else None
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
    if png_path is not None:
        write_png(png_path, image, grid.rio.bounds(), crs, f"{label!r} — {group}")
        written.append(png_path)
    if html:
        from affine import Affine

        from geobind.inference.webmap import MapLayer, source_rgb

        page = page or {}
        cells = best.frame(transform, crs, group)
        layer = MapLayer(
            label, image, transform * Affine.scale(step), crs, cells, bounds=grid.rio.bounds()
        )
        scene = source_rgb(grid.attrs.get("source"), page.get("bands", (1, 2, 3)))
        write_html(target, [layer], rgb=scene, tiles=page.get("tiles", "OpenStreetMap"))
        written.append(target)
    if vector_path is not None:
        write_vector(best.frame(transform, crs, group), vector_path)
        written.append(vector_path)
    return written
