"""Interactive Leaflet maps (folium) of similarity maps, offline as well as online.

:func:`web_map` builds the page behind :func:`geobind.explore`, the accessors' ``explore`` and
``geobind query … -o map.html``: each similarity map as a colour overlay with its legend, the
scene's RGB as a layer, the best cells as polygons whose popups give rank and score, and a layer
control to switch between queries.

**Placement.** Leaflet stretches an image overlay linearly between two latitude/longitude
corners on its Web-Mercator screen, so an image must be in Web Mercator to land where its
pixels are. Maps in any other CRS (UTM, say, whose grid is rotated against the meridians) are
warped with GDAL (:func:`rasterio.warp.reproject`, nearest neighbour: cells stay cells) onto a
Web-Mercator grid spanning exactly their bounds reprojected to EPSG:4326 (densified edges, as
``DataArray.rio.transform_bounds`` computes them); what lies outside the scene is transparent.

**Offline.** folium links Leaflet, jQuery, Bootstrap and icon fonts from CDNs, which a machine
without network cannot load. The map made here inlines Leaflet's own script and style sheet
(BSD-2-Clause; from the ``xstatic-leaflet`` package, the Leaflet release folium links) with the
style sheet's images as data URLs, and uses only elements that need nothing else (image overlays,
GeoJSON with popups built by Leaflet, a legend of our own). So the page, in a file or inline in
Jupyter, works with no network; only a base map (``tiles``) needs one.
"""

from __future__ import annotations

import base64
import html
import io
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from geobind.errors import CRSError, InputDataError, MissingDependencyError

__all__ = [
    "OVERLAY_MAX_SIDE",
    "MapLayer",
    "overlay_bounds",
    "scene_rgb",
    "source_rgb",
    "web_map",
]

#: longest side, in pixels, of an overlay image once warped to Web Mercator
OVERLAY_MAX_SIDE = 2048
_MIN_SIDE = 512  # coarse grids are drawn at least this large, so rotated cells keep their shape
_MERCATOR_LAT = 85.0511287798  # Web Mercator's latitude limit
_TOP_STYLE = {"color": "#00e5ff", "weight": 2, "fillColor": "#00e5ff", "fillOpacity": 0.15}


@dataclass
class MapLayer:
    """One query's layers: its similarity map and (optionally) its best cells.

    Attributes:
        label: the name shown in the layer control and the legend (e.g. the query).
        values: the map's values, ``(y, x)``, north up (NaN: no data).
        transform: the map's affine transform (its cells' size and origin).
        crs: the map's CRS (anything rasterio reads).
        cells: the best cells, a GeoDataFrame with ``rank`` and ``score`` (any CRS), or ``None``.
        bounds: ``(left, bottom, right, top)`` the overlay spans, in ``crs``; default: the
            extent of ``values`` (a sampled map passes the full map's bounds).
    """

    label: str
    values: np.ndarray
    transform: Any
    crs: Any
    cells: Any = None
    bounds: tuple[float, float, float, float] | None = None

    @classmethod
    def from_dataarray(cls, label: str, da: Any, cells: Any = None) -> MapLayer:
        """A layer from a ``(y, x)`` DataArray with a CRS (numpy- or dask-backed).

        A map larger than :data:`OVERLAY_MAX_SIDE` cells a side is sampled every few cells (only
        those are computed); the overlay still spans the whole map's bounds.
        """
        import rioxarray  # noqa: F401 - registers .rio

        if da.rio.crs is None:
            raise CRSError(
                f"the map {label!r} has no CRS; write one with .rio.write_crs(...) to show it "
                "on a map"
            )
        transform = da.rio.transform(recalc=True)
        ny, nx = da.shape[-2:]
        step = max(1, math.ceil(max(ny, nx) / OVERLAY_MAX_SIDE))
        y, x = da.rio.y_dim, da.rio.x_dim
        sampled = da.isel({y: slice(None, None, step), x: slice(None, None, step)})
        values = np.asarray(sampled.values, np.float32)
        bounds = _extent(transform, (ny, nx))
        return cls(label, values, transform * _scale(step), da.rio.crs, cells, bounds)


def _scale(step: int) -> Any:
    from affine import Affine

    return Affine.scale(step)


def _extent(transform: Any, shape: tuple[int, int]) -> tuple[float, float, float, float]:
    """``(left, bottom, right, top)`` of a north-up grid."""
    ny, nx = shape
    xs = (transform.c, transform.c + nx * transform.a)
    ys = (transform.f, transform.f + ny * transform.e)
    return min(xs), min(ys), max(xs), max(ys)


def overlay_bounds(
    bounds: tuple[float, float, float, float], crs: Any
) -> tuple[float, float, float, float]:
    """``(west, south, east, north)`` in EPSG:4326 of bounds in ``crs``, densified as
    ``DataArray.rio.transform_bounds`` does, latitudes clipped to Web Mercator's ±85.05°.

    Example:
        >>> w, s, e, n = overlay_bounds((500_000, 4_600_000, 510_000, 4_610_000), "EPSG:32633")
        >>> round(w, 4), round(s, 4), round(e, 4), round(n, 4)
        (15.0, 41.5516, 15.1201, 41.6417)
    """
    from rasterio.warp import transform_bounds

    west, south, east, north = transform_bounds(crs, "EPSG:4326", *bounds, densify_pts=21)
    south, north = max(south, -_MERCATOR_LAT), min(north, _MERCATOR_LAT)
    return west, south, east, north


def _to_web_mercator(
    values: np.ndarray,
    transform: Any,
    crs: Any,
    bounds: tuple[float, float, float, float],
    *,
    resampling: str = "nearest",
    max_side: int = OVERLAY_MAX_SIDE,
) -> tuple[np.ndarray, tuple[float, float, float, float]]:
    """Warp ``(bands, y, x)`` float values onto a Web-Mercator grid spanning ``bounds``
    reprojected to EPSG:4326; returns the warped values (NaN outside) and those 4326 bounds."""
    from pyproj import Transformer
    from rasterio.enums import Resampling
    from rasterio.transform import from_bounds
    from rasterio.warp import reproject

    west, south, east, north = overlay_bounds(bounds, crs)
    to_3857 = Transformer.from_crs("EPSG:4326", "EPSG:3857", always_xy=True)
    (left, right), (bottom, top) = to_3857.transform([west, east], [south, north])
    width_m, height_m = right - left, top - bottom
    if not (width_m > 0 and height_m > 0):
        raise InputDataError(f"the map's bounds {bounds} are empty in Web Mercator")
    side = min(max_side, max(_MIN_SIDE, *values.shape[-2:]))
    if width_m >= height_m:
        shape = (max(1, round(side * height_m / width_m)), side)
    else:
        shape = (side, max(1, round(side * width_m / height_m)))
    out = np.full((values.shape[0], *shape), np.nan, np.float32)
    reproject(
        np.ascontiguousarray(values, np.float32),
        out,
        src_transform=transform,
        src_crs=crs,
        src_nodata=np.nan,
        dst_transform=from_bounds(left, bottom, right, top, shape[1], shape[0]),
        dst_crs="EPSG:3857",
        dst_nodata=np.nan,
        resampling=Resampling[resampling],
    )
    return out, (west, south, east, north)


def _png_url(rgba: np.ndarray) -> str:
    """A ``data:`` URL of an ``(H, W, 4)`` uint8 image as PNG."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(rgba, "RGBA").save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _colour(values: np.ndarray, cmap: str, vmin: float, vmax: float) -> np.ndarray:
    """``(H, W)`` values → ``(H, W, 4)`` uint8 through a matplotlib colormap; NaN transparent."""
    import matplotlib

    norm = (values - vmin) / (vmax - vmin) if vmax > vmin else np.full_like(values, 0.5)
    rgba = matplotlib.colormaps[cmap](np.clip(np.nan_to_num(norm, nan=0.0), 0, 1), bytes=True)
    rgba[..., 3] = np.where(np.isfinite(values), 255, 0)
    return rgba


def scene_rgb(
    raster: Any, bands: Sequence[int] = (1, 2, 3), *, max_side: int = 1024
) -> tuple[np.ndarray, Any, Any, tuple[float, float, float, float]]:
    """A raster's RGB for display: ``(3, y, x)`` float32 stretched to [0, 1] (2–98 %), NaN on
    nodata, sampled to at most ``max_side`` pixels a side; with its transform, CRS and bounds.

    Args:
        raster: ``DataArray(band, y, x)`` or ``(y, x)`` with a CRS (rioxarray).
        bands: 1-based bands read as red, green, blue (a single-band raster gives grey).
        max_side: longest side read.

    Example:
        >>> import numpy as np, xarray as xr, rioxarray  # noqa: F401
        >>> raster = xr.DataArray(np.arange(3 * 64 * 64, dtype=np.uint16).reshape(3, 64, 64),
        ...     dims=("band", "y", "x"),
        ...     coords={"y": 63.5 - np.arange(64), "x": np.arange(64) + 0.5}).rio.write_crs(32633)
        >>> rgb, transform, crs, bounds = scene_rgb(raster, max_side=32)
        >>> rgb.shape, transform.a, bounds
        ((3, 32, 32), 2.0, (0.0, 0.0, 64.0, 64.0))
    """
    import rioxarray  # noqa: F401 - registers .rio

    y, x = raster.rio.y_dim, raster.rio.x_dim
    extra = [d for d in raster.dims if d not in (y, x)]
    arr = raster.transpose(*extra, y, x) if extra else raster.expand_dims("band")
    count = arr.shape[0]
    chosen = [min(int(b), count) - 1 for b in bands][:3]
    chosen += chosen[-1:] * (3 - len(chosen))
    ny, nx = arr.shape[-2:]
    step = max(1, math.ceil(max(ny, nx) / max_side))
    img = np.asarray(arr[chosen, ::step, ::step].values, np.float32)
    nodata = raster.rio.nodata if raster.rio.nodata is not None else raster.rio.encoded_nodata
    if nodata is not None and not np.isnan(nodata):
        img[img == np.float32(nodata)] = np.nan
    finite = img[np.isfinite(img)]
    lo, hi = (np.percentile(finite, 2), np.percentile(finite, 98)) if finite.size else (0, 1)
    img = np.clip((img - lo) / max(float(hi - lo), 1e-6), 0, 1).astype(np.float32)
    transform = raster.rio.transform()
    return img, transform * _scale(step), raster.rio.crs, _extent(transform, (ny, nx))


def source_rgb(
    source: Any, bands: Sequence[int] = (1, 2, 3), *, max_side: int = 1024
) -> tuple[np.ndarray, Any, Any, tuple[float, float, float, float]] | None:
    """:func:`scene_rgb` of the file a grid was embedded from (a store group's ``source``
    attribute), or ``None`` when there is none or it cannot be read (moved, remote, no CRS).

    Example:
        >>> source_rgb(None) is None, source_rgb("/no/such/scene.tif") is None
        (True, True)
    """
    if not source or not Path(str(source)).is_file():
        return None
    import rasterio
    import rioxarray

    try:
        raster = rioxarray.open_rasterio(str(source))
        if raster.rio.crs is None:
            return None
        return scene_rgb(raster, bands, max_side=max_side)
    except (OSError, rasterio.errors.RasterioError):
        return None


# -- the page -------------------------------------------------------------------------------------
@cache
def _leaflet_assets() -> tuple[str, str]:
    """Leaflet's script and style sheet as ``data:`` URLs (the style sheet's images inlined)."""
    try:
        from xstatic.pkg import leaflet
    except ImportError:
        raise MissingDependencyError(
            "interactive maps inline Leaflet from the xstatic-leaflet package; "
            "pip install xstatic-leaflet"
        ) from None
    root = Path(leaflet.BASE_DIR)
    script = (root / "leaflet.js").read_bytes()
    css = (root / "leaflet.css").read_text()

    def inline(match: re.Match) -> str:
        image = root / match.group(1)
        data = base64.b64encode(image.read_bytes()).decode("ascii")
        return f"url(data:image/png;base64,{data})"

    css = re.sub(r"url\((images/[\w.-]+\.png)\)", inline, css)
    js_url = "data:text/javascript;base64," + base64.b64encode(script).decode("ascii")
    css_url = "data:text/css;base64," + base64.b64encode(css.encode()).decode("ascii")
    return js_url, css_url


def _folium() -> Any:
    try:
        import folium
    except ImportError:
        raise MissingDependencyError(
            "interactive maps need folium; pip install folium xstatic-leaflet"
        ) from None
    return folium


_LEGEND = """
{% macro header(this, kwargs) %}{% if this.with_style %}
<style>
.geobind-legend {background: rgba(255, 255, 255, 0.92); padding: 6px 9px; border-radius: 4px;
  font: 12px/1.35 system-ui, sans-serif; box-shadow: 0 1px 5px rgba(0, 0, 0, 0.35);
  min-width: 190px; max-width: 280px; color: #222}
.geobind-legend .gb-title {font-weight: 600; overflow-wrap: anywhere}
.geobind-legend .gb-bar {height: 11px; margin: 4px 0 2px; border: 1px solid #888}
.geobind-legend .gb-ticks {display: flex; justify-content: space-between}
</style>
{% endif %}{% endmacro %}
{% macro script(this, kwargs) %}
var {{ this.get_name() }} = L.control({position: "bottomright"});
{{ this.get_name() }}.onAdd = function () {
    var div = L.DomUtil.create("div", "geobind-legend");
    div.innerHTML = {{ this.html|tojson }};
    L.DomEvent.disableClickPropagation(div);
    return div;
};
(function (map, layer, legend) {
    layer.on("add", function () { legend.addTo(map); });
    layer.on("remove", function () { legend.remove(); });
    if (map.hasLayer(layer)) { legend.addTo(map); }
})({{ this.map.get_name() }}, {{ this.layer.get_name() }}, {{ this.get_name() }});
{% endmacro %}
"""


def _legend(
    m: Any, layer: Any, title: str, cmap: str, vmin: float, vmax: float, *, with_style: bool
) -> Any:
    """A colour-bar legend for ``layer``, shown while the layer is (``with_style``: the first
    legend of the page carries the style sheet of all)."""
    import matplotlib
    from branca.element import MacroElement
    from jinja2 import Template

    colours = matplotlib.colormaps[cmap](np.linspace(0, 1, 11), bytes=True)
    stops = ", ".join(f"rgb({r},{g},{b}) {i * 10}%" for i, (r, g, b, _) in enumerate(colours))
    mid = (vmin + vmax) / 2
    element = MacroElement()
    element._template = Template(_LEGEND)
    element.map, element.layer, element.with_style = m, layer, with_style
    element.html = (
        f'<div class="gb-title">{html.escape(title)}</div>'
        f'<div class="gb-bar" style="background: linear-gradient(to right, {stops})"></div>'
        f'<div class="gb-ticks"><span>{vmin:.3f}</span><span>{mid:.3f}</span>'
        f"<span>{vmax:.3f}</span></div><div>cosine similarity</div>"
    )
    return element


def web_map(
    layers: Sequence[MapLayer],
    *,
    rgb: tuple[np.ndarray, Any, Any, tuple[float, float, float, float]] | None = None,
    tiles: str | None = "OpenStreetMap",
    cmap: str = "magma",
    opacity: float = 0.75,
    vmin: float | None = None,
    vmax: float | None = None,
    width: str | int = "100%",
    height: str | int = "100%",
) -> Any:
    """A folium map of similarity maps: overlays with legends, best cells, scene, layer control.

    Each layer's map is warped to Web Mercator (see the module docstring) and drawn with
    ``cmap`` between ``vmin`` and ``vmax`` (default: each map's own range), NaN transparent; its
    best cells are outlined, with a popup and tooltip of their rank and score. Each query is one
    entry of the layer control (its map and its cells); the first is shown. Leaflet is inlined:
    the page needs no network unless ``tiles`` names a base map.

    Args:
        layers: one :class:`MapLayer` per query.
        rgb: the scene, as :func:`scene_rgb` returns it: a layer under the maps (the base layer
            when ``tiles`` is ``None``).
        tiles: a base map folium knows (``"OpenStreetMap"``, ``"CartoDB positron"``, an xyz URL
            …), or ``None`` for none (offline).
        cmap: a matplotlib colormap name.
        opacity: the overlays' opacity.
        vmin: the value drawn with the colormap's first colour (default: each map's minimum).
        vmax: the value drawn with its last colour (default: each map's maximum).
        width: the map's width (CSS, or pixels).
        height: the map's height (CSS, or pixels).

    Returns:
        The ``folium.Map`` (``.save(path)`` writes the page; Jupyter shows it inline).

    Example:
        >>> import numpy as np
        >>> from affine import Affine
        >>> layer = MapLayer("a lake", np.random.rand(8, 8).astype("float32"),
        ...                  Affine(100, 0, 500_000, 0, -100, 4_600_000), "EPSG:32633")
        >>> m = web_map([layer], tiles=None)
        >>> page = m.get_root().render()
        >>> "L.imageOverlay" in page, "cdn.jsdelivr" in page
        (True, False)
    """
    folium = _folium()
    if not layers:
        raise InputDataError("web_map needs at least one similarity map")
    m = folium.Map(
        location=None,
        tiles=tiles,
        width=width,
        height=height,
        control_scale=True,
        zoom_snap=0.25,  # fit the scene to the view closely, not to the nearest whole zoom
        zoom_delta=0.5,
    )
    js_url, css_url = _leaflet_assets()
    # folium links Leaflet, jQuery, Bootstrap and fonts from CDNs; this map uses Leaflet alone
    m.default_js = [("leaflet", js_url)]
    m.default_css = [("leaflet_css", css_url)]
    everything: list[tuple[float, float, float, float]] = []
    if rgb is not None:
        values, transform, crs, bounds = rgb
        warped, box = _to_web_mercator(values, transform, crs, bounds, resampling="bilinear")
        rgba = np.zeros((*warped.shape[1:], 4), np.uint8)
        rgba[..., :3] = np.moveaxis(np.nan_to_num(warped, nan=0.0) * 255, 0, -1).astype(np.uint8)
        rgba[..., 3] = np.where(np.isfinite(warped).all(axis=0), 255, 0)
        folium.raster_layers.ImageOverlay(
            _png_url(rgba),
            bounds=[[box[1], box[0]], [box[3], box[2]]],
            name="scene (RGB)",
            overlay=tiles is not None,  # without a base map, the scene is the base
            pixelated=False,
        ).add_to(m)
        everything.append(box)
    for i, layer in enumerate(layers):
        values = np.asarray(layer.values, np.float32)
        bounds = layer.bounds or _extent(layer.transform, values.shape)
        warped, box = _to_web_mercator(values[None], layer.transform, layer.crs, bounds)
        finite = values[np.isfinite(values)]
        lo = vmin if vmin is not None else (float(finite.min()) if finite.size else 0.0)
        hi = vmax if vmax is not None else (float(finite.max()) if finite.size else 1.0)
        # one entry in the layer control per query: its map and its best cells together
        group = folium.FeatureGroup(name=layer.label, show=i == 0).add_to(m)
        folium.raster_layers.ImageOverlay(
            _png_url(_colour(warped[0], cmap, lo, hi)),
            bounds=[[box[1], box[0]], [box[3], box[2]]],
            name=layer.label,
            opacity=opacity,
            control=False,
        ).add_to(group)
        if layer.cells is not None and len(layer.cells):
            _cells(folium, layer.cells, layer.label).add_to(group)
        _legend(m, group, layer.label, cmap, lo, hi, with_style=i == 0).add_to(m)
        everything.append(box)
    folium.LayerControl(collapsed=False).add_to(m)
    west, south = min(b[0] for b in everything), min(b[1] for b in everything)
    east, north = max(b[2] for b in everything), max(b[3] for b in everything)
    m.fit_bounds([[south, west], [north, east]])
    return m


def _cells(folium: Any, cells: Any, label: str) -> Any:
    """The best cells as GeoJSON polygons with popups and tooltips of rank and score."""
    frame = cells[["rank", "score", "geometry"]].copy()
    frame["score"] = frame["score"].astype(float).round(4)
    frame["rank"] = frame["rank"].astype(int)
    if frame.crs is not None and frame.crs.to_epsg() != 4326:
        frame = frame.to_crs(4326)
    fields, aliases = ["rank", "score"], ["rank", "score"]
    return folium.GeoJson(
        frame.to_json(),
        name=f"top {len(frame)} — {label}",
        style_function=lambda _: dict(_TOP_STYLE),
        highlight_function=lambda _: {"weight": 4, "fillOpacity": 0.35},
        popup=folium.GeoJsonPopup(fields=fields, aliases=aliases),
        tooltip=folium.GeoJsonTooltip(fields=fields, aliases=aliases),
        control=False,
    )
