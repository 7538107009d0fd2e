"""A label CSV meets its image source by position when it follows the source's order, else by name.

CIFAR-100's train split names two images ``baby_s_000333.png``; the fake archive here repeats a name the same way.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from aclbuild.pickle_export import export_pickle
from aclbuild.loaders.legacy_pickle import read_legacy_pickle
from aclbuild.registry import get_base
from aclbuild.repository import iter_records, read_table
from tests.conftest import make_legacy_dict, write_pickle
from tests.fakes import CIFAR100_FOLDER, cifar100_batches, cifar_images, make_cifar10_archive, write_cifar_archive

CIFAR20 = get_base("cifar20")
REPEATED = 5  # this row of the fake train split takes the name of row 2


@pytest.fixture
def repeating_archive(tmp_path):
    """A fake cifar-100-python.tar.gz whose train split names rows 2 and 5 alike; returns (archive, batches)."""
    batches = cifar100_batches(n_train=8, n_test=4)
    batches["train"][b"filenames"][REPEATED] = batches["train"][b"filenames"][2]
    return write_cifar_archive(tmp_path, CIFAR100_FOLDER, batches), batches


def _csv(path, names, width=3):
    rows = [",".join([name, *(CIFAR20.long_names[(i + k) % 20] for k in range(width))]) for i, name in enumerate(names)]
    path.write_text("\n".join(rows) + "\n")
    return path


def _names(batches) -> list[str]:
    return [n.decode() for n in batches["train"][b"filenames"]]


def _one_line_failure(result, out, expect: str) -> None:
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert expect in lines[0], lines[0]
    assert not out.exists()


def test_repeated_names_in_source_order_join_by_position(cli, tmp_path, repeating_archive):
    archive, batches = repeating_archive
    names = _names(batches)
    assert names[2] == names[REPEATED]
    out = tmp_path / "repo"
    result = cli("build", _csv(tmp_path / "l.csv", names), "--dataset", "aclcifar20", "--source", archive, "-o", out)
    assert result.exit_code == 0, result.output
    assert cli("validate", out).exit_code == 0
    train = list(iter_records(out, "train"))
    assert [r.name for r in train] == names  # both rows keep the archive's name
    images, coarse = cifar_images(batches["train"]), batches["train"][b"coarse_labels"]
    for i, record in enumerate(train):  # each row has the image and true label at its own position
        assert np.array_equal(record.image, images[i]) and record.ord_label == coarse[i]
        assert record.cl_labels == tuple((i + k) % 20 for k in range(3))
    stats = json.loads(cli("stats", out, "--json").stdout)
    assert stats["train"]["num_examples"] == 8
    exported = export_pickle(out, tmp_path / "back.pkl")  # and the legacy pickle carries them on
    assert [r.name for r in read_legacy_pickle(exported, CIFAR20)] == names


def test_repeated_name_out_of_order_is_ambiguous(cli, tmp_path, repeating_archive):
    archive, batches = repeating_archive
    names = _names(batches)[::-1]
    out = tmp_path / "repo"
    result = cli("build", _csv(tmp_path / "l.csv", names), "--dataset", "aclcifar20", "--source", archive, "-o", out)
    _one_line_failure(result, out, f"names {names[2]!r}, which the image source holds more than once")


def test_subset_without_the_repeated_name_joins_by_name(cli, tmp_path, repeating_archive):
    archive, batches = repeating_archive
    names = _names(batches)
    picked = [names[7], names[0], names[3]]
    out = tmp_path / "repo"
    result = cli("build", _csv(tmp_path / "l.csv", picked), "--dataset", "aclcifar20", "--source", archive, "-o", out)
    assert result.exit_code == 0, result.output
    table = read_table(out, "train", columns=["names", "ord_labels"])
    assert table.column("names").to_pylist() == picked
    coarse = batches["train"][b"coarse_labels"]
    assert table.column("ord_labels").to_pylist() == [coarse[7], coarse[0], coarse[3]]


def test_names_matching_neither_by_position_nor_by_name(cli, tmp_path, repeating_archive):
    archive, batches = repeating_archive
    names = _names(batches)
    names[4] = "not_in_cifar.png"
    out = tmp_path / "repo"
    result = cli("build", _csv(tmp_path / "l.csv", names), "--dataset", "aclcifar20", "--source", archive, "-o", out)
    _one_line_failure(result, out, "1 file names have no image in the image source, e.g. 'not_in_cifar.png'")


def test_a_row_repeating_a_name_the_source_holds_once(cli, tmp_path):
    archive = make_cifar10_archive(tmp_path, n_per_batch=2, n_test=2)
    from aclbuild.loaders.cifar import read_cifar

    names = [r.name for r in read_cifar(archive, get_base("cifar10"), "train", pixels=False)]
    rows = [f"{name},cat,dog,frog" for name in [names[3], names[1], names[3]]]
    (tmp_path / "l.csv").write_text("\n".join(rows) + "\n")
    out = tmp_path / "repo"
    result = cli("build", tmp_path / "l.csv", "--dataset", "aclcifar10", "--source", archive, "-o", out)
    _one_line_failure(result, out, f"row 3 repeats {names[3]!r}, which the image source holds once")


def test_legacy_pickle_may_repeat_a_name_only_where_the_source_does(cli, tmp_path):
    data = make_legacy_dict(n=12, num_classes=20)
    data["names"][9] = data["names"][4]
    source = write_pickle(tmp_path / "aclcifar20.pkl", data)
    out = tmp_path / "c20"
    assert cli("build", source, "--dataset", "aclcifar20", "-o", out).exit_code == 0
    assert cli("validate", out).exit_code == 0
    # The same rows under a base whose source names each image once: a repeat means an image went in twice.
    manifest = json.loads((out / "aclbuild.json").read_text())
    manifest["dataset"] = "aclmin20"
    (out / "aclbuild.json").write_text(json.dumps(manifest))
    result = cli("validate", out)
    assert result.exit_code != 0 and "names must be unique" in result.output
    data["cl_labels"] = [[c % 10 for c in row] for row in data["cl_labels"]]
    data["ord_labels"] = [y % 10 for y in data["ord_labels"]]
    refused = tmp_path / "c10"
    result = cli("build", write_pickle(tmp_path / "c10.pkl", data), "--dataset", "aclcifar10", "-o", refused)
    _one_line_failure(result, refused, "appears more than once; base cifar10 names each image once")
