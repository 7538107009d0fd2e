"""The candidate sets of the released ACL sets, redrawn from numpy's legacy global stream as the reference tool drew
them (``--candidates reference``; ../shared/reference/parity.md, measured against the released labels).

Every draw is ``np.random.choice(names, 4, replace=False)`` on the K class names, which draws like
``permutation(K)[:4]``. Per base, the order of the draws differs:

- cifar10, cifar20: ``seed(seed)``, then for each image in source order, for each round, one draw (all drawn before
  any query), so the number of rounds changes every draw after the first image;
- min10: ``seed(seed)`` once, then round-major: for each round, for each image, one draw;
- min20: for each round r, ``seed(r)`` (the reference ignored its seed here), then one draw per image.

The reference keyed its candidate table by file name, so images that share a name (CIFAR-100's train split has
one such pair) were all asked with the sets of the last of them; so are they here.

The -R procedure (:class:`ReducedReferenceStream`) is the reference's too: up-front draws that are discarded
(cifar10: N x R; min10: N x (R - 1), its ``--replace`` path), a shuffled visiting order, blocks of images whose
draws share one budget snapshot per (block, round), budgets floored at 10, and each drawn set shown as a shuffled
copy (one ``np.random.shuffle`` from the same stream).

Example:
    >>> sets = reference_candidate_sets("cifar10", ["a.png", "b.png"], num_rounds=3, seed=1126)
    >>> sets.shape, sorted(set(sets[0, 0].tolist())) == sorted(sets[0, 0].tolist())
    ((2, 3, 4), True)
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence

import numpy as np

from aclbuild.errors import InputError
from aclbuild.labeling.candidates import NUM_CANDIDATES

# the bases whose released sets' streams are known, and how the draws are ordered
PLAIN_ORDERS = {"cifar10": "image-major", "cifar20": "image-major", "min10": "round-major", "min20": "seed-per-round"}
# -R: how many up-front draws (per image) were made and discarded before the budgeted ones, as a function of R
REDUCED_DISCARDED = {"cifar10": lambda rounds: rounds, "min10": lambda rounds: rounds - 1}
NUM_CLASSES = {"cifar10": 10, "cifar20": 20, "min10": 10, "min20": 20}
REFERENCE_BLOCK = 16  # the released -R sets were labelled in batches of 16 images
REFERENCE_FLOOR = 10


def check_reference_stream(base: str, mode: str, bias_reduction: bool) -> None:
    """Refuse ``--candidates reference`` where no released set says how it was drawn."""
    if mode != "cl":
        raise InputError("--candidates reference draws complementary-mode candidates; --mode ord shows every class")
    known = REDUCED_DISCARDED if bias_reduction else PLAIN_ORDERS
    if base not in known:
        what = "-R " if bias_reduction else ""
        raise InputError(
            f"no released {what}set of base {base} says how its candidates were drawn (known: {', '.join(known)}); "
            "use --candidates seeded"
        )


def _draw(state: np.random.RandomState, num_classes: int) -> np.ndarray:
    return state.permutation(num_classes)[:NUM_CANDIDATES]


def reference_candidate_sets(base: str, names: Sequence[str], num_rounds: int, seed: int = 1126) -> np.ndarray:
    """N x R x 4 class indices, in the order drawn, of the released stream of ``base`` over images ``names``."""
    check_reference_stream(base, "cl", False)
    n, k, order = len(names), NUM_CLASSES[base], PLAIN_ORDERS[base]
    sets = np.empty((n, num_rounds, NUM_CANDIDATES), dtype=np.int64)
    if order == "image-major":
        state = np.random.RandomState(seed)
        for i in range(n):
            for r in range(num_rounds):
                sets[i, r] = _draw(state, k)
    else:
        state = np.random.RandomState(seed)
        for r in range(num_rounds):
            if order == "seed-per-round":
                state = np.random.RandomState(r)
            for i in range(n):
                sets[i, r] = _draw(state, k)
    last = {name: i for i, name in enumerate(names)}  # the reference's table by name: the last image wins
    for i, name in enumerate(names):
        if last[name] != i:
            sets[i] = sets[last[name]]
    return sets


def legacy_weighted_choice(state: np.random.RandomState, population: list[int], weights: list[int]) -> list[int]:
    """``state.choice(population, 4, replace=False, p=weights / sum(weights))``, the same numbers from the same
    stream, in plain Python (six times faster for K <= 20: 300,000 draws make ACLCIFAR10-R).

    Like numpy: draw uniforms for the missing picks, zero the probabilities already picked, look the uniforms up
    in the renormalised cumulative sum, keep the new distinct picks in order of first appearance, repeat.

    Example:
        >>> a, b = np.random.RandomState(3), np.random.RandomState(3)
        >>> a.choice([0, 2, 5, 7, 9], 4, replace=False, p=np.array([5, 1, 9, 3, 2]) / 20).tolist()
        [5, 2, 9, 0]
        >>> legacy_weighted_choice(b, [0, 2, 5, 7, 9], [5, 1, 9, 3, 2])
        [5, 2, 9, 0]
    """
    total = sum(weights)
    p = [w / total for w in weights]
    found: list[int] = []
    while len(found) < NUM_CANDIDATES:
        uniforms = state.random_sample(NUM_CANDIDATES - len(found)).tolist()
        for k in found:
            p[k] = 0.0
        cdf, acc = [], 0.0
        for value in p:  # np.cumsum adds in order, as this loop does
            acc += value
            cdf.append(acc)
        cdf = [c / cdf[-1] for c in cdf]
        for k in (bisect.bisect_right(cdf, u) for u in uniforms):
            if k not in found:
                found.append(k)
    return [population[k] for k in found]


class ReducedReferenceStream:
    """The reference's -R draws: one legacy stream walked in (block, round) order.

    Every process walks the whole stream (units already answered included, on a resume), so all agree on every
    draw; only the asking is split between them.

    Example:
        >>> stream = ReducedReferenceStream("min10", num_images=40, num_rounds=3, seed=1126)
        >>> len(stream.blocks), len(stream.blocks[0])
        (3, 16)
        >>> shown = stream.draw_unit(stream.blocks[0], {})
        >>> stream.answered([shown[i][0] for i in stream.blocks[0]])
    """

    def __init__(self, base: str, num_images: int, num_rounds: int, seed: int = 1126, block: int = REFERENCE_BLOCK):
        check_reference_stream(base, "cl", True)
        k = NUM_CLASSES[base]
        self.num_classes = k
        self.state = np.random.RandomState(seed)
        for _ in range(num_images * REDUCED_DISCARDED[base](num_rounds)):
            _draw(self.state, k)
        order = self.state.permutation(num_images).tolist()
        self.blocks = [order[s : s + block] for s in range(0, num_images, block)]
        self.budgets = [int(num_rounds * num_images / k)] * k

    def draw_unit(self, block: list[int], excluded: dict[int, list[int]], round_: int = 0) -> dict[int, list[int]]:
        """The options shown to each image of ``block`` in one round: drawn among the classes not in
        ``excluded[i]`` (its earlier CLs) with probability proportional to the budgets, then shuffled. ``round_``
        plays no part: the stream's position does."""
        shown = {}
        for i in block:
            taken = set(excluded.get(i, ()))
            available = [c for c in range(self.num_classes) if c not in taken]
            drawn = legacy_weighted_choice(self.state, available, [self.budgets[c] for c in available])
            self.state.shuffle(drawn)
            shown[i] = drawn
        return shown

    def answered(self, labels: list[int]) -> None:
        """After a unit: each class chosen loses 1 of its budget, never going below the floor of 10."""
        for label in labels:
            self.budgets[label] = max(REFERENCE_FLOOR, self.budgets[label] - 1)
