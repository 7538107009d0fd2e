"""What `aclbuild stats` prints: per split, a summary table and the classes by name with their CLs and share.

Example:
    >>> stats = {"test": {"num_examples": 4, "num_classes": 2, "class_counts": [2, 2], "cls_per_image": 0}}
    >>> stats_renderables("out/x", stats, ["cat", "dog"])
    ['out/x', 'test: 4 images, 2 classes, no complementary labels (true labels only)']
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from rich.table import Table

SPLIT_ORDER = ("train", "validation", "test")


def ordered_splits(names: Sequence[str]) -> list[str]:
    """train, validation, test first, then any other split in name order.

    Example:
        >>> ordered_splits(["test", "extra", "train"])
        ['train', 'test', 'extra']
    """
    known = [s for s in SPLIT_ORDER if s in names]
    return known + sorted(s for s in names if s not in SPLIT_ORDER)


def summary_table(split: str, s: dict) -> Table:
    """Images, classes, CLs per image, noise rate and repeated CLs of one split with CLs."""
    table = Table(title=split, show_header=False, title_justify="left")
    table.add_column("", no_wrap=True)
    table.add_column("", justify="right", no_wrap=True)
    table.add_row("images", f"{s['num_examples']:,}")
    table.add_row("classes", str(s["num_classes"]))
    table.add_row("CLs per image", str(s["cls_per_image"]))
    table.add_row("noise rate", f"{100 * s['noise_rate']:.2f}% ({s['noisy_pairs']:,} pairs)")
    table.add_row("images with a repeated CL", f"{100 * s['repeated_cl_rate']:.2f}%")
    return table


def class_table(split: str, s: dict, class_names: Sequence[str]) -> Table:
    """One row per class, by name: images whose true label it is, CLs naming it, and its share of the CLs."""
    table = Table(title=f"{split}: CLs per class", title_justify="left")
    table.add_column("class", no_wrap=True)
    for column in ("images", "CLs", "share"):
        table.add_column(column, justify="right", no_wrap=True)
    for name, images, cls, share in zip(class_names, s["class_counts"], s["cl_counts"], s["cl_marginals"]):
        table.add_row(name, f"{images:,}", f"{cls:,}", f"{100 * share:.1f}%")
    return table


def stats_renderables(folder: str | Path, stats: dict[str, dict], class_names: Sequence[str]) -> list[Table | str]:
    """What `aclbuild stats` prints: the folder, then split by split tables for a split with CLs, one line for one
    without (a table title wraps at the table's width, so the path is a line of its own)."""
    shown: list[Table | str] = [str(folder)]
    for split in ordered_splits(list(stats)):
        s = stats[split]
        if not s["cls_per_image"]:
            shown.append(f"{split}: {s['num_examples']:,} images, {s['num_classes']} classes, no complementary labels "
                         "(true labels only)")  # fmt: skip
            continue
        shown += [summary_table(split, s), class_table(split, s, class_names)]
    return shown
