"""Build a repository from a legacy pickle, load it back, export it, validate and describe it."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
from datasets import load_dataset

from aclbuild.loaders.safe_pickle import safe_load
from aclbuild.validate import validate_repository
from tests.conftest import make_legacy_dict, write_pickle


def test_build_round_trip(cli, legacy_pickle, tmp_path):
    out = tmp_path / "repo"
    result = cli("build", legacy_pickle, "--dataset", "aclcifar10", "--output-dir", out)
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (out / "data").iterdir()) == ["train-00000-of-00001.parquet"]
    assert not list(out.rglob("*.py"))
    assert (out / "figures" / "transition_matrix.png").stat().st_size > 1000
    source = pickle.loads(legacy_pickle.read_bytes())
    ds = load_dataset(str(out), split="train")
    assert ds.features["ord_labels"].names[0] == "airplane"
    assert ds.features["cl_labels"].length == 3
    assert ds["names"] == source["names"]
    assert ds["ord_labels"] == source["ord_labels"]
    assert ds["cl_labels"] == source["cl_labels"]
    for i in range(len(ds)):
        assert np.array_equal(np.asarray(ds[i]["images"]), source["images"][i])

    assert cli("export", out, "--to", "pickle", "--output-dir", tmp_path / "pickles").exit_code == 0
    exported = tmp_path / "pickles" / "aclcifar10.pkl"  # libcll's file name of the variant
    back = safe_load(exported.read_bytes(), "back")
    assert back["names"] == source["names"] and back["ord_labels"] == source["ord_labels"]
    assert back["cl_labels"] == source["cl_labels"]
    assert np.array_equal(back["images"], source["images"])


def test_card_is_complete(cli, legacy_pickle, tmp_path):
    from huggingface_hub import DatasetCard

    out = tmp_path / "repo"
    assert cli("build", legacy_pickle, "--dataset", "aclcifar10-r", "--output-dir", out).exit_code == 0
    card = DatasetCard.load(out / "README.md")
    data = card.data.to_dict()
    assert data["pretty_name"] == "ACLCIFAR10-R" and data["license"] == "mit"
    assert "complementary-label-learning" in data["tags"]
    assert data["annotations_creators"] == ["machine-generated"]
    assert data["configs"][0]["data_files"] == [{"split": "train", "path": "data/train-*"}]
    assert data["dataset_info"]["splits"][0]["num_examples"] == 40
    assert data["task_ids"] == ["multi-class-image-classification"]
    for text in ("load_dataset(\"YOUR_ORG/aclcifar10-r\")", "Noise:", "figures/transition_matrix.png", "-R", "@article"):
        assert text in card.text
    # a legacy pickle records no labeling settings: the card says so and gives the release's account as the release's
    assert "were not recorded" in card.text and "According to the published ACLCIFAR10-R release" in card.text
    assert json.loads((out / "aclbuild.json").read_text())["repo_id"] is None
    assert validate_repository(out) == []


def test_sharding_and_digits_test_split(cli, tmp_path):
    data = make_legacy_dict(n=300, size=8)
    src = write_pickle(tmp_path / "d.pkl", data)
    out = tmp_path / "repo"
    result = cli("build", src, "--dataset", "digits-uniform", "--output-dir", out, "--max-shard-size", "20KB")
    assert result.exit_code == 0, result.output
    shards = sorted(p.name for p in (out / "data").iterdir())
    train_shards = [s for s in shards if s.startswith("train-")]
    assert len(train_shards) > 1 and train_shards[-1].endswith(f"-of-{len(train_shards):05d}.parquet")
    assert all(p.stat().st_size < 40_000 for p in (out / "data").iterdir())
    ds = load_dataset(str(out))
    assert ds["train"]["names"] == data["names"]
    assert len(ds["test"]) == 397 and ds["test"][0]["cl_labels"] == [-1, -1, -1]  # no label (datasets' ClassLabel -1)
    assert cli("validate", out).exit_code == 0


def test_stats_json(cli, legacy_pickle, tmp_path):
    out = tmp_path / "repo"
    cli("build", legacy_pickle, "--dataset", "aclcifar10", "--output-dir", out)
    result = cli("stats", out, "--json")
    assert result.exit_code == 0
    stats = json.loads(result.stdout)["train"]
    source = pickle.loads(legacy_pickle.read_bytes())
    y, cls = np.array(source["ord_labels"]), np.array(source["cl_labels"])
    assert stats["num_examples"] == 40 and stats["num_classes"] == 10 and stats["cls_per_image"] == 3
    assert stats["noise_rate"] == pytest.approx(np.mean(cls == y[:, None]))
    repeated = np.mean([len(set(row)) < 3 for row in cls.tolist()])
    assert stats["repeated_cl_rate"] == pytest.approx(repeated)
    matrix = np.array(stats["transition_matrix"])
    assert np.allclose(matrix.sum(axis=1)[np.bincount(y, minlength=10) > 0], 1)
    assert np.allclose(stats["cl_marginals"], np.bincount(cls.ravel(), minlength=10) / cls.size)
    assert "noise rate" in cli("stats", out).stdout


def test_validate_reports_each_problem(cli, legacy_pickle, tmp_path):
    out = tmp_path / "repo"
    cli("build", legacy_pickle, "--dataset", "aclcifar10", "--output-dir", out)
    (out / "loader.py").write_text("print('hi')")
    (out / "data" / "train-00000-of-00001.parquet").rename(out / "data" / "train-00000-of-00003.parquet")
    result = cli("validate", out)
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert any("loader.py" in line for line in lines)
    assert any("complete 00000..n-1" in line for line in lines)


def test_validate_detects_changed_content(cli, legacy_pickle, tmp_path):
    import pyarrow.parquet as pq

    out = tmp_path / "repo"
    cli("build", legacy_pickle, "--dataset", "aclcifar10", "--output-dir", out)
    shard = out / "data" / "train-00000-of-00001.parquet"
    table = pq.read_table(shard)
    names = table.column("names").to_pylist()
    names[0] = "renamed.png"
    import pyarrow as pa

    pq.write_table(table.set_column(0, "names", pa.array(names)), shard)
    result = cli("validate", out)
    assert result.exit_code == 2 and "recorded hash" in result.stderr


def test_datasets_table(cli):
    result = cli("datasets")
    assert result.exit_code == 0
    for name in ("aclcifar10-r", "clmin20", "ACLMIN10", "digits-noisy", "voc2012-spml", "cub-spml"):
        assert name in result.stdout


def test_overwrite(cli, legacy_pickle, tmp_path):
    out = tmp_path / "repo"
    assert cli("build", legacy_pickle, "--dataset", "aclcifar10", "--output-dir", out).exit_code == 0
    assert cli("build", legacy_pickle, "--dataset", "aclcifar10", "--output-dir", out).exit_code == 2
    result = cli("build", legacy_pickle, "--dataset", "aclcifar10", "--output-dir", out, "--overwrite", "--num-cl", "2")
    assert result.exit_code == 0
    assert load_dataset(str(out), split="train").features["cl_labels"].length == 2
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_one_cl_per_image_builds_and_loads_as_a_list(cli, tmp_path):
    source = make_legacy_dict(n=12, num_cl=1, seed=3)
    path = write_pickle(tmp_path / "one.pkl", source)
    out = tmp_path / "repo"
    result = cli("build", path, "--dataset", "cifar10-uniform", "--allow-kind-mismatch", "-o", out)
    assert result.exit_code == 0, result.output
    ds = load_dataset(str(out), split="train")
    assert ds.features["cl_labels"].length == 1
    assert ds["cl_labels"] == source["cl_labels"]
    assert validate_repository(out) == []
