"""`aclbuild push` and `aclbuild verify`, run as the real CLI in a subprocess against tests/hub_server.py.

Every run gets HF_ENDPOINT (the loopback server), HF_HUB_DISABLE_XET=1, a dummy HF_TOKEN and a temporary HF_HOME;
every run's stdout and stderr are checked for the token.
"""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from conftest import make_legacy_dict
from hub_server import TOKEN, HubServer

from aclbuild.builder import build_repository
from aclbuild.registry import get_variant
from aclbuild.repository import read_table
from aclbuild.schema import ClRecord

REPO = "aclorg/aclcifar10"


def records(seed: int, n: int, with_cls: bool = True) -> list[ClRecord]:
    d = make_legacy_dict(n=n, seed=seed)
    return [
        ClRecord(name, image, y, tuple(cls) if with_cls else None)
        for name, image, y, cls in zip(d["names"], d["images"], d["ord_labels"], d["cl_labels"])
    ]


@pytest.fixture(scope="module")
def builds(tmp_path_factory) -> dict[str, Path]:
    """Three local builds: ``sharded`` (train in 3 shards), ``single`` (same rows, 1 shard), ``other`` (new rows)."""
    root = tmp_path_factory.mktemp("builds")
    variant = get_variant("aclcifar10")
    train, test = records(0, 60), records(7, 12, with_cls=False)
    return {
        "sharded": build_repository(variant, train, test, root / "sharded", max_shard_size=70_000),
        "single": build_repository(variant, train, test, root / "single"),
        "other": build_repository(variant, records(1, 60), test, root / "other"),
    }


@pytest.fixture
def hub():
    with HubServer() as server:
        yield server


@pytest.fixture
def run(hub, tmp_path):
    """Run `python -m aclbuild ARGS` against the server; the token must appear in none of its output."""
    home, scratch = tmp_path / "hf_home", tmp_path / "tmp"
    scratch.mkdir()

    def invoke(*args, token: str | None = TOKEN, endpoint: str | None = None, script: str | None = None):
        env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING"))}
        env.update(HF_ENDPOINT=endpoint or hub.url, HF_HUB_DISABLE_XET="1", HF_HOME=str(home), NO_COLOR="1",
                   COLUMNS="200", HF_HUB_DISABLE_TELEMETRY="1", TMPDIR=str(scratch),
                   ACLBUILD_HUB_RETRY_DELAYS="0.05,0.1,0.2")  # fmt: skip
        if token:
            env["HF_TOKEN"] = token
        command = [sys.executable, "-c", script] if script else [sys.executable, "-m", "aclbuild", *map(str, args)]
        proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=180, cwd=tmp_path, check=False)
        for stream in (proc.stdout, proc.stderr):
            assert TOKEN not in stream and "Traceback" not in stream, stream
        return proc

    return invoke


def test_push_loads_back_equal_then_repush_and_fewer_shards(hub, run, builds):
    sharded, single = builds["sharded"], builds["single"]
    assert len(list((sharded / "data").glob("train-*"))) == 3
    proc = run("push", sharded, "--repo-id", REPO)
    assert proc.returncode == 0, proc.stderr
    assert f"{hub.url}/datasets/{REPO}/commit/{hub.head(REPO)}" in proc.stdout
    local = {p.relative_to(sharded).as_posix(): p.read_bytes() for p in sharded.rglob("*") if p.is_file()}
    remote = hub.files(REPO)
    # byte for byte: nothing re-encoded; only the card's usage example names the repo it now lives in
    assert b'load_dataset("YOUR_ORG/aclcifar10")' in local["README.md"]
    local["README.md"] = local["README.md"].replace(b"YOUR_ORG/aclcifar10", REPO.encode())
    assert {k: v for k, v in remote.items() if k != ".gitattributes"} == local

    # a downstream user: plain load_dataset, no extra code, no trust_remote_code
    script = (
        "import json, hashlib; from datasets import load_dataset, Image\n"
        f"ds = load_dataset({REPO!r})\n"
        "out = {s: [[r['names'], hashlib.sha256(r['images']['bytes']).hexdigest(), r['ord_labels'], r['cl_labels']]\n"
        "       for r in d.cast_column('images', Image(decode=False))] for s, d in ds.items()}\n"
        "print(json.dumps({'rows': out, 'names': ds['train'].features['ord_labels'].names}))"
    )
    loaded = json.loads(run(script=script).stdout)
    for split in ("train", "test"):
        table = read_table(sharded, split)
        images = table.column("images").combine_chunks().field("bytes").to_pylist()
        expected = [
            [n, __import__("hashlib").sha256(b).hexdigest(), y, c]
            for n, b, y, c in zip(table.column("names").to_pylist(), images,
                                  table.column("ord_labels").to_pylist(), table.column("cl_labels").to_pylist())
        ]  # fmt: skip
        assert loaded["rows"][split] == expected
    assert loaded["names"] == list(get_variant("aclcifar10").base.class_names)

    commits = hub.commit_count(REPO)
    proc = run("push", sharded, "--repo-id", REPO)
    assert proc.returncode == 0 and "no changes" in proc.stdout and "no new commit" in proc.stdout
    assert hub.commit_count(REPO) == commits

    proc = run("push", single, "--repo-id", REPO, "--message", "one shard")
    assert proc.returncode == 0, proc.stderr
    assert "3 deleted" in proc.stdout
    data = sorted(p for p in hub.files(REPO) if p.startswith("data/"))
    assert data == ["data/test-00000-of-00001.parquet", "data/train-00000-of-00001.parquet"]
    assert hub.commit_count(REPO) == commits + 1


def test_verify_passes_and_fails_on_differences(hub, run, builds):
    assert run("push", builds["single"], "--repo-id", REPO).returncode == 0
    proc = run("verify", REPO, "--against", builds["single"], "--streaming")
    assert proc.returncode == 0, proc.stderr
    assert "train 60 rows" in proc.stdout and "test 12 rows" in proc.stdout

    proc = run("verify", REPO, "--against", builds["other"])
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert any("split 'train': rows differ from the local build (first at row 0" in line for line in lines), lines
    assert not any("split 'test'" in line for line in lines)  # the test split is the same in both builds

    # tamper: flip one true label inside the published shard, behind the repo's back
    path = "data/train-00000-of-00001.parquet"
    table = pq.read_table(io.BytesIO(hub.files(REPO)[path]))
    labels = table.column("ord_labels").to_pylist()
    labels[5] = (labels[5] + 1) % 10
    table = table.set_column(2, "ord_labels", __import__("pyarrow").array(labels, table.schema.field(2).type))
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    hub.tamper(REPO, path, buffer.getvalue())
    proc = run("verify", REPO, "--against", builds["single"])
    assert proc.returncode == 1
    assert "split 'train': rows differ from the content hash in the repo's aclbuild.json" in proc.stderr
    assert "first at row 5 (img_00005.png): ord_label" in proc.stderr


def test_dry_run_private_revision_and_pull_request(hub, run, builds):
    proc = run("push", builds["sharded"], "--repo-id", REPO, "--dry-run")
    assert proc.returncode == 0, proc.stderr
    assert "does not exist yet" in proc.stdout and "add    data/train-00002-of-00003.parquet" in proc.stdout
    assert REPO not in hub.repos  # nothing created, nothing uploaded

    assert run("push", builds["sharded"], "--repo-id", REPO, "--private").returncode == 0
    assert hub.repos[REPO].private
    head = hub.head(REPO)
    proc = run("push", builds["other"], "--repo-id", REPO, "--dry-run")
    assert "delete data/train-00001-of-00003.parquet" in proc.stdout and "change README.md" in proc.stdout
    assert "nothing was uploaded" in proc.stdout and hub.head(REPO) == head

    proc = run("push", builds["other"], "--repo-id", REPO, "--revision", "dev")
    assert proc.returncode == 0, proc.stderr
    assert hub.head(REPO) == head  # main untouched
    assert hub.files(REPO, "dev")["aclbuild.json"] == (builds["other"] / "aclbuild.json").read_bytes()

    proc = run("push", builds["other"], "--repo-id", REPO, "--create-pr")
    assert proc.returncode == 0, proc.stderr
    assert f"pull request: {hub.url}/datasets/{REPO}/discussions/1" in proc.stdout
    assert hub.head(REPO) == head
    assert hub.files(REPO, "refs/pr/1")["aclbuild.json"] == (builds["other"] / "aclbuild.json").read_bytes()


def test_failures_are_one_clean_line(hub, run, builds, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    proc = run("push", builds["single"], "--repo-id", REPO, endpoint=dead)
    assert proc.returncode == 1 and proc.stderr.startswith(f"error: cannot reach the Hub at {dead}")

    proc = run("push", builds["single"], "--repo-id", REPO, token="hf_wrongTOKENvalue000000000000")
    assert proc.returncode == 1 and "refused the token (401" in proc.stderr
    assert "hf_wrongTOKENvalue" not in proc.stderr + proc.stdout

    proc = run("push", builds["single"], "--repo-id", REPO, token=None)
    assert proc.returncode == 1 and "no Hub token" in proc.stderr

    proc = run("push", builds["single"], "--repo-id", "someone-else/aclcifar10")
    assert proc.returncode == 1 and "you may not write to someone-else/aclcifar10 (403" in proc.stderr

    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "README.md").write_text("no card here\n")
    seen = len(hub.requests)
    proc = run("push", broken, "--repo-id", REPO)
    assert proc.returncode == 2 and "is not a valid dataset repository" in proc.stderr
    assert proc.stderr.count("\n") == 1
    assert not [r for r in hub.requests[seen:] if not r[1].startswith("/api/agent")]  # refused before any request

    proc = run("verify", "aclorg/missing")
    assert proc.returncode == 1 and "dataset repository aclorg/missing not found" in proc.stderr


def test_dropped_commit_leaves_remote_unchanged_and_transient_errors_retry(hub, run, builds):
    assert run("push", builds["single"], "--repo-id", REPO).returncode == 0
    head, before = hub.head(REPO), hub.files(REPO)
    hub.drop_commits = True
    proc = run("push", builds["other"], "--repo-id", REPO)
    assert proc.returncode == 1
    assert f"the push failed and the remote is unchanged at commit {head[:7]}" in proc.stderr
    assert proc.stderr.count("\n") == 1
    assert hub.head(REPO) == head and hub.files(REPO) == before
    commits_sent = [r[1] for r in hub.requests].count(f"/api/datasets/{REPO}/commit/main")
    proc = run("push", builds["other"], "--repo-id", REPO, "--create-pr")  # a lost answer is not retried: no 2nd PR
    assert proc.returncode == 1 and "answer to the pull-request commit on aclorg/aclcifar10 was lost" in proc.stderr
    assert [r[1] for r in hub.requests].count(f"/api/datasets/{REPO}/commit/main") == commits_sent + 1

    hub.drop_commits = False
    hub.fail_next = {r"/commit/": 1, r"/preupload/": 1}  # one 503 each, then service resumes
    proc = run("push", builds["other"], "--repo-id", REPO)
    assert proc.returncode == 0, proc.stderr
    assert hub.files(REPO)["aclbuild.json"] == (builds["other"] / "aclbuild.json").read_bytes()


def test_token_written_nowhere(hub, run, builds, tmp_path):
    proc = run("push", builds["single"], "--repo-id", REPO, "--token", TOKEN, token=None)
    assert proc.returncode == 0, proc.stderr
    assert run("verify", REPO, "--token", TOKEN, token=None).returncode == 0
    assert run(script=f"import datasets; datasets.load_dataset({REPO!r})").returncode == 0  # fills HF_HOME
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any(p.suffix == ".arrow" for p in written)  # the runs did write caches under HF_HOME
    for path in written + [p for p in builds["single"].rglob("*") if p.is_file()]:
        assert TOKEN.encode() not in path.read_bytes(), path
    for content in hub.files(REPO).values():
        assert TOKEN.encode() not in content
