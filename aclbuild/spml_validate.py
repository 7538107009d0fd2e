"""`aclbuild validate` on a single-positive multi-label (SPML) repository: the card, the folder layout and the
manifest as for a CL repository (:mod:`aclbuild.validate`'s checks), then the SPML rows.

Example:
    >>> import pyarrow as pa
    >>> table = pa.table({"labels": pa.array([[0, 2], [1, 1], [3]]), "observed_label": pa.array([2, 0, None])})
    >>> label_problems("train", table, num_classes=3)   # doctest: +NORMALIZE_WHITESPACE
    ["split 'train': labels not ascending and unique, e.g. row 1",
     "split 'train': observed_label not among the row's labels, e.g. row 1",
     "split 'train': labels outside 0..2, e.g. row 2"]
    >>> label_problems("test", pa.table({"labels": pa.array([[1]]), "observed_label": pa.array([1])}), 3)
    ["split 'test': observed_label must be null outside train (1 rows hold one); rebuild the folder"]
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from aclbuild.errors import SourceError
from aclbuild.repository import MANIFEST, SplitInfo, read_manifest, spml_row_values
from aclbuild.schema import SPML_COLUMNS
from aclbuild.spml_card import spml_card_problems
from aclbuild.validate import _manifest_mismatches, check_card_and_layout, hash_problems, read_split

_IMAGE_MAGIC = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF8", b"BM")


def validate_spml_repository(folder: str | Path) -> list[str]:
    """Every problem found in the SPML repository ``folder`` (an empty list means valid)."""

    folder = Path(folder)
    problems, parts = check_card_and_layout(folder, spml_card_problems)
    if parts is None:
        return problems
    if "train" not in parts.shards:
        problems.append("split 'train' has no shards; rebuild the folder with `aclbuild build`")
    manifest: dict[str, SplitInfo] = {}
    try:
        manifest = read_manifest(folder, where=MANIFEST).splits
    except SourceError as exc:
        problems.append(str(exc))
    problems += _manifest_mismatches(manifest, parts.shards)
    for split, paths in parts.shards.items():
        problems += _check_split(split, paths, parts.card_features, parts.declared.get(split), manifest.get(split))
    return problems


def _check_split(split: str, paths: list[Path], card_features, declared_count, manifest_entry) -> list[str]:
    """The shards of one split: complete, the SPML columns and Features, their labels, images and content hash."""
    problems, table = read_split(split, paths, SPML_COLUMNS, card_features, declared_count)
    if table is None:
        return problems
    if table.column("names").null_count:
        problems.append(f"split '{split}': every row needs a name ({table.column('names').null_count} have none)")
    if card_features is not None and "observed_label" in card_features:
        problems += label_problems(split, table, card_features["observed_label"].num_classes)
    rows = spml_row_values(table)
    bad = [row.name for row in rows if not row.image or not row.image.startswith(_IMAGE_MAGIC)]
    if bad:
        problems.append(f"split '{split}': {len(bad)} images are empty or not JPEG/PNG/GIF/BMP, e.g. {bad[0]!r}")
    return problems + hash_problems(split, rows, manifest_entry)


def label_problems(split: str, table: pa.Table, num_classes: int) -> list[str]:
    """What is wrong with a split's ``labels`` and ``observed_label``: indices out of range, a list not ascending
    and unique (or null), an observed label that is not one of the row's positives, one outside train."""
    labels = table.column("labels").to_pylist()
    observed = table.column("observed_label").to_pylist()
    found: dict[str, int] = {}
    for i, (row, seen) in enumerate(zip(labels, observed)):
        if row is None:
            found.setdefault("labels null (a row with no positive stores an empty list)", i)
            continue
        if any(k < 0 or k >= num_classes for k in row):
            found.setdefault(f"labels outside 0..{num_classes - 1}", i)
        if row != sorted(set(row)):
            found.setdefault("labels not ascending and unique", i)
        if seen is not None and not 0 <= seen < num_classes:
            found.setdefault(f"observed_label outside 0..{num_classes - 1}", i)
        elif seen is not None and seen not in row:
            found.setdefault("observed_label not among the row's labels", i)
    problems = [f"split '{split}': {what}, e.g. row {i}" for what, i in found.items()]
    held = sum(seen is not None for seen in observed)
    if split != "train" and held:
        problems.append(f"split '{split}': observed_label must be null outside train ({held} rows hold one); "
                        "rebuild the folder")  # fmt: skip
    return problems
