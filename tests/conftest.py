"""Shared fixtures: a CLI runner, tiny legacy pickles, an isolated Hugging Face cache."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


@pytest.fixture(autouse=True)
def isolated_hf(tmp_path_factory, monkeypatch):
    """Keep every test's datasets/hub cache out of the user's home and off the network."""
    home = tmp_path_factory.mktemp("hf_home")
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setenv("HF_DATASETS_CACHE", str(home / "datasets"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.setenv("COLUMNS", "200")


@pytest.fixture
def cli():
    """Run `aclbuild ARGS...` in-process; returns click's Result (exit_code, stdout, stderr)."""
    from aclbuild.cli import app

    runner = CliRunner()

    def invoke(*args: str):
        return runner.invoke(app, [str(a) for a in args], prog_name="aclbuild", env={"COLUMNS": "200"})

    return invoke


def make_legacy_dict(n: int = 40, size: int = 32, num_classes: int = 10, num_cl: int = 3, seed: int = 0) -> dict:
    """A legacy CL pickle's dict with random images and labels."""
    rng = np.random.default_rng(seed)
    ord_labels = rng.integers(0, num_classes, n)
    return {
        "names": [f"img_{i:05d}.png" for i in range(n)],
        "images": rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8),
        "ord_labels": ord_labels.tolist(),
        "cl_labels": rng.integers(0, num_classes, (n, num_cl)).tolist(),
    }


def write_pickle(path: Path, data) -> Path:
    with open(path, "wb") as f:
        pickle.dump(data, f)
    return path


@pytest.fixture
def legacy_pickle(tmp_path) -> Path:
    """A 40-image CIFAR10-shaped legacy pickle with 3 CLs per image."""
    return write_pickle(tmp_path / "tiny_aclcifar10.pkl", make_legacy_dict())


def quiet_env() -> dict:
    env = dict(os.environ)
    env.update(NO_COLOR="1", COLUMNS="200")
    return env


@pytest.fixture
def one_thread():
    """Tiny models on 2 shared cores: thread synchronisation costs more than it saves."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def digits_repo(tmp_path_factory) -> Path:
    """digits-uniform: 1,400 train images with 3 uniform synthetic CLs, 397 test images."""
    from aclbuild.builder import build_repository
    from aclbuild.labeling.synthetic import label_records, transition_matrix
    from aclbuild.loaders.digits import read_digits
    from aclbuild.registry import get_variant

    train = label_records(read_digits("train"), transition_matrix("uniform", 10), num_cl=3, seed=1126)
    folder = tmp_path_factory.mktemp("repo") / "digits-uniform"
    return build_repository(get_variant("digits-uniform"), train, read_digits("test"), folder)
