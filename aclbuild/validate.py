"""Check a repository folder the way the Hub and a downstream user will read it.

Example:
    >>> validate_repository("out/aclcifar10")   # [] when valid, else one line per problem   # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from datasets import DatasetInfo, Features
from huggingface_hub import DatasetCard

from aclbuild.cards import card_parse_problem, card_problems
from aclbuild.errors import SourceError, UnknownNameError
from aclbuild.registry import get_variant
from aclbuild.repository import (
    MANIFEST, SHARD_PATTERN, SplitInfo, hash_rows, is_spml_repository, label_arrays, missing_cl_rows, read_manifest,
    row_values, split_shards, stray_files,
)  # fmt: skip
from aclbuild.schema import COLUMNS, NO_LABEL

_IMAGE_MAGIC = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff")


def validate_repository(folder: str | Path) -> list[str]:
    """Every problem found in ``folder`` (an empty list means valid)."""
    folder = Path(folder)
    if not folder.is_dir():
        return [f"{folder} is not a folder"]
    if is_spml_repository(folder):  # a single-positive multi-label set: its own card and rows
        from aclbuild.spml_validate import validate_spml_repository

        return validate_spml_repository(folder)
    problems, parts = check_card_and_layout(folder, card_problems)
    if parts is None:
        return problems
    if not parts.shards:
        return problems + ["data/ holds no Parquet shards"]
    manifest, unique_train_names = _read_manifest(folder, problems)
    problems += _manifest_mismatches(manifest, parts.shards)
    for split, paths in parts.shards.items():
        unique_names = split == "train" and unique_train_names
        problems += _check_split(split, paths, parts.card_features, parts.declared.get(split), manifest.get(split),
                                 unique_names)  # fmt: skip
    for image in ("figures/transition_matrix.png",):
        if f"]({image})" in parts.card.text and not (folder / image).is_file():
            problems.append(f"the card shows {image} but the file is missing")
    return problems


@dataclass(frozen=True)
class CardAndLayout:
    """What :func:`check_card_and_layout` read: the card, its Features and declared split sizes, the shards."""

    card: DatasetCard
    card_features: Features | None
    declared: dict[str, int]
    shards: dict[str, list[Path]]


def check_card_and_layout(folder: Path, card_checks: Callable) -> tuple[list[str], CardAndLayout | None]:
    """The checks every repository (CL or SPML) gets before its rows: no loading script, a UTF-8 card that parses
    and passes ``card_checks``, shard names, the card's configs against the shards. None when the card is unreadable.
    """
    problems = [f"{p.relative_to(folder)}: loading scripts are not allowed" for p in folder.rglob("*.py")]
    readme = folder / "README.md"
    if not readme.is_file():
        return problems + ["README.md (the dataset card) is missing"], None
    try:
        text = readme.read_text(encoding="utf-8")
        card = DatasetCard(text)
    except UnicodeDecodeError:
        return problems + ["README.md (the dataset card) is not UTF-8 text"], None
    except Exception as exc:  # noqa: BLE001 - any parse failure is a problem to report
        return problems + [card_parse_problem(exc, text)], None
    problems += card_checks(card)
    data = card.data.to_dict()
    problems += [f"data/{p.name}: not named {{split}}-XXXXX-of-XXXXX.parquet" for p in stray_files(folder)]
    shards = split_shards(folder)
    configured = {f["split"] for c in data.get("configs") or [] for f in c.get("data_files") or []}
    for split in set(shards) ^ configured:
        where = "not in the card's configs" if split in shards else "declared but has no shards"
        problems.append(f"split '{split}' is {where}")
    card_features = _card_features(data, problems)
    return problems, CardAndLayout(card, card_features, _declared_splits(data), shards)


def manifest_problems(folder: str | Path) -> list[str]:
    """What the build's manifest (aclbuild.json) lists that the folder no longer holds: a split, a shard, rows (an
    empty list when all is there). Reads the shards' Parquet footers only, not their rows, so `aclbuild stats` can
    afford it; the content hash is checked by :func:`validate_repository` alone (it reads every image).

    Example:
        >>> manifest_problems("out/aclcifar10")[0]   # its train shard deleted   # doctest: +SKIP
        "split 'train': aclbuild.json records 50000 rows in 1 shard(s), data/ holds none; restore them or rebuild ..."
    """
    problems: list[str] = []
    manifest, _ = _read_manifest(Path(folder), problems)
    return problems + _manifest_mismatches(manifest, split_shards(folder))


def _manifest_mismatches(manifest: dict[str, SplitInfo], shards: dict[str, list[Path]]) -> list[str]:
    """Splits, shard counts and row counts (from the Parquet footers) that differ from the manifest's ``splits``.

    Example:
        >>> _manifest_mismatches({"train": SplitInfo("train", 4, 10, 1, "")}, {})   # doctest: +ELLIPSIS
        ["split 'train': aclbuild.json records 4 rows in 1 shard(s), data/ holds none; restore them or rebuild ..."]
    """
    problems = []
    for split, entry in manifest.items():
        paths = shards.get(split, [])
        listed = f"{MANIFEST} records {entry.num_examples} rows in {entry.num_shards} shard(s)"
        if not paths:
            problems.append(f"split '{split}': {listed}, data/ holds none; restore them or rebuild the folder")
            continue
        if len(paths) != entry.num_shards:
            problems.append(f"split '{split}': {listed}, data/ holds {len(paths)}; restore them or rebuild the folder")
            continue
        try:
            rows = sum(pq.read_metadata(path).num_rows for path in paths)
        except (pa.ArrowException, OSError) as exc:
            problems.append(f"split '{split}': a shard cannot be read ({exc})")
            continue
        if rows != entry.num_examples:
            problems.append(f"split '{split}': {listed}, its shards hold {rows} rows; rebuild the folder")
    problems += [f"split '{split}': data/ holds its shards but {MANIFEST} does not list it" for split in shards
                 if manifest and split not in manifest]  # fmt: skip
    return problems


def _declared_splits(data: dict) -> dict[str, int]:
    info = data.get("dataset_info") or {}
    return {s["name"]: s.get("num_examples") for s in info.get("splits") or [] if isinstance(s, dict)}


def _card_features(data: dict, problems: list[str]) -> Features | None:
    try:
        return DatasetInfo._from_yaml_dict(dict(data.get("dataset_info") or {})).features
    except Exception:  # noqa: BLE001 - already reported by card_problems
        return None


def _read_manifest(folder: Path, problems: list[str]) -> tuple[dict[str, SplitInfo], bool]:
    """The manifest's splits, and whether its dataset's base names every training image once (then a repeated name
    in the train split is a defect; CIFAR-100's train split itself repeats one, so cifar20's may)."""
    try:
        manifest = read_manifest(folder, where=MANIFEST)
    except SourceError as exc:  # missing, unparseable or malformed: one problem
        problems.append(str(exc))
        return {}, False
    try:
        unique_names = get_variant(str(manifest.dataset)).base.unique_names
    except UnknownNameError:
        unique_names = False  # a dataset this version does not know: rows are told apart by position
    return manifest.splits, unique_names


def read_split(split: str, paths: list[Path], columns: tuple[str, ...], card_features: Features | None,
               declared_count: int | None) -> tuple[list[str], pa.Table | None]:  # fmt: skip
    """A split's shards read and checked as every repository's are: a complete 00000..n-1 set, the expected
    ``columns``, the card's Features, the card's example count. The table is None when it cannot be read whole."""
    problems = []
    indices = [int(SHARD_PATTERN.match(p.name)["index"]) for p in paths]
    counts = {int(SHARD_PATTERN.match(p.name)["count"]) for p in paths}
    if len(counts) != 1 or sorted(indices) != list(range(counts.pop())):
        problems.append(f"split '{split}': shards {[p.name for p in paths]} are not a complete 00000..n-1 set")
    try:
        tables = [pq.read_table(p) for p in paths]
    except (pa.ArrowException, OSError) as exc:
        return problems + [f"split '{split}': a shard cannot be read ({exc})"], None
    for path, table in zip(paths, tables):
        if tuple(table.column_names) != columns:
            return problems + [f"data/{path.name}: columns {table.column_names}, expected {list(columns)}"], None
        try:
            shard_features = Features.from_arrow_schema(table.schema)
        except Exception:  # noqa: BLE001 - foreign metadata
            shard_features = None
        if card_features is not None and shard_features != card_features:
            problems.append(f"data/{path.name}: features differ from the card's dataset_info")
    table = pa.concat_tables(tables)
    if declared_count is not None and declared_count != table.num_rows:
        problems.append(f"split '{split}': card says {declared_count} examples, shards hold {table.num_rows}")
    return problems, table


def hash_problems(split: str, rows: list, manifest_entry: SplitInfo | None) -> list[str]:
    """Whether a split's rows still hash to the content hash the build recorded (nothing to say without one)."""
    if not manifest_entry:
        return []
    digest = hashlib.sha256()
    hash_rows(digest, rows)
    if digest.hexdigest() != manifest_entry.sha256:
        return [f"split '{split}': content differs from the build's recorded hash in {MANIFEST}"]
    return []


def _check_split(split, paths, card_features, declared_count, manifest_entry, unique_names) -> list[str]:
    problems, table = read_split(split, paths, COLUMNS, card_features, declared_count)
    if table is None:
        return problems
    names = table.column("names").to_pylist()
    if None in names:
        problems.append(f"split '{split}': every row needs a name ({names.count(None)} have none)")
    elif unique_names and len(set(names)) != len(names):
        problems.append(f"split '{split}': names must be unique (the base's source names every image once)")
    num_classes = card_features["ord_labels"].num_classes if card_features is not None else None
    cl_problem = _cl_presence_problem(split, table)
    if cl_problem:
        return problems + [cl_problem]
    ord_labels, cl_labels = label_arrays(table)
    if num_classes is not None:
        for what, values in (("ord_labels", ord_labels), ("cl_labels", cl_labels)):
            if values is not None and values.size and (values.min() < 0 or values.max() >= num_classes):
                problems.append(f"split '{split}': {what} outside 0..{num_classes - 1}")
    rows = row_values(table)
    bad = [name for name, image, _, _ in rows if not image or not image.startswith(_IMAGE_MAGIC)]
    if bad:
        problems.append(f"split '{split}': {len(bad)} images are empty or not PNG/JPEG, e.g. {bad[0]!r}")
    return problems + hash_problems(split, rows, manifest_entry)


def _cl_presence_problem(split: str, table: pa.Table) -> str | None:
    """Whether each row has its complementary labels: every row of a train split, no row of the test split (each
    stores ``NO_LABEL`` -1s there). A null test split (aclbuild 0.1) loads, but torch's DataLoader cannot batch it.

    Example:
        >>> table = pa.table({"ord_labels": [0, 1], "cl_labels": pa.array([[1], [-1]], pa.list_(pa.int64(), 1))})
        >>> _cl_presence_problem("train", table)
        "split 'train': every image needs complementary labels (1 rows have none)"
    """
    column = table.column("cl_labels")
    if split == "test" and column.null_count and column.null_count == table.num_rows:
        return (
            "split 'test': cl_labels are null (an aclbuild before 0.2 wrote them), which torch's DataLoader cannot "
            f"batch; rebuild the folder with `aclbuild build` (it stores {NO_LABEL}, no label, in the test split)"
        )
    missing = missing_cl_rows(column)
    if split != "test" and missing:
        return f"split '{split}': every image needs complementary labels ({missing} rows have none)"
    if 0 < missing < table.num_rows:
        return f"split '{split}': {missing} of {table.num_rows} rows have no complementary labels; all or none must"
    return None
