"""Single-positive multi-label repositories (issue 16 §1, §3): `aclbuild build` from each source's official format
(tiny fakes), then validate, stats, the card, load_dataset, push and verify through the loopback Hub."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from aclbuild.errors import InvalidRepositoryError
from aclbuild.loaders.observed import validation_split
from aclbuild.loaders.voc import VOC_CLASSES
from aclbuild.repository import read_manifest, split_shards
from tests.test_spml_data import (
    CUB_ATTRIBUTES, CUB_IS_TRAIN, CUB_PRESENT, coco_images, coco_instances, cub_files, jpeg, nus_folder,
    reference_observed, voc_files, write_tree,
)  # fmt: skip

# a VOC source with 5 training images, so that the validation split holds one
VOC_TRAIN = {"2008_000001": {"cat": 1, "dog": 1}, "2008_000002": {"person": 1}, "2008_000003": {"car": 1, "bus": 1},
             "2008_000004": {"cat": 1}, "2008_000005": {"dog": 1, "person": 1, "sofa": 1}}  # fmt: skip
VOC_VAL = {"2009_000001": {"train": 1}, "2009_000002": {"cat": 1, "sofa": 1}}


def coco_source(root: Path) -> Path:
    for part in ("train", "val"):
        write_tree(coco_images(part), root / f"{part}2014.zip")
    annotations = {f"annotations/instances_{p}2014.json": json.dumps(coco_instances(p)).encode()
                   for p in ("train", "val")}  # fmt: skip
    write_tree(annotations, root / "annotations_trainval2014.zip")
    return root


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict[str, Path]:
    """Each of the four sets built through the CLI from its fake source."""
    from typer.testing import CliRunner

    from aclbuild.cli import app

    root = tmp_path_factory.mktemp("spml")
    sources = {
        "voc2012-spml": write_tree(voc_files((("train", VOC_TRAIN), ("val", VOC_VAL))), root / "VOCtrainval.tar"),
        "coco2014-spml": coco_source(root / "coco"),
        "cub-spml": write_tree(cub_files(), root / "CUB_200_2011.tgz"),
        "nuswide-spml": nus_folder(root),
    }
    out = {}
    for name, source in sources.items():
        folder = root / "out" / name
        result = CliRunner().invoke(app, ["build", str(source), "--dataset", name, "--output-dir", str(folder),
                                          "--max-shard-size", "1KB"], env={"COLUMNS": "200"})  # fmt: skip
        assert result.exit_code == 0, result.output
        out[name] = folder
    return out


def test_each_set_builds_a_valid_repository_in_the_cl_folder_format(built, cli):
    for name, folder in built.items():
        assert (folder / "README.md").is_file() and (folder / "aclbuild.json").is_file()
        manifest = read_manifest(folder)
        assert manifest.dataset == name and list(manifest.splits) == ["train", "validation", "test"]
        assert manifest.provenance["seed"] == 1200 and manifest.provenance["validation_fraction"] == 0.2
        shards = split_shards(folder)
        assert set(shards) == {"train", "validation", "test"}
        schema = pq.read_schema(shards["train"][0])
        assert schema.names == ["names", "images", "labels", "observed_label"]
        result = cli("validate", folder)
        assert result.exit_code == 0 and "valid" in result.stdout, result.output
    # 1KB shards: VOC's 4 training JPEGs of ~650 bytes go in more than one, each a complete 00000..n-1 set
    assert len(split_shards(built["voc2012-spml"])["train"]) > 1


def test_images_are_the_source_files_and_rows_load_with_class_names(built):
    from datasets import Image, load_dataset

    ds = load_dataset(str(built["voc2012-spml"]))
    assert {k: len(v) for k, v in ds.items()} == {"train": 4, "validation": 1, "test": 2}
    names = ds["train"].features["labels"].feature.names
    assert names == list(VOC_CLASSES) and ds["train"].features["observed_label"].names == list(VOC_CLASSES)
    train_ids = [VOC_TRAIN_ORDER[i] for i in validation_split(5)[0]]
    raw = ds["train"].cast_column("images", Image(decode=False))
    assert [r["names"] for r in raw] == [f"{i}.jpg" for i in train_ids]
    assert raw[0]["images"]["bytes"] == jpeg(train_ids[0])  # stored as distributed, not re-encoded
    for row, image_id in zip(raw, train_ids):
        assert [names[k] for k in row["labels"]] == [c for c in VOC_CLASSES if VOC_TRAIN[image_id].get(c) == 1]
        assert row["observed_label"] in row["labels"]
    assert [r["observed_label"] for r in ds["test"]] == [None, None]
    assert ds["test"][1]["images"].size == (12, 8)


VOC_TRAIN_ORDER = sorted(VOC_TRAIN)  # the reader orders images by id


def test_stats_match_hand_counts(built, cli):
    result = cli("stats", built["cub-spml"], "--json")
    assert result.exit_code == 0, result.output
    stats = json.loads(result.stdout)
    official = [i for i, t in enumerate(CUB_IS_TRAIN) if t]  # images 0, 1, 3
    train_pos, val_pos = validation_split(len(official))
    train = np.array(CUB_PRESENT)[[official[p] for p in train_pos]]
    observed = reference_observed(np.array(CUB_PRESENT)[official], 1200)[train_pos]
    assert stats["train"]["num_examples"] == len(train) == 2
    assert stats["train"]["label_cardinality"] == train.sum() / len(train) == 2.5
    assert stats["train"]["positive_counts"] == train.sum(axis=0).tolist() == [2, 1, 2]
    assert stats["train"]["observed_counts"] == np.bincount(observed, minlength=3).tolist()
    assert stats["train"]["observed_share"] == stats["train"]["observed_true_share"] == 1.0
    assert stats["validation"]["images_without_positive"] == 1 and stats["validation"]["observed"] == 0
    assert stats["test"]["positive_counts"] == [0, 1, 0]
    table = cli("stats", built["cub-spml"])
    assert "train: 2 images, 2.5 positives per image" in table.stdout
    row = [CUB_ATTRIBUTES[0], "2", "(100.0%)", "0", "(0.0%)", "0", "(0.0%)"]  # count (share of the split's images)
    assert any(line.split()[:7] == row for line in table.stdout.splitlines()), table.stdout


def test_the_card_says_how_observed_labels_were_drawn_and_counts_per_class(built):
    from huggingface_hub import DatasetCard

    card = DatasetCard.load(built["voc2012-spml"] / "README.md")
    assert card.data.license == "other" and "single-positive-multi-label" in card.data.tags
    features = {f["name"]: f for f in card.data.dataset_info["features"]}
    assert features["observed_label"]["dtype"]["class_label"]["names"]["14"] == "person"
    assert [s["num_examples"] for s in card.data.dataset_info["splits"]] == [4, 1, 2]
    assert "Seed: 1200" in card.text and "np.random.RandomState(1200)" in card.text
    assert "Cole et al." in card.text and "@article{xing2023vision" in card.text and "everingham2015pascal" in card.text
    train = [VOC_TRAIN_ORDER[i] for i in validation_split(5)[0]]
    val = [VOC_TRAIN_ORDER[i] for i in validation_split(5)[1]]
    for k, name in enumerate(VOC_CLASSES):
        counts = [sum(VOC_TRAIN[i].get(name) == 1 for i in train), sum(VOC_TRAIN[i].get(name) == 1 for i in val),
                  sum(flags.get(name) == 1 for flags in VOC_VAL.values())]  # fmt: skip
        assert f"| {k} | `{name}` | {counts[0]} | {counts[1]} | {counts[2]} |" in card.text


def _rewrite(folder: Path, split: str, column: str, values: list) -> None:
    path = split_shards(folder)[split][0]
    table = pq.read_table(path)
    column_values = table.column(column).to_pylist()
    column_values[: len(values)] = values
    table = table.set_column(table.schema.get_field_index(column), column, pa.array(column_values, pa.int64()))
    pq.write_table(table, path)


def test_corrupted_observed_labels_fail_validate_in_one_line_each(built, cli, tmp_path):
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(built["voc2012-spml"], bad)
    first = pq.read_table(split_shards(bad)["train"][0]).column("labels").to_pylist()[0]
    outside = next(k for k in range(len(VOC_CLASSES)) if k not in first)
    _rewrite(bad, "train", "observed_label", [outside])
    result = cli("validate", bad)
    assert result.exit_code == InvalidRepositoryError.exit_code
    assert "split 'train': observed_label not among the row's labels, e.g. row 0" in result.stderr.splitlines()
    assert "Traceback" not in result.output

    shutil.rmtree(bad)
    shutil.copytree(built["voc2012-spml"], bad)
    test_labels = pq.read_table(split_shards(bad)["test"][0]).column("labels").to_pylist()
    _rewrite(bad, "test", "observed_label", [test_labels[0][0]])
    result = cli("validate", bad)
    assert result.exit_code == InvalidRepositoryError.exit_code
    assert "split 'test': observed_label must be null outside train (1 rows hold one); rebuild the folder" in (
        result.stderr.splitlines()
    )
    assert "split 'test': content differs from the build's recorded hash in aclbuild.json" in result.stderr


def test_build_refuses_bad_names_sources_and_cl_options_in_one_line(cli, tmp_path):
    voc = write_tree(voc_files(), tmp_path / "voc.tar")
    cub = write_tree(cub_files(), tmp_path / "cub.tgz")
    cases = [
        (("build", voc, "-d", "imagenet-spml", "-o", tmp_path / "a"), "unknown SPML set 'imagenet-spml'"),
        (("build", cub, "-d", "voc2012-spml", "-o", tmp_path / "b"), "holds no"),
        (("build", tmp_path / "none.tar", "-d", "voc2012-spml", "-o", tmp_path / "c"), "does not exist"),
        (("build", voc, "-d", "voc2012-spml", "-o", tmp_path / "d", "--num-cl", "2"), "--num-cl is for the CL sets"),
        (("build", voc, "-d", "voc2012-spml", "-o", voc.parent), "--output-dir"),
    ]
    for args, expected in cases:
        result = cli(*args)
        assert result.exit_code == 2, (args, result.output)
        assert expected in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not (tmp_path / "b").exists() and not (tmp_path / "d").exists()


def test_push_then_verify_through_the_loopback_hub(built, tmp_path):
    sys.path.insert(0, str(Path(__file__).parent))
    from hub_server import TOKEN, HubServer

    repo = "aclorg/voc2012-spml"
    with HubServer() as hub:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING"))}
        env.update(HF_ENDPOINT=hub.url, HF_HUB_DISABLE_XET="1", HF_HOME=str(tmp_path / "hf"), HF_TOKEN=TOKEN,
                   NO_COLOR="1", COLUMNS="200", ACLBUILD_HUB_RETRY_DELAYS="0.05,0.1")  # fmt: skip

        def run(*args):
            return subprocess.run([sys.executable, "-m", "aclbuild", *map(str, args)], env=env, capture_output=True,
                                  text=True, timeout=120, cwd=tmp_path, check=False)  # fmt: skip

        push = run("push", built["voc2012-spml"], "--repo-id", repo)
        assert push.returncode == 0, push.stderr
        folder = built["voc2012-spml"]
        local = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}
        assert local <= set(hub.files(repo)) and "aclbuild.json" in local
        verify = run("verify", repo, "--against", built["voc2012-spml"])
        assert verify.returncode == 0, verify.stdout + verify.stderr
        assert "train 4 rows, validation 1 rows, test 2 rows" in verify.stdout
        other = run("verify", repo, "--against", built["cub-spml"])  # another set: the rows differ
        assert other.returncode == 1 and "rows differ from the local build" in other.stdout + other.stderr


def test_cl_only_verbs_refuse_an_spml_repository_in_one_line(built, cli, tmp_path):
    """export (libcll's CL pickle), report (CL repositories' figures) and the CL benchmark say what to use instead."""
    repo = built["voc2012-spml"]
    for args, says in (
        (["export", repo, "-o", tmp_path / "e"], "export writes libcll's CL pickle"),
        (["report", repo, "-o", tmp_path / "r"], "give the output of `aclbuild benchmark --task spml`"),
        (["benchmark", repo, "-s", "FWD", "-o", tmp_path / "b"], "benchmark it with --task spml"),
    ):
        result = cli(*args)
        assert result.exit_code == 2 and says in result.stderr, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1 and "single-positive multi-label" in result.stderr
    assert not any(tmp_path.iterdir())
