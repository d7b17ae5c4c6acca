"""``DataArray.geobind`` and ``Dataset.geobind``: embedding grids and similarity maps in xarray.

One-line wrappers over :mod:`geobind.inference.api` (``geobind.embed``, ``similarity``,
``top_k``, ``classify``, ``plot``, ``explore``), with this object as the first argument.
Registered when xarray is imported (see :mod:`geobind.accessors`). The accessor holds only the
object it is attached to; models come from ``model=`` or :func:`geobind.use_model`. The grid
embedded from a raster is kept for that raster object (see :func:`geobind.embed`), so repeated
queries embed once.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any

import xarray as xr

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
        cache: bool = True,
    ) -> xr.DataArray:
        """Embed the chip centred on every grid cell: :func:`geobind.embed` on this raster.

        A grid is returned as it is. The grid is kept for this raster (``cache=False`` opts
        out), so the queries below do not embed it again.

        Example:
            >>> import geobind, numpy as np, xarray as xr, rioxarray  # noqa: F401
            >>> raster = xr.DataArray(np.zeros((3, 64, 64), np.uint8), dims=("band", "y", "x"),
            ...     coords={"y": 63.5 - np.arange(64), "x": np.arange(64) + 0.5}
            ... ).rio.write_crs(32633)
            >>> grid = raster.geobind.embed("tiny", stride=16, progress=False)
            >>> grid.dims, grid.shape, grid.rio.transform().a
            (('embedding', 'y', 'x'), (64, 3, 3), 16.0)
        """
        return _api().embed(
            self._obj,
            model,
            chip_size=chip_size,
            stride=stride,
            batch_size=batch_size,
            nodata_fraction=nodata_fraction,
            bands=bands,
            gsd=gsd,
            progress=progress,
            cache=cache,
        )

    def similarity(
        self,
        query: Any = None,
        *,
        model: Any = None,
        grid: xr.DataArray | None = None,
        text: str | Sequence[str] | None = None,
        audio: Any = None,
        image: Any = None,
        vector: Any = None,
        templates: Sequence[str] | None = None,
        **embed_kw: Any,
    ) -> xr.DataArray:
        """Cosine similarity of every cell with a query: :func:`geobind.similarity`.

        ``DataArray(y, x)`` in [-1, 1] (``(query, y, x)`` for a list of queries). On a raster
        the grid kept from an earlier call is reused (``embed_kw`` as for :meth:`embed`).

        Example:
            >>> import geobind, numpy as np, xarray as xr, rioxarray  # noqa: F401
            >>> grid = xr.DataArray(np.ones((64, 2, 2), np.float32) / 8,
            ...     dims=("embedding", "y", "x"), coords={"y": [1.5, 0.5], "x": [0.5, 1.5]}
            ... ).rio.write_crs(32633)
            >>> sim = grid.geobind.similarity(["a lake", "a forest"], model="tiny")
            >>> sim.dims, sim["query"].values.tolist()
            (('query', 'y', 'x'), ['a lake', 'a forest'])
        """
        return _api().similarity(
            self._obj,
            query,
            model=model,
            grid=grid,
            text=text,
            audio=audio,
            image=image,
            vector=vector,
            templates=templates,
            **{"progress": True, **embed_kw},
        )

    def classify(
        self,
        labels: Sequence[str] | Mapping[str, str | Sequence[str]],
        *,
        model: Any = None,
        grid: xr.DataArray | None = None,
        templates: Sequence[str] | None = None,
        **embed_kw: Any,
    ) -> xr.Dataset:
        """Zero-shot class of every cell: :func:`geobind.classify`.

        Example:
            >>> import geobind, numpy as np, xarray as xr, rioxarray  # noqa: F401
            >>> grid = xr.DataArray(np.ones((64, 2, 2), np.float32) / 8,
            ...     dims=("embedding", "y", "x"), coords={"y": [1.5, 0.5], "x": [0.5, 1.5]}
            ... ).rio.write_crs(32633)
            >>> out = grid.geobind.classify({"water": "a lake", "trees": "a forest"}, model="tiny")
            >>> out["class"].shape, out["label"].values.tolist()
            ((2, 2), ['water', 'trees'])
        """
        return _api().classify(
            self._obj,
            labels,
            model=model,
            grid=grid,
            templates=templates,
            **{"progress": True, **embed_kw},
        )

    def top_k(
        self,
        query: Any = None,
        k: int = 10,
        *,
        model: Any = None,
        grid: xr.DataArray | None = None,
        **kw: Any,
    ):
        """The ``k`` best cells for a query, as a GeoDataFrame of cells: :func:`geobind.top_k`.

        Example:
            >>> import geobind, numpy as np, xarray as xr, rioxarray  # noqa: F401
            >>> grid = xr.DataArray(np.eye(64, dtype=np.float32)[:, :4].reshape(64, 2, 2),
            ...     dims=("embedding", "y", "x"),
            ...     coords={"y": [1.5, 0.5], "x": [0.5, 1.5]}).rio.write_crs(32633)
            >>> hits = grid.geobind.top_k(vector=np.eye(64, dtype=np.float32)[3], k=2)
            >>> hits[["rank", "row", "col"]].values.tolist()[0], float(hits["score"].iloc[0])
            ([1, 1, 1], 1.0)
        """
        return _api().top_k(self._obj, query, k, model=model, grid=grid, **{"progress": True, **kw})

    def plot(
        self,
        query: Any = None,
        *,
        model: Any = None,
        grid: xr.DataArray | None = None,
        ax: Any = None,
        cmap: str = "magma",
        alpha: float = 0.6,
        **kw: Any,
    ):
        """A matplotlib figure of the similarity map over the scene: :func:`geobind.plot`.

        Example:
            >>> import geobind, numpy as np, xarray as xr, rioxarray  # noqa: F401
            >>> raster = xr.DataArray(np.zeros((3, 64, 64), np.uint8), dims=("band", "y", "x"),
            ...     coords={"y": 63.5 - np.arange(64), "x": np.arange(64) + 0.5}
            ... ).rio.write_crs(32633)
            >>> fig = raster.geobind.plot("a lake", model="tiny", progress=False)
            >>> len(fig.axes)  # the map and its colour bar
            2
        """
        return _api().plot(
            self._obj,
            query,
            model=model,
            grid=grid,
            ax=ax,
            cmap=cmap,
            alpha=alpha,
            **{"progress": True, **kw},
        )

    def explore(
        self,
        query: Any = None,
        *,
        model: Any = None,
        grid: xr.DataArray | None = None,
        k: int | None = 10,
        rgb: Any = True,
        tiles: str | None = "OpenStreetMap",
        cmap: str = "magma",
        opacity: float = 0.75,
        **kw: Any,
    ):
        """An interactive Leaflet map of the similarity map over the scene, with the best cells:
        :func:`geobind.explore` (returns a ``folium.Map``; ``tiles=None`` works offline).

        Example:
            >>> import geobind, numpy as np, xarray as xr, rioxarray  # noqa: F401
            >>> raster = xr.DataArray(np.zeros((3, 64, 64), np.uint8), dims=("band", "y", "x"),
            ...     coords={"y": 4_600_063.5 - np.arange(64), "x": 500_000.5 + np.arange(64)}
            ... ).rio.write_crs(32633)
            >>> m = raster.geobind.explore(["a lake", "a road"], model="tiny", tiles=None,
            ...                            progress=False)
            >>> type(m).__name__
            'Map'
        """
        return _api().explore(
            self._obj,
            query,
            model=model,
            grid=grid,
            k=k,
            rgb=rgb,
            tiles=tiles,
            cmap=cmap,
            opacity=opacity,
            **{"progress": True, **kw},
        )


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
        return _api()._dataarray(self._obj)

    def __getattr__(self, name: str) -> Any:
        if name in _METHODS:  # on the Dataset itself: it owns the kept grid (see geobind.embed)
            return functools.partial(getattr(_api(), name), self._obj, progress=True)
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self.array.geobind, name)

    def __dir__(self) -> list[str]:
        return sorted({*super().__dir__(), *dir(GeoBindArrayAccessor)})


_METHODS = frozenset(("embed", "similarity", "classify", "top_k", "plot", "explore"))


def _api() -> Any:
    from geobind.inference import api

    return api
