"""The figure sections of `aclbuild report`: what each figure shows, and why one is left out when it has no signal.

Each ``*_section`` function appends its heading, its figure (through :meth:`FigureSink.figure`) or the line saying
why there is none, to a report. Figures without signal are left out rather than drawn empty: noise-rate bars when
every rate is 0, a transition matrix that is constant, a difference of two identical matrices.

Example:
    >>> [name for name, _ in SWEEPS]
    ['clean_noisy', 'num_cl']
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

import numpy as np
from matplotlib.figure import Figure

from aclbuild.bench import heatmaps, plots
from aclbuild.bench.plots import Bar, CurveColumn, Series
from aclbuild.bench.report_data import (
    HIGHER_IS_BETTER,
    Cell,
    RepositorySummary,
    Setting,
    main_settings,
    read_curve,
    setting_label,
    varying_dims,
)

SWEEPS = (
    ("clean_noisy", ("accuracy_vs_cleaning", "Cleaning noisy CLs", "noisy (image, CL) pairs dropped (%)",
                     "Accuracy after dropping noisy CLs (mean ± std)")),
    ("num_cl", ("accuracy_vs_num_cl", "Number of CLs per image", "CLs per image",
                "Accuracy against CLs per image (mean ± std)")),
)  # fmt: skip


class FigureSink(Protocol):
    """What a section writes to: page lines, a figure (or why it is absent), a note on a part left out."""

    lines: list[str]

    def figure(self, stem: str, caption: str, draw: Callable[[], Figure], why_absent: str | None) -> None: ...

    def note(self, stem: str, text: str) -> None: ...


# ---------------------------------------------------------------- datasets


def constant_matrix(matrix: np.ndarray) -> bool:
    """True for a matrix with one value everywhere (all zero, say): a heatmap of it shows nothing.

    >>> constant_matrix(np.zeros((3, 3))), constant_matrix(np.eye(3))
    (True, False)
    """
    return bool(np.ptp(matrix) == 0)


def dataset_figures(report: FigureSink, repositories: Sequence[RepositorySummary], advance) -> None:
    """Transition-matrix heatmaps, their differences within a base, noise-rate bars and CL-share bars."""
    absent = None if repositories else "no dataset repository folder among the inputs"
    shown = []
    for r in repositories:
        matrix = np.array(r.stats["transition_matrix"])
        if constant_matrix(matrix):
            report.note("transition_matrices", f"{r.pretty_name} left out: its transition matrix is constant "
                        f"(every entry {matrix.flat[0]:.3g}), there is nothing to see")  # fmt: skip
        else:
            shown.append(r)
    report.figure(
        "transition_matrices", "transition matrices",
        lambda: heatmaps.plot_transition_matrices([r.stats["transition_matrix"] for r in shown],
                                                  [r.class_names for r in shown], [r.pretty_name for r in shown],
                                                  [r.stats["noise_rate"] for r in shown]),
        absent or (None if shown else "every transition matrix is constant"),
    )  # fmt: skip
    advance()
    difference_figure(report, repositories, absent)
    rates = [r.stats["noise_rate"] for r in repositories]
    report.figure(
        "noise_rates", "noise rate per dataset",
        lambda: plots.plot_noise_rates([r.pretty_name for r in repositories], rates),
        absent or (None if any(rates) else "every dataset's noise rate is 0 (no CL equals the true label)"),
    )  # fmt: skip
    advance()
    by_classes: dict[tuple, list[RepositorySummary]] = defaultdict(list)
    for r in repositories:  # one panel per class set: -R and plain sets of one base share a panel
        by_classes[r.class_names].append(r)
    groups = [(k, [r.pretty_name for r in rs], [np.array(r.stats["cl_marginals"]) for r in rs])
              for k, rs in by_classes.items()]  # fmt: skip
    report.figure("cls_per_class", "share of CLs per class", lambda: plots.plot_cl_shares(groups), absent)
    advance()


def matrix_differences(repositories: Sequence[RepositorySummary]) -> tuple[list[heatmaps.HeatmapPanel], list[str]]:
    """Per base with two or more repositories: each other repository's matrix minus the reference's.

    The reference is the base's human-labelled set when one is among the inputs (so a panel reads "VLM minus
    human"), else the first repository of that base given. Returns the panels and notes on identical pairs.
    """
    by_base: dict[str, list[RepositorySummary]] = defaultdict(list)
    for r in repositories:
        by_base[r.base].append(r)
    panels, notes = [], []
    for members in by_base.values():
        reference = next((r for r in members if r.kind == "human"), members[0])
        for other in (r for r in members if r is not reference):
            difference = np.array(other.stats["transition_matrix"]) - np.array(reference.stats["transition_matrix"])
            if not np.any(difference):
                notes.append(f"{other.pretty_name} and {reference.pretty_name} have the same transition matrix")
                continue
            panels.append(heatmaps.HeatmapPanel(f"{other.pretty_name} − {reference.pretty_name}", difference,
                                                reference.class_names))  # fmt: skip
    return panels, notes


def difference_figure(report: FigureSink, repositories: Sequence[RepositorySummary], absent: str | None) -> None:
    panels, notes = matrix_differences(repositories)
    for text in notes if panels else ():
        report.note("transition_differences", text)
    why = absent or (None if panels else "; ".join(notes) or "no two repositories of the same base among the "
                     "inputs (give e.g. a VLM-labelled and the human-labelled set of one base)")  # fmt: skip
    report.figure("transition_differences", "differences of transition matrices within a base",
                  lambda: heatmaps.plot_matrix_differences(panels), why)  # fmt: skip


# ---------------------------------------------------------------- runs


def curve_series(cell: Cell, label: str, column: str = "test_accuracy") -> tuple[Series | None, list[str]]:
    """Mean and std over seeds of one column of a cell's curve CSVs; notes for curves that are missing."""
    curves, notes = [], []
    for run in cell.runs:
        path = None if run.curve is None else Path(run.curve)  # resolved by report_data.read_results
        if path is None or not path.is_file():
            notes.append(f"{run.dataset_name} {run.strategy} seed {run.seed}: curve "
                         f"{'not recorded' if path is None else path.name + ' missing'}")  # fmt: skip
            continue
        curve = read_curve(path)[column]
        if curve:
            curves.append(curve)
    if not curves:
        return None, notes
    epochs = sorted(set().union(*curves))
    table = np.array([[c.get(e, np.nan) for e in epochs] for c in curves])
    return Series(label, np.array(epochs), np.nanmean(table, axis=0), _spread(table), cell.strategy), notes


def _spread(table: np.ndarray) -> np.ndarray:
    """Per column, the sample std (ddof=1) of the values present; 0 where fewer than two are."""
    counts = np.sum(~np.isnan(table), axis=0)
    centred = np.where(np.isnan(table), 0.0, table - np.nanmean(table, axis=0))
    return np.sqrt(np.sum(centred**2, axis=0) / np.maximum(counts - 1, 1)) * (counts > 1)


def _curve_columns(setting: Setting, test_curves: bool) -> list[tuple[str, str, float]]:
    """(CSV column, y label, scale) of each panel in a row of the learning-curve figure."""
    if setting.valid_type in HIGHER_IS_BETTER:
        valid = ("valid_score", f"validation {setting.valid_type} (%)", 100.0)
    else:
        valid = ("valid_score", f"validation {setting.valid_type} risk (lower is better)", 1.0)
    columns = [valid, ("train_loss", "training loss", 1.0)]
    return columns + [("test_accuracy", "test accuracy (%)", 100.0)] if test_curves else columns


def curves_section(report: FigureSink, cells: Sequence[Cell], test_curves: bool) -> None:
    """Validation score and training loss against epoch per main setting; test accuracy only with ``test_curves``."""
    report.lines.append("## Learning curves\n")
    shown = varying_dims(c.setting for c in cells)
    rows, notes, found = [], [], False
    for setting in main_settings(cells):
        members = [c for c in cells if c.setting == setting]
        columns = []
        for column, ylabel, scale in _curve_columns(setting, test_curves):
            series = []
            for cell in members:
                line, missing = curve_series(cell, cell.strategy, column)  # lrs: the details table
                notes += missing if column == "valid_score" else []  # a missing file is named once
                series += [line] if line else []
            columns.append(CurveColumn(ylabel, series, scale))
            found = found or bool(series)
        rows.append((setting_label(setting, shown), columns))
    if len(main_settings(cells)) < len({c.setting for c in cells}):
        report.lines.append("Curves of each dataset's main setting (least cleaning, most common number of CLs).\n")
    if cells and not test_curves:
        report.lines.append("Test-accuracy curves are left out by default (a checkpoint or learning rate is never "
                            "chosen by the test set); `aclbuild report --test-curves` adds them.\n")  # fmt: skip
    absent = "no benchmark results among the inputs" if not cells else "no run has a readable curve CSV"
    report.figure("learning_curves", "validation score and training loss against epoch",
                  lambda: plots.plot_learning_curves(rows), None if found else absent)  # fmt: skip
    if notes:
        report.lines.append("Curves left out: " + "; ".join(notes) + ".\n")


def accuracy_bars_section(report: FigureSink, cells: Sequence[Cell]) -> None:
    """Bars of each strategy's test accuracy (mean, +- std over seeds, n) in each main setting."""
    report.lines.append("## Accuracy per strategy\n")
    shown = varying_dims(c.setting for c in cells)
    panels = [
        (setting_label(setting, shown),
         [Bar(c.strategy, c.mean, c.std, len(c.runs)) for c in cells if c.setting == setting])
        for setting in main_settings(cells)
    ]  # fmt: skip
    report.figure("accuracy_bars", "test accuracy per strategy", lambda: plots.plot_accuracy_bars(panels),
                  None if panels else "no benchmark results among the inputs")  # fmt: skip


def sweep_panels(cells: Sequence[Cell], dim: str) -> list[tuple[str, list[Series]]]:
    """Panels of accuracy against ``dim`` (num_cl or clean_noisy): runs equal in all else, >= 2 values of dim."""
    shown = varying_dims(c.setting for c in cells) - {dim}
    grouped: dict[Setting, dict[str, list[Cell]]] = defaultdict(lambda: defaultdict(list))
    for c in cells:
        grouped[c.setting._replace(**{dim: "*"})][c.strategy].append(c)
    panels = []
    for rest, by_strategy in grouped.items():
        series = []
        for strategy, members in by_strategy.items():
            if len(members) < 2:
                continue
            members.sort(key=lambda c: getattr(c.setting, dim))
            x = np.array([getattr(c.setting, dim) for c in members], dtype=float)
            x = 100 * x if dim == "clean_noisy" else x
            means, stds = np.array([c.mean for c in members]), np.array([c.std for c in members])
            series.append(Series(strategy, x, means, stds, strategy))
        if series:
            panels.append((setting_label(rest, shown), series))
    return panels


def sweep_section(report: FigureSink, cells: Sequence[Cell], dim: str) -> None:
    stem, title, xlabel, suptitle = dict(SWEEPS)[dim]
    report.lines.append(f"## {title}\n")
    panels = sweep_panels(cells, dim)
    report.figure(
        stem, f"test accuracy against {xlabel}",
        lambda: plots.plot_line_panels(panels, xlabel, suptitle, bands=False),
        None if panels else f"no two runs of the same dataset and strategy differ only in {dim}",
    )  # fmt: skip
