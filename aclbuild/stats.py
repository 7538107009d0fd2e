"""Label statistics of a split: noise rate, CL marginals, the transition matrix, repeated CLs.

Example:
    >>> s = label_stats(np.array([0, 1]), np.array([[1, 1], [0, 1]]), num_classes=2)
    >>> s["noise_rate"], s["repeated_cl_rate"]
    (0.25, 0.5)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from aclbuild.repository import label_arrays, read_features, read_table, split_shards


def transition_counts(ord_labels: np.ndarray, cl_labels: np.ndarray, num_classes: int) -> np.ndarray:
    """C[y, j] = number of (image, CL) pairs with true label y and CL j."""
    counts = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(counts, (np.repeat(ord_labels, cl_labels.shape[1]), cl_labels.reshape(-1)), 1)
    return counts


def normalise_rows(counts: np.ndarray) -> np.ndarray:
    """Rows scaled to sum to 1; a row with no counts stays zero."""
    totals = counts.sum(axis=1, keepdims=True)
    return np.divide(counts, totals, out=np.zeros(counts.shape, dtype=np.float64), where=totals > 0)


def label_stats(ord_labels: np.ndarray, cl_labels: np.ndarray | None, num_classes: int) -> dict:
    """Statistics of one split as plain JSON-ready values (a test split without CLs gets counts only)."""
    ord_labels = np.asarray(ord_labels, dtype=np.int64)
    stats: dict = {
        "num_examples": len(ord_labels),
        "num_classes": int(num_classes),
        "class_counts": np.bincount(ord_labels, minlength=num_classes).tolist(),
    }
    if cl_labels is None:
        return stats | {"cls_per_image": 0}
    cl_labels = np.asarray(cl_labels, dtype=np.int64)
    counts = transition_counts(ord_labels, cl_labels, num_classes)
    cl_counts = counts.sum(axis=0)
    ordered = np.sort(cl_labels, axis=1)
    has_repeat = (ordered[:, 1:] == ordered[:, :-1]).any(axis=1) if cl_labels.shape[1] > 1 else np.zeros(len(ordered))
    return stats | {
        "cls_per_image": int(cl_labels.shape[1]),
        "noise_rate": float(np.trace(counts) / max(counts.sum(), 1)),
        "noisy_pairs": int(np.trace(counts)),
        "cl_counts": cl_counts.tolist(),
        "cl_marginals": (cl_counts / max(cl_counts.sum(), 1)).tolist(),
        "transition_matrix": normalise_rows(counts).tolist(),
        "repeated_cl_rate": float(np.mean(has_repeat)) if len(ordered) else 0.0,
    }


def checked_repository_stats(folder: str | Path) -> dict[str, dict]:
    """:func:`repository_stats` of a folder whose manifest matches its shards, what `aclbuild stats` prints; a
    folder missing a split, a shard or rows is refused (its statistics would look complete)."""
    from aclbuild.errors import InvalidRepositoryError, SourceError
    from aclbuild.validate import manifest_problems

    if not Path(folder).is_dir():
        raise SourceError(f"{folder} is not a folder; give a repository folder that `aclbuild build` wrote")
    problems = manifest_problems(folder)
    if problems:
        raise InvalidRepositoryError(str(folder), problems)
    from aclbuild.repository import is_spml_repository

    if is_spml_repository(folder):  # a single-positive multi-label set has statistics of its own
        from aclbuild.spml_stats import spml_repository_stats

        return spml_repository_stats(folder)
    return repository_stats(folder)


def repository_stats(folder: str | Path) -> dict[str, dict]:
    """Statistics of every split of a repository folder, read from the label columns only (no image decoding)."""
    num_classes = read_features(folder)["ord_labels"].num_classes
    result = {}
    for split in split_shards(folder):
        ord_labels, cl_labels = label_arrays(read_table(folder, split, columns=["ord_labels", "cl_labels"]))
        result[split] = label_stats(ord_labels, cl_labels, num_classes)
    return result
