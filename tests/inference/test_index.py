"""The store's search index and geobind.search: recall against the exact scan, ids back to cells,
appends, provenance and bad input."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import shapely
import zarr

import geobind
from geobind import cli
from geobind.errors import (
    IndexMismatchError,
    IndexNotFoundError,
    InputDataError,
    ModelMismatchError,
    SearchIndexError,
)
from geobind.inference.index import INDEX_DIR, build_index, open_index, update_index
from geobind.inference.search import search, search_vectors
from geobind.inference.store import embed_to_zarr, open_store

TEXTS = ["a lake", "a busy highway", "dense forest", "a wheat field", "houses"]


@pytest.fixture(scope="module")
def two_groups(tiny_world, tmp_path_factory) -> Path:
    """The tiny world's two scenes (EPSG:32633 and EPSG:3857) at stride 8: ~4.9 k cells."""
    store = tmp_path_factory.mktemp("index") / "world.zarr"
    embed_to_zarr(list(tiny_world.scenes.values()), store, model="tiny", stride=8, tile=32)
    return store


@pytest.fixture
def store(two_groups, tmp_path) -> Path:
    """A private copy of the two-group store (tests change it)."""
    return Path(shutil.copytree(two_groups, tmp_path / "world.zarr"))


def _query_vectors(store: Path) -> list[np.ndarray]:
    """Text queries and some cells' own vectors (places like them)."""
    model = geobind.load("tiny")
    vectors = [model["text"].embed([t]).numpy()[0] for t in TEXTS]
    for name, (r, c) in (("alpha", (10, 40)), ("beta", (25, 10)), ("beta", (45, 45))):
        v = open_store(store, group=name)[:, r, c].values.astype(np.float32)
        vectors.append(v / np.linalg.norm(v))
    return vectors


TIE = 1e-5  # scores this close are the same dot product summed in another order


def _recall(store: Path, vector: np.ndarray, k: int, **kw) -> tuple[float, float]:
    """``(strict, tied)`` recall@k against the exact scan. Strict: the share of the exact top-k
    cells found. Tied: a found cell also counts when its score equals the k-th best exact score
    (within float32 rounding, :data:`TIE`): the tiny world has identical cells (random weights,
    uniform land cover), and which of them make the top k is then a matter of order. The index
    re-ranks with the store's own values (a float32 copy of this float32 store), so its scores
    are the exact scan's."""
    exact, eg, er, ec = search_vectors(store, vector[None], k, exact=True)
    found, fg, fr, fc = search_vectors(store, vector[None], k, **kw)
    truth = set(zip(eg, er.tolist(), ec.tolist(), strict=True))
    cells = list(zip(fg, fr.tolist(), fc.tolist(), strict=True))
    assert len(set(cells)) == len(cells) == k
    strict = sum(cell in truth for cell in cells) / k
    pairs = zip(cells, found, strict=True)
    tied = sum(cell in truth or score >= exact[-1] - TIE for cell, score in pairs) / k
    return strict, tied


def _store_digest(store: Path) -> str:
    """A hash of every file of the store outside its index."""
    h = hashlib.sha256()
    for path in sorted(store.rglob("*")):
        if path.is_file() and INDEX_DIR not in path.relative_to(store).parts:
            h.update(str(path.relative_to(store)).encode())
            h.update(path.read_bytes())
    return h.hexdigest()


def test_flat_index_equals_the_exact_scan(store):
    summary = build_index(store)
    assert summary.kind == "flat" and summary.groups == ["alpha", "beta"]
    assert summary.cells == sum(
        int(np.isfinite(open_store(store, group=g)[0].values).sum()) for g in ("alpha", "beta")
    )
    for vector in _query_vectors(store):
        strict, tied = _recall(store, vector, 100)
        assert tied == 1.0 and strict >= 0.95, (strict, tied)


@pytest.mark.parametrize("k", [10, 100])
def test_ivfpq_recall_at_k(store, k):
    build_index(store, kind="ivfpq", nlist=64, pq=16)  # nprobe and rerank: automatic
    meta = json.loads((store / INDEX_DIR / "index.json").read_text())
    assert (meta["metric"], meta["copy_dtype"]) == ("l2", "float32")  # unit codes; exact copy
    strict, tied = np.array([_recall(store, v, k) for v in _query_vectors(store)]).T
    assert strict.mean() >= 0.95 and tied.min() >= 0.95, (strict, tied)


def test_hits_map_back_to_their_cells(store):
    build_index(store, kind="ivfpq", nlist=64, pq=16)
    model = geobind.load("tiny")
    hits = search(store, "a lake", k=50, model=model)
    assert hits.crs.to_epsg() == 4326 and len(hits) == 50
    assert hits["rank"].tolist() == list(range(1, 51))
    assert np.all(np.diff(hits["score"].to_numpy()) <= 1e-6)
    query = model["text"].embed(["a lake"]).numpy()[0]
    for name, part in hits.groupby("group"):
        grid = open_store(store, group=name)
        crs = grid.rio.crs
        centres = gpd.GeoSeries(
            shapely.points(grid.x.values[part["col"]], grid.y.values[part["row"]]), crs=crs
        )
        own = shapely.from_wkt(part["cell_wkt"].to_numpy())
        assert shapely.contains(own, centres.values).all()
        lonlat = centres.to_crs(4326).to_numpy()
        assert shapely.contains(part.geometry.to_numpy(), lonlat).all()
        assert set(part["cell_crs"]) == {geobind.georef.crs_name(crs)}
        cells = grid.values[:, part["row"], part["col"]].astype(np.float32)
        np.testing.assert_allclose(part["score"], query @ cells, atol=1e-5)  # exact scores
    assert set(hits["cell_crs"]) <= {"EPSG:32633", "EPSG:3857"}


def test_exact_and_index_agree_and_write_files(store, tmp_path):
    build_index(store)
    hits = search(store, "a busy highway", k=20, model="tiny", out=tmp_path / "hits.parquet")
    exact = search(store, "a busy highway", k=20, model="tiny", exact=True)
    # the flat index of a float32 store holds its float32 values: the exact scan's scores (only
    # identical cells may come in another order)
    np.testing.assert_allclose(hits["score"], exact["score"], atol=1e-5)
    same = set(map(tuple, hits[["group", "row", "col"]].values.tolist()))
    assert len(same & set(map(tuple, exact[["group", "row", "col"]].values.tolist()))) >= 18
    back = gpd.read_parquet(tmp_path / "hits.parquet")
    assert back.crs.to_epsg() == 4326
    assert list(back.columns[:7]) == [
        "rank",
        "score",
        "group",
        "row",
        "col",
        "cell_crs",
        "cell_wkt",
    ]
    search(store, "a busy highway", k=5, model="tiny", out=tmp_path / "hits.geojson")
    assert len(gpd.read_file(tmp_path / "hits.geojson")) == 5


def test_geometry_query_is_the_zonal_mean_of_its_cells(store):
    from geobind.inference.vector import embed_geometries

    build_index(store)
    grid = open_store(store, group="alpha")
    x, y = grid.x.values, grid.y.values
    field = shapely.box(x[20], y[30], x[26], y[24])  # 7 × 7 cell centres, in EPSG:32633
    area = gpd.GeoDataFrame({"name": ["field"]}, geometry=[field], crs=grid.rio.crs)
    hits = search(store, area.to_crs(4326), k=10)
    mean = embed_geometries(area.geometry, grid=grid)
    same = search(store, vector=mean[0], k=10)
    assert hits[["group", "row", "col"]].values.tolist() == (
        same[["group", "row", "col"]].values.tolist()
    )
    assert hits.geometry.intersects(area.to_crs(4326).geometry.iloc[0]).any()  # its own cells


def test_appended_group_is_indexed(tiny_world, tmp_path):
    store = tmp_path / "s.zarr"
    embed_to_zarr(tiny_world.scenes["alpha"], store, model="tiny", stride=8)
    build_index(store)
    embed_to_zarr(tiny_world.scenes["beta"], store, model="tiny", stride=8)  # updates the index
    assert open_index(store).groups == ["alpha", "beta"]
    cell = open_store(store, group="beta")[:, 7, 9].values.astype(np.float32)
    hits = search(store, vector=cell / np.linalg.norm(cell), k=5)
    assert ["beta", 7, 9] in hits[["group", "row", "col"]].values.tolist()
    assert hits["score"].iloc[0] > 0.999


def test_group_appended_without_update_is_refused_then_added(tiny_world, tmp_path, monkeypatch):
    store = tmp_path / "s.zarr"
    embed_to_zarr(tiny_world.scenes["alpha"], store, model="tiny", stride=8)
    build_index(store)
    monkeypatch.setattr("geobind.inference.index.refresh_after_write", lambda root: None)
    embed_to_zarr(tiny_world.scenes["beta"], store, model="tiny", stride=8)
    with pytest.raises(IndexMismatchError, match=r"lacks group\(s\) beta.*geobind index"):
        search(store, vector=np.ones(64, np.float32), k=3)
    summary = update_index(store)
    assert summary.added == ["beta"]
    assert len(search(store, vector=np.ones(64, np.float32), k=3)) == 3


def test_model_change_is_refused(tiny_world, store, tmp_path):
    build_index(store)
    other = tmp_path / "other.zarr"  # the same scene embedded by another model
    embed_to_zarr(tiny_world.scenes["alpha"], other, model="demo", stride=32)
    shutil.copytree(store / INDEX_DIR, other / INDEX_DIR)
    with pytest.raises(IndexMismatchError, match=r"was built for model 'tiny'.*--rebuild"):
        search(other, vector=np.ones(128, np.float32), k=3)
    with pytest.raises(ModelMismatchError):
        search(store, "a lake", k=3, model="demo")
    assert build_index(other, rebuild=True).cells > 100
    assert len(search(other, vector=np.ones(128, np.float32), k=3)) == 3


def test_bad_k(store):
    build_index(store)
    cells = open_index(store).cells
    for k in (0, -1, True, 2.5):
        with pytest.raises(InputDataError, match="k must be a positive integer"):
            search(store, vector=np.ones(64, np.float32), k=k)
    for exact in (False, True):
        with pytest.raises(InputDataError, match=f"k={cells + 1} is more than the {cells:,}"):
            search(store, vector=np.ones(64, np.float32), k=cells + 1, exact=exact)


def test_store_without_index_gives_a_hint(store):
    with pytest.raises(IndexNotFoundError, match=r"geobind index .*--exact"):
        search(store, "a lake", k=3)
    with pytest.raises(FileNotFoundError):  # also the builtin
        open_index(store)
    assert len(search(store, "a lake", k=3, exact=True)) == 3


@pytest.mark.parametrize("damage", ["faiss.index", "index.json", "cells"])
def test_damaged_index_is_refused_and_store_untouched(store, damage):
    build_index(store, kind="ivfpq", nlist=64, pq=16)
    before = _store_digest(store)
    folder = store / INDEX_DIR
    if damage == "faiss.index":
        data = bytearray((folder / "faiss.index").read_bytes())
        data[len(data) // 2 : len(data) // 2 + 64] = b"\xff" * 64
        (folder / "faiss.index").write_bytes(bytes(data))
    elif damage == "index.json":
        (folder / "index.json").write_text('{"format": "geobind-index/1", "par')
    else:
        path = next((folder / "groups").glob("*.cells"))
        path.write_bytes(path.read_bytes()[:-8])
    with pytest.raises(SearchIndexError, match=r"damaged.*--rebuild"):
        search(store, vector=np.ones(64, np.float32), k=3)
    assert _store_digest(store) == before
    if damage == "index.json":  # updating needs it: refused too
        with pytest.raises(SearchIndexError, match="--rebuild"):
            update_index(store)
    build_index(store, rebuild=True)
    assert len(search(store, vector=np.ones(64, np.float32), k=3)) == 3
    assert _store_digest(store) == before


def test_other_settings_need_rebuild(store):
    build_index(store, kind="ivfpq", nlist=64, pq=16)
    with pytest.raises(IndexMismatchError, match=r"nlist=64.*rebuild"):
        build_index(store, kind="ivfpq", nlist=32)
    assert build_index(store).added == []  # nothing new: the same index
    assert build_index(store, kind="ivfpq", nlist=32, rebuild=True).params["nlist"] == 32
    with pytest.raises(InputDataError, match="pq=7"):
        build_index(store, kind="ivfpq", pq=7, rebuild=True)


def test_index_json_records_the_model_and_groups(store):
    build_index(store)
    meta = json.loads((store / INDEX_DIR / "index.json").read_text())
    root = json.loads((store / "zarr.json").read_text())["attributes"]["geobind"]
    assert meta["sat_sha256"] == root["sat_sha256"]
    assert meta["model"] == "tiny" and meta["library"] == "faiss"
    assert set(meta["groups"]) == {"alpha", "beta"}
    assert zarr.open_group(store, mode="r")  # the store still opens with the index inside it


def test_cli_index_and_search(store, tmp_path, capsys):
    assert cli.main(["search", str(store), "a lake", "-k", "3"]) == 2
    assert "geobind index" in capsys.readouterr().err
    assert cli.main(["index", str(store), "--no-progress"]) == 0
    assert "flat index of" in capsys.readouterr().out
    out = tmp_path / "hits.geojson"
    assert cli.main(["search", str(store), "a lake", "-k", "5", "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "5 cells" in printed and str(out) in printed
    assert len(gpd.read_file(out)) == 5
    np.save(tmp_path / "q.npy", np.ones(64, np.float32))
    assert cli.main(["search", str(store), str(tmp_path / "q.npy"), "--exact", "-k", "2"]) == 0
    grid = open_store(store, group="alpha")
    area = gpd.GeoDataFrame(
        geometry=[
            shapely.box(grid.x.values[5], grid.y.values[9], grid.x.values[9], grid.y.values[5])
        ],
        crs=grid.rio.crs,
    )
    area.to_file(tmp_path / "area.gpkg")
    assert cli.main(["search", str(store), str(tmp_path / "area.gpkg"), "--row", "0"]) == 0
    assert cli.main(["search", str(store), "a lake", "-k", "0"]) == 2
    assert "k must be a positive integer" in capsys.readouterr().err


@pytest.mark.slow
def test_recall_on_a_demo_sized_store(tiny_world, tmp_path):
    """Both tiny-world scenes at stride 2: ~77 k cells, enough for the automatic IVF-PQ."""
    store = tmp_path / "big.zarr"
    embed_to_zarr(list(tiny_world.scenes.values()), store, model="tiny", stride=2)
    summary = build_index(store)
    assert summary.kind == "ivfpq" and summary.memory_bytes <= 0.25 * summary.grid_bytes
    strict, tied = np.array([_recall(store, v, 100) for v in _query_vectors(store)]).T
    assert strict.mean() >= 0.95 and tied.min() >= 0.95, (strict, tied)
