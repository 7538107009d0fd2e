"""`aclbuild report`'s section on single-positive multi-label runs: the mAP tables and the mAP learning curves.

The tables are results.md's (spml_results.spml_results_markdown). The figure ``spml_curves`` has one row per (table
setting, dataset): validation mAP and training loss against epoch, mean and spread over the seeds of each
strategy's chosen learning rate; test mAP only with ``--test-curves`` (the test set chooses nothing).

Example:
    >>> curve_values(Path("missing.csv"))   # doctest: +ELLIPSIS
    Traceback (most recent call last):
    aclbuild.errors.InputError: cannot read curve missing.csv: ...
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from aclbuild.bench import plots
from aclbuild.bench.spml_results import ZERO_SHOT, SpmlCell, SpmlRunRecord, spml_cells, spml_results_markdown
from aclbuild.errors import InputError

CURVE_COLUMNS = ("epoch", "train_loss", "valid_map", "test_map")


def curve_values(path: Path) -> dict[str, dict[int, float]]:
    """Per column (train_loss, valid_map, test_map), its value by epoch from an SPML run's curve CSV."""
    try:
        with Path(path).open(newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"cannot read curve {path}: {exc}") from None
    if rows and tuple(rows[0]) != CURVE_COLUMNS:
        raise InputError(f"curve {path} has header {','.join(rows[0])}; expected {','.join(CURVE_COLUMNS)}")
    curve: dict[str, dict[int, float]] = {column: {} for column in CURVE_COLUMNS[1:]}
    for line, row in enumerate(rows, start=2):
        for column, values in curve.items():
            try:
                values[int(row["epoch"])] = float(row[column])
            except (TypeError, ValueError):
                raise InputError(f"{path}:{line}: epoch and {column} must be numbers") from None
    return curve


def _series(cell: SpmlCell, column: str, notes: list[str]) -> plots.Series | None:
    """Mean and spread over seeds of one curve column of one table cell's runs."""
    runs = cell.runs
    curves = []
    for run in runs:
        if run.curve is None or not Path(run.curve).is_file():
            notes.append(f"{run.dataset_name} {run.strategy} seed {run.seed}: curve {run.curve} not found")
            continue
        curves.append(curve_values(Path(run.curve))[column])
    curves = [c for c in curves if c]
    if not curves:
        return None
    epochs = sorted(set().union(*curves))
    table = np.array([[c.get(e, np.nan) for e in epochs] for c in curves])
    spread = np.nanstd(table, axis=0, ddof=1) if len(curves) > 1 else np.zeros(len(epochs))
    return plots.Series(cell.label, np.array(epochs), np.nanmean(table, axis=0), spread, cell.label)


def spml_section(report, runs: Sequence[SpmlRunRecord], test_curves: bool) -> None:
    """Append the SPML tables and the ``spml_curves`` figure to ``report`` (a report.Report); nothing without runs."""
    if not runs:
        return
    report.lines.append("## Single-positive multi-label (VLPL's setting)\n")
    report.lines += ["#" + line if line.startswith("## ") else line for line in spml_results_markdown(runs)]
    columns = [("valid_map", "validation mAP (%)", 100.0), ("train_loss", "training loss", 1.0)]
    columns += [("test_map", "test mAP (%)", 100.0)] if test_curves else []
    trained = [cell for cell in spml_cells(runs) if cell.runs[0].strategy != ZERO_SHOT]  # the rows of the tables
    rows, notes = [], []
    for setting, dataset in dict.fromkeys((c.setting, c.dataset) for c in trained):
        members = [c for c in trained if c.setting == setting and c.dataset == dataset]
        panels = []
        for column, ylabel, scale in columns:
            series = [_series(cell, column, notes if column == "valid_map" else []) for cell in members]
            panels.append(plots.CurveColumn(ylabel, [s for s in series if s is not None], scale))
        epochs = f"{setting[1]} epoch{'s' * (setting[1] != 1)}"
        title = f"{members[0].runs[0].dataset_name}: {setting[0]}, {epochs}, batch {setting[2]}"
        rows.append((title, panels))
    found = any(col.series for _, panels in rows for col in panels)
    report.figure("spml_curves", "validation mAP and training loss against epoch (single-positive multi-label)",
                  lambda: plots.plot_learning_curves(rows), None if found else "no SPML run has a readable curve CSV")
    if not test_curves:
        report.lines.append("Test-mAP curves are left out by default; `aclbuild report --test-curves` adds them.\n")
    if notes:
        report.lines.append("Curves left out: " + "; ".join(notes) + ".\n")
