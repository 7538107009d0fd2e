"""Reading and writing the Parquet shards of a dataset repository folder.

A repository is ``README.md`` (the card), ``data/{split}-{i:05d}-of-{n:05d}.parquet`` and the card's figures. Shards
carry the Features in their Arrow metadata, so ``load_dataset(folder)`` and ``load_dataset("org/name")`` give back
ClassLabel names and fixed-length lists with no extra code.

Example:
    >>> info = write_split(tmp, "train", records, arrow_schema(names, 3))   # doctest: +SKIP
    >>> [r.name for r in iter_records(tmp, "train")][:2]                 # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
from collections.abc import Iterator, Sequence
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from aclbuild.errors import SourceError
from aclbuild.png import decode_image, encode_png_batch
from aclbuild.progress import progress_bar
from aclbuild.schema import NO_LABEL, ClRecord, no_cl_labels

if TYPE_CHECKING:
    from datasets import Features

SPLITS = ("train", "test")
SHARD_PATTERN = re.compile(r"^(?P<split>[a-z]+)-(?P<index>\d{5})-of-(?P<count>\d{5})\.parquet$")
ROWS_PER_ROW_GROUP = 1000
ENCODE_CHUNK = 500  # images per encoder task: small temporaries are reused rather than page-faulted in anew
ENCODE_THREADS = os.cpu_count() or 1
# datasets 5.x's config.DEFAULT_CDC_OPTIONS: the content-defined chunking its ParquetWriter and to_parquet turn on,
# so pages break at content boundaries and a re-push of a relabelled set moves only the changed chunks through Xet.
CDC_OPTIONS = {"min_chunk_size": 256 * 1024, "max_chunk_size": 1024 * 1024, "norm_level": 0}
EMBEDDED_TYPES = ("Image", "Audio", "Video", "Pdf", "Nifti")  # features whose bytes datasets stores as-is


@dataclass(frozen=True)
class SplitInfo:
    """What was written for one split: sizes for the card, the content hash for `verify --against`."""

    name: str
    num_examples: int
    num_bytes: int
    num_shards: int
    sha256: str


def parse_size(text: str) -> int:
    """Bytes in a size like ``500MB``, ``1.5GB``, ``200KiB`` or ``1000``; raises on anything else."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([kmgt]?i?b?)\s*", text.lower())
    if not match:
        raise SourceError(f"cannot read size {text!r}; write it like 500MB, 1GB or 200KiB")
    number, unit = float(match.group(1)), match.group(2).rstrip("b")
    factor = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12, "ki": 2**10, "mi": 2**20, "gi": 2**30}
    if unit not in factor:
        raise SourceError(f"cannot read size {text!r}; write it like 500MB, 1GB or 200KiB")
    return int(number * factor[unit])


def shard_name(split: str, index: int, count: int) -> str:
    return f"{split}-{index:05d}-of-{count:05d}.parquet"


def split_shards(folder: Path | str) -> dict[str, list[Path]]:
    """The shard files of each split in ``folder/data``, sorted by index."""
    shards: dict[str, list[Path]] = {}
    data = Path(folder) / "data"
    for path in sorted(data.glob("*.parquet")) if data.is_dir() else []:
        match = SHARD_PATTERN.match(path.name)
        if match:
            shards.setdefault(match["split"], []).append(path)
    return shards


def record_hash_update(digest, name: str, image_bytes: bytes, ord_label: int, cl_labels) -> None:
    """Feed one row into a split's content hash (names, image bytes, labels; order matters)."""
    digest.update(b"".join(_hash_parts(name, image_bytes, ord_label, cl_labels)))


def _hash_parts(name: str, image_bytes: bytes, ord_label: int, cl_labels) -> tuple[bytes, ...]:
    """The bytes one row feeds into the content hash, in order (a chunk's rows are hashed as one joined string)."""
    labels = f"{ord_label}|{'' if cl_labels is None else ','.join(map(str, cl_labels))}\n"
    return name.encode() + b"\0", len(image_bytes).to_bytes(8, "little"), image_bytes, labels.encode()


def row_values(table: pa.Table) -> list[tuple]:
    """(name, image bytes, ord_label, cl_labels list or None) per row, in order: exactly what the content hash covers."""
    names = table.column("names").to_pylist()
    images = table.column("images").combine_chunks().field("bytes").to_pylist()
    ord_labels, cl_labels = label_arrays(table)
    cls = [None] * len(names) if cl_labels is None else cl_labels.tolist()
    return list(zip(names, images, ord_labels.tolist(), cls))


def hash_rows(digest, rows) -> None:
    """Feed rows of :func:`row_values` into a split's content hash."""
    for name, image, ord_label, cls in rows:
        record_hash_update(digest, name or "", image or b"", ord_label, cls)


# Columns are built from flat buffers: faster than pa.array on Python lists, which also imports pandas (0.15 s) to
# test whether a list is array-like.
def _validity(missing: np.ndarray) -> pa.Buffer | None:
    """Arrow's validity bitmap (1 = present) of a boolean "missing" vector, or None when nothing is missing."""
    return pa.py_buffer(np.packbits(~missing, bitorder="little")) if missing.any() else None


def _packed(values: Sequence[bytes], arrow_type: pa.DataType) -> pa.Array:
    """A binary or string array of ``values`` (bytes; UTF-8 for strings)."""
    offsets = np.zeros(len(values) + 1, dtype=np.int32)
    np.cumsum([len(v) for v in values], out=offsets[1:])
    return pa.Array.from_buffers(arrow_type, len(values), [None, pa.py_buffer(offsets), pa.py_buffer(b"".join(values))])


def _int_labels(values: list, arrow_type: pa.DataType) -> pa.Array:
    """int64 labels (None = null): one per row for int64, a tuple per row for a fixed-size list of int64."""
    missing = np.array([v is None for v in values], dtype=bool)
    is_list = pa.types.is_fixed_size_list(arrow_type)  # a list of one CL is still a list, not a scalar
    width = arrow_type.list_size if is_list else 1
    empty = (0,) * width if is_list else 0
    flat = np.array([empty if v is None else v for v in values], dtype=np.int64).reshape(-1)
    if not is_list:
        return pa.Array.from_buffers(arrow_type, len(values), [_validity(missing), pa.py_buffer(flat)])
    items = pa.Array.from_buffers(pa.int64(), len(flat), [None, pa.py_buffer(flat)])
    return pa.Array.from_buffers(arrow_type, len(values), [_validity(missing)], children=[items])


def _record_batch(rows: Sequence[ClRecord], pngs: Sequence[bytes], schema: pa.Schema) -> pa.RecordBatch:
    """One row group of the repository's columns (a row without CLs stores :func:`aclbuild.schema.no_cl_labels`)."""
    cl_type = schema.field("cl_labels").type
    no_cls = no_cl_labels(cl_type.list_size)
    images = pa.StructArray.from_arrays(
        [_packed(pngs, pa.binary()), pa.nulls(len(rows), pa.string())], fields=list(schema.field("images").type)
    )
    columns = [
        _packed([r.name.encode() for r in rows], pa.string()),
        images,
        _int_labels([r.ord_label for r in rows], pa.int64()),
        _int_labels([no_cls if r.cl_labels is None else r.cl_labels for r in rows], cl_type),
    ]
    return pa.RecordBatch.from_arrays(columns, schema=schema)


def _leaf_paths(path: str, arrow_type: pa.DataType) -> list[str]:
    """Parquet's leaf column paths of a field (``images.bytes``, ``cl_labels.list.element``), as datasets lists them."""
    if pa.types.is_struct(arrow_type):
        return [leaf for field in arrow_type for leaf in _leaf_paths(f"{path}.{field.name}", field.type)]
    if pa.types.is_list(arrow_type) or pa.types.is_large_list(arrow_type) or pa.types.is_fixed_size_list(arrow_type):
        return _leaf_paths(f"{path}.list.element", arrow_type.value_type)
    return [path]


def parquet_writer_options(schema: pa.Schema) -> dict:
    """The ``pq.ParquetWriter`` options of a shard: those datasets 5.x's Parquet writers pass.

    Page index written; content-defined chunking with datasets' default options; embedded media bytes (the PNGs)
    stored PLAIN and uncompressed (they are compressed already; a second pass only costs time), every other leaf
    column snappy with a dictionary (datasets' ``get_parquet_column_options``). tests/test_parquet_writer.py compares
    this with what datasets computes at runtime.
    """
    meta = (schema.metadata or {}).get(b"huggingface")
    feats = json.loads(meta)["info"]["features"] if meta else {}
    compression, use_dictionary, column_encoding = {}, [], {}
    for field in schema:
        embed = isinstance(feats.get(field.name), dict) and feats[field.name].get("_type") in EMBEDDED_TYPES
        for leaf in _leaf_paths(field.name, field.type):
            compression[leaf] = "none" if embed else "snappy"
            if embed:
                column_encoding[leaf] = "PLAIN"
            else:
                use_dictionary.append(leaf)
    return {
        "use_content_defined_chunking": dict(CDC_OPTIONS),
        "write_page_index": True,
        "compression": compression,
        "use_dictionary": use_dictionary,
        "column_encoding": column_encoding,
    }


Chunk = tuple[list[ClRecord], list[bytes], np.ndarray, bytes]  # rows without pixels, PNGs, sizes, hash input


def _encode_chunk(
    records: Sequence[ClRecord], positions: range, split: str, image_shape: tuple[int, ...] | None, label_bytes: int
) -> Chunk:
    """The rows at ``positions`` without their pixels, their PNG bytes, sizes (PNG + name + labels) and hash input.

    Each record is read once, by index (a lazy source's slice may be a new object with a cache of its own): a lazy
    source decodes its image here, on an encoder thread, and the pixels are dropped once encoded."""
    rows = [records[i] for i in positions]
    images = [r.image for r in rows]
    if image_shape is not None:
        for r, image in zip(rows, images):
            if getattr(image, "shape", None) != image_shape or image.dtype != np.uint8:
                found = f"{getattr(image, 'dtype', None)} {getattr(image, 'shape', None)}"
                raise SourceError(f"{split}: image {r.name!r} is {found}, expected uint8 {image_shape}")
    pngs = encode_png_batch(np.stack(images))
    sizes = np.array([len(png) + len(r.name) + label_bytes for r, png in zip(rows, pngs)], dtype=np.int64)
    hashed = b"".join(b for r, png in zip(rows, pngs) for b in _hash_parts(r.name, png, r.ord_label, r.cl_labels))
    return [ClRecord(r.name, None, r.ord_label, r.cl_labels) for r in rows], pngs, sizes, hashed


def _encoded_chunks(records: Sequence[ClRecord], encode, threads: int) -> Iterator[Chunk]:
    """``encode(records, positions)`` of each ``ENCODE_CHUNK`` rows, in order, run on ``threads`` threads (numpy and
    deflate release the GIL) with at most ``2 * threads`` chunks in flight: memory stays bounded for any split."""
    with ThreadPoolExecutor(threads) as pool:
        in_flight: deque = deque()
        try:
            for start in range(0, len(records), ENCODE_CHUNK):
                positions = range(start, min(start + ENCODE_CHUNK, len(records)))
                in_flight.append(pool.submit(encode, records, positions))
                if len(in_flight) == 2 * threads:
                    yield in_flight.popleft().result()
            while in_flight:
                yield in_flight.popleft().result()
        finally:
            for future in in_flight:
                future.cancel()


class _ShardStream:
    """Rows in, shards out: row groups of ``ROWS_PER_ROW_GROUP`` rows are written as they fill, into shards under
    temporary names that :meth:`finish` renames to :func:`shard_name` once the count is known.

    A shard is closed when the next row would take its size (PNG bytes + names + labels, the estimate the card gives
    as num_bytes) past ``max_shard_size``; a shard holds at least one row. Only the pending row group is in memory.
    """

    def __init__(self, data: Path, split: str, schema: pa.Schema, max_shard_size: int) -> None:
        self.data, self.split, self.schema, self.max_shard_size = data, split, schema, max_shard_size
        self.options = parquet_writer_options(schema)  # datasets 5.x's writer options (see there)
        self.paths: list[Path] = []  # the shards so far, under temporary names
        self.writer: pq.ParquetWriter | None = None  # the open shard's
        self.shard_bytes, self.rows, self.pngs = 0, [], []  # the open shard's size; the pending row group

    def add(self, rows: list[ClRecord], pngs: list[bytes], sizes: np.ndarray) -> None:
        """Append rows in order, closing the shard before any row that would take it past ``max_shard_size``."""
        start = 0
        while start < len(rows):
            room = self.max_shard_size - self.shard_bytes
            fits = int(np.searchsorted(np.cumsum(sizes[start:]), room, side="right"))  # leading rows that fit
            if fits == 0 and self.shard_bytes:
                self._close_shard()
                continue
            end = start + min(max(fits, 1), ROWS_PER_ROW_GROUP - len(self.rows))
            self.rows += rows[start:end]
            self.pngs += pngs[start:end]
            self.shard_bytes += int(sizes[start:end].sum())
            start = end
            if len(self.rows) == ROWS_PER_ROW_GROUP:
                self._flush()

    def _flush(self) -> None:
        if self.writer is None:
            self.paths.append(self.data / f".{self.split}-{len(self.paths):05d}.parquet.partial")
            self.writer = pq.ParquetWriter(self.paths[-1], self.schema, **self.options)
        if self.rows:
            batch = _record_batch(self.rows, self.pngs, self.schema)
            self.writer.write_batch(batch, row_group_size=ROWS_PER_ROW_GROUP)
        self.rows, self.pngs = [], []

    def _close_shard(self) -> None:
        self._flush()  # an empty split still gets its one (empty) shard
        cdc = json.dumps(self.options["use_content_defined_chunking"])  # the key-value metadata datasets adds
        self.writer.add_key_value_metadata({"content_defined_chunking": cdc})
        self.writer.close()
        self.writer, self.shard_bytes = None, 0

    def finish(self) -> int:
        """Close the last shard, give every shard its final name; returns the shard count."""
        self._close_shard()
        for index, path in enumerate(self.paths):
            path.rename(self.data / shard_name(self.split, index, len(self.paths)))
        return len(self.paths)

    def discard(self) -> None:
        """Remove what was written (a failed split leaves no partial shard)."""
        if self.writer is not None:
            self.writer.close()
        for path in self.paths:
            path.unlink(missing_ok=True)


def write_split(
    folder: Path | str,
    split: str,
    records: Sequence[ClRecord],
    schema: pa.Schema,
    max_shard_size: int = 500 * 10**6,
    image_shape: tuple[int, ...] | None = None,
) -> SplitInfo:
    """Write ``records`` as ``folder/data/{split}-*.parquet`` shards of at most ``max_shard_size`` bytes each
    (estimated as PNG bytes + names + labels; a single larger row gets a shard of its own).

    Streams: records are read in chunks of ``ENCODE_CHUNK`` (a lazy source decodes each image once, here), encoded
    on ``ENCODE_THREADS`` threads and written a row group at a time; shards are cut in order, a new one starting
    when the next row would pass ``max_shard_size`` (:class:`_ShardStream`). Memory does not grow with the split.
    ``schema`` is :func:`aclbuild.schema.arrow_schema` of the repository's class names and CLs per image;
    ``image_shape`` (e.g. ``(32, 32, 3)``), when given, is checked for every image (uint8 too).
    """
    data = Path(folder) / "data"
    data.mkdir(parents=True, exist_ok=True)
    label_bytes = 8 * (1 + schema.field("cl_labels").type.list_size)
    digest, total = hashlib.sha256(), 0
    shards = _ShardStream(data, split, schema, max_shard_size)
    try:
        encode = partial(_encode_chunk, split=split, image_shape=image_shape, label_bytes=label_bytes)
        with progress_bar(f"encoding {split} images", len(records)) as advance, contextlib.closing(
            _encoded_chunks(records, encode, ENCODE_THREADS)
        ) as chunks:  # closing: a failure stops the encoders at once
            for rows, pngs, sizes, hashed in chunks:
                shards.add(rows, pngs, sizes)
                digest.update(hashed)  # hashlib lets go of the GIL for long input
                total += int(sizes.sum())
                advance(len(rows))
        count = shards.finish()
    except BaseException:
        shards.discard()
        raise
    return SplitInfo(split, len(records), total, count, digest.hexdigest())


def read_table(folder: Path | str, split: str, columns: list[str] | None = None) -> pa.Table:
    """All shards of ``split`` as one Arrow table (only ``columns`` when given: labels load without images)."""
    paths = split_shards(folder).get(split)
    if not paths:
        raise SourceError(f"{folder} has no '{split}' split (no data/{split}-*.parquet files)")
    try:
        return pa.concat_tables(pq.read_table(p, columns=columns) for p in paths)
    except (pa.ArrowException, OSError) as exc:
        raise SourceError(f"cannot read the '{split}' shards of {folder}: {exc}") from None


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


def label_arrays(table: pa.Table) -> tuple[np.ndarray, np.ndarray | None]:
    """(ord_labels as an int64 vector, cl_labels as an N x m int64 matrix, or None for a split without CLs).

    A split without CLs stores every row's cl_labels as ``NO_LABEL`` (-1); repositories of aclbuild before 0.2
    stored null there, which reads the same. Raises :class:`SourceError` when only some rows have complementary
    labels (no split a build writes does).

    Example:
        >>> no_cls = pa.array([[-1, -1], [-1, -1]], pa.list_(pa.int64(), 2))
        >>> label_arrays(pa.table({"ord_labels": [0, 1], "cl_labels": no_cls}))[1] is None
        True
    """
    ord_labels = table.column("ord_labels").to_numpy().astype(np.int64)
    column = table.column("cl_labels").combine_chunks()
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


def iter_records(folder: Path | str, split: str) -> Iterator[ClRecord]:
    """Records of ``split`` in stored order, images decoded to arrays."""
    table = read_table(folder, split)
    names = table.column("names").to_pylist()
    images = table.column("images").combine_chunks().field("bytes").to_pylist()
    ord_labels, cl_labels = label_arrays(table)
    for i, name in enumerate(names):
        cls = None if cl_labels is None else tuple(int(c) for c in cl_labels[i])
        yield ClRecord(name, decode_image(images[i]), int(ord_labels[i]), cls)
