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
