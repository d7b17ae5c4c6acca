"""Search indexes of stores in object storage (a real S3 API on loopback: moto): built as objects
under the store's lease, read from a local cache, updated on append, refused when damaged."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest

import geobind
from geobind import cli
from geobind.errors import (
    IndexMismatchError,
    IndexNotFoundError,
    SearchIndexError,
    StoreError,
    StoreLockedError,
)
from geobind.inference.index import INDEX_DIR, build_index, open_index
from geobind.inference.index_location import IndexLocation
from geobind.inference.index_open import _OPEN
from geobind.inference.search import search, search_vectors
from geobind.inference.store import embed_to_zarr, open_store
from geobind.inference.store.lease import LEASE_NAME, _StoreLease
from geobind.inference.store.location import store_location

pytest.importorskip("obstore")

TEXTS = ["a lake", "a busy highway", "dense forest"]


@pytest.fixture(scope="module")
def local_store(tiny_world, tmp_path_factory) -> Path:
    """The tiny world's two scenes (EPSG:32633 and EPSG:3857) at stride 8, in a folder."""
    store = tmp_path_factory.mktemp("index-object") / "world.zarr"
    embed_to_zarr(list(tiny_world.scenes.values()), store, model="tiny", stride=8, tile=32)
    return store


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch) -> Path:
    """A private cache folder for each test; no index kept open from another test."""
    monkeypatch.setenv("GEOBIND_CACHE", str(tmp_path / "cache"))
    _OPEN.clear()
    return tmp_path / "cache"


def upload(folder: Path, url: str) -> str:
    """Put every file of a local store at ``url`` (a store written to S3 by embed_to_zarr is
    this, byte for byte: test_store_object)."""
    location = store_location(url)
    for path in sorted(folder.rglob("*")):
        if path.is_file() and path.name != ".geobind.lock":
            location.put(path.relative_to(folder).as_posix(), path.read_bytes())
    return url


def objects(url: str, prefix: str = "") -> dict[str, bytes]:
    """The objects of a store under ``prefix``, by key relative to the store (no lease)."""
    location = store_location(url)
    return {
        key: location.read(key)
        for key, _ in location.keys(prefix)
        if key != LEASE_NAME and not key.startswith("_index.")
    }


def local_files(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in folder.rglob("*")
        if p.is_file() and not p.name.startswith(".")
    }


def vectors(store: Path) -> list[np.ndarray]:
    """Text queries and some cells' own vectors ("places like this")."""
    model = geobind.load("tiny")
    out = [model["text"].embed([t]).numpy()[0] for t in TEXTS]
    for name, (r, c) in (("alpha", (10, 40)), ("beta", (25, 10))):
        v = open_store(store, group=name)[:, r, c].values.astype(np.float32)
        out.append(v / np.linalg.norm(v))
    return out


def cached(cache: Path) -> dict[str, tuple[int, int]]:
    """``(inode, mtime)`` of each cached index file: a download replaces the file."""
    return {
        p.relative_to(cache).as_posix(): (p.stat().st_ino, p.stat().st_mtime_ns)
        for p in cache.rglob("*")
        if p.is_file() and p.name != ".objects.json"
    }


@pytest.mark.parametrize("kind", ["flat", "ivfpq"])
def test_s3_index_equals_the_local_one(local_store, s3, tmp_path, kind):
    here = Path(shutil.copytree(local_store, tmp_path / "world.zarr"))
    url = upload(here, f"{s3.url}/world.zarr")
    settings = {"kind": "flat"} if kind == "flat" else {"kind": "ivfpq", "nlist": 64, "pq": 16}
    remote, local = build_index(url, **settings), build_index(here, **settings)
    assert remote.store == url and local.store == here
    assert (remote.kind, remote.cells, remote.groups) == (local.kind, local.cells, local.groups)
    assert remote.params == local.params and remote.disk_bytes == local.disk_bytes
    assert not store_location(url).exists(LEASE_NAME)  # built under the lease, released
    # the same files, as objects, in the same layout: byte for byte but index.json (its time)
    index = objects(url, f"{INDEX_DIR}/")
    files = local_files(here / INDEX_DIR)
    assert set(index) == {f"{INDEX_DIR}/{name}" for name in files}
    for name, data in files.items():
        if name != "index.json":
            assert index[f"{INDEX_DIR}/{name}"] == data, name
    for v in vectors(here):
        s_remote, g_remote, r_remote, c_remote = search_vectors(url, v[None], 50)
        s_local, g_local, r_local, c_local = search_vectors(here, v[None], 50)
        assert g_remote == g_local
        assert np.array_equal(r_remote, r_local) and np.array_equal(c_remote, c_local)
        np.testing.assert_allclose(s_remote, s_local, atol=1e-6, rtol=0)
    hits = search(url, "a lake", k=20, model="tiny")
    same = search(here, "a lake", k=20, model="tiny")
    cols = ["rank", "group", "row", "col", "cell_crs", "cell_wkt"]
    assert hits[cols].equals(same[cols]) and hits.geometry.equals(same.geometry)
    np.testing.assert_allclose(hits["score"], same["score"], atol=1e-6, rtol=0)
    assert hits.attrs["store"] == url and hits.attrs["index"] == same.attrs["index"]
    exact = search(url, "a lake", k=20, model="tiny", exact=True)  # the scan reads S3 chunks
    truth = search(here, "a lake", k=20, model="tiny", exact=True)
    assert exact[cols].equals(truth[cols])


def test_second_search_uses_the_cache_and_changed_objects_are_downloaded(
    local_store, s3, tmp_path, cache, monkeypatch
):
    url = upload(local_store, f"{s3.url}/world.zarr")
    monkeypatch.setenv("GEOBIND_CACHE", str(tmp_path / "builder"))
    build_index(url, kind="ivfpq", nlist=64, pq=16)  # another machine builds it
    monkeypatch.setenv("GEOBIND_CACHE", str(cache))
    q = vectors(local_store)[0][None]
    first = search_vectors(url, q, 10)
    files = cached(cache)
    names = [
        "index.json",
        "faiss.index",
        *(f"groups/{g}.{e}" for g in (0, 1) for e in ("cells", "f32")),
    ]
    assert sorted(name.split("/_index/", 1)[1] for name in files) == sorted(names)
    place = IndexLocation(url)
    assert place.folder.parent.parent == cache / "index"
    _OPEN.clear()  # a new process: the index is opened again, from the cache
    again = search_vectors(url, q, 10)
    assert cached(cache) == files  # nothing downloaded again
    assert again[1] == first[1] and np.array_equal(again[2], first[2])
    assert place.sync({"faiss.index": None}) == [] and place.downloads == 0

    # the store's index is rebuilt (other settings) elsewhere: the changed objects come down
    monkeypatch.setenv("GEOBIND_CACHE", str(tmp_path / "builder"))
    build_index(url, kind="ivfpq", nlist=32, pq=16, rebuild=True)
    monkeypatch.setenv("GEOBIND_CACHE", str(cache))
    assert open_index(url).params["nlist"] == 32  # no _OPEN.clear(): index.json's ETag changed
    now = cached(cache)
    assert set(now) == set(files)
    for key in files:  # only the objects that changed: the group files hold the same bytes
        changed = key.endswith(("/index.json", "/faiss.index"))
        assert (now[key] != files[key]) == changed, key


def test_builder_keeps_what_it_uploaded(local_store, s3, cache):
    """The machine that builds an index searches it with no download (its cache is the build)."""
    url = upload(local_store, f"{s3.url}/world.zarr")
    build_index(url)
    files = cached(cache)
    assert files and len(search_vectors(url, vectors(local_store)[0][None], 5)[1]) == 5
    assert cached(cache) == files


def test_appended_group_on_s3_is_indexed(tiny_world, s3, cache, monkeypatch):
    url = f"{s3.url}/s.zarr"
    embed_to_zarr(tiny_world.scenes["alpha"], url, model="tiny", stride=8)
    monkeypatch.setenv("GEOBIND_CACHE", str(cache.with_name("builder")))
    build_index(url)
    monkeypatch.setenv("GEOBIND_CACHE", str(cache))  # the appending job: an empty cache
    embed_to_zarr(tiny_world.scenes["beta"], url, model="tiny", stride=8)  # updates the index
    assert not store_location(url).exists(LEASE_NAME)
    # the update read only faiss.index of the index (not alpha's re-ranking copy)
    assert sorted(name.rsplit("/_index/", 1)[1] for name in cached(cache)) == [
        "faiss.index",
        "groups/1.cells",
        "groups/1.f32",
        "index.json",
    ]
    monkeypatch.setenv("GEOBIND_CACHE", str(cache.with_name("reader")))
    assert open_index(url).groups == ["alpha", "beta"]
    cell = open_store(url, group="beta")[:, 7, 9].values.astype(np.float32)
    hits = search(url, vector=cell / np.linalg.norm(cell), k=5)
    assert ["beta", 7, 9] in hits[["group", "row", "col"]].values.tolist()
    assert hits["score"].iloc[0] > 0.999


def test_model_change_on_s3_is_refused(local_store, tiny_world, s3, tmp_path):
    url = upload(local_store, f"{s3.url}/world.zarr")
    build_index(url)
    other = f"{s3.url}/other.zarr"  # the same scene embedded by another model
    embed_to_zarr(tiny_world.scenes["alpha"], other, model="demo", stride=32)
    source, target = store_location(url), store_location(other)
    for key, _ in source.keys(f"{INDEX_DIR}/"):
        target.put(key, source.read(key))
    with pytest.raises(IndexMismatchError, match=rf"built for model 'tiny'.*{other} --rebuild"):
        search(other, vector=np.ones(128, np.float32), k=3)
    assert build_index(other, rebuild=True).cells > 10
    assert len(search(other, vector=np.ones(128, np.float32), k=3)) == 3
    assert {k for k, _ in target.keys(f"{INDEX_DIR}/")} == {  # the old index's groups/1 went
        f"{INDEX_DIR}/{name}" for name in ("index.json", "faiss.index", "groups/0.cells")
    } | {f"{INDEX_DIR}/groups/0.f32"}


@pytest.mark.parametrize("damage", ["faiss.index", "index.json", "groups/1.f32"])
def test_damaged_index_object_is_refused_and_store_untouched(local_store, s3, damage):
    url = upload(local_store, f"{s3.url}/world.zarr")
    build_index(url, kind="ivfpq", nlist=64, pq=16)
    q = np.ones(64, np.float32)
    assert len(search(url, vector=q, k=3)) == 3  # cached: the damage must not hide behind it
    before = {k: v for k, v in objects(url).items() if not k.startswith(f"{INDEX_DIR}/")}
    location, key = store_location(url), f"{INDEX_DIR}/{damage}"
    data = bytearray(location.read(key))
    if damage == "index.json":
        data = bytearray(b'{"format": "geobind-index/1", "par')
    else:
        data[len(data) // 2 : len(data) // 2 + 64] = b"\xff" * 64
    location.put(key, bytes(data))
    _OPEN.clear()  # another process (this one would reuse the index it opened)
    with pytest.raises(SearchIndexError, match=rf"damaged.*geobind index {url} --rebuild"):
        search(url, vector=q, k=3)
    after = {k: v for k, v in objects(url).items() if not k.startswith(f"{INDEX_DIR}/")}
    assert after == before
    build_index(url, rebuild=True)
    assert len(search(url, vector=q, k=3)) == 3


def test_memory_store_index(tiny_world):
    url = "memory://tests/index.zarr"
    embed_to_zarr(tiny_world.scenes["alpha"], url, model="tiny", stride=8)
    assert build_index(url).groups == ["alpha"]
    cell = open_store(url, group="alpha")[:, 3, 4].values.astype(np.float32)
    hits = search(url, vector=cell / np.linalg.norm(cell), k=3)
    assert hits[["group", "row", "col"]].values.tolist()[0] == ["alpha", 3, 4]


def test_s3_store_without_index_a_held_lease_and_wrong_credentials(local_store, s3):
    url = upload(local_store, f"{s3.url}/world.zarr")
    with pytest.raises(IndexNotFoundError, match=rf"geobind index {url}.*--exact"):
        search(url, "a lake", k=3)
    assert len(search(url, "a lake", k=3, exact=True)) == 3
    with _StoreLease(store_location(url)), pytest.raises(StoreLockedError):
        build_index(url)  # another job writes the store
    assert objects(url, f"{INDEX_DIR}/") == {}
    build_index(url)
    wrong = {"key": "wrong", "secret": "wrong"}
    for call in (build_index, search_vectors):
        kw = {"rebuild": True} if call is build_index else {"vectors": np.ones(64), "k": 3}
        with pytest.raises(StoreError) as err:
            call(url, storage_options=wrong, **kw)
        assert "\n" not in str(err.value) and "credentials" in str(err.value)


def test_cli_index_and_search_s3(local_store, s3, tmp_path, capsys):
    url = upload(local_store, f"{s3.url}/cli.zarr")  # AWS_* point at the moto server
    assert cli.main(["search", url, "a lake", "-k", "3"]) == 2
    assert f"geobind index {url}" in capsys.readouterr().err
    assert cli.main(["index", url, "--no-progress"]) == 0
    assert f"{url}/{INDEX_DIR}: flat index of" in capsys.readouterr().out
    out = tmp_path / "hits.geojson"
    assert cli.main(["search", url, "a lake", "-k", "5", "-o", str(out)]) == 0
    assert f"over {url} (index): 5 cells" in capsys.readouterr().out
    assert len(gpd.read_file(out)) == 5
    meta = json.loads(store_location(url).read(f"{INDEX_DIR}/index.json"))
    assert set(meta["groups"]) == {"alpha", "beta"}
