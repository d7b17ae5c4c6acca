"""Rasters (xarray) → georeferenced embedding grids, and what is computed over grids.

The xarray layer over :mod:`geobind.inference.grid`: reads a raster's bands, CRS, transform and
nodata (through rioxarray), plans the chip grid, embeds eagerly or lazily (dask, block by block
with the chip halo, the model loaded once per worker), and writes the grid's CRS and transform.
Grids are ``DataArray(embedding, y, x)`` float32 (float16 accepted when reading), NaN where a chip
was mostly nodata.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr
from affine import Affine

from geobind.errors import BandsError, InputDataError
from geobind.georef import ChipGrid, GeoBox, cell_polygons
from geobind.inference.context import ModelRef, resolve_model
from geobind.inference.grid import embed_pixels

# grid provenance lives in geobind.inference.provenance; the old names stay importable from here
from geobind.inference.provenance import check_same_sat as check_same_model
from geobind.inference.provenance import grid_attrs
from geobind.inference.provenance import sat_sha256 as _sat_sha256  # noqa: F401
from geobind.inference.provenance import sat_sha256 as model_sha256
from geobind.inference.query import cosine

__all__ = [
    "Layout",
    "band_pixels",
    "check_same_model",
    "classify",
    "dataset_mask",
    "embed_raster",
    "grid_attrs",
    "grid_dataarray",
    "is_grid",
    "layout",
    "model_chip_grid",
    "model_sha256",
    "named_bands",
    "open_raster",
    "plan_grid",
    "read_pixels",
    "scores",
    "top_k",
]

EMBEDDING = "embedding"
TIME = "time"  # the dimension odc-stac and stackstac stack dates along


@dataclass(frozen=True)
class Layout:
    """A raster's dims (band, y, x), its georeferencing (:class:`~geobind.georef.GeoBox`) and
    nodata, and the file it was read from (for its dataset mask)."""

    band: str | None
    y: str
    x: str
    geobox: GeoBox
    nodata: float | None
    source: str | None = None

    @property
    def transform(self) -> Affine:
        """The raster's affine transform."""
        return self.geobox.transform

    @property
    def crs(self) -> Any:
        """The raster's CRS (a pyproj ``CRS``) or ``None``."""
        return self.geobox.crs


def open_raster(
    path: str | os.PathLike[str],
    *,
    storage_options: Mapping[str, Any] | None = None,
    **kwargs: Any,
) -> xr.DataArray:
    """``rioxarray.open_rasterio(path)`` (lazily read), with a clear error for bad files.

    ``path`` may be a local path or an ``http(s)://``, ``s3://``, ``gs://`` or ``az://`` URL of a
    (Cloud-Optimised) GeoTIFF, read with Range requests (:mod:`geobind.sources`; credentials from
    the standard environment or ``storage_options``). The raster is read lazily: later reads in
    this process reuse the open file, but a file reopened elsewhere (a dask worker) sees only the
    environment, so on a cluster give credentials through the environment (``AWS_*``).

    Example:
        >>> open_raster("missing.tif")
        Traceback (most recent call last):
        geobind.errors.InputDataError: raster missing.tif does not exist
    """
    import rioxarray

    from geobind.sources import _read_error, gdal_env, gdal_path, is_remote, public_url

    remote = is_remote(path)
    if not remote and not Path(path).exists():
        raise InputDataError(f"raster {path} does not exist")
    try:
        with gdal_env(storage_options, remote=remote):
            return rioxarray.open_rasterio(gdal_path(path), **kwargs)
    except Exception as err:  # rasterio's RasterioIOError / CPLE_* errors
        if remote:  # one line: not found, access refused, unreachable …
            raise _read_error(public_url(os.fspath(path)), err) from None
        raise InputDataError(
            f"cannot open raster {path}: {err}. Is it a GeoTIFF (or another GDAL raster)?"
        ) from None


def read_pixels(arr: xr.DataArray) -> np.ndarray:
    """The values of a lazily read raster (block), turning read failures into a clear error."""
    try:
        return np.asarray(arr.values)
    except Exception as err:
        if type(err).__module__.split(".")[0] != "rasterio":
            raise
        source = arr.encoding.get("source", "the raster")
        raise InputDataError(
            f"reading {source} failed (a damaged or truncated file?): {err}"
        ) from None


def is_grid(obj: xr.DataArray) -> bool:
    """Whether ``obj`` is an embedding grid (it has an ``embedding`` dimension)."""
    return EMBEDDING in obj.dims


def layout(raster: xr.DataArray) -> Layout:
    """Dims, georeferencing and nodata of a raster read by rioxarray (or built by hand).

    Example:
        >>> import numpy as np, xarray as xr, rioxarray  # noqa: F401
        >>> r = xr.DataArray(np.zeros((3, 4, 5)), dims=("band", "y", "x"),
        ...                  coords={"y": [3.5, 2.5, 1.5, 0.5], "x": np.arange(5) + 0.5})
        >>> lay = layout(r.rio.write_crs(32633))
        >>> lay.band, lay.transform.a, round(lay.geobox.gsd, 4)  # 500 km off UTM's meridian
        ('band', 1.0, 0.9973)
    """
    import rioxarray  # noqa: F401 - registers .rio

    try:
        y, x = raster.rio.y_dim, raster.rio.x_dim
    except Exception as err:  # rioxarray's MissingSpatialDimensionError
        raise InputDataError(
            f"cannot find the raster's spatial dimensions (dims {raster.dims}): {err}"
        ) from None
    extra = [d for d in raster.dims if d not in (y, x)]
    if len(extra) > 1:
        raise InputDataError(
            f"a raster has (band, y, x) dimensions (and maybe time, which geobind.embed "
            f"embeds date by date); this one has {raster.dims}. Select or stack the others first"
        )
    if raster.sizes[y] < 2 or raster.sizes[x] < 2:
        raise InputDataError(f"the raster is too small to place chips on ({dict(raster.sizes)})")
    nodata = raster.rio.nodata if raster.rio.nodata is not None else raster.rio.encoded_nodata
    source = raster.encoding.get("source")
    return Layout(
        band=extra[0] if extra else None,
        y=y,
        x=x,
        geobox=GeoBox.from_dataarray(raster),
        nodata=None if nodata is None else float(nodata),
        source=str(source) if isinstance(source, str | os.PathLike) else None,
    )


def band_pixels(raster: xr.DataArray) -> tuple[xr.DataArray, Layout]:
    """The raster as ``(band, y, x)`` (a band dimension added to a 2-D raster), and its layout.

    Example:
        >>> import numpy as np, xarray as xr, rioxarray  # noqa: F401
        >>> r = xr.DataArray(np.zeros((4, 5)), dims=("y", "x"),
        ...                  coords={"y": [3.5, 2.5, 1.5, 0.5], "x": np.arange(5) + 0.5})
        >>> band_pixels(r.rio.write_crs(32633))[0].dims
        ('band', 'y', 'x')
    """
    lay = layout(raster)
    arr = raster if lay.band is not None else raster.expand_dims("band")
    return arr.transpose(lay.band or "band", lay.y, lay.x), lay


def dataset_mask(lay: Layout, rows: slice, cols: slice) -> np.ndarray | None:
    """The dataset mask (alpha band or internal mask; 0 = invalid) of pixel ``rows × cols`` of a
    raster read from a file with one, else ``None``.

    The raster must still be on its file's pixel grid (read by rioxarray, maybe sliced); a raster
    that was reprojected or resampled has none (its nodata and NaN still apply).

    Example:
        >>> import numpy as np, rioxarray
        >>> rgba = np.full((4, 2, 3), 255, np.uint8)
        >>> rgba[3, :, 0] = 0  # alpha 0 in column 0
        >>> tif = GeoBox.from_origin(0, 2, 1, (2, 3), "EPSG:32633").write_geotiff(
        ...     getfixture("tmp_path") / "a.tif", rgba, photometric="RGB", alpha="YES")
        >>> raster = rioxarray.open_rasterio(tif)[:, :, 1:]  # sliced: columns 1 and 2
        >>> dataset_mask(layout(raster), slice(0, 2), slice(0, 2)).tolist()
        [[255, 255], [255, 255]]
        >>> dataset_mask(layout(rioxarray.open_rasterio(tif)), slice(0, 1), slice(0, 3)).tolist()
        [[0, 255, 255]]
    """
    if lay.source is None or not os.path.isfile(lay.source):
        return None
    stat = os.stat(lay.source)
    if not _file_has_mask(lay.source, stat.st_mtime_ns, stat.st_size):
        return None  # most files: no open per band of a streamed raster
    import rasterio
    from rasterio.windows import Window

    from geobind.data.chips import read_dataset_mask

    with rasterio.open(lay.source) as src:
        col, row = ~src.transform * (lay.transform.c, lay.transform.f)
        same_res = np.allclose(tuple(src.transform)[:6:4], tuple(lay.transform)[:6:4], rtol=1e-9)
        if not same_res or abs(col - round(col)) > 1e-6 or abs(row - round(row)) > 1e-6:
            return None
        r0, c0 = round(row) + rows.start, round(col) + cols.start
        window = Window(c0, r0, cols.stop - cols.start, rows.stop - rows.start)
        return read_dataset_mask(src, window)


@functools.lru_cache(maxsize=64)
def _file_has_mask(path: str, mtime_ns: int, size: int) -> bool:
    """Whether the file at ``path`` (as of its mtime and size) has an alpha band or mask."""
    import rasterio

    from geobind.data.chips import has_dataset_mask

    with rasterio.open(path) as src:
        return has_dataset_mask(src)


def plan_grid(
    raster: xr.DataArray,
    model: Any,
    *,
    chip_size: int | None = None,
    stride: int | None = None,
    gsd: float | None = None,
    encoder: str = "sat",
) -> tuple[Layout, ChipGrid]:
    """Chip size and stride in raster pixels, and the grid they give.

    ``chip_size`` is in raster pixels; by default it keeps the model's footprint at the raster's
    ground resolution (:meth:`~geobind.georef.GeoBox.chip_pixels`), which needs a projected CRS or
    ``gsd`` (the raster's pixel size in ground metres). ``stride`` defaults to half a chip.

    Example:
        >>> import geobind, numpy as np, xarray as xr, rioxarray  # noqa: F401
        >>> r = xr.DataArray(np.zeros((3, 80, 80), np.uint8), dims=("band", "y", "x"),
        ...                  coords={"y": 40 - np.arange(80) * 0.5, "x": np.arange(80) * 0.5})
        >>> _, grid = plan_grid(r.rio.write_crs(32633), geobind.load("tiny"))
        >>> grid.chip, grid.stride, grid.shape  # 32 px at 1 m = 64 px at 0.5 m
        (64, 32, (1, 1))
    """
    lay = layout(raster)
    grid = model_chip_grid(
        lay.geobox, model, chip_size=chip_size, stride=stride, gsd=gsd, encoder=encoder
    )
    return lay, grid


def model_chip_grid(
    geobox: GeoBox,
    model: Any,
    *,
    chip_size: int | None = None,
    stride: int | None = None,
    gsd: float | None = None,
    encoder: str = "sat",
) -> ChipGrid:
    """The chip grid a model's ``encoder`` embeds on a raster's :class:`~geobind.georef.GeoBox`
    (see :func:`plan_grid`), for rasters known by their file header (stores).

    Example:
        >>> import geobind
        >>> from affine import Affine
        >>> box = GeoBox((80, 80), Affine(0.5, 0, 500_000, 0, -0.5, 0), "EPSG:32633")
        >>> model_chip_grid(box, geobind.load("tiny")).chip
        64
    """
    if chip_size is None:
        sat = model.config[encoder]
        chip = geobox.chip_pixels(int(sat["chip_size"]), sat.get("gsd"), gsd)
    else:
        chip = int(chip_size)
    return geobox.chip_grid(chip, stride)


def grid_dataarray(
    data: Any, grid: ChipGrid, crs: Any, *, dims: tuple[str, str] = ("y", "x"), attrs=None
) -> xr.DataArray:
    """Wrap ``(embed_dim, rows, cols)`` data (numpy or dask) as a georeferenced grid, without
    copying it."""
    import rioxarray  # noqa: F401 - registers .rio

    y, x = grid.coords()
    out = xr.DataArray(
        data,
        dims=(EMBEDDING, *dims),
        coords={dims[0]: y, dims[1]: x},
        name=EMBEDDING,
        attrs=dict(attrs or {}),
    )
    out.rio.write_transform(grid.transform, inplace=True)  # in place: ``data`` is not copied
    if crs is not None:
        out.rio.write_crs(crs, inplace=True)
    return out


def _embed_block(
    pixels, ref, lay, rows, cols, chip, stride, nodata_fraction, bands, batch_size, encoder
):
    return embed_pixels(
        ref.get()[encoder],
        np.asarray(pixels),
        chip=chip,
        stride=stride,
        nodata=lay.nodata,
        valid=dataset_mask(lay, rows, cols),
        nodata_fraction=nodata_fraction,
        bands=bands,
        batch_size=batch_size,
    )


def embed_raster(
    raster: xr.DataArray,
    model: Any = None,
    *,
    chip_size: int | None = None,
    stride: int | None = None,
    batch_size: int = 64,
    nodata_fraction: float = 0.5,
    bands: Sequence[int] | None = None,
    gsd: float | None = None,
    progress: bool = False,
    encoder: str = "sat",
) -> xr.DataArray:
    """Embed every chip of a raster into a ``DataArray(embedding, y, x)`` grid (see the accessor).

    ``encoder`` picks the satellite encoder for another sensor's imagery (a model's ``"coarse"``
    multispectral encoder after its binding stage); the grid records it, and queries then need a
    model carrying that encoder.

    A dask-backed raster gives a dask-backed grid: one task per block of cells (about one raster
    chunk each) reading its pixels with the chip halo; the model travels as its spec and loads
    once per worker process. A raster read lazily from a file (rioxarray's default) is read in
    bands of rows, each while the one before is embedded, and is not loaded into memory.
    """
    import rioxarray  # noqa: F401

    model = resolve_model(model)
    if not 0 <= nodata_fraction <= 1:
        raise InputDataError(f"nodata_fraction must be in [0, 1]; got {nodata_fraction}")
    if TIME in raster.dims:
        kw = {"chip_size": chip_size, "stride": stride, "batch_size": batch_size, "gsd": gsd,
              "nodata_fraction": nodata_fraction, "bands": bands, "progress": progress,
              "encoder": encoder}  # fmt: skip
        return _embed_dates(raster, model, kw)
    arr, lay = band_pixels(raster)
    if bands is None:
        arr, bands = named_bands(arr, lay.band or "band", model[encoder])
    grid = model_chip_grid(
        lay.geobox, model, chip_size=chip_size, stride=stride, gsd=gsd, encoder=encoder
    )
    args = (grid.chip, grid.stride, nodata_fraction, bands, batch_size, encoder)
    if arr.chunks is None and not arr._in_memory:  # a file read lazily: rows read ahead
        return _embed_streamed(arr, grid, model, lay, args, progress)
    attrs = grid_attrs(model, grid, encoder, nodata_fraction=nodata_fraction)
    if arr.chunks is None:
        full = slice(0, grid.height), slice(0, grid.width)
        data = embed_pixels(
            model[encoder],
            read_pixels(arr),
            chip=grid.chip,
            stride=grid.stride,
            nodata=lay.nodata,
            valid=dataset_mask(lay, *full),
            nodata_fraction=nodata_fraction,
            bands=bands,
            batch_size=batch_size,
            progress=progress,
        )
    else:
        data = _embed_lazily(arr.data, grid, ModelRef(model), model.embed_dim, lay, args)
    return grid_dataarray(data, grid, lay.crs, dims=(lay.y, lay.x), attrs=attrs)


def _embed_dates(raster: xr.DataArray, model: Any, kw: dict[str, Any]) -> xr.DataArray:
    """``(time, embedding, y, x)``: each date embedded as a raster of its own, then stacked;
    the coordinates along ``time`` (dates, item ids …) are kept."""
    dates = [embed_raster(raster.isel({TIME: i}), model, **kw) for i in range(raster.sizes[TIME])]
    if not dates:
        raise InputDataError("the raster has an empty time dimension: no date to embed")
    out = xr.concat(dates, dim=TIME, coords="minimal", compat="override", join="override")
    along = {k: v.variable for k, v in raster.coords.items() if v.dims == (TIME,)}
    return out.assign_coords(along)


def named_bands(
    arr: xr.DataArray, band: str, encoder: Any
) -> tuple[xr.DataArray, Sequence[int] | None]:
    """Bands named by their common names (``red``, ``green``, ``blue``, ``nir`` …, as odc-stac
    and stackstac name them) picked in the order the ``encoder`` reads them, and the 1-based
    bands of the result; a raster with numbered bands, or with labels none of which is a
    common name, as it is, with ``None`` (its bands are read by position).

    Names are read from a ``common_name`` coordinate along the band dimension (stackstac's),
    else from the band labels themselves; case-insensitive.

    Example:
        >>> import geobind, numpy as np, xarray as xr
        >>> arr = xr.DataArray(np.zeros((4, 2, 2)), dims=("band", "y", "x"),
        ...                    coords={"band": ["NIR", "Blue", "green", "red"]})
        >>> rgb, bands = named_bands(arr, "band", geobind.load("tiny")["sat"])
        >>> rgb["band"].values.tolist(), bands
        (['red', 'green', 'Blue'], [1, 2, 3])
    """
    from geobind.stac import COMMON_NAMES, encoder_bands

    coord = arr.coords.get("common_name")
    if coord is None or coord.dims != (band,):
        coord = arr.coords.get(band)
    if coord is None or coord.dtype.kind not in "UO":
        return arr, None
    labels = [str(v).lower() for v in coord.values]
    if not set(labels) & set(COMMON_NAMES):  # other names (a Dataset's variables): by position
        return arr, None
    wanted = encoder_bands(encoder)
    missing = [name for name in wanted if name not in labels]
    if missing:
        raise InputDataError(
            f"the raster's bands are named {labels}; the model reads {list(wanted)} and "
            f"{missing} is missing. Pass bands=[...] (1-based) to pick them by position"
        )
    return arr.isel({band: [labels.index(name) for name in wanted]}), list(
        range(1, len(wanted) + 1)
    )


def _embed_streamed(arr, grid: ChipGrid, model: Any, lay: Layout, args: tuple, progress: bool):
    """The grid of a raster not yet in memory, in bands of cell rows: a thread reads the next
    band's pixels (the encoder's bands only) and dataset mask (GDAL decodes without the GIL)
    while this one's chips are embedded, so the read overlaps the forward instead of preceding
    it (demo model, 1,024 chips on 2 cores, glibc's default heap: 0.95 of the bare forward
    against 0.88 reading first, medians of 7 paired runs), and only two or three bands are in
    memory at once. The first band is one batch of chips, and the output grid is built while it
    is read; the other bands are at least 8 cell rows (the chip halo read twice is then at most
    an eighth more at half-chip stride) and four batches."""
    import contextlib

    from tqdm.auto import tqdm

    from geobind.models.encoders import _background

    chip, stride, nodata_fraction, bands, batch_size, encoder = args
    sat = model[encoder]
    bands = list(bands or sat.bands)
    BandsError.check(bands, arr.shape[0])
    low, high = min(bands), max(bands)  # only these bands are read
    bands = [b - low + 1 for b in bands]
    ny, nx = grid.shape
    first, cells = -(-batch_size // nx), max(8, -(-4 * batch_size // nx))  # cell rows a band
    starts = [0, *range(first, ny, cells)] if first < ny else [0]

    def read():
        for r0, r1 in zip(starts, [*starts[1:], ny], strict=True):
            wr, wc = grid.window(slice(r0, r1), slice(0, nx))
            yield slice(r0, r1), read_pixels(arr[low - 1 : high, wr, wc]), dataset_mask(lay, wr, wc)

    with contextlib.closing(_background(read(), depth=1)) as blocks:  # reading starts now
        out = np.empty((model.embed_dim, ny, nx), np.float32)  # the grid wraps it: filled below
        attrs = grid_attrs(model, grid, encoder, nodata_fraction=nodata_fraction)
        result = grid_dataarray(out, grid, lay.crs, dims=(lay.y, lay.x), attrs=attrs)
        bar = tqdm(total=ny * nx, disable=not progress, desc="chips", unit="chip")
        with bar:
            for rows, pixels, valid in blocks:
                out[:, rows] = embed_pixels(
                    sat,
                    pixels,
                    chip=chip,
                    stride=stride,
                    nodata=lay.nodata,
                    valid=valid,
                    nodata_fraction=nodata_fraction,
                    bands=bands,
                    batch_size=batch_size,
                )
                bar.update((rows.stop - rows.start) * nx)
    return result


def _embed_lazily(pixels, grid: ChipGrid, ref: ModelRef, dim: int, lay: Layout, args: tuple):
    """A dask array of the grid: one task per block of cells, each reading its halo'd window."""
    import dask.array as da

    chunk = max(pixels.chunksize[1], pixels.chunksize[2], grid.chip)
    cells = max(1, (chunk - grid.chip) // grid.stride + 1)
    rows = []
    for rs, cs in grid.tiles(cells):
        if cs.start == 0:
            rows.append([])
        wr, wc = grid.window(rs, cs)
        block = pixels[:, wr, wc].rechunk(-1)
        n = (rs.stop - rs.start, cs.stop - cs.start)
        rows[-1].append(
            da.map_blocks(
                _embed_block,
                block,
                ref,
                lay,
                wr,
                wc,
                *args,
                dtype=np.float32,
                chunks=((dim,), *[(k,) for k in n]),
            )
        )
    return da.block(rows)  # nested lists concatenate along the last two axes (y, x)


def scores(grid: xr.DataArray, vectors: np.ndarray, labels: Sequence[str], several: bool):
    """Cosine similarity of a grid with query vectors: ``(y, x)`` or ``(query, y, x)``.

    Lazy (dask) grids give lazy maps, computed block by block.
    """
    data = grid.variable.transpose(EMBEDDING, ...).data
    if hasattr(data, "dask"):
        data = data.rechunk({0: -1})
        out = data.map_blocks(  # one thread per block: dask runs blocks side by side
            cosine,
            vectors,
            threads=1,
            chunks=((len(vectors),), *data.chunks[1:]),
            dtype=np.float32,
        )
    else:
        out = cosine(data, vectors)
    spatial = [d for d in grid.dims if d != EMBEDDING]
    # plain variables, not DataArrays: no alignment work (a third of the call on a 128 MiB grid)
    variables = grid.coords.variables
    coords = {d: variables[d] for d in spatial if d in variables}
    if "spatial_ref" in variables:
        coords["spatial_ref"] = variables["spatial_ref"]
    if several:
        coords["query"] = xr.Variable("query", list(labels))
    return xr.DataArray(
        out if several else out[0],
        dims=("query", *spatial) if several else tuple(spatial),
        coords=coords,
        name="similarity",
        attrs={k: v for k, v in grid.attrs.items() if k != "long_name"},
    )


def classify(grid: xr.DataArray, model: Any, labels: Sequence[str] | Mapping[str, Any], **kw):
    """Zero-shot classes per cell: argmax over text prompts (see the accessor's ``classify``)."""
    from geobind.inference.query import embed_query

    prompts = dict(labels) if isinstance(labels, Mapping) else {name: name for name in labels}
    if not prompts:
        raise InputDataError("classify needs at least one label")
    vectors = []
    for texts in prompts.values():
        vecs, _, _ = embed_query(
            model, text=[texts] if isinstance(texts, str) else list(texts), **kw
        )
        mean = vecs.mean(0)
        vectors.append(mean / max(float(np.linalg.norm(mean)), 1e-12))
    names = list(prompts)
    s = scores(grid, np.stack(vectors), names, True).rename(query="label")
    valid = s.notnull().all("label")
    label = s.fillna(-np.inf).argmax("label").where(valid, -1).astype(np.int16)
    label.attrs = {
        "flag_values": list(range(len(names))),
        "flag_meanings": " ".join(n.replace(" ", "_") for n in names),
        "labels": names,
    }
    return xr.Dataset({"class": label, "score": s.max("label"), "scores": s}, attrs=grid.attrs)


def top_k(similarity: xr.DataArray, k: int, grid_transform: Affine, crs: Any):
    """The ``k`` highest-scoring cells of a ``(y, x)`` map as a GeoDataFrame of cell polygons."""
    import geopandas as gpd

    if similarity.ndim != 2:
        raise InputDataError("top_k takes one query at a time")
    if k < 1:
        raise InputDataError(f"k must be ≥ 1; got {k}")
    values = np.asarray(similarity.values, np.float32)
    flat = np.where(np.isnan(values), -np.inf, values).ravel()
    k_eff = min(k, int(np.isfinite(flat).sum()))
    best = np.argpartition(-flat, k_eff - 1)[:k_eff] if k_eff else np.array([], int)
    best = best[np.argsort(-flat[best], kind="stable")]
    rows, cols = np.unravel_index(best, values.shape)
    geoms = cell_polygons(grid_transform, rows, cols)
    return gpd.GeoDataFrame(
        {
            "rank": np.arange(1, k_eff + 1),
            "score": flat[best],
            "row": rows,
            "col": cols,
        },
        geometry=geoms,
        crs=crs,
    )
