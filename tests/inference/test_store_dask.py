"""Zarr stores written by dask workers equal local ones, even when a worker dies mid-job."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time

import pytest
from test_store import STRIDE, TILE, tree

from geobind.inference.store import embed_to_zarr

distributed = pytest.importorskip("distributed")


def _model_loads() -> int:
    from geobind.inference.context import _load_cached

    return _load_cached.cache_info().misses


def _slow_writes() -> None:
    """Widen the window between tiles on this worker, so the test can kill it mid-job."""
    from geobind.inference.store import tiles

    write = tiles._write_chunk

    def slow(*args):
        write(*args)
        time.sleep(0.5)

    tiles._write_chunk = slow


@contextlib.contextmanager
def two_workers(*modules: str):
    """A client of 2 worker processes (one thread each) that can run this module's functions
    and those of ``modules`` (workers cannot import the tests: they travel by value)."""
    import cloudpickle

    for name in (__name__, *modules):
        cloudpickle.register_pickle_by_value(sys.modules[name])
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        yield client


@pytest.fixture(scope="module")
def client():
    with two_workers() as client:
        yield client


@pytest.mark.slow
def test_two_workers_write_the_local_store(scene, reference, client, tmp_path):
    root = tmp_path / "d.zarr"
    summary = embed_to_zarr(scene, root, model="tiny", stride=STRIDE, tile=TILE, client=client)
    assert (summary.done, summary.failed) == (9, [])
    assert tree(root) == tree(reference)
    # each worker loaded the model once, however many tiles it ran
    assert set(client.run(_model_loads).values()) == {1}
    rerun = embed_to_zarr(scene, root, model="tiny", stride=STRIDE, tile=TILE, client=client)
    assert (rerun.done, rerun.skipped) == (0, 9)


def embed_killing_a_worker(client, scene, store, ready):
    """Run the job on ``client`` and SIGKILL one of its workers once ``ready()`` (a tile is
    done); returns the job's summary, or its rerun's when dask gave up on a tile."""
    client.run(_slow_writes)
    victim = next(iter(client.run(os.getpid).values()))

    def kill_when_ready() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not ready():
            time.sleep(0.02)
        os.kill(victim, signal.SIGKILL)

    killer = threading.Thread(target=kill_when_ready)
    killer.start()
    summary = embed_to_zarr(scene, store, model="tiny", stride=STRIDE, tile=TILE, client=client)
    killer.join()
    assert victim not in client.run(os.getpid).values()  # the worker did die
    if summary.failed:  # dask gave up on a tile: it is listed, and a rerun finishes the job
        assert all("worker" in f.error.lower() for f in summary.failed)
        summary = embed_to_zarr(scene, store, model="tiny", stride=STRIDE, tile=TILE, client=client)
    return summary


@pytest.mark.slow
def test_a_worker_dying_mid_job_loses_nothing(scene, reference, client, tmp_path):
    root = tmp_path / "k.zarr"
    flags = root / "scene" / "tiles" / "done" / "c"
    summary = embed_killing_a_worker(
        client, scene, root, lambda: any(p.is_file() for p in flags.rglob("*"))
    )
    assert summary.failed == []
    assert tree(root) == tree(reference)
