"""The ``.geobind`` accessor on GeoDataFrames and GeoSeries: embed, score and rank geometries.

One-line wrappers over :mod:`geobind.inference.api` (``geobind.embed``, ``similarity``,
``top_k``) with the geometries as the first argument. Points take the chip centred on them,
polygons and lines the area- (length-) weighted mean of the grid cells they cover; results
are aligned to the frame's index, NaN where a geometry is off the raster, on nodata, empty or
missing. Geometries in another CRS than the raster's are reprojected with a
:class:`~geobind.errors.CRSMismatchWarning`; geometries without a CRS are an error.

This module is imported as soon as pandas is (see :mod:`geobind.accessors`), so at import time
it loads pandas and nothing heavier; geopandas, shapely, torch and the inference code load on
first use.
"""

from __future__ import annotations

import sys
from typing import Any

import pandas as pd

from geobind.errors import InputDataError

__all__ = ["GeoBindGeoAccessor"]


class _NotGeoDataError(InputDataError, AttributeError):
    """``.geobind`` used on a pandas object without geometries (an AttributeError for pandas:
    ``hasattr(df, "geobind")`` is False and ``dir(df)`` keeps working)."""


def _geometry(obj: Any) -> Any:
    """The active geometry GeoSeries of ``obj``, or ``None`` when it has none."""
    if "geopandas" not in sys.modules:  # then obj cannot hold geometries: skip the import
        return None
    import geopandas as gpd

    if isinstance(obj, pd.Series) and isinstance(obj.dtype, gpd.array.GeometryDtype):
        return gpd.GeoSeries(obj)
    try:
        return _api()._geo(obj)  # a GeoDataFrame's active geometry, or a GeoSeries
    except InputDataError:  # a GeoDataFrame without an active geometry column
        return None


@pd.api.extensions.register_series_accessor("geobind")
@pd.api.extensions.register_dataframe_accessor("geobind")
class GeoBindGeoAccessor:
    """``gdf.geobind`` / ``geoseries.geobind``: geometries into the shared embedding space.

    Every method takes the pixels as ``raster=`` (a DataArray read with rioxarray, or a GeoTIFF
    path; embedded with ``model=`` or the :func:`geobind.use_model` default) or an embedding
    grid as ``grid=`` (``DataArray(embedding, y, x)``, e.g. ``raster.geobind.embed()`` or
    ``xr.open_zarr(store)["embedding"]``; no model needed to embed from it).

    Raises:
        InputDataError: (also an ``AttributeError``) on a pandas object without geometries.
    """

    __slots__ = ("_geo", "_obj")

    def __init__(self, obj: Any):
        geo = _geometry(obj)
        if geo is None:
            raise _NotGeoDataError(
                f"the .geobind accessor needs a GeoDataFrame (with an active geometry column) "
                f"or a GeoSeries; got a {type(obj).__name__}. Convert it with "
                "geopandas.GeoDataFrame(df, geometry=..., crs=...)"
            )
        self._obj = obj
        self._geo = geo

    def embed(self, raster: Any = None, **kw: Any) -> pd.DataFrame:
        """Embed each geometry: :func:`geobind.embed` on these geometries (``raster=`` the
        pixels, or ``grid=``; the other keywords are the function's: ``model``, ``chip_size``,
        ``stride``, ``batch_size``, ``nodata_fraction``, ``bands``, ``gsd``).

        A DataFrame on the frame's index, columns ``0 … embed_dim − 1``: points take the chip
        centred on them (with only a ``grid``: the cell holding them), polygons and lines the
        weighted mean of the cells they cover; NaN rows off the raster, on nodata or empty.

        Raises:
            CRSError: the geometries or the raster have no CRS.
            InputDataError: neither or both of ``raster`` and ``grid``; no model.

        Example:
            >>> import geobind, geopandas as gpd, numpy as np, shapely, xarray as xr, rioxarray
            >>> px = np.random.default_rng(0).integers(1, 255, (3, 64, 64), dtype=np.uint8)
            >>> raster = xr.DataArray(px, dims=("band", "y", "x"), coords={
            ...     "y": 63.5 - np.arange(64), "x": 0.5 + np.arange(64)}).rio.write_crs(32633)
            >>> gdf = gpd.GeoDataFrame(geometry=[shapely.Point(32, 32), shapely.box(0, 0, 64, 64),
            ...                                  shapely.Point(-50, 0)], crs=32633)
            >>> emb = gdf.geobind.embed(raster, model="tiny")
            >>> emb.shape, emb.isna().all(axis=1).tolist()
            ((3, 64), [False, False, True])
        """
        return _api().embed(self._target, raster=raster, **kw)

    def similarity(self, query: Any = None, **kw: Any) -> pd.Series | pd.DataFrame:
        """Cosine similarity of each geometry's embedding with a query: :func:`geobind.similarity`
        (with ``raster=`` or ``grid=``, ``model=``, the query keywords ``text``, ``audio``,
        ``image``, ``vector``, ``templates``, and the embedding settings of :meth:`embed`).

        One query gives a Series named ``similarity`` on the frame's index, a list a DataFrame
        with one column per query; NaN where the geometry has no embedding.

        Example:
            >>> import geobind, geopandas as gpd, numpy as np, shapely, xarray as xr, rioxarray
            >>> px = np.random.default_rng(0).integers(1, 255, (3, 64, 64), dtype=np.uint8)
            >>> raster = xr.DataArray(px, dims=("band", "y", "x"), coords={
            ...     "y": 63.5 - np.arange(64), "x": 0.5 + np.arange(64)}).rio.write_crs(32633)
            >>> gdf = gpd.GeoDataFrame({"name": ["a", "b"]}, index=[10, 20], crs=32633,
            ...                        geometry=[shapely.Point(20, 20), shapely.Point(40, 44)])
            >>> with geobind.use_model("tiny"):
            ...     s = gdf.geobind.similarity("a lake", raster=raster)
            ...     both = gdf.geobind.similarity(["a lake", "a forest"], raster=raster)
            >>> s.name, s.index.tolist(), both.columns.tolist()
            ('similarity', [10, 20], ['a lake', 'a forest'])
        """
        return _api().similarity(self._target, query, **kw)

    def search(self, query: Any = None, *, k: int = 10, **kw: Any) -> Any:
        """The ``k`` geometries most similar to ``query``, best first: :func:`geobind.top_k`.

        A GeoDataFrame of those rows with a ``similarity`` column (fewer rows when fewer
        geometries have embeddings). Takes what :meth:`similarity` takes, for one query.

        Example:
            >>> import geobind, geopandas as gpd, numpy as np, shapely, xarray as xr, rioxarray
            >>> px = np.random.default_rng(0).integers(1, 255, (3, 64, 64), dtype=np.uint8)
            >>> raster = xr.DataArray(px, dims=("band", "y", "x"), coords={
            ...     "y": 63.5 - np.arange(64), "x": 0.5 + np.arange(64)}).rio.write_crs(32633)
            >>> gdf = gpd.GeoDataFrame(geometry=[shapely.Point(20, 20), shapely.Point(40, 44),
            ...                                  shapely.Point(999, 999)], crs=32633)
            >>> hits = gdf.geobind.search("a lake", raster=raster, model="tiny", k=5)
            >>> len(hits), hits["similarity"].is_monotonic_decreasing  # the third is off-raster
            (2, True)
        """
        return _api().top_k(self._target, query, k, **kw)

    @property
    def _target(self) -> Any:
        """What the functions take: the GeoDataFrame, or the geometries as a GeoSeries."""
        return self._obj if isinstance(self._obj, pd.DataFrame) else self._geo


def _api() -> Any:
    from geobind.inference import api

    return api
