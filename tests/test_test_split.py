"""The test split: cl_labels hold -1 (datasets' ClassLabel "no label") on every row, so both splits batch in torch's
DataLoader after ``with_format("torch")``; a folder an older aclbuild wrote with null there still reads."""

from __future__ import annotations

import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from datasets import load_dataset
from torch.utils.data import DataLoader

from aclbuild.cl_data import load_cl_dataset
from aclbuild.errors import SourceError
from aclbuild.pickle_export import export_split
from aclbuild.loaders.safe_pickle import safe_load
from aclbuild.repository import split_shards
from aclbuild.stats import repository_stats
from aclbuild.validate import validate_repository


def rewrite_cl_labels(folder, split: str, column_of) -> None:
    """Replace the cl_labels of every ``split`` shard by ``column_of(old column)``, keeping schema and metadata."""
    for path in split_shards(folder)[split]:
        table = pq.read_table(path)
        column = column_of(table.column("cl_labels").combine_chunks())
        pq.write_table(table.set_column(3, table.schema.field("cl_labels"), column), path)


def as_null(column: pa.Array) -> pa.Array:
    """What aclbuild 0.1 wrote in the test split: a null fixed-size list per row."""
    return pa.nulls(len(column), column.type)


@pytest.fixture
def repo_copy(digits_repo, tmp_path):
    return shutil.copytree(digits_repo, tmp_path / "digits-uniform")


def test_both_splits_batch_in_a_dataloader(digits_repo, tmp_path):
    loaded = load_dataset(str(digits_repo), cache_dir=str(tmp_path / "cache"))
    assert loaded["train"].features == loaded["test"].features  # the train split keeps its fixed length 3
    assert loaded["test"].features["cl_labels"].length == 3
    batches = {}
    for split in ("train", "test"):
        loader = DataLoader(loaded[split].with_format("torch"), batch_size=64)  # default collate
        batches[split] = [batch["cl_labels"] for batch in loader]
        assert sum(len(b) for b in batches[split]) == len(loaded[split])
        assert {tuple(b.shape[1:]) for b in batches[split]} == {(3,)}
    train_cls, test_cls = torch.cat(batches["train"]), torch.cat(batches["test"])
    assert int(train_cls.min()) >= 0 and int(train_cls.max()) <= 9
    assert bool((test_cls == -1).all()) and len(test_cls) == 397
    streamed = load_dataset(str(digits_repo), split="test", streaming=True)
    assert next(iter(streamed))["cl_labels"] == [-1, -1, -1]


def test_the_test_split_reads_as_having_no_cls(digits_repo, tmp_path):
    stats = repository_stats(digits_repo)
    assert stats["test"] == {"num_examples": 397, "num_classes": 10, "class_counts": stats["test"]["class_counts"],
                             "cls_per_image": 0}  # fmt: skip
    assert sum(stats["test"]["class_counts"]) == 397 and stats["train"]["cls_per_image"] == 3
    test = load_cl_dataset(digits_repo, "test", num_cl=1)
    assert len(test) == 397 and len(test[0]) == 2 and not test.has_cls
    path = export_split(digits_repo, tmp_path / "pickles", "test")
    back = safe_load(path.read_bytes(), "test pickle")
    assert path.name == "digitsuniform_test.pkl" and len(back["names"]) == 397
    assert back["cl_labels"] == [[]] * 397  # the legacy test pickle: no CLs
    assert validate_repository(digits_repo) == []


def test_a_folder_with_null_test_cls_still_reads_and_validate_names_the_fix(repo_copy, tmp_path):
    rewrite_cl_labels(repo_copy, "test", as_null)
    assert pq.read_table(split_shards(repo_copy)["test"][0]).column("cl_labels").null_count == 397
    test = load_cl_dataset(repo_copy, "test")
    assert len(test) == 397 and len(test[0]) == 2
    assert repository_stats(repo_copy)["test"]["cls_per_image"] == 0
    back = safe_load(export_split(repo_copy, tmp_path / "pickles", "test").read_bytes(), "test pickle")
    assert back["cl_labels"] == [[]] * 397
    # the content hash covers "no CLs", however stored: only the null itself is reported, with its fix
    problems = validate_repository(repo_copy)
    assert len(problems) == 1 and "split 'test': cl_labels are null" in problems[0]
    assert "rebuild the folder with `aclbuild build`" in problems[0]


def test_train_rows_of_only_minus_ones_count_as_missing(repo_copy):
    def blank_every_fourth(column: pa.Array) -> pa.Array:
        values = np.asarray(column.flatten()).reshape(len(column), -1).copy()
        values[::4] = -1
        return pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1)), values.shape[1])

    rewrite_cl_labels(repo_copy, "train", blank_every_fourth)
    problems = validate_repository(repo_copy)
    assert "split 'train': every image needs complementary labels (350 rows have none)" in problems
    with pytest.raises(SourceError, match="350 of 1400 rows have no cl_labels"):
        repository_stats(repo_copy)



def test_verify_names_a_null_test_split(repo_copy, tmp_path):
    from aclbuild.verification import VerifyReport, _check_split, _Expected

    expected = _Expected(card_features=None, declared={}, class_names=None, remote_hashes={}, local=None,
                         local_hashes={})  # fmt: skip
    built = load_dataset(str(repo_copy), split="test", cache_dir=str(tmp_path / "cache-built"))
    assert _check_split("test", built, expected, VerifyReport()) == []
    rewrite_cl_labels(repo_copy, "test", as_null)
    old = load_dataset(str(repo_copy), split="test", cache_dir=str(tmp_path / "cache-old"))
    problems = _check_split("test", old, expected, VerifyReport())
    assert len(problems) == 1 and "397 rows hold null cl_labels" in problems[0] and "rebuild" in problems[0]
