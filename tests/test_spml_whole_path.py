"""Issue 16 §4, the whole path on tiny fakes of each official format: build, (for VOC) push to the loopback Hub,
load, pseudo-labels from a tiny random CLIP, every VLPL loss for one epoch, mAP in results.json; the Hub id gives the
same figures as the folder it was pushed from."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from aclbuild.bench.spml_data import load_spml_splits
from tests.test_spml_data import CUB_PRESENT, cub_files, nus_folder, write_tree
from tests.test_spml_repository import built  # noqa: F401 - the fixture: the four sets built through the CLI

TESTS = Path(__file__).resolve().parent
pytestmark = pytest.mark.usefixtures("one_thread")
LOSSES = ["CLIP-zero-shot", "bce", "iun", "an", "EM", "EM_APL", "EM_PL"]


def with_positives(name: str, tmp_path: Path, cli) -> Path:
    """The NUS-WIDE or CUB fake with a positive on every image, built through the CLI."""
    if name == "nuswide-spml":
        source = nus_folder(tmp_path)
        for part in ("train", "val"):
            labels = np.load(source / f"formatted_{part}_labels.npy")
            labels[1, 5] = 1.0
            np.save(source / f"formatted_{part}_labels.npy", labels)
    else:  # every image has attribute i % 3 present
        lines = [f"{i + 1} {a + 1} {int(a == i % 3) or CUB_PRESENT[i][a]} 3 12.5" for i in range(4) for a in range(3)]
        source = write_tree(cub_files(lines), tmp_path / "CUB_200_2011.tgz")
    result = cli("build", source, "--dataset", name, "-o", tmp_path / name)
    assert result.exit_code == 0, result.stderr
    return tmp_path / name


def clip_for(repo: Path, folder: Path) -> Path:
    sys.path.insert(0, str(TESTS))
    from tiny_clip import write_tiny_clip

    return write_tiny_clip(folder, list(load_spml_splits(repo)["train"].class_names))


@pytest.mark.parametrize("name", ["voc2012-spml", "coco2014-spml", "nuswide-spml", "cub-spml"])
def test_each_built_set_benchmarks_every_loss(built, cli, tmp_path, name):  # noqa: F811
    repo = built[name]
    if name in ("nuswide-spml", "cub-spml"):  # the fakes' one validation image has no positive: mAP undefined
        refused = cli("benchmark", repo, "--task", "spml", "-s", "an", "--model", "clip-linear", "--clip-model",
                      clip_for(repo, tmp_path / "c0"), "--epochs", "1", "--workers", "0", "-o", tmp_path / "no")
        assert refused.exit_code == 2 and "no image of the validation split has a positive" in refused.stderr
        repo = with_positives(name, tmp_path, cli)
    clip = clip_for(repo, tmp_path / "clip")
    out = tmp_path / "bench"
    result = cli("benchmark", repo, "--task", "spml", "-s", "all", "--model", "clip-linear", "--clip-model",
                 clip, "--epochs", "1", "--lr", "1e-2", "--workers", "0", "-o", out)  # fmt: skip
    assert result.exit_code == 0, result.stderr + result.stdout
    runs = json.loads((out / "results.json").read_text())["runs"]
    assert [r["strategy"] for r in runs] == LOSSES
    defaults = {"voc2012-spml": 0.2, "coco2014-spml": 0.1, "nuswide-spml": 0.1, "cub-spml": 0.01}
    assert {r["alpha"] for r in runs} == {defaults[name]}  # VLPL's alpha of this set, found by its manifest
    assert all(0.0 <= r["test_map"] <= 1.0 and 0.0 <= r["valid_map"] <= 1.0 for r in runs), runs


def test_a_pushed_set_benchmarks_from_the_hub_as_from_its_folder(built, cli, tmp_path):  # noqa: F811
    from hub_server import TOKEN, HubServer

    folder = built["voc2012-spml"]
    clip = clip_for(folder, tmp_path / "clip")
    with HubServer() as hub:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING"))}
        env.update(HF_ENDPOINT=hub.url, HF_HUB_DISABLE_XET="1", HF_HOME=str(tmp_path / "hf"), HF_TOKEN=TOKEN,
                   NO_COLOR="1", COLUMNS="200", ACLBUILD_CACHE=str(tmp_path / "cache"),
                   OMP_NUM_THREADS="1")  # fmt: skip

        def run(*args):
            return subprocess.run([sys.executable, "-m", "aclbuild", *map(str, args)], env=env, capture_output=True,
                                  text=True, timeout=300, cwd=tmp_path, check=False)  # fmt: skip

        assert run("push", folder, "--repo-id", "aclorg/voc2012-spml").returncode == 0
        common = ["--task", "spml", "-s", "an", "-s", "EM_PL", "--model", "clip-linear", "--clip-model", clip,
                  "--epochs", "2", "--lr", "1e-2", "--workers", "0"]  # fmt: skip
        from_hub = run("benchmark", "aclorg/voc2012-spml", *common, "-o", tmp_path / "hub")
        assert from_hub.returncode == 0, from_hub.stderr
    from_folder = cli("benchmark", folder, *common, "-o", tmp_path / "folder")
    assert from_folder.exit_code == 0, from_folder.stderr

    def figures(out: Path) -> list[tuple]:
        runs = json.loads((out / "results.json").read_text())["runs"]
        return [(r["strategy"], r["alpha"], r["valid_map"], r["test_map"], r["best_epoch"]) for r in runs]

    assert figures(tmp_path / "hub") == figures(tmp_path / "folder")
    assert [f[0] for f in figures(tmp_path / "hub")] == ["CLIP-zero-shot", "an", "EM_PL"]
