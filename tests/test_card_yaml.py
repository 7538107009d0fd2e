"""The card YAML that `build` writes is the one ``datasets`` itself writes on ``push_to_hub`` for the same data.

The same records are pushed with ``DatasetDict.push_to_hub`` (in a subprocess, so HF_ENDPOINT and HF_HUB_DISABLE_XET
are read at import) to the loopback Hub of tests/hub_server.py; its README.md's ``dataset_info`` and ``configs`` must
equal build's key by key, order included, apart from the byte sizes (``num_bytes``, ``download_size``,
``dataset_size``), which depend on how each writer encodes the images.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import yaml
from conftest import make_legacy_dict
from hub_server import TOKEN, HubServer

from aclbuild.builder import build_repository
from aclbuild.registry import get_variant
from aclbuild.schema import ClRecord

SIZES = {"num_bytes", "download_size", "dataset_size"}
PUSH = textwrap.dedent(
    """
    import sys
    from datasets import Dataset, DatasetDict
    from aclbuild.repository import read_table
    from aclbuild.schema import features

    folder, repo_id, names, num_cl = sys.argv[1], sys.argv[2], sys.argv[3].split(","), int(sys.argv[4])
    feats = features(names, num_cl)
    splits = {}
    for split in ("train", "test"):
        table = read_table(folder, split)
        splits[split] = Dataset.from_dict(table.to_pydict(), features=feats)
    DatasetDict(splits).push_to_hub(repo_id)
    """
)


def records(seed: int, n: int, with_cls: bool = True) -> list[ClRecord]:
    d = make_legacy_dict(n=n, seed=seed)
    return [
        ClRecord(name, image, y, tuple(cls) if with_cls else None)
        for name, image, y, cls in zip(d["names"], d["images"], d["ord_labels"], d["cl_labels"])
    ]


def front_matter(text: str) -> tuple[str, dict]:
    assert text.startswith("---\n"), text[:80]
    raw = text.split("---\n", 2)[1]
    return raw, yaml.safe_load(raw)


def differences(ours, theirs, path: str = "") -> list[str]:
    """Where two parsed YAML values differ (dict key order included), sizes under SIZES excepted."""
    if isinstance(ours, dict) and isinstance(theirs, dict):
        if list(ours) != list(theirs):
            return [f"{path or '/'}: keys {list(ours)} != {list(theirs)}"]
        return [d for key in ours if key not in SIZES for d in differences(ours[key], theirs[key], f"{path}/{key}")]
    if isinstance(ours, list) and isinstance(theirs, list):
        if len(ours) != len(theirs):
            return [f"{path}: {len(ours)} items != {len(theirs)}"]
        return [d for i, (a, b) in enumerate(zip(ours, theirs)) for d in differences(a, b, f"{path}[{i}]")]
    return [] if ours == theirs and type(ours) is type(theirs) else [f"{path}: {ours!r} != {theirs!r}"]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    variant = get_variant("aclcifar10")
    return variant, build_repository(
        variant, records(0, 30), records(3, 10, with_cls=False), tmp_path_factory.mktemp("b") / "r"
    )


def test_build_card_yaml_has_no_anchors_and_datasets_order(built, cli):
    variant, folder = built
    result = cli("validate", folder)
    assert result.exit_code == 0, result.output
    raw, data = front_matter((folder / "README.md").read_text(encoding="utf-8"))
    assert "&id" not in raw and "*id" not in raw, raw
    keys = list(data)
    assert keys[-2:] == ["dataset_info", "configs"], keys  # datasets writes dataset_info, then configs
    assert keys[:9] == [
        "annotations_creators", "language", "license", "size_categories", "source_datasets", "task_categories",
        "task_ids", "pretty_name", "tags",
    ]  # fmt: skip  (huggingface_hub's DatasetCardData order)
    info = data["dataset_info"]
    assert list(info) == ["features", "splits", "download_size", "dataset_size"]
    shards = sorted((folder / "data").glob("*.parquet"))
    assert info["download_size"] == sum(p.stat().st_size for p in shards)
    assert info["dataset_size"] == sum(s["num_bytes"] for s in info["splits"])
    assert [list(s) for s in info["splits"]] == [["name", "num_bytes", "num_examples"]] * 2
    assert data["configs"] == [
        {"config_name": "default", "data_files": [{"split": "train", "path": "data/train-*"},
                                                  {"split": "test", "path": "data/test-*"}]}
    ]  # fmt: skip


def test_build_card_yaml_equals_push_to_hub_card_yaml(built, tmp_path):
    variant, folder = built
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING"))}
    with HubServer() as hub:
        env.update(HF_ENDPOINT=hub.url, HF_HUB_DISABLE_XET="1", HF_TOKEN=TOKEN, HF_HOME=str(tmp_path / "hf_home"),
                   HF_HUB_DISABLE_TELEMETRY="1", HF_HUB_DISABLE_PROGRESS_BARS="1")  # fmt: skip
        args = [folder, "aclorg/pushed", ",".join(variant.base.class_names), "3"]
        proc = subprocess.run([sys.executable, "-c", PUSH, *map(str, args)], env=env, capture_output=True, text=True,
                              timeout=180, cwd=tmp_path, check=False)  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-3000:]
        pushed = hub.files("aclorg/pushed")["README.md"].decode("utf-8")
    raw_theirs, theirs = front_matter(pushed)
    raw_ours, ours = front_matter((folder / "README.md").read_text(encoding="utf-8"))
    assert "&id" not in raw_theirs  # what datasets writes has no anchors either
    # datasets writes only these two; build adds card metadata (licence, tags, ...) before them, in the same order
    assert list(theirs) == ["dataset_info", "configs"]
    assert [k for k in ours if k in theirs] == list(theirs)
    for key in theirs:
        assert differences(ours[key], theirs[key], key) == [], (raw_ours, raw_theirs)
    # the sizes that may differ are all there, and the row counts in them agree
    assert list(ours["dataset_info"]) == list(theirs["dataset_info"])
    for a, b in zip(ours["dataset_info"]["splits"], theirs["dataset_info"]["splits"]):
        assert (a["name"], a["num_examples"]) == (b["name"], b["num_examples"])
