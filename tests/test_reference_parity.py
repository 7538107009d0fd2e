"""Proof that `--candidates reference` redraws the released ACL candidate sets: the replay labeler, run on fake
archives whose file names are the released CSVs' (in order; no pixel is ever decoded: the TinyImageNet JPEGs here are
empty files), finds every released label inside its regenerated candidates, and ACLMIN10-R's sets equal the ones
recorded. The default stream finds them at chance, so the check can fail."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.conftest import SHARED
from tests.fakes import cifar_archive_with_names

LABELS = SHARED / "data" / "acl-labels"
pytestmark = pytest.mark.skipif(not (LABELS / "aclcifar10.csv").is_file(), reason="needs ../shared/data/acl-labels")


def _names(csv_name: str) -> list[str]:
    with (LABELS / csv_name).open(newline="", encoding="utf-8") as f:
        return [row[0] for row in csv.reader(f) if row]


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("released-names")
    cifar10 = _names("aclcifar10.csv")
    assert _names("aclcifar10r.csv") == cifar10
    cifar_archive_with_names(root / "c10", "cifar10", cifar10, as_folder=True)
    cifar_archive_with_names(root / "c100", "cifar20", _names("aclcifar20.csv"), as_folder=True)
    tiny = root / "tiny" / "tiny-imagenet-200"
    for csv_name in ("aclmin10.csv", "aclmin20.csv"):
        for name in _names(csv_name):  # empty files: replay must never open one
            folder = tiny / "train" / name.split("_")[0] / "images"
            folder.mkdir(parents=True, exist_ok=True)
            (folder / name).touch()
    return {"cifar10": root / "c10", "cifar20": root / "c100", "min10": root / "tiny", "min20": root / "tiny"}


def _replay(cli, tmp_path, sources, base, csv_name, rounds, *extra) -> tuple[dict, Path]:
    out = tmp_path / f"{csv_name}-{'-'.join(extra) or 'plain'}"
    result = cli("generate", base, "--source", sources[base], "--labeler", "replay", "--answers", LABELS / csv_name,
                 "--num-rounds", rounds, "--long-label", "-o", out, *extra)  # fmt: skip
    assert result.exit_code == 0, result.output
    return json.loads((out / "labels.json").read_text())["statistics"], out


@pytest.mark.parametrize(
    "base, csv_name, rounds, expected",
    [("cifar10", "aclcifar10.csv", 9, 450_000), ("cifar20", "aclcifar20.csv", 3, 150_000),
     ("min10", "aclmin10.csv", 3, 15_000), ("min20", "aclmin20.csv", 3, 30_000)],
)  # fmt: skip
def test_reference_stream_contains_every_released_label(cli, tmp_path, sources, base, csv_name, rounds, expected):
    stats, out = _replay(cli, tmp_path, sources, base, csv_name, rounds, "--candidates", "reference")
    assert stats["containment"] == {"inside": expected, "labels": expected, "rate": 1.0, "no_answer": 0}
    table = pq.read_table(out / "labels.parquet", columns=["name", "round", "candidate_names", "status"])
    assert table.num_rows == expected and set(table.column("status").to_pylist()) == {"ok"}
    assert not (out / "labels.pkl").exists()  # no pixels were read


@pytest.mark.parametrize(
    "base, csv_name, expected", [("cifar10", "aclcifar10r.csv", 300_000), ("min10", "aclmin10r.csv", 30_000)]
)
def test_reference_reduction_contains_every_released_label(cli, tmp_path, sources, base, csv_name, expected):
    stats, out = _replay(cli, tmp_path, sources, base, csv_name, 6, "-R", "--protocol", "reference")
    assert stats["containment"]["inside"] == expected and stats["containment"]["rate"] == 1.0
    if base != "min10":
        return
    table = pq.read_table(out / "labels.parquet", columns=["name", "round", "candidate_names"]).to_pylist()
    regenerated = {(row["name"], row["round"]): sorted(row["candidate_names"]) for row in table}
    with (LABELS / "aclmin10r-candidates.csv").open(newline="", encoding="utf-8") as f:
        recorded = {(row[0], r): sorted(group.split(",")) for row in csv.reader(f) for r, group in enumerate(row[1:])}
    assert len(recorded) == 30_000 and regenerated == recorded


@pytest.mark.parametrize("base, csv_name, chance", [("min10", "aclmin10.csv", 0.4), ("min20", "aclmin20.csv", 0.2)])
def test_default_stream_contains_them_at_chance(cli, tmp_path, sources, base, csv_name, chance):
    stats, _ = _replay(cli, tmp_path, sources, base, csv_name, 3)
    assert abs(stats["containment"]["rate"] - chance) < 0.03


def test_a_wrong_answers_file_is_one_line(cli, tmp_path, sources):
    short = tmp_path / "short.csv"
    short.write_text("".join(line for line in (LABELS / "aclmin10.csv").open() if "n02281406_1" not in line))
    renamed = tmp_path / "renamed.csv"
    renamed.write_text((LABELS / "aclmin10.csv").read_text().replace("n02281406_0.JPEG", "other.JPEG"))
    for answers, message in ((short, "holds 4889 images but the source has 5000"), (renamed, "1 file names have no image in the image source")):
        result = cli("generate", "min10", "--source", sources["min10"], "--labeler", "replay", "--answers", answers,
                     "-o", tmp_path / answers.stem)  # fmt: skip
        assert result.exit_code == 2 and message in result.output and len(result.output.strip().splitlines()) == 1
        assert not (tmp_path / answers.stem).exists()  # refused before the output folder was made
    for args, message in ((("digits", "--candidates", "reference"), "no released set of base digits"),
                          (("min20", "-R", "--protocol", "reference"), "no released -R set of base min20"),
                          (("min10", "--mode", "ord", "--candidates", "reference"), "--mode ord shows every class")):
        result = cli("generate", *args, "--labeler", "replay", "--answers", LABELS / "aclmin10.csv",
                     "-o", tmp_path / "x")  # fmt: skip
        assert result.exit_code == 2 and message in result.output, result.output
