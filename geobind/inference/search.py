"""Search a whole store: the best cells of every group for one query, as polygons in EPSG:4326.

:func:`search` embeds a query (text, audio, photo, vector, or a geometry: "places like this")
and finds the ``k`` best cells of all the store's groups, with the store's search index
(:mod:`geobind.inference.index`) or, with ``exact=True``, by scoring every cell (the scan runs
chunk by chunk as dask tasks, in parallel over groups and chunks, on the current dask client
if there is one). The exact scan is the truth the index is measured against
(``benchmarks/search.py``).

Groups of one store may be in different CRSs (UTM zones across a continent), so hits are
returned as cell polygons in EPSG:4326, each with its group, row, column, and its polygon in
its own CRS (``cell_wkt``, ``cell_crs``).

Stores in object stores (``s3://…``) are searched as local ones are: the exact scan reads their
chunks, and the index is read from a local cache (:mod:`geobind.inference.index_location`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from geobind.errors import InputDataError

__all__ = ["search", "search_vectors", "write_hits"]

GEOMETRY_SUFFIXES = frozenset({".geojson", ".gpkg", ".parquet", ".geoparquet", ".shp", ".fgb"})


def _is_geometry(query: Any) -> bool:
    if hasattr(query, "geom_type") or hasattr(query, "geometry"):
        return True
    return isinstance(query, str | os.PathLike) and Path(query).suffix.lower() in GEOMETRY_SUFFIXES


def _geometries(query: Any) -> Any:
    """A query geometry as a GeoSeries (a bare shapely geometry is taken as EPSG:4326)."""
    import geopandas as gpd

    from geobind.errors import CRSError

    if isinstance(query, str | os.PathLike):
        if not Path(query).is_file():
            raise InputDataError(f"query file {query} does not exist")
        query = gpd.read_file(query)
    if hasattr(query, "geom_type") and not hasattr(query, "crs"):
        return gpd.GeoSeries([query], crs="EPSG:4326")
    geoms = query.geometry if hasattr(query, "geometry") else query
    if getattr(geoms, "crs", None) is None:
        raise CRSError(
            "the query geometries have no CRS; set the CRS their coordinates are in, e.g. "
            "gdf.set_crs('EPSG:4326')"
        )
    if len(geoms) == 0:
        raise InputDataError("the query GeoDataFrame has no rows")
    return gpd.GeoSeries([geoms.union_all()], crs=geoms.crs)


def _geometry_vector(root: Any, names: Sequence[str], query: Any) -> np.ndarray:
    """The unit mean embedding of the cells a geometry covers, over every group it touches."""
    import shapely

    from geobind.inference.store.read import open_store
    from geobind.inference.zonal import cell_weights, grid_cells, grid_transform, zonal_mean

    geoms = _geometries(query)
    values, weights = [], []
    for name in names:
        grid = open_store(root.store, group=name)
        local = geoms.to_crs(grid.rio.crs).values
        if not np.isfinite(shapely.bounds(local)).all():
            continue  # outside the CRS's area of use
        shape = (grid.sizes["y"], grid.sizes["x"])
        ((cells, w),) = cell_weights(local, grid_transform(grid), shape)
        if cells.size:
            values.append(grid_cells(grid, cells))
            weights.append(w)
    if not values:
        raise InputDataError(
            f"the query geometry covers no cell of store {root}; is it where the store's scenes "
            "are (and in the CRS it says)?"
        )
    cells = np.concatenate(values, axis=1)
    mean = zonal_mean(cells, [(np.arange(cells.shape[1]), np.concatenate(weights))])
    if np.isnan(mean).any():
        raise InputDataError("the query geometry covers only NaN cells of the store")
    return mean


def _query_vectors(root: Any, settings: dict, names, query, model, kinds, templates):
    """``(vectors (1, D), label)`` of a query over a store."""
    from geobind.inference.provenance import check_same_sat
    from geobind.inference.query import embed_query
    from geobind.inference.store.metadata import _resolve

    if query is not None and _is_geometry(query):
        label = Path(query).name if isinstance(query, str | os.PathLike) else "geometry"
        return _geometry_vector(root, names, query), label
    vector_only = kinds.get("vector") is not None or hasattr(query, "shape")
    if vector_only and model is None:
        import zarr

        from geobind.inference.store.metadata import _quiet

        with _quiet():
            dim = zarr.open_array(root.zarr, path=f"{names[0]}/embedding", mode="r").shape[0]
        chosen = SimpleNamespace(embed_dim=int(dim))
    else:
        chosen = _resolve(model, settings)
        check_same_sat(settings, chosen, where=f"store {root}")
    vectors, labels, several = embed_query(chosen, query, templates=templates, **kinds)
    if several:
        raise InputDataError("search takes one query at a time; loop over several")
    return vectors, labels[0]


def _chunk_best(array: Any, r0: int, c0: int, vectors: np.ndarray, k: int):
    """The ``k`` best valid cells of one chunk: ``(scores, flat indices)`` in the group's grid."""
    from geobind.inference.query import cosine
    from geobind.inference.store.read import _TopK

    _, cy, cx = array.chunks
    block = array[:, r0 : r0 + cy, c0 : c0 + cx]
    scores = cosine(block, vectors, threads=1)[0]
    best = _TopK(k, array.shape[2])
    best.add(slice(r0, r0 + block.shape[1]), slice(c0, c0 + block.shape[2]), scores)
    return best.scores, best.index


def _exact(root: Any, names: Sequence[str], vectors: np.ndarray, k: int, progress: bool):
    """Score every cell: ``(scores, group positions, flat indices)`` of the best ``k``, best
    first (ties in group and row-major order)."""
    import contextlib

    import dask
    import zarr

    from geobind.inference.store.metadata import _quiet

    tasks, owners = [], []
    with _quiet():
        for g, name in enumerate(names):
            array = zarr.open_array(root.zarr, path=f"{name}/embedding", mode="r")
            _, ny, nx = array.shape
            _, cy, cx = array.chunks
            for r0 in range(0, ny, cy):
                for c0 in range(0, nx, cx):
                    tasks.append(dask.delayed(_chunk_best)(array, r0, c0, vectors, k))
                    owners.append(g)
    bar = contextlib.nullcontext()
    if progress:
        from dask.diagnostics import ProgressBar

        bar = ProgressBar()
    with bar, root.store.errors("read"):
        parts = dask.compute(*tasks)
    scores = np.concatenate([s for s, _ in parts] or [np.empty(0, np.float32)])
    flat = np.concatenate([i for _, i in parts] or [np.empty(0, np.int64)])
    group = np.repeat(np.array(owners, np.int64), [len(s) for s, _ in parts])
    if scores.size < k:
        raise InputDataError(
            f"k={k} is more than the {scores.size:,} valid cells of store {root}; pass "
            f"k ≤ {scores.size}"
        )
    order = np.lexsort((flat, group, -scores))[:k]
    return scores[order], group[order], flat[order]


def search_vectors(
    store: str | os.PathLike,
    vectors: np.ndarray,
    k: int = 10,
    *,
    exact: bool = False,
    nprobe: int | None = None,
    rerank: int | None = None,
    progress: bool = False,
    storage_options: Mapping[str, Any] | None = None,
) -> tuple[np.ndarray, list[str], np.ndarray, np.ndarray]:
    """The ``k`` best cells of a store for one unit query vector: ``(scores, groups, rows, cols)``,
    best first. The core of :func:`search`, without the query embedding or the polygons.
    ``store``: a folder or an object store URL (``storage_options``: its credentials).

    Example:
        >>> import numpy as np
        >>> from geobind.georef import GeoBox
        >>> from geobind.inference.store import embed_to_zarr
        >>> pixels = np.random.default_rng(0).integers(0, 255, (3, 96, 96), dtype=np.uint8)
        >>> tif = GeoBox.from_origin(0, 96, 1, (96, 96), "EPSG:32633").write_geotiff(
        ...     getfixture("tmp_path") / "a.tif", pixels)
        >>> _ = embed_to_zarr(tif, tif.with_name("s.zarr"), model="tiny", stride=16)
        >>> q = np.ones((1, 64), np.float32) / 8
        >>> scores, groups, rows, cols = search_vectors(tif.with_name("s.zarr"), q, 2, exact=True)
        >>> groups, scores.shape
        (['a', 'a'], (2,))
    """
    from geobind.inference.index import _store_root, open_index

    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
        raise InputDataError(f"k must be a positive integer; got {k!r}")
    root, settings = _store_root(store, storage_options)
    index = None if exact else open_index(root)
    return _search_vectors(root, settings, index, vectors, int(k), nprobe, rerank, progress)


def _search_vectors(root, settings, index, vectors, k: int, nprobe, rerank, progress: bool):
    """:func:`search_vectors` on a store already opened (``index``: ``None`` for the exact scan)."""
    q = np.ascontiguousarray(np.atleast_2d(vectors), np.float32)
    if q.shape[0] != 1:
        raise InputDataError(f"search_vectors takes one vector; got {q.shape[0]}")
    if index is None:
        names = list(settings["groups"])
        scores, group, flat = _exact(root, names, q, k, progress)
        widths = [_width(root, name) for name in names]
        rows, cols = np.divmod(flat, np.array(widths, np.int64)[group])
        return scores, [names[g] for g in group], rows, cols
    scores, ids = index.search(q, k, nprobe=nprobe, rerank=rerank)
    keep = ids[0] >= 0
    groups, rows, cols = index.locate(ids[0][keep])
    return scores[0][keep], groups, rows, cols


def _width(root: Any, name: str) -> int:
    import zarr

    from geobind.inference.store.metadata import _quiet

    with _quiet():
        return int(zarr.open_array(root.zarr, path=f"{name}/embedding", mode="r").shape[2])


def _georefs(root: Any, names: Sequence[str], meta: dict | None) -> dict[str, dict[str, Any]]:
    """Each group's grid (transform, CRS), from the index's ``meta`` when it has them, else
    the store."""
    from geobind.inference.index import _georef

    known = (meta or {}).get("groups", {})
    out = {name: known[name] for name in names if name in known}
    for name in names:
        if name not in out:
            out[name] = _georef(root, name)
    return out


def _frame(root: Any, scores, groups: list[str], rows, cols, meta: dict | None = None) -> Any:
    """Hits as a GeoDataFrame of EPSG:4326 cell polygons, with their own-CRS polygons."""
    import geopandas as gpd
    import shapely
    from affine import Affine
    from pyproj import CRS

    from geobind.georef import cell_polygons, crs_name

    n = len(scores)
    names = np.array(groups, dtype=object)
    rows, cols = np.asarray(rows, np.int64), np.asarray(cols, np.int64)
    wkt = np.empty(n, object)
    crs_col = np.empty(n, object)
    lonlat = np.empty(n, object)
    for name, ref in _georefs(root, list(dict.fromkeys(groups)), meta).items():
        sel = names == name
        crs = CRS.from_wkt(ref["crs"])
        cells = cell_polygons(Affine(*ref["transform"]), rows[sel], cols[sel])
        wkt[sel] = shapely.to_wkt(cells, rounding_precision=-1)
        crs_col[sel] = crs_name(crs)
        lonlat[sel] = gpd.GeoSeries(cells, crs=crs).to_crs("EPSG:4326").values
    return gpd.GeoDataFrame(
        {
            "rank": np.arange(1, n + 1),
            "score": np.asarray(scores, np.float32),
            "group": names.astype(str) if n else np.empty(0, str),
            "row": rows,
            "col": cols,
            "cell_crs": crs_col.astype(str) if n else np.empty(0, str),
            "cell_wkt": wkt.astype(str) if n else np.empty(0, str),
        },
        geometry=gpd.GeoSeries(lonlat, crs="EPSG:4326") if n else gpd.GeoSeries(crs="EPSG:4326"),
        crs="EPSG:4326",
    )


def search(
    store: str | os.PathLike,
    query: Any = None,
    k: int = 10,
    *,
    exact: bool = False,
    model: Any = None,
    nprobe: int | None = None,
    rerank: int | None = None,
    text: str | None = None,
    audio: Any = None,
    image: Any = None,
    vector: Any = None,
    templates: Sequence[str] | None = None,
    out: str | os.PathLike | None = None,
    progress: bool = False,
    storage_options: Mapping[str, Any] | None = None,
) -> Any:
    """The ``k`` cells of a whole store most like a query, best first, as EPSG:4326 polygons.

    ``query`` is read as :func:`~geobind.inference.query.embed_query` reads it (text, an audio
    or photo file, ``(samples, rate)``, a PIL image, an embedding vector), or is a geometry:
    a shapely geometry (EPSG:4326), a GeoSeries / GeoDataFrame (its rows' union), or a vector
    file (``.geojson``, ``.gpkg``, ``.parquet`` …): "places like this", the unit mean of the
    cells it covers in every group it touches, weighted by the share of each cell covered
    (:mod:`geobind.inference.zonal`). Text, audio and photos are embedded by ``model`` (default:
    the store's), which must carry the store's satellite encoder; vectors and geometries need no
    model.

    With the store's index (:func:`~geobind.inference.index.build_index`, ``geobind index``);
    ``exact=True`` scores every cell instead (no index needed; chunks run as dask tasks). The
    index of a store in an object store is read from a local cache, downloading only what
    changed since the last search (:mod:`geobind.inference.index_location`).

    Args:
        store: a store written by :func:`~geobind.inference.store.embed_to_zarr`: a folder or
            an object store URL (``s3://bucket/x.zarr`` …).
        query: what to look for (see above).
        k: how many cells; at most the store's valid cells.
        exact: scan every cell instead of using the index.
        model: the model for text, audio and photo queries.
        nprobe: inverted lists scanned (IVF-PQ index; default: the index's).
        rerank: candidates re-ranked exactly per result (default: the index's).
        text: force a text query.
        audio: force an audio query.
        image: force a photo query.
        vector: force an embedding-vector query.
        templates: prompt templates for text, averaged.
        out: also write the hits (``.parquet`` GeoParquet, ``.geojson``, ``.gpkg``).
        progress: show the exact scan's progress.
        storage_options: credentials and endpoint of a store URL (default: the standard
            environment, ``AWS_ENDPOINT_URL`` …).

    Returns:
        A GeoDataFrame (EPSG:4326) with ``rank``, ``score`` (cosine similarity), ``group``,
        ``row``, ``col``, ``cell_crs`` and ``cell_wkt`` (the cell in its group's CRS); its
        ``attrs`` record the query, the store, the index settings and the seconds taken.

    Raises:
        IndexNotFoundError: no index and not ``exact`` (the message says how to build one).
        IndexMismatchError: the index no longer matches the store.
        SearchIndexError: the index is damaged (the message says how to rebuild it).
        ModelMismatchError: ``model`` has another satellite encoder than the store's.
        InputDataError: ``k`` < 1 or more than the cells; an unreadable query.

    Example:
        >>> import geobind, numpy as np
        >>> from geobind.georef import GeoBox
        >>> pixels = np.random.default_rng(0).integers(0, 255, (3, 96, 96), dtype=np.uint8)
        >>> tif = GeoBox.from_origin(500_000, 4_600_096, 1, (96, 96), "EPSG:32633"
        ...                          ).write_geotiff(getfixture("tmp_path") / "a.tif", pixels)
        >>> _ = geobind.embed_to_zarr(tif, tif.with_name("s.zarr"), model="tiny", stride=16)
        >>> _ = geobind.build_index(tif.with_name("s.zarr"))
        >>> hits = geobind.search(tif.with_name("s.zarr"), "a busy highway", k=3)
        >>> hits[["rank", "group"]].values.tolist(), hits.crs.to_epsg()
        ([[1, 'a'], [2, 'a'], [3, 'a']], 4326)
        >>> hits["cell_crs"].iloc[0]
        'EPSG:32633'
    """
    import time

    from geobind.inference.index import _store_root

    start = time.perf_counter()
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
        raise InputDataError(f"k must be a positive integer; got {k!r}")
    if out is not None:
        from geobind.inference.outputs import VECTOR_SUFFIXES

        if Path(out).suffix.lower() not in VECTOR_SUFFIXES:
            raise InputDataError(
                f"search writes hits as .parquet, .geojson or .gpkg; got {Path(out).name!r}"
            )
        if not Path(out).expanduser().parent.is_dir():
            raise InputDataError(f"the output folder {Path(out).parent} does not exist")
    root, settings = _store_root(store, storage_options)
    names = list(settings["groups"])
    index = None
    if not exact:  # refuse a missing or stale index before embedding the query
        from geobind.inference.index import open_index

        index = open_index(root)
    kinds = {"text": text, "audio": audio, "image": image, "vector": vector}
    vectors, label = _query_vectors(root, settings, names, query, model, kinds, templates)
    scores, groups, rows, cols = _search_vectors(
        root, settings, index, vectors, int(k), nprobe, rerank, progress
    )
    hits = _frame(root, scores, groups, rows, cols, None if index is None else index.meta)
    hits.attrs = {
        "query": label,
        "store": str(root),
        "exact": bool(exact),
        "seconds": time.perf_counter() - start,
    }
    if index is not None:
        hits.attrs["index"] = {
            **index.params,
            **({"nprobe": nprobe} if nprobe else {}),
            **({"rerank": rerank} if rerank is not None else {}),
        }
    if out is not None:
        write_hits(hits, out)
    return hits


def write_hits(hits: Any, out: str | os.PathLike) -> Path:
    """Write search hits by suffix (``.parquet`` GeoParquet, ``.geojson``, ``.gpkg``).

    Example:
        >>> import geopandas as gpd, shapely
        >>> hits = gpd.GeoDataFrame({"rank": [1], "score": [0.5]},
        ...                         geometry=[shapely.box(15, 41, 15.1, 41.1)], crs=4326)
        >>> write_hits(hits, getfixture("tmp_path") / "hits.parquet").name
        'hits.parquet'
    """
    from geobind.inference.outputs import write_vector

    frame = hits.copy()
    frame.attrs = {}  # GeoJSON and GeoPackage writers cannot carry them
    return write_vector(frame, Path(out).expanduser())
