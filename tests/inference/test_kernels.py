"""The kernel behind ``similarity()``: exact against float64 for every dtype and layout."""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from geobind.inference.kernels import dot_rows
from geobind.inference.query import cosine


def _grid(dim: int, shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    g = np.random.default_rng(seed).standard_normal((dim, *shape), dtype=np.float32)
    return g / np.linalg.norm(g, axis=0, keepdims=True)


def _reference(grid: np.ndarray, q: np.ndarray) -> np.ndarray:
    flat = grid.reshape(grid.shape[0], -1).astype(np.float64)
    return (q.astype(np.float64) @ flat).reshape((len(q), *grid.shape[1:]))


@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize("dim", [1, 6, 8, 131])  # under, on and off the 4-row blocks
@pytest.mark.parametrize("n_queries", [1, 3])  # the fused path and the widen-once path
@pytest.mark.parametrize("chunk", [5, 4096])  # chunks with a remainder, and one chunk
def test_cosine_matches_float64_for_every_dtype_dim_and_chunk(dtype, dim, n_queries, chunk):
    grid = _grid(dim, (9, 13)).astype(dtype)
    q = _grid(dim, (n_queries,), seed=1).T.copy()
    got = cosine(grid, q, chunk=chunk)
    assert got.shape == (n_queries, 9, 13) and got.dtype == np.float32
    # float16 grids are scored exactly as their float16 values: only float32 accumulation differs
    np.testing.assert_allclose(got, _reference(grid, q), rtol=0, atol=1e-5)


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_nan_and_inf_cells_score_nan_and_inf_and_leave_the_others_alone(dtype):
    grid = _grid(8, (4, 5)).astype(dtype)
    grid[:, 1, 2] = np.nan
    grid[3, 2, 4] = np.nan  # one band missing is enough
    grid[:, 0, 0] = 0
    grid[0, 0, 0] = np.inf
    q = np.full((2, 8), 8**-0.5, np.float32)
    got = cosine(grid, q)
    nan = np.zeros((4, 5), bool)
    nan[1, 2] = nan[2, 4] = True
    assert (np.isnan(got) == nan).all()
    assert (got[:, 0, 0] == np.inf).all()
    ok = ~nan
    ok[0, 0] = False
    np.testing.assert_allclose(got[:, ok], _reference(grid, q)[:, ok], atol=1e-5)


def test_any_layout_and_byte_order_is_read_right():
    grid = _grid(6, (7, 11))
    q = _grid(6, (2,), seed=3).T.copy()
    want = _reference(grid, q)
    transposed = np.ascontiguousarray(grid.transpose(0, 2, 1)).transpose(0, 2, 1)  # not C order
    for variant in (
        transposed,
        grid.astype(np.float64),
        grid.astype(">f4"),
        grid.astype(">f2"),
        grid[:, ::-1].copy()[:, ::-1],  # negative strides
    ):
        atol = 1e-3 if variant.dtype.itemsize == 2 else 1e-5
        np.testing.assert_allclose(cosine(variant, q), want, atol=atol)
    np.testing.assert_allclose(cosine(grid, q[0][None]), want[:1], atol=1e-5)


@pytest.mark.parametrize("n_queries", [1, 2])
def test_large_grids_split_across_threads_give_the_single_thread_result(n_queries):
    grid = _grid(5, (770, 512)).astype(np.float16)  # 394 240 cells: 3 parts of over 2**17
    q = _grid(5, (n_queries,), seed=4).T.copy()
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = cosine(grid, q)
        torch.set_num_threads(3)  # the caller and 2 helper threads, whatever the machine has
        three = cosine(grid, q)
    finally:
        torch.set_num_threads(threads)
    np.testing.assert_array_equal(one, three)
    np.testing.assert_array_equal(cosine(grid, q, threads=3), three)
    np.testing.assert_allclose(one, _reference(grid, q), atol=1e-5)


def test_every_float16_value_is_widened_exactly():  # F16C's instruction on most CPUs
    bits = np.arange(2**16, dtype=np.uint16)  # every pattern: zeros, subnormals, inf, NaN
    out = np.empty((1, bits.size), np.float32)
    dot_rows(bits[None], np.ones((1, 1), np.float32), out, 0, bits.size, 4096)
    want = bits.view(np.float16).astype(np.float32)
    np.testing.assert_array_equal(np.isnan(out[0]), np.isnan(want))
    ok = ~np.isnan(want)
    np.testing.assert_array_equal(out[0, ok], want[ok])  # (-0.0 sums to +0.0, as in any GEMV)


def test_empty_grids_and_bad_chunks():
    assert cosine(np.zeros((4, 0, 3), np.float16), np.ones((2, 4), np.float32)).shape == (2, 0, 3)
    with pytest.raises(ValueError, match="chunk must be at least 1"):
        cosine(_grid(4, (2, 2)), np.ones((1, 4), np.float32), chunk=0)


def _score_in_child(grid: np.ndarray, q: np.ndarray) -> np.ndarray:
    return cosine(grid, q, threads=2)


@pytest.mark.skipif(sys.platform != "linux", reason="fork start method")
def test_a_forked_child_scores_with_its_own_helper_threads():
    grid = _grid(3, (600, 512)).astype(np.float16)  # 307 200 cells: split when 2+ threads
    q = _grid(3, (1,), seed=5).T.copy()
    want = cosine(grid, q, threads=2)  # the parent now holds a helper pool
    with multiprocessing.get_context("fork").Pool(1) as pool:
        got = pool.apply_async(_score_in_child, (grid, q)).get(timeout=60)
    np.testing.assert_array_equal(got, want)


def _python(code: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=300,
    )


CHECK_FLOAT16 = """
    import numpy as np
    from geobind.inference.query import cosine

    bits = np.arange(2**16, dtype=np.uint16)  # every float16 value, scaled by 2
    out = cosine(bits.view(np.float16)[None], np.array([[2.0]], np.float32))[0]
    want = 2 * bits.view(np.float16).astype(np.float32)
    assert np.array_equal(out, want, equal_nan=True), np.flatnonzero(out != want)[:10]
    print("ok")
"""


@pytest.mark.slow
def test_float16_grids_score_on_cpus_without_f16c(tmp_path):
    # the integer widening: numba's JIT cannot link `fpext half`'s library call there
    done = _python(CHECK_FLOAT16, NUMBA_CPU_NAME="generic", NUMBA_CACHE_DIR=str(tmp_path))
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]


@pytest.mark.slow
def test_kernels_compile_where_no_cache_folder_is_writable():
    # numba raises when no cache locator applies (read-only install, no home): compile instead
    code = "import numba.core.caching as c; c.CacheImpl._locator_classes = []\n" + textwrap.dedent(
        CHECK_FLOAT16
    )
    done = _python(code)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]


def test_query_vectors_of_the_wrong_length_are_refused():
    with pytest.raises(ValueError, match="do not match a 6-band grid"):
        cosine(_grid(6, (3, 3)), np.ones((1, 5), np.float32))
