"""STAC items as sources, named-band and time-stacked rasters, change maps.

The catalogue is the tiny world's (:func:`geobind.synth.stac.export_stac`): uint16 reflectance
COGs with ``raster:bands`` scale 1e-4 and offset -0.1, two dates per scene, the second with a
block of another land cover copied in.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pystac
import pytest
import rasterio
import rioxarray
import xarray as xr

import geobind
from geobind.errors import GeoBindError, InputDataError
from geobind.inference.raster import embed_raster
from geobind.stac import is_stac, model_bands, stac_sources
from geobind.synth.stac import OFFSET, SCALE, export_stac

#: embeddings of the STAC source vs the scene GeoTIFF: the reflectance DNs round v / 255 to
#: 1e-4 (|error| <= 5e-5 per pixel), which moved unit embedding vectors by at most 1.8e-5
#: (alpha; beta 6.8e-6) with the tiny preset at stride 16
EMBED_ATOL = 1e-4


@pytest.fixture(scope="module")
def catalog(tiny_world, tmp_path_factory):
    return export_stac(tiny_world, tmp_path_factory.mktemp("stac") / "stac")


@pytest.fixture(scope="module")
def model():
    return geobind.load("tiny")


def _item_path(catalog, item_id):
    return catalog.parent / "synth" / item_id / f"{item_id}.json"


def _stack(catalog, scene, bands=("red", "green", "blue"), chunks=None):
    """What stackstac / odc-stac return: ``(time, band, y, x)`` reflectance with named bands,
    scale and offset applied, one COG per band and date, dask-backed when ``chunks``."""
    dates, times, crs = [], [], None
    for item in sorted(pystac.read_file(catalog).get_items(recursive=True), key=lambda i: i.id):
        if not item.id.startswith(scene):
            continue
        layers = [
            rioxarray.open_rasterio(item.assets[b].get_absolute_href(), chunks=chunks)
            .squeeze("band", drop=True)
            .astype(np.float32)
            for b in bands
        ]
        crs = layers[0].rio.crs
        band = xr.concat(layers, dim="band").assign_coords(band=list(bands))
        dates.append(xr.where(band == 0, np.nan, band * SCALE + OFFSET).astype(np.float32))
        times.append(np.datetime64(item.datetime.replace(tzinfo=None), "ns"))
    out = xr.concat(dates, dim="time").assign_coords(time=times)
    return out.rio.write_crs(crs).rio.write_nodata(np.nan)


# -- the catalogue --------------------------------------------------------------------------------
def test_catalogue_has_two_dates_with_a_recorded_change(catalog, tiny_world):
    items = {i.id: i for i in pystac.read_file(catalog).get_items(recursive=True)}
    assert sorted(items) == [
        "alpha-2024-05-01",
        "alpha-2024-09-01",
        "beta-2024-05-01",
        "beta-2024-09-01",
    ]
    red = items["alpha-2024-05-01"].assets["red"].to_dict()
    assert red["eo:bands"] == [{"name": "red", "common_name": "red"}]
    assert red["raster:bands"][0]["scale"] == SCALE and red["raster:bands"][0]["offset"] == OFFSET
    assert (
        "nir" in items["alpha-2024-05-01"].assets and "nir" not in items["beta-2024-05-01"].assets
    )
    for scene in ("alpha", "beta"):
        assert "geobind:change" not in items[f"{scene}-2024-05-01"].properties
        change = items[f"{scene}-2024-09-01"].properties["geobind:change"]
        assert change["from"] != change["to"]
        r, c, h, w = change["window"]
        with (
            rasterio.open(items[f"{scene}-2024-05-01"].assets["red"].get_absolute_href()) as a,
            rasterio.open(items[f"{scene}-2024-09-01"].assets["red"].get_absolute_href()) as b,
        ):
            before, after = a.read(1), b.read(1)
        differs = before != after
        assert differs[r : r + h, c : c + w].mean() > 0.3  # another land cover in the block
        differs[r : r + h, c : c + w] = False
        assert not differs.any()  # and nothing else changed
        # the first date is the scene itself: DN = round(v / 255 * 1e4) + 1000, nodata 0
        with rasterio.open(tiny_world.scenes[scene]) as src:
            v = src.read(1).astype(np.float64)
        valid = before > 0
        assert np.abs(before[valid] * SCALE + OFFSET - v[valid] / 255).max() <= 5.1e-5


def test_export_refuses_a_folder_in_use(tiny_world, catalog):
    with pytest.raises(GeoBindError, match="not empty"):
        export_stac(tiny_world, catalog.parent)


def test_is_stac(catalog, tiny_world):
    item = pystac.read_file(_item_path(catalog, "alpha-2024-05-01"))
    assert is_stac(item) and is_stac(item.to_dict()) and is_stac(catalog) and is_stac(str(catalog))
    assert is_stac(pystac.ItemCollection([item]))
    assert not is_stac(tiny_world.scenes["alpha"]) and not is_stac({"type": "Feature"})
    assert not is_stac(tiny_world.root / "world.json")  # JSON, but not STAC


# -- choosing and scaling assets ------------------------------------------------------------------
def test_sources_pick_named_bands_in_the_order_asked(catalog, model):
    sources = stac_sources(catalog)
    assert [s.name for s in sources] == [
        "alpha-2024-05-01",
        "alpha-2024-09-01",
        "beta-2024-05-01",
        "beta-2024-09-01",
    ]
    assert model_bands(model) == ("red", "green", "blue")
    item = _item_path(catalog, "alpha-2024-05-01")
    (bgrn,) = stac_sources(item, bands=["Blue", "GREEN", "red", "nir"])
    with rasterio.open(bgrn.path) as src, rasterio.open(sources[0].path) as rgb:
        assert src.descriptions == ("blue", "green", "red", "nir")
        assert rgb.descriptions == ("red", "green", "blue", "nir")  # default: RGB (+ NIR)
        np.testing.assert_array_equal(src.read([3, 2, 1, 4]), rgb.read())
    assert bgrn.identity.startswith("stac:alpha-2024-05-01 sha256:")
    assert bgrn.identity != sources[0].identity  # other bands, other source


def test_scale_and_offset_give_the_scenes_reflectance(catalog, tiny_world, model):
    """The STAC source's pixels are the scene's v / 255 within 5e-5, nodata where the scene's
    is; its embedding equals the scene GeoTIFF's within EMBED_ATOL."""
    for scene in ("alpha", "beta"):
        (source,) = stac_sources(_item_path(catalog, f"{scene}-2024-05-01"))
        with rasterio.open(source.path) as vrt, rasterio.open(tiny_world.scenes[scene]) as tif:
            got, want = vrt.read([1, 2, 3]), tif.read([1, 2, 3])
        invalid = (want == 0).all(axis=0)
        assert np.isnan(got[:, invalid]).all() and not np.isnan(got[:, ~invalid]).any()
        assert np.abs(got[:, ~invalid] - want[:, ~invalid] / 255).max() <= 5e-5
        stac = embed_raster(rioxarray.open_rasterio(source.path), model, stride=16)
        tif = embed_raster(rioxarray.open_rasterio(tiny_world.scenes[scene]), model, stride=16)
        assert stac.shape == tif.shape and stac.rio.transform() == tif.rio.transform()
        np.testing.assert_array_equal(np.isnan(stac.values), np.isnan(tif.values))
        diff = np.nanmax(np.abs(stac.values - tif.values))
        print(f"{scene}: max |embedding difference| STAC vs GeoTIFF = {diff:.2e}")
        assert diff <= EMBED_ATOL


def test_stac_11_bands_on_one_rgb_asset_read_the_file_bitwise(tiny_world, model, tmp_path):
    """A multi-band asset described by STAC 1.1 ``bands`` (``eo:common_name``), no scale: the
    VRT is the file's own pixels, so the embedding is bitwise the scene's."""
    scene = tiny_world.scenes["alpha"]
    names = ["nir", "blue", "green", "red"]  # declared out of file order on purpose
    item = {
        "type": "Feature",
        "stac_version": "1.1.0",
        "id": "alpha-rgb",
        "geometry": None,
        "properties": {"datetime": "2024-05-01T00:00:00Z"},
        "links": [],
        "assets": {
            "thumbnail": {"href": "thumb.png", "roles": ["thumbnail"], "type": "image/png"},
            "image": {
                "href": str(scene),
                "roles": ["data"],
                "bands": [
                    {"name": "b1", "eo:common_name": "red"},
                    {"name": "b2", "eo:common_name": "green"},
                    {"name": "b3", "eo:common_name": "blue"},
                    {"name": "b4", "eo:common_name": "nir"},
                ],
            },
        },
    }
    path = tmp_path / "item.json"
    path.write_text(json.dumps(item))
    (source,) = stac_sources(str(path), bands=names)
    with rasterio.open(source.path) as vrt, rasterio.open(scene) as tif:
        assert vrt.dtypes[0] == "uint8" and vrt.nodata == 0
        np.testing.assert_array_equal(vrt.read(), tif.read([4, 3, 2, 1]))
    (rgb,) = stac_sources(item)
    a = embed_raster(rioxarray.open_rasterio(rgb.path), model, stride=16).values
    b = embed_raster(rioxarray.open_rasterio(scene), model, stride=16).values
    np.testing.assert_array_equal(a, b)


def test_embed_to_zarr_from_stac_vrts(catalog, tiny_world, tmp_path, model):
    """The VRT of each item is a source the store takes (written to a .vrt file here: the store
    reads paths); its cells equal the scene GeoTIFF's within EMBED_ATOL."""
    from geobind.inference.store import embed_to_zarr

    (source,) = stac_sources(_item_path(catalog, "alpha-2024-05-01"))
    vrt = tmp_path / "alpha.vrt"
    vrt.write_text(source.path)
    embed_to_zarr(vrt, tmp_path / "stac.zarr", model=model, stride=16)
    embed_to_zarr(tiny_world.scenes["alpha"], tmp_path / "tif.zarr", model=model, stride=16)
    a = xr.open_zarr(tmp_path / "stac.zarr", group="alpha")["embedding"].values
    b = xr.open_zarr(tmp_path / "tif.zarr", group="alpha")["embedding"].values
    assert a.shape == b.shape
    assert np.nanmax(np.abs(a - b)) <= EMBED_ATOL


def test_embed_to_zarr_takes_a_stac_item(catalog, tmp_path, model):
    import geobind.sources as sources

    if not hasattr(sources, "resolve_sources"):
        pytest.skip("geobind.sources.resolve_sources (STAC sources for stores) is not wired yet")
    from geobind.inference.store import embed_to_zarr

    item = _item_path(catalog, "alpha-2024-05-01")
    summary = embed_to_zarr(item, tmp_path / "s.zarr", model=model, stride=16)
    assert summary.failed == []
    (source,) = stac_sources(item)
    want = embed_raster(rioxarray.open_rasterio(source.path), model, stride=16).values
    got = xr.open_zarr(tmp_path / "s.zarr", group="alpha-2024-05-01")["embedding"].values
    np.testing.assert_allclose(got, want, atol=1e-6)


# -- over HTTP ------------------------------------------------------------------------------------
def test_stac_over_http_reads_the_same_pixels(catalog, http_server):
    url = http_server.url(catalog)
    assert is_stac(url)
    remote = stac_sources(url)
    local = stac_sources(catalog)
    assert [s.name for s in remote] == [s.name for s in local]
    assert "/vsicurl/http://127.0.0.1" in remote[0].path
    assert remote[0].label.startswith("http://")
    with rasterio.open(remote[1].path) as r, rasterio.open(local[1].path) as loc:
        np.testing.assert_array_equal(r.read(), loc.read())


def test_http_asset_missing_is_one_line(catalog, http_server, tmp_path):
    copy = tmp_path / "stac"
    shutil.copytree(catalog.parent, copy)
    (copy / "synth" / "alpha-2024-05-01" / "green.tif").unlink()
    with pytest.raises(InputDataError) as err:
        stac_sources(http_server.url(copy / "catalog.json"))
    message = str(err.value)
    assert "\n" not in message
    assert "'green'" in message and "alpha-2024-05-01" in message and "http://" in message


def test_http_catalogue_missing_is_one_line(http_server, tmp_path):
    with pytest.raises(InputDataError, match="cannot read STAC") as err:
        stac_sources(http_server.url(tmp_path / "nowhere" / "catalog.json"))
    assert "\n" not in str(err.value)


def test_item_without_rgb_assets_is_one_line(catalog):
    item = pystac.read_file(_item_path(catalog, "beta-2024-05-01"))
    del item.assets["green"]
    with pytest.raises(InputDataError) as err:
        stac_sources(item)
    message = str(err.value)
    assert "\n" not in message
    assert "'beta-2024-05-01'" in message and "['green']" in message
    assert "red (red)" in message and "landcover" in message


# -- named bands, time, change --------------------------------------------------------------------
def test_named_bands_in_another_order_equal_index_order(catalog, model):
    named = _stack(catalog, "alpha", bands=("nir", "blue", "green", "red")).isel(time=0)
    ordered = named.sel(band=["red", "green", "blue"]).assign_coords(band=[1, 2, 3])
    upper = named.assign_coords(band=[b.upper() for b in named["band"].values])
    a = geobind.embed(named, model, stride=16, cache=False)
    b = geobind.embed(ordered, model, stride=16, cache=False)
    c = geobind.embed(upper, model, stride=16, cache=False)
    np.testing.assert_array_equal(a.values, b.values)
    np.testing.assert_array_equal(c.values, b.values)
    with pytest.raises(InputDataError, match="missing"):
        geobind.embed(named.sel(band=["nir", "red"]), model, cache=False)


def test_time_stack_embeds_and_scores_date_by_date(catalog, model):
    stack = _stack(catalog, "alpha", chunks=128)  # dask-backed, as stackstac returns it
    assert stack.chunks is not None
    grid = geobind.embed(stack, model, stride=16)
    assert grid.dims == ("time", "embedding", "y", "x") and grid.sizes["time"] == 2
    assert grid.chunks is not None  # dask in, dask out
    one = geobind.embed(stack.isel(time=1), model, stride=16, cache=False)
    np.testing.assert_array_equal(grid.isel(time=1).values, one.values)
    np.testing.assert_array_equal(grid["time"].values, stack["time"].values)

    from geobind.inference import api

    sim = stack.geobind.similarity("industrial roofs", model=model, stride=16, progress=False)
    kept = api._GRIDS[id(stack)].grid
    lake = stack.geobind.similarity("a lake", model=model, stride=16, progress=False)
    assert api._GRIDS[id(stack)].grid is kept  # the second query reused the grid
    assert sim.dims == lake.dims == ("time", "y", "x")
    assert sim.rio.crs == stack.rio.crs


def test_change_shows_the_changed_block(catalog, model):
    stack = _stack(catalog, "alpha")
    item = pystac.read_file(_item_path(catalog, "alpha-2024-09-01"))
    r, c, h, w = item.properties["geobind:change"]["window"]
    diff = geobind.change(stack, "industrial roofs", "2024-05-01", "2024-09-01", model=model)
    assert diff.dims == ("y", "x") and diff.name == "change"
    assert diff.rio.crs == stack.rio.crs and diff.attrs["before"] == "2024-05-01"
    same = stack.geobind.change("industrial roofs", before=0, after=-1, model=model)
    np.testing.assert_array_equal(same.values, diff.values)
    # where each cell's chip lies: entirely inside the changed block, or clear of it
    chip, stride = diff.attrs["chip_size"], diff.attrs["stride"]
    rows = np.arange(diff.sizes["y"]) * stride
    cols = np.arange(diff.sizes["x"]) * stride
    inside = np.logical_and.outer(
        (rows >= r) & (rows + chip <= r + h), (cols >= c) & (cols + chip <= c + w)
    )
    clear = ~np.logical_and.outer(
        (rows < r + h) & (rows + chip > r), (cols < c + w) & (cols + chip > c)
    )
    values = np.abs(diff.values)
    assert inside.sum() >= 4
    assert np.nanmin(values[inside]) > 0
    assert np.nanmax(values[clear]) == 0  # pixels unchanged: bitwise the same cells
    print(f"mean |change| inside {np.nanmean(values[inside]):.4f}, outside {0.0}")


def test_change_bad_input(catalog, model):
    stack = _stack(catalog, "alpha")
    with pytest.raises(InputDataError, match="no date"):
        geobind.change(stack, "a lake", "2020-01-01", "2024-09-01", model=model)
    with pytest.raises(InputDataError, match="'time' dimension"):
        geobind.change(stack.isel(time=0), "a lake", model=model)


def test_change_defaults_to_first_and_last_dates_on_integer_years(catalog, model):
    """An integer time axis (years) takes labels, and the defaults are its first and last."""
    stack = _stack(catalog, "alpha").assign_coords(time=[2024, 2025])
    diff = geobind.change(stack, "a lake", model=model)
    assert (diff.attrs["before"], diff.attrs["after"]) == (2024, 2025)
    same = geobind.change(stack, "a lake", 2024, 2025, model=model)
    np.testing.assert_array_equal(diff.values, same.values)


def test_stac_in_s3_reads_like_the_local_catalogue(catalog, s3):
    """A catalogue uploaded to S3 (relative hrefs): items read with obstore, assets with
    GDAL's /vsis3/, the same pixels as the local files."""
    root = catalog.parent
    for path in root.rglob("*"):
        if path.is_file():
            s3.upload(path, f"{s3.url}/stac/{path.relative_to(root).as_posix()}")
    item = "alpha-2024-05-01"
    (remote,) = stac_sources(f"{s3.url}/stac/synth/{item}/{item}.json")
    (local,) = stac_sources(_item_path(catalog, item))
    assert "/vsis3/" in remote.path and remote.identity != local.identity
    from geobind.sources import open_dataset

    with open_dataset(remote) as a, rasterio.open(local.path) as b:
        np.testing.assert_array_equal(a.read(), b.read())
