"""Zarr stores in object storage (a real S3 API on loopback: moto), their lease, resume and dask."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import rasterio
from test_store import STRIDE, TILE, slow_job, tree
from test_store_dask import embed_killing_a_worker

from geobind.errors import GeoBindError, StoreError, StoreLockedError
from geobind.inference.store import embed_to_zarr, open_store, query_store, store_groups
from geobind.inference.store.lease import LEASE_NAME, _StoreLease
from geobind.inference.store.location import store_location

pytest.importorskip("obstore")


def objects(s3, url: str) -> dict[str, bytes]:
    """Every object of a store in the bucket, by key relative to the store (the lease left out)."""
    bucket, prefix = url.removeprefix("s3://").split("/", 1)
    client, out = s3.client(), {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            key = item["Key"][len(prefix) + 1 :]
            if key != LEASE_NAME:
                out[key] = client.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
    return out


def has_lease(s3, url: str) -> bool:
    bucket, prefix = url.removeprefix("s3://").split("/", 1)
    found = s3.client().list_objects_v2(Bucket=bucket, Prefix=f"{prefix}/{LEASE_NAME}")
    return found.get("KeyCount", 0) > 0


def test_s3_store_equals_the_local_one_bitwise(scene, reference, s3, tmp_path):
    url = f"{s3.url}/scenes.zarr"
    summary = embed_to_zarr(scene, url, model="tiny", stride=STRIDE, tile=TILE)
    assert (summary.done, summary.failed, summary.store) == (9, [], url)
    assert summary.store_bytes == sum(len(b) for b in objects(s3, url).values())
    assert objects(s3, url) == tree(reference)  # every object, byte for byte
    assert not has_lease(s3, url)  # released
    assert store_groups(url) == store_groups(reference) == ["scene"]
    grid, local = open_store(url), open_store(reference)
    assert np.array_equal(grid.values, local.values, equal_nan=True)
    assert grid.attrs == local.attrs and grid.rio.crs == local.rio.crs
    assert grid.rio.transform() == local.rio.transform()
    # a finished job reruns without writing
    rerun = embed_to_zarr(scene, url, model="tiny", stride=STRIDE, tile=TILE)
    assert (rerun.done, rerun.skipped) == (0, 9)
    # queries read the S3 store like the local one
    (remote,) = query_store(url, "a busy highway", tmp_path / "s3.tif")
    (here,) = query_store(reference, "a busy highway", tmp_path / "local.tif")
    with rasterio.open(remote) as a, rasterio.open(here) as b:
        assert np.array_equal(a.read(), b.read(), equal_nan=True)
        assert a.transform == b.transform and a.crs == b.crs


def test_cli_embeds_to_and_queries_s3(scene, reference, s3, tmp_path, capsys):
    from geobind.cli import main

    url = f"{s3.url}/cli.zarr"
    args = ["embed", str(scene), "-o", url, "--model", "tiny", "--stride", str(STRIDE)]
    assert main([*args, "--tile", str(TILE), "--no-progress"]) == 0
    assert f"{url}: 9 tiles written" in capsys.readouterr().out
    assert objects(s3, url) == tree(reference)
    query = ["query", url, "busy highway", "-o", str(tmp_path / "m.tif"), "--no-progress"]
    assert main(query) == 0 and (tmp_path / "m.tif").exists()


def test_memory_and_file_urls(scene, reference, tmp_path):
    embed_to_zarr(scene, "memory://tests/s.zarr", model="tiny", stride=STRIDE, tile=TILE)
    stored = open_store("memory://tests/s.zarr").values
    assert np.array_equal(stored, open_store(reference).values, equal_nan=True)
    url = (tmp_path / "f.zarr").as_uri()
    embed_to_zarr(scene, url, model="tiny", stride=STRIDE, tile=TILE)
    assert tree(tmp_path / "f.zarr") == tree(reference)  # a file:// URL is the local folder


@pytest.mark.slow
def test_kill_9_mid_job_on_s3_then_rerun_is_bitwise_equal(scene, reference, s3):
    url = f"{s3.url}/killed.zarr"
    proc = slow_job(scene, url)  # inherits the AWS_* variables
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the job ended before it could be killed"
        if sum("tiles/done/c" in key for key in objects(s3, url)) >= 2:
            break
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert has_lease(s3, url)  # left behind by the dead writer
    assert open_store(url).shape == (64, 11, 9)  # an interrupted store still opens

    summary = embed_to_zarr(scene, url, model="tiny", stride=STRIDE, tile=TILE)  # takes it over
    assert 0 < summary.skipped < 9 and summary.done == 9 - summary.skipped
    assert objects(s3, url) == tree(reference)
    assert not has_lease(s3, url)


def test_second_writer_is_refused_and_dead_or_expired_leases_taken_over(scene, reference, s3):
    url = f"{s3.url}/s.zarr"
    embed_to_zarr(scene, url, model="tiny", stride=STRIDE, tile=TILE)
    before = objects(s3, url)
    location = store_location(url)
    with _StoreLease(location):  # a live writer (this process)
        with pytest.raises(StoreLockedError, match="being written by another job") as err:
            embed_to_zarr(scene, url, model="tiny", stride=STRIDE, tile=TILE, overwrite=True)
        message = str(err.value)
        assert "\n" not in message and f"pid {os.getpid()}" in message and "until" in message
        assert isinstance(err.value, GeoBindError)
        with pytest.raises(StoreLockedError):  # a second lease too
            _StoreLease(location).acquire()
    assert objects(s3, url) == before and not has_lease(s3, url)  # refused: nothing changed

    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        text=True,
        capture_output=True,
        check=True,
    )
    left = {"pid": int(dead.stdout), "host": socket.gethostname(), "start": "0"}
    left["expires"] = time.time() + 600  # not expired: its holder is known dead
    location.put(LEASE_NAME, json.dumps(left).encode())
    summary = embed_to_zarr(scene, url, model="tiny", stride=STRIDE, tile=TILE, overwrite=True)
    assert summary.done == 9 and not has_lease(s3, url)
    assert objects(s3, url) == tree(reference)

    elsewhere = {"pid": 1, "host": "another-host", "expires": time.time() - 1}  # expired
    location.put(LEASE_NAME, json.dumps(elsewhere).encode())
    # taken over, and then held: a second taker is refused
    with _StoreLease(location) as lease, pytest.raises(StoreLockedError):
        _StoreLease(location).acquire()
    assert lease.lost is None and not has_lease(s3, url)


def test_a_lease_taken_over_stops_its_writer(s3):
    location = store_location(f"{s3.url}/t.zarr")
    lease = _StoreLease(location, seconds=0.3).acquire()
    try:
        info = json.loads(location.read(LEASE_NAME))
        info["owner"] = "someone-else"
        location.put(LEASE_NAME, json.dumps(info).encode())  # another job's takeover
        deadline = time.monotonic() + 10
        while lease.lost is None and time.monotonic() < deadline:
            time.sleep(0.05)
        with pytest.raises(StoreLockedError, match="lease was lost"):
            lease.check()
    finally:
        lease.release()
    assert json.loads(location.read(LEASE_NAME))["owner"] == "someone-else"  # not deleted


def test_wrong_credentials_are_one_line_and_write_nothing(scene, s3, monkeypatch):
    url = f"{s3.url}/denied.zarr"
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    with pytest.raises(StoreError) as err:
        embed_to_zarr(scene, url, model="tiny", stride=STRIDE, tile=TILE)
    assert "\n" not in str(err.value) and "credentials" in str(err.value)
    with pytest.raises(StoreError):
        store_groups(url, storage_options={"key": "wrong", "secret": "wrong"})
    monkeypatch.undo()
    assert objects(s3, url) == {} and not has_lease(s3, url)


def test_stores_without_conditional_writes_are_refused(scene, tmp_path):
    pytest.importorskip("fsspec")
    with pytest.raises(StoreError, match="cannot write conditionally"):
        embed_to_zarr(scene, "ftp://127.0.0.1:9/s.zarr", model="tiny", stride=STRIDE, tile=TILE)


@pytest.fixture
def client(s3):
    """Two dask worker processes started after ``s3`` set AWS_* (so they, and workers their
    nannies restart, inherit them)."""
    pytest.importorskip("distributed")
    from test_store_dask import two_workers

    with two_workers(__name__, "test_store_dask") as client:
        yield client


@pytest.mark.slow
def test_dask_workers_write_s3_and_a_killed_worker_loses_nothing(scene, reference, s3, client):
    url = f"{s3.url}/d.zarr"
    summary = embed_to_zarr(scene, url, model="tiny", stride=STRIDE, tile=TILE, client=client)
    assert (summary.done, summary.failed) == (9, [])
    assert objects(s3, url) == tree(reference)

    url = f"{s3.url}/k.zarr"
    summary = embed_killing_a_worker(
        client, scene, url, lambda: any("tiles/done/c" in key for key in objects(s3, url))
    )
    assert summary.failed == []
    assert objects(s3, url) == tree(reference)


@pytest.mark.slow
def test_http_cog_to_s3_store_on_dask_workers_with_a_shipped_model_equals_all_local(
    scene, s3, client, http_server, tmp_path
):
    """The whole cloud path: a COG over HTTP, read by 2 dask workers that get the model as its
    files (built in memory, so it has no folder anyone could share), written to S3, queried into
    a local COG: the same embeddings and map as the all-local run, bit for bit."""
    import shutil

    import geobind
    from geobind.models import GeoBind

    model = GeoBind.from_config(geobind.load("tiny").config).eval()  # in memory, never saved
    assert model.source is None
    local = tmp_path / "local.zarr"
    embed_to_zarr(scene, local, model, stride=STRIDE, tile=TILE, client=False)
    served = tmp_path / "served.tif"
    shutil.copy(scene, served)
    url = f"{s3.url}/cloud.zarr"
    summary = embed_to_zarr(
        http_server.url(served), url, model, stride=STRIDE, tile=TILE, client=client
    )
    assert (summary.done, summary.failed) == (9, [])
    remote, here = open_store(url), open_store(local)
    assert np.array_equal(remote.values, here.values, equal_nan=True)
    (a,) = query_store(url, "a busy highway", tmp_path / "cloud.tif", model=model)
    (b,) = query_store(local, "a busy highway", tmp_path / "local.tif", model=model)
    with rasterio.open(a) as x, rasterio.open(b) as y:
        assert np.array_equal(x.read(), y.read(), equal_nan=True)
        assert x.transform == y.transform and x.crs == y.crs
