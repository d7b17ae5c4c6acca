"""The interactive pages in a real browser: headless Chromium, no network.

The page from ``explore`` and from ``geobind query -o map.html`` must load with no JavaScript
error and no failed request (everything is inlined), show the similarity overlay (its pixels
differ from a blank map's), open a popup with rank and score on a best cell, and switch queries
in the layer control; ``geobind demo``'s report.html must show its maps and the embedded page.
Screenshots are written next to each test's files (``tmp_path``).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio
import rioxarray  # noqa: F401 - registers .rio
import xarray as xr
from _chromium import Browser, chromium
from rasterio.transform import from_origin

import geobind
from geobind.cli import main
from geobind.inference.store import embed_to_zarr

folium = pytest.importorskip("folium")
pytestmark = pytest.mark.skipif(
    chromium() is None,
    reason="Chromium is not installed (Debian: apt-get install -y chromium; .ci/run installs it)",
)

IMAGES_READY = (
    "document.querySelectorAll('img.leaflet-image-layer').length > 0 && "
    "[...document.querySelectorAll('img.leaflet-image-layer')].every(i => i.complete)"
)


def make_raster(size: int = 96) -> xr.DataArray:
    """A 3-band UTM scene at 60° N, far from its zone's central meridian (a turned grid)."""
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[0:size, 0:size]
    bands = [120 + 90 * np.sin(xx / (7 + 2 * b)) * np.cos(yy / (11 + b)) for b in range(3)]
    data = np.clip(np.stack(bands) + rng.normal(0, 8, (3, size, size)), 1, 255).astype(np.uint8)
    coords = {"y": 6_660_000 - (np.arange(size) + 0.5), "x": 300_000 + (np.arange(size) + 0.5)}
    raster = xr.DataArray(data, dims=("band", "y", "x"), coords={"band": [1, 2, 3], **coords})
    return raster.rio.write_crs("EPSG:32633")


def blank_page(like: Path, out: Path) -> Path:
    """A map with nothing on it, the same size and view as the page ``like``."""
    from geobind.inference.webmap import _leaflet_assets

    bounds = re.search(r"\.fitBounds\(\s*(\[\[[^\]]+\],\s*\[[^\]]+\]\])", like.read_text())
    m = folium.Map(location=None, tiles=None, control_scale=True)
    js, css = _leaflet_assets()
    m.default_js, m.default_css = [("leaflet", js)], [("leaflet_css", css)]
    m.fit_bounds(json.loads(bounds.group(1)))
    m.save(out)
    return out


def overlay_rect(page: Browser) -> tuple[int, int, int, int]:
    """The similarity overlay's (left, top, right, bottom) on screen, in pixels."""
    rect = page.evaluate(
        "(() => { const imgs = [...document.querySelectorAll('img.leaflet-image-layer')];"
        " const r = imgs[imgs.length - 1].getBoundingClientRect();"
        " return [r.left, r.top, r.right, r.bottom]; })()"
    )
    return tuple(round(v) for v in rect)


def assert_overlay_shows(shot: np.ndarray, blank: np.ndarray, rect: tuple[int, ...]) -> None:
    left, top, right, bottom = rect
    h, w = shot.shape[:2]
    assert right - left > 50 and bottom - top > 50, rect  # the overlay spans the view
    # the inner part of the overlay (its corners may be empty where a turned grid ends)
    dx, dy = (right - left) // 5, (bottom - top) // 5
    ys = slice(max(0, top + dy), min(h, bottom - dy))
    xs = slice(max(0, left + dx), min(w, right - dx))
    diff = np.abs(shot[ys, xs].astype(int) - blank[ys, xs].astype(int)).sum(axis=-1)
    assert (diff > 30).mean() > 0.9, (diff > 30).mean()


def click(page: Browser, x: float, y: float) -> None:
    for kind in ("mouseMoved", "mousePressed", "mouseReleased"):
        page.call(
            "Input.dispatchMouseEvent",
            {"type": kind, "x": x, "y": y, "button": "left", "clickCount": 1},
        )


def wait_for(page: Browser, expression: str, seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while not page.evaluate(f"!!({expression})"):
        if time.monotonic() > deadline:
            raise TimeoutError(expression)
        time.sleep(0.05)


def test_explore_page_shows_overlay_cells_and_switches_queries(tmp_path):
    raster = make_raster()
    with geobind.use_model("tiny"):
        page_file = tmp_path / "explore.html"
        raster.geobind.explore(
            ["busy highway", "lake shore"], k=5, tiles=None, progress=False
        ).save(page_file)
        overlay_only = tmp_path / "overlay.html"
        geobind.explore(raster, "busy highway", k=None, rgb=False, tiles=None).save(overlay_only)
    blank = blank_page(overlay_only, tmp_path / "blank.html")

    with Browser(tmp_path) as page:
        page.open(overlay_only, wait=IMAGES_READY)
        rect = overlay_rect(page)
        shot = page.screenshot(tmp_path / "overlay.png")
        page.open(blank)
        empty = page.screenshot(tmp_path / "blank.png")
        assert_overlay_shows(shot, empty, rect)
        assert page.errors == []

        page.open(page_file, wait=IMAGES_READY)
        page.screenshot(tmp_path / "explore.png")
        assert page.errors == [], page.errors
        legends = (
            "[...document.querySelectorAll('.geobind-legend .gb-title')].map(e => e.innerText)"
        )
        assert page.evaluate(legends) == ["busy highway"]
        labels = page.evaluate(
            "[...document.querySelectorAll('.leaflet-control-layers label')]"
            ".map(l => l.innerText.trim())"
        )
        assert labels == ["scene (RGB)", "busy highway", "lake shore"]

        # a best cell: its popup gives rank and score
        centres = page.evaluate(
            "[...document.querySelectorAll('path.leaflet-interactive')].map(p => {"
            " const r = p.getBoundingClientRect(); const x = (r.left + r.right) / 2,"
            " y = (r.top + r.bottom) / 2; return [x, y, document.elementFromPoint(x, y) === p]; })"
        )
        assert len(centres) == 5
        x, y, _ = next(c for c in centres if c[2])
        click(page, x, y)
        wait_for(page, "document.querySelector('.leaflet-popup-content')")
        popup = page.evaluate("document.querySelector('.leaflet-popup-content').innerText")
        assert re.search(r"rank\s+[1-5]\b", popup) and re.search(r"score\s+-?\d\.\d+", popup)
        page.screenshot(tmp_path / "explore-popup.png")

        # switch to the other query: its overlay, cells and legend replace the first's
        page.evaluate(
            "(() => { const boxes = document.querySelectorAll("
            "'.leaflet-control-layers-overlays input'); boxes[1].click(); boxes[0].click(); })()"
        )
        wait_for(page, f"{legends}.join() === 'lake shore'")
        assert page.evaluate("document.querySelectorAll('path.leaflet-interactive').length") == 5
        page.screenshot(tmp_path / "explore-lake-shore.png")
        assert page.errors == [], page.errors


def write_scene(path: Path) -> Path:
    data = make_raster(128).values
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=128,
        height=128,
        count=3,
        dtype="uint8",
        crs="EPSG:32633",
        transform=from_origin(300_000, 6_660_000, 1.0, 1.0),
    ) as dst:
        dst.write(data)
    return path


def test_query_command_page_in_the_browser(tmp_path, capsys):
    scene = write_scene(tmp_path / "scene.tif")
    embed_to_zarr(scene, tmp_path / "s.zarr", model="tiny", stride=16, progress=False)
    out = tmp_path / "map.html"
    args = ["query", str(tmp_path / "s.zarr"), "busy highway", "-o", str(out), "--tiles", "none"]
    assert main([*args, "--no-progress"]) == 0
    blank = blank_page(out, tmp_path / "blank.html")
    with Browser(tmp_path) as page:
        page.open(out, wait=IMAGES_READY)
        rect = overlay_rect(page)
        shot = page.screenshot(tmp_path / "query-map.png")
        assert page.errors == [], page.errors
        page.open(blank)
        empty = page.screenshot(tmp_path / "blank.png")
    assert_overlay_shows(shot, empty, rect)


def _messages(text: str) -> list[str]:
    """Printed lines, progress-bar redraws (``\\r``) split apart and left out."""
    lines = [part.strip() for line in text.split("\n") for part in line.split("\r")]
    return [line for line in lines if line and not re.search(r"\d+%\|", line)]


@pytest.mark.slow
def test_demo_report_page_and_training_output(tmp_path):
    out = tmp_path / "geobind-demo"
    # a fresh process, as a person runs it: the CLI configures logging as it does for them
    run = subprocess.run(
        [sys.executable, "-m", "geobind.cli", "demo", str(out), "--preset", "tiny"],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    printed = run.stdout + run.stderr
    assert f"report      {out / 'report.html'}" in run.stdout
    assert "Tip:" not in printed and "litlogger" not in printed and "litmodels" not in printed
    assert "GPU available" not in printed and "Trainer.fit" not in printed
    messages = _messages(printed)
    repeated = {m for m in messages if messages.count(m) > 1}
    assert not repeated, repeated
    for stage in ("pretrain-clip", "stage1", "stage2"):  # one bar per stage, with its numbers
        assert re.search(rf"{stage}: 100%.*epoch 1/1, loss \d+\.\d+, val R@10 \d\.\d+", printed)

    report = out / "report.html"
    with Browser(tmp_path, size=(1200, 900)) as page:
        page.open(report, wait="[...document.images].every(i => i.complete && i.naturalWidth > 0)")
        assert page.errors == [], page.errors
        assert page.evaluate("document.querySelectorAll('img').length") == 4  # a map per query
        assert page.evaluate("document.querySelector('iframe').getAttribute('src')") == (
            "maps/explore.html"
        )
        text = page.evaluate("document.body.innerText")
        for expected in ("random embeddings", "untrained", "sat→ground", "AUROC", "geobind query"):
            assert expected in text
        shot = page.screenshot(tmp_path / "report.png", full_page=True)
        frame = page.evaluate(
            "(() => { const r = document.querySelector('iframe').getBoundingClientRect();"
            " return [r.left, r.top + window.scrollY, r.right, r.bottom + window.scrollY]; })()"
        )
        assert page.errors == [], page.errors
    left, top, right, bottom = (round(v) for v in frame)
    inside = shot[top + 40 : bottom - 40, left + 60 : right - 60]
    assert inside.std() > 20  # the embedded map painted (a blank frame is one grey)
