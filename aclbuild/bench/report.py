"""`aclbuild report`: benchmark results and dataset repositories in, PNG figures and a Markdown page out.

Each input is a benchmark output (a folder holding ``results.json``, or that file) or a repository folder that
`aclbuild build` wrote. Repositories give the transition-matrix heatmaps, the noise-rate bars and the CLs-per-class
bars; runs give the results table (mean +- std over seeds per strategy and dataset setting), the accuracy-against-
epoch curves, and accuracy against the cleaning fraction and against the number of CLs. A figure without data is
skipped with a line in the page saying why. Everything is staged in a temporary folder and renamed into place.

Example:
    >>> write_report(["runs/", "out/aclmin10", "out/aclmin10-r"], "report").figures   # doctest: +SKIP
    ['transition_matrices.png', 'noise_rates.png', 'cls_per_class.png', 'learning_curves.png']
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from aclbuild import __version__
from aclbuild.bench import plots
from aclbuild.bench.plots import Series
from aclbuild.bench.report_data import (
    Cell,
    RepositorySummary,
    Setting,
    choose_cells,
    load_inputs,
    main_settings,
    read_curve,
    setting_label,
    varying_dims,
)
from aclbuild.errors import InputError
from aclbuild.progress import progress_bar
from aclbuild.repository import staged_output

REPORT_FILE = "report.md"
SUMMARY_FILE = "summary.json"
FIGURES = "figures"


@dataclass
class Report:
    """What `write_report` produced: the page, the figures drawn, and one reason per figure skipped."""

    path: Path
    figures: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)  # the page, section by section

    def figure(self, name: str, caption: str, draw: Callable[[], object], why_absent: str | None) -> None:
        """Embed the figure ``draw`` writes, or, when ``why_absent`` is set, a line saying why there is none."""
        if why_absent:
            self.skipped.append(f"{name}: {why_absent}")
            self.lines.append(f"_Skipped ({caption}): {why_absent}._\n")
            return
        draw()
        self.figures.append(name)
        self.lines.append(f"![{caption}]({FIGURES}/{name})\n")


def results_table(cells: Sequence[Cell]) -> str:
    """Markdown: strategies as rows, settings as columns, test accuracy % as mean +- std; best of a column bold."""
    settings = list(dict.fromkeys(c.setting for c in cells))
    strategies = list(dict.fromkeys(c.strategy for c in cells))
    shown = varying_dims(settings)
    by_key = {(c.setting, c.strategy): c for c in cells}
    best = {s: max(c.mean for c in cells if c.setting == s) for s in settings}
    lines = [
        "| strategy | " + " | ".join(setting_label(s, shown) for s in settings) + " |",
        "|---|" + "---|" * len(settings),
    ]
    for strategy in strategies:
        row = []
        for s in settings:
            cell = by_key.get((s, strategy))
            if cell is None:
                text = "–"
            else:  # one run has no spread to show; "+- 0.00" would claim one
                spread = f"+- {100 * cell.std:.2f}" if len(cell.runs) > 1 else "(1 run)"
                text = f"{100 * cell.mean:.2f} {spread}"
            row.append(f"**{text}**" if cell is not None and cell.mean == best[s] else text)
        lines.append(f"| {strategy} | " + " | ".join(row) + " |")
    return "\n".join(lines)


def details_table(cells: Sequence[Cell]) -> str:
    """Markdown: per cell, the learning rate chosen (of how many), the seeds, the mean best epoch."""
    shown = varying_dims(c.setting for c in cells)
    lines = ["| dataset | strategy | lr (of tried) | seeds | mean best epoch |", "|---|---|---|---|---|"]
    for c in cells:
        seeds = ", ".join(str(r.seed) for r in c.runs)
        epoch = np.mean([r.best_epoch for r in c.runs])
        lines.append(f"| {setting_label(c.setting, shown)} | {c.strategy} | {c.lr:g} ({c.lrs_tried}) | {seeds} | "
                     f"{epoch:.0f} |")  # fmt: skip
    return "\n".join(lines)


def curve_series(cell: Cell, label: str) -> tuple[Series | None, list[str]]:
    """Mean and std over seeds of the test-accuracy curves of a cell; notes for curves that are missing."""
    curves, notes = [], []
    for run in cell.runs:
        if run.curve is None or not run.curve.is_file():
            notes.append(f"{run.dataset_name} {run.strategy} seed {run.seed}: curve "
                         f"{'not recorded' if run.curve is None else run.curve.name + ' missing'}")  # fmt: skip
            continue
        curve = read_curve(run.curve)
        if curve:
            curves.append(curve)
    if not curves:
        return None, notes
    epochs = sorted(set().union(*curves))
    table = np.array([[c.get(e, np.nan) for e in epochs] for c in curves])
    return Series(label, np.array(epochs), np.nanmean(table, axis=0), _spread(table), cell.strategy), notes


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


def _spread(table: np.ndarray) -> np.ndarray:
    """Per column, the sample std (ddof=1) of the values present; 0 where fewer than two are."""
    counts = np.sum(~np.isnan(table), axis=0)
    centred = np.where(np.isnan(table), 0.0, table - np.nanmean(table, axis=0))
    return np.sqrt(np.sum(centred**2, axis=0) / np.maximum(counts - 1, 1)) * (counts > 1)


# ---------------------------------------------------------------- the page


def dataset_table(repositories: Sequence[RepositorySummary]) -> str:
    """Markdown: one row of label statistics per repository (noise, repeated CLs, spread of the CL shares)."""
    lines = [
        "| dataset | folder | train images | classes | CLs per image | noise rate | images with a repeated CL | "
        "CL share per class, min–max |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in repositories:
        s = r.stats
        shares = np.array(s["cl_marginals"]) * 100
        lines.append(
            f"| {r.pretty_name} | `{r.folder}` | {s['num_examples']:,} | {s['num_classes']} | {s['cls_per_image']} | "
            f"{100 * s['noise_rate']:.2f}% | {100 * s['repeated_cl_rate']:.2f}% | "
            f"{shares.min():.1f}–{shares.max():.1f}% (uniform {100 / s['num_classes']:.1f}%) |"
        )
    return "\n".join(lines)


def _results_section(report: Report, cells: Sequence[Cell], num_runs: int) -> None:
    report.lines.append("## Results\n")
    if not cells:
        report.skipped.append("results table: no benchmark results among the inputs")
        report.lines.append("_Skipped: no benchmark results (results.json) among the inputs._\n")
        return
    report.lines += [
        f"Test accuracy (%) of the best-validation checkpoint, mean +- std (ddof=1) over seeds, at the learning rate "
        f"with the best mean validation score; the best of each column in bold. {num_runs} runs.\n",
        results_table(cells),
        "",
        "<details><summary>learning rate and seeds of each cell</summary>\n",
        details_table(cells),
        "\n</details>\n",
    ]


def _dataset_section(report: Report, repositories: Sequence[RepositorySummary], figures: Path, advance) -> None:
    report.lines.append("## Datasets\n")
    absent = None if repositories else "no dataset repository folder among the inputs"
    if repositories:
        report.lines += [dataset_table(repositories), ""]
    names = [r.pretty_name for r in repositories]
    report.figure(
        "transition_matrices.png", "transition matrices",
        lambda: plots.plot_transition_matrices([np.array(r.stats["transition_matrix"]) for r in repositories],
                                               [r.class_names for r in repositories], names,
                                               [r.stats["noise_rate"] for r in repositories],
                                               figures / "transition_matrices.png"),
        absent,
    )  # fmt: skip
    advance()
    report.figure(
        "noise_rates.png", "noise rate per dataset",
        lambda: plots.plot_noise_rates(names, [r.stats["noise_rate"] for r in repositories],
                                       figures / "noise_rates.png"),
        absent,
    )  # fmt: skip
    advance()
    by_classes: dict[tuple, list[RepositorySummary]] = defaultdict(list)
    for r in repositories:  # one panel per class set: -R and plain sets of one base share a panel
        by_classes[r.class_names].append(r)
    groups = [(k, [r.pretty_name for r in rs], [np.array(r.stats["cl_marginals"]) for r in rs])
              for k, rs in by_classes.items()]  # fmt: skip
    report.figure("cls_per_class.png", "share of CLs per class",
                  lambda: plots.plot_cl_shares(groups, figures / "cls_per_class.png"), absent)  # fmt: skip
    advance()


def _curves_section(report: Report, cells: Sequence[Cell], figures: Path) -> None:
    report.lines.append("## Learning curves\n")
    shown = varying_dims(c.setting for c in cells)
    panels, notes = [], []
    for setting in main_settings(cells):
        series = []
        for cell in (c for c in cells if c.setting == setting):
            line, missing = curve_series(cell, f"{cell.strategy} (lr {cell.lr:g})")
            notes += missing
            series += [line] if line else []
        if series:
            panels.append((setting_label(setting, shown), series))
    if len(main_settings(cells)) < len({c.setting for c in cells}):
        report.lines.append("Curves of each dataset's main setting (least cleaning, most common number of CLs).\n")
    absent = "no benchmark results among the inputs" if not cells else "no run has a readable curve CSV"
    report.figure(
        "learning_curves.png", "test accuracy against epoch",
        lambda: plots.plot_line_panels(panels, "epoch", "Test accuracy against epoch (mean ± std over seeds)",
                                       figures / "learning_curves.png"),
        None if panels else absent,
    )  # fmt: skip
    if notes:
        report.lines.append("Curves left out: " + "; ".join(notes) + ".\n")


def _sweep_section(report: Report, cells: Sequence[Cell], figures: Path, dim: str) -> None:
    name, title, xlabel, suptitle = {
        "clean_noisy": ("accuracy_vs_cleaning.png", "Cleaning noisy CLs", "noisy (image, CL) pairs dropped (%)",
                        "Accuracy after dropping noisy CLs (mean ± std)"),
        "num_cl": ("accuracy_vs_num_cl.png", "Number of CLs per image", "CLs per image",
                   "Accuracy against CLs per image (mean ± std)"),
    }[dim]  # fmt: skip
    report.lines.append(f"## {title}\n")
    panels = sweep_panels(cells, dim)
    report.figure(
        name, f"test accuracy against {xlabel}",
        lambda: plots.plot_line_panels(panels, xlabel, suptitle, figures / name, bands=False),
        None if panels else f"no two runs of the same dataset and strategy differ only in {dim}",
    )  # fmt: skip


def write_report(paths: Sequence[Path | str], output_dir: Path | str, overwrite: bool = False) -> Report:
    """Read every input, then write ``output_dir/report.md``, ``figures/*.png`` and ``summary.json`` atomically."""
    output_dir = Path(output_dir)
    if not paths:
        raise InputError("give at least one benchmark output or dataset repository folder")
    for path in map(Path, paths):
        if path.exists() and output_dir.resolve() in (path.resolve(), *path.resolve().parents):
            raise InputError(f"--output-dir {output_dir} would replace the input {path}; choose another folder")
    runs, repositories = load_inputs(paths)
    cells = choose_cells(runs)
    report = Report(output_dir / REPORT_FILE)
    report.lines += ["# aclbuild report\n", f"Made by aclbuild {__version__} from: "
                     + ", ".join(f"`{p}`" for p in paths) + ".\n"]  # fmt: skip
    with staged_output(output_dir, overwrite) as staged, progress_bar("drawing figures", 6) as advance:
        figures = staged / FIGURES
        _results_section(report, cells, len(runs))
        _dataset_section(report, repositories, figures, advance)
        _curves_section(report, cells, figures)
        advance()
        for dim in ("clean_noisy", "num_cl"):
            _sweep_section(report, cells, figures, dim)
            advance()
        (staged / REPORT_FILE).write_text("\n".join(report.lines), encoding="utf-8")
        summary = {
            "inputs": [str(p) for p in paths],
            "results": [{**c.setting._asdict(), "strategy": c.strategy,
                         "lr": c.lr, "seeds": [r.seed for r in c.runs], "mean": c.mean, "std": c.std}
                        for c in cells],  # fmt: skip
            "datasets": [{"name": r.pretty_name, "folder": str(r.folder), **r.stats} for r in repositories],
            "figures": report.figures,
            "skipped": report.skipped,
        }
        (staged / SUMMARY_FILE).write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return report
