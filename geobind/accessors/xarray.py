"""``DataArray.geobind`` and ``Dataset.geobind``: embedding grids and similarity maps in xarray.

Registered when xarray is imported (see :mod:`geobind.accessors`). The accessor holds only the
object it is attached to; models come from ``model=`` or :func:`geobind.use_model`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import xarray as xr

from geobind.errors import InputDataError

__all__ = ["GeoBindArrayAccessor", "GeoBindDatasetAccessor"]


@xr.register_dataarray_accessor("geobind")
class GeoBindArrayAccessor:
    """``raster.geobind``: embed a raster into a grid, score queries over it, map the results.

    Works on a raster (``(band, y, x)`` or ``(y, x)``, e.g. from ``rioxarray.open_rasterio``,
    numpy- or dask-backed) and on an embedding grid (``(embedding, y, x)``, from :meth:`embed`
    or a Zarr store), which is never re-embedded.

    Example:
        >>> import geobind, numpy as np, xarray as xr, rioxarray  # noqa: F401
        >>> raster = xr.DataArray(
        ...     np.random.default_rng(0).integers(0, 255, (3, 96, 96), dtype=np.uint8),
        ...     dims=("band", "y", "x"),
        ...     coords={"y": 500.5 - np.arange(96), "x": 300.5 + np.arange(96)},
        ... ).rio.write_crs(32633)
        >>> with geobind.use_model("tiny"):
        ...     raster.geobind.similarity("busy highway", progress=False).shape
        (5, 5)
    """

    def __init__(self, obj: xr.DataArray):
        self._obj = obj

    # -- embedding -----------------------------------------------------------------------------
    def embed(
        self,
        model: Any = None,
        *,
        chip_size: int | None = None,
        stride: int | None = None,
        batch_size: int = 64,
        nodata_fraction: float = 0.5,
        bands: Sequence[int] | None = None,
        gsd: float | None = None,
        progress: bool = True,
    ) -> xr.DataArray:
        """Embed the chip centred on every grid cell: ``DataArray(embedding, y, x)`` float32.

        Args:
            model: a model, preset name or model folder (default: :func:`geobind.use_model`'s).
            chip_size: chip side in raster pixels; default keeps the model's footprint
                (``chip_size × gsd`` metres) at this raster's resolution.
            stride: pixels between chip centres (default: half a chip).
            batch_size: chips per forward pass.
            nodata_fraction: chips with a larger share of nodata/NaN pixels give NaN cells.
            bands: 1-based bands read as R, G, B (default: the model's, e.g. ``[1, 2, 3]``).
            gsd: the raster's pixel size in metres, for rasters without a projected CRS.
            progress: show a progress bar (eager rasters).

        The grid's transform is the raster's scaled by ``stride`` and shifted to the chip
        centres; its CRS is the raster's; ``attrs`` record the model, its hash, chip size,
        stride and geobind version. A dask-backed raster gives a lazy grid.

        Example:
            >>> import geobind, numpy as np, xarray as xr, rioxarray  # noqa: F401
            >>> raster = xr.DataArray(np.zeros((3, 64, 64), np.uint8), dims=("band", "y", "x"),
            ...     coords={"y": 63.5 - np.arange(64), "x": np.arange(64) + 0.5}
            ... ).rio.write_crs(32633)
            >>> grid = raster.geobind.embed("tiny", stride=16, progress=False)
            >>> grid.dims, grid.shape, grid.rio.transform().a
            (('embedding', 'y', 'x'), (64, 3, 3), 16.0)
        """
        from geobind.inference.raster import embed_raster, is_grid

        if is_grid(self._obj):
            return self._obj
        return embed_raster(
            self._obj,
            model,
            chip_size=chip_size,
            stride=stride,
            batch_size=batch_size,
            nodata_fraction=nodata_fraction,
            bands=bands,
            gsd=gsd,
            progress=progress,
        )

    def _grid(self, model: Any, embed_kw: dict[str, Any]) -> tuple[xr.DataArray, Any]:
        from geobind.inference.context import resolve_model
        from geobind.inference.raster import check_same_model

        model = resolve_model(model)
        grid = embed_kw.pop("grid", None)  # a grid already embedded from this raster
        grid = self.embed(model, **embed_kw) if grid is None else grid
        check_same_model(grid, model)
        return grid, model

    # -- queries -------------------------------------------------------------------------------
    def similarity(
        self,
        query: Any = None,
        *,
        model: Any = None,
        text: str | Sequence[str] | None = None,
        audio: Any = None,
        image: Any = None,
        vector: Any = None,
        templates: Sequence[str] | None = None,
        **embed_kw: Any,
    ) -> xr.DataArray:
        """Cosine similarity of every cell with a query: ``DataArray(y, x)`` in [-1, 1].

        ``query`` is text (``"busy highway"``), an audio file (``.wav``, ``.flac`` …) or
        ``(samples, rate)``, a ground photo (path or PIL image), an embedding vector, or a
        geometry / GeoDataFrame / GeoSeries ("find places like this": the area-weighted mean
        embedding of the cells it covers). A list of queries adds a ``query`` dimension. The
        keywords force a kind. On a raster the grid is embedded first (``embed_kw`` go to
        :meth:`embed`), unless ``grid=`` passes one already made from it (e.g. read from a Zarr
        store); on an embedding grid nothing is re-embedded.

        Example:
            >>> import geobind, numpy as np, xarray as xr, rioxarray  # noqa: F401
            >>> grid = xr.DataArray(np.ones((64, 2, 2), np.float32) / 8,
            ...     dims=("embedding", "y", "x"), coords={"y": [1.5, 0.5], "x": [0.5, 1.5]}
            ... ).rio.write_crs(32633)
            >>> sim = grid.geobind.similarity(["a lake", "a forest"], model="tiny")
            >>> sim.dims, sim["query"].values.tolist()
            (('query', 'y', 'x'), ['a lake', 'a forest'])
        """
        from geobind.inference.query import embed_query
        from geobind.inference.raster import scores

        grid, model = self._grid(model, embed_kw)
        if _is_geometry(query):
            vectors, labels, several = _geometry_query(grid, query), ["geometry"], False
        else:
            vectors, labels, several = embed_query(
                model,
                query,
                text=text,
                audio=audio,
                image=image,
                vector=vector,
                templates=templates,
            )
        return scores(grid, vectors, labels, several)

    def classify(
        self,
        labels: Sequence[str] | Mapping[str, str | Sequence[str]],
        *,
        model: Any = None,
        templates: Sequence[str] | None = None,
        **embed_kw: Any,
    ) -> xr.Dataset:
        """Zero-shot classification of every cell: the label whose text prompt scores highest.

        ``labels`` is a list of class names (each its own prompt) or a mapping from class name
        to a prompt or a list of prompts (their embeddings are averaged). Returns a Dataset with
        ``class`` (y, x) int16 indices into the ``label`` coordinate (−1 where the cell is NaN; CF
        ``flag_values``/``flag_meanings`` attrs), ``score`` (the winning similarity) and
        ``scores`` (label, y, x).

        Example:
            >>> import geobind, numpy as np, xarray as xr, rioxarray  # noqa: F401
            >>> grid = xr.DataArray(np.ones((64, 2, 2), np.float32) / 8,
            ...     dims=("embedding", "y", "x"), coords={"y": [1.5, 0.5], "x": [0.5, 1.5]}
            ... ).rio.write_crs(32633)
            >>> labels = {"water": ["a lake", "open water"], "trees": "a forest"}
            >>> out = grid.geobind.classify(labels, model="tiny")
            >>> out["class"].shape, out["label"].values.tolist()
            ((2, 2), ['water', 'trees'])
        """
        from geobind.inference.raster import classify

        grid, model = self._grid(model, embed_kw)
        return classify(grid, model, labels, templates=templates)

    def top_k(self, query: Any = None, k: int = 10, *, model: Any = None, **kw: Any):
        """The ``k`` best-scoring cells for a query, as a GeoDataFrame of cell polygons.

        Columns: ``rank``, ``score``, ``row``, ``col`` (grid indices), ``geometry`` (the cell,
        ``stride × stride`` pixels around its chip centre), in the raster's CRS; sorted by
        score, best first; NaN cells are never returned. ``kw`` are those of
        :meth:`similarity`.

        Example:
            >>> import geobind, numpy as np, xarray as xr, rioxarray  # noqa: F401
            >>> grid = xr.DataArray(np.eye(64, dtype=np.float32)[:, :4].reshape(64, 2, 2),
            ...     dims=("embedding", "y", "x"),
            ...     coords={"y": [1.5, 0.5], "x": [0.5, 1.5]}).rio.write_crs(32633)
            >>> hits = grid.geobind.top_k(vector=np.eye(64, dtype=np.float32)[3], k=2, model="tiny")
            >>> hits[["rank", "row", "col"]].values.tolist()[0], float(hits["score"].iloc[0])
            ([1, 1, 1], 1.0)
        """
        from geobind.inference.raster import top_k

        sim = self.similarity(query, model=model, **kw)
        if "query" in sim.dims:
            raise InputDataError("top_k takes one query; loop over several")
        return top_k(sim, k, sim.rio.transform(recalc=True), sim.rio.crs)

    def plot(
        self,
        query: Any = None,
        *,
        model: Any = None,
        ax: Any = None,
        cmap: str = "magma",
        alpha: float = 0.6,
        **kw: Any,
    ):
        """A matplotlib figure of the similarity map over the scene, with a colour bar.

        On a raster the scene's first three bands (per the model's bands) are drawn as RGB,
        contrast-stretched, and the map is overlaid with ``alpha``; on a grid only the map is
        drawn. Several queries give one panel each. Returns the figure.

        Example:
            >>> import geobind, numpy as np, xarray as xr, rioxarray  # noqa: F401
            >>> raster = xr.DataArray(np.zeros((3, 64, 64), np.uint8), dims=("band", "y", "x"),
            ...     coords={"y": 63.5 - np.arange(64), "x": np.arange(64) + 0.5}
            ... ).rio.write_crs(32633)
            >>> fig = raster.geobind.plot("a lake", model="tiny", progress=False)
            >>> len(fig.axes)  # the map and its colour bar
            2
        """
        import matplotlib.pyplot as plt
        import numpy as np

        from geobind.inference.raster import is_grid, layout

        sim = self.similarity(query, model=model, **kw)
        maps = [sim.sel(query=q) for q in sim["query"].values] if "query" in sim.dims else [sim]
        if ax is None:
            fig, axes = plt.subplots(
                1, len(maps), figsize=(5.5 * len(maps), 5), squeeze=False, layout="constrained"
            )
            axes = list(axes[0])
        else:
            axes = list(np.atleast_1d(ax))
            fig = axes[0].figure
        rgb = None
        if not is_grid(self._obj):
            rgb, extent = _rgb(self._obj, layout(self._obj), kw.get("bands"), model)
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


@xr.register_dataset_accessor("geobind")
class GeoBindDatasetAccessor:
    """``ds.geobind``: the DataArray accessor on a Dataset's ``embedding`` variable (a Zarr
    store opened with ``xr.open_zarr``) or on its raster variables stacked as bands.

    Example:
        >>> import numpy as np, xarray as xr, rioxarray  # noqa: F401
        >>> ds = xr.Dataset({b: (("y", "x"), np.zeros((40, 40), np.uint8)) for b in "rgb"},
        ...                 coords={"y": 39.5 - np.arange(40), "x": np.arange(40) + 0.5})
        >>> ds.geobind.array.sizes["band"]
        3
    """

    def __init__(self, obj: xr.Dataset):
        self._obj = obj

    @property
    def array(self) -> xr.DataArray:
        """The DataArray the methods run on: ``embedding`` if present, else the bands stacked."""
        ds = self._obj
        if "embedding" in ds.variables and ds["embedding"].ndim == 3:
            return ds["embedding"]  # read back from Zarr it is listed among the coordinates
        names = [n for n, v in ds.data_vars.items() if v.ndim == 2]
        if not names:
            raise InputDataError(
                "this Dataset has neither an 'embedding' variable nor 2-D raster variables"
            )
        out = ds[names].to_dataarray("band")
        if "spatial_ref" in ds.coords:
            out = out.assign_coords(spatial_ref=ds.coords["spatial_ref"])
        return out

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self.array.geobind, name)

    def __dir__(self) -> list[str]:
        return sorted({*super().__dir__(), *dir(GeoBindArrayAccessor)})


def _is_geometry(query: Any) -> bool:
    return type(query).__module__.split(".")[0] in ("shapely", "geopandas")


def _geometry_query(grid: xr.DataArray, query: Any):
    """The unit mean embedding of the cells a geometry (or GeoDataFrame) covers: ``(1, D)``."""
    import geopandas as gpd
    import numpy as np

    from geobind.inference.vector import cell_weights, to_crs, zonal_mean

    if not hasattr(query, "crs"):
        query = gpd.GeoSeries([query], crs=grid.rio.crs)  # a shapely geometry: the grid's CRS
    geoms = to_crs(query, grid.rio.crs)
    union = geoms.geometry.union_all() if hasattr(geoms, "geometry") else geoms.union_all()
    data = np.asarray(grid.transpose("embedding", ...).values)
    weights = cell_weights([union], grid.rio.transform(recalc=True), data.shape[1:])
    vector = zonal_mean(data, weights)
    if np.isnan(vector).any():
        raise InputDataError("the query geometry covers no valid cell of the grid")
    return vector.astype(np.float32)


def _rgb(raster: xr.DataArray, lay: Any, bands: Sequence[int] | None, model: Any):
    """A contrast-stretched (H, W, 3) image of the raster and its extent, for plotting."""
    import numpy as np

    from geobind.inference.context import resolve_model

    arr = raster if lay.band is not None else raster.expand_dims("band")
    arr = arr.transpose(lay.band or "band", lay.y, lay.x)
    chosen = list(bands or resolve_model(model).config["sat"].get("bands", [1, 2, 3]))
    chosen = [min(b, arr.shape[0]) for b in chosen][:3]
    step = max(1, max(arr.shape[1:]) // 1024)  # at most ~1024 px a side for display
    img = np.asarray(arr[[b - 1 for b in chosen], ::step, ::step].values, np.float32)
    if lay.nodata is not None:
        img[img == lay.nodata] = np.nan
    lo, hi = np.nanpercentile(img, 2), np.nanpercentile(img, 98)
    img = np.clip((img - lo) / max(hi - lo, 1e-6), 0, 1)
    t = lay.transform
    h, w = arr.shape[1:]
    extent = (t.c, t.c + w * t.a, t.f + h * t.e, t.f)
    return np.nan_to_num(np.moveaxis(img, 0, -1)), extent


def _title(query: Any, kw: Mapping[str, Any]) -> str:
    for key in ("text", "audio", "image"):
        if kw.get(key) is not None:
            return str(kw[key])
    return str(query) if isinstance(query, str) else type(query).__name__
