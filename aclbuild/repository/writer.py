"""Writing a split's rows as Parquet shards: datasets' writer options, streamed in bounded memory.

Shards carry the Features in their Arrow metadata, so ``load_dataset(folder)`` and ``load_dataset("org/name")`` give
back ClassLabel names and fixed-length lists with no extra code.

Example:
    >>> info = write_split(tmp, "train", records, arrow_schema(names, 3))   # doctest: +SKIP
    >>> info.num_shards, len(info.sha256)                                  # doctest: +SKIP
    (1, 64)
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Callable, Iterator, Sequence
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from aclbuild.errors import SourceError
from aclbuild.png import encode_png_batch
from aclbuild.progress import progress_bar
from aclbuild.repository.hashing import hash_parts
from aclbuild.repository.layout import data_folder, partial_shard_path, shard_name
from aclbuild.repository.manifest import SplitInfo
from aclbuild.schema import ClRecord, no_cl_labels

ROWS_PER_ROW_GROUP = 1000
ENCODE_CHUNK = 500  # images per encoder task: small temporaries are reused rather than page-faulted in anew
ENCODE_THREADS = os.cpu_count() or 1
# datasets 5.x's config.DEFAULT_CDC_OPTIONS: the content-defined chunking its ParquetWriter and to_parquet turn on,
# so pages break at content boundaries and a re-push of a relabelled set moves only the changed chunks through Xet.
CDC_OPTIONS = {"min_chunk_size": 256 * 1024, "max_chunk_size": 1024 * 1024, "norm_level": 0}
EMBEDDED_TYPES = ("Image", "Audio", "Video", "Pdf", "Nifti")  # features whose bytes datasets stores as-is


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


Chunk = tuple[list, list[bytes], np.ndarray, bytes]  # rows without pixels, stored image bytes, sizes, hash input


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
    hashed = b"".join(b for r, png in zip(rows, pngs) for b in hash_parts(r.name, png, r.ord_label, r.cl_labels))
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

    def __init__(self, folder: Path, split: str, schema: pa.Schema, max_shard_size: int, make_batch=None) -> None:
        self.folder, self.split, self.schema, self.max_shard_size = folder, split, schema, max_shard_size
        self.make_batch = make_batch or _record_batch  # (rows, image bytes, schema) -> one row group
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
            self.paths.append(partial_shard_path(self.folder, self.split, len(self.paths)))
            self.writer = pq.ParquetWriter(self.paths[-1], self.schema, **self.options)
        if self.rows:
            batch = self.make_batch(self.rows, self.pngs, self.schema)
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
            path.rename(data_folder(self.folder) / shard_name(self.split, index, len(self.paths)))
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
    encode: Callable[[Sequence, range], Chunk] | None = None,
    make_batch: Callable[[list, list[bytes], pa.Schema], pa.RecordBatch] | None = None,
) -> SplitInfo:
    """Write ``records`` as ``folder/data/{split}-*.parquet`` shards of at most ``max_shard_size`` bytes each
    (estimated as PNG bytes + names + labels; a single larger row gets a shard of its own).

    Streams: records are read in chunks of ``ENCODE_CHUNK`` (a lazy source decodes each image once, here), encoded
    on ``ENCODE_THREADS`` threads and written a row group at a time; shards are cut in order, a new one starting
    when the next row would pass ``max_shard_size`` (:class:`_ShardStream`). Memory does not grow with the split.
    ``schema`` is :func:`aclbuild.schema.arrow_schema` of the repository's class names and CLs per image;
    ``image_shape`` (e.g. ``(32, 32, 3)``), when given, is checked for every image (uint8 too).

    Another record kind (the SPML rows of :mod:`aclbuild.repository.spml`) passes its own ``encode(records,
    positions)``, giving a :data:`Chunk` (rows, stored image bytes, sizes, hash input), and ``make_batch(rows,
    image bytes, schema)``, giving a row group; shard cutting, renaming and hashing stay the same.
    """
    data_folder(folder).mkdir(parents=True, exist_ok=True)
    digest, total = hashlib.sha256(), 0
    shards = _ShardStream(Path(folder), split, schema, max_shard_size, make_batch)
    try:
        if encode is None:
            label_bytes = 8 * (1 + schema.field("cl_labels").type.list_size)
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
