"""The report's figures, drawn with matplotlib's object API (no pyplot state, no display needed).

Every ``plot_*`` function takes plain numbers and labels and returns a :class:`~matplotlib.figure.Figure`;
:func:`save_figure` writes it as PNG, PDF or SVG; :mod:`aclbuild.bench.report` decides what goes in. Accuracies
arrive as fractions and are drawn in percent, as the reference tables are. Class names are wrapped, never cut.

Example:
    >>> fig = plot_noise_rates(["ACLMIN10", "CLCIFAR10"], [0.007, 0.041])
    >>> save_figure(fig, Path("noise.pdf"), dpi=200)   # doctest: +SKIP
    PosixPath('noise.pdf')
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

FORMATS = ("png", "pdf", "svg")
DPI = 200
MAX_COLUMNS = 3
# No creation dates in PDF/SVG, so a report drawn twice from the same inputs gives the same bytes.
NO_DATES = {"pdf": {"CreationDate": None}, "svg": {"Date": None}, "png": {}}


@dataclass(frozen=True)
class Series:
    """One line of a line chart: x values, mean y (fraction), spread of y over seeds (fraction, may be zeros)."""

    label: str
    x: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    key: str = ""  # what keeps one colour across panels (the strategy); the label when empty


def wrap_label(name: str, width: int = 14) -> str:
    """A class name broken into lines of at most ``width`` characters at spaces (a longer word stays whole).

    >>> wrap_label("fruit and vegetables and mushrooms", 14)
    'fruit and\\nvegetables and\\nmushrooms'
    >>> wrap_label("aquatic_mammals", 10)
    'aquatic_mammals'
    """
    return textwrap.fill(name, width, break_long_words=False, break_on_hyphens=True) or name


def save_figure(fig: Figure, path: Path, dpi: int = DPI) -> Path:
    """Write ``fig`` in the format its suffix names (png, pdf, svg); PDF text as TrueType, so it stays editable."""
    fmt = path.suffix.lstrip(".").lower()
    if fmt not in FORMATS:
        raise ValueError(f"figure format {fmt!r} is not one of {', '.join(FORMATS)}")
    path.parent.mkdir(parents=True, exist_ok=True)
    with matplotlib.rc_context({"pdf.fonttype": 42}):  # Type 3 fonts are refused by some paper systems
        fig.savefig(path, format=fmt, dpi=dpi, metadata=NO_DATES[fmt])
    return path


def set_title(fig: Figure, title: str, size: float = 11) -> None:
    """The figure's title, wrapped to the figure's width so that a one-panel figure does not cut it off."""
    chars = max(20, int(fig.get_figwidth() * 72 / (0.6 * size)))  # a character is about 0.6 em wide
    fig.suptitle(textwrap.fill(title, chars), fontsize=size)


def _grid(count: int, panel_width: float, panel_height: float, max_columns: int = MAX_COLUMNS) -> tuple[Figure, list]:
    """A figure with ``count`` panels, at most ``max_columns`` per row; unused panels are hidden."""
    columns = min(count, max_columns)
    rows = math.ceil(count / columns)
    fig = Figure(figsize=(panel_width * columns, panel_height * rows), layout="constrained")
    axes = fig.subplots(rows, columns, squeeze=False).ravel().tolist()
    for ax in axes[count:]:
        ax.set_visible(False)
    return fig, axes[:count]


def plot_noise_rates(names: Sequence[str], rates: Sequence[float]) -> Figure:
    """Bars of the noise rate (share of CLs equal to the true label) per dataset, values written on the bars."""
    fig = Figure(figsize=(max(4.5, 1.0 * len(names) + 2), 3.8), layout="constrained")
    ax = fig.subplots()
    percent = [100 * r for r in rates]
    bars = ax.bar(range(len(names)), percent, color="tab:red", alpha=0.8)
    ax.bar_label(bars, labels=[f"{p:.2f}%" for p in percent], fontsize=8, padding=2)
    ax.set_xticks(range(len(names)), [wrap_label(n, 18) for n in names], fontsize=8)
    ax.tick_params(axis="y", labelsize=8)
    ax.set_ylabel("noise rate (% of CLs = true label)")
    ax.set_ylim(0, max(percent + [0.1]) * 1.25)
    ax.set_title("Noise rate per dataset", fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    return fig


def plot_cl_shares(groups: Sequence[tuple[Sequence[str], Sequence[str], Sequence[np.ndarray]]]) -> Figure:
    """Grouped bars of each class's share of all CLs; one panel per class set, one bar colour per dataset.

    ``groups`` holds (class names, dataset names, CL marginals per dataset); the dashed line is the uniform share
    1/K, so a bias-reduced (-R) set shows as bars hugging it and a plain VLM set as bars scattered around it.
    """
    largest = max(len(names) for names, _, _ in groups)
    fig, axes = _grid(len(groups), max(7.0, 0.5 * largest + 2.5), 4.4, max_columns=1)  # wide panels, stacked
    for ax, (class_names, dataset_names, marginals) in zip(axes, groups):
        k = len(class_names)
        width = 0.8 / len(dataset_names)
        for i, (name, shares) in enumerate(zip(dataset_names, marginals)):
            offsets = np.arange(k) - 0.4 + width * (i + 0.5)
            ax.bar(offsets, 100 * np.asarray(shares), width=width, label=name)
        ax.axhline(100 / k, color="black", linestyle="--", linewidth=1, label=f"uniform 1/{k}")
        upright = max(map(len, class_names)) <= 3 or k <= 10 and max(map(len, class_names)) <= 12
        ax.set_xticks(range(k), [wrap_label(n, 12 if upright else 16) for n in class_names],
                      rotation=0 if upright else 90, fontsize=8, linespacing=0.95)  # fmt: skip
        ax.set_xlim(-0.6, k - 0.4)
        ax.set_ylabel("share of all CLs (%)", fontsize=9)
        ax.tick_params(axis="y", labelsize=8)
        ax.set_title(f"Share of CLs per class ({k} classes)", fontsize=10)
        ax.legend(fontsize=8, ncol=min(4, len(dataset_names) + 1), loc="upper right")
        ax.grid(axis="y", alpha=0.3)
        ax.set_ylim(0, 100 * max(float(np.max(m)) for m in marginals) * 1.4)
    return fig


@dataclass(frozen=True)
class Style:
    """How one key (strategy) is drawn in every panel: colour, line style and bar hatch."""

    colour: str
    line: str = "-"
    hatch: str = ""


def _palette(keys: Sequence[str]) -> dict[str, Style]:
    """One style per key (strategy), kept across panels: ten colours, then the ten again dashed and hatched.

    >>> styles = _palette([f"S{i}" for i in range(21)])
    >>> styles["S0"], styles["S10"].line, styles["S20"].hatch
    (Style(colour='C0', line='-', hatch=''), '--', '..')
    """
    variants = (("-", ""), ("--", "//"), (":", ".."), ("-.", "xx"))
    return {
        key: Style(f"C{i % 10}", *variants[(i // 10) % len(variants)])
        for i, key in enumerate(dict.fromkeys(keys))
    }


def _draw_series(ax, series: Sequence[Series], styles: dict[str, Style], bands: bool, scale: float = 100.0) -> None:
    for s in series:
        mean, std, style = scale * s.mean, scale * s.std, styles[s.key or s.label]
        if bands:  # a dense curve: a shaded band reads better than hundreds of error bars
            markers = len(s.x) <= 40
            ax.plot(s.x, mean, color=style.colour, linestyle=style.line, marker="o" if markers else None,
                    markersize=3, linewidth=1.4, label=s.label)  # fmt: skip
            if np.any(std > 0):
                ax.fill_between(s.x, mean - std, mean + std, color=style.colour, alpha=0.15, linewidth=0)
        else:
            ax.errorbar(s.x, mean, yerr=std, color=style.colour, linestyle=style.line, marker="o", markersize=4,
                        linewidth=1.4, capsize=3, label=s.label)  # fmt: skip


def _figure_legend(fig: Figure, axes: Sequence, columns: int) -> None:
    """One legend under the panels: a strategy's colour is the same in every panel."""
    handles: dict[str, object] = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, handle)
    fig.legend(list(handles.values()), list(handles), loc="outside lower center", fontsize=8,
               ncol=max(1, min(len(handles), columns)), frameon=False)  # fmt: skip


def plot_line_panels(
    panels: Sequence[tuple[str, Sequence[Series]]], xlabel: str, suptitle: str, bands: bool = True
) -> Figure:
    """Line charts of test accuracy (percent; mean with +- std over seeds), one panel per dataset setting.

    ``bands``: the spread as a shaded band (curves over epochs) or as error bars (a few sweep points).
    """
    fig, axes = _grid(len(panels), 4.6, 3.4)
    colours = _palette([s.key or s.label for _, series in panels for s in series])
    for ax, (title, series) in zip(axes, panels):
        _draw_series(ax, series, colours, bands=bands)
        ax.set_title(textwrap.fill(title, 50), fontsize=9)
        ax.set_xlabel(xlabel, fontsize=9)
        ax.set_ylabel("test accuracy (%)", fontsize=9)
        # epochs, CL counts and cleaning percentages are whole numbers: no 2.5-epoch ticks
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, steps=[1, 2, 2.5, 5, 10]))
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.3)
    _figure_legend(fig, axes, columns=6)
    set_title(fig, suptitle)
    return fig


@dataclass(frozen=True)
class CurveColumn:
    """One column of the learning-curve figure: the y-axis label, the series per row, the y scale (100: percent)."""

    ylabel: str
    series: Sequence[Series]
    scale: float = 100.0


def plot_learning_curves(rows: Sequence[tuple[str, Sequence[CurveColumn]]]) -> Figure:
    """Per dataset setting (a row): validation score, training loss, optionally test accuracy against epoch."""
    columns = max(len(cols) for _, cols in rows)
    fig = Figure(figsize=(4.0 * columns, 3.0 * len(rows) + 0.8), layout="constrained")
    grid = fig.subplots(len(rows), columns, squeeze=False)
    colours = _palette([s.key or s.label for _, cols in rows for col in cols for s in col.series])
    for axes, (title, cols) in zip(grid, rows):
        for ax, col in zip(axes, cols):
            _draw_series(ax, col.series, colours, bands=True, scale=col.scale)
            ax.set_ylabel(col.ylabel, fontsize=9)
            ax.set_xlabel("epoch", fontsize=9)
            ax.set_title(textwrap.fill(title, 45), fontsize=9)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.tick_params(labelsize=8)
            ax.grid(alpha=0.3)
        for ax in axes[len(cols):]:
            ax.set_visible(False)
    _figure_legend(fig, grid.ravel().tolist(), columns=6)
    set_title(fig, "Learning curves (mean ± std over seeds)")
    return fig


@dataclass(frozen=True)
class Bar:
    """One strategy's test accuracy in a setting: mean and sample std (fractions) over ``n`` seeds."""

    strategy: str
    mean: float
    std: float
    n: int


def plot_accuracy_bars(panels: Sequence[tuple[str, Sequence[Bar]]]) -> Figure:
    """Test accuracy per strategy with +- std error bars, one panel per dataset setting; mean and n on each bar."""
    widest = max(len(bars) for _, bars in panels)
    top = max(100 * (b.mean + b.std) for _, bars in panels for b in bars)
    fig, axes = _grid(len(panels), max(4.0, 0.55 * widest + 1.5), 3.8, max_columns=2 if widest <= 8 else 1)
    colours = _palette([b.strategy for _, bars in panels for b in bars])
    for ax, (title, bars) in zip(axes, panels):
        x = np.arange(len(bars))
        means = np.array([100 * b.mean for b in bars])
        stds = np.array([100 * b.std for b in bars])
        drawn = ax.bar(x, means, yerr=stds, capsize=3, color=[colours[b.strategy].colour for b in bars],
                       hatch=[colours[b.strategy].hatch for b in bars], edgecolor="white",
                       error_kw={"linewidth": 1})  # fmt: skip
        ax.bar_label(drawn, labels=[f"{m:.1f}\nn={b.n}" for m, b in zip(means, bars)], fontsize=7, padding=2)
        upright = max(len(b.strategy) for b in bars) * len(bars) <= 40
        ax.set_xticks(x, [b.strategy for b in bars], rotation=0 if upright else 45,
                      ha="center" if upright else "right", fontsize=8, rotation_mode="anchor")  # fmt: skip
        ax.set_ylim(0, min(100.0, top) * 1.18 + 1)  # one scale in every panel, room for the labels on top
        ax.set_yticks(np.arange(0, min(100.0, top) + 20, 20))
        ax.tick_params(axis="y", labelsize=8)
        ax.set_ylabel("test accuracy (%)", fontsize=9)
        ax.set_title(textwrap.fill(title, 50), fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    set_title(fig, "Test accuracy per strategy (mean ± std over seeds; n seeds)")
    return fig
