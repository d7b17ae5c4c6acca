"""Point manifests: one row per sample (a photo, a clip, a caption) at a location.

A manifest is a table of points with a CRS and, usually, a ``path`` column naming the sample's file
relative to the manifest. :func:`read_manifest` reads GeoParquet, any vector format GDAL reads
(GeoPackage, GeoJSON, Shapefile, FlatGeobuf …), and CSV or plain Parquet tables with ``lon``/``lat``
(or ``longitude``/``latitude``) columns in degrees (EPSG:4326).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from geobind.errors import CRSError, CRSMismatchWarning, GeoBindError, InputDataError

if TYPE_CHECKING:
    import geopandas as gpd
    import pandas as pd

__all__ = ["read_manifest"]

# column pairs read as degrees (EPSG:4326), in order of preference; matched case-insensitively
_LONLAT = (("lon", "lat"), ("longitude", "latitude"), ("lng", "lat"))
_TABLE_SUFFIXES = {".csv": ",", ".tsv": "\t"}
_PARQUET_SUFFIXES = (".parquet", ".geoparquet")


def read_manifest(path: str | os.PathLike[str], *, crs: Any = None) -> gpd.GeoDataFrame:
    """Read a point manifest into a GeoDataFrame.

    ``.parquet`` files are GeoParquet (or plain Parquet with ``lon``/``lat`` columns), ``.csv`` and
    ``.tsv`` files need ``lon``/``lat`` (or ``longitude``/``latitude``) columns in degrees and give
    EPSG:4326 points, and anything else is read by ``geopandas.read_file`` (GeoPackage, GeoJSON,
    Shapefile …). A ``path`` column is made absolute, relative to the manifest's folder (absolute
    paths and URLs are left as they are). An empty manifest gives an empty GeoDataFrame.

    Args:
        path: the manifest file.
        crs: the CRS to return the points in (anything ``pyproj.CRS.from_user_input`` takes). When
            the manifest is in another CRS the points are reprojected, with a
            :class:`~geobind.errors.CRSMismatchWarning`. ``None`` keeps the manifest's own CRS.

    Returns:
        The manifest's rows (index as stored), one Point geometry each.

    Raises:
        InputDataError: the file does not exist or cannot be read, has no usable coordinates,
            or holds missing or non-point geometries.
        CRSError: the manifest has no CRS, or ``crs`` is not a CRS.

    Example:
        >>> folder = getfixture("tmp_path")
        >>> _ = (folder / "m.csv").write_text("lon,lat,path\\n15.0,41.9,photos/a.jpg\\n")
        >>> gdf = read_manifest(folder / "m.csv")
        >>> gdf.crs.to_epsg(), gdf.geometry[0].x, gdf.path[0] == str(folder / "photos" / "a.jpg")
        (4326, 15.0, True)
    """
    path = Path(path)
    if not path.is_file():
        what = "is a folder, not a file" if path.is_dir() else "does not exist"
        raise InputDataError(
            f"manifest {path} {what}; expected a GeoParquet, GeoPackage, GeoJSON, Shapefile or "
            "CSV (lon, lat) file of points"
        )
    target = None if crs is None else _as_crs(crs)
    try:
        gdf = _read(path)
    except GeoBindError:
        raise
    except (OSError, ValueError, RuntimeError, KeyError) as err:
        raise InputDataError(f"cannot read manifest {path}: {err}") from None
    if gdf.crs is None:
        raise CRSError(
            f"manifest {path} has no CRS; expected points with a CRS. Set the CRS the coordinates "
            "are in and save it again, e.g. gdf.set_crs('EPSG:4326').to_parquet(...)"
        )
    _check_points(gdf, path)
    if "path" in gdf.columns:
        folder = path.parent.absolute()
        gdf["path"] = [_resolve(p, folder) for p in gdf["path"]]
    if target is not None:
        if gdf.crs.equals(target, ignore_axis_order=True):
            gdf = gdf.set_crs(target, allow_override=True)
        else:
            warnings.warn(
                f"manifest {path} is in {_crs_name(gdf.crs)}; its points were reprojected to "
                f"{_crs_name(target)} as crs= asked",
                CRSMismatchWarning,
                stacklevel=2,
            )
            gdf = gdf.to_crs(target)
    return gdf


def _read(path: Path) -> gpd.GeoDataFrame:
    import geopandas as gpd
    import pandas as pd

    suffix = path.suffix.lower()
    if suffix in _PARQUET_SUFFIXES:
        import pyarrow.parquet as pq

        if b"geo" in (pq.read_schema(path).metadata or {}):
            return gpd.read_parquet(path)
        return _from_lonlat(pd.read_parquet(path), path)
    if suffix in _TABLE_SUFFIXES:
        return _from_lonlat(pd.read_csv(path, sep=_TABLE_SUFFIXES[suffix]), path)
    return gpd.read_file(path)


def _from_lonlat(df: pd.DataFrame, path: Path) -> gpd.GeoDataFrame:
    import geopandas as gpd
    import numpy as np
    import pandas as pd

    lower = {str(c).lower(): c for c in df.columns}
    pair = next(((lower[x], lower[y]) for x, y in _LONLAT if x in lower and y in lower), None)
    if pair is None:
        raise InputDataError(
            f"manifest {path} has columns {list(df.columns)} but no coordinates; expected "
            "'lon' and 'lat' (or 'longitude' and 'latitude') columns in degrees (EPSG:4326). "
            "For projected coordinates write a GeoParquet or GeoPackage that carries its CRS"
        )
    x, y = (pd.to_numeric(df[c], errors="coerce").to_numpy(np.float64) for c in pair)
    bad = ~(np.isfinite(x) & np.isfinite(y))
    if bad.any():
        raise InputDataError(
            f"manifest {path} has {int(bad.sum())} row(s) without numeric {pair[0]}/{pair[1]} "
            f"(first: row {df.index[bad][0]!r}); every row needs a location"
        )
    outside = (np.abs(x) > 360) | (np.abs(y) > 90)
    if outside.any():
        i = int(np.argmax(outside))
        raise InputDataError(
            f"manifest {path} has {pair[0]}/{pair[1]} values outside the range of degrees "
            f"(row {df.index[i]!r}: {x[i]}, {y[i]}); lon/lat columns must be degrees "
            "(EPSG:4326). For projected x/y write a GeoParquet or GeoPackage with its CRS"
        )
    geometry = gpd.points_from_xy(x, y)
    return gpd.GeoDataFrame(df.drop(columns=list(pair)), geometry=geometry, crs="EPSG:4326")


def _check_points(gdf: gpd.GeoDataFrame, path: Path) -> None:
    geoms = gdf.geometry
    missing = geoms.isna().to_numpy() | geoms.is_empty.to_numpy()
    if missing.any():
        raise InputDataError(
            f"manifest {path} has {int(missing.sum())} row(s) without a geometry (first: row "
            f"{gdf.index[missing][0]!r}); every row needs a point. Drop them first, e.g. "
            "gdf[~gdf.geometry.is_empty & gdf.geometry.notna()]"
        )
    kinds = geoms.geom_type.to_numpy()
    other = kinds != "Point"
    if other.any():
        raise InputDataError(
            f"manifest {path} has {int(other.sum())} non-point geometries "
            f"({', '.join(sorted(set(kinds[other])))}; first: row {gdf.index[other][0]!r}); "
            "a manifest holds one point per sample. Convert them first, e.g. "
            "gdf.set_geometry(gdf.representative_point())"
        )


def _resolve(value: Any, folder: Path) -> Any:
    if not isinstance(value, str) or not value or "://" in value or os.path.isabs(value):
        return value
    return os.path.normpath(os.path.join(folder, value))


def _as_crs(crs: Any):
    from pyproj import CRS
    from pyproj.exceptions import CRSError as ProjCRSError

    try:
        return CRS.from_user_input(crs)
    except ProjCRSError as err:
        raise CRSError(
            f"crs={crs!r} is not a CRS pyproj understands ({err}); pass e.g. 'EPSG:32633'"
        ) from None


def _crs_name(crs: Any) -> str:
    epsg = crs.to_epsg()
    return f"EPSG:{epsg}" if epsg else crs.name
