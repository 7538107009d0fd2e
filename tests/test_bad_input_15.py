"""Issue 15 §3: every mistake is one `error:` line with the exit code README promises (2 bad input, 1 failed work),
no traceback, nothing half-written; and input that is fine (a CSV from Excel) reads fine.

Hub cases run the real CLI in a subprocess against tests/hub_server.py (the loopback Hub), as tests/test_hub.py does.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import test_hub

from aclbuild.loaders.label_csv import read_label_csv
from aclbuild.registry import get_base
from aclbuild.repository import split_shards

REPO = "aclorg/aclcifar10"
hub, run, builds = test_hub.hub, test_hub.run, test_hub.builds  # loopback server, `python -m aclbuild`, 3 builds


def one_error_line(stderr: str, expect: str) -> str:
    """The single `error: ...` line of ``stderr``, checked to contain ``expect``."""
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    assert expect in lines[0] and "Traceback" not in stderr, lines[0]
    return lines[0]


# ---------------------------------------------------------------- a label CSV from Excel or Windows


@pytest.mark.parametrize("ending", [b"\n", b"\r\n"])
@pytest.mark.parametrize("bom", [b"", b"\xef\xbb\xbf"])
def test_label_csv_with_bom_or_crlf_reads_like_a_plain_one(tmp_path, bom, ending):
    base = get_base("cifar10")
    rows = [b"a.png,airplane,bird", b"b.png,cat,dog"]
    path = tmp_path / "labels.csv"
    path.write_bytes(bom + ending.join(rows) + ending)
    assert read_label_csv(path, base) == [("a.png", (0, 2)), ("b.png", (3, 5))]


def test_build_joins_a_bom_csv_by_name(cli, tmp_path):
    """A BOM stuck to the first name would leave that row without its image (joined by name here)."""
    from aclbuild.loaders.cifar import read_cifar
    from tests.fakes import make_cifar10_archive

    archive = make_cifar10_archive(tmp_path, n_per_batch=2, n_test=2)
    names = [r.name for r in read_cifar(archive, get_base("cifar10"), "train", pixels=False)]
    picked = [names[3], names[0], names[5]]  # not the source's order: the CSV joins by name
    text = "\r\n".join(f"{name},airplane,bird,cat" for name in picked) + "\r\n"
    (tmp_path / "l.csv").write_bytes(b"\xef\xbb\xbf" + text.encode())
    out = tmp_path / "repo"
    result = cli("build", tmp_path / "l.csv", "--dataset", "aclcifar10", "--source", archive, "-o", out)
    assert result.exit_code == 0, result.output
    assert cli("validate", out).exit_code == 0


# ---------------------------------------------------------------- stats checks the manifest


@pytest.fixture
def repo_copy(digits_repo, tmp_path) -> Path:
    return Path(shutil.copytree(digits_repo, tmp_path / "digits-uniform"))


@pytest.mark.parametrize("damage", ["train shard deleted", "test shard deleted", "manifest deleted"])
def test_stats_refuses_a_folder_that_lost_what_its_manifest_lists(cli, repo_copy, damage):
    if damage == "manifest deleted":
        (repo_copy / "aclbuild.json").unlink()
    else:
        split_shards(repo_copy)[damage.split()[0]][0].unlink()
    for args in (("stats", repo_copy), ("stats", repo_copy, "--json")):
        result = cli(*args)
        assert result.exit_code == 2, result.output
        expect = "aclbuild.json" if damage == "manifest deleted" else "data/ holds none; restore them or rebuild"
        one_error_line(result.stderr, expect)
        assert result.stdout == ""  # no table of the remaining split


def test_stats_refuses_a_shard_with_rows_cut(cli, repo_copy):
    import pyarrow.parquet as pq

    path = split_shards(repo_copy)["train"][0]
    pq.write_table(pq.read_table(path).slice(0, 100), path)
    result = cli("stats", repo_copy)
    assert result.exit_code == 2
    one_error_line(result.stderr, "aclbuild.json records 1400 rows in 1 shard(s), its shards hold 100 rows")
    assert cli("stats", repo_copy.parent.parent / "missing").exit_code == 2


def test_stats_of_an_intact_folder_still_prints(cli, digits_repo):
    result = cli("stats", digits_repo, "--json")
    assert result.exit_code == 0, result.output
    assert '"num_examples": 1400' in result.stdout
