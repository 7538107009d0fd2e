"""Synthetic complementary labels from a transition matrix."""

from __future__ import annotations

import numpy as np
import pytest

from aclbuild.errors import InputError
from aclbuild.labeling.synthetic import draw_cls, transition_matrix


@pytest.mark.parametrize("kind", ["uniform", "weak", "strong", "noisy"])
@pytest.mark.parametrize("k", [10, 20])
def test_matrices_are_stochastic(kind, k):
    matrix = transition_matrix(kind, k)
    assert matrix.shape == (k, k) and np.allclose(matrix.sum(axis=1), 1)
    if kind != "noisy":
        assert np.all(np.diag(matrix) == 0)
    else:
        assert np.allclose(np.diag(matrix), 0.1 / k)


def test_weak_and_strong_rows_follow_reference():
    for kind, masses in (("weak", (0.45, 0.30, 0.25)), ("strong", (0.75, 0.24, 0.01))):
        matrix = transition_matrix(kind, 10, seed=3)
        expected = sorted(np.repeat(np.array(masses) / 3, 3))
        for y in range(10):
            assert np.allclose(sorted(np.delete(matrix[y], y)), expected)
        assert np.array_equal(matrix, transition_matrix(kind, 10, seed=3))


def test_labels_depend_only_on_seed_and_index():
    y = np.random.default_rng(0).integers(0, 10, 200)
    matrix = transition_matrix("uniform", 10)
    full = draw_cls(y, matrix, 3, seed=1126)
    tail = draw_cls(y[150:], matrix, 3, seed=1126, offset=150)
    assert np.array_equal(full[150:], tail)
    assert not np.array_equal(full, draw_cls(y, matrix, 3, seed=7))
    assert all(len(set(row)) == 3 for row in full.tolist())
    assert not np.any(full == y[:, None])


def test_empirical_frequencies_match_matrix():
    y = np.zeros(20000, dtype=int)
    matrix = transition_matrix("strong", 10, seed=1)
    cls = draw_cls(y, matrix, 1, seed=5)
    freq = np.bincount(cls[:, 0], minlength=10) / len(cls)
    assert np.allclose(freq, matrix[0], atol=0.01)


def test_too_many_cls():
    with pytest.raises(InputError):
        draw_cls(np.array([0]), transition_matrix("uniform", 3), 3, seed=0)
