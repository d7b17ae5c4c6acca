"""Writers of similarity maps: COG, PNG and vector cells (shared by `geobind query` and plots)."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import shapely
from affine import Affine
from PIL import Image

from geobind.errors import InputDataError
from geobind.inference.outputs import (
    CogWriter,
    output_kind,
    png_step,
    write_cog,
    write_png,
    write_vector,
)

TRANSFORM = Affine(16, 0, 500_000, 0, -16, 4_600_000)


def test_cog_round_trip(tmp_path):
    values = np.arange(300 * 200, dtype=np.float64).reshape(300, 200)
    values[:10, :10] = np.nan
    out = write_cog(tmp_path / "m.tif", values, TRANSFORM, "EPSG:32633")
    with rasterio.open(out) as src:
        assert src.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG" and src.overviews(1)
        assert src.dtypes[0] == "float32" and np.isnan(src.nodata)
        assert src.crs.to_epsg() == 32633 and src.transform == TRANSFORM
        np.testing.assert_array_equal(src.read(1), values.astype(np.float32))
    assert not list(tmp_path.glob(".*"))  # no temporary files left


def test_a_failed_cog_leaves_the_old_file_and_no_temporaries(tmp_path):
    path = tmp_path / "m.tif"
    path.write_bytes(b"old")
    with pytest.raises(RuntimeError), CogWriter(path, (4, 4), TRANSFORM, 32633) as cog:
        cog.write(slice(0, 2), slice(0, 4), np.zeros((2, 4)))
        raise RuntimeError("the map could not be computed")
    assert path.read_bytes() == b"old" and not list(tmp_path.glob(".*"))


def test_png_is_sampled_to_at_most_2048_pixels(tmp_path):
    assert png_step((4096, 100)) == 2 and png_step((2048, 2048)) == 1
    out = write_png(
        tmp_path / "m.png",
        np.random.default_rng(0).random((4100, 50)),
        (0, 0, 50, 4100),
        rasterio.crs.CRS.from_epsg(32633),
        "'a lake'",
    )
    with Image.open(out) as im:
        assert im.format == "PNG"
    all_nan = write_png(tmp_path / "n.png", np.full((5, 5), np.nan), (0, 0, 5, 5), None, "empty")
    assert all_nan.stat().st_size > 1000


@pytest.mark.parametrize("name", ["hits.geojson", "hits.parquet", "hits.gpkg"])
def test_vectors_by_suffix_replace_an_existing_file(tmp_path, name):
    cells = gpd.GeoDataFrame(
        {"rank": [1, 2], "score": [0.9, 0.5]},
        geometry=[shapely.box(0, 0, 1, 1), shapely.box(1, 0, 2, 1)],
        crs=32633,
    )
    write_vector(cells.iloc[:1], tmp_path / name)
    out = write_vector(cells, tmp_path / name)
    back = gpd.read_parquet(out) if out.suffix == ".parquet" else gpd.read_file(out)
    assert back["rank"].tolist() == [1, 2] and back.crs.to_epsg() == 32633


def test_output_kind():
    assert [output_kind(n) for n in ("a.tiff", "a.png", "a.gpkg", "a.json")] == [
        "cog",
        "png",
        "vector",
        "vector",
    ]
    with pytest.raises(InputDataError, match="cannot tell what to write"):
        output_kind("a.csv")
