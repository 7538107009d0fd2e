"""The benchmark's run record (aclbuild/bench/results.py): its files, its one learning-rate rule, atomic writing."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest

from aclbuild.atomic import atomic_file, atomic_write_text
from aclbuild.bench.report import write_report
from aclbuild.bench.results import (
    RUN_JSON,
    RunRecord,
    choose_lr,
    collect_runs,
    read_run,
    run_folder,
    write_results,
    write_run,
)
from aclbuild.errors import InputError

SETTINGS = {
    "model": "mlp", "hidden_dim": 256, "epochs": 20, "num_cl": 3, "clean_noisy": 0.0, "valid_type": "accuracy",
    "valid_rule": "empirical", "batch_by": "image", "precision": "fp32", "init": "kaiming", "lr_select": "validation",
}  # fmt: skip


def _record(strategy: str, seed: int, lr: float, valid: float, test: float, **changes) -> RunRecord:
    return RunRecord(**{**_fields(strategy, seed, lr, valid, test), **changes})


def _fields(strategy: str, seed: int, lr: float, valid: float, test: float) -> dict:
    return {
        "dataset": "out/digits", "dataset_name": "Digits", "strategy": strategy, "seed": seed, "lr": lr, **SETTINGS,
        "best_epoch": 20, "valid_score": valid, "test_accuracy": test, "curve": None, "steps_per_epoch": 5,
    }  # fmt: skip


def _write_runs(out: Path, records: list[RunRecord]) -> None:
    """Run folders as `aclbuild benchmark` leaves them (curves left out: the lr choice needs none)."""
    for r in records:
        folder = run_folder(out, r.dataset, r.strategy, SETTINGS, r.seed, r.lr, r.lr_selection)
        folder.mkdir(parents=True)
        write_run(folder, r)


# A tie (equal mean validation accuracy at both lrs) and a NaN seed (a diverged run whose other seed scored best).
TIE = [_record("FWD", 1, 1e-3, 0.80, 0.70), _record("FWD", 2, 1e-3, 0.90, 0.72),
       _record("FWD", 1, 1e-4, 0.90, 0.60), _record("FWD", 2, 1e-4, 0.80, 0.62)]  # fmt: skip
NAN_SEED = [_record("SCL-NL", 1, 1e-3, 0.99, 0.95), _record("SCL-NL", 2, 1e-3, math.nan, 0.10),
            _record("SCL-NL", 1, 1e-4, 0.50, 0.40), _record("SCL-NL", 2, 1e-4, 0.52, 0.42)]  # fmt: skip


def test_results_md_and_report_md_choose_the_same_lr_on_a_tie_and_a_nan_seed(tmp_path):
    out = tmp_path / "bench"
    _write_runs(out, TIE + NAN_SEED)
    write_results(out)
    results_md = (out / "results.md").read_text()
    write_report([out], tmp_path / "report")
    report_md = (tmp_path / "report" / "report.md").read_text()
    for strategy, lr, accuracies in (("FWD", 1e-4, "61.00 +- 1.41"), ("SCL-NL", 1e-4, "41.00 +- 1.41")):
        results_row = next(line for line in results_md.splitlines() if line.startswith(f"| {strategy} |"))
        assert f"{accuracies} (lr {lr:g})" in results_row, results_row  # tie: the smaller lr; NaN: never chosen
        report_row = next(line for line in report_md.splitlines() if line.startswith(f"| {strategy} |"))
        assert accuracies in report_row, report_row
        details = next(line for line in report_md.splitlines() if f"| {strategy} | {lr:g} (2) |" in line)
        assert "| 1, 2 |" in details


@pytest.mark.parametrize(
    "scores,higher,expected",
    [
        ({1e-3: [0.8, 0.9], 1e-4: [0.9, 0.8], 1e-2: [0.1, 0.1]}, True, 1e-4),  # tie: the smaller lr
        ({1e-3: [0.99, math.nan], 1e-4: [0.5, 0.5]}, True, 1e-4),  # a diverged seed never wins
        ({1e-3: [math.nan], 1e-4: [math.nan], 1e-5: [math.nan]}, True, 1e-5),  # none scored: the smallest lr
        ({1e-3: [0.2, 0.3], 1e-4: [0.3, 0.3]}, False, 1e-3),  # a risk: lower is better
        ({1e-3: [math.nan, 0.1], 1e-4: [0.3, 0.3]}, False, 1e-4),  # NaN loses for risks too
        ({1e-3: [0.7], 1e-4: [0.7 + 1e-9]}, True, 1e-4),  # a real difference, however small, counts
    ],
)
def test_choose_lr(scores, higher, expected):
    assert choose_lr(scores, higher) == expected


def test_record_round_trips_through_run_json(tmp_path):
    record = _record("FWD", 1207, 1e-3, 0.9, 0.8, curve="runs/x/curve.csv", clip_model="tiny")
    folder = tmp_path / "run"
    folder.mkdir()
    write_run(folder, record)
    assert read_run(folder / RUN_JSON) == record
    raw = json.loads((folder / RUN_JSON).read_text())
    assert raw["valid_score"] == 0.9 and raw["clip_model"] == "tiny" and raw["lr_selection"] is False
    assert [p.name for p in folder.iterdir()] == [RUN_JSON]  # no temporary left beside it


def test_an_old_record_reads_with_its_settings_unrecorded():
    raw = {k: v for k, v in _fields("FWD", 1, 1e-3, 0.9, 0.8).items() if k not in SETTINGS or k in (
        "model", "epochs", "num_cl", "clean_noisy", "valid_type")}  # fmt: skip
    record = RunRecord.from_dict(raw, "run 0")
    assert record.batch_by is None and record.precision is None and record.lr_selection is False


@pytest.mark.parametrize(
    "change,message",
    [
        ({"seed": True}, "'seed' must be int, got True"),
        ({"lr_selection": 1}, "'lr_selection' must be bool, got 1"),
        ({"test_accuracy": 81.2}, "test_accuracy 81.2 is not a fraction in [0, 1]"),
        ({"strategy": None}, "'strategy' must be str, got None"),
    ],
)
def test_a_malformed_record_is_refused_naming_the_key(change, message):
    raw = {**_fields("FWD", 1, 1e-3, 0.9, 0.8), **change}
    with pytest.raises(InputError, match=re.escape(message)):
        RunRecord.from_dict(raw, "runs/x/run.json")
    missing = {k: v for k, v in _fields("FWD", 1, 1e-3, 0.9, 0.8).items() if k != "best_epoch"}
    with pytest.raises(InputError, match="runs/x/run.json lacks 'best_epoch'"):
        RunRecord.from_dict(missing, "runs/x/run.json")


def test_a_corrupt_run_json_is_refused_naming_the_file(tmp_path):
    _write_runs(tmp_path, TIE[:1])
    (path,) = tmp_path.rglob(RUN_JSON)
    path.write_text('{"dataset": ')  # cut short (not by aclbuild, which writes it atomically)
    with pytest.raises(InputError, match=re.escape(str(path)) + ".*delete its folder"):
        collect_runs(tmp_path)


def test_atomic_file_keeps_the_old_content_when_writing_fails(tmp_path):
    target = atomic_write_text(tmp_path / "results.md", "old\n")
    with pytest.raises(RuntimeError), atomic_file(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed mid-write")
    assert target.read_text() == "old\n" and [p.name for p in tmp_path.iterdir()] == ["results.md"]


@pytest.mark.parametrize("module", ["aclbuild.bench.vlpl", "aclbuild.bench.results", "aclbuild.bench.report"])
def test_bench_modules_import_alone_without_the_benchmark(module):
    """vlpl, results and report stand on the run record, not on the benchmark: no import cycle through it."""
    code = f"import sys, {module}; print('aclbuild.bench.benchmark' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "False", done.stderr


def test_a_rerun_removes_what_a_killed_benchmark_left_half_written(cli, digits_repo, tmp_path):
    out = tmp_path / "bench"
    args = ("benchmark", digits_repo, "-s", "FWD", "--model", "mlp", "--epochs", "1", "--seed", "17", "-o", out)
    assert cli(*args).exit_code == 0
    (run_json,) = out.rglob(RUN_JSON)
    run_json.unlink()  # killed before its record was written: the run is not finished
    dead = ".999999999" + ".aclbuild.tmp"  # a pid no process has
    leftovers = [run_json.parent / f".curve.csv{dead}", out / f".results.md{dead}"]
    foreign = out / ".notes.tmp"  # a name aclbuild never writes: not ours to remove
    for path in [*leftovers, foreign]:
        path.write_text("half")
    result = cli(*args)
    assert result.exit_code == 0 and "skip (done)" not in result.stdout, result.stderr
    assert run_json.is_file() and not any(p.exists() for p in leftovers) and foreign.is_file()
