"""`aclbuild quickstart`: the whole pipeline offline on the embedded digits set, as README's first command runs it."""

from __future__ import annotations

from aclbuild.loaders.safe_pickle import safe_load
from aclbuild.validate import validate_repository


def test_quickstart_builds_checks_exports_and_benchmarks(cli, tmp_path):
    out = tmp_path / "qs"
    result = cli("quickstart", "-o", out)
    assert result.exit_code == 0, result.output
    repo = out / "digits-uniform"
    assert validate_repository(repo) == []
    assert "synthetic-labels" in (repo / "README.md").read_text()
    legacy = safe_load((out / "digitsuniform.pkl").read_bytes(), "quickstart pickle")  # libcll's file name
    assert len(legacy["names"]) == 1400 and len(legacy["cl_labels"][0]) == 3
    results = (out / "benchmark" / "results.md").read_text()
    assert "| FWD |" in results and "(n=1)" in results
    assert "Traceback" not in result.output


def test_quickstart_runs_again_into_its_own_folder(cli, tmp_path):
    out = tmp_path / "qs"
    assert cli("quickstart", "-o", out).exit_code == 0
    again = cli("quickstart", "-o", out)
    assert again.exit_code == 0, again.output
    assert validate_repository(out / "digits-uniform") == []
