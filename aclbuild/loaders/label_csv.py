"""The original labeling tool's label CSV: file name, then one class name per labeling round (no header).

Class names are the prompt's long names (sources.md); published and unambiguous short names are accepted too. The
file is UTF-8 text, with or without a byte-order mark (Excel writes one), with LF or CRLF line ends.
A CSV's rows meet the image source by position when its names are the source's names in the source's order (so
CIFAR-100's repeated file names, such as ``baby_s_000333.png``, stay apart), otherwise by name; joining by name
refuses a name that would be ambiguous (repeated in the CSV or in the source) and a name with no image.

Example:
    >>> rows = read_label_csv("aclmin10.csv", get_base("min10"))           # doctest: +SKIP
    >>> records = attach_labels(rows, read_source_images(base, "tiny-imagenet-200.zip", "train"), num_cl=3)  # doctest: +SKIP
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from aclbuild.errors import SourceError, UnknownNameError
from aclbuild.loaders.legacy_pickle import select_cls
from aclbuild.registry import Base
from aclbuild.schema import ClRecord


def read_label_csv(path: str | Path, base: Base) -> list[tuple[str, tuple[int, ...]]]:
    """(file name, CL indices) per row, in file order. A name may repeat (CIFAR-100 repeats some);
    :func:`match_images` decides whether the rows can still be told apart.

    Example:
        >>> rows = read_label_csv("aclcifar20.csv", get_base("cifar20"))   # doctest: +SKIP
        >>> len(rows), rows[0][1]                                          # doctest: +SKIP
        (50000, (17, 6, 1))
    """
    path = Path(path)
    if not path.is_file():
        raise SourceError(f"{path} does not exist or is not a file")
    index = {}  # name -> class index, cached: 50,000 rows repeat the same few names
    rows: list[tuple[str, tuple[int, ...]]] = []
    try:
        # utf-8-sig: Excel and Windows tools start a CSV with a byte-order mark, which would stick to the first name
        with path.open(newline="", encoding="utf-8-sig") as f:
            for line_no, row in enumerate(csv.reader(f), start=1):
                if not row or not any(cell.strip() for cell in row):
                    continue
                name, labels = row[0].strip(), [cell.strip() for cell in row[1:]]
                if not labels:
                    raise SourceError(f"{path}:{line_no}: {name!r} has no labels; expected name,label,label,...")
                if rows and len(labels) != len(rows[0][1]):
                    raise SourceError(
                        f"{path}:{line_no}: {len(labels)} labels where earlier rows have {len(rows[0][1])}; "
                        "every row needs the same number of rounds"
                    )
                for label in labels:
                    if label not in index:
                        try:
                            index[label] = base.class_index(label)
                        except UnknownNameError as exc:
                            raise SourceError(f"{path}:{line_no}: {exc}") from None
                rows.append((name, tuple(index[label] for label in labels)))
    except UnicodeDecodeError:
        raise SourceError(f"{path} is not a UTF-8 text CSV") from None
    if not rows:
        raise SourceError(f"{path} holds no rows")
    return rows


def match_images(csv_names: Sequence[str], image_names: Sequence[str], source: str = "CSV") -> list[int]:
    """For each CSV row, the index of its image in the source: by position when the CSV's names are the source's
    in the same order, else by name (every name of the CSV then needs exactly one image, and no CSV row may repeat a
    name: two rows would label one image).

    Example:
        >>> match_images(["a.png", "b.png", "a.png"], ["a.png", "b.png", "a.png"])   # repeated, in order
        [0, 1, 2]
        >>> match_images(["c.png", "a.png"], ["a.png", "b.png", "c.png"])            # a subset, by name
        [2, 0]
    """
    if list(csv_names) == list(image_names):
        return list(range(len(image_names)))
    positions: dict[str, int] = {}
    repeated: set[str] = set()
    for position, name in enumerate(image_names):
        if name in positions:
            repeated.add(name)
        positions[name] = position
    missing = [name for name in csv_names if name not in positions]
    if missing:
        raise SourceError(
            f"{source}: {len(missing)} file names have no image in the image source, e.g. {missing[0]!r} (its names "
            "follow the source's order neither by position nor by name); is the image source (--source) "
            "the right one?"
        )
    seen: set[str] = set()
    for row, name in enumerate(csv_names, start=1):
        if name in repeated:
            raise SourceError(
                f"{source}: row {row} names {name!r}, which the image source holds more than once, and the CSV's "
                "names are not the source's in order, so that row cannot be joined by name; give the CSV in the "
                "source's order (one row per image)"
            )
        if name in seen:
            raise SourceError(
                f"{source}: row {row} repeats {name!r}, which the image source holds once; one image cannot take "
                "two rows: remove the repeated row"
            )
        seen.add(name)
    return [positions[name] for name in csv_names]


def attach_labels(
    rows: Sequence[tuple[str, tuple[int, ...]]], images: Sequence[ClRecord], num_cl: int | None, source: str = "CSV"
) -> list[ClRecord]:
    """Records in CSV order: the image and true label from ``images`` (joined by :func:`match_images`), the first
    ``num_cl`` CLs from ``rows``.

    Example:
        >>> from aclbuild.schema import ClRecord
        >>> images = [ClRecord("a.png", None, 3), ClRecord("b.png", None, 1)]
        >>> [(r.name, r.ord_label, r.cl_labels) for r in attach_labels([("b.png", (0, 2))], images, num_cl=1)]
        [('b.png', 1, (0,))]
    """
    matched = match_images([name for name, _ in rows], [record.name for record in images], source)
    cls = select_cls(np.array([labels for _, labels in rows], dtype=np.int64), num_cl, source)
    return [
        ClRecord(name, images[i].image, images[i].ord_label, tuple(int(c) for c in row))
        for (name, _), i, row in zip(rows, matched, cls)
    ]
