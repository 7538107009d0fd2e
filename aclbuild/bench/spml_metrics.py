"""mAP, the single-positive multi-label benchmarks' metric: the mean over classes of average precision.

A class's average precision (AP) is scikit-learn's ``average_precision_score``, which VLPL's ``metrics.py`` calls:
with the images ranked by score, sum over the distinct thresholds t of (R_t - R_prev) P_t, P_t and R_t the
precision and recall of "score >= t" (tied scores share one threshold, no interpolation). Computed here with numpy,
so the core needs no scikit-learn.

A class with no positive among the labels has no AP. VLPL counts it as 0 in the mean (``empty="zero"``); the
default (``empty="skip"``, issue 16) leaves it out, so a small split is not marked down for a class it lacks. On
the full VOC, COCO, NUS-WIDE and CUB test splits every class has a positive and the two agree. The result is a
share in [0, 1] (VLPL prints it times 100).

Example:
    >>> labels = np.array([[1, 0], [0, 1], [1, 0]])
    >>> mean_average_precision(np.array([[0.9, 0.2], [0.8, 0.7], [0.3, 0.1]]), labels)   # (1/1 + 2/3) / 2, 1
    0.9166666666666666
"""

from __future__ import annotations

import numpy as np

from aclbuild.errors import InputError

EMPTY_RULES = ("skip", "zero")


def average_precision(scores: np.ndarray, positives: np.ndarray) -> float:
    """AP of one class: ``scores`` (N, higher = more likely) against ``positives`` (N, true where positive).

    NaN when there is no positive.

    Example:
        >>> average_precision(np.array([0.9, 0.5, 0.5, 0.1]), np.array([1, 0, 1, 0]))   # ties: one threshold
        0.8333333333333333
    """
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    ranked, hits = np.asarray(scores, dtype=np.float64)[order], np.asarray(positives, dtype=bool)[order]
    total = hits.sum()
    if not total:
        return float("nan")
    true_positives = np.cumsum(hits)
    last_of_tie = np.r_[ranked[1:] != ranked[:-1], True]  # each distinct score ends where the next one starts
    found = true_positives[last_of_tie]
    precision = found / (np.flatnonzero(last_of_tie) + 1)
    return float((np.diff(found, prepend=0) / total * precision).sum())


def mean_average_precision(scores, labels, empty: str = "skip") -> float:
    """mAP of N x K ``scores`` against N x K ``labels`` (1 positive; 0 or -1 negative), a share in [0, 1].

    ``empty``: "skip" leaves classes without a positive out of the mean, "zero" counts them as 0 (VLPL).
    """
    scores, labels = np.asarray(scores, dtype=np.float64), np.asarray(labels)
    if scores.ndim != 2 or scores.shape != labels.shape:
        raise InputError(
            f"scores and labels must be N x K matrices of one shape, got {scores.shape} and {labels.shape}"
        )
    if not np.isfinite(scores).all():
        raise InputError("the scores hold NaN or infinite values: the model diverged or the inputs are broken")
    if not np.isin(labels, (-1, 0, 1)).all():
        raise InputError("the labels hold values other than 1 (positive), 0 and -1 (negative)")
    if empty not in EMPTY_RULES:
        raise InputError(f"empty must be one of {', '.join(EMPTY_RULES)}, got {empty!r}")
    per_class = np.array([average_precision(scores[:, k], labels[:, k] == 1) for k in range(scores.shape[1])])
    if empty == "zero":
        return float(np.nan_to_num(per_class, nan=0.0).mean()) if per_class.size else 0.0
    present = per_class[~np.isnan(per_class)]
    if not present.size:
        raise InputError("no class has a positive among the labels: mAP is undefined")
    return float(present.mean())
