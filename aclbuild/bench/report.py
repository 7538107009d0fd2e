"""`aclbuild report`: benchmark results and dataset repositories in, figures (PNG, PDF or SVG) and a Markdown page out.

Each input is a benchmark output (a folder holding ``results.json``, or that file) or a repository folder that
`aclbuild build` wrote. Repositories give the transition-matrix heatmaps, their differences within a base (e.g. VLM
minus human), the noise-rate bars and the CLs-per-class bars; runs give the results table (mean +- std over seeds
per strategy and dataset setting), accuracy bars per strategy, learning curves (validation score and training loss;
test accuracy on request), and accuracy against the cleaning fraction and against the number of CLs. A figure
without data or signal is left out with a line in the page saying why (see :mod:`aclbuild.bench.report_figures`).
Everything is staged in a temporary folder and renamed into place.

Example:
    >>> write_report(["runs/", "out/aclmin10", "out/aclmin10-r"], "report", fmt="pdf").figures  # doctest: +SKIP
    ['transition_matrices.pdf', 'transition_differences.pdf', 'noise_rates.pdf', 'cls_per_class.pdf', ...]
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from aclbuild import __version__
from aclbuild.bench import plots
from aclbuild.bench.report_data import Cell, RepositorySummary, choose_cells, load_inputs, setting_label, varying_dims
from aclbuild.bench.report_figures import (
    SWEEPS,
    accuracy_bars_section,
    curves_section,
    dataset_figures,
    sweep_section,
)
from aclbuild.bench.spml_report import spml_section
from aclbuild.bench.spml_results import SpmlRunRecord
from aclbuild.errors import InputError
from aclbuild.paths import check_output, staged_output
from aclbuild.progress import progress_bar

REPORT_FILE = "report.md"
SUMMARY_FILE = "summary.json"
FIGURES = "figures"
MIN_DPI, MAX_DPI = 50, 1200


@dataclass
class Report:
    """What `write_report` produced: the page, the figures drawn, and one reason per figure (or part) left out."""

    path: Path
    fmt: str = "png"
    dpi: int = plots.DPI
    figures_dir: Path | None = None  # where figures are saved while the report is staged
    figures: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)  # the page, section by section

    def figure(self, stem: str, caption: str, draw: Callable[[], Figure], why_absent: str | None) -> None:
        """Save and link the figure ``draw`` returns, or, when ``why_absent`` is set, a line saying why there is
        none."""
        name = f"{stem}.{self.fmt}"
        if why_absent:
            self.skipped.append(f"{name}: {why_absent}")
            self.lines.append(f"_Skipped ({caption}): {why_absent}._\n")
            return
        assert self.figures_dir is not None, "figures are drawn inside write_report's staging"
        plots.save_figure(draw(), self.figures_dir / name, self.dpi)
        self.figures.append(name)
        embed = "" if self.fmt == "pdf" else "!"  # Markdown viewers show PNG and SVG inline; a PDF is a link
        self.lines.append(f"{embed}[{caption}]({FIGURES}/{name})\n")

    def note(self, stem: str, text: str) -> None:
        """A part of a figure left out (a panel without signal), said in the page and in the CLI output."""
        self.skipped.append(f"{stem}.{self.fmt}: {text}")
        self.lines.append(f"_{text}._\n")


def results_table(cells: Sequence[Cell]) -> str:
    """Markdown: strategies as rows, settings as columns, test accuracy % as mean +- std; best of a column bold."""
    from aclbuild.bench.results_tables import AccuracyCell, accuracy_table  # results.md's table (n=1 included)

    settings = list(dict.fromkeys(c.setting for c in cells))
    shown = varying_dims(settings)
    by_key = {(c.setting, c.strategy): AccuracyCell(tuple(float(a) for a in c.accuracies)) for c in cells}
    strategies = dict.fromkeys(c.strategy for c in cells)
    rows = [(strategy, [by_key.get((s, strategy)) for s in settings]) for strategy in strategies]
    return accuracy_table("strategy", [setting_label(s, shown) for s in settings], rows, bold_best=True, missing="–")


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
        f"with the best mean validation score (a NaN never wins, ties go to the smaller lr; by TEST accuracy at the "
        f"selection seed where a column says 'lr by TEST accuracy'); the best of each column in bold. "
        f"{num_runs} runs.\n",
        results_table(cells),
        "",
        "<details><summary>learning rate and seeds of each cell</summary>\n",
        details_table(cells),
        "\n</details>\n",
    ]


def _dataset_section(report: Report, repositories: Sequence[RepositorySummary], advance) -> None:
    report.lines.append("## Datasets\n")
    if repositories:
        report.lines += [dataset_table(repositories), ""]
    dataset_figures(report, repositories, advance)


def check_figure_options(fmt: str, dpi: int) -> None:
    """Refuse a figure format or resolution the report cannot write, saying what to give instead."""
    if fmt not in plots.FORMATS:
        raise InputError(f"--format {fmt!r} is not a figure format aclbuild writes; choose one of "
                         f"{', '.join(plots.FORMATS)}")  # fmt: skip
    if not MIN_DPI <= dpi <= MAX_DPI:
        raise InputError(f"--dpi {dpi} is outside {MIN_DPI}..{MAX_DPI}; 200 suits print, 100 the screen")


def write_report(
    paths: Sequence[Path | str], output_dir: Path | str, overwrite: bool = False, fmt: str = "png",
    dpi: int = plots.DPI, test_curves: bool = False,
) -> Report:  # fmt: skip
    """Read every input, then write ``output_dir/report.md``, ``figures/*.<fmt>`` and ``summary.json`` atomically.

    ``fmt``: png, pdf or svg; ``dpi``: the resolution of PNG figures (and of PDF/SVG's raster parts);
    ``test_curves``: also draw test accuracy against epoch (left out by default: the test set chooses nothing).
    """
    output_dir = Path(output_dir)
    fmt = fmt.lower()
    check_figure_options(fmt, dpi)
    if not paths:
        raise InputError("give at least one benchmark output or dataset repository folder")
    check_output(output_dir, [("the input", path) for path in paths])  # not onto, holding or inside an input
    runs, repositories = load_inputs(paths)
    spml_runs = [run for run in runs if isinstance(run, SpmlRunRecord)]
    runs = [run for run in runs if not isinstance(run, SpmlRunRecord)]
    cells = choose_cells(runs)
    report = Report(output_dir / REPORT_FILE, fmt, dpi)
    report.lines += ["# aclbuild report\n", f"Made by aclbuild {__version__} from: "
                     + ", ".join(f"`{p}`" for p in paths) + ".\n"]  # fmt: skip
    with staged_output(output_dir, overwrite) as staged, progress_bar("drawing figures", 8) as advance:
        report.figures_dir = staged / FIGURES
        _results_section(report, cells, sum(not r.lr_selection for r in runs))
        accuracy_bars_section(report, cells)
        advance()
        _dataset_section(report, repositories, advance)
        curves_section(report, cells, test_curves)
        advance()
        for dim, _ in SWEEPS:
            sweep_section(report, cells, dim)
            advance()
        spml_section(report, spml_runs, test_curves)
        (staged / REPORT_FILE).write_text("\n".join(report.lines), encoding="utf-8")
        summary = {
            "inputs": [str(p) for p in paths],
            "results": [{**c.setting._asdict(), "strategy": c.strategy,
                         "lr": c.lr, "seeds": [r.seed for r in c.runs], "mean": c.mean, "std": c.std}
                        for c in cells],  # fmt: skip
            "spml_results": [r.to_dict() for r in spml_runs],
            "datasets": [{"name": r.pretty_name, "folder": str(r.folder), **r.stats} for r in repositories],
            "figures": report.figures,
            "skipped": report.skipped,
        }
        (staged / SUMMARY_FILE).write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    report.figures_dir = output_dir / FIGURES
    return report
