"""The -R (bias-reduction) candidate draw of vlm-labeling.md: per-class budgets that favour rarely chosen classes.

Each class starts with a budget of int(rounds * N / K) and loses 1 each time the model chooses it as a CL, never
going below 10 (or its start, when that is lower). An image's 4 candidates are drawn without replacement with
probability proportional to the budgets, among the classes not yet chosen for that image, so its CLs are distinct;
hence rounds <= K - 3.

Images are visited in a seeded order in blocks of ``block`` images (:data:`BLOCK` by default, ``--r-block``), one
round at a time; a block's draws use the budgets left by every earlier (block, round), and each image's draw has
its own generator seeded by (seed, image, round). The labels therefore depend on the seed and the answers only —
not on the batch size, the number of processes or interruptions. (The released -R sets were drawn the same way
from numpy's global stream in blocks of 16: ``--candidates reference``, see
:mod:`aclbuild.labeling.reference_stream`.)

Example:
    >>> budgets = initial_budgets(num_images=100, num_classes=10, rounds=3)
    >>> budgets.tolist()[:3]
    [30, 30, 30]
    >>> len(budget_candidates(budgets, excluded=[1, 2], seed=1126, image=5, round_=2))
    4
"""

from __future__ import annotations

import numpy as np

from aclbuild.errors import InputError
from aclbuild.labeling.candidates import NUM_CANDIDATES

BLOCK = 64  # images whose candidates share one budget snapshot
FLOOR = 10


def check_rounds(num_rounds: int, num_classes: int) -> None:
    """-R gives each image distinct CLs and always shows 4 candidates: refuse rounds > K - 3."""
    if num_rounds > num_classes - (NUM_CANDIDATES - 1):
        raise InputError(
            f"--bias-reduction needs --num-rounds <= K - 3 = {num_classes - 3} (K = {num_classes}): each image's CLs "
            f"are distinct and 4 candidates must remain; got {num_rounds}"
        )


def initial_budgets(num_images: int, num_classes: int, rounds: int) -> np.ndarray:
    return np.full(num_classes, int(rounds * num_images / num_classes), dtype=np.int64)


def budgets_after(initial: np.ndarray, chosen_counts: np.ndarray) -> np.ndarray:
    """Budgets once each class was chosen ``chosen_counts`` times (minus 1 per choice, floored)."""
    floor = np.minimum(initial, FLOOR)
    return np.maximum(initial - chosen_counts, floor)


def budget_candidates(budgets: np.ndarray, excluded: list[int], seed: int, image: int, round_: int) -> list[int]:
    """4 distinct classes not in ``excluded``, drawn with probability proportional to ``budgets``."""
    available = np.array([c for c in range(len(budgets)) if c not in set(excluded)])
    weights = budgets[available].astype(np.float64)
    if weights.sum() <= 0:  # all budgets 0 (tiny runs): fall back to uniform
        weights = np.ones_like(weights)
    rng = np.random.default_rng([seed, image, round_])
    picked = rng.choice(available, size=NUM_CANDIDATES, replace=False, p=weights / weights.sum())
    return [int(c) for c in picked]


def visit_blocks(indices: list[int], seed: int, block: int = BLOCK) -> list[list[int]]:
    """``indices`` in the seeded visiting order, cut into blocks of ``block``."""
    order = np.random.default_rng(seed).permutation(len(indices))
    visited = [indices[j] for j in order]
    return [visited[k : k + block] for k in range(0, len(visited), block)]


class SeededReduction:
    """aclbuild's -R draws, walked (block, round) by (block, round) like
    :class:`aclbuild.labeling.reference_stream.ReducedReferenceStream`.

    Example:
        >>> reduction = SeededReduction(num_images=100, num_classes=10, num_rounds=3, seed=1126)
        >>> shown = reduction.draw_unit(reduction.blocks[0], {}, round_=0)
        >>> len(shown), len(shown[reduction.blocks[0][0]])
        (64, 4)
    """

    def __init__(self, num_images: int, num_classes: int, num_rounds: int, seed: int, block: int = BLOCK) -> None:
        self.seed = seed
        self.blocks = visit_blocks(list(range(num_images)), seed, block)
        self.initial = initial_budgets(num_images, num_classes, num_rounds)
        self.chosen = np.zeros(num_classes, dtype=np.int64)  # CLs of every unit answered so far

    def draw_unit(self, block: list[int], excluded: dict[int, list[int]], round_: int) -> dict[int, list[int]]:
        """The options shown to each image of ``block`` in round ``round_``, from one budget snapshot."""
        snapshot = budgets_after(self.initial, self.chosen)
        return {i: budget_candidates(snapshot, excluded.get(i, []), self.seed, i, round_) for i in block}

    def answered(self, labels: list[int]) -> None:
        for label in labels:
            self.chosen[label] += 1
