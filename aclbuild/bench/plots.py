"""The report's figures, drawn with matplotlib's object API (no pyplot state, no display needed).

Every function takes plain numbers and labels, writes one PNG and returns its path; :mod:`aclbuild.bench.report`
decides what goes in. Accuracies arrive as fractions and are drawn in percent, as the reference tables are.

Example:
    >>> plot_noise_rates(["ACLMIN10", "CLCIFAR10"], [0.007, 0.041], Path("noise.png"))   # doctest: +SKIP
    PosixPath('noise.png')
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

DPI = 110
MAX_COLUMNS = 3
TICK_CHARS = 16  # long class names ("fruit and vegetables and mushrooms") are cut so the axes stay readable


@dataclass(frozen=True)
class Series:
    """One line of a line chart: x values, mean y (fraction), spread of y over seeds (fraction, may be zeros)."""

    label: str
    x: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    key: str = ""  # what keeps one colour across panels (the strategy); the label when empty


def _short(name: str) -> str:
    return name if len(name) <= TICK_CHARS else name[: TICK_CHARS - 1] + "…"


def _grid(count: int, panel_width: float, panel_height: float, max_columns: int = MAX_COLUMNS) -> tuple[Figure, list]:
    """A figure with ``count`` panels, at most ``max_columns`` per row; unused panels are hidden."""
    columns = min(count, max_columns)
    rows = math.ceil(count / columns)
    fig = Figure(figsize=(panel_width * columns, panel_height * rows), layout="constrained")
    axes = fig.subplots(rows, columns, squeeze=False).ravel().tolist()
    for ax in axes[count:]:
        ax.set_visible(False)
    return fig, axes[:count]


def _save(fig: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI)
    return path


def plot_transition_matrices(
    matrices: Sequence[np.ndarray],
    class_names: Sequence[Sequence[str]],
    titles: Sequence[str],
    noise_rates: Sequence[float],
    path: Path,
) -> Path:
    """Heatmaps of P(CL | true label) side by side; panels with the same number of classes share a colour scale.

    (A 20-class matrix spreads its mass thinner than a 10-class one, so one scale for both would hide the former.)
    """
    largest = max(len(names) for names in class_names)
    side = 3.6 + 0.22 * largest
    fig, axes = _grid(len(matrices), side * 1.12, side * 0.95)
    vmax_by_k: dict[int, float] = {}
    for matrix in matrices:
        vmax_by_k[len(matrix)] = max(vmax_by_k.get(len(matrix), 0.0), float(np.max(matrix)))
    for ax, matrix, names, title, noise in zip(axes, matrices, class_names, titles, noise_rates):
        k = len(names)
        vmax = vmax_by_k[k] or 1.0
        image = ax.imshow(matrix, cmap="viridis", vmin=0.0, vmax=vmax)
        font = 7 if k <= 12 else 6
        rotation = 0 if max(map(len, names)) <= 3 else 60
        ax.set_xticks(range(k), [_short(n) for n in names], rotation=rotation, ha="right" if rotation else "center",
                      fontsize=font)  # fmt: skip
        ax.set_yticks(range(k), [_short(n) for n in names], fontsize=font)
        ax.set_xlabel("complementary label", fontsize=8)
        ax.set_ylabel("true label", fontsize=8)
        ax.set_title(f"{title}\nnoise rate {100 * noise:.2f}%", fontsize=10)
        if k <= 12:  # the numbers stay legible up to about a dozen classes
            for y in range(k):
                for j in range(k):
                    value = matrix[y, j]
                    colour = "black" if value > 0.6 * vmax else "white"
                    ax.text(j, y, f"{value:.2f}", ha="center", va="center", fontsize=6.5, color=colour)
        fig.colorbar(image, ax=ax, fraction=0.046, pad=0.03)
    fig.suptitle("Transition matrices T[y, j] = P(CL = j | true label y)", fontsize=11)
    return _save(fig, path)


def plot_noise_rates(names: Sequence[str], rates: Sequence[float], path: Path) -> Path:
    """Bars of the noise rate (share of CLs equal to the true label) per dataset, values written on the bars."""
    fig = Figure(figsize=(max(4.5, 1.1 * len(names) + 2), 3.6), layout="constrained")
    ax = fig.subplots()
    percent = [100 * r for r in rates]
    bars = ax.bar(range(len(names)), percent, color="tab:red", alpha=0.8)
    ax.bar_label(bars, labels=[f"{p:.2f}%" for p in percent], fontsize=8, padding=2)
    crowded = len(names) > 4
    ax.set_xticks(range(len(names)), names, rotation=20 if crowded else 0, ha="right" if crowded else "center")
    ax.set_ylabel("noise rate (% of CLs = true label)")
    ax.set_ylim(0, max(percent + [0.1]) * 1.25)
    ax.set_title("Noise rate per dataset")
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)


def plot_cl_shares(
    groups: Sequence[tuple[Sequence[str], Sequence[str], Sequence[np.ndarray]]], path: Path
) -> Path:
    """Grouped bars of each class's share of all CLs; one panel per class set, one bar colour per dataset.

    ``groups`` holds (class names, dataset names, CL marginals per dataset); the dashed line is the uniform share
    1/K, so a bias-reduced (-R) set shows as bars hugging it and a plain VLM set as bars scattered around it.
    """
    largest = max(len(names) for names, _, _ in groups)
    fig, axes = _grid(len(groups), max(7.0, 0.42 * largest + 2.5), 4.0, max_columns=1)  # wide panels, stacked
    for ax, (class_names, dataset_names, marginals) in zip(axes, groups):
        k = len(class_names)
        width = 0.8 / len(dataset_names)
        for i, (name, shares) in enumerate(zip(dataset_names, marginals)):
            offsets = np.arange(k) - 0.4 + width * (i + 0.5)
            ax.bar(offsets, 100 * np.asarray(shares), width=width, label=name)
        ax.axhline(100 / k, color="black", linestyle="--", linewidth=1, label=f"uniform 1/{k}")
        rotation = 0 if max(map(len, class_names)) <= 3 else 60
        ax.set_xticks(range(k), [_short(n) for n in class_names], rotation=rotation,
                      ha="right" if rotation else "center", fontsize=7)  # fmt: skip
        ax.set_ylabel("share of all CLs (%)")
        ax.set_title(f"Share of CLs per class: {', '.join(dataset_names)}", fontsize=10)
        ax.legend(fontsize=7, ncol=min(3, len(dataset_names) + 1))
        ax.grid(axis="y", alpha=0.3)
        ax.set_ylim(0, 100 * max(float(np.max(m)) for m in marginals) * 1.35)
    return _save(fig, path)


def _draw_series(ax, series: Sequence[Series], colours: dict[str, str], markers: bool, bands: bool) -> None:
    for s in series:
        mean, std, colour = 100 * s.mean, 100 * s.std, colours[s.key or s.label]
        if bands:  # a dense curve: a shaded band reads better than hundreds of error bars
            ax.plot(s.x, mean, color=colour, marker="o" if markers else None, markersize=3.5, linewidth=1.4,
                    label=s.label)  # fmt: skip
            if np.any(std > 0):
                ax.fill_between(s.x, mean - std, mean + std, color=colour, alpha=0.15)
        else:
            ax.errorbar(s.x, mean, yerr=std, color=colour, marker="o", markersize=4, linewidth=1.4, capsize=3,
                        label=s.label)  # fmt: skip


def plot_line_panels(
    panels: Sequence[tuple[str, Sequence[Series]]], xlabel: str, suptitle: str, path: Path, bands: bool = True
) -> Path:
    """Line charts of test accuracy (percent; mean with +- std over seeds), one panel per dataset setting.

    ``bands``: the spread as a shaded band (curves over epochs) or as error bars (a few sweep points).
    """
    fig, axes = _grid(len(panels), 5.2, 3.8)
    keys = dict.fromkeys(s.key or s.label for _, series in panels for s in series)
    palette = [f"C{i}" for i in range(10)] + [f"tab:{c}" for c in ("olive", "cyan", "pink", "gray")]
    colours = {key: palette[i % len(palette)] for i, key in enumerate(keys)}  # a strategy keeps its colour
    for ax, (title, series) in zip(axes, panels):
        _draw_series(ax, series, colours, markers=max(len(s.x) for s in series) <= 40, bands=bands)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("test accuracy (%)")
        # epochs, CL counts and cleaning percentages are whole numbers: no 2.5-epoch ticks
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, steps=[1, 2, 2.5, 5, 10]))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, ncol=2 if len(series) > 6 else 1)
    fig.suptitle(suptitle, fontsize=11)
    return _save(fig, path)
