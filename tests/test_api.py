"""The Python API and the CLI give the same result; `import aclbuild` stays light; export's file names and refusals."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import pytest

import aclbuild
from aclbuild.errors import InputError, OutputExistsError
from tests.conftest import make_legacy_dict, write_pickle


def file_hashes(folder: Path) -> dict[str, str]:
    """sha256 of every file under ``folder``, by relative path."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture
def labels(tmp_path) -> Path:
    return write_pickle(tmp_path / "labels.pkl", make_legacy_dict(n=60, size=8, num_cl=4))


def test_build_and_export_equal_the_cli(cli, labels, tmp_path):
    by_cli, by_api = tmp_path / "cli" / "digits", tmp_path / "api" / "digits"
    args = ("--dataset", "digits-uniform", "--num-cl", "2", "--max-shard-size", "5KB", "--repo-id", "aclorg/d")
    result = cli("build", labels, *args, "--output-dir", by_cli)
    assert result.exit_code == 0, result.output
    folder = aclbuild.build(labels, "digits-uniform", by_api, num_cl=2, max_shard_size="5KB", repo_id="aclorg/d")
    assert folder == by_api
    hashes = file_hashes(by_api)
    assert len([p for p in hashes if p.startswith("data/train-")]) > 1  # the shard size was passed on
    assert hashes == file_hashes(by_cli)

    for split, name in (("train", "digitsuniform.pkl"), ("test", "digitsuniform_test.pkl")):
        result = cli("export", by_cli, "-o", tmp_path / "cli-pickles", "--split", split)
        assert result.exit_code == 0, result.output
        path = aclbuild.export(by_api, tmp_path / "api-pickles", split=split)
        assert path == tmp_path / "api-pickles" / name
        assert path.read_bytes() == (tmp_path / "cli-pickles" / name).read_bytes()


def test_export_refuses_an_existing_pickle_and_a_folder_inside_the_input(cli, digits_repo, tmp_path):
    path = aclbuild.export(digits_repo, tmp_path)
    assert path.name == "digitsuniform.pkl"
    with pytest.raises(OutputExistsError, match="pass --overwrite"):
        aclbuild.export(digits_repo, tmp_path)
    assert aclbuild.export(digits_repo, tmp_path, overwrite=True) == path
    with pytest.raises(InputError, match="inside the repository"):
        aclbuild.export(digits_repo, digits_repo / "pickles")
    with pytest.raises(InputError, match="split must be one of train, test"):
        aclbuild.export(digits_repo, tmp_path, split="validation")
    result = cli("export", digits_repo, "-o", digits_repo)
    assert result.exit_code == 2 and "lies inside the repository" in result.stderr
    assert not list(digits_repo.glob("*.pkl"))


def test_import_is_light_and_the_names_are_the_api():
    script = (
        "import sys, inspect, aclbuild\n"
        "assert 'torch' not in sys.modules and 'datasets' not in sys.modules, 'import aclbuild is heavy'\n"
        "import aclbuild.builder, aclbuild.pickle_export, aclbuild.verification, aclbuild.api\n"
        "for name in ('build', 'push', 'verify', 'export'):\n"
        "    assert callable(getattr(aclbuild, name)), name\n"
        "assert 'output_dir' in str(inspect.signature(aclbuild.build))\n"
        "assert 'torch' not in sys.modules\n"
        "assert aclbuild.build is aclbuild.api.build and aclbuild.verify is aclbuild.api.verify\n"
        "print(aclbuild.load_cl_dataset.__module__)\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=False, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "aclbuild.cl_data"
