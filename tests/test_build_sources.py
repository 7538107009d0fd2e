"""`aclbuild build` from a label CSV joined with real-format archives (CIFAR tarball, tiny-imagenet zip)."""

from __future__ import annotations

import numpy as np
from datasets import load_dataset

from aclbuild.loaders.images import read_source_images
from aclbuild.registry import get_base
from tests.fakes import make_cifar10_archive, make_tinyimagenet


def test_csv_with_cifar_archive(cli, tmp_path):
    archive = make_cifar10_archive(tmp_path, n_per_batch=6, n_test=5)
    base = get_base("cifar10")
    train = read_source_images(base, archive, "train")
    rng = np.random.default_rng(1)
    cls = rng.integers(0, 10, (len(train), 4))
    rows = [",".join([r.name, *(base.class_names[c] for c in row)]) for r, row in zip(train, cls)]
    (tmp_path / "labels.csv").write_text("\n".join(rows[::-1]) + "\n")  # CSV order need not be archive order
    out = tmp_path / "repo"
    result = cli("build", tmp_path / "labels.csv", "--dataset", "aclcifar10", "--source", archive, "-o", out)
    assert result.exit_code == 0, result.output
    ds = load_dataset(str(out))
    assert ds["train"]["names"] == [r.name for r in train][::-1]
    assert ds["train"]["cl_labels"] == cls[::-1, :3].tolist()  # the released sets keep the first 3 rounds
    by_name = {r.name: r for r in train}
    for row in ds["train"]:
        assert row["ord_labels"] == by_name[row["names"]].ord_label
        assert np.array_equal(np.asarray(row["images"]), by_name[row["names"]].image)
    assert len(ds["test"]) == 5 and ds["test"][0]["cl_labels"] == [-1, -1, -1]  # no CLs: datasets' no-label value


def test_pickle_with_tinyimagenet_test_split(cli, tmp_path):
    from aclbuild.labeling.synthetic import label_records, transition_matrix
    from aclbuild.loaders.legacy_pickle import write_legacy_pickle

    tree = make_tinyimagenet(tmp_path, bases=("min10",), n_train=2, n_val=2, as_zip=True)
    base = get_base("min10")
    train = label_records(read_source_images(base, tree, "train"), transition_matrix("weak", 10), num_cl=3)
    write_legacy_pickle(train, tmp_path / "min10.pkl")
    out = tmp_path / "repo"
    result = cli("build", tmp_path / "min10.pkl", "--dataset", "min10-weak", "--test-source", tree, "-o", out)
    assert result.exit_code == 0, result.output
    ds = load_dataset(str(out))
    assert len(ds["train"]) == 20 and len(ds["test"]) == 20
    assert ds["test"].features["ord_labels"].names[0] == "sulphur butterfly"
    assert cli("validate", out).exit_code == 0
