"""The function-first API: ``geobind.embed``, ``similarity``, ``change``, ``top_k``,
``classify``, ``plot``, ``explore``.

One implementation, reached two ways: these functions, and the ``.geobind`` accessors on xarray
and GeoPandas objects (one-line wrappers over them). Each takes the object to work on first:

- a **raster**, ``DataArray(band, y, x)`` or ``(y, x)`` read with rioxarray (numpy- or
  dask-backed), or a Dataset of 2-D band variables: embedded into a grid first. Bands named by
  common name (``red``, ``green``, ``blue``, ``nir``, as odc-stac and stackstac name them) are
  read in the model's order; a ``time`` dimension (a stack of dates) gives
  ``(time, embedding, y, x)`` grids and ``(time, y, x)`` maps, date by date (:func:`change`);
- an **embedding grid**, ``DataArray(embedding, y, x)`` from :func:`embed` or a Zarr store
  (``xr.open_zarr(store, group=...)``, the Dataset or its ``embedding`` variable): never
  re-embedded;
- a **GeoDataFrame or GeoSeries**, with the pixels as ``raster=`` or a grid as ``grid=``: one
  embedding (or score) per row, on the frame's index.

**Repeated queries are cheap.** The grid embedded from a raster is kept for that raster object
(the last one only), keyed by the satellite encoder's hash and the embedding settings
(``chip_size``, ``stride``, ``nodata_fraction``, ``bands``, ``gsd``; not ``batch_size``), so
``similarity(raster, "busy highway")`` then ``similarity(raster, "lake shore")``, ``top_k``,
``classify`` or ``plot`` embed the raster once. A later model that carries the same satellite
encoder (a later training stage) reuses the grid. A checksum of the raster's pixels (and of its
coordinates, attrs, CRS and nodata) is compared on each call, so a raster modified in place is
embedded again (for a raster read lazily from a file, not loaded, the file's size and mtime stand
for its pixels; on a dask-backed raster the graph's name does, and its cached grid is
lazy, so each query computes it again: persist it, or embed into Zarr, to compute it once). The
grid is released with the raster (when Python frees it). ``cache=False`` opts out.
"""

from __future__ import annotations

import os
import sys
import weakref
import zlib
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

from geobind.errors import InputDataError

__all__ = ["change", "classify", "embed", "explore", "plot", "similarity", "top_k"]

_SIMILARITY = "similarity"


# -- what the first argument is -----------------------------------------------------------------
def _geo(obj: Any) -> Any:
    """The GeoSeries of a GeoDataFrame / GeoSeries (its active geometry), else ``None``."""
    if "geopandas" not in sys.modules:  # then obj cannot hold geometries: skip the import
        return None
    import geopandas as gpd

    if isinstance(obj, gpd.GeoSeries):
        return obj
    if isinstance(obj, gpd.GeoDataFrame):
        try:
            return obj.geometry
        except AttributeError:  # no active geometry column
            raise InputDataError(
                "this GeoDataFrame has no active geometry column; set one with "
                "gdf.set_geometry(...)"
            ) from None
    return None


def _dataarray(obj: Any) -> Any:
    """The DataArray to work on: ``obj``, a Dataset's ``embedding`` or its bands stacked."""
    import rioxarray  # noqa: F401 - registers .rio (a store opened with xr.open_zarr has none)
    import xarray as xr

    if isinstance(obj, xr.DataArray):
        return obj
    if not isinstance(obj, xr.Dataset):
        raise InputDataError(
            "expected a raster or embedding grid (xarray DataArray or Dataset) or a "
            f"GeoDataFrame / GeoSeries; got a {type(obj).__name__}. Open a GeoTIFF with "
            "rioxarray.open_rasterio(path) and a store with xr.open_zarr(path)"
        )
    if "embedding" in obj.variables and obj["embedding"].ndim == 3:
        out = obj["embedding"]  # read back from Zarr it is listed among the coordinates
    else:
        names = [n for n, v in obj.data_vars.items() if v.ndim == 2]
        if not names:
            raise InputDataError(
                "this Dataset has neither an 'embedding' variable nor 2-D raster variables"
            )
        out = obj[names].to_dataarray("band")
    if "spatial_ref" in obj.variables and "spatial_ref" not in out.coords:
        out = out.assign_coords(spatial_ref=obj["spatial_ref"])  # the CRS, even as a data var
    return out


def _is_grid(arr: Any) -> bool:
    from geobind.inference.raster import is_grid

    return is_grid(arr)


def _is_geometry(query: Any) -> bool:
    return type(query).__module__.split(".")[0] in ("shapely", "geopandas")


# -- the grid cache -------------------------------------------------------------------------------
@dataclass
class _Entry:
    owner: weakref.ref
    key: tuple
    fingerprint: tuple
    grid: Any


#: the last grid embedded for each raster object, by ``id(raster)``; a finalizer drops the entry
#: when the raster is freed (DataArrays are not hashable, so no WeakKeyDictionary)
_GRIDS: dict[int, _Entry] = {}


def _checksum(values: Any) -> int:
    import numpy as np

    values = np.asarray(values)
    if values.dtype.hasobject:
        return hash(repr(values.tolist()))
    if values.ndim > 1 and not values.flags.c_contiguous:  # band by band: no copy of it all
        crc = 0
        for part in values:
            crc = zlib.crc32(np.ascontiguousarray(part).reshape(-1).view(np.uint8), crc)
        return crc
    return zlib.crc32(np.ascontiguousarray(values).reshape(-1).view(np.uint8))


def _fingerprint(arr: Any) -> tuple:
    """What an embedding reads from a raster, summarised: pixels, coordinates, attrs and nodata.
    Equal fingerprints mean the cached grid is the raster's.

    Pixels are a dask array's name, a local file's size and modification time for a raster read
    lazily from it (not loaded yet: its coordinates say which window; pixels changed in memory
    load it), else their crc32 (~4 GB/s)."""
    if arr.chunks is not None:
        pixels = arr.data.name
    elif not arr._in_memory and os.path.isfile(source := str(arr.encoding.get("source", ""))):
        stat = os.stat(source)
        pixels = (source, stat.st_size, stat.st_mtime_ns)
    else:
        pixels = _checksum(arr.values)
    coords = tuple((name, _checksum(c.values), repr(c.attrs)) for name, c in arr.coords.items())
    return (
        arr.dims,
        arr.shape,
        arr.dtype.str,
        pixels,
        coords,
        repr(arr.attrs),
        repr(arr.encoding.get("_FillValue")),
    )


def _remember(owner: Any, key: tuple, fingerprint: tuple, grid: Any) -> None:
    ident = id(owner)
    old = _GRIDS.get(ident)
    if old is None or old.owner() is not owner:
        done = weakref.finalize(owner, _GRIDS.pop, ident, None)
        done.atexit = False
    _GRIDS[ident] = _Entry(weakref.ref(owner), key, fingerprint, grid)


#: The embedding settings of :func:`embed` and their defaults.
_SETTINGS = {
    "chip_size": None,
    "stride": None,
    "nodata_fraction": 0.5,
    "bands": None,
    "gsd": None,
    "encoder": "sat",
}


def _kept_grid(
    obj: Any,
    arr: Any,
    model: Any,
    *,
    batch_size: int = 64,
    progress: bool = False,
    cache: bool = True,
    **settings: Any,
) -> Any:
    """The grid of raster ``arr`` (``obj``, what the user passed, owns the cache entry): the
    one kept for it, or embedded now (and kept). ``settings`` are :func:`embed`'s embedding
    settings (``chip_size``, ``stride``, ``nodata_fraction``, ``bands``, ``gsd``, ``encoder``);
    they and the encoder's hash key the kept grid (``batch_size`` changes nothing in it)."""
    from geobind.inference.provenance import sat_sha256
    from geobind.inference.raster import embed_raster

    settings = {**_SETTINGS, **settings}  # defaults spelled out: one key per grid
    if not cache:
        return embed_raster(arr, model, batch_size=batch_size, progress=progress, **settings)
    bands = settings["bands"]
    key = (
        sat_sha256(model, settings["encoder"]),  # a later stage with the same encoder reuses it
        *(settings[k] for k in ("encoder", "chip_size", "stride", "nodata_fraction", "gsd")),
        None if bands is None else tuple(int(b) for b in bands),
    )
    entry = _GRIDS.get(id(obj))
    mine = entry is not None and entry.owner() is obj and entry.key == key
    # callers get shallow copies: accessors they open (``.rio``) then live on the copy, so the
    # kept grid is in no reference cycle and goes the moment its raster does
    if mine and entry.fingerprint == _fingerprint(arr):
        return entry.grid.copy(deep=False)
    grid = embed_raster(arr, model, batch_size=batch_size, progress=progress, **settings)
    # taken after embedding, in the state the next call finds the raster in (loaded or not)
    _remember(obj, key, _fingerprint(arr), grid.copy(deep=False))
    return grid


_EMBED_KW = frozenset((*_SETTINGS, "batch_size", "progress", "cache"))


def _check_embed_kw(embed_kw: Mapping[str, Any]) -> None:
    unknown = sorted(set(embed_kw) - _EMBED_KW)
    if unknown:
        raise TypeError(
            f"unexpected keyword argument(s) {unknown}; the embedding settings are "
            f"{sorted(_EMBED_KW)}"
        )


def _as_grid(grid: Any) -> Any:
    """A grid given as a store group (Dataset) → its ``embedding`` DataArray; else as it is."""
    if "xarray" in sys.modules:
        import xarray as xr

        if isinstance(grid, xr.Dataset):
            return _dataarray(grid)
    return grid


# -- embed ----------------------------------------------------------------------------------------
def embed(
    obj: Any,
    model: Any = None,
    *,
    raster: Any = None,
    grid: Any = None,
    chip_size: int | None = None,
    stride: int | None = None,
    batch_size: int = 64,
    nodata_fraction: float = 0.5,
    bands: Sequence[int] | None = None,
    gsd: float | None = None,
    progress: bool = False,
    cache: bool = True,
    encoder: str = "sat",
) -> Any:
    """Embed a raster into a georeferenced grid, or geometries into one vector each.

    On a raster, every grid cell holds the embedding of the chip centred on it; the grid's
    transform is the raster's scaled by ``stride`` and shifted to the chip centres, its CRS the
    raster's, its ``attrs`` the model, its satellite encoder's hash, chip size, stride and geobind
    version. A dask-backed raster gives a lazy grid. An embedding grid is returned as it is.

    On a GeoDataFrame or GeoSeries (with ``raster=`` or ``grid=``), points take the chip centred
    on them (with only a grid: the cell holding them), polygons and lines the area- (length-)
    weighted mean of the cells they cover, scaled to unit length; rows are NaN off the raster,
    on nodata, or for empty geometries. Geometries in another CRS are reprojected with a
    :class:`~geobind.errors.CRSMismatchWarning`.

    Args:
        obj: a raster (``DataArray(band, y, x)`` / ``(y, x)``, or a Dataset of bands), an
            embedding grid, or a GeoDataFrame / GeoSeries.
        model: a model, preset name or model folder (default: :func:`geobind.use_model`'s).
        raster: for geometries: the pixels (a DataArray or a GeoTIFF path).
        grid: for geometries: an embedding grid to read cells from (no model needed).
        chip_size: chip side in raster pixels; default keeps the model's footprint
            (``chip_size × gsd`` metres) at the raster's resolution.
        stride: pixels between chip centres (default: half a chip).
        batch_size: chips per forward pass.
        nodata_fraction: chips with a larger share of nodata/NaN pixels give NaN cells.
        bands: 1-based bands read as R, G, B (default: the model's, e.g. ``[1, 2, 3]``; on
            bands named ``red``, ``green``, ``blue`` …, those names in the model's order).
        gsd: the raster's pixel size in metres, for rasters without a projected CRS.
        progress: show a progress bar (eager rasters).
        cache: keep the grid for this raster object, and reuse the one kept if it was embedded
            with the same satellite encoder and settings (see :mod:`geobind.inference.api`). The
            grid returned is a copy of the one kept.
        encoder: the satellite encoder to embed with: ``"sat"``, or another sensor's (e.g. a
            ``"coarse"`` multispectral encoder from the third binding stage, over that sensor's
            imagery); the grid records it.

    Returns:
        ``DataArray(embedding, y, x)`` float32 (NaN where a chip was mostly nodata;
        ``(time, embedding, y, x)`` for a raster with a ``time`` dimension), or for
        geometries a DataFrame on their index with columns ``0 … embed_dim − 1``.

    Raises:
        CRSError: the raster (or the geometries) have no CRS, or a geographic CRS without ``gsd``.
        InputDataError: no model, bad settings, or ``raster=``/``grid=`` on a raster.

    Example:
        >>> import geobind, numpy as np, xarray as xr, rioxarray  # noqa: F401
        >>> raster = xr.DataArray(np.zeros((3, 64, 64), np.uint8), dims=("band", "y", "x"),
        ...     coords={"y": 63.5 - np.arange(64), "x": np.arange(64) + 0.5}
        ... ).rio.write_crs(32633)
        >>> grid = geobind.embed(raster, "tiny", stride=16)
        >>> grid.dims, grid.shape, grid.rio.transform().a
        (('embedding', 'y', 'x'), (64, 3, 3), 16.0)
    """
    settings = {
        "chip_size": chip_size,
        "stride": stride,
        "nodata_fraction": nodata_fraction,
        "bands": bands,
        "gsd": gsd,
        "encoder": encoder,
    }
    geo = _geo(obj)
    if geo is not None:
        import pandas as pd

        from geobind.inference.vector import embed_geometries

        if settings.pop("encoder") != "sat":
            raise InputDataError("geometries embed with the satellite encoder (encoder='sat')")
        vectors = embed_geometries(
            geo, raster, grid=_as_grid(grid), model=model, batch_size=batch_size, **settings
        )
        return pd.DataFrame(vectors, index=geo.index, columns=range(vectors.shape[1]))
    if raster is not None or grid is not None:
        raise InputDataError(
            "raster= and grid= are for GeoDataFrames and GeoSeries; pass the raster itself as "
            "the first argument"
        )
    arr = _dataarray(obj)
    if _is_grid(arr):
        return arr
    from geobind.inference.context import resolve_model

    out = _kept_grid(
        obj,
        arr,
        resolve_model(model),
        batch_size=batch_size,
        progress=progress,
        cache=cache,
        **settings,
    )
    return out.copy() if cache else out  # the kept grid stays as embedded


def _grid_and_model(
    obj: Any, model: Any, grid: Any, query: Any, vector: Any, embed_kw: Mapping[str, Any]
) -> tuple[Any, Any]:
    """The grid to score (``obj`` itself, ``grid=``, or the raster's, kept or embedded now) and
    the model for the query."""
    _check_embed_kw(embed_kw)
    arr = _dataarray(obj)
    if _is_grid(arr):
        if grid is not None:
            raise InputDataError("obj is already an embedding grid; do not pass grid= too")
        grid = arr
    elif grid is not None:
        grid = _dataarray(grid)
        if not _is_grid(grid):
            raise InputDataError(
                f"grid= takes an embedding grid (dims (embedding, y, x)); got dims {grid.dims}"
            )
    if grid is None:
        from geobind.inference.context import resolve_model

        model = resolve_model(model)
        return _kept_grid(obj, arr, model, **embed_kw), model
    return grid, _query_model(model, grid, query, vector)


def _query_model(model: Any, grid: Any, query: Any, vector: Any) -> Any:
    """The model that embeds the query, checked against the grid; a vector query on a grid
    needs none."""
    from geobind.inference.context import resolve_model

    try:
        model = resolve_model(model)
    except InputDataError:
        is_vector = vector is not None or (query is not None and hasattr(query, "shape"))
        if model is not None or not hasattr(grid, "sizes") or not is_vector:
            raise
        return SimpleNamespace(embed_dim=int(grid.sizes["embedding"]))
    if grid is not None:
        from geobind.inference.provenance import check_same_sat

        check_same_sat(grid, model)
    return model


# -- similarity -----------------------------------------------------------------------------------
def similarity(
    obj: Any,
    query: Any = None,
    *,
    model: Any = None,
    grid: Any = None,
    text: str | Sequence[str] | None = None,
    audio: Any = None,
    image: Any = None,
    vector: Any = None,
    templates: Sequence[str] | None = None,
    **embed_kw: Any,
) -> Any:
    """Cosine similarity with a query: a map over a raster or grid, a score per geometry.

    ``query`` is read by its type: text (``"busy highway"``), an audio file (``.wav``,
    ``.flac`` …) or ``(samples, rate)``, a ground photo (path or PIL image), an embedding vector
    (or ``(n, embed_dim)``), or on a raster or grid a shapely geometry / GeoDataFrame / GeoSeries
    ("places like this": the area-weighted mean of the cells it covers; only those cells are
    read, so it is cheap on a Zarr store). A list of queries gives one result per query. The
    keywords ``text=``, ``audio=``, ``image=``, ``vector=`` force a kind.

    A raster is embedded first (``embed_kw`` go to :func:`embed`, ``cache=`` included) unless
    ``grid=`` passes a grid made from it; the grid is kept, so the next query on the same raster
    object does not embed again. An embedding grid, or a store group, is never re-embedded;
    querying it with a model whose satellite encoder did not make it is refused
    (:func:`~geobind.inference.provenance.check_same_sat`).

    Args:
        obj: a raster, an embedding grid, a store group (``xr.open_zarr(...)``) or a
            GeoDataFrame / GeoSeries (then ``raster=`` or ``grid=`` in ``embed_kw``).
        query: what to look for (see above).
        model: a model, preset name or model folder (default: :func:`geobind.use_model`'s);
            not needed for a vector query on a grid.
        grid: an embedding grid already made from the raster (or for geometries, to read).
        text: force a text query (a string or a list of strings).
        audio: force an audio query.
        image: force a ground-photo query.
        vector: force an embedding-vector query.
        templates: prompt templates for text (``"a satellite photo of {}."``); averaged.
        **embed_kw: embedding settings for :func:`embed` (``chip_size``, ``stride``, …).

    Returns:
        On a raster or grid ``DataArray(y, x)`` (``(query, y, x)`` for several queries) in
        [-1, 1], NaN on nodata cells, with the grid's CRS and transform; on geometries a Series
        named ``similarity`` on the frame's index (a DataFrame with a column per query).

    Raises:
        ModelMismatchError: the grid was embedded by another satellite encoder than the model's.
        InputDataError: no model, an unreadable query, or ``grid=`` that is not a grid.

    Example:
        >>> import geobind, numpy as np, xarray as xr, rioxarray  # noqa: F401
        >>> raster = xr.DataArray(
        ...     np.random.default_rng(0).integers(0, 255, (3, 96, 96), dtype=np.uint8),
        ...     dims=("band", "y", "x"),
        ...     coords={"y": 500.5 - np.arange(96), "x": 300.5 + np.arange(96)},
        ... ).rio.write_crs(32633)
        >>> with geobind.use_model("tiny"):
        ...     highway = geobind.similarity(raster, "busy highway")
        ...     lake = geobind.similarity(raster, "lake shore")  # the grid is reused
        >>> highway.dims, highway.shape
        (('y', 'x'), (5, 5))
    """
    import numpy as np

    from geobind.inference.query import embed_query

    kinds = {"text": text, "audio": audio, "image": image, "vector": vector}
    geo = _geo(obj)
    if geo is not None:
        import pandas as pd

        grid = _as_grid(grid)
        qmodel = _query_model(model, grid, query, vector)
        vectors, labels, several = embed_query(qmodel, query, templates=templates, **kinds)
        emb = embed(geo, model, grid=grid, **embed_kw).to_numpy()
        if emb.shape[1] != vectors.shape[1]:
            raise InputDataError(
                f"the grid holds {emb.shape[1]}-d embeddings but the query is "
                f"{vectors.shape[1]}-d; query with the model that made the grid"
            )
        out = (emb @ vectors.T).astype(np.float32)
        if several:
            return pd.DataFrame(out, index=geo.index, columns=labels)
        return pd.Series(out[:, 0], index=geo.index, name=_SIMILARITY)

    from geobind.inference.raster import scores

    grid, qmodel = _grid_and_model(obj, model, grid, query, vector, embed_kw)
    if _is_geometry(query):
        vectors, labels, several = _geometry_query(grid, query), ["geometry"], False
    else:
        vectors, labels, several = embed_query(qmodel, query, templates=templates, **kinds)
    return scores(grid, vectors, labels, several)


# -- change ---------------------------------------------------------------------------------------
def change(
    obj: Any,
    query: Any = None,
    before: Any = None,
    after: Any = None,
    *,
    model: Any = None,
    grid: Any = None,
    time: str = "time",
    **kw: Any,
) -> Any:
    """Where a query's similarity rose or fell between two dates: ``after − before``.

    ``obj`` is a raster or grid with a ``time`` dimension (a stack of dates as odc-stac or
    stackstac return it, or its :func:`embed` grid ``(time, embedding, y, x)``); each date is
    embedded as its own raster and the grid kept, so several queries embed once. Positive cells
    look more like the query after than before (e.g. ``"industrial roofs"`` where a field was
    built over), negative ones less.

    Args:
        obj: a raster or embedding grid with a ``time`` dimension.
        query: what to look for (as for :func:`similarity`: text, audio, photo, vector,
            geometry; a list gives one map per query).
        before: the earlier date: a label of the ``time`` coordinate (anything ``.sel`` takes,
            e.g. ``"2024-05-01"``) or, an ``int``, a position (on a time axis that is not
            itself integer); ``None`` (the default) is the first date.
        after: the later date, likewise; ``None`` (the default) is the last date.
        model: a model, preset name or model folder (default: :func:`geobind.use_model`'s).
        grid: an embedding grid already made from the raster.
        time: the name of the time dimension.
        **kw: :func:`similarity`'s keywords (``text=``, ``templates=``, embedding settings).

    Returns:
        ``DataArray(y, x)`` (``(query, y, x)`` for several queries) named ``change``, in
        [-2, 2], NaN where either date is nodata, with the grid's CRS and transform; its
        ``attrs`` hold the grid's plus ``before`` and ``after``.

    Raises:
        InputDataError: no ``time`` dimension, or a date that is not in it.

    Example:
        >>> import geobind, numpy as np, xarray as xr, rioxarray  # noqa: F401
        >>> pixels = np.random.default_rng(0).integers(1, 255, (2, 3, 64, 64), dtype=np.uint8)
        >>> stack = xr.DataArray(pixels, dims=("time", "band", "y", "x"), coords={
        ...     "time": np.array(["2024-05-01", "2024-09-01"], "datetime64[ns]"),
        ...     "band": ["red", "green", "blue"],
        ...     "y": 4_600_063.5 - np.arange(64), "x": 500_000.5 + np.arange(64)},
        ... ).rio.write_crs(32633)
        >>> diff = geobind.change(stack, "a new road", "2024-05-01", "2024-09-01", model="tiny")
        >>> diff.dims, diff.shape, diff.rio.crs.to_epsg(), diff.attrs["after"]
        (('y', 'x'), (3, 3), 32633, '2024-09-01')
    """
    if _geo(obj) is not None:
        raise InputDataError(
            "change maps a raster or grid with a time dimension; for geometries, score each "
            "date with geobind.similarity(gdf, query, raster=...) and subtract"
        )
    sim = similarity(obj, query, model=model, grid=grid, **kw)
    if time not in sim.dims:
        raise InputDataError(
            f"change needs a raster or grid with a {time!r} dimension (dates stacked, as "
            f"odc-stac and stackstac return them); this one has dims {sim.dims}"
        )
    maps, labels = [], []
    for date, default in ((before, 0), (after, -1)):
        one = sim.isel({time: default}) if date is None else _at_date(sim, time, date)
        maps.append(one)
        labels.append(_date_label(date if one.coords.get(time) is None else one[time].values[()]))
    along = [k for k, v in sim.coords.items() if time in v.dims]
    out = (maps[1] - maps[0]).drop_vars(along, errors="ignore")
    out.name = "change"
    out.attrs = {**sim.attrs, "before": labels[0], "after": labels[1]}
    return out


def _at_date(sim: Any, time: str, date: Any) -> Any:
    """The map of one date: by label, or by position for an ``int`` (on a time axis that is not
    itself integer)."""
    coord = sim.coords.get(time)
    by_position = isinstance(date, int) and not isinstance(date, bool)
    if by_position and (coord is None or coord.dtype.kind not in "iu"):
        if not -sim.sizes[time] <= date < sim.sizes[time]:
            raise InputDataError(f"date position {date} is out of range: {sim.sizes[time]} dates")
        return sim.isel({time: date})
    try:
        out = sim.sel({time: date})
    except (KeyError, TypeError, ValueError):
        dates = [] if coord is None else [str(v)[:19] for v in coord.values]
        raise InputDataError(f"no date {date!r} in the raster; its dates: {dates}") from None
    if time in out.dims:
        if out.sizes[time] != 1:
            raise InputDataError(
                f"{date!r} matches {out.sizes[time]} dates; pass one (or its position)"
            )
        out = out.isel({time: 0})
    return out


def _date_label(date: Any) -> Any:
    """A date as it goes in attrs: an ``int`` or a string (``2024-09-01`` for a day)."""
    import numbers

    if isinstance(date, numbers.Integral):
        return int(date)
    if isinstance(date, str):
        return date
    text = str(date)
    return text[:10] if text.endswith("T00:00:00.000000000") else text


def _geometry_query(grid: Any, query: Any) -> Any:
    """The unit mean embedding of the cells a geometry (or GeoDataFrame) covers: ``(1, D)``.

    Reads only those cells (a dask- or Zarr-backed grid loads only the chunks holding them).
    """
    import geopandas as gpd
    import numpy as np

    from geobind.inference.vector import embed_geometries

    if not hasattr(query, "crs"):
        query = gpd.GeoSeries([query], crs=grid.rio.crs)  # a shapely geometry: the grid's CRS
    union = query.geometry.union_all() if hasattr(query, "geometry") else query.union_all()
    vector = embed_geometries(gpd.GeoSeries([union], crs=query.crs), grid=grid)
    if np.isnan(vector).any():
        raise InputDataError("the query geometry covers no valid cell of the grid")
    return vector.astype(np.float32)


# -- classify, top_k, plot ------------------------------------------------------------------------
def classify(
    obj: Any,
    labels: Sequence[str] | Mapping[str, str | Sequence[str]],
    *,
    model: Any = None,
    grid: Any = None,
    templates: Sequence[str] | None = None,
    **embed_kw: Any,
) -> Any:
    """Zero-shot classification of every cell: the label whose text prompt scores highest.

    Args:
        obj: a raster, an embedding grid or a store group (as for :func:`similarity`).
        labels: class names (each its own prompt), or a mapping from class name to a prompt or a
            list of prompts (their embeddings are averaged).
        model: a model, preset name or model folder (default: :func:`geobind.use_model`'s).
        grid: an embedding grid already made from the raster.
        templates: prompt templates for the text (averaged).
        **embed_kw: embedding settings for :func:`embed` (the grid is kept, as for similarity).

    Returns:
        A Dataset with ``class`` (y, x) int16 indices into the ``label`` coordinate (−1 where the
        cell is NaN; CF ``flag_values``/``flag_meanings`` attrs), ``score`` (the winning
        similarity) and ``scores`` (label, y, x).

    Raises:
        ModelMismatchError: the grid was embedded by another satellite encoder than the model's.
        InputDataError: no labels, no model, or geometries as ``obj``.

    Example:
        >>> import geobind, numpy as np, xarray as xr, rioxarray  # noqa: F401
        >>> grid = xr.DataArray(np.ones((64, 2, 2), np.float32) / 8,
        ...     dims=("embedding", "y", "x"), coords={"y": [1.5, 0.5], "x": [0.5, 1.5]}
        ... ).rio.write_crs(32633)
        >>> out = geobind.classify(grid, {"water": ["a lake", "open water"], "trees": "a forest"},
        ...                        model="tiny")
        >>> out["class"].shape, out["label"].values.tolist()
        ((2, 2), ['water', 'trees'])
    """
    from geobind.inference.raster import classify as classify_grid

    if _geo(obj) is not None:
        raise InputDataError(
            "classify maps the cells of a raster or grid; for geometries, score each label "
            "with geobind.similarity(gdf, [labels...], raster=...) and take the best column"
        )
    grid, model = _grid_and_model(obj, model, grid, None, None, embed_kw)
    return classify_grid(grid, model, labels, templates=templates)


def top_k(
    obj: Any, query: Any = None, k: int = 10, *, model: Any = None, grid: Any = None, **kw: Any
) -> Any:
    """The ``k`` best places for one query: grid cells, or rows of a GeoDataFrame.

    On a raster or grid: a GeoDataFrame of cell polygons (``stride × stride`` pixels around each
    chip centre) with ``rank``, ``score``, ``row``, ``col``, in the grid's CRS; on a GeoDataFrame
    or GeoSeries: its ``k`` most similar rows with a ``similarity`` column. Best first; NaN cells
    and rows are never returned (so there may be fewer than ``k``).

    Args:
        obj: a raster, grid, store group, or GeoDataFrame / GeoSeries (as for
            :func:`similarity`).
        query: one query (see :func:`similarity`).
        k: how many.
        model: a model, preset name or model folder (default: :func:`geobind.use_model`'s).
        grid: an embedding grid already made from the raster (or for geometries, to read).
        **kw: the other keywords of :func:`similarity`.

    Returns:
        A GeoDataFrame, best first.

    Raises:
        InputDataError: ``k`` is not a positive integer, or several queries.

    Example:
        >>> import geobind, numpy as np, xarray as xr, rioxarray  # noqa: F401
        >>> grid = xr.DataArray(np.eye(64, dtype=np.float32)[:, :4].reshape(64, 2, 2),
        ...     dims=("embedding", "y", "x"),
        ...     coords={"y": [1.5, 0.5], "x": [0.5, 1.5]}).rio.write_crs(32633)
        >>> hits = geobind.top_k(grid, vector=np.eye(64, dtype=np.float32)[3], k=2)
        >>> hits[["rank", "row", "col"]].values.tolist()[0], float(hits["score"].iloc[0])
        ([1, 1, 1], 1.0)
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise InputDataError(f"k must be a positive integer; got {k!r}")
    several = "one query; loop over several (or use similarity(...) for several)"
    geo = _geo(obj)
    sim = similarity(obj, query, model=model, grid=grid, **kw)
    if geo is not None:
        import geopandas as gpd
        import pandas as pd

        if isinstance(sim, pd.DataFrame):
            raise InputDataError(f"top_k ranks by {several}")
        frame = obj if isinstance(obj, pd.DataFrame) else gpd.GeoDataFrame(geometry=geo)
        out = frame.assign(**{_SIMILARITY: sim.to_numpy()})
        out = out[out[_SIMILARITY].notna()]
        return out.sort_values(_SIMILARITY, ascending=False, kind="stable").head(k)
    from geobind.inference.raster import top_k as top_cells

    if "query" in sim.dims:
        raise InputDataError(f"top_k takes {several}")
    return top_cells(sim, k, sim.rio.transform(recalc=True), sim.rio.crs)


def plot(
    obj: Any,
    query: Any = None,
    *,
    model: Any = None,
    grid: Any = None,
    ax: Any = None,
    cmap: str = "magma",
    alpha: float = 0.6,
    **kw: Any,
) -> Any:
    """A matplotlib figure of the similarity map over the scene, with a colour bar.

    On a raster the scene's first three bands (per the model's bands) are drawn as RGB,
    contrast-stretched, and the map is overlaid with ``alpha``; on a grid only the map is drawn.
    Several queries give one panel each.

    Args:
        obj: a raster, an embedding grid or a store group.
        query: what to look for (see :func:`similarity`); a list draws one panel each.
        model: a model, preset name or model folder (default: :func:`geobind.use_model`'s).
        grid: an embedding grid already made from the raster.
        ax: a matplotlib axes (or one per query) to draw on; default: a new figure.
        cmap: the colour map of the similarity.
        alpha: the map's opacity over the scene.
        **kw: the other keywords of :func:`similarity` (embedding settings included).

    Returns:
        The figure.

    Example:
        >>> import geobind, numpy as np, xarray as xr, rioxarray  # noqa: F401
        >>> raster = xr.DataArray(np.zeros((3, 64, 64), np.uint8), dims=("band", "y", "x"),
        ...     coords={"y": 63.5 - np.arange(64), "x": np.arange(64) + 0.5}
        ... ).rio.write_crs(32633)
        >>> fig = geobind.plot(raster, "a lake", model="tiny")
        >>> len(fig.axes)  # the map and its colour bar
        2
    """
    import matplotlib.pyplot as plt
    import numpy as np

    if _geo(obj) is not None:
        raise InputDataError(
            "plot draws a raster or grid; for geometries, plot the scores: "
            "gdf.plot(column=geobind.similarity(gdf, query, raster=...))"
        )
    sim = similarity(obj, query, model=model, grid=grid, **kw)
    maps = [sim.sel(query=q) for q in sim["query"].values] if "query" in sim.dims else [sim]
    if ax is None:
        fig, axes = plt.subplots(
            1, len(maps), figsize=(5.5 * len(maps), 5), squeeze=False, layout="constrained"
        )
        axes = list(axes[0])
    else:
        axes = list(np.atleast_1d(ax))
        fig = axes[0].figure
    arr = _dataarray(obj)
    rgb = None
    if not _is_grid(arr):
        rgb, extent = _rgb(arr, kw.get("bands"), model)
    t = sim.rio.transform(recalc=True)
    ny, nx = sim.shape[-2:]
    map_extent = (t.c, t.c + nx * t.a, t.f + ny * t.e, t.f)
    for a, m in zip(axes, maps, strict=True):
        if rgb is not None:
            a.imshow(rgb, extent=extent)
        image = a.imshow(
            np.asarray(m.values),
            extent=map_extent,
            cmap=cmap,
            alpha=alpha if rgb is not None else 1,
        )
        title = str(m["query"].values) if "query" in m.coords else _title(query, kw)
        a.set_title(title)
        a.ticklabel_format(useOffset=False, style="plain")  # full coordinates on the axes
        a.set_xlabel(f"x ({sim.rio.crs})" if sim.rio.crs else "x")
        fig.colorbar(image, ax=a, label="cosine similarity", shrink=0.8)
    return fig


def explore(
    obj: Any,
    query: Any = None,
    *,
    model: Any = None,
    grid: Any = None,
    k: int | None = 10,
    rgb: Any = True,
    tiles: str | None = "OpenStreetMap",
    cmap: str = "magma",
    opacity: float = 0.75,
    vmin: float | None = None,
    vmax: float | None = None,
    **kw: Any,
) -> Any:
    """An interactive Leaflet map (folium) of the similarity map: pan, zoom, click the best places.

    The map is a colour overlay with its legend, reprojected as Leaflet needs (a UTM map is
    warped to Web Mercator, not stretched: see :mod:`geobind.inference.webmap`); the ``k`` best
    cells are polygons whose popups give rank and score; the scene's RGB is a layer under it. A
    list of queries gives one overlay (and one set of cells) each, switched in the layer
    control. Leaflet is inlined in the page, so it works offline; only the base map ``tiles``
    needs a network (``tiles=None`` for none: the scene is then the base). ``.save("map.html")``
    writes the page; in Jupyter the map shows inline.

    Args:
        obj: a raster, an embedding grid or a store group (as for :func:`similarity`).
        query: what to look for (see :func:`similarity`); a list gives one layer each.
        model: a model, preset name or model folder (default: :func:`geobind.use_model`'s).
        grid: an embedding grid already made from the raster.
        k: how many best cells to outline per query (``None`` or 0: none).
        rgb: show the scene: ``True`` (the raster itself, or for a grid the file it was
            embedded from when its ``source`` attribute names one that exists), ``False``, or a
            raster to show.
        tiles: a base map (``"OpenStreetMap"``, ``"CartoDB positron"``, an xyz URL …) or
            ``None``.
        cmap: a matplotlib colormap name.
        opacity: the overlays' opacity.
        vmin: the similarity drawn with the colormap's first colour (default: each map's
            minimum).
        vmax: the similarity drawn with its last colour (default: each map's maximum).
        **kw: the other keywords of :func:`similarity` (``text=``, embedding settings …).

    Returns:
        The ``folium.Map``.

    Raises:
        CRSError: the grid has no CRS.
        InputDataError: geometries as ``obj``, a bad ``k``, or what :func:`similarity` raises.
        MissingDependencyError: folium or xstatic-leaflet is not installed.

    Example:
        >>> import geobind, numpy as np, xarray as xr, rioxarray  # noqa: F401
        >>> grid = xr.DataArray(np.eye(64, dtype=np.float32)[:, :16].reshape(64, 4, 4),
        ...     dims=("embedding", "y", "x"),
        ...     coords={"y": 4_600_050.0 - 100 * np.arange(4), "x": 500_050.0 + 100 * np.arange(4)},
        ... ).rio.write_crs(32633)
        >>> m = geobind.explore(grid, vector=np.eye(64, dtype=np.float32)[5], k=3, tiles=None)
        >>> type(m).__name__, "L.imageOverlay" in m.get_root().render()
        ('Map', True)
    """
    if _geo(obj) is not None:
        raise InputDataError(
            "explore maps a raster or grid; for geometries, use GeoPandas' explore on the "
            "scores: gdf.explore(column=geobind.similarity(gdf, query, raster=...))"
        )
    if k is not None and (isinstance(k, bool) or not isinstance(k, int) or k < 0):
        raise InputDataError(f"k must be a non-negative integer or None; got {k!r}")
    import rioxarray  # noqa: F401 - registers .rio on the maps

    from geobind.inference import webmap
    from geobind.inference.raster import top_k as top_cells

    sim = similarity(obj, query, model=model, grid=grid, **kw)
    if "query" in sim.dims:
        maps = [(str(q), sim.sel(query=q)) for q in sim["query"].values]
    else:
        maps = [(_title(query, kw), sim)]
    layers = []
    for label, one in maps:
        if one.chunks is not None and max(one.shape) <= webmap.OVERLAY_MAX_SIDE:
            one = one.compute()  # once, for the overlay and the best cells
        cells = top_cells(one, k, one.rio.transform(recalc=True), one.rio.crs) if k else None
        layers.append(webmap.MapLayer.from_dataarray(label, one, cells))
    scene = None
    if rgb is not False and rgb is not None:
        arr = _dataarray(obj)
        bands = _display_bands(kw.get("bands"), model)
        if rgb is not True:
            scene = webmap.scene_rgb(_dataarray(rgb), bands)
        elif not _is_grid(arr):
            scene = webmap.scene_rgb(arr, bands)
        else:  # a store's grid names the scene it was embedded from
            scene = webmap.source_rgb(arr.attrs.get("source"), bands)
    return webmap.web_map(
        layers, rgb=scene, tiles=tiles, cmap=cmap, opacity=opacity, vmin=vmin, vmax=vmax
    )


def _display_bands(bands: Sequence[int] | None, model: Any) -> list[int]:
    """The bands shown as RGB: ``bands``, else the model's, else 1, 2, 3."""
    if bands is not None:
        return list(bands)
    from geobind.inference.context import resolve_model

    try:
        return list(resolve_model(model).config["sat"].get("bands", [1, 2, 3]))
    except InputDataError:  # a vector query on a grid needs no model
        return [1, 2, 3]


def _rgb(raster: Any, bands: Sequence[int] | None, model: Any) -> tuple[Any, tuple]:
    """A contrast-stretched (H, W, 3) image of the raster and its extent, for plotting."""
    import numpy as np

    from geobind.inference.context import resolve_model

    y, x = raster.rio.y_dim, raster.rio.x_dim
    extra = [d for d in raster.dims if d not in (y, x)]
    arr = raster.transpose(*extra, y, x) if extra else raster.expand_dims("band")
    chosen = list(bands or resolve_model(model).config["sat"].get("bands", [1, 2, 3]))
    chosen = [min(b, arr.shape[0]) for b in chosen][:3]
    step = max(1, max(arr.shape[1:]) // 1024)  # at most ~1024 px a side for display
    img = np.asarray(arr[[b - 1 for b in chosen], ::step, ::step].values, np.float32)
    nodata = raster.rio.nodata if raster.rio.nodata is not None else raster.rio.encoded_nodata
    if nodata is not None:
        img[img == float(nodata)] = np.nan
    lo, hi = np.nanpercentile(img, 2), np.nanpercentile(img, 98)
    img = np.clip((img - lo) / max(hi - lo, 1e-6), 0, 1)
    t = raster.rio.transform()
    h, w = arr.shape[1:]
    extent = (t.c, t.c + w * t.a, t.f + h * t.e, t.f)
    return np.nan_to_num(np.moveaxis(img, 0, -1)), extent


def _title(query: Any, kw: Mapping[Hashable, Any]) -> str:
    for key in ("text", "audio", "image"):
        if kw.get(key) is not None:
            return str(kw[key])
    return str(query) if isinstance(query, str) else type(query).__name__
