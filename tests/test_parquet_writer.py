"""Shards are written as datasets 5.x's own Parquet writer writes them: page index, content-defined chunking, media
bytes PLAIN and uncompressed, other columns snappy with a dictionary."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
from datasets import Dataset, config, load_dataset
from datasets.arrow_writer import get_parquet_column_options

from aclbuild.repository import parquet_writer_options, read_table, row_values, split_shards
from aclbuild.schema import arrow_schema, features
from aclbuild.validate import validate_repository
from tests.conftest import make_legacy_dict, write_pickle

NAMES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def test_writer_options_are_datasets_own():
    for num_cl in (1, 3):
        options = parquet_writer_options(arrow_schema(NAMES, num_cl))
        expected = get_parquet_column_options(features(NAMES, num_cl), arrow_schema(NAMES, num_cl))
        assert {k: options[k] for k in expected} == expected
        assert options["use_content_defined_chunking"] == config.DEFAULT_CDC_OPTIONS
        assert options["write_page_index"] is True
    assert options["compression"]["images.bytes"] == "none"
    assert options["column_encoding"]["images.bytes"] == "PLAIN"
    assert "images.bytes" not in options["use_dictionary"]


def _shard(cli, tmp_path, data, name="repo"):
    out = tmp_path / name
    result = cli("build", write_pickle(tmp_path / f"{name}.pkl", data), "--dataset", "aclcifar10", "--output-dir", out)
    assert result.exit_code == 0, result.output
    return out, split_shards(out)["train"][0]


def _chunks(path):
    """(column, compression, encodings, has page index) per column chunk of every row group."""
    meta = pq.ParquetFile(path).metadata
    return [
        (col.path_in_schema, col.compression, col.encodings, col.has_offset_index, col.has_column_index)
        for g in range(meta.num_row_groups)
        for col in (meta.row_group(g).column(i) for i in range(meta.num_columns))
    ]


def test_built_shard_is_written_like_datasets(cli, tmp_path):
    data = make_legacy_dict(n=1200)  # two row groups
    out, shard = _shard(cli, tmp_path, data)
    meta = pq.ParquetFile(shard).metadata
    assert meta.num_row_groups == 2 and meta.num_rows == 1200
    chunks = _chunks(shard)
    assert {c[0] for c in chunks} == {"names", "images.bytes", "images.path", "ord_labels", "cl_labels.list.element"}
    for path, compression, encodings, has_offset_index, has_column_index in chunks:
        assert has_offset_index and has_column_index, path
        if path.startswith("images."):
            assert compression == "UNCOMPRESSED" and "PLAIN_DICTIONARY" not in encodings, path
            assert "RLE_DICTIONARY" not in encodings, path
        else:
            assert compression == "SNAPPY", path
    kv = meta.metadata
    assert json.loads(kv[b"content_defined_chunking"]) == config.DEFAULT_CDC_OPTIONS
    assert b"huggingface" in kv  # the Features stay in the schema metadata
    assert validate_repository(out) == []
    ds = load_dataset(str(out), split="train")
    assert ds["names"] == data["names"] and ds["cl_labels"] == data["cl_labels"]


def test_same_layout_as_datasets_to_parquet(cli, tmp_path):
    """Every column chunk's compression and page index match datasets' to_parquet of the same rows."""
    data = make_legacy_dict(n=300)
    out, shard = _shard(cli, tmp_path, data)
    ds = Dataset.from_dict(
        {"names": data["names"], "images": list(data["images"]), "ord_labels": data["ord_labels"],
         "cl_labels": data["cl_labels"]},
        features=features(NAMES, 3),
    )  # fmt: skip
    theirs = tmp_path / "datasets.parquet"
    ds.to_parquet(theirs)

    def layout(path):
        return sorted({(p, c, oi, ci) for p, c, _, oi, ci in _chunks(path)})

    assert layout(shard) == layout(theirs)
    assert (
        pq.ParquetFile(shard).metadata.metadata[b"content_defined_chunking"]
        == (pq.ParquetFile(theirs).metadata.metadata[b"content_defined_chunking"])
    )
    # Same rows in the same order (the PNG bytes differ: datasets encodes with Pillow).
    mine, other = row_values(read_table(out, "train")), row_values(pq.read_table(theirs))
    assert [r[:1] + r[2:] for r in mine] == [r[:1] + r[2:] for r in other]


def test_relabel_keeps_image_pages(cli, tmp_path):
    """A relabelled set's image column chunks are byte-identical to the first build's: a re-push changes only the
    label chunks (and the footer), which is what Xet then moves."""
    data = make_legacy_dict(n=1200)
    _, first = _shard(cli, tmp_path, data, "a")
    relabelled = dict(data, cl_labels=[[(c + 1) % 10 for c in row] for row in data["cl_labels"]])
    _, second = _shard(cli, tmp_path, relabelled, "b")

    def image_pages(path):
        meta, raw = pq.ParquetFile(path).metadata, path.read_bytes()
        spans = []
        for g in range(meta.num_row_groups):
            col = next(meta.row_group(g).column(i) for i in range(meta.num_columns)
                       if meta.row_group(g).column(i).path_in_schema == "images.bytes")  # fmt: skip
            start = col.dictionary_page_offset or col.data_page_offset
            spans.append(raw[start : start + col.total_compressed_size])
        return spans

    assert image_pages(first) == image_pages(second)
    assert first.read_bytes() != second.read_bytes()
