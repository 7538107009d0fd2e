"""Single-positive multi-label (SPML) repositories in the same folder format: what tells one apart, its row groups,
its rows read back.

An SPML repository's shards hold :class:`aclbuild.schema.SpmlSchema`'s columns ``names``, ``images`` (the source's
image file bytes, JPEG as distributed), ``labels`` (every positive, ascending) and ``observed_label`` (null outside
the train split). It is told apart from a CL repository by one thing: its columns hold ``observed_label``
(:func:`is_spml_columns`, :func:`is_spml_repository`).

Example:
    >>> import pyarrow as pa
    >>> from aclbuild.schema import SpmlSchema, SpmlRecord
    >>> schema = SpmlSchema(("cat", "dog")).arrow_schema()
    >>> batch = spml_record_batch([SpmlRecord("a.jpg", None, (0, 1), 1), SpmlRecord("b.jpg", None, (0,))],
    ...                           [b"\\xff\\xd8a", b"\\xff\\xd8b"], schema)
    >>> [tuple(r) for r in spml_row_values(batch)]
    [('a.jpg', b'\\xff\\xd8a', [0, 1], 1), ('b.jpg', b'\\xff\\xd8b', [0], None)]
    >>> is_spml_columns(batch.schema.names), is_spml_columns(["names", "images", "ord_labels", "cl_labels"])
    (True, False)
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from aclbuild.errors import SourceError
from aclbuild.repository.hashing import SpmlRow, spml_hash_parts
from aclbuild.repository.layout import split_shards
from aclbuild.schema import SpmlRecord

SPML_MARKER = "observed_label"  # the column only an SPML repository has
# write_split runs encoders on several threads; a tar's members are read through one shared file position, which
# tarfile does not guard, so source files are read one at a time (reading is I/O; there is nothing to encode)
_SOURCE_READ = threading.Lock()


def is_spml_columns(names: Iterable[str]) -> bool:
    """Whether columns (a table's, a schema's or a card's feature names) are an SPML repository's."""
    return SPML_MARKER in set(names)


def is_spml_repository(folder: str | Path) -> bool:
    """Whether ``folder``'s first shard has the SPML columns (False when it has no readable shard)."""
    shards = split_shards(folder)
    if not shards:
        return False
    try:
        return is_spml_columns(pq.read_schema(next(iter(shards.values()))[0]).names)
    except (pa.ArrowException, OSError):
        return False


def spml_record_batch(rows: Sequence[SpmlRecord], images: Sequence[bytes], schema: pa.Schema) -> pa.RecordBatch:
    """One row group of :class:`aclbuild.schema.SpmlSchema`'s columns; ``images`` are stored as they are."""
    image_type = schema.field("images").type
    columns = [
        pa.array([r.name for r in rows], pa.string()),
        pa.StructArray.from_arrays(
            [pa.array(list(images), pa.binary()), pa.nulls(len(rows), pa.string())], fields=list(image_type)
        ),
        pa.array([[int(k) for k in r.labels] for r in rows], schema.field("labels").type),
        pa.array([r.observed_label for r in rows], pa.int64()),
    ]
    return pa.RecordBatch.from_arrays(columns, schema=schema)


def encode_spml_chunk(records, positions: range, split: str) -> tuple[list, list[bytes], np.ndarray, bytes]:
    """The records at ``positions`` of :class:`aclbuild.loaders.spml_source.SpmlRecords` without pixels, their
    image files' bytes as the source holds them (nothing is decoded or re-encoded), sizes (file + name + labels) and
    content hash input: :func:`aclbuild.repository.write_split`'s ``encode`` for SPML rows."""
    rows, images = [], []
    for i in positions:
        record = records[i]
        with _SOURCE_READ:
            data = records.part.image_bytes(int(records.positions[i]))
        if not data:
            raise SourceError(f"{split}: image {record.name!r} is an empty file in {records.part.tree.label}")
        rows.append(SpmlRecord(record.name, None, record.labels, record.observed_label))
        images.append(data)
    sizes = np.array([len(d) + len(r.name) + 8 * (len(r.labels) + 1) for r, d in zip(rows, images)], dtype=np.int64)
    hashed = b"".join(b for r, d in zip(rows, images) for b in spml_hash_parts(r.name, d, r.labels, r.observed_label))
    return rows, images, sizes, hashed


def spml_row_values(table: pa.Table | pa.RecordBatch) -> list[SpmlRow]:
    """(name, image bytes, labels, observed_label or None) per row, in order: what the content hash covers."""
    column = table.column("images")
    column = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    images = column.field("bytes").to_pylist()
    names = table.column("names").to_pylist()
    labels = table.column("labels").to_pylist()
    observed = table.column("observed_label").to_pylist()
    return [SpmlRow(*row) for row in zip(names, images, labels, observed)]


def spml_label_matrix(labels: Sequence[Sequence[int] | None], num_classes: int) -> np.ndarray:
    """The N x K 0/1 matrix of per-row positive lists (a null list has none).

    Example:
        >>> spml_label_matrix([[0, 2], [], None], 3).tolist()
        [[1, 0, 1], [0, 0, 0], [0, 0, 0]]
    """
    matrix = np.zeros((len(labels), num_classes), dtype=np.uint8)
    for i, row in enumerate(labels):
        matrix[i, list(row or ())] = 1
    return matrix
