"""Heatmaps of transition matrices and of their differences, for `aclbuild report` and the dataset card.

Panels with the same number of classes share one colour scale and one colour bar (they sit in one row group, a
subfigure); a 20-class matrix spreads its mass thinner than a 10-class one, so each class count keeps its own scale.
A difference of two matrices is drawn with a diverging colour map centred at 0 between symmetric limits.

Example:
    >>> matrix = np.full((3, 3), 0.5) - np.eye(3) / 2
    >>> fig = plot_transition_matrices([matrix, matrix.T], [("a", "b", "c")] * 2, ["A", "B"], [0.0, 0.0])
    >>> [ax.get_label() for ax in fig.get_axes()].count("<colorbar>")   # two panels of 3 classes, one bar
    1
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from aclbuild.bench.plots import set_title, wrap_label

CARD_DPI = 150  # the card shows the figure at about its width in pixels
MAX_ANNOTATED = 12  # cell values stay legible up to about a dozen classes


@dataclass(frozen=True)
class HeatmapPanel:
    """One K x K matrix with its title and class names (rows: true label, columns: CL)."""

    title: str
    matrix: np.ndarray
    class_names: tuple[str, ...]


def _columns(k: int) -> int:
    """Panels per row: three up to a dozen classes, two beyond (a 20-class panel needs the width)."""
    return 3 if k <= MAX_ANNOTATED else 2


def _panel_inches(k: int) -> float:
    return 3.0 + 0.27 * k


def _draw_panel(ax, panel: HeatmapPanel, cmap: str, vmin: float, vmax: float, signed: bool):
    """Draw one heatmap with wrapped class names on both axes; returns the image for the colour bar."""
    k = len(panel.class_names)
    image = ax.imshow(panel.matrix, cmap=cmap, vmin=vmin, vmax=vmax)
    width = 12 if k <= MAX_ANNOTATED else 14
    font = 8 if k <= MAX_ANNOTATED else 7
    names = [wrap_label(n, width) for n in panel.class_names]
    upright = max(map(len, panel.class_names)) <= 3  # digits and short codes read best unrotated
    ax.set_xticks(range(k), names, rotation=0 if upright else 90, fontsize=font, linespacing=0.95)
    ax.set_yticks(range(k), names, fontsize=font, linespacing=0.95)
    ax.tick_params(length=2, pad=2)
    ax.set_xlabel("complementary label", fontsize=9)
    ax.set_ylabel("true label", fontsize=9)
    ax.set_title(panel.title, fontsize=10)
    if k <= MAX_ANNOTATED:
        span = vmax - vmin or 1.0
        for y in range(k):
            for j in range(k):
                value = float(panel.matrix[y, j])
                # dark text on the bright end of the map, white on the dark end (viridis) / the saturated ends (RdBu)
                bright = abs(value) < 0.5 * vmax if signed else (value - vmin) > 0.6 * span
                text = f"{value:+.2f}" if signed else f"{value:.2f}"
                if signed and abs(value) < 0.005:
                    text = "0"
                ax.text(j, y, text, ha="center", va="center", fontsize=6.5 if k <= 10 else 5.5,
                        color="black" if bright else "white")  # fmt: skip
    return image


def plot_heatmap_groups(
    groups: Sequence[Sequence[HeatmapPanel]], colorbar_label: str, suptitle: str, signed: bool = False
) -> Figure:
    """A figure of heatmap groups, one colour bar per group; ``signed``: diverging map centred at 0, +-max|v|."""
    sizes = [_panel_inches(len(g[0].class_names)) for g in groups]
    rows = [-(-len(g) // _columns(len(g[0].class_names))) for g in groups]
    widths = [min(len(g), _columns(len(g[0].class_names))) * size + 1.2 for g, size in zip(groups, sizes)]
    heights = [r * (size + 0.6) for r, size in zip(rows, sizes)]
    fig = Figure(figsize=(max(widths), sum(heights) + 0.5), layout="constrained")
    subfigs = fig.subfigures(len(groups), 1, squeeze=False, height_ratios=heights).ravel()
    for subfig, group, count, width in zip(subfigs, groups, rows, widths):
        if width < max(widths):  # a narrower group keeps its panels together at the left instead of spreading out
            subfig = subfig.subfigures(1, 2, width_ratios=[width, max(widths) - width])[0]
        columns = min(len(group), _columns(len(group[0].class_names)))
        axes = subfig.subplots(count, columns, squeeze=False).ravel().tolist()
        for ax in axes[len(group):]:
            ax.set_visible(False)
        values = np.concatenate([np.ravel(p.matrix) for p in group])
        if signed:
            limit = float(np.max(np.abs(values))) or 1.0
            cmap, vmin, vmax = "RdBu_r", -limit, limit
        else:
            cmap, vmin, vmax = "viridis", 0.0, float(np.max(values)) or 1.0
        images = [_draw_panel(ax, panel, cmap, vmin, vmax, signed) for ax, panel in zip(axes, group)]
        bar = subfig.colorbar(images[0], ax=axes[: len(group)], shrink=0.8, aspect=30, pad=0.02)
        bar.set_label(colorbar_label, fontsize=9)
        bar.ax.tick_params(labelsize=8)
    set_title(fig, suptitle)
    return fig


def group_by_classes(panels: Sequence[HeatmapPanel]) -> list[list[HeatmapPanel]]:
    """Panels grouped by class count, in order of first appearance (a group shares one scale)."""
    groups: dict[int, list[HeatmapPanel]] = {}
    for panel in panels:
        groups.setdefault(len(panel.class_names), []).append(panel)
    return list(groups.values())


def plot_transition_matrices(
    matrices: Sequence[np.ndarray], class_names: Sequence[Sequence[str]], titles: Sequence[str],
    noise_rates: Sequence[float],
) -> Figure:  # fmt: skip
    """Heatmaps of P(CL | true label), the noise rate in each title; one colour bar per class count."""
    panels = [
        HeatmapPanel(f"{title}\nnoise rate {100 * noise:.2f}%", np.asarray(matrix, float), tuple(names))
        for matrix, names, title, noise in zip(matrices, class_names, titles, noise_rates)
    ]
    return plot_heatmap_groups(group_by_classes(panels), "P(CL = j | true label y)",
                               "Transition matrices T[y, j] = P(CL = j | true label y)")  # fmt: skip


def plot_matrix_differences(panels: Sequence[HeatmapPanel]) -> Figure:
    """Heatmaps of differences of transition matrices (e.g. VLM minus human), red above 0 and blue below."""
    return plot_heatmap_groups(group_by_classes(panels), "difference of P(CL = j | true label y)",
                               "Differences of transition matrices within a base (title: set − reference)",
                               signed=True)  # fmt: skip


def save_transition_heatmap(matrix: np.ndarray, class_names: Sequence[str], title: str, path: Path) -> Path:
    """The dataset card's figure: one transition matrix, drawn as the report draws them, written to ``path``.

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     path = save_transition_heatmap(np.full((3, 3), 1 / 3), ("a", "b", "c"), "T", Path(tmp) / "t.png")
        ...     path.read_bytes()[:4]
        b'\x89PNG'
    """
    from aclbuild.bench.plots import save_figure

    panel = HeatmapPanel("", np.asarray(matrix, float), tuple(class_names))
    fig = plot_heatmap_groups([[panel]], "P(CL = j | true label y)", title)
    return save_figure(fig, path, dpi=CARD_DPI)
