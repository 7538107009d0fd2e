"""Doctest fixtures: each doctest of aclbuild/ runs in its own temporary folder, and the examples of the Python API
(aclbuild.api, aclbuild.cl_data) find there what a user would have at hand.

- ``labels/labels.parquet``: the table `aclbuild generate --labeler synthetic --seed 1126` writes for digits' training
  images (3 uniform synthetic CLs each, its provenance in its metadata), and ``labels/labels.pkl``: the same kind of
  labels as a legacy pickle (seed 1126); the embedded digits base needs no download;
- ``out/digits`` (also at ``aclbuild-quickstart/digits-uniform``, where `aclbuild quickstart` puts it): the
  repository `aclbuild build labels/labels.parquet -d digits-uniform` writes, except in the example that builds it;
- a loopback Hub (tests/hub_server.py) at HF_ENDPOINT with HF_TOKEN set, where ``aclorg/digits-uniform`` already
  holds ``out/digits`` for the example of ``verify``.
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from _pytest.doctest import DoctestItem

ROOT = Path(__file__).resolve().parent
API_MODULES = ("aclbuild.api", "aclbuild.cl_data")  # doctests that need the user's files
HUB_EXAMPLES = ("aclbuild.api", "aclbuild.api.push", "aclbuild.api.verify")  # ... and the Hub
BUILDS_ITSELF = ("aclbuild.api", "aclbuild.api.build")  # examples that write out/digits themselves
SEED = 1126


@pytest.fixture(scope="session")
def digits_labels(tmp_path_factory) -> Path:
    """A folder with generate's labels.parquet and a legacy labels.pkl: digits' training images, 3 uniform synthetic
    CLs each; nothing else (build reads each alone)."""
    from aclbuild.labeling.runner import GenerateSettings, run_generate
    from aclbuild.labeling.synthetic import label_records, transition_matrix
    from aclbuild.loaders.digits import read_digits
    from aclbuild.loaders.legacy_pickle import write_legacy_pickle

    folder = tmp_path_factory.mktemp("labels")
    run = run_generate(GenerateSettings(base="digits", labeler="synthetic", seed=SEED), None, tmp_path_factory.mktemp("run"))
    shutil.copy(run / "labels.parquet", folder / "labels.parquet")
    train = label_records(read_digits("train"), transition_matrix("uniform", 10), num_cl=3, seed=SEED)
    write_legacy_pickle(train, folder / "labels.pkl")
    return folder


@pytest.fixture(scope="session")
def digits_build(digits_labels, tmp_path_factory) -> Path:
    """The repository folder built from :func:`digits_labels` as digits-uniform."""
    from aclbuild.api import build

    return build(digits_labels / "labels.parquet", "digits-uniform", tmp_path_factory.mktemp("built") / "digits")


@pytest.fixture(autouse=True)
def doctest_workspace(request, tmp_path, monkeypatch) -> Iterator[None]:
    """For doctests only: run in ``tmp_path``; for the API's examples, lay out the files and start the Hub."""
    if not isinstance(request.node, DoctestItem):
        yield
        return
    monkeypatch.chdir(tmp_path)
    name = request.node.name
    if not name.startswith(API_MODULES):
        yield
        return
    shutil.copytree(request.getfixturevalue("digits_labels"), tmp_path / "labels")
    if name not in BUILDS_ITSELF:
        built = request.getfixturevalue("digits_build")
        shutil.copytree(built, tmp_path / "out" / "digits")
        shutil.copytree(built, tmp_path / "aclbuild-quickstart" / "digits-uniform")
    if name not in HUB_EXAMPLES:
        yield
        return
    with _loopback_hub(tmp_path, monkeypatch):
        if name == "aclbuild.api.verify":
            from aclbuild.hub import push_folder

            push_folder(tmp_path / "out" / "digits", "aclorg/digits-uniform")
        yield


def _loopback_hub(tmp_path: Path, monkeypatch):
    """tests/hub_server.py's server, with HF_ENDPOINT, HF_TOKEN and online mode set for huggingface_hub and
    datasets (both read them when first imported, perhaps before this test, so their constants are set too)."""
    import datasets.config
    import huggingface_hub.constants as hub_constants

    if str(ROOT / "tests") not in sys.path:  # hub_server imports its sibling hub_store
        monkeypatch.syspath_prepend(str(ROOT / "tests"))
    from hub_server import TOKEN, HubServer

    server = HubServer()
    monkeypatch.setenv("HF_ENDPOINT", server.url)
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("HF_HOME", str(tmp_path / ".hf_home"))
    for module, attribute, value in (
        (hub_constants, "HF_HUB_OFFLINE", False), (hub_constants, "HF_HUB_DISABLE_XET", True),
        (hub_constants, "ENDPOINT", server.url), (datasets.config, "HF_HUB_OFFLINE", False),
        (datasets.config, "HF_ENDPOINT", server.url),
        (hub_constants, "HUGGINGFACE_CO_URL_TEMPLATE", server.url + "/{repo_id}/resolve/{revision}/{filename}"),
    ):  # fmt: skip
        monkeypatch.setattr(module, attribute, value)
    return server
