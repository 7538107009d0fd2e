"""A Hub repo that holds other configs besides aclbuild's, and the repo id a pushed card names.

The other configs are added by ``datasets``' own ``push_to_hub(config_name=...)`` (in a subprocess, against the
loopback Hub of tests/hub_server.py), as a user would add them after publishing: ``small`` in ``small/`` (datasets'
default place) and ``extra`` under aclbuild's own ``data/`` (``data_dir="data/extra"``).
"""

from __future__ import annotations

import hashlib
import json
import textwrap
from pathlib import Path

import pytest
import test_hub
import yaml
from test_hub import records

from aclbuild.builder import build_repository
from aclbuild.registry import get_variant

REPO = "aclorg/aclcifar10"
hub, run = test_hub.hub, test_hub.run  # the loopback server and `python -m aclbuild` against it
ADD_CONFIGS = textwrap.dedent(
    f"""
    from datasets import Dataset
    Dataset.from_dict({{"x": [1, 2, 3], "y": ["a", "b", "c"]}}).push_to_hub({REPO!r}, config_name="small")
    Dataset.from_dict({{"z": [0.5, 1.5]}}).push_to_hub({REPO!r}, config_name="extra", data_dir="data/extra")
    """
)
LOAD_BOTH = textwrap.dedent(
    f"""
    import json
    from datasets import load_dataset
    default, small = load_dataset({REPO!r}), load_dataset({REPO!r}, "small")
    print(json.dumps({{"default": {{k: v.num_rows for k, v in default.items()}}, "small": list(small["train"]["y"])}}))
    """
)


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    """``first`` (train in 3 shards), ``second`` (new rows, 1 shard), ``named`` (built for another repo id)."""
    root = tmp_path_factory.mktemp("configs")
    variant, test = get_variant("aclcifar10"), records(7, 8, with_cls=False)
    return {
        "first": build_repository(variant, records(0, 40), test, root / "first", max_shard_size=60_000),
        "second": build_repository(variant, records(1, 40), test, root / "second"),
        "named": build_repository(variant, records(2, 20), test, root / "named", repo_id="aclorg/elsewhere"),
    }


def card_yaml(text: bytes) -> dict:
    return yaml.safe_load(text.decode("utf-8").split("---\n", 2)[1])


def snapshot(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}  # fmt: skip


def test_push_keeps_other_configs_and_verify_names_them(hub, run, folders):
    first, second = folders["first"], folders["second"]
    assert len(list((first / "data").glob("train-*"))) == 3
    assert run("push", first, "--repo-id", REPO).returncode == 0
    proc = run(script=ADD_CONFIGS)
    assert proc.returncode == 0, proc.stderr[-3000:]
    theirs = card_yaml(hub.files(REPO)["README.md"])
    assert [i["config_name"] for i in theirs["dataset_info"]] == ["default", "extra", "small"]  # datasets' list form

    proc = run("verify", REPO, "--against", first)
    assert proc.returncode == 0, proc.stderr
    assert "train 40 rows" in proc.stdout and "other configs, not checked: extra, small" in proc.stdout

    others = {p: b for p, b in hub.files(REPO).items() if p.startswith(("small/", "data/extra/"))}
    assert sorted(p.split("/")[0] for p in others) == ["data", "small"]
    before = snapshot(second)
    proc = run("push", second, "--repo-id", REPO)
    assert proc.returncode == 0, proc.stderr
    assert "3 deleted" in proc.stdout and "kept the repo's other configs: extra, small" in proc.stdout
    assert snapshot(second) == before  # the folder is an input: never written
    files = hub.files(REPO)
    assert {p: files.get(p) for p in others} == others  # their files stay, byte for byte
    assert sorted(p for p in files if p.startswith("data/") and not p.startswith("data/extra/")) == [
        "data/test-00000-of-00001.parquet", "data/train-00000-of-00001.parquet"
    ]  # fmt: skip

    ours, pushed = card_yaml((second / "README.md").read_bytes()), card_yaml(files["README.md"])
    assert list(pushed) == list(ours)  # the folder's keys, in its order
    assert pushed["dataset_info"] == [{"config_name": "default", **ours["dataset_info"]}] + theirs["dataset_info"][1:]
    assert pushed["configs"] == ours["configs"] + theirs["configs"][1:]
    assert [c["config_name"] for c in pushed["configs"]] == ["default", "extra", "small"]

    proc = run(script=LOAD_BOTH)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout) == {"default": {"train": 40, "test": 8}, "small": ["a", "b", "c"]}
    proc = run("verify", REPO, "--against", second)
    assert proc.returncode == 0, proc.stderr

    commits = hub.commit_count(REPO)
    proc = run("push", second, "--repo-id", REPO)
    assert proc.returncode == 0 and "no new commit" in proc.stdout, proc.stdout + proc.stderr
    assert hub.commit_count(REPO) == commits


def test_pushed_card_names_the_repo_it_goes_to(hub, run, folders):
    named = folders["named"]
    local = (named / "README.md").read_text(encoding="utf-8")
    assert 'load_dataset("aclorg/elsewhere")' in local
    before = snapshot(named)
    proc = run("push", named, "--repo-id", REPO)
    assert proc.returncode == 0, proc.stderr
    assert f"the card named aclorg/elsewhere; the pushed card names {REPO}" in proc.stdout
    pushed = hub.files(REPO)["README.md"].decode("utf-8")
    assert f'load_dataset("{REPO}")' in pushed and "aclorg/elsewhere" not in pushed
    assert pushed == local.replace("aclorg/elsewhere", REPO)  # nothing else of the card changes
    assert snapshot(named) == before

    commits = hub.commit_count(REPO)
    proc = run("push", named, "--repo-id", REPO)
    assert proc.returncode == 0 and "no new commit" in proc.stdout, proc.stdout + proc.stderr
    assert hub.commit_count(REPO) == commits

    first = folders["first"]  # built without --repo-id: its card says YOUR_ORG/<variant name>
    assert 'load_dataset("YOUR_ORG/aclcifar10")' in (first / "README.md").read_text(encoding="utf-8")
    assert run("push", first, "--repo-id", "aclorg/second").returncode == 0
    pushed = hub.files("aclorg/second")["README.md"].decode("utf-8")
    assert 'load_dataset("aclorg/second")' in pushed and "YOUR_ORG" not in pushed
    assert json.loads((first / "aclbuild.json").read_text()).get("repo_id") is None
