"""Single-positive multi-label (SPML) data for training: a repository folder or Hub id read into three splits.

A split keeps its images as the encoded files (JPEG/PNG bytes), decoded lazily by the training pipeline
(:mod:`aclbuild.bench.spml_pipeline`), its true positives as an N x K multi-hot and its observed positive as one
class index per image (-1 where there is none: every validation and test row, and a training image without a
positive). The columns are those of :class:`aclbuild.schema.SpmlSchema`; the class names come from the Features in
the shards' Parquet metadata (a folder) or from datasets' Features (a Hub id).

Only torch is imported at module level (pyarrow and datasets when a split is loaded), so the training code and the
benchmark script run where datasets is not installed.

Example:
    >>> split = SpmlSplit("toy", ("cat", "dog", "car"), [b"", b""], torch.tensor([[1, 0, 1], [0, 1, 0]],
    ...                   dtype=torch.uint8), torch.tensor([2, -1]))
    >>> observed_matrix(split).tolist()
    [[0, 0, 1], [0, 0, 0]]
    >>> len(split), split.num_classes
    (2, 3)
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from aclbuild.errors import InputError, SourceError

SPML_SPLITS = ("train", "validation", "test")
LABEL_COLUMNS = ("labels", "observed_label")


@dataclass(frozen=True, eq=False)
class SpmlSplit:
    """One split: encoded images, N x K uint8 multi-hot true positives, N int64 observed positives (-1: none)."""

    name: str  # the dataset's pretty name, for messages
    class_names: tuple[str, ...]
    images: Sequence[bytes]  # encoded image files, decoded lazily by the training data pipeline
    labels: torch.Tensor  # N x K uint8 multi-hot of the true positives
    observed: torch.Tensor  # N int64, the observed positive, -1 where none (validation/test: all -1)

    def __post_init__(self) -> None:
        n, k = len(self.images), len(self.class_names)
        if tuple(self.labels.shape) != (n, k) or tuple(self.observed.shape) != (n,):
            raise InputError(f"{self.name}: {n} images and {k} classes, but labels {tuple(self.labels.shape)} and "
                             f"observed {tuple(self.observed.shape)}")  # fmt: skip
        if n and not ((self.observed >= -1) & (self.observed < k)).all():
            raise InputError(f"{self.name}: an observed label lies outside -1..{k - 1}")

    def __len__(self) -> int:
        return len(self.images)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


class ArrowImages(Sequence):
    """The ``bytes`` of an Arrow ``images`` column (struct of bytes and path), read one row at a time.

    Keeping the Arrow column instead of a list of Python bytes avoids a second copy of every image in memory.

    Example:
        >>> import pyarrow as pa
        >>> column = pa.array([{"bytes": b"ab", "path": None}, {"bytes": b"c", "path": "x.jpg"}])
        >>> images = ArrowImages(column)
        >>> len(images), images[1], images[-2]
        (2, b'c', b'ab')
    """

    def __init__(self, column) -> None:
        import pyarrow as pa

        column = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
        self._bytes = column.field("bytes")

    def __len__(self) -> int:
        return len(self._bytes)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        data = self._bytes[index].as_py()
        if data is None:
            raise SourceError(f"image row {index} holds no bytes; rebuild the repository with `aclbuild build`")
        return data


def check_evaluable(split: SpmlSplit, what: str) -> None:
    """Refuse a ``what`` (validation, test) split whose mAP is undefined: one with no positive label at all.

    Example:
        >>> check_evaluable(SpmlSplit("toy", ("cat",), [b""], torch.zeros(1, 1, dtype=torch.uint8), torch.tensor([-1])),
        ...                 "test")
        Traceback (most recent call last):
        aclbuild.errors.InputError: toy: no image of the test split has a positive label, so its mAP is undefined; ...
    """
    if len(split) and not split.labels.any():  # (an empty split is refused where it would be trained on)
        raise InputError(f"{split.name}: no image of the {what} split has a positive label, so its mAP is undefined; "
                         "build the set from a source whose parts have labelled images")  # fmt: skip


def observed_matrix(split: SpmlSplit) -> torch.Tensor:
    """N x K int64: 1 at each image's observed positive, 0 elsewhere (a row without one is all 0): the losses' input.

    Example:
        >>> split = SpmlSplit("toy", ("a", "b"), [b""], torch.tensor([[1, 1]], dtype=torch.uint8), torch.tensor([1]))
        >>> observed_matrix(split).tolist()
        [[0, 1]]
    """
    matrix = torch.zeros(len(split), split.num_classes, dtype=torch.int64)
    has = split.observed >= 0
    matrix[has.nonzero().flatten(), split.observed[has]] = 1
    return matrix


def multi_hot(column, num_classes: int, what: str) -> torch.Tensor:
    """N x K uint8 multi-hot of an Arrow list column of class indices.

    Example:
        >>> import pyarrow as pa
        >>> multi_hot(pa.array([[0, 2], [], [1]]), 3, "x").tolist()
        [[1, 0, 1], [0, 0, 0], [0, 1, 0]]
    """
    import numpy as np
    import pyarrow as pa

    column = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    column = column.fill_null([])
    counts = np.diff(column.offsets.to_numpy())
    values = column.flatten().to_numpy(zero_copy_only=False).astype(np.int64)
    if len(values) and (values.min() < 0 or values.max() >= num_classes):
        raise SourceError(f"{what}: a label lies outside 0..{num_classes - 1}; rebuild the repository")
    hot = torch.zeros(len(column), num_classes, dtype=torch.uint8)
    hot[torch.from_numpy(np.repeat(np.arange(len(column)), counts)), torch.from_numpy(values)] = 1
    return hot


def split_of_table(table, name: str, class_names: tuple[str, ...], what: str) -> SpmlSplit:
    """An :class:`SpmlSplit` of an Arrow table with the SPML columns (``what`` names it in messages)."""
    import pyarrow.compute as pc

    observed = pc.fill_null(table.column("observed_label"), -1).to_numpy().astype("int64")
    return SpmlSplit(
        name=name, class_names=class_names, images=ArrowImages(table.column("images")),
        labels=multi_hot(table.column("labels"), len(class_names), what), observed=torch.from_numpy(observed.copy()),
    )  # fmt: skip


def check_spml_columns(columns: Sequence[str], where: str) -> None:
    """Refuse, in one line, a table without the SPML columns (a CL repository says to use ``--task cl``)."""
    if {"ord_labels", "cl_labels"} <= set(columns):
        raise InputError(f"{where} is a complementary-label dataset (ord_labels, cl_labels): use --task cl")
    missing = [c for c in ("images", *LABEL_COLUMNS) if c not in columns]
    if missing:
        raise SourceError(f"{where} has no {', '.join(missing)} column: it is not a single-positive multi-label "
                          "dataset (build one with `aclbuild build ... --dataset voc2012-spml`)")  # fmt: skip


def class_names_of_features(features: dict, where: str) -> tuple[str, ...]:
    """The class names of serialised Features (``labels``: a List of ClassLabel).

    Example:
        >>> from aclbuild.schema import SpmlSchema
        >>> class_names_of_features(SpmlSchema(("cat", "dog")).features_dict(), "x")
        ('cat', 'dog')
    """
    label = features.get("labels", {})
    label = label.get("feature", label)
    names = label.get("names") if isinstance(label, dict) else None
    if not names:
        raise SourceError(f"{where}: the labels feature names no classes; rebuild the repository with `aclbuild build`")
    return tuple(names)


def _folder_name(folder: Path) -> str:
    """The card's pretty_name, else the manifest's dataset, else the folder's name."""
    if (folder / "README.md").is_file():
        from aclbuild.cards import card_pretty_name

        pretty = card_pretty_name(folder)
        if pretty != folder.name:
            return pretty
    from aclbuild.repository import read_manifest

    try:
        return read_manifest(folder).dataset or folder.name
    except SourceError:  # no manifest, or a malformed one: the folder's name will do for messages
        return folder.name


def _load_folder(folder: Path) -> dict[str, SpmlSplit]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from aclbuild.repository.layout import split_shards

    shards = split_shards(folder)
    if not shards:
        raise SourceError(f"{folder} holds no data/*.parquet shards; is it a repository that `aclbuild build` wrote?")
    first = next(iter(shards.values()))[0]
    try:
        schema = pq.read_schema(first)
    except (pa.ArrowException, OSError) as exc:
        raise SourceError(f"cannot read {first}: {exc}; rebuild the repository or download it again") from None
    check_spml_columns(schema.names, str(folder))
    metadata = json.loads((schema.metadata or {}).get(b"huggingface", b"{}"))
    class_names = class_names_of_features(metadata.get("info", {}).get("features", {}), str(first))
    missing = [s for s in SPML_SPLITS if s not in shards]
    if missing:
        raise SourceError(f"{folder} has no {', '.join(missing)} split (data/{missing[0]}-*.parquet); an SPML "
                          "repository has train, validation and test")  # fmt: skip
    name = _folder_name(folder)
    splits = {}
    for split in SPML_SPLITS:
        columns = ["images", *LABEL_COLUMNS]
        try:
            table = pa.concat_tables(pq.read_table(p, columns=columns) for p in shards[split])
        except (pa.ArrowException, OSError) as exc:
            raise SourceError(f"cannot read the {split} shards of {folder}: {' '.join(str(exc).split())[:300]}; "
                              "rebuild the repository or download it again") from None  # fmt: skip
        splits[split] = split_of_table(table, name, class_names, f"{folder} {split}")
    return splits


def _load_hub(repo_id: str) -> dict[str, SpmlSplit]:
    import datasets

    from aclbuild.cl_data import _hub_pretty_name

    name = _hub_pretty_name(repo_id)  # refuses a missing repo or a refused token in one line, as the CL loader
    try:
        loaded = datasets.load_dataset(repo_id)
    except Exception as exc:  # noqa: BLE001 - datasets raises many types for a missing or foreign repository
        raise SourceError(f"cannot load {repo_id!r}: {' '.join(str(exc).split())[:300]}") from None
    missing = [s for s in SPML_SPLITS if s not in loaded]
    if missing:
        raise SourceError(f"{repo_id} has no {', '.join(missing)} split; an SPML dataset has train, validation and "
                          "test")  # fmt: skip
    check_spml_columns(loaded["train"].column_names, repo_id)
    class_names = tuple(loaded["train"].features["labels"].feature.names)
    splits = {}
    for split in SPML_SPLITS:
        part = loaded[split].select_columns(["images", *LABEL_COLUMNS])
        part = part.cast_column("images", datasets.Image(decode=False))  # the stored bytes, decoded in training
        splits[split] = split_of_table(part.with_format("arrow")[:], name, class_names, f"{repo_id} {split}")
    return splits


def load_spml_splits(dataset: str | Path) -> dict[str, SpmlSplit]:
    """{"train", "validation", "test"} of an SPML repository folder or Hub id (org/name).

    A folder is read with pyarrow from its ``data/`` shards; a Hub id with ``datasets.load_dataset`` after the same
    access check as the CL loader. A CL repository, a folder without shards or without one of the three splits is
    one InputError/SourceError line.
    """
    source = str(dataset)
    folder = Path(source)
    if folder.is_dir():
        return _load_folder(folder)
    if not re.fullmatch(r"[\w.-]+/[\w.-]+", source):
        raise SourceError(f"{source} is neither a repository folder nor a Hub dataset id (org/name)")
    return _load_hub(source)
