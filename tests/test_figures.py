"""`aclbuild report`'s figures: formats and resolution, figures without signal left out, shared colour bars,
wrapped class names, accuracy bars, learning curves and transition-matrix differences."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from PIL import Image

from aclbuild.bench import heatmaps, plots
from aclbuild.bench.report_data import RepositorySummary
from aclbuild.bench.report_figures import matrix_differences
from aclbuild.builder import build_repository
from aclbuild.loaders.digits import read_digits
from aclbuild.registry import CIFAR20_NAMES, get_variant
from aclbuild.schema import ClRecord
from test_report import _build, write_results

MAGIC = {"png": b"\x89PNG\r\n\x1a\n", "pdf": b"%PDF-"}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("figure_inputs")
    return {
        "uniform": _build(root / "digits-uniform", "digits-uniform"),
        "noisy": _build(root / "digits-noisy", "digits-noisy"),
        "results": write_results(root / "bench", with_sweeps=False),
    }


def _constant_repository(folder: Path) -> Path:
    """A digits set whose transition matrix is exactly 1/10 everywhere: image i of each class gets CLs i, i + 1."""
    images = read_digits("train")
    by_class: dict[int, list] = {}
    for record in images:
        by_class.setdefault(record.ord_label, []).append(record)
    train = [ClRecord(r.name, r.image, y, (i, (i + 1) % 10))
             for y, members in by_class.items() for i, r in enumerate(members[:10])]  # fmt: skip
    return build_repository(get_variant("digits-noisy"), train, read_digits("test")[:20], folder)


def _report(cli, out: Path, *args) -> tuple[str, str]:
    result = cli("report", *args, "--output-dir", out)
    assert result.exit_code == 0, result.stderr
    return (out / "report.md").read_text(), result.stdout


@pytest.mark.parametrize("fmt", ["png", "pdf", "svg"])
def test_each_format_writes_its_own_files_and_the_page_links_them(cli, inputs, tmp_path, fmt):
    out = tmp_path / fmt
    page, _ = _report(cli, out, inputs["results"], inputs["uniform"], inputs["noisy"], "--format", fmt)
    files = sorted((out / "figures").iterdir())
    assert len(files) == 6 and all(f.suffix == f".{fmt}" for f in files)
    for file in files:
        head = file.read_bytes()[:400]
        if fmt == "svg":
            assert b"<svg" in head
        else:
            assert head.startswith(MAGIC[fmt])
        line = next(line for line in page.splitlines() if f"](figures/{file.name})" in line)
        assert line.startswith("!") == (fmt != "pdf")  # PNG and SVG are embedded, a PDF is linked


def test_dpi_scales_the_pixels(cli, inputs, tmp_path):
    sizes = {}
    for dpi in (100, 200):
        _report(cli, tmp_path / str(dpi), inputs["noisy"], "--dpi", dpi)
        with Image.open(tmp_path / str(dpi) / "figures" / "noise_rates.png") as image:
            sizes[dpi] = image.size
    assert sizes[200] == (2 * sizes[100][0], 2 * sizes[100][1])


@pytest.mark.parametrize("args, message", [(("--format", "jpg"), "choose one of png, pdf, svg"),
                                           (("--dpi", "5"), "--dpi 5 is outside")])  # fmt: skip
def test_bad_format_or_dpi_exit_2_one_line(cli, inputs, tmp_path, args, message):
    result = cli("report", inputs["noisy"], "--output-dir", tmp_path / "out", *args)
    assert result.exit_code == 2 and result.stderr.count("\n") == 1 and message in result.stderr, result.stderr
    assert not (tmp_path / "out").exists()


def test_figures_without_signal_are_left_out_with_the_reason(cli, inputs, tmp_path):
    constant = _constant_repository(tmp_path / "constant")
    page, stdout = _report(cli, tmp_path / "zero", inputs["uniform"], constant)
    figures = sorted(p.name for p in (tmp_path / "zero" / "figures").iterdir())
    assert "transition_matrices.png" in figures  # Digits-Uniform's panel has signal
    said = "Digits-Noisy left out: its transition matrix is constant (every entry 0.1)"
    assert said in page and said in stdout

    page, stdout = _report(cli, tmp_path / "uniform", inputs["uniform"])
    reason = "every dataset's noise rate is 0 (no CL equals the true label)"
    assert reason in page and f"skipped noise_rates.png: {reason}" in stdout
    assert "noise_rates.png" not in [p.name for p in (tmp_path / "uniform" / "figures").iterdir()]

    page, stdout = _report(cli, tmp_path / "only-constant", constant)
    assert "every transition matrix is constant" in page and "transition_matrices.png" in stdout
    assert not (tmp_path / "only-constant" / "figures" / "transition_matrices.png").exists()


def test_difference_figure_for_two_sets_of_one_base_only(cli, inputs, tmp_path):
    page, _ = _report(cli, tmp_path / "two", inputs["uniform"], inputs["noisy"])
    assert "](figures/transition_differences.png)" in page
    page, stdout = _report(cli, tmp_path / "one", inputs["uniform"])
    assert "no two repositories of the same base" in page and "transition_differences.png" in stdout
    copy = shutil.copytree(inputs["uniform"], tmp_path / "uniform-copy")
    page, _ = _report(cli, tmp_path / "same", inputs["uniform"], copy)
    assert "have the same transition matrix" in page
    assert not (tmp_path / "same" / "figures" / "transition_differences.png").exists()


def _summary(folder: str, name: str, base: str, kind: str, matrix) -> RepositorySummary:
    return RepositorySummary(Path(folder), name, ("a", "b"), {"transition_matrix": matrix}, base, kind)


def test_differences_are_taken_against_the_human_set_else_the_first_of_the_base():
    human = _summary("h", "CLCIFAR10", "cifar10", "human", [[0.0, 1.0], [1.0, 0.0]])
    vlm = _summary("v", "ACLCIFAR10", "cifar10", "vlm", [[0.25, 0.75], [0.5, 0.5]])
    vlm_r = _summary("r", "ACLCIFAR10-R", "cifar10", "vlm-r", [[0.5, 0.5], [0.5, 0.5]])
    other = _summary("o", "MIN-Uniform", "min10", "synthetic", [[0.0, 1.0], [1.0, 0.0]])
    panels, notes = matrix_differences([vlm, human, vlm_r, other])
    assert [p.title for p in panels] == ["ACLCIFAR10 − CLCIFAR10", "ACLCIFAR10-R − CLCIFAR10"] and notes == []
    assert np.allclose(panels[0].matrix, [[0.25, -0.25], [-0.5, 0.5]])
    panels, _ = matrix_differences([vlm_r, vlm])  # no human set: the first given is the reference
    assert [p.title for p in panels] == ["ACLCIFAR10 − ACLCIFAR10-R"]


def test_difference_heatmap_is_centred_at_zero_with_symmetric_limits():
    panel = heatmaps.HeatmapPanel("A − B", np.array([[0.1, -0.3], [0.05, 0.0]]), ("a", "b"))
    fig = heatmaps.plot_matrix_differences([panel])
    image = next(ax.images[0] for ax in fig.get_axes() if ax.images)
    assert image.get_clim() == (-0.3, 0.3) and image.get_cmap().name == "RdBu_r"


def test_panels_of_one_class_count_share_one_scale_and_one_colour_bar():
    rng = np.random.default_rng(0)
    small = [rng.dirichlet(np.ones(10), 10) for _ in range(2)]
    large = rng.dirichlet(np.ones(20), 20)
    names10, names20 = [str(i) for i in range(10)], list(CIFAR20_NAMES)
    fig = heatmaps.plot_transition_matrices([*small, large], [names10, names10, names20], ["A", "B", "C"], [0] * 3)
    labels = [ax.get_label() for ax in fig.get_axes()]
    assert labels.count("<colorbar>") == 2  # one for the two 10-class panels, one for the 20-class panel
    clims = [ax.images[0].get_clim() for ax in fig.get_axes() if ax.images and ax.get_label() != "<colorbar>"]
    assert clims[0] == clims[1] == (0.0, max(m.max() for m in small)) and clims[2] == (0.0, large.max())


def _boxes(fig, labels) -> list:
    FigureCanvasAgg(fig).draw()
    renderer = fig.canvas.get_renderer()
    return [label.get_window_extent(renderer) for label in labels if label.get_text()]


def _assert_readable(fig, axis_labels) -> None:
    """Every tick label whole (no ellipsis), inside the figure, and clear of its neighbours."""
    boxes = _boxes(fig, axis_labels)
    width, height = fig.canvas.get_width_height()
    for box in boxes:
        assert box.x0 >= 0 and box.y0 >= 0 and box.x1 <= width and box.y1 <= height
    for a, b in zip(boxes, boxes[1:]):
        assert not a.overlaps(b)
    assert not any("…" in label.get_text() for label in axis_labels)


def test_twenty_class_names_are_wrapped_whole_and_do_not_overlap():
    rng = np.random.default_rng(1)
    fig = heatmaps.plot_transition_matrices([rng.dirichlet(np.ones(20), 20)], [CIFAR20_NAMES], ["CIFAR20"], [0.0])
    ax = next(ax for ax in fig.get_axes() if ax.images and ax.get_label() != "<colorbar>")
    texts = [t.get_text() for t in ax.get_yticklabels()]
    unwrapped = [t.replace("-\n", "-").replace("\n", " ") for t in texts]  # breaks at spaces and after hyphens
    assert unwrapped == list(CIFAR20_NAMES)  # whole names, only the breaks added
    assert "fruit, vegetables\nand mushrooms" in texts or "fruit,\nvegetables and\nmushrooms" in texts
    _assert_readable(fig, ax.get_xticklabels())
    _assert_readable(fig, ax.get_yticklabels())

    marginals = [rng.dirichlet(np.ones(20)) for _ in range(2)]
    fig = plots.plot_cl_shares([(CIFAR20_NAMES, ["A", "B"], marginals)])
    _assert_readable(fig, fig.get_axes()[0].get_xticklabels())


def test_accuracy_bars_show_std_and_n():
    bars = [plots.Bar("FWD", 0.9, 0.02, 3), plots.Bar("SCL-NL", 0.8, 0.0, 1)]
    fig = plots.plot_accuracy_bars([("Digits", bars)])
    ax = fig.get_axes()[0]
    assert [t.get_text() for t in ax.texts] == ["90.0\nn=3", "80.0\nn=1"]
    errorbars = next(c for c in ax.containers if type(c).__name__ == "ErrorbarContainer")
    segments = errorbars.lines[2][0].get_segments()  # one vertical line per bar: mean -+ std
    assert np.allclose([seg[:, 1] for seg in segments], [[88.0, 92.0], [80.0, 80.0]])


def test_learning_curves_show_validation_and_loss_and_test_only_on_request(cli, inputs, tmp_path):
    texts = {}
    for flag in ((), ("--test-curves",)):
        out = tmp_path / ("test" if flag else "plain")
        page, _ = _report(cli, out, inputs["results"], "--format", "svg", *flag)
        texts[bool(flag)] = (out / "figures" / "learning_curves.svg").read_text(), page
    for svg, _ in texts.values():  # matplotlib's SVG keeps each text as a comment beside its glyphs
        assert "<!-- validation accuracy (%) -->" in svg and "<!-- training loss -->" in svg
    assert "<!-- test accuracy (%) -->" not in texts[False][0] and "--test-curves" in texts[False][1]
    assert "<!-- test accuracy (%) -->" in texts[True][0]
