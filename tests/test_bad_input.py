"""Bad input to `aclbuild build`: exit 2, one clear line, nothing left behind."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from tests.conftest import make_legacy_dict, write_pickle


class Payload:
    """Unpickling this would run a shell command."""

    def __reduce__(self):
        import os

        return (os.system, ("touch MARKER",))


def _mutate(name: str, data: dict) -> dict:
    if name == "missing key":
        del data["cl_labels"]
    elif name == "extra key":
        data["extra"] = [1]
    elif name == "wrong dtype":
        data["images"] = data["images"].astype(np.float32)
    elif name == "wrong image shape":
        data["images"] = data["images"][:, :16, :16]
    elif name == "ragged labels":
        data["cl_labels"][3] = [1, 2]
    elif name == "label out of range":
        data["cl_labels"][5] = [1, 2, 10]
    elif name == "ord label out of range":
        data["ord_labels"][0] = -1
    elif name == "duplicated names":
        data["names"][7] = data["names"][2]
    elif name == "count mismatch":
        data["ord_labels"] = data["ord_labels"][:-1]
    return data


CASES = {
    "missing key": "missing cl_labels",
    "extra key": "unexpected extra",
    "wrong dtype": "float32",
    "wrong image shape": "(16, 16, 3)",
    "ragged labels": "ragged",
    "label out of range": "outside 0..9",
    "ord label out of range": "outside 0..9",
    "duplicated names": "more than once",
    "count mismatch": "39 ord_labels but 40 names",
}


def _assert_clean_failure(result, out, expect: str):
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert expect in lines[0], lines[0]
    assert "Traceback" not in result.output
    assert not out.exists()
    assert [p.name for p in out.parent.iterdir() if p.name.startswith(".")] == []


@pytest.mark.parametrize("case", list(CASES))
def test_bad_pickle_contents(cli, tmp_path, case):
    src = write_pickle(tmp_path / "bad.pkl", _mutate(case, make_legacy_dict()))
    out = tmp_path / "out" / "repo"
    out.parent.mkdir()
    result = cli("build", src, "--dataset", "aclcifar10", "--output-dir", out)
    _assert_clean_failure(result, out, CASES[case])


def test_truncated_pickle(cli, tmp_path, legacy_pickle):
    src = tmp_path / "cut.pkl"
    src.write_bytes(legacy_pickle.read_bytes()[:5000])
    out = tmp_path / "out"
    _assert_clean_failure(cli("build", src, "--dataset", "aclcifar10", "--output-dir", out), out, "cut.pkl")


def test_malicious_pickle_runs_nothing(cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    data = make_legacy_dict()
    data["names"] = Payload()
    src = tmp_path / "evil.pkl"
    src.write_bytes(pickle.dumps(data))
    out = tmp_path / "out"
    _assert_clean_failure(cli("build", src, "--dataset", "aclcifar10", "--output-dir", out), out, "system")
    assert not (tmp_path / "MARKER").exists()


def test_unknown_dataset(cli, tmp_path, legacy_pickle):
    out = tmp_path / "out"
    result = cli("build", legacy_pickle, "--dataset", "aclcifar11", "--output-dir", out)
    _assert_clean_failure(result, out, "aclcifar11")


def test_missing_source(cli, tmp_path):
    out = tmp_path / "out"
    _assert_clean_failure(cli("build", tmp_path / "nope.pkl", "--dataset", "aclcifar10", "-o", out), out, "nope.pkl")


def test_csv_name_without_image(cli, tmp_path):
    csv = tmp_path / "labels.csv"
    csv.write_text("digit_0000.png,1,2,3\nnot_a_digit.png,1,2,3\n")
    out = tmp_path / "out"
    _assert_clean_failure(cli("build", csv, "--dataset", "acldigits", "-o", out), out, "'not_a_digit.png'")


def test_csv_unknown_class(cli, tmp_path):
    csv = tmp_path / "labels.csv"
    csv.write_text("n02281406_0.JPEG,pizza,kimono,scandal\n")
    out, source = tmp_path / "out", tmp_path / "src"
    source.mkdir()
    result = cli("build", csv, "--dataset", "aclmin10", "-o", out, "--source", source)
    _assert_clean_failure(result, out, "'scandal' is not a class of base min10")


def test_corrupt_archive(cli, tmp_path):
    csv = tmp_path / "labels.csv"
    csv.write_text("n02281406_0.JPEG,pizza,kimono,sandal\n")
    archive = tmp_path / "tiny-imagenet-200.zip"
    archive.write_bytes(b"PK\x03\x04 this is not a zip file at all")
    out = tmp_path / "out"
    _assert_clean_failure(cli("build", csv, "--dataset", "aclmin10", "-o", out, "--source", archive), out, "zip")


def test_output_not_empty(cli, tmp_path, legacy_pickle):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    result = cli("build", legacy_pickle, "--dataset", "aclcifar10", "--output-dir", out)
    assert result.exit_code == 2 and "--overwrite" in result.stderr
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


def test_num_cl_too_large(cli, tmp_path, legacy_pickle):
    out = tmp_path / "out"
    _assert_clean_failure(
        cli("build", legacy_pickle, "--dataset", "aclcifar10", "-o", out, "--num-cl", "4"), out, "--num-cl must be 1..3"
    )


def test_split_with_some_rows_lacking_cls(cli, tmp_path, legacy_pickle):
    """A hand-edited train split where some rows lost their CLs: validate lists it, stats and export refuse it."""
    from aclbuild.registry import get_variant
    from aclbuild.repository import iter_records, split_shards, write_split
    from aclbuild.schema import ClRecord, arrow_schema

    repo = tmp_path / "repo"
    assert cli("build", legacy_pickle, "--dataset", "aclcifar10", "-o", repo).exit_code == 0
    records = list(iter_records(repo, "train"))
    for path in split_shards(repo)["train"]:
        path.unlink()
    holes = [ClRecord(r.name, r.image, r.ord_label, None if i % 4 == 0 else r.cl_labels) for i, r in enumerate(records)]
    write_split(repo, "train", holes, arrow_schema(get_variant("aclcifar10").base.class_names, 3))
    validate = cli("validate", repo)
    assert validate.exit_code == 2 and "every image needs complementary labels (10 rows have none)" in validate.output
    for args in (("stats", repo), ("export", repo, "--to", "pickle", "-o", tmp_path / "pickles")):
        result = cli(*args)
        assert result.exit_code == 2 and "10 of 40 rows have no cl_labels" in result.stderr, result.output
        assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "pickles" / "aclcifar10.pkl").exists()
