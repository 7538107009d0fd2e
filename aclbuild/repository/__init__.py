"""The repository folder format, in one place: what `aclbuild build` writes and every other verb reads.

Layout of a repository folder (a Hub dataset repository as it is pushed)::

    README.md                                   the dataset card (aclbuild.cards)
    aclbuild.json                               the manifest (manifest.py)
    data/{split}-{index:05d}-of-{count:05d}.parquet   the shards of each split, datasets' own naming (layout.py)
    figures/transition_matrix.png               the card's figure

Shards (writer.py) hold four columns, ``names`` (the source's file names), ``images`` (PNG bytes, datasets'
Image), ``ord_labels`` (ClassLabel) and ``cl_labels`` (a fixed-length list of ClassLabel; every value -1 in a split
without complementary labels), with the Features in their Arrow metadata, written with datasets 5.x's Parquet
options. A split's rows are cut into shards in order: a new shard starts when the next row would take the current
one past ``--max-shard-size`` (PNG bytes + names + labels; a larger row gets a shard of its own). Shards are written
under hidden ``.partial`` names and renamed once their count is known; the whole folder is staged and appears at
once (:func:`aclbuild.paths.staged_output`).

The manifest ``aclbuild.json`` (manifest.py) records ``dataset`` (the variant name), ``built_with`` (aclbuild's
version), ``repo_id`` (or null), ``splits`` (per split: ``name``, ``num_examples``, ``num_bytes``, ``num_shards``,
``sha256``) and ``provenance`` (the labelling settings).

The content hash of a split (hashing.py) is sha256 over its rows in stored order, each row fed as its UTF-8 name and
a NUL byte, the image's byte count (8 bytes, little-endian), the image bytes, then ``"{ord_label}|{cl,cl,...}\\n"``
(nothing after ``|`` for a row without CLs). validate recomputes it from the folder, verify from what
``load_dataset`` gives back on the Hub.

A single-positive multi-label (SPML) repository (spml.py) has the same layout, manifest and shard cutting; its
shards hold ``names``, ``images`` (the source's image files, JPEG, stored as they are), ``labels`` (a list of
ClassLabel: every positive, ascending) and ``observed_label`` (ClassLabel; null in validation and test), as
:class:`aclbuild.schema.SpmlSchema` defines them; its splits are train, validation and test. It is told apart by its
``observed_label`` column (:func:`is_spml_repository`). Its content hash feeds each row as the CL one does up to the
image bytes, then ``"{label,label,...}|{observed_label}\\n"`` (nothing after ``|`` without an observed label).

Rows are read back through one decoder (rows.py: :func:`decode_rows`), which validate, verify, export, stats and the
training data (:mod:`aclbuild.cl_data`) share.

Example:
    >>> from aclbuild.repository import SHARD_PATTERN, shard_name
    >>> SHARD_PATTERN.match(shard_name("train", 0, 1))["split"]
    'train'
"""

from aclbuild.png import decode_image
from aclbuild.repository.hashing import hash_rows, record_hash_update
from aclbuild.repository.layout import (
    DATA_DIR, SHARD_PATTERN, SPLITS, data_folder, parse_size, shard_name, shards_size, split_files_pattern,
    split_shards, stray_files,
)  # fmt: skip
from aclbuild.repository.manifest import (
    MANIFEST, Manifest, SplitInfo, manifest_json, parse_manifest, read_manifest, write_manifest,
)  # fmt: skip
from aclbuild.repository.rows import (
    SplitRows, decode_rows, iter_records, label_arrays, missing_cl_rows, read_features, read_table, row_values,
)  # fmt: skip
from aclbuild.repository.spml import (
    encode_spml_chunk, is_spml_columns, is_spml_repository, spml_label_matrix, spml_record_batch, spml_row_values,
)  # fmt: skip
from aclbuild.repository.writer import parquet_writer_options, write_split

__all__ = [
    "DATA_DIR", "MANIFEST", "SHARD_PATTERN", "SPLITS", "Manifest", "SplitInfo", "SplitRows", "data_folder",
    "decode_image", "decode_rows", "hash_rows", "iter_records", "label_arrays", "manifest_json", "missing_cl_rows",
    "parquet_writer_options", "parse_manifest", "parse_size", "read_features", "read_manifest", "read_table",
    "record_hash_update", "row_values", "shard_name", "shards_size", "split_files_pattern", "split_shards",
    "stray_files", "write_manifest",
    "write_split", "encode_spml_chunk", "is_spml_columns", "is_spml_repository", "spml_label_matrix",
    "spml_record_batch", "spml_row_values",
]  # fmt: skip
