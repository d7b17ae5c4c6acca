"""Files made from similarity maps: Cloud-Optimised GeoTIFFs, rendered PNGs, interactive map
pages and vector cells.

Used by ``geobind query`` (:func:`~geobind.inference.store.query_store`, which streams a store's
map chunk by chunk into them), and public so that plots of in-memory maps write the same files:

- :class:`CogWriter` / :func:`write_cog`: float32, NaN nodata, the map's CRS and transform,
  deflate, tiled, with overviews. Windows are written to a temporary GeoTIFF next to the output,
  which becomes the COG (and replaces the output) only when every window was written.
- :func:`write_png`: the map rendered with a colour bar, at most :data:`PNG_MAX_SIDE` pixels a side.
- :func:`write_html`: an interactive Leaflet page (:func:`geobind.explore`'s map, from
  :func:`~geobind.inference.webmap.web_map`), self-contained: it works offline.
- :func:`write_vector`: a GeoDataFrame as GeoJSON, GeoParquet or GeoPackage, by suffix.

:func:`output_kind` tells which from a file name.
"""

from __future__ import annotations

import contextlib
import math
import os
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from geobind.errors import InputDataError

__all__ = [
    "HTML_SUFFIXES",
    "PNG_MAX_SIDE",
    "RASTER_SUFFIXES",
    "VECTOR_SUFFIXES",
    "CogWriter",
    "output_kind",
    "png_step",
    "write_cog",
    "write_html",
    "write_png",
    "write_vector",
]

PNG_MAX_SIDE = 2048  # longest side of a rendered map, in pixels
RASTER_SUFFIXES = (".tif", ".tiff")
HTML_SUFFIXES = (".html", ".htm")
VECTOR_SUFFIXES = (".geojson", ".json", ".parquet", ".geoparquet", ".gpkg")


def output_kind(path: str | os.PathLike[str]) -> str:
    """``"cog"``, ``"png"``, ``"html"`` or ``"vector"``: what a file name's suffix asks for.

    Example:
        >>> output_kind("map.tif"), output_kind("map.PNG"), output_kind("hits.parquet")
        ('cog', 'png', 'vector')
        >>> output_kind("map.html")
        'html'
        >>> output_kind("map.jpg")
        Traceback (most recent call last):
        ...
        geobind.errors.InputDataError: cannot tell what to write from 'map.jpg': ...
    """
    suffix = Path(path).suffix.lower()
    if suffix in RASTER_SUFFIXES:
        return "cog"
    if suffix == ".png":
        return "png"
    if suffix in HTML_SUFFIXES:
        return "html"
    if suffix in VECTOR_SUFFIXES:
        return "vector"
    raise InputDataError(
        f"cannot tell what to write from {Path(path).name!r}: use .tif (a COG), .png (a rendered "
        "map), .html (an interactive map) or .geojson/.parquet/.gpkg (the best cells)"
    )


class CogWriter:
    """Writes windows of a float32 ``(y, x)`` map; :meth:`close` turns them into a COG at ``path``.

    Use it as a context manager: the COG is made when the block ends without an error, and the
    temporary file is removed either way (an existing ``path`` is only replaced by a whole COG).

    Example:
        >>> import numpy as np
        >>> from affine import Affine
        >>> path = getfixture("tmp_path") / "map.tif"
        >>> with CogWriter(path, (4, 6), Affine(10, 0, 500_000, 0, -10, 4_600_000), 32633) as cog:
        ...     cog.write(slice(0, 2), slice(0, 6), np.zeros((2, 6)))
        ...     cog.write(slice(2, 4), slice(0, 6), np.ones((2, 6)))
        >>> import rasterio
        >>> with rasterio.open(path) as src:
        ...     src.tags(ns="IMAGE_STRUCTURE")["LAYOUT"], src.read(1)[:, 0].tolist()
        ('COG', [0.0, 0.0, 1.0, 1.0])
    """

    def __init__(
        self, path: str | os.PathLike[str], shape: tuple[int, int], transform: Any, crs: Any
    ):
        import rasterio

        self.path, self.shape = Path(path), (int(shape[0]), int(shape[1]))
        self._tmp = self.path.with_name(f".{self.path.name}.{uuid.uuid4().hex[:8]}.tif")
        self._dst = rasterio.open(
            self._tmp,
            "w",
            driver="GTiff",
            width=self.shape[1],
            height=self.shape[0],
            count=1,
            dtype="float32",
            crs=crs,
            transform=transform,
            nodata=float("nan"),
            tiled=True,
            blockxsize=256,
            blockysize=256,
            BIGTIFF="IF_SAFER",
        )

    def write(self, rows: slice, cols: slice, values: np.ndarray) -> None:
        """Write ``values`` (``rows × cols``) at that window of the map."""
        from rasterio.windows import Window

        self._dst.write(
            np.asarray(values).astype(np.float32, copy=False),
            1,
            window=Window.from_slices(rows, cols),
        )

    def close(self, ok: bool = True) -> None:
        """Finish: with ``ok``, copy the windows into the COG at ``path``; always clean up."""
        import rasterio.shutil

        if self._dst.closed:
            return
        self._dst.close()
        try:
            if ok:
                shape = self.shape
                block = 512 if max(shape) > 2048 else 256
                levels = max(1, math.ceil(math.log2(max(shape) / block)))
                final = self.path.with_name(f".{self.path.name}.{uuid.uuid4().hex[:8]}.cog.tif")
                rasterio.shutil.copy(
                    self._tmp,
                    final,
                    driver="COG",
                    COMPRESS="DEFLATE",
                    PREDICTOR="YES",
                    BLOCKSIZE=block,
                    OVERVIEW_COUNT=levels,
                    RESAMPLING="AVERAGE",
                    BIGTIFF="IF_SAFER",
                )
                os.replace(final, self.path)
        finally:
            with contextlib.suppress(OSError):
                self._tmp.unlink()

    def __enter__(self) -> CogWriter:
        return self

    def __exit__(self, exc_type: Any, *exc: object) -> None:
        self.close(ok=exc_type is None)


def write_cog(path: str | os.PathLike[str], values: Any, transform: Any, crs: Any) -> Path:
    """Write a whole ``(y, x)`` map (numpy, or a DataArray's values) as a float32 COG.

    Example:
        >>> import numpy as np
        >>> from affine import Affine
        >>> out = write_cog(getfixture("tmp_path") / "m.tif", np.eye(3), Affine(1, 0, 0, 0, -1, 3),
        ...                 "EPSG:32633")
        >>> out.name
        'm.tif'
    """
    values = np.asarray(values)
    with CogWriter(path, values.shape, transform, crs) as cog:
        cog.write(slice(0, values.shape[0]), slice(0, values.shape[1]), values)
    return Path(path)


def png_step(shape: tuple[int, int], max_side: int = PNG_MAX_SIDE) -> int:
    """Every how many cells a map is sampled so its PNG is at most ``max_side`` pixels a side.

    Example:
        >>> png_step((1000, 800)), png_step((5000, 300))
        (1, 3)
    """
    return max(1, math.ceil(max(shape) / max_side))


def write_png(
    path: str | os.PathLike[str],
    image: Any,
    bounds: tuple[float, float, float, float],
    crs: Any,
    title: str,
    *,
    label: str = "cosine similarity",
) -> Path:
    """Render a ``(y, x)`` map with a colour bar (magma, NaN transparent) to a PNG.

    A map larger than :data:`PNG_MAX_SIDE` cells a side is sampled every :func:`png_step` cells.

    Args:
        path: the PNG to write.
        image: the map's values, north up.
        bounds: ``(left, bottom, right, top)`` in the map's CRS (axis extents).
        crs: the map's CRS (a rasterio ``CRS``, or ``None``), for the axis units.
        title: the figure's title (e.g. the query).
        label: the colour bar's label.

    Example:
        >>> import numpy as np
        >>> out = write_png(getfixture("tmp_path") / "m.png", np.random.rand(20, 30),
        ...                 (0, 0, 30, 20), None, "'a lake'")
        >>> out.read_bytes()[:4]
        b'\\x89PNG'
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    image = np.asarray(image)
    step = png_step(image.shape)
    image = image[::step, ::step] if step > 1 else image
    left, bottom, right, top = bounds
    aspect = image.shape[0] / max(image.shape[1], 1)
    fig = Figure(figsize=(8, max(3.0, min(14.0, 7 * aspect + 1))), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    finite = image[np.isfinite(image)]
    vmin, vmax = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    shown = ax.imshow(
        np.ma.masked_invalid(image),
        extent=(left, right, bottom, top),
        cmap="magma",
        vmin=vmin,
        vmax=vmax,
        interpolation="nearest",
    )
    fig.colorbar(shown, ax=ax, label=label, shrink=0.85)
    ax.set_title(title)
    units = (crs.linear_units if crs is not None and crs.is_projected else "") or ""
    ax.set_xlabel(f"x ({units})" if units else "x")
    ax.set_ylabel(f"y ({units})" if units else "y")
    ax.ticklabel_format(useOffset=False, style="plain")
    fig.tight_layout()
    fig.savefig(path)
    return Path(path)


def write_html(path: str | os.PathLike[str], page: Any, **kw: Any) -> Path:
    """Write an interactive map page: a ``folium.Map`` (from :func:`geobind.explore`), or
    similarity layers made into one by :func:`~geobind.inference.webmap.web_map` (``kw`` go to
    it). The page inlines Leaflet, so it opens offline. An existing file is replaced whole.

    Example:
        >>> import numpy as np
        >>> from affine import Affine
        >>> from geobind.inference.webmap import MapLayer
        >>> layer = MapLayer("'a lake'", np.random.rand(6, 9).astype("float32"),
        ...                  Affine(30, 0, 500_000, 0, -30, 4_600_000), "EPSG:32633")
        >>> out = write_html(getfixture("tmp_path") / "map.html", [layer], tiles=None)
        >>> page = out.read_text()
        >>> "L.imageOverlay" in page, 'src="http' in page
        (True, False)
    """
    if not hasattr(page, "get_root"):
        from geobind.inference.webmap import web_map

        page = web_map(page, **kw)
    elif kw:
        raise InputDataError(f"write_html got a map and keywords {sorted(kw)}; pass one or other")
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        tmp.write_text(page.get_root().render(), encoding="utf-8")
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()
    return path


def write_vector(frame: Any, path: str | os.PathLike[str]) -> Path:
    """Write a GeoDataFrame by suffix: ``.parquet``/``.geoparquet`` (GeoParquet), ``.gpkg``
    (GeoPackage), anything else GeoJSON. An existing file is replaced.

    Example:
        >>> import geopandas as gpd, shapely
        >>> cells = gpd.GeoDataFrame({"score": [0.9]}, geometry=[shapely.box(0, 0, 1, 1)],
        ...                          crs=32633)
        >>> out = write_vector(cells, getfixture("tmp_path") / "hits.geojson")
        >>> gpd.read_file(out)["score"].tolist()
        [0.9]
    """
    path = Path(path)
    if path.suffix.lower() in (".parquet", ".geoparquet"):
        frame.to_parquet(path)
    else:
        driver = "GPKG" if path.suffix.lower() == ".gpkg" else "GeoJSON"
        if path.exists():
            path.unlink()
        frame.to_file(path, driver=driver)
    return path
