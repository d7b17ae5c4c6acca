"""Evaluation metrics: hand-computed cases, brute-force equivalence, ties, baselines, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from geobind.errors import InputDataError
from geobind.training.metrics import (
    auroc,
    random_embeddings,
    ranks,
    retrieval_metrics,
    zero_shot_classification,
)

FAST = settings(max_examples=40, deadline=None)


def _brute_ranks(q: np.ndarray, g: np.ndarray, matches: np.ndarray) -> np.ndarray:
    out = []
    for i in range(q.shape[0]):
        scores = [
            sum(float(a) * float(b) for a, b in zip(q[i], g[j], strict=True)) for j in range(len(g))
        ]
        true = scores[matches[i]]
        out.append(sum(1 for s in scores if s >= true))
    return np.array(out)


def _brute_auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    pos = [s for s, y in zip(scores, labels, strict=True) if y and not np.isnan(s)]
    neg = [s for s, y in zip(scores, labels, strict=True) if not y and not np.isnan(s)]
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


# --- retrieval: hand-computed cases -------------------------------------------------------------


def test_perfect_retrieval():
    x = np.eye(5)
    assert ranks(x, x).tolist() == [1] * 5
    m = retrieval_metrics(x, x)
    assert m == {
        "R@1": 1.0,
        "R@5": 1.0,
        "R@10": 1.0,
        "R@100": 1.0,
        "median_rank": 1.0,
        "mean_rank": 1.0,
        "gallery_size": 5,
        "queries": 5,
    }


def test_reversed_order():
    q = np.ones((4, 1))
    g = np.array([[1.0], [2.0], [3.0], [4.0]])  # every query prefers g[3], then g[2], ...
    assert ranks(q, g).tolist() == [4, 3, 2, 1]
    m = retrieval_metrics(q, g, ks=(1, 2, 3, 4))
    assert [m[f"R@{k}"] for k in (1, 2, 3, 4)] == [0.25, 0.5, 0.75, 1.0]
    assert m["median_rank"] == 2.5 and m["mean_rank"] == 2.5


def test_ties_count_against_the_query():
    q = np.array([[1.0, 0.0]])
    g = np.array([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    # the true match g[0] ties with g[1] and g[2]: both rank ahead of it, whatever their index
    assert ranks(q, g, matches=[0]).tolist() == [3]
    assert ranks(q, g, matches=[2]).tolist() == [3]
    m = retrieval_metrics(q, g, matches=[0], ks=(1, 2, 3))
    assert (m["R@1"], m["R@2"], m["R@3"]) == (0.0, 0.0, 1.0)
    # a constant encoder gets the worst rank, not the best
    const = np.ones((4, 3))
    assert ranks(const, const).tolist() == [4, 4, 4, 4]


def test_r_at_k_uses_rank_le_k_not_lt():
    q = np.ones((4, 1))
    g = np.array([[1.0], [2.0], [3.0], [4.0]])  # ranks 4, 3, 2, 1
    m = retrieval_metrics(q, g, ks=(1,))
    assert m["R@1"] == 0.25  # `rank < 1` would give 0.0


def test_k_beyond_gallery_is_one():
    q = random_embeddings(6, 4, seed=3)
    g = random_embeddings(7, 4, seed=4)
    m = retrieval_metrics(q, g, ks=(7, 8, 1000))
    assert m["R@7"] == m["R@8"] == m["R@1000"] == 1.0
    assert m["gallery_size"] == 7 and m["queries"] == 6


def test_shared_matches_and_larger_gallery():
    q = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]])
    g = np.array([[0.0, 1.0], [1.0, 0.0], [0.5, 0.5]])
    assert ranks(q, g, matches=[1, 1, 0]).tolist() == [1, 1, 1]
    assert ranks(q, g, matches=[2, 0, 2]).tolist() == [2, 3, 2]


# --- retrieval: brute force, chunking, input types ----------------------------------------------


@st.composite
def _retrieval_case(draw):
    n = draw(st.integers(1, 7))
    m = draw(st.integers(1, 9))
    d = draw(st.integers(1, 4))
    # small integers make exact ties common and dot products exact in any summation order
    values = st.integers(-2, 2)
    q = np.array(draw(st.lists(values, min_size=n * d, max_size=n * d)), float).reshape(n, d)
    g = np.array(draw(st.lists(values, min_size=m * d, max_size=m * d)), float).reshape(m, d)
    matches = np.array(draw(st.lists(st.integers(0, m - 1), min_size=n, max_size=n)))
    batch_size = draw(st.integers(1, n + 1))
    return q, g, matches, batch_size


@FAST
@given(_retrieval_case(), st.sampled_from([np.float32, np.float64]))
def test_ranks_equal_brute_force(case, dtype):
    q, g, matches, batch_size = case
    expected = _brute_ranks(q, g, matches)
    got = ranks(q.astype(dtype), g.astype(dtype), matches=matches, batch_size=batch_size)
    assert got.dtype == np.int64
    np.testing.assert_array_equal(got, expected)
    assert ((got >= 1) & (got <= g.shape[0])).all()


def test_chunked_equals_unchunked():
    rng = np.random.default_rng(0)
    q = rng.standard_normal((300, 16))
    g = rng.standard_normal((400, 16))
    matches = rng.integers(0, 400, 300)
    whole = ranks(q, g, matches=matches, batch_size=300)
    for batch_size in (1, 7, 64, 1000, None):
        np.testing.assert_array_equal(ranks(q, g, matches=matches, batch_size=batch_size), whole)


def test_default_blocks_bound_memory(monkeypatch):
    import geobind.training.metrics as metrics

    monkeypatch.setattr(metrics, "_BLOCK_BYTES", 8 * 50 * 3)  # three query rows per block
    q = random_embeddings(20, 8, seed=1).astype(np.float64)
    g = random_embeddings(50, 8, seed=2).astype(np.float64)
    np.testing.assert_array_equal(ranks(q, g), ranks(q, g, batch_size=20))


def test_torch_inputs_match_numpy():
    q = random_embeddings(30, 8, seed=5)
    g = random_embeddings(40, 8, seed=6)
    matches = np.arange(30) + 5
    expected = ranks(q, g, matches=matches)
    same = ranks(torch.from_numpy(q), torch.from_numpy(g), matches=torch.from_numpy(matches))
    np.testing.assert_array_equal(same, expected)
    got = ranks(
        torch.from_numpy(q).requires_grad_(),
        torch.from_numpy(g).to(torch.float16),
        matches=torch.from_numpy(matches),
    )
    assert got.shape == expected.shape and got.dtype == np.int64
    assert (
        retrieval_metrics(torch.from_numpy(q), torch.from_numpy(g), matches=matches)["queries"]
        == 30
    )


def test_random_baseline_recall_at_10():
    n = 1000
    m = retrieval_metrics(random_embeddings(n, 64, seed=0), random_embeddings(n, 64, seed=1))
    # each true rank is uniform on 1..n, so R@10 ~ Binomial(n, 10/n) / n
    p = 10 / n
    assert abs(m["R@10"] - p) < 4 * np.sqrt(p * (1 - p) / n)
    assert abs(m["median_rank"] - n / 2) < 0.1 * n


@pytest.mark.parametrize("random_queries", [True, False])
def test_chance_baseline_averages_draws(random_queries):
    """evaluate()'s random baseline: the mean of RANDOM_DRAWS draws, so its R@10 sits within
    ~0.002 (one sd) of k/n where one draw of 234 items moves by ~0.013."""
    from geobind.training.evaluate import RANDOM_DRAWS, _chance

    fixed = torch.from_numpy(random_embeddings(234, 16, seed=5))
    m = _chance(fixed, random_queries=random_queries, seed=2)
    assert m["draws"] == RANDOM_DRAWS > 1 and m["gallery_size"] == m["queries"] == 234
    assert isinstance(m["gallery_size"], int)
    assert abs(m["R@10"] - 10 / 234) < 0.01 and abs(m["median_rank"] - 117) < 15
    one = retrieval_metrics(random_embeddings(234, 16, seed=2000), fixed)
    assert m["R@10"] != one["R@10"]  # not a single draw


@pytest.mark.parametrize(
    ("queries", "gallery", "kwargs", "message"),
    [
        (np.ones((3, 4)), np.ones((3, 5)), {}, "dim 4 but gallery have dim 5"),
        (np.ones((0, 4)), np.ones((3, 4)), {}, "queries is empty"),
        (np.ones((3, 4)), np.ones((3, 0)), {}, "gallery is empty"),
        (np.ones(4), np.ones((3, 4)), {}, "2-D"),
        (np.ones((3, 4)), np.ones((2, 4)), {}, "at least as many rows"),
        (np.ones((2, 4)), np.ones((3, 4)), {"matches": [0, 3]}, r"\[0, 3\)"),
        (np.ones((2, 4)), np.ones((3, 4)), {"matches": [-1, 0]}, r"\[0, 3\)"),
        (np.ones((2, 4)), np.ones((3, 4)), {"matches": [0]}, r"shape \(2,\)"),
        (np.ones((2, 4)), np.ones((3, 4)), {"matches": [0.0, 1.0]}, "integers"),
        (np.full((2, 4), np.nan), np.ones((3, 4)), {}, "NaN"),
        (np.ones((2, 4)), np.ones((3, 4)), {"batch_size": 0}, "batch_size"),
    ],
)
def test_ranks_bad_input(queries, gallery, kwargs, message):
    with pytest.raises(InputDataError, match=message):
        ranks(queries, gallery, **kwargs)


@pytest.mark.parametrize("ks", [(0,), (1, -5), (2.5,)])
def test_retrieval_bad_ks(ks):
    with pytest.raises(InputDataError, match="positive integer"):
        retrieval_metrics(np.eye(3), np.eye(3), ks=ks)


# --- zero-shot classification -------------------------------------------------------------------


def test_zero_shot_hand_example():
    classes = np.eye(4)  # class 3 never occurs and is never predicted
    predicted = [0, 1, 1, 1, 0, 2]
    labels = [0, 0, 1, 1, 2, 2]
    x = np.eye(4)[predicted] * 0.9 + 0.01
    out = zero_shot_classification(x, classes, labels, class_names=["a", "b", "c", "d"])
    assert out["n"] == 6
    assert out["accuracy"] == pytest.approx(4 / 6)
    assert out["majority_rate"] == pytest.approx(2 / 6)
    assert out["confusion"] == [[1, 1, 0, 0], [0, 2, 0, 0], [1, 0, 1, 0], [0, 0, 0, 0]]
    # a: tp 1 fp 1 fn 1;  b: tp 2 fp 1 fn 0;  c: tp 1 fp 0 fn 1
    f1 = {"a": 0.5, "b": 2 * (2 / 3) * 1 / (2 / 3 + 1), "c": 2 * 1 * 0.5 / (1 + 0.5)}
    assert out["macro_f1"] == pytest.approx((0.5 + 0.8 + 2 / 3) / 3)
    assert out["macro_f1"] == pytest.approx(sum(f1.values()) / 3)
    per = out["per_class"]
    assert per["a"] == pytest.approx({"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2})
    assert per["b"] == pytest.approx({"precision": 2 / 3, "recall": 1.0, "f1": 0.8, "support": 2})
    assert per["c"] == pytest.approx({"precision": 1.0, "recall": 0.5, "f1": 2 / 3, "support": 2})
    assert per["d"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}


def test_zero_shot_predicted_but_unlabelled_class_counts_as_zero():
    classes = np.eye(3)
    x = np.eye(3)[[0, 0, 2]]  # class 2 is predicted once but never the label; class 1 is neither
    out = zero_shot_classification(torch.from_numpy(x), torch.from_numpy(classes), [0, 0, 0])
    assert set(out["per_class"]) == {"0", "1", "2"}
    assert out["per_class"]["2"]["f1"] == 0.0
    # class 0: precision 1, recall 2/3 -> F1 0.8; class 2: F1 0 (undefined precision -> 0)
    assert out["macro_f1"] == pytest.approx((0.8 + 0.0) / 2)
    assert out["majority_rate"] == 1.0 and out["accuracy"] == pytest.approx(2 / 3)


@pytest.mark.parametrize(
    ("labels", "kwargs", "message"),
    [
        ([0, 2], {}, r"\[0, 2\)"),
        ([0], {}, r"shape \(2,\)"),
        ([0, 1], {"class_names": ["a"]}, "1 names"),
        ([0, 1], {"class_names": ["a", "a"]}, "distinct"),
    ],
)
def test_zero_shot_bad_input(labels, kwargs, message):
    with pytest.raises(InputDataError, match=message):
        zero_shot_classification(np.eye(2), np.eye(2), labels, **kwargs)


# --- AUROC --------------------------------------------------------------------------------------


@FAST
@given(
    st.lists(
        st.tuples(st.one_of(st.integers(-3, 3).map(float), st.just(float("nan"))), st.booleans()),
        min_size=2,
        max_size=30,
    )
)
def test_auroc_equals_pairwise_count(pairs):
    scores = np.array([s for s, _ in pairs])
    labels = np.array([y for _, y in pairs])
    kept = labels[~np.isnan(scores)]
    if kept.all() or not kept.any():
        with pytest.raises(InputDataError, match="both classes"):
            auroc(scores, labels)
    else:
        assert auroc(scores, labels) == pytest.approx(_brute_auroc(scores, labels))


def test_auroc_hand_cases():
    assert auroc([0.1, 0.2, 0.8, 0.9], [False, False, True, True]) == 1.0
    assert auroc([0.1, 0.2, 0.8, 0.9], [True, True, False, False]) == 0.0
    assert auroc([1.0, 1.0, 1.0, 1.0], [True, False, True, False]) == 0.5
    assert auroc([0.1, np.nan, 0.9], [0, 1, 1]) == 1.0
    assert auroc(torch.tensor([0.3, 0.7]), torch.tensor([False, True])) == 1.0


def test_auroc_random_is_half():
    rng = np.random.default_rng(0)
    n = 20_000
    value = auroc(rng.standard_normal(n), rng.random(n) < 0.3)
    # standard error of AUROC under H0 is sqrt((n_pos + n_neg + 1) / (12 n_pos n_neg)) ~ 0.0045
    assert abs(value - 0.5) < 0.02


@pytest.mark.parametrize(
    ("scores", "labels", "message"),
    [
        ([0.1, 0.2], [True, True], "both classes"),
        ([0.1, np.nan], [True, False], "both classes"),
        ([], [], "both classes"),
        ([0.1, 0.2], [True], "equal length"),
        ([0.1, 0.2], [0, 2], "booleans"),
        ([0.1, 0.2], [0.0, 1.0], "booleans"),
    ],
)
def test_auroc_bad_input(scores, labels, message):
    with pytest.raises(InputDataError, match=message):
        auroc(np.array(scores, float), np.array(labels))


# --- random baseline ----------------------------------------------------------------------------


def test_random_embeddings_are_unit_and_seeded():
    x = random_embeddings(50, 12, seed=7)
    assert x.shape == (50, 12) and x.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, rtol=1e-6)
    np.testing.assert_array_equal(x, random_embeddings(50, 12, seed=7))
    assert not np.array_equal(x, random_embeddings(50, 12, seed=8))


@pytest.mark.parametrize(("n", "dim"), [(0, 4), (3, 0), (-1, 4), (2.5, 4)])
def test_random_embeddings_bad_input(n, dim):
    with pytest.raises(InputDataError, match="positive integer"):
        random_embeddings(n, dim)
