"""generate -> build through labels.parquet alone: the provenance travels in the table's Parquet metadata, the
pixels come from the base's source, nothing is looked for beside the table."""

from __future__ import annotations

import json
import shutil

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from aclbuild.loaders.labels_table import METADATA_KEY, read_table_metadata


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    """A synthetic digits run of 40 images, 3 rounds, seed 7."""
    from typer.testing import CliRunner

    from aclbuild.cli import app

    out = tmp_path_factory.mktemp("gen") / "labels"
    args = ["generate", "digits", "--labeler", "synthetic", "--limit", "40", "--seed", "7", "-o", str(out)]
    result = CliRunner().invoke(app, args, env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    return out


def alone(table, folder):
    """The table moved alone into a folder of its own: nothing can be found beside it."""
    folder.mkdir()
    shutil.copy(table, folder / "labels.parquet")
    return folder / "labels.parquet"


def test_generate_writes_the_table_with_its_provenance_and_no_pickle(generated):
    assert sorted(p.name for p in generated.iterdir()) == ["labels.json", "labels.parquet", "run.json"]
    metadata = read_table_metadata(generated / "labels.parquet")
    log = json.loads((generated / "labels.json").read_text())
    assert metadata == {"base": "digits", "images": 40, "provenance": log["provenance"]}
    assert metadata["provenance"]["labeler"] == "synthetic" and metadata["provenance"]["seed"] == 7


def test_build_from_the_table_alone_validates_and_the_card_shows_the_provenance(cli, generated, tmp_path):
    labels = alone(generated / "labels.parquet", tmp_path / "elsewhere")
    repo = tmp_path / "repo"
    result = cli("build", labels, "--dataset", "digits-uniform", "-o", repo)
    assert result.exit_code == 0, result.output
    assert cli("validate", repo).exit_code == 0
    manifest = json.loads((repo / "aclbuild.json").read_text())
    assert manifest["provenance"]["labeler"] == "synthetic" and manifest["provenance"]["seed"] == 7
    card = (repo / "README.md").read_text()
    assert "were not recorded" not in card and "synthetic" in card
    from datasets import load_dataset

    train = load_dataset(str(repo))["train"]
    rows = pq.read_table(labels).to_pylist()
    assert train["names"] == [r["name"] for r in rows if r["round"] == 0]
    assert train["cl_labels"][5] == [r["label"] for r in rows if r["index"] == 5]  # rounds in order


def test_the_table_contradicting_the_variant_is_refused(cli, generated, tmp_path):
    result = cli("build", generated / "labels.parquet", "--dataset", "acldigits", "-o", tmp_path / "r")
    assert result.exit_code == 2 and "synthetic" in result.stderr
    assert not (tmp_path / "r").exists()


def test_labels_log_is_refused_beside_a_table(cli, generated, tmp_path):
    result = cli("build", generated / "labels.parquet", "-d", "digits-uniform", "-o", tmp_path / "r",
                 "--labels-log", generated / "labels.json")  # fmt: skip
    assert result.exit_code == 2 and "carries its own provenance" in result.stderr


def test_a_table_without_metadata_builds_with_settings_not_recorded(cli, generated, tmp_path):
    table = pq.read_table(generated / "labels.parquet")
    assert METADATA_KEY in table.schema.metadata
    bare = tmp_path / "bare.parquet"
    pq.write_table(table.replace_schema_metadata(None), bare)
    assert read_table_metadata(bare) is None
    result = cli("build", bare, "--dataset", "digits-uniform", "-o", tmp_path / "repo")
    assert result.exit_code == 0, result.output
    assert "were not recorded" in (tmp_path / "repo" / "README.md").read_text()


def test_failed_queries_are_refused_unless_dropped(cli, generated, tmp_path):
    table = pq.read_table(generated / "labels.parquet")
    labels = table.column("label").to_pylist()
    labels[4] = -1  # image 1, round 1
    failed = tmp_path / "failed.parquet"
    column = table.schema.get_field_index("label")
    pq.write_table(table.set_column(column, "label", pa.array(labels, pa.int32())), failed)
    result = cli("build", failed, "-d", "digits-uniform", "-o", tmp_path / "r")
    assert result.exit_code == 2 and "1 images carry a failed query" in result.stderr
    result = cli("build", failed, "-d", "digits-uniform", "-o", tmp_path / "r", "--drop-failed")
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "r" / "aclbuild.json").read_text())["splits"]["train"]["num_examples"] == 39


def test_a_table_of_another_order_joins_by_name(cli, generated, tmp_path):
    table = pq.read_table(generated / "labels.parquet")
    shuffled = table.take(list(range(len(table) - 1, -1, -1)))
    indices = shuffled.column("index").to_pylist()
    moved = tmp_path / "moved.parquet"  # indices that point elsewhere: the names still find the images
    pq.write_table(shuffled.set_column(0, "index", pa.array([i + 100 for i in indices], pa.int64())), moved)
    result = cli("build", moved, "-d", "digits-uniform", "-o", tmp_path / "r")
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("case", ["corrupt", "foreign", "bad-metadata", "ordinary", "other-base"])
def test_bad_tables_are_one_line_exit_2(cli, generated, tmp_path, case):
    table = pq.read_table(generated / "labels.parquet")
    path = tmp_path / "labels.parquet"
    if case == "corrupt":
        path.write_bytes((generated / "labels.parquet").read_bytes()[:300])
    elif case == "foreign":
        pq.write_table(pa.table({"names": ["a.png"], "ord_labels": [1]}), path)
    else:
        metadata = read_table_metadata(generated / "labels.parquet")
        if case == "ordinary":
            metadata["provenance"]["mode"] = "ord"
        elif case == "other-base":
            metadata["base"] = "mnist"
        raw = b"not json" if case == "bad-metadata" else json.dumps(metadata).encode()
        pq.write_table(table.replace_schema_metadata({METADATA_KEY: raw}), path)
    result = cli("build", path, "-d", "digits-uniform", "-o", tmp_path / "r")
    assert result.exit_code == 2, result.output
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.output
    assert not (tmp_path / "r").exists()


def test_a_table_of_a_base_with_an_archive_needs_source(cli, generated, tmp_path):
    result = cli("build", generated / "labels.parquet", "-d", "cifar10-uniform", "-o", tmp_path / "r")
    assert result.exit_code == 2 and "--source" in result.stderr


def test_a_log_beside_a_legacy_pickle_is_not_read(cli, tmp_path):
    from conftest import make_legacy_dict, write_pickle

    source = write_pickle(tmp_path / "labels.pkl", make_legacy_dict(n=20))
    log = {"provenance": {"labeler": "synthetic", "matrix": "strong", "seed": 3}}
    (tmp_path / "labels.json").write_text(json.dumps(log), encoding="utf-8")
    result = cli("build", source, "-d", "aclcifar10", "-o", tmp_path / "repo")  # synthetic would be refused here
    assert result.exit_code == 0, result.output
    assert "were not recorded" in (tmp_path / "repo" / "README.md").read_text()


def test_the_replay_labelers_table_builds(cli, generated, tmp_path):
    replay = tmp_path / "replay"
    result = cli("generate", "digits", "--labeler", "replay", "--answers", generated / "labels.parquet",
                 "--limit", "40", "--num-rounds", "1", "-o", replay)  # fmt: skip
    assert result.exit_code == 0, result.output
    inside = sum(r["status"] == "ok" for r in pq.read_table(replay / "labels.parquet").to_pylist())
    assert 0 < inside < 40  # the file's labels fall outside some seeded candidate sets: those queries failed
    labels = alone(replay / "labels.parquet", tmp_path / "elsewhere")
    result = cli("build", labels, "-d", "acldigits", "-o", tmp_path / "repo", "--drop-failed")
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "repo" / "aclbuild.json").read_text())
    assert manifest["splits"]["train"]["num_examples"] == inside and manifest["provenance"]["labeler"] == "replay"
