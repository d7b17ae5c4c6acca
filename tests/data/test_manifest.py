"""Point manifests: formats, path resolution, CRS rules, failure paths."""

from __future__ import annotations

import os
import warnings

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely

from geobind.data import read_manifest
from geobind.errors import CRSError, CRSMismatchWarning, InputDataError


def _points(crs="EPSG:4326") -> gpd.GeoDataFrame:
    return gpd.GeoDataFrame(
        {"path": ["photos/a.jpg", "/abs/b.jpg", "s3://bucket/c.jpg"], "caption": ["a", "b", "c"]},
        geometry=gpd.points_from_xy([15.0, 15.001, 9.19], [41.9, 41.901, 45.46]),
        crs=crs,
    )


def test_world_geoparquet_reads_with_absolute_paths(tiny_world):
    gdf = read_manifest(tiny_world.ground_manifest)
    assert gdf.crs.to_epsg() == 4326
    assert len(gdf) == tiny_world.info["counts"]["ground"]["total"]
    assert {"path", "caption", "landcover", "landcover_id", "split", "scene"} <= set(gdf.columns)
    assert (gdf.geom_type == "Point").all()
    assert all(os.path.isabs(p) and os.path.isfile(p) for p in gdf.path)


@pytest.mark.parametrize("suffix", [".gpkg", ".geojson", ".parquet"])
def test_vector_formats_resolve_relative_paths_only(tmp_path, suffix):
    folder = tmp_path / "m"
    folder.mkdir()
    source = _points()
    if suffix == ".parquet":
        source.to_parquet(folder / f"m{suffix}")
    else:
        source.to_file(folder / f"m{suffix}")
    gdf = read_manifest(folder / f"m{suffix}")
    assert gdf.crs.to_epsg() == 4326
    assert list(gdf.path) == [str(folder / "photos" / "a.jpg"), "/abs/b.jpg", "s3://bucket/c.jpg"]
    np.testing.assert_allclose(gdf.geometry.x, source.geometry.x)
    np.testing.assert_allclose(gdf.geometry.y, source.geometry.y)
    assert list(gdf.caption) == ["a", "b", "c"]


@pytest.mark.parametrize(("lon", "lat"), [("lon", "lat"), ("Longitude", "Latitude")])
def test_csv_lonlat_gives_epsg4326_points(tmp_path, lon, lat):
    pd.DataFrame({lon: [15.0, 9.19], lat: [41.9, 45.46], "path": ["a.jpg", "../b.jpg"]}).to_csv(
        tmp_path / "m.csv", index=False
    )
    gdf = read_manifest(tmp_path / "m.csv")
    assert gdf.crs.to_epsg() == 4326
    assert list(gdf.geometry.x) == [15.0, 9.19] and list(gdf.geometry.y) == [41.9, 45.46]
    assert list(gdf.path) == [str(tmp_path / "a.jpg"), str(tmp_path.parent / "b.jpg")]
    assert lon not in gdf.columns and lat not in gdf.columns


def test_plain_parquet_with_lonlat(tmp_path):
    pd.DataFrame({"lon": [15.0], "lat": [41.9], "split": ["train"]}).to_parquet(
        tmp_path / "m.parquet"
    )
    gdf = read_manifest(tmp_path / "m.parquet")
    assert gdf.crs.to_epsg() == 4326 and gdf.geometry[0].x == 15.0 and gdf.split[0] == "train"


def test_other_crs_is_reprojected_with_a_warning_at_the_caller(tiny_world):
    with pytest.warns(CRSMismatchWarning, match=r"EPSG:4326.*EPSG:32633") as record:
        gdf = read_manifest(tiny_world.ground_manifest, crs="EPSG:32633")
    assert record[0].filename == __file__
    assert gdf.crs.to_epsg() == 32633
    expected = gpd.read_parquet(tiny_world.ground_manifest).to_crs("EPSG:32633")
    np.testing.assert_allclose(gdf.geometry.x, expected.geometry.x)


@pytest.mark.parametrize("crs", ["EPSG:4326", "OGC:CRS84"])
def test_same_crs_does_not_warn(tiny_world, crs):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        gdf = read_manifest(tiny_world.ground_manifest, crs=crs)
    assert gdf.crs.equals(gpd.GeoSeries(crs=crs).crs)


def test_empty_manifests_are_allowed(tmp_path):
    gpd.GeoDataFrame({"path": []}, geometry=[], crs="EPSG:4326").to_parquet(tmp_path / "e.parquet")
    (tmp_path / "e.csv").write_text("lon,lat,path\n")
    for name in ("e.parquet", "e.csv"):
        gdf = read_manifest(tmp_path / name)
        assert len(gdf) == 0 and gdf.crs.to_epsg() == 4326


def test_missing_file_is_input_data_error(tmp_path):
    with pytest.raises(InputDataError, match="does not exist"):
        read_manifest(tmp_path / "nope.parquet")
    with pytest.raises(ValueError, match="is a folder"):
        read_manifest(tmp_path)


def test_no_crs_is_crs_error(tmp_path):
    gpd.GeoDataFrame(geometry=[shapely.Point(1, 2)]).to_parquet(tmp_path / "n.parquet")
    with pytest.raises(CRSError, match="has no CRS"):
        read_manifest(tmp_path / "n.parquet")


def test_bad_crs_argument_is_crs_error(tiny_world):
    with pytest.raises(CRSError, match="not a CRS"):
        read_manifest(tiny_world.ground_manifest, crs="EPSG:not-a-code")


def test_non_point_and_missing_geometries_are_rejected(tmp_path):
    gdf = _points()
    gdf.loc[1, "geometry"] = shapely.box(0, 0, 1, 1)
    gdf.to_parquet(tmp_path / "poly.parquet")
    with pytest.raises(InputDataError, match=r"1 non-point geometries \(Polygon; first: row 1\)"):
        read_manifest(tmp_path / "poly.parquet")
    gdf = _points()
    gdf.loc[2, "geometry"] = None
    gdf.to_parquet(tmp_path / "none.parquet")
    with pytest.raises(InputDataError, match="without a geometry"):
        read_manifest(tmp_path / "none.parquet")


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("x,y\n500000,4600000\n", "no coordinates"),
        ("lon,lat\n500000,4600000\n", "outside the range of degrees"),
        ("lon,lat\n15.0,\n", "without numeric lon/lat"),
    ],
)
def test_csv_without_usable_lonlat_is_rejected(tmp_path, text, match):
    (tmp_path / "m.csv").write_text(text)
    with pytest.raises(InputDataError, match=match):
        read_manifest(tmp_path / "m.csv")


def test_unreadable_file_is_input_data_error(tmp_path):
    (tmp_path / "junk.gpkg").write_bytes(b"not a geopackage")
    with pytest.raises(InputDataError, match="cannot read manifest"):
        read_manifest(tmp_path / "junk.gpkg")
