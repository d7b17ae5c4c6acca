"""Evaluation metrics, exactly as the design states them: retrieval ranks and R@k, zero-shot
classification, AUROC, and a random-embedding baseline to print beside every number.

Ranks are 1-based and ties are broken *against* the query: every other gallery item scoring at
least as high as the true match ranks ahead of it, so a constant encoder gets the worst rank, not
the best. R@k is the share of queries with ``rank <= k`` (not ``rank < k``, which is R@(k-1)).

Scores are dot products. Pass L2-normalised rows (as every geobind encoder returns) to get cosine
similarity. Inputs may be numpy arrays or torch tensors (on any device); the work is done in numpy,
on the CPU, in query blocks so a 20 000 × 20 000 evaluation never holds the full score matrix.

Example:
    >>> import numpy as np
    >>> q = random_embeddings(100, 16, seed=1)
    >>> m = retrieval_metrics(q, q, ks=(1, 10))
    >>> m["R@1"], m["median_rank"], m["gallery_size"]
    (1.0, 1.0, 100)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from geobind.errors import InputDataError

__all__ = [
    "auroc",
    "random_embeddings",
    "ranks",
    "retrieval_metrics",
    "zero_shot_classification",
]

# Largest (queries × gallery) score block held at once: 20k × 20k float64 takes ~48 blocks.
_BLOCK_BYTES = 64 * 2**20


def _to_numpy(x: Any, name: str) -> np.ndarray:
    """Turn a numpy array, torch tensor (any device, any grad state) or nested list into numpy."""
    if hasattr(x, "detach") and hasattr(x, "cpu"):
        x = x.detach().cpu()
        # numpy has no bfloat16; widen half types so .numpy() works and scores keep precision
        if x.is_floating_point() and x.element_size() < 4:
            x = x.float()
        x = x.numpy()
    try:
        return np.asarray(x)
    except (TypeError, ValueError) as err:
        raise InputDataError(f"{name} must be an array or tensor; got {type(x).__name__}") from err


def _embeddings(x: Any, name: str) -> np.ndarray:
    """Validate a non-empty, finite (rows, dim) numeric matrix."""
    arr = _to_numpy(x, name)
    if arr.ndim != 2:
        raise InputDataError(f"{name} must be a 2-D (rows, dim) array; got shape {arr.shape}")
    if arr.dtype.kind not in "iuf":
        raise InputDataError(f"{name} must hold real numbers; got dtype {arr.dtype}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise InputDataError(
            f"{name} is empty (shape {arr.shape}); pass at least one row and column"
        )
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise InputDataError(
            f"{name} contains NaN or infinite values; drop those rows (e.g. nodata chips) first"
        )
    return arr


def _pair(a: Any, b: Any, name_a: str, name_b: str) -> tuple[np.ndarray, np.ndarray]:
    """Validate two embedding matrices of the same width and cast them to a common float dtype."""
    a_arr, b_arr = _embeddings(a, name_a), _embeddings(b, name_b)
    if a_arr.shape[1] != b_arr.shape[1]:
        raise InputDataError(
            f"{name_a} have dim {a_arr.shape[1]} but {name_b} have dim {b_arr.shape[1]}; "
            "both must come from the same embedding space"
        )
    # float32 stays float32 (encoder outputs); float64 and integers compute in float64
    dtype = np.result_type(a_arr.dtype, b_arr.dtype, np.float32)
    return a_arr.astype(dtype, copy=False), b_arr.astype(dtype, copy=False)


def _index_vector(x: Any, name: str, n: int, upper: int, what: str) -> np.ndarray:
    """Validate an (n,) integer vector with values in [0, upper)."""
    arr = _to_numpy(x, name)
    if arr.shape != (n,):
        raise InputDataError(f"{name} must have shape ({n},), one per row; got shape {arr.shape}")
    if arr.dtype.kind not in "iu":
        raise InputDataError(
            f"{name} must be integers (indices into {what}); got dtype {arr.dtype}"
        )
    if n and (arr.min() < 0 or arr.max() >= upper):
        bad = arr[(arr < 0) | (arr >= upper)]
        raise InputDataError(
            f"{name} must lie in [0, {upper}) to index {what}; got {bad[:5].tolist()} "
            f"({bad.size} out of range)"
        )
    return arr.astype(np.int64, copy=False)


def ranks(
    queries: Any, gallery: Any, *, matches: Any = None, batch_size: int | None = None
) -> np.ndarray:
    """1-based rank of each query's true match in the gallery, ties counted against the query.

    The score of gallery item ``j`` for query ``i`` is the dot product ``queries[i] @ gallery[j]``;
    pass L2-normalised rows for cosine similarity. The rank of the true match is the number of
    gallery items (itself included) whose score is ``>=`` its score, so ties rank ahead of it.

    Args:
        queries: ``(N, D)`` query embeddings (numpy array or torch tensor).
        gallery: ``(M, D)`` gallery embeddings in the same space.
        matches: ``(N,)`` integer index into ``gallery`` of each query's true match. Several
            queries may share a match. Defaults to ``arange(N)``, which needs ``M >= N``.
        batch_size: queries scored per block. Defaults to as many as fit a 64 MiB score block,
            so large galleries never allocate the full ``N × M`` matrix.

    Returns:
        ``(N,)`` int64 ranks, 1 = best, ``M`` = worst.

    Raises:
        InputDataError: if the inputs are not non-empty finite 2-D arrays of equal width, if
            ``matches`` has the wrong shape or indexes outside the gallery, or if ``batch_size``
            is not a positive integer.

    Example:
        >>> import numpy as np
        >>> q = np.array([[1.0, 0.0], [0.0, 1.0]])
        >>> g = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
        >>> ranks(q, g, matches=[0, 2])  # g[1] ties with query 0's match and ranks ahead of it
        array([2, 1])
    """
    q, g = _pair(queries, gallery, "queries", "gallery")
    n, m = q.shape[0], g.shape[0]
    if matches is None:
        if m < n:
            raise InputDataError(
                f"without matches=, query i is matched to gallery item i, so the gallery needs at "
                f"least as many rows as the queries; got {n} queries and {m} gallery items"
            )
        match = np.arange(n, dtype=np.int64)
    else:
        match = _index_vector(matches, "matches", n, m, f"the {m}-item gallery")
    if batch_size is None:
        batch_size = max(1, _BLOCK_BYTES // (m * q.dtype.itemsize))
    elif isinstance(batch_size, bool) or not isinstance(batch_size, int | np.integer):
        raise InputDataError(f"batch_size must be a positive integer; got {batch_size!r}")
    if batch_size < 1:
        raise InputDataError(f"batch_size must be a positive integer; got {batch_size!r}")

    out = np.empty(n, dtype=np.int64)
    g_t = np.ascontiguousarray(g.T)
    for start in range(0, n, batch_size):
        stop = min(start + batch_size, n)
        scores = q[start:stop] @ g_t
        # read the true score from the same block, so it compares bit-for-bit with its row
        true = scores[np.arange(stop - start), match[start:stop]]
        out[start:stop] = np.count_nonzero(scores >= true[:, None], axis=1)
    return out


def retrieval_metrics(
    queries: Any,
    gallery: Any,
    *,
    matches: Any = None,
    ks: Sequence[int] = (1, 5, 10, 100),
    batch_size: int | None = None,
) -> dict[str, float | int]:
    """Recall at k, median and mean rank of each query's true match, with the gallery size.

    ``R@k`` is the share of queries whose true match has rank ``<= k`` (see :func:`ranks`; ties
    count against the query). A ``k`` at or beyond the gallery size gives 1.0. Chance level is
    ``k / gallery_size``, which is why the gallery size is reported beside it.

    Args:
        queries: ``(N, D)`` query embeddings.
        gallery: ``(M, D)`` gallery embeddings.
        matches: ``(N,)`` index of each query's true match; defaults to ``arange(N)``.
        ks: cut-offs to report, positive integers.
        batch_size: queries scored per block (see :func:`ranks`).

    Returns:
        ``{"R@1": float, ..., "median_rank": float, "mean_rank": float, "gallery_size": M,
        "queries": N}`` with one ``R@k`` entry per ``k``, in the order given.

    Raises:
        InputDataError: on invalid embeddings or matches (see :func:`ranks`) or a ``k`` that is
            not a positive integer.

    Example:
        >>> import numpy as np
        >>> q = np.ones((4, 1))
        >>> g = np.array([[1.0], [2.0], [3.0], [4.0]])  # query i's match g[i] ranks 4 - i
        >>> retrieval_metrics(q, g, ks=(1, 4))
        {'R@1': 0.25, 'R@4': 1.0, 'median_rank': 2.5, 'mean_rank': 2.5,
         'gallery_size': 4, 'queries': 4}
    """
    ks = list(ks)
    for k in ks:
        if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
            raise InputDataError(f"every k in ks must be a positive integer; got {k!r}")
    r = ranks(queries, gallery, matches=matches, batch_size=batch_size)
    gallery_size = int(_to_numpy(gallery, "gallery").shape[0])
    result: dict[str, float | int] = {f"R@{int(k)}": float(np.mean(r <= k)) for k in ks}
    result["median_rank"] = float(np.median(r))
    result["mean_rank"] = float(np.mean(r))
    result["gallery_size"] = gallery_size
    result["queries"] = int(r.size)
    return result


def zero_shot_classification(
    embeddings: Any,
    class_embeddings: Any,
    labels: Any,
    *,
    class_names: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Classify each embedding as its highest-scoring class and score the result.

    The prediction is ``argmax_c embeddings[i] @ class_embeddings[c]`` (ties go to the lowest class
    index). Per-class precision, recall and F1 are 0.0 where undefined (no predictions, no support).
    Macro-F1 is the mean F1 over the classes present in ``labels`` or in the predictions, so classes
    that never occur and are never predicted do not dilute it.

    Args:
        embeddings: ``(N, D)`` embeddings to classify, e.g. satellite chips.
        class_embeddings: ``(C, D)`` one embedding per class, e.g. encoded text prompts.
        labels: ``(N,)`` true class of each embedding, integers in ``[0, C)``.
        class_names: ``C`` distinct names used as keys of ``per_class``; defaults to
            ``"0" .. "C-1"``.

    Returns:
        ``{"accuracy", "macro_f1", "majority_rate", "n", "per_class", "confusion"}``.
        ``majority_rate`` is the share of the most common label (the accuracy of always guessing
        it), ``per_class`` maps each name to ``{"precision", "recall", "f1", "support"}``, and
        ``confusion[t][p]`` counts items of true class ``t`` predicted as ``p``.

    Raises:
        InputDataError: on invalid embeddings, labels outside ``[0, C)`` or of the wrong shape, or
            ``class_names`` of the wrong length or with duplicates.

    Example:
        >>> import numpy as np
        >>> classes = np.eye(2)
        >>> x = np.array([[0.9, 0.1], [0.2, 0.8], [0.7, 0.3]])
        >>> out = zero_shot_classification(x, classes, [0, 1, 1], class_names=["water", "forest"])
        >>> round(out["accuracy"], 3), out["confusion"], out["per_class"]["water"]["precision"]
        (0.667, [[1, 0], [1, 1]], 0.5)
    """
    x, c_emb = _pair(embeddings, class_embeddings, "embeddings", "class_embeddings")
    n, n_classes = x.shape[0], c_emb.shape[0]
    y = _index_vector(labels, "labels", n, n_classes, f"the {n_classes} classes")
    if class_names is None:
        names = [str(c) for c in range(n_classes)]
    else:
        names = [str(name) for name in class_names]
        if len(names) != n_classes:
            raise InputDataError(
                f"class_names has {len(names)} names but class_embeddings has {n_classes} rows"
            )
        if len(set(names)) != n_classes:
            raise InputDataError(f"class_names must be distinct; got {names}")

    pred = np.argmax(x @ c_emb.T, axis=1)
    confusion = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(confusion, (y, pred), 1)
    tp = np.diag(confusion)
    support = confusion.sum(axis=1)
    predicted = confusion.sum(axis=0)

    def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
        return np.divide(num, den, out=np.zeros(num.shape, float), where=den > 0)

    precision = _ratio(tp, predicted)
    recall = _ratio(tp, support)
    # 2·tp / (2·tp + fp + fn) is the harmonic mean of precision and recall, and 0 where either is 0
    f1 = _ratio(2 * tp, support + predicted)
    present = (support + predicted) > 0

    return {
        "accuracy": float(tp.sum() / n),
        "macro_f1": float(f1[present].mean()),
        "majority_rate": float(support.max() / n),
        "n": int(n),
        "per_class": {
            name: {
                "precision": float(precision[c]),
                "recall": float(recall[c]),
                "f1": float(f1[c]),
                "support": int(support[c]),
            }
            for c, name in enumerate(names)
        },
        "confusion": confusion.tolist(),
    }


def auroc(scores: Any, labels: Any) -> float:
    """Area under the ROC curve: the Mann–Whitney probability that a positive outscores a negative.

    A tied positive/negative pair counts one half. Items whose score is NaN are left out.

    Args:
        scores: ``(n,)`` real scores, higher meaning "more likely positive".
        labels: ``(n,)`` booleans (or 0/1 integers), True for positives.

    Returns:
        AUROC in ``[0, 1]``; 0.5 is chance, 1.0 perfect separation.

    Raises:
        InputDataError: if the shapes differ, labels are not boolean, or after dropping NaN
            scores only one class (or nothing) is left.

    Example:
        >>> auroc([0.1, 0.4, 0.4, 0.9], [False, False, True, True])
        0.875
    """
    from scipy.stats import rankdata

    s = _to_numpy(scores, "scores")
    y = _to_numpy(labels, "labels")
    if s.ndim != 1 or y.shape != s.shape:
        raise InputDataError(
            f"scores and labels must be 1-D arrays of equal length; got shapes {s.shape} and "
            f"{y.shape}"
        )
    if s.dtype.kind not in "iuf":
        raise InputDataError(f"scores must be real numbers; got dtype {s.dtype}")
    if y.size == 0 or (y.dtype.kind in "iu" and np.isin(y, (0, 1)).all()):
        y = y.astype(bool)
    if y.dtype.kind != "b":
        raise InputDataError(f"labels must be booleans (or 0/1 integers); got dtype {y.dtype}")
    s = s.astype(np.float64)
    keep = ~np.isnan(s)
    s, y = s[keep], y[keep]
    n_pos = int(y.sum())
    n_neg = int(y.size - n_pos)
    if n_pos == 0 or n_neg == 0:
        raise InputDataError(
            f"AUROC needs both classes; after dropping {int((~keep).sum())} NaN scores there are "
            f"{n_pos} positives and {n_neg} negatives"
        )
    # average ranks give ties half credit; the positives' rank sum minus its minimum is U
    rank_sum = float(rankdata(s)[y].sum())
    u = rank_sum - n_pos * (n_pos + 1) / 2.0
    return u / (n_pos * n_neg)


def random_embeddings(n: int, dim: int, *, seed: int = 0) -> np.ndarray:
    """Unit vectors drawn uniformly on the sphere: the chance baseline for every metric.

    Args:
        n: number of vectors.
        dim: embedding dimension.
        seed: seed for :func:`numpy.random.default_rng`.

    Returns:
        ``(n, dim)`` float32 array of L2-normalised Gaussian vectors.

    Raises:
        InputDataError: if ``n`` or ``dim`` is not a positive integer.

    Example:
        >>> import numpy as np
        >>> x = random_embeddings(3, 8, seed=0)
        >>> x.shape, x.dtype, bool(np.allclose((x**2).sum(axis=1), 1.0))
        ((3, 8), dtype('float32'), True)
    """
    for name, value in (("n", n), ("dim", dim)):
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
            raise InputDataError(f"{name} must be a positive integer; got {value!r}")
    x = np.random.default_rng(seed).standard_normal((int(n), int(dim)))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32)
