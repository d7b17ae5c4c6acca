"""Querying Zarr stores: COG, PNG and top cells, chunk by chunk; the embed and query commands."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import soundfile
from PIL import Image
from test_store import STRIDE, TILE, write_scene

import geobind
from geobind.cli import main
from geobind.errors import InputDataError
from geobind.inference.query import cosine, embed_query
from geobind.inference.raster import top_k
from geobind.inference.store import embed_to_zarr, open_store, query_store


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("query")
    scene = write_scene(folder / "scene.tif")
    embed_to_zarr(scene, folder / "s.zarr", model="tiny", stride=STRIDE, tile=TILE)
    return folder / "s.zarr"


def expected_map(store: Path, query: str) -> np.ndarray:
    grid = open_store(store)
    vectors, _, _ = embed_query(geobind.load("tiny"), query)
    return cosine(grid.values, vectors)[0]


def test_cog_is_valid_and_holds_the_similarity(store, tmp_path):
    written = query_store(store, "a busy highway", tmp_path / "map.tif")
    assert written == [tmp_path / "map.tif"]
    grid = open_store(store)
    with rasterio.open(written[0]) as src:
        assert src.profile["tiled"] and src.overviews(1)  # tiled, with overviews
        assert src.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
        assert src.crs == grid.rio.crs and src.transform == grid.rio.transform()
        assert src.dtypes[0] == "float32" and np.isnan(src.nodata)
        values = src.read(1)
    np.testing.assert_allclose(values, expected_map(store, "a busy highway"), atol=1e-6)
    assert np.isnan(values).any()  # nodata corner stays NaN
    assert not list(tmp_path.glob(".*"))  # no temporary files left


def test_png_and_top_k_cells(store, tmp_path):
    written = query_store(store, "a lake shore", tmp_path / "map.tif", png=True, top_k=7)
    assert [p.name for p in written] == ["map.tif", "map.png", "map.geojson"]
    with Image.open(tmp_path / "map.png") as im:
        assert im.format == "PNG" and im.width > 300
    hits = gpd.read_file(tmp_path / "map.geojson")
    assert len(hits) == 7 and list(hits["rank"]) == list(range(1, 8))
    assert (np.diff(hits["score"]) <= 0).all()  # best first
    similarity = expected_map(store, "a lake shore")
    grid = open_store(store)
    import xarray as xr

    reference = top_k(xr.DataArray(similarity, dims=("y", "x")), 7, grid.rio.transform(), None)
    assert list(zip(hits["row"], hits["col"], strict=True)) == list(
        zip(reference["row"], reference["col"], strict=True)
    )
    np.testing.assert_allclose(hits["score"], reference["score"], atol=1e-6)
    assert hits.geometry.iloc[0].equals_exact(reference.geometry.iloc[0], 1e-6)
    assert hits.crs == grid.rio.crs


def test_top_k_to_parquet_and_png_only(store, tmp_path):
    hits = query_store(store, "forest", tmp_path / "hits.parquet", top_k=3)
    frame = gpd.read_parquet(hits[0])
    assert len(frame) == 3 and frame.crs.to_epsg() == 32633
    assert query_store(store, "forest", tmp_path / "m.png")[0].stat().st_size > 1000
    with pytest.raises(InputDataError, match="cannot tell what to write"):
        query_store(store, "forest", tmp_path / "map.jpg")


def test_audio_and_photo_queries(store, tmp_path):
    rng = np.random.default_rng(0)
    soundfile.write(tmp_path / "clip.wav", rng.normal(0, 0.1, 48_000).astype("float32"), 48_000)
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(tmp_path / "p.jpg")
    for query in (tmp_path / "clip.wav", tmp_path / "p.jpg"):
        out = query_store(store, str(query), tmp_path / f"{query.stem}.tif")[0]
        with rasterio.open(out) as src:
            np.testing.assert_allclose(src.read(1), expected_map(store, str(query)), atol=1e-5)


def test_query_with_another_model_is_refused(store, tmp_path):
    with pytest.raises(InputDataError, match="holds embeddings of model 'tiny'"):
        query_store(store, "forest", tmp_path / "m.tif", model=geobind.load("tiny", seed=1))


def test_several_groups_give_one_output_each(store, tmp_path):
    root = tmp_path / "two.zarr"
    shutil.copytree(store, root)
    other = write_scene(tmp_path / "b" / "other.tif", seed=3, height=96, width=96)
    embed_to_zarr(other, root, model="tiny", stride=STRIDE, tile=TILE)
    written = query_store(root, "houses", tmp_path / "map.tif")
    assert [p.name for p in written] == ["map_scene.tif", "map_other.tif"]
    only = query_store(root, "houses", tmp_path / "one.tif", groups=["other"])
    assert [p.name for p in only] == ["one.tif"]


def test_embed_and_query_commands(tmp_path, capsys):
    scene = write_scene(tmp_path / "scene.tif")
    store = tmp_path / "s.zarr"
    args = ["embed", str(scene), "-o", str(store), "--model", "tiny", "--stride", "16"]
    assert main([*args, "--tile", "4", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "9 tiles written" in out and "0 failed" in out and "MiB" in out
    assert main([*args, "--tile", "4", "--no-progress"]) == 0  # finished: nothing to do
    assert "0 tiles written" in capsys.readouterr().out

    assert main([*args, "--tile", "4", "--stride", "8"]) == 2  # another stride: refused
    assert capsys.readouterr().err.startswith("error: ")

    query = ["query", str(store), "busy highway", "--no-progress"]
    assert main([*query, "-o", str(tmp_path / "map.tif"), "--png"]) == 0
    assert (tmp_path / "map.tif").exists() and (tmp_path / "map.png").exists()
    assert main([*query, "-o", str(tmp_path / "hits.geojson"), "--top-k", "5"]) == 0
    assert len(json.loads((tmp_path / "hits.geojson").read_text())["features"]) == 5
    capsys.readouterr()
    assert main(["query", str(tmp_path / "nope.zarr"), "x", "-o", str(tmp_path / "m.tif")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_embed_command_takes_bands_and_gsd(tmp_path, capsys):
    import rioxarray

    from geobind.inference.raster import embed_raster

    scene = write_scene(tmp_path / "scene.tif")
    args = ["embed", str(scene), "--model", "tiny", "--stride", "16", "--tile", "4"]
    assert main([*args, "-o", str(tmp_path / "b.zarr"), "--bands", "4,3,2", "--no-progress"]) == 0
    root = json.loads((tmp_path / "b.zarr" / "zarr.json").read_text())["attributes"]["geobind"]
    assert root["bands"] == [4, 3, 2]
    memory = embed_raster(rioxarray.open_rasterio(scene), "tiny", stride=16, bands=[4, 3, 2])
    np.testing.assert_allclose(open_store(tmp_path / "b.zarr").values, memory.values, atol=1e-6)
    capsys.readouterr()
    for bad, message in (
        ("1,2,9", "has 4 band(s)"),
        ("4;3;2", "--bands takes"),
        ("0,1,2", "1-based"),
    ):
        assert main([*args, "-o", str(tmp_path / "x.zarr"), "--bands", bad]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and message in err and err.count("\n") == 1
    assert not (tmp_path / "x.zarr").exists()

    # a geographic CRS does not say the pixel size in metres: --gsd does (0.5 m: 64-px chips)
    with rasterio.open(scene) as src:
        profile, data = src.profile, src.read()
    profile.update(crs="EPSG:4326", transform=rasterio.transform.from_origin(15, 41, 1e-5, 1e-5))
    with rasterio.open(tmp_path / "geo.tif", "w", **profile) as dst:
        dst.write(data)
    geo = ["embed", str(tmp_path / "geo.tif"), "--model", "tiny", "--no-progress"]
    assert main([*geo, "-o", str(tmp_path / "g.zarr")]) == 2
    assert "gsd" in capsys.readouterr().err
    assert main([*geo, "-o", str(tmp_path / "g.zarr"), "--gsd", "0.5"]) == 0
    grid = open_store(tmp_path / "g.zarr")
    assert grid.attrs["chip_size"] == 64 and grid.attrs["stride"] == 32
    assert (
        json.loads((tmp_path / "g.zarr" / "zarr.json").read_text())["attributes"]["geobind"]["gsd"]
        == 0.5
    )
    assert main([*geo, "-o", str(tmp_path / "z.zarr"), "--gsd", "0"]) == 2
    assert "gsd" in capsys.readouterr().err
