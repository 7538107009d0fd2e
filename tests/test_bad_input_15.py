"""Issue 15 §3: every mistake is one `error:` line with the exit code README promises (2 bad input, 1 failed work),
no traceback, nothing half-written; and input that is fine (a CSV from Excel) reads fine.

Hub cases run the real CLI in a subprocess against tests/hub_server.py (the loopback Hub), as tests/test_hub.py does.
"""

from __future__ import annotations

import shutil
import textwrap
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
    result = cli("stats", repo_copy.parent / "missing")
    assert result.exit_code == 2
    one_error_line(result.stderr, "missing is not a folder; give a repository folder that `aclbuild build` wrote")


def test_stats_of_an_intact_folder_still_prints(cli, digits_repo):
    result = cli("stats", digits_repo, "--json")
    assert result.exit_code == 0, result.output
    assert '"num_examples": 1400' in result.stdout


# ---------------------------------------------------------------- verify and push: our words, the right exit code


def test_verify_and_push_refuse_a_malformed_repo_id_before_any_request(hub, run, builds):
    for args in (("verify", "bad id!!/x y"), ("verify", "no-namespace"), ("verify", "org/x..y"),
                 ("push", builds["single"], "--repo-id", "bad id!!/x y")):  # fmt: skip
        proc = run(*args)
        assert proc.returncode == 2, proc.stderr
        one_error_line(proc.stderr, "is not a Hub repo id: ORG/NAME, letters, digits, - _ .")
    assert not [r for r in hub.requests if not r[1].startswith("/api/agent")]


def test_a_benchmark_on_a_hub_id_with_a_refused_token_fails_instead_of_using_the_cache(hub, run, builds):
    assert run("push", builds["single"], "--repo-id", REPO).returncode == 0
    args = ("benchmark", REPO, "-s", "FWD", "--model", "mlp", "--epochs", "1", "--batch-size", "16")
    done = run(*args, "-o", "first")  # loads it, and datasets caches it
    assert done.returncode == 0, done.stderr
    proc = run(*args, "-o", "second", token="hf_refusedTOKENvalue0000000000000")
    assert proc.returncode == 1, proc.stderr
    one_error_line(proc.stderr, "refused the token (401 Unauthorized)")


def test_an_unreachable_hub_is_said_before_the_cache_is_used(monkeypatch, capsys):
    import httpx2
    from huggingface_hub import HfApi

    from aclbuild import cl_data

    def unreachable(self, repo_id, **kwargs):
        raise httpx2.ConnectError("connection refused")

    monkeypatch.setattr(HfApi, "dataset_info", unreachable)
    assert cl_data._hub_pretty_name("aclorg/aclcifar10") == "aclcifar10"
    assert "using the copy of aclorg/aclcifar10 that datasets cached, if any" in capsys.readouterr().err


def test_verify_with_a_refused_token_says_refused(hub, run, builds):
    assert run("push", builds["single"], "--repo-id", REPO).returncode == 0
    wrong = "hf_refusedTOKENvalue0000000000000"
    for proc in (run("verify", REPO, token=wrong), run("verify", REPO, "--token", wrong, token=None)):
        assert proc.returncode == 1
        line = one_error_line(proc.stderr, "refused the token (401 Unauthorized)")
        assert "without a token" not in line and wrong not in proc.stderr + proc.stdout
    proc = run("verify", REPO, token=None)  # a public repo needs none
    assert proc.returncode == 0, proc.stderr


def test_a_read_refused_with_403_is_not_called_a_write():
    import httpx2
    from huggingface_hub.errors import HfHubHTTPError

    from aclbuild.errors import AuthError
    from aclbuild.hub_errors import describe_hub_error

    url = "http://127.0.0.1:1/api/datasets/aclorg/x"
    exc = HfHubHTTPError("403 Forbidden", response=httpx2.Response(403, request=httpx2.Request("GET", url)))
    read = describe_hub_error(exc, "http://127.0.0.1:1", "aclorg/x", has_token=True, reading=True)
    assert isinstance(read, AuthError) and "refused the token for aclorg/x (403 Forbidden)" in str(read)
    assert "write" not in str(read)
    assert "you may not write to aclorg/x (403" in str(describe_hub_error(exc, "http://127.0.0.1:1", "aclorg/x"))


RACE = textwrap.dedent(
    """
    import sys
    import aclbuild.hub as hub_module
    from aclbuild.cli import main

    planned = hub_module.plan_push

    def plan_then_someone_pushes(api, repo_id, folder, revision):
        plan = planned(api, repo_id, folder, revision)
        api.upload_file(path_or_fileobj=b"pushed meanwhile", path_in_repo="notes.txt", repo_id=repo_id,
                        repo_type="dataset", revision=revision)
        return plan

    hub_module.plan_push = plan_then_someone_pushes
    sys.argv = ["aclbuild", "push", FOLDER, "--repo-id", REPO]
    main()
    """
)


def test_the_loser_of_a_push_race_names_the_head_it_lost_to(hub, run, builds):
    assert run("push", builds["single"], "--repo-id", REPO).returncode == 0
    before = hub.head(REPO)
    proc = run(script=RACE.replace("FOLDER", repr(str(builds["other"]))).replace("REPO]", f"{REPO!r}]"))
    assert proc.returncode == 1, proc.stderr
    now = hub.head(REPO)
    assert now != before and "notes.txt" in hub.files(REPO)  # the other push landed, ours did not
    assert hub.files(REPO)["aclbuild.json"] == (builds["single"] / "aclbuild.json").read_bytes()
    line = one_error_line(proc.stderr, f"the remote is now at commit {now[:7]} (it was at {before[:7]} when")
    assert "unchanged" not in line


# ---------------------------------------------------------------- broken card YAML: one line with file and line


def break_license_line(folder: Path) -> int:
    """Open a flow sequence on the card's license line that is never closed; returns that line's number."""
    readme = folder / "README.md"
    lines = readme.read_text(encoding="utf-8").split("\n")
    number = next(i for i, line in enumerate(lines, start=1) if line.startswith("license:"))
    lines[number - 1] = "license: [cc-by-4.0"
    readme.write_text("\n".join(lines), encoding="utf-8")
    return number


def test_broken_card_yaml_is_one_line_with_file_and_line(cli, repo_copy):
    number = break_license_line(repo_copy)
    expect = f"README.md line {number + 1}: the card's YAML does not parse: expected ',' or ']', but got ':'"
    result = cli("validate", repo_copy)
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(expect), result.stderr
    assert f"opened at line {number})" in lines[0]
    result = cli("push", repo_copy, "--repo-id", REPO, "--dry-run")  # refused before any request
    assert result.exit_code == 2
    one_error_line(result.stderr, expect)


def test_verify_names_the_line_of_a_broken_card_on_the_hub(hub, run, builds):
    assert run("push", builds["single"], "--repo-id", REPO).returncode == 0
    card = hub.files(REPO)["README.md"].decode()
    number = next(i for i, line in enumerate(card.split("\n"), start=1) if line.startswith("license:"))
    hub.tamper(REPO, "README.md", card.replace("\nlicense: ", "\nlicense: [", 1).encode())
    proc = run("verify", REPO)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert lines == [lines[0]] and lines[0].startswith(f"card: README.md on the Hub line {number + 1}: the card's YAML")


# ---------------------------------------------------------------- generate: a refusal writes nothing


REFUSALS = {
    "noise out of range": (["--matrix", "noisy", "--noise", "1.5"], "--noise must lie in [0, 1]"),
    "negative workers": (["--num-workers", "-1"], "--num-workers must be 0 or more"),
    "answers not UTF-8": (["--labeler", "replay", "--answers", "BINARY"], "is not a UTF-8 text CSV"),
    "answers of other images": (["--labeler", "replay", "--answers", "FEW"], "few.csv holds 2 images"),
    "answers a folder": (["--labeler", "replay", "--answers", "FOLDER"], "does not exist or is not a file"),
    "prompt file without a model": (["--prompt-file", "MISSING"], "--prompt-file is a VLM's question"),
    "noise without the noisy matrix": (["--noise", "0.3"], "--noise applies to --matrix noisy only"),
}


@pytest.mark.parametrize("made_beforehand", [False, True], ids=["new folder", "empty folder"])
@pytest.mark.parametrize("args, message", list(REFUSALS.values()), ids=list(REFUSALS))
def test_a_refused_generate_leaves_nothing_then_the_corrected_one_runs(cli, tmp_path, args, message, made_beforehand):
    (tmp_path / "bin.csv").write_bytes(b"\xff\xfe\x00\x81 not text")
    (tmp_path / "few.csv").write_text("a.png,0,1,2\nb.png,3,4,5\n", encoding="utf-8")
    (tmp_path / "folder").mkdir()
    given = {"BINARY": tmp_path / "bin.csv", "FEW": tmp_path / "few.csv", "FOLDER": tmp_path / "folder",
             "MISSING": tmp_path / "nothing.jinja"}  # fmt: skip
    out = tmp_path / "labels"
    if made_beforehand:
        out.mkdir()
    command = ["generate", "digits", "--labeler", "synthetic", "--limit", "30", "-o", out]
    result = cli(*command, *[given.get(a, a) for a in args])
    assert result.exit_code == 2, result.output
    one_error_line(result.stderr, message)
    assert (list(out.iterdir()) == []) if made_beforehand else not out.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    result = cli(*command)
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == ["labels.json", "labels.parquet", "run.json"]


# ---------------------------------------------------------------- verify of a repo holding other configs


ADD_SMALL_CONFIG = textwrap.dedent(
    f"""
    from datasets import Dataset
    Dataset.from_dict({{"x": [1, 2, 3]}}).push_to_hub({REPO!r}, config_name="small")
    """
)


def test_verify_of_a_repo_with_other_configs_names_them_in_both_modes(hub, run, builds):
    """Issue 13 fixed the traceback; kept here: the default config is checked, loaded and streamed, the other named."""
    assert run("push", builds["single"], "--repo-id", REPO).returncode == 0
    proc = run(script=ADD_SMALL_CONFIG)
    assert proc.returncode == 0, proc.stderr[-3000:]
    proc = run("verify", REPO, "--against", builds["single"], "--streaming")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().endswith("other configs, not checked: small)"), proc.stdout
    hub.tamper(REPO, "small/train-00000-of-00001.parquet", b"not parquet")  # theirs, not checked: still passes
    assert run("verify", REPO).returncode == 0
