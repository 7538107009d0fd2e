"""Reading a repository's rows: its tables, its Features, and one decoder of the four columns that every reader
(validate, verify, export, stats, the training data) goes through.

Example:
    >>> import pyarrow as pa
    >>> images = pa.array([{"bytes": b"png", "path": None}], pa.struct([("bytes", pa.binary()), ("path", pa.string())]))
    >>> table = pa.table({"names": ["a.png"], "images": images, "ord_labels": [2],
    ...                   "cl_labels": pa.array([[0, 1]], pa.list_(pa.int64(), 2))})
    >>> row_values(table)
    [('a.png', b'png', 2, [0, 1])]
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from aclbuild.errors import SourceError
from aclbuild.png import decode_image
from aclbuild.repository.layout import split_shards
from aclbuild.repository.spml import is_spml_columns, spml_row_values
from aclbuild.schema import NO_LABEL, ClRecord

if TYPE_CHECKING:
    from datasets import Features


@dataclass(frozen=True)
class SplitRows:
    """A split's columns, decoded: ``names`` and ``images`` (PNG bytes) are None when their column was not read;
    ``ord_labels`` is int64 (``NO_LABEL`` where a row has none); ``cl_labels`` is N x m int64, None for a split
    without complementary labels."""

    names: list[str] | None
    images: list[bytes] | None
    ord_labels: np.ndarray
    cl_labels: np.ndarray | None

    def __len__(self) -> int:
        return len(self.ord_labels)


def decode_rows(table: pa.Table | pa.RecordBatch) -> SplitRows:
    """The rows of a repository table (or a batch of one), whichever of ``names`` and ``images`` it holds."""
    columns = table.column_names if isinstance(table, pa.Table) else table.schema.names
    names = table.column("names").to_pylist() if "names" in columns else None
    images = None
    if "images" in columns:
        column = table.column("images")
        column = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
        images = column.field("bytes").to_pylist()
    ord_labels, cl_labels = label_arrays(table)
    return SplitRows(names, images, ord_labels, cl_labels)


def row_values(table: pa.Table | pa.RecordBatch) -> list[tuple]:
    """(name, image bytes, ord_label, cl_labels list or None) per row, in order: what the content hash covers. An
    SPML table's rows are :class:`aclbuild.repository.hashing.SpmlRow` (name, image bytes, labels, observed_label)."""
    if is_spml_columns(table.schema.names):
        return spml_row_values(table)
    rows = decode_rows(table)
    cls = [None] * len(rows) if rows.cl_labels is None else rows.cl_labels.tolist()
    return list(zip(rows.names, rows.images, rows.ord_labels.tolist(), cls))


def iter_records(folder: Path | str, split: str) -> Iterator[ClRecord]:
    """Records of ``split`` in stored order, images decoded to arrays; a shard or an image that does not read is
    one error naming the shard (and the row)."""
    for path in _split_paths(folder, split):
        rows = decode_rows(_read_shard(path, split))
        for i, name in enumerate(rows.names):
            cls = None if rows.cl_labels is None else tuple(int(c) for c in rows.cl_labels[i])
            try:
                image = decode_image(rows.images[i])
            except Exception as exc:  # noqa: BLE001 - Pillow raises many types for damaged bytes
                raise SourceError(
                    f"{path}: row {i} ({name!r}) holds an image that does not decode ({exc}); the shard is damaged: "
                    "rebuild the repository or download it again"
                ) from None
            yield ClRecord(name, image, int(rows.ord_labels[i]), cls)


def read_table(folder: Path | str, split: str, columns: list[str] | None = None) -> pa.Table:
    """All shards of ``split`` as one Arrow table (only ``columns`` when given: labels load without images)."""
    return pa.concat_tables(_read_shard(p, split, columns) for p in _split_paths(folder, split))


def _split_paths(folder: Path | str, split: str) -> list[Path]:
    paths = split_shards(folder).get(split)
    if not paths:
        raise SourceError(f"{folder} has no '{split}' split (no data/{split}-*.parquet files)")
    return paths


def _read_shard(path: Path, split: str, columns: list[str] | None = None) -> pa.Table:
    try:
        return pq.read_table(path, columns=columns)
    except (pa.ArrowException, OSError) as exc:
        problem = str(exc).rstrip(".")
        raise SourceError(f"cannot read {path}, a '{split}' shard: {problem}; rebuild the repository or download it "
                          "again") from None  # fmt: skip


def read_features(folder: Path | str) -> Features:
    """The Features stored in the Arrow metadata of the repository's first shard."""
    from datasets import Features

    shards = split_shards(folder)
    if not shards:
        raise SourceError(f"{folder} holds no data/*.parquet shards; is it a repository that `aclbuild build` wrote?")
    path = next(iter(shards.values()))[0]
    try:
        return Features.from_arrow_schema(pq.read_schema(path))
    except Exception as exc:  # noqa: BLE001 - pyarrow and datasets raise many types for a foreign file
        raise SourceError(f"cannot read the features of {path}: {exc}") from None


def label_arrays(table: pa.Table | pa.RecordBatch) -> tuple[np.ndarray, np.ndarray | None]:
    """(ord_labels as an int64 vector, ``NO_LABEL`` where null; cl_labels as an N x m int64 matrix, or None for a
    split without CLs).

    A split without CLs stores every row's cl_labels as ``NO_LABEL`` (-1); repositories of aclbuild before 0.2
    stored null there, which reads the same. Raises :class:`SourceError` when only some rows have complementary
    labels (no split a build writes does).

    Example:
        >>> no_cls = pa.array([[-1, -1], [-1, -1]], pa.list_(pa.int64(), 2))
        >>> ord_labels, cl_labels = label_arrays(pa.table({"ord_labels": [0, None], "cl_labels": no_cls}))
        >>> ord_labels.tolist(), cl_labels is None
        ([0, -1], True)
    """
    ord_labels = pc.fill_null(table.column("ord_labels"), NO_LABEL).to_numpy().astype(np.int64)
    column = table.column("cl_labels")
    column = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    missing = missing_cl_rows(column)
    if missing == len(column):
        return ord_labels, None
    if missing:
        raise SourceError(
            f"{missing} of {len(column)} rows have no cl_labels: a split has complementary labels on every row "
            "(train) or on none (test); `aclbuild validate` lists the problems of the folder"
        )
    width = column.type.list_size if pa.types.is_fixed_size_list(column.type) else -1
    return ord_labels, column.flatten().to_numpy(zero_copy_only=False).astype(np.int64).reshape(len(column), width)


def missing_cl_rows(column: pa.Array | pa.ChunkedArray) -> int:
    """How many rows of a cl_labels column have no complementary labels: null, or every value ``NO_LABEL``.

    Example:
        >>> missing_cl_rows(pa.array([[-1, -1], None, [2, 0]], pa.list_(pa.int64(), 2)))
        2
    """
    column = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if not pa.types.is_fixed_size_list(column.type) or not len(column):
        return column.null_count
    values = column.fill_null([0] * column.type.list_size).flatten().to_numpy(zero_copy_only=False)
    return column.null_count + int((values.reshape(len(column), -1) == NO_LABEL).all(axis=1).sum())
