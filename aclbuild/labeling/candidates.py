"""The options shown for one query, seeded by (seed, image, round, attempt) so that any process draws the same.

Complementary mode: 4 distinct classes drawn uniformly, independent of the true label, in a random order; a retry
shows the same classes reshuffled. Ordinary mode: all K classes, numbered in class order, reshuffled on a retry.

Example:
    >>> uniform_candidates(1126, image=0, round_=0, num_classes=10)
    [9, 6, 7, 1]
    >>> sorted(reshuffled([9, 6, 7, 1], 1126, 0, 0, attempt=1)) == [1, 6, 7, 9]
    True
"""

from __future__ import annotations

import numpy as np

NUM_CANDIDATES = 4


def uniform_candidates(seed: int, image: int, round_: int, num_classes: int, count: int = NUM_CANDIDATES) -> list[int]:
    """``count`` distinct classes of 0..num_classes-1, uniform and in random order, for (image, round)."""
    rng = np.random.default_rng([seed, image, round_])
    return [int(c) for c in rng.choice(num_classes, size=count, replace=False)]


def ordinary_options(num_classes: int) -> list[int]:
    """Ordinary mode shows every class, numbered (1) .. (K) in class order."""
    return list(range(num_classes))


def reshuffled(options: list[int], seed: int, image: int, round_: int, attempt: int) -> list[int]:
    """The options of a retry: the same classes in a fresh order (attempt 0 keeps the order drawn)."""
    if attempt == 0:
        return list(options)
    rng = np.random.default_rng([seed, image, round_, attempt])
    return [int(options[j]) for j in rng.permutation(len(options))]
