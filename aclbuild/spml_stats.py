"""Label statistics of a single-positive multi-label (SPML) split: label cardinality, per-class positive counts,
and the observed/true agreement; `aclbuild stats` on an SPML repository, and the card's tables.

Example:
    >>> stats = spml_label_stats([[0, 2], [1], []], [2, None, None], num_classes=3)
    >>> stats["label_cardinality"], stats["positive_counts"], stats["observed_share"], stats["observed_true_share"]
    (1.0, [1, 1, 1], 0.3333, 0.3333)
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from aclbuild.repository.spml import spml_label_matrix


def spml_label_stats(labels: Sequence[Sequence[int] | None], observed: Sequence[int | None], num_classes: int) -> dict:
    """One split's statistics from each row's positives and observed label (None: none).

    ``label_cardinality`` is the mean number of positives per image; ``positive_counts[k]`` the images with class
    ``k``; ``observed_share`` the share of images with an observed label; ``observed_true_share`` the share whose
    observed label is one of their positives (equal to ``observed_share`` in any set this toolkit builds; shares are
    rounded to 4 places, counts exact). ``observed_counts[k]``: images whose observed label is ``k``.
    """
    matrix = spml_label_matrix(labels, num_classes)
    count = len(matrix)
    seen = np.array([-1 if o is None else int(o) for o in observed], dtype=np.int64)
    has = seen >= 0
    true = has.copy()
    true[has] = matrix[np.flatnonzero(has), seen[has]] == 1
    return {
        "num_examples": count,
        "label_cardinality": round(float(matrix.sum() / count), 4) if count else 0.0,
        "positive_counts": matrix.sum(axis=0).astype(int).tolist(),
        "images_without_positive": int((matrix.sum(axis=1) == 0).sum()),
        "observed": int(has.sum()),
        "observed_share": round(float(has.mean()), 4) if count else 0.0,
        "observed_true_share": round(float(true.mean()), 4) if count else 0.0,
        "observed_counts": np.bincount(seen[has], minlength=num_classes).astype(int).tolist(),
    }


def spml_repository_stats(folder: str | Path) -> dict[str, dict]:
    """:func:`spml_label_stats` of every split of an SPML repository folder, read from the label columns only
    (`aclbuild stats` checks the shards against the manifest first: :func:`aclbuild.stats.checked_repository_stats`)."""
    from aclbuild.repository import read_features, read_table, split_shards

    num_classes = read_features(folder)["observed_label"].num_classes
    result = {}
    order = ("train", "validation", "test")
    for split in sorted(split_shards(folder), key=lambda s: (order.index(s) if s in order else len(order), s)):
        table = read_table(folder, split, columns=["labels", "observed_label"])
        labels, observed = table.column("labels").to_pylist(), table.column("observed_label").to_pylist()
        result[split] = spml_label_stats(labels, observed, num_classes)
    return result


def spml_stats_lines(stats: dict[str, dict], class_names: Sequence[str]) -> list[str]:
    """`aclbuild stats`' text for an SPML repository: per split its size, cardinality and agreement, then one row
    per class with its positives per split and their share of the split's images (and, in train, how often it is
    the observed label).

    Example:
        >>> stats = {"train": spml_label_stats([[0, 1]], [1], 2)}
        >>> print("\\n".join(spml_stats_lines(stats, ["cat", "dog"])))   # doctest: +NORMALIZE_WHITESPACE
        train: 1 image, 2.0 positives per image, 0 without any; observed on 100.0%, a true positive on 100.0%
        class   train          train observed
        cat     1 (100.0%)     0
        dog     1 (100.0%)     1
    """
    lines = []
    for split, s in stats.items():
        images = f"{s['num_examples']} image{'s' * (s['num_examples'] != 1)}"
        line = (f"{split}: {images}, {s['label_cardinality']} positives per image, "
                f"{s['images_without_positive']} without any")  # fmt: skip
        if s["observed"]:
            line += (f"; observed on {100 * s['observed_share']:.1f}%, a true positive on "
                     f"{100 * s['observed_true_share']:.1f}%")  # fmt: skip
        lines.append(line)
    observed_splits = [split for split, s in stats.items() if s["observed"]]
    header = ["class", *stats, *(f"{split} observed" for split in observed_splits)]
    rows = [header]
    for k, name in enumerate(class_names):
        counts = [f"{s['positive_counts'][k]} ({100 * s['positive_counts'][k] / max(s['num_examples'], 1):.1f}%)"
                  for s in stats.values()]  # the class's frequency: its share of the split's images
        rows.append([name, *counts, *(str(stats[split]["observed_counts"][k]) for split in observed_splits)])
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines += ["   ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    return lines
