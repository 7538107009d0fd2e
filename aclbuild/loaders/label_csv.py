"""The original labeling tool's label CSV: file name, then one class name per labeling round (no header).

Class names are the prompt's long names (sources.md); published and unambiguous short names are accepted too.
The labels are joined with an image source by file name.

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
    """(file name, CL indices) per row, in file order."""
    path = Path(path)
    if not path.is_file():
        raise SourceError(f"{path} does not exist or is not a file")
    index = {}  # name -> class index, cached: 50,000 rows repeat the same few names
    rows: list[tuple[str, tuple[int, ...]]] = []
    seen: set[str] = set()
    try:
        with path.open(newline="", encoding="utf-8") as f:
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
                if name in seen:
                    raise SourceError(f"{path}:{line_no}: file name {name!r} appears twice")
                seen.add(name)
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


def attach_labels(
    rows: Sequence[tuple[str, tuple[int, ...]]], images: Sequence[ClRecord], num_cl: int | None, source: str = "CSV"
) -> list[ClRecord]:
    """Records in CSV order: the image and true label from ``images``, the first ``num_cl`` CLs from ``rows``."""
    by_name = {record.name: record for record in images}
    missing = [name for name, _ in rows if name not in by_name]
    if missing:
        raise SourceError(
            f"{source}: {len(missing)} file names have no image in the image source, e.g. {missing[0]!r}; "
            "does --images point at the right archive?"
        )
    cls = select_cls(np.array([labels for _, labels in rows], dtype=np.int64), num_cl, source)
    return [
        ClRecord(name, by_name[name].image, by_name[name].ord_label, tuple(int(c) for c in row))
        for (name, _), row in zip(rows, cls)
    ]
