"""Synthetic complementary labels drawn from a transition matrix (cll-benchmark.md).

T is K x K with T[y, j] = P(CL = j | true label y). Each image's CLs are drawn without replacement from row T[y]
with a generator seeded by (seed, image index), so the labels of image i depend only on the seed and i: the same
for any batch size, any subset and any number of processes.

Example:
    >>> T = transition_matrix("uniform", 10)
    >>> draw_cls(np.array([3, 3]), T, num_cl=3, seed=1126).shape
    (2, 3)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from aclbuild.errors import InputError, UnknownNameError
from aclbuild.registry import SYNTHETIC_MATRICES
from aclbuild.schema import ClRecord

# Off-diagonal masses of the biased matrices, spread over three equal groups of classes (K = 10: 3 + 3 + 3).
_GROUP_MASSES = {"weak": (0.45, 0.30, 0.25), "strong": (0.75, 0.24, 0.01)}


def _biased(kind: str, num_classes: int, rng: np.random.Generator) -> np.ndarray:
    slots = num_classes - 1
    sizes = [slots // 3 + (1 if g < slots % 3 else 0) for g in range(3)]
    row_values = np.concatenate([np.full(size, mass / size) for mass, size in zip(_GROUP_MASSES[kind], sizes)])
    matrix = np.zeros((num_classes, num_classes))
    for y in range(num_classes):
        others = [j for j in range(num_classes) if j != y]
        matrix[y, others] = rng.permutation(row_values)
    return matrix


def transition_matrix(kind: str, num_classes: int, seed: int = 1126, noise: float = 0.1) -> np.ndarray:
    """The ``uniform``, ``weak``, ``strong`` or ``noisy`` K x K transition matrix (rows sum to 1).

    ``noisy`` = (1 - noise) * T_strong + noise * 11^T / K, so a CL equals the true label with probability noise / K.
    """
    if kind not in SYNTHETIC_MATRICES:
        raise UnknownNameError(f"unknown transition matrix {kind!r}; choose one of: {', '.join(SYNTHETIC_MATRICES)}")
    if num_classes < 2:
        raise InputError("a transition matrix needs at least 2 classes")
    if kind == "uniform":
        return (np.ones((num_classes, num_classes)) - np.eye(num_classes)) / (num_classes - 1)
    rng = np.random.default_rng(seed)
    if kind in _GROUP_MASSES:
        return _biased(kind, num_classes, rng)
    if not 0.0 <= noise <= 1.0:
        raise InputError(f"--noise must lie in [0, 1], got {noise}")
    return (1 - noise) * _biased("strong", num_classes, rng) + noise / num_classes


def draw_cls(ord_labels: np.ndarray, matrix: np.ndarray, num_cl: int, seed: int, offset: int = 0) -> np.ndarray:
    """N x num_cl CLs; image ``offset + i`` gets ``num_cl`` distinct classes drawn from row ``matrix[y_i]``."""
    support = int((matrix > 0).sum(axis=1).min())
    if not 1 <= num_cl <= support:
        raise InputError(f"cannot draw {num_cl} distinct CLs per image: some rows of T have only {support} classes")
    out = np.empty((len(ord_labels), num_cl), dtype=np.int64)
    classes = np.arange(matrix.shape[0])
    for i, y in enumerate(ord_labels):
        rng = np.random.default_rng([seed, offset + i])
        out[i] = rng.choice(classes, size=num_cl, replace=False, p=matrix[int(y)])
    return out


def label_records(
    records: Sequence[ClRecord], matrix: np.ndarray, num_cl: int = 3, seed: int = 1126
) -> list[ClRecord]:
    """Copies of ``records`` with synthetic ``cl_labels`` drawn from ``matrix``."""
    cls = draw_cls(np.array([r.ord_label for r in records]), matrix, num_cl, seed)
    return [replace(r, cl_labels=tuple(int(c) for c in row)) for r, row in zip(records, cls)]


class SyntheticLabeler:
    """``--labeler synthetic`` in the runner's three stages: each query's options are all K classes, and its choice
    is the image's CL of that round, drawn by :func:`draw_cls` (image i's CLs from rng(seed, i), whatever the batch
    or process). No model: ``run`` passes the draws on.

    Example:
        >>> from aclbuild.labeling.backend import Query, ask
        >>> from aclbuild.schema import ClRecord
        >>> labeler = SyntheticLabeler([ClRecord("a.png", None, 3)], transition_matrix("uniform", 4), 2, seed=1126)
        >>> queries = [Query(0, r, 0, None, list("abcd"), list("abcd"), "", "", "", (0, 1, 2, 3)) for r in (0, 1)]
        >>> drawn = draw_cls(np.array([3]), labeler.matrix, 2, seed=1126)[0].tolist()
        >>> [reply.choice for reply in ask(labeler, queries)] == drawn
        True
    """

    model_id = revision = None

    def __init__(self, records: Sequence[ClRecord], matrix: np.ndarray, num_rounds: int, seed: int) -> None:
        self.records, self.matrix, self.num_rounds, self.seed = records, matrix, num_rounds, seed

    def prepare(self, queries: list) -> list[int]:
        """Each query's CL (a class index), every image drawn once for all of its rounds."""
        drawn: dict[int, np.ndarray] = {}
        for q in queries:
            if q.index not in drawn:
                label = np.array([self.records[q.index].ord_label])
                drawn[q.index] = draw_cls(label, self.matrix, self.num_rounds, self.seed, offset=q.index)[0]
        return [int(drawn[q.index][q.round_]) for q in queries]

    def run(self, prepared: list[int]) -> list[int]:
        return prepared

    def replies(self, queries: list, prepared: list[int], raw: list[int]) -> list:
        from aclbuild.labeling.backend import Reply

        return [Reply(q.options[q.classes.index(c)], q.classes.index(c)) for q, c in zip(queries, raw)]
