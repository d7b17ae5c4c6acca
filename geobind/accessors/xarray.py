"""``DataArray.geobind`` and ``Dataset.geobind``: embedding grids and similarity maps in xarray.

One-line wrappers over :mod:`geobind.inference.api` (``geobind.embed``, ``similarity``,
``change``, ``top_k``, ``classify``, ``plot``, ``explore``), with this object as the first argument.
Registered when xarray is imported (see :mod:`geobind.accessors`). The accessor holds only the
object it is attached to; models come from ``model=`` or :func:`geobind.use_model`. The grid
embedded from a raster is kept for that raster object (see :func:`geobind.embed`), so repeated
queries embed once.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

import xarray as xr

from geobind.inference import api  # the functions only: nothing heavy loads with it

__all__ = ["GeoBindArrayAccessor", "GeoBindDatasetAccessor"]


@xr.register_dataarray_accessor("geobind")
class GeoBindArrayAccessor:
    """``raster.geobind``: embed a raster into a grid, score queries over it, map the results.

    Works on a raster (``(band, y, x)`` or ``(y, x)``, e.g. from ``rioxarray.open_rasterio``,
    numpy- or dask-backed) and on an embedding grid (``(embedding, y, x)``, from :meth:`embed`
    or a Zarr store), which is never re-embedded.

    Example:
        >>> import geobind, numpy as np, xarray as xr, rioxarray  # noqa: F401
        >>> pixels = np.random.default_rng(0).integers(0, 255, (3, 96, 96), dtype=np.uint8)
        >>> raster = xr.DataArray(pixels, dims=("band", "y", "x"), coords={
        ...     "y": 500.5 - np.arange(96), "x": 300.5 + np.arange(96)}).rio.write_crs(32633)
        >>> with geobind.use_model("tiny"):
        ...     sim = raster.geobind.similarity("busy highway", progress=False)  # embeds
        ...     best = raster.geobind.top_k("a lake", k=3, progress=False)  # the same grid
        >>> sim.shape, best["rank"].tolist()
        ((5, 5), [1, 2, 3])
    """

    def __init__(self, obj: xr.DataArray):
        self._obj = obj


def _method(name: str, doc: str) -> Callable:
    """An accessor method: ``geobind.<name>`` with this object first, its signature and
    parameters (see the function), and progress bars on unless ``progress=False``."""
    func = getattr(api, name)

    def method(self: Any, *args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("progress", True)
        return func(self._obj, *args, **kwargs)

    signature = inspect.signature(func)
    this = inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)
    method.__signature__ = signature.replace(  # type: ignore[attr-defined]
        parameters=[this, *list(signature.parameters.values())[1:]]
    )
    method.__name__ = method.__qualname__ = name
    method.__doc__ = doc
    return method


_GRID_EXAMPLE = """
            >>> import geobind, numpy as np, xarray as xr, rioxarray  # noqa: F401
            >>> grid = xr.DataArray(np.ones((64, 2, 2), np.float32) / 8,
            ...     dims=("embedding", "y", "x"), coords={"y": [1.5, 0.5], "x": [0.5, 1.5]}
            ... ).rio.write_crs(32633)"""
_RASTER_EXAMPLE = """
            >>> import geobind, numpy as np, xarray as xr, rioxarray  # noqa: F401
            >>> raster = xr.DataArray(np.zeros((3, 64, 64), np.uint8), dims=("band", "y", "x"),
            ...     coords={"y": 4_600_063.5 - np.arange(64), "x": 500_000.5 + np.arange(64)}
            ... ).rio.write_crs(32633)"""

_DOCS = {
    "embed": """Embed the chip centred on every grid cell: :func:`geobind.embed` on this raster.

        A grid is returned as it is. The grid is kept for this raster (``cache=False`` opts
        out), so the queries below do not embed it again.

        Example:"""
    + _RASTER_EXAMPLE
    + """
            >>> grid = raster.geobind.embed("tiny", stride=16, progress=False)
            >>> grid.dims, grid.shape, grid.rio.transform().a
            (('embedding', 'y', 'x'), (64, 3, 3), 16.0)
        """,
    "similarity": """Cosine similarity of every cell with a query: :func:`geobind.similarity`.

        ``DataArray(y, x)`` in [-1, 1] (``(query, y, x)`` for a list of queries). On a raster
        the grid kept from an earlier call is reused (``embed_kw`` as for :meth:`embed`).

        Example:"""
    + _GRID_EXAMPLE
    + """
            >>> sim = grid.geobind.similarity(["a lake", "a forest"], model="tiny")
            >>> sim.dims, sim["query"].values.tolist()
            (('query', 'y', 'x'), ['a lake', 'a forest'])
        """,
    "change": """Where a query's similarity rose or fell between two dates (``after − before``)
        on a stack of dates (a ``time`` dimension): :func:`geobind.change`.

        Example:
            >>> import geobind, numpy as np, xarray as xr, rioxarray  # noqa: F401
            >>> grid = xr.DataArray(np.ones((2, 64, 2, 2), np.float32) / 8,
            ...     dims=("time", "embedding", "y", "x"),
            ...     coords={"time": [2023, 2024], "y": [1.5, 0.5], "x": [0.5, 1.5]}
            ... ).rio.write_crs(32633)
            >>> vector = np.zeros(64, np.float32); vector[0] = 1
            >>> diff = grid.geobind.change(vector=vector, before=2023, after=2024)
            >>> diff.dims, float(diff.max())
            (('y', 'x'), 0.0)
        """,
    "classify": """Zero-shot class of every cell: :func:`geobind.classify`.

        Example:"""
    + _GRID_EXAMPLE
    + """
            >>> out = grid.geobind.classify({"water": "a lake", "trees": "a forest"}, model="tiny")
            >>> out["class"].shape, out["label"].values.tolist()
            ((2, 2), ['water', 'trees'])
        """,
    "top_k": """The ``k`` best cells for a query, as a GeoDataFrame of cells: :func:`geobind.top_k`.

        Example:"""
    + _GRID_EXAMPLE
    + """
            >>> vector = np.zeros(64, np.float32); vector[0] = 1
            >>> hits = grid.geobind.top_k(vector=vector, k=2)
            >>> len(hits), float(hits["score"].iloc[0])
            (2, 0.125)
        """,
    "plot": """A matplotlib figure of the similarity map over the scene: :func:`geobind.plot`.

        Example:"""
    + _RASTER_EXAMPLE
    + """
            >>> fig = raster.geobind.plot("a lake", model="tiny", progress=False)
            >>> len(fig.axes)  # the map and its colour bar
            2
        """,
    "explore": """An interactive Leaflet map of the similarity map over the scene, with the best
        cells: :func:`geobind.explore` (returns a ``folium.Map``; ``tiles=None`` works offline).

        Example:"""
    + _RASTER_EXAMPLE
    + """
            >>> m = raster.geobind.explore(["a lake", "a road"], model="tiny", tiles=None,
            ...                            progress=False)
            >>> type(m).__name__
            'Map'
        """,
}
for _name, _doc in _DOCS.items():
    setattr(GeoBindArrayAccessor, _name, _method(_name, _doc))


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
        return api._dataarray(self._obj)

    def __getattr__(self, name: str) -> Any:
        if name in _METHODS:  # on the Dataset itself: it owns the kept grid (see geobind.embed)
            return functools.partial(getattr(api, name), self._obj, progress=True)
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self.array.geobind, name)

    def __dir__(self) -> list[str]:
        return sorted({*super().__dir__(), *dir(GeoBindArrayAccessor)})


_METHODS = frozenset(_DOCS)
