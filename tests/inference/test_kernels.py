"""The kernel behind ``similarity()``: exact against float64 for every dtype and layout."""

from __future__ import annotations

import numpy as np
import pytest
import torch

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


def test_large_grids_split_across_threads_give_the_single_thread_result():
    grid = _grid(5, (770, 512)).astype(np.float16)  # 394 240 cells: 3 parts of over 2**17
    q = _grid(5, (2,), seed=4).T.copy()
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = cosine(grid, q)
        torch.set_num_threads(3)  # the caller and 2 helper threads, whatever the machine has
        three = cosine(grid, q)
    finally:
        torch.set_num_threads(threads)
    np.testing.assert_array_equal(one, three)
    np.testing.assert_allclose(one, _reference(grid, q), atol=1e-5)


def test_query_vectors_of_the_wrong_length_are_refused():
    with pytest.raises(ValueError, match="do not match a 6-band grid"):
        cosine(_grid(6, (3, 3)), np.ones((1, 5), np.float32))
