"""The observed single positives and the validation split, drawn exactly as the SPML benchmark draws them.

Cole et al.'s ``preproc/generate_observed_labels.py`` (single-positive-multi-label, used unchanged by VLPL) makes,
for each official part, a fresh ``np.random.RandomState(1200)`` and walks the images in order; for each image it
shuffles the indices of its positives with ``rng.shuffle`` and keeps the first, then shuffles the indices of its
negatives the same way and keeps none (``--num-neg 0``). That second shuffle draws from the generator too, so it is
done here as well: given the same label matrix, the same observed labels come out. An image without a positive
gets no observed label (its row of the observed matrix stays zero there; here ``-1``).

The validation split is the benchmark's ``generate_split``: ``n_val = int(np.round(0.2 * N))`` of the official
training part, the last ``n_val`` of ``np.random.RandomState(1200).permutation(N)``, the rest train, both sorted.
The observed labels are drawn on the whole official training part first, then split, as there. The benchmark
validates and tests on the true labels (``val_set_variant = 'clean'``), so validation and test rows carry no
observed label. The subsampling step (``ss_frac`` 1.0) keeps every row in order, so it is left out. Where the
reference's ``idx_rand[-0:]`` would make every image a validation image (fewer than 3 images), the split here is
empty.

Example:
    >>> labels = np.array([[1, 1, 1, 1], [0, 1, 0, 1], [0, 0, 0, 0], [1, 1, 1, 1]], dtype=np.uint8)
    >>> draw_observed(labels).tolist()
    [0, 3, -1, 3]
    >>> [a.tolist() for a in validation_split(10)]
    [[0, 1, 2, 4, 5, 6, 8, 9], [3, 7]]
"""

from __future__ import annotations

import numpy as np

from aclbuild.errors import SourceError
from aclbuild.loaders.spml_source import SpmlPart, SpmlRecords

SEED = 1200  # the benchmark's --seed for the observed labels and its split_seed for the validation split
VAL_FRACTION = 0.2  # its val_frac: the part of the official training images held out for validation
NO_OBSERVED = -1  # an image without a positive


def check_label_matrix(labels: np.ndarray, what: str) -> np.ndarray:
    """``labels`` as an N x K uint8 0/1 matrix; anything else is one SourceError line naming ``what``.

    Example:
        >>> check_label_matrix(np.array([[0.0, 1.0]]), "x.npy").dtype
        dtype('uint8')
        >>> check_label_matrix(np.array([[0, 2]]), "x.npy")
        Traceback (most recent call last):
        aclbuild.errors.SourceError: x.npy: labels must be 0 or 1, found 2
    """
    if labels.ndim != 2:
        raise SourceError(f"{what}: labels must be an images x classes matrix, got shape {labels.shape}")
    if labels.dtype.kind not in "biuf":
        raise SourceError(f"{what}: labels must be numbers, got {labels.dtype}")
    values = np.unique(labels)
    stray = [v for v in values.tolist() if v not in (0, 1)]
    if stray:
        raise SourceError(f"{what}: labels must be 0 or 1, found {stray[0]:g}")
    return labels.astype(np.uint8)


def draw_observed(labels: np.ndarray, seed: int = SEED) -> np.ndarray:
    """Each row's observed positive (a class index, ``NO_OBSERVED`` for a row without a positive) of the 0/1
    matrix ``labels``, drawn as ``generate_observed_labels.py --num-pos 1 --num-neg 0 --seed seed`` does."""
    rng = np.random.RandomState(seed)
    observed = np.full(len(labels), NO_OBSERVED, dtype=np.int64)
    for i, row in enumerate(labels):
        positives = np.flatnonzero(row == 1)
        rng.shuffle(positives)
        rng.shuffle(np.flatnonzero(row != 1))  # the reference's negative draw: none kept, but it moves the generator
        if len(positives):
            observed[i] = positives[0]
    return observed


def validation_split(count: int, fraction: float = VAL_FRACTION, seed: int = SEED) -> tuple[np.ndarray, np.ndarray]:
    """(train positions, validation positions) of ``count`` official training images, both sorted."""
    n_val = int(np.round(fraction * count))
    shuffled = np.random.RandomState(seed).permutation(count)
    if n_val == 0:
        return np.sort(shuffled), np.array([], dtype=np.int64)
    return np.sort(shuffled[: count - n_val]), np.sort(shuffled[-n_val:])


def spml_splits(train: SpmlPart, test: SpmlPart, seed: int = SEED) -> dict[str, SpmlRecords]:
    """The train, validation and test records of a source: the official training part with its observed labels,
    split 80/20; the official test part (VOC's and COCO's val, CUB's test, NUS-WIDE's val) without observed labels.

    Example:
        >>> part = SpmlPart(("a", "b"), [f"{i}.jpg" for i in range(5)], np.eye(5, 2, dtype=np.uint8), None, [])
        >>> splits = spml_splits(part, part)
        >>> {name: [r.observed_label for r in records] for name, records in splits.items()}
        {'train': [0, 1, None, None], 'validation': [None], 'test': [None, None, None, None, None]}
    """
    if train.class_names != test.class_names:
        raise SourceError("the training and test parts have different classes; pass parts of the same source")
    observed = draw_observed(train.labels, seed)
    train_positions, val_positions = validation_split(len(train.names), VAL_FRACTION, seed)
    everything = SpmlRecords(train, observed)
    return {
        "train": everything.subset(train_positions),
        "validation": SpmlRecords(train, None, [int(p) for p in val_positions]),
        "test": SpmlRecords(test),
    }
