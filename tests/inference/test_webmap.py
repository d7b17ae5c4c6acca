"""Interactive maps (geobind.explore, the accessors, ``geobind query -o map.html``), no browser:
placement in EPSG:4326, the warp of projected maps, layers, legends, popups, offline assets."""

from __future__ import annotations

import base64
import io
import json
import re
import subprocess
import sys
from pathlib import Path

import matplotlib
import numpy as np
import pytest
import rasterio
import rioxarray  # noqa: F401 - registers .rio
import xarray as xr
from affine import Affine
from PIL import Image
from pyproj import Transformer
from rasterio.transform import from_origin

import geobind
from geobind.cli import main
from geobind.errors import CRSError, InputDataError
from geobind.inference.store import embed_to_zarr, open_store
from geobind.inference.webmap import MapLayer, web_map

folium = pytest.importorskip("folium")

# (crs, left, top, cell size): a Web-Mercator scene, and a UTM one far from its zone's central
# meridian at 60° N, where the UTM grid is turned ~3° against the meridians
SCENES = {
    "web-mercator": ("EPSG:3857", 1_300_000.0, 6_000_000.0, 500.0),
    "utm": ("EPSG:32633", 300_000.0, 6_660_000.0, 400.0),
}


def make_grid(crs: str, left: float, top: float, res: float, *, ny=6, nx=8, dim=16):
    rng = np.random.default_rng(0)
    v = rng.normal(size=(dim, ny, nx)).astype(np.float32)
    v /= np.linalg.norm(v, axis=0, keepdims=True)
    coords = {"y": top - res * (np.arange(ny) + 0.5), "x": left + res * (np.arange(nx) + 0.5)}
    return xr.DataArray(v, dims=("embedding", "y", "x"), coords=coords).rio.write_crs(crs)


def make_raster(crs="EPSG:32633", left=300_000.0, top=6_660_000.0, res=1.0, size=96):
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[0:size, 0:size]
    base = np.stack([120 + 90 * np.sin(xx / (7 + 2 * b)) * np.cos(yy / (11 + b)) for b in range(3)])
    data = np.clip(base + rng.normal(0, 8, base.shape), 1, 255).astype(np.uint8)
    coords = {"y": top - res * (np.arange(size) + 0.5), "x": left + res * (np.arange(size) + 0.5)}
    return xr.DataArray(
        data, dims=("band", "y", "x"), coords={"band": [1, 2, 3], **coords}
    ).rio.write_crs(crs)


def descendants(element):
    for child in element._children.values():
        yield child
        yield from descendants(child)


def overlays(m):
    return [c for c in descendants(m) if isinstance(c, folium.raster_layers.ImageOverlay)]


def decode(url: str) -> np.ndarray:
    assert url.startswith("data:image/png;base64,")
    with Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))) as im:
        return np.asarray(im.convert("RGBA"))


def page_of(m) -> str:
    return m.get_root().render()


@pytest.mark.parametrize("scene", SCENES)
def test_overlay_bounds_are_the_grid_bounds_in_4326(scene):
    grid = make_grid(*SCENES[scene])
    query = grid[:, 2, 3].values
    m = geobind.explore(grid, vector=query, k=3, tiles=None)
    sim = geobind.similarity(grid, vector=query)
    west, south, east, north = sim.rio.transform_bounds("EPSG:4326")
    [overlay] = overlays(m)
    (s, w), (n, e) = overlay.bounds
    assert (w, s, e, n) == pytest.approx((west, south, east, north), abs=1e-9)
    # and the page fits the view to them
    assert m.get_root().render().count("fitBounds") == 1


@pytest.mark.parametrize("scene", SCENES)
def test_map_is_warped_to_web_mercator_not_stretched(scene):
    crs, left, top, res = SCENES[scene]
    ny, nx = 6, 8
    values = np.arange(ny * nx, dtype=np.float32).reshape(ny, nx)  # one colour per cell
    transform = Affine(res, 0, left, 0, -res, top)
    m = web_map(
        [MapLayer("cells", values, transform, crs)],
        tiles=None,
        cmap="viridis",
        vmin=0,
        vmax=ny * nx - 1,
    )
    [overlay] = overlays(m)
    image = decode(overlay.url)
    h, w = image.shape[:2]
    (s, wst), (n, e) = overlay.bounds
    to_3857 = Transformer.from_crs("EPSG:4326", "EPSG:3857", always_xy=True)
    (x0, x1), (y0, y1) = to_3857.transform([wst, e], [s, n])
    to_lonlat = Transformer.from_crs(crs, "EPSG:4326", always_xy=True)
    colours = matplotlib.colormaps["viridis"](np.linspace(0, 1, ny * nx), bytes=True)
    for r in range(ny):
        for c in range(nx):
            lon, lat = to_lonlat.transform(*(transform * (c + 0.5, r + 0.5)))
            x, y = to_3857.transform(lon, lat)
            px, py = int((x - x0) / (x1 - x0) * w), int((y1 - y) / (y1 - y0) * h)
            assert tuple(image[py, px]) == tuple(colours[r * nx + c]), (r, c)
    corners = [image[0, 0, 3], image[0, -1, 3], image[-1, 0, 3], image[-1, -1, 3]]
    if scene == "utm":  # a turned grid leaves the corners of its lat/lon box empty
        assert corners == [0, 0, 0, 0]
    else:
        assert all(a == 255 for a in corners)


def test_nan_cells_are_transparent():
    values = np.ones((4, 4), np.float32)
    values[0, 0] = np.nan
    m = web_map([MapLayer("x", values, Affine(100, 0, 0, 0, -100, 5e6), "EPSG:3857")], tiles=None)
    image = decode(overlays(m)[0].url)
    assert image[0, 0, 3] == 0 and image[-1, -1, 3] == 255


def test_explore_on_a_raster_layers_legends_popups_offline():
    raster = make_raster()
    m = raster.geobind.explore(["busy highway", "lake shore"], model="tiny", k=5, tiles=None)
    assert isinstance(m, folium.Map)
    groups = [c for c in m._children.values() if isinstance(c, folium.FeatureGroup)]
    assert [g.layer_name for g in groups] == ["busy highway", "lake shore"]
    assert [g.show for g in groups] == [
        True,
        False,
    ]  # the first query shown, the other a click away
    rgb = [o for o in overlays(m) if o.layer_name == "scene (RGB)"]
    assert len(rgb) == 1 and rgb[0].overlay is False  # without tiles the scene is the base layer
    page = page_of(m)
    assert page.count("L.control.layers") == 1
    assert page.count('L.DomUtil.create("div", "geobind-legend")') == 2  # a legend per query
    assert page.count(".geobind-legend {") == 1  # and one style sheet for them
    # the best cells: GeoJSON features with rank and score, bound to popups
    features = re.findall(r'"rank": (\d+), "score": (-?[\d.]+)', page)
    assert [int(r) for r, _ in features] == [1, 2, 3, 4, 5] * 2
    assert "bindPopup" in page and "bindTooltip" in page
    # nothing from the network: Leaflet is inlined, no CDN script, style sheet or font
    assert not re.search(r'(src|href)="https?:', page)
    assert "jquery" not in page.lower() and "bootstrap" not in page.lower()


def test_accessor_function_and_dataset_give_the_same_map():
    raster = make_raster()
    with geobind.use_model("tiny"):
        a = geobind.explore(raster, "busy highway", tiles=None)
        b = raster.geobind.explore("busy highway", tiles=None, progress=False)
        ds = raster.to_dataset("band").rename({1: "r", 2: "g", 3: "b"})
        c = ds.geobind.explore("busy highway", tiles=None)
    urls = [[o.url for o in overlays(m) if o.layer_name != "scene (RGB)"] for m in (a, b, c)]
    assert urls[0] == urls[1] == urls[2]


def test_grid_explore_with_a_base_map():
    grid = make_grid(*SCENES["utm"])
    m = grid.geobind.explore(vector=grid[:, 1, 1].values)  # default: OpenStreetMap
    page = page_of(m)
    assert "tile.openstreetmap.org" in page
    assert len(overlays(m)) == 1  # a grid has no pixels: no scene layer


def test_explore_refuses_what_it_cannot_map():
    import geopandas as gpd
    import shapely

    grid = make_grid(*SCENES["utm"])
    with pytest.raises(InputDataError, match=r"gdf\.explore"):
        geobind.explore(gpd.GeoSeries([shapely.Point(0, 0)], crs=32633), "a lake")
    with pytest.raises(InputDataError, match="k must be"):
        geobind.explore(grid, vector=grid[:, 0, 0].values, k=-1)
    no_crs = grid.copy()
    no_crs = no_crs.drop_vars("spatial_ref")
    with pytest.raises(CRSError):
        geobind.explore(no_crs, vector=grid[:, 0, 0].values, tiles=None)


def test_import_geobind_does_not_load_folium():
    code = "import sys, geobind; print('folium' in sys.modules, 'branca' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def write_scene(path, *, left=300_000.0, top=6_660_000.0, res=1.0, size=128):
    data = make_raster(left=left, top=top, res=res, size=size).values
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=size,
        height=size,
        count=3,
        dtype="uint8",
        crs="EPSG:32633",
        transform=from_origin(left, top, res, res),
    ) as dst:
        dst.write(data)
    return path


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    folder = tmp_path_factory.mktemp("webmap")
    scene = write_scene(folder / "scene.tif")
    embed_to_zarr(scene, folder / "s.zarr", model="tiny", stride=16, progress=False)
    return folder / "s.zarr"


def overlay_calls(page: str) -> list[tuple[str, list]]:
    """``(image URL, bounds)`` of each ``L.imageOverlay(...)`` in a page."""
    found = re.findall(r'L\.imageOverlay\(\s*"([^"]+)",\s*(\[\[[^\]]+\],\s*\[[^\]]+\]\])', page)
    return [(url, json.loads(bounds)) for url, bounds in found]


def test_query_command_writes_the_explore_page(store, tmp_path, capsys):
    out = tmp_path / "map.html"
    assert main(["query", str(store), "busy highway", "-o", str(out), "--tiles", "none"]) == 0
    assert str(out) in capsys.readouterr().out
    page = out.read_text()
    calls = overlay_calls(page)
    assert len(calls) == 2  # the scene (from the store's source file) and the map
    grid = open_store(store)
    west, south, east, north = grid.rio.transform_bounds("EPSG:4326")
    (s, w), (n, e) = calls[-1][1]
    assert (w, s, e, n) == pytest.approx((west, south, east, north), abs=1e-9)
    assert "scene (RGB)" in page and "busy highway" in page
    assert len(re.findall(r'"rank": \d+', page)) == 10  # the default top 10
    assert not re.search(r'(src|href)="https?:', page)
    # the function on the store's grid makes the same overlay
    m = geobind.explore(grid, "busy highway", model="tiny", tiles=None)
    assert [o.url for o in overlays(m) if o.layer_name == "busy highway"] == [calls[-1][0]]


def test_explore_a_store_opened_without_rioxarray(store):
    code = (
        "import sys, xarray as xr, geobind; "
        f"grid = xr.open_zarr({str(store)!r}, group='scene')['embedding']; "
        "m = geobind.explore(grid, 'a lake', model='tiny', tiles=None); "
        "print(type(m).__name__, 'scene (RGB)' in m.get_root().render())"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["Map", "True"]  # the scene read from the store's source file


def test_query_command_html_with_a_base_map(store, tmp_path):
    out = tmp_path / "map.htm"
    assert main(["query", str(store), "a lake", "-o", str(out), "--top-k", "3"]) == 0
    page = out.read_text()
    assert "tile.openstreetmap.org" in page
    assert len(re.findall(r'"rank": \d+', page)) == 3
    assert (tmp_path / "map.geojson").exists()  # --top-k with a map also writes the cells


def test_jupyter_shows_the_map_inline_with_leaflet_inlined():
    grid = make_grid(*SCENES["web-mercator"])
    frame = geobind.explore(grid, vector=grid[:, 0, 0].values, tiles=None)._repr_html_()
    assert "<iframe srcdoc=" in frame and "data:text/javascript;base64," in frame
    assert "cdn.jsdelivr" not in frame and "code.jquery" not in frame


def test_quickstart_notebook_uses_the_headline_calls():
    import nbformat

    root = Path(geobind.__file__).parents[1]
    notebook = nbformat.read(root / "examples" / "quickstart.ipynb", as_version=4)
    code = "\n".join(c.source for c in notebook.cells if c.cell_type == "code")
    assert 'raster.geobind.similarity("busy highway")' in code  # no grid=: the grid is kept
    assert "raster.geobind.explore(" in code
