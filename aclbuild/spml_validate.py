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

import hashlib
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from datasets import Features
from huggingface_hub import DatasetCard

from aclbuild.cards import card_parse_problem
from aclbuild.errors import SourceError
from aclbuild.repository import (
    MANIFEST, SHARD_PATTERN, SplitInfo, hash_rows, read_manifest, spml_row_values, split_shards, stray_files,
)  # fmt: skip
from aclbuild.schema import SPML_COLUMNS
from aclbuild.spml_card import spml_card_problems

_IMAGE_MAGIC = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF8", b"BM")


def validate_spml_repository(folder: str | Path) -> list[str]:
    """Every problem found in the SPML repository ``folder`` (an empty list means valid)."""
    from aclbuild.validate import _card_features, _declared_splits, _manifest_mismatches

    folder = Path(folder)
    problems = [f"{p.relative_to(folder)}: loading scripts are not allowed" for p in folder.rglob("*.py")]
    readme = folder / "README.md"
    if not readme.is_file():
        return problems + ["README.md (the dataset card) is missing"]
    try:
        text = readme.read_text(encoding="utf-8")
        card = DatasetCard(text)
    except UnicodeDecodeError:
        return problems + ["README.md (the dataset card) is not UTF-8 text"]
    except Exception as exc:  # noqa: BLE001 - any parse failure is a problem to report
        return problems + [card_parse_problem(exc, text)]
    problems += spml_card_problems(card)
    data = card.data.to_dict()
    problems += [f"data/{p.name}: not named {{split}}-XXXXX-of-XXXXX.parquet" for p in stray_files(folder)]
    shards = split_shards(folder)
    if "train" not in shards:
        problems.append("split 'train' has no shards; rebuild the folder with `aclbuild build`")
    configured = {f["split"] for c in data.get("configs") or [] for f in c.get("data_files") or []}
    for split in set(shards) ^ configured:
        where = "not in the card's configs" if split in shards else "declared but has no shards"
        problems.append(f"split '{split}' is {where}")
    card_features = _card_features(data, problems)
    manifest: dict[str, SplitInfo] = {}
    try:
        manifest = read_manifest(folder, where=MANIFEST).splits
    except SourceError as exc:
        problems.append(str(exc))
    problems += _manifest_mismatches(manifest, shards)
    declared = _declared_splits(data)
    for split, paths in shards.items():
        problems += _check_split(split, paths, card_features, declared.get(split), manifest.get(split))
    return problems


def _check_split(split: str, paths: list[Path], card_features, declared_count, manifest_entry) -> list[str]:
    """The shards of one split: complete, the SPML columns and Features, their labels, images and content hash."""
    problems = []
    indices = [int(SHARD_PATTERN.match(p.name)["index"]) for p in paths]
    counts = {int(SHARD_PATTERN.match(p.name)["count"]) for p in paths}
    if len(counts) != 1 or sorted(indices) != list(range(counts.pop())):
        problems.append(f"split '{split}': shards {[p.name for p in paths]} are not a complete 00000..n-1 set")
    try:
        tables = [pq.read_table(p) for p in paths]
    except (pa.ArrowException, OSError) as exc:
        return problems + [f"split '{split}': a shard cannot be read ({exc})"]
    for path, table in zip(paths, tables):
        if tuple(table.column_names) != SPML_COLUMNS:
            return problems + [f"data/{path.name}: columns {table.column_names}, expected {list(SPML_COLUMNS)}"]
        try:
            shard_features = Features.from_arrow_schema(table.schema)
        except Exception:  # noqa: BLE001 - foreign metadata
            shard_features = None
        if card_features is not None and shard_features != card_features:
            problems.append(f"data/{path.name}: features differ from the card's dataset_info")
    table = pa.concat_tables(tables)
    if declared_count is not None and declared_count != table.num_rows:
        problems.append(f"split '{split}': card says {declared_count} examples, shards hold {table.num_rows}")
    if table.column("names").null_count:
        problems.append(f"split '{split}': every row needs a name ({table.column('names').null_count} have none)")
    if card_features is not None and "observed_label" in card_features:
        problems += label_problems(split, table, card_features["observed_label"].num_classes)
    rows = spml_row_values(table)
    bad = [row.name for row in rows if not row.image or not row.image.startswith(_IMAGE_MAGIC)]
    if bad:
        problems.append(f"split '{split}': {len(bad)} images are empty or not JPEG/PNG/GIF/BMP, e.g. {bad[0]!r}")
    if manifest_entry:
        digest = hashlib.sha256()
        hash_rows(digest, rows)
        if digest.hexdigest() != manifest_entry.sha256:
            problems.append(f"split '{split}': content differs from the build's recorded hash in {MANIFEST}")
    return problems


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
