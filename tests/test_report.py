"""`aclbuild report`: figures and a Markdown page from benchmark results and dataset repositories."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from aclbuild.bench.report_data import choose_cells, read_results
from aclbuild.bench.results import RunRecord
from aclbuild.builder import build_repository
from aclbuild.labeling.synthetic import label_records, transition_matrix
from aclbuild.loaders.digits import read_digits
from aclbuild.registry import get_variant
from aclbuild.stats import repository_stats

ALL_FIGURES = (
    "accuracy_bars.png", "transition_matrices.png", "transition_differences.png", "noise_rates.png",
    "cls_per_class.png", "learning_curves.png", "accuracy_vs_cleaning.png", "accuracy_vs_num_cl.png",
)  # fmt: skip
DATASET_FIGURES = ALL_FIGURES[1:5]
SEEDS = (1207, 9213, 17)
STRATEGIES = {"FWD": 0.90, "SCL-NL": 0.93, "CPE-F": 0.89, "Ord": 0.97}  # plausible digits accuracies


def _run(dataset: str, strategy: str, seed: int, lr: float, num_cl: int = 3, clean: float = 0.0, acc: float = 0.9,
         valid: float | None = None, valid_type: str = "accuracy", curve: str | None = None) -> dict:  # fmt: skip
    return {
        "dataset": f"out/{dataset.lower()}", "dataset_name": dataset, "strategy": strategy, "model": "mlp",
        "seed": seed, "lr": lr, "num_cl": num_cl, "clean_noisy": clean, "valid_type": valid_type, "epochs": 20,
        "best_epoch": 15, "valid_score": acc + 0.01 if valid is None else valid, "test_accuracy": acc,
        "curve": curve,
    }  # fmt: skip


def _write_curve(path: Path, final: float, epochs: int = 20, every: int = 5) -> None:
    """A curve CSV as the benchmark writes it: loss every epoch, scores only every ``every`` epochs."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["epoch", "train_loss", "valid_score", "test_accuracy"])
        for epoch in range(1, epochs + 1):
            evaluated = epoch % every == 0
            accuracy = final * (1 - np.exp(-epoch / 4))
            cells = [f"{accuracy + 0.01:.4f}", f"{accuracy:.4f}"] if evaluated else ["", ""]
            writer.writerow([epoch, f"{2.3 * np.exp(-epoch / 6):.4f}", *cells])


def write_results(folder: Path, with_sweeps: bool = True) -> Path:
    """A benchmark output folder: lr grid x seeds for 4 strategies on 2 datasets, a num_cl and a cleaning sweep."""
    rng = np.random.default_rng(0)
    runs = []
    for dataset, offset in (("Digits-Uniform", 0.0), ("Digits-Strong", -0.12)):
        for strategy, base in STRATEGIES.items():
            for seed in SEEDS:
                for lr, penalty in ((1e-3, 0.0), (1e-4, 0.05)):
                    acc = float(np.clip(base + offset - penalty + rng.normal(0, 0.01), 0, 1))
                    curve = f"runs/{dataset}/{strategy}/lr{lr:g}-seed{seed}.csv"
                    _write_curve(folder / curve, acc)
                    runs.append(_run(dataset, strategy, seed, lr, acc=acc, curve=curve))
    if with_sweeps:
        for strategy in ("FWD", "SCL-NL"):
            for num_cl in (1, 2, 4, 6):
                for seed in SEEDS:
                    acc = float(np.clip(STRATEGIES[strategy] + 0.02 * (num_cl - 3) + rng.normal(0, 0.01), 0, 1))
                    runs.append(_run("Digits-Uniform", strategy, seed, 1e-3, num_cl=num_cl, acc=acc))
        for clean in (0.5, 1.0):
            for seed in SEEDS:
                acc = float(np.clip(0.78 + 0.08 * clean + rng.normal(0, 0.01), 0, 1))
                runs.append(_run("Digits-Strong", "FWD", seed, 1e-3, clean=clean, acc=acc))
    (folder / "results.json").write_text(json.dumps({"runs": runs}, indent=1))
    return folder


def _build(folder: Path, variant_name: str, n_train: int = 300) -> Path:
    variant = get_variant(variant_name)
    matrix = transition_matrix(variant.matrix, variant.base.num_classes)
    train = label_records(read_digits("train")[:n_train], matrix, num_cl=3, seed=1126)
    return build_repository(variant, train, read_digits("test")[:50], folder)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("report_inputs")
    return {
        "uniform": _build(root / "digits-uniform", "digits-uniform"),
        "noisy": _build(root / "digits-noisy", "digits-noisy"),  # noise > 0: the noise-rate bars have signal
        "results": write_results(root / "bench"),
    }


def _expected_accuracies(runs: list[dict]) -> np.ndarray:
    """Test accuracies of the lr whose mean validation score is best (higher for accuracy, lower for risks)."""
    sign = 1 if runs[0]["valid_type"] == "accuracy" else -1
    lr = max({r["lr"] for r in runs}, key=lambda lr: sign * np.mean([r["valid_score"] for r in runs if r["lr"] == lr]))
    return np.array([r["test_accuracy"] for r in runs if r["lr"] == lr])


def _png_size(path: Path) -> tuple[int, int]:
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        return image.size


def test_full_report_has_every_figure_and_the_table(cli, inputs, tmp_path):
    out = tmp_path / "report"
    result = cli("report", inputs["results"], inputs["uniform"], inputs["noisy"], "--output-dir", out)
    assert result.exit_code == 0, result.stderr
    page = (out / "report.md").read_text()
    for name in ALL_FIGURES:
        assert f"](figures/{name})" in page
        width, height = _png_size(out / "figures" / name)
        assert width >= 400 and height >= 300
    assert "Skipped" not in page
    assert "| Digits-Uniform |" in page and "| Digits-Noisy |" in page  # dataset table rows, from the cards

    # The table cell, recomputed independently: lr with the best mean valid score, then mean and ddof=1 std.
    runs = json.loads((inputs["results"] / "results.json").read_text())["runs"]
    main = [r for r in runs if r["dataset_name"] == "Digits-Strong" and r["strategy"] == "SCL-NL"
            and r["num_cl"] == 3 and r["clean_noisy"] == 0.0]  # fmt: skip
    accs = _expected_accuracies(main)
    assert len(accs) == 3 and {r["lr"] for r in main} == {1e-3, 1e-4}
    expected = f"{100 * accs.mean():.2f} +- {100 * accs.std(ddof=1):.2f}"
    row = next(line for line in page.splitlines() if line.startswith("| SCL-NL |"))
    assert expected in row
    header = next(line for line in page.splitlines() if line.startswith("| strategy |"))
    labels = [cell.strip() for cell in header.strip("|").split("|")][1:]
    assert labels == [
        "Digits-Uniform · 1 CL", "Digits-Uniform · 2 CLs", "Digits-Uniform · 3 CLs", "Digits-Uniform · 4 CLs",
        "Digits-Uniform · 6 CLs", "Digits-Strong · 3 CLs", "Digits-Strong · 3 CLs · cleaned 50%",
        "Digits-Strong · 3 CLs · cleaned 100%",
    ]  # fmt: skip

    summary = json.loads((out / "summary.json").read_text())
    stats = repository_stats(inputs["noisy"])["train"]
    noisy = next(d for d in summary["datasets"] if d["name"] == "Digits-Noisy")
    assert stats["noise_rate"] > 0
    assert noisy["noise_rate"] == stats["noise_rate"] and noisy["transition_matrix"] == stats["transition_matrix"]
    assert f"{100 * stats['noise_rate']:.2f}%" in page
    assert summary["figures"] == list(ALL_FIGURES) and summary["skipped"] == []
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging folder left behind


def test_cells_choose_lr_by_validation_direction_never_by_test():
    # lr 1e-3 has the better test accuracy but the worse validation score in both directions of the criterion.
    runs = [
        _run("D", "FWD", 1, 1e-3, acc=0.95, valid=0.50), _run("D", "FWD", 2, 1e-3, acc=0.93, valid=0.52),
        _run("D", "FWD", 1, 1e-4, acc=0.80, valid=0.70), _run("D", "FWD", 2, 1e-4, acc=0.84, valid=0.72),
    ]  # fmt: skip
    by_accuracy = choose_cells(_as_runs(runs))
    assert len(by_accuracy) == 1 and by_accuracy[0].lr == 1e-4 and by_accuracy[0].lrs_tried == 2
    assert by_accuracy[0].mean == pytest.approx(0.82)
    assert by_accuracy[0].std == pytest.approx(np.std([0.8, 0.84], ddof=1))
    as_risk = [dict(r, valid_type="ure") for r in runs]  # a risk: lower is better, so 1e-3 wins
    assert choose_cells(_as_runs(as_risk))[0].lr == 1e-3


def _as_runs(runs: list[dict]):
    return [RunRecord(**{**r, "curve": None}) for r in runs]


def test_repositories_only_skip_result_figures_with_reasons(cli, inputs, tmp_path):
    out = tmp_path / "datasets-only"
    result = cli("report", inputs["uniform"], inputs["noisy"], "--output-dir", out)
    assert result.exit_code == 0, result.stderr
    page = (out / "report.md").read_text()
    assert sorted(p.name for p in (out / "figures").iterdir()) == sorted(DATASET_FIGURES)
    assert "_Skipped: no benchmark results (results.json) among the inputs._" in page
    assert "differ only in num_cl" in page and "differ only in clean_noisy" in page
    assert "](figures/learning_curves.png)" not in page


def test_results_only_skip_dataset_figures_and_note_missing_curves(cli, tmp_path):
    bench = write_results(tmp_path / "bench", with_sweeps=False)
    missing = next((bench / "runs" / "Digits-Uniform" / "FWD").glob("lr0.001-seed*.csv"))
    missing.unlink()
    out = tmp_path / "results-only"
    result = cli("report", bench / "results.json", "--output-dir", out)
    assert result.exit_code == 0, result.stderr
    page = (out / "report.md").read_text()
    assert sorted(p.name for p in (out / "figures").iterdir()) == ["accuracy_bars.png", "learning_curves.png"]
    assert page.count("no dataset repository folder among the inputs") == len(DATASET_FIGURES)
    assert f"curve {missing.name} missing" in page
    header = next(line for line in page.splitlines() if line.startswith("| strategy |"))
    assert header == "| strategy | Digits-Uniform | Digits-Strong |"  # nothing varies, so names alone


def test_duplicate_names_get_their_folder_and_repeated_inputs_count_once(cli, inputs, tmp_path):
    copy = shutil.copytree(inputs["uniform"], tmp_path / "uniform-copy")
    result = cli("report", inputs["uniform"], copy, inputs["uniform"], "--output-dir", tmp_path / "r")
    assert result.exit_code == 0, result.stderr
    page = (tmp_path / "r" / "report.md").read_text()
    assert "| Digits-Uniform (digits-uniform) |" in page and "| Digits-Uniform (uniform-copy) |" in page
    assert page.count("| Digits-Uniform (digits-uniform) |") == 1

    bench = inputs["results"]
    once = cli("report", bench, "--output-dir", tmp_path / "once")
    twice = cli("report", bench, bench / "results.json", "--output-dir", tmp_path / "twice")
    assert once.exit_code == twice.exit_code == 0
    results = [json.loads((tmp_path / name / "summary.json").read_text())["results"] for name in ("once", "twice")]
    assert results[0] == results[1]


def test_overwrite_replaces_and_refusal_keeps_old_report(cli, inputs, tmp_path):
    out = tmp_path / "report"
    assert cli("report", inputs["uniform"], "--output-dir", out).exit_code == 0
    again = cli("report", inputs["noisy"], "--output-dir", out)
    assert again.exit_code == 2 and "--overwrite" in again.stderr
    assert "Digits-Uniform" in (out / "report.md").read_text()
    assert cli("report", inputs["noisy"], "--output-dir", out, "--overwrite").exit_code == 0
    assert "Digits-Uniform" not in (out / "report.md").read_text()


def _bad_results(tmp_path: Path, case: str) -> Path:
    folder = tmp_path / "bad"
    folder.mkdir()
    good = _run("D", "FWD", 1, 1e-3, curve="c.csv")
    text = {
        "syntax": '{"runs": [',
        "no-runs": json.dumps({"results": []}),
        "missing-key": json.dumps({"runs": [{k: v for k, v in good.items() if k != "seed"}]}),
        "wrong-type": json.dumps({"runs": [dict(good, lr="fast")]}),
        "percent": json.dumps({"runs": [dict(good, test_accuracy=91.5)]}),
        "bad-curve": json.dumps({"runs": [good]}),
        "curve-not-a-number": json.dumps({"runs": [good]}),
        "curve-not-text": json.dumps({"runs": [good]}),
    }[case]
    (folder / "results.json").write_text(text)
    curve = {"curve-not-a-number": b"epoch,train_loss,valid_score,test_accuracy\n1,0.5,,\n2,abc,0.4,0.3\n",
             "curve-not-text": b"epoch,train_loss\n\xff\xfe\x00 binary"}.get(case, b"step,acc\n1,0.5\n")  # fmt: skip
    (folder / "c.csv").write_bytes(curve)
    return folder


@pytest.mark.parametrize(
    "case, message",
    [
        ("syntax", "cannot read"), ("no-runs", 'expected {"runs"'), ("missing-key", "lacks 'seed'"),
        ("wrong-type", "'lr' must be float"), ("percent", "not a fraction"), ("bad-curve", "expected epoch,"),
        ("curve-not-a-number", "c.csv:3: epoch and train_loss must be numbers"),
        ("curve-not-text", "cannot read curve"),
    ],
)  # fmt: skip
def test_malformed_results_exit_2_one_line_nothing_written(cli, tmp_path, case, message):
    out = tmp_path / "out"
    result = cli("report", _bad_results(tmp_path, case), "--output-dir", out)
    assert result.exit_code == 2, result.stdout
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1 and message in result.stderr
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]


def test_bad_paths_exit_2_one_line(cli, inputs, tmp_path):
    (tmp_path / "neither").mkdir()
    (tmp_path / "neither" / "notes.txt").write_text("hello")
    cases = [
        ((tmp_path / "missing",), "does not exist"),
        ((tmp_path / "neither",), "is neither benchmark output"),
        ((tmp_path / "neither" / "notes.txt",), "is neither benchmark output"),
        ((tmp_path / "neither" / "notes.txt",), "would replace the input"),  # output is an input's parent
    ]
    for args, message in cases:
        out = tmp_path / "neither" if message.startswith("would") else tmp_path / "out"
        result = cli("report", *args, "--output-dir", out)
        assert result.exit_code == 2 and result.stderr.count("\n") == 1 and message in result.stderr, result.stderr
    assert cli("report", "--output-dir", tmp_path / "out").exit_code == 2  # no input at all


def test_read_results_resolves_curves_against_the_file(inputs):
    runs = read_results(inputs["results"] / "results.json")
    with_curve = [r for r in runs if r.curve is not None]
    assert with_curve and all(Path(r.curve).is_file() for r in with_curve)


def test_report_reads_the_benchmark_commands_own_output(cli, tmp_path):
    """tests/data/results_example.json and its curves were written by `aclbuild benchmark` itself."""
    example = Path(__file__).parent / "data" / "results_example.json"
    out = tmp_path / "report"
    result = cli("report", example, "--output-dir", out)
    assert result.exit_code == 0, result.stderr
    page = (out / "report.md").read_text()
    runs = json.loads(example.read_text())["runs"]
    assert all((example.parent / r["curve"]).is_file() for r in runs)
    assert "Curves left out" not in page and "](figures/learning_curves.png)" in page
    for strategy in {r["strategy"] for r in runs}:
        main = [r for r in runs if r["strategy"] == strategy and r["num_cl"] == 3 and r["clean_noisy"] == 0]
        accs = _expected_accuracies(main)
        spread = f"+- {100 * accs.std(ddof=1):.2f}" if len(accs) > 1 else "(n=1)"
        row = next(line for line in page.splitlines() if line.startswith(f"| {strategy} |"))
        assert f"{100 * accs.mean():.2f} {spread}" in row
    for dim, name in (("num_cl", "accuracy_vs_num_cl.png"), ("clean_noisy", "accuracy_vs_cleaning.png")):
        varies = any(len({r[dim] for r in runs if r["strategy"] == s}) > 1 for s in {r["strategy"] for r in runs})
        assert (f"](figures/{name})" in page) == varies


def test_curve_series_averages_seeds_over_the_epochs_each_evaluated(tmp_path):
    from aclbuild.bench.report_figures import curve_series
    from aclbuild.bench.report_data import Cell, setting_of

    header = "epoch,train_loss,valid_score,test_accuracy\n"
    (tmp_path / "a.csv").write_text(header + "1,2.0,,\n2,1.5,0.6,0.5\n4,1.0,0.8,0.7\n")
    (tmp_path / "b.csv").write_text(header + "2,1.4,0.7,0.6\n3,1.2,0.7,0.9\n")
    runs = tuple(
        RunRecord(**{**_run("D", "FWD", seed, 1e-3), "curve": str(path)})
        for seed, path in ((1, tmp_path / "a.csv"), (2, tmp_path / "b.csv"), (3, tmp_path / "gone.csv"))
    )
    series, notes = curve_series(Cell(setting_of(runs[0]), "FWD", 1e-3, 1, runs), "FWD")
    assert series.x.tolist() == [2, 3, 4]  # epoch 1 was not evaluated in either run
    assert np.allclose(series.mean, [0.55, 0.9, 0.7])
    assert np.allclose(series.std, [np.std([0.5, 0.6], ddof=1), 0.0, 0.0])
    assert notes == ["D FWD seed 3: curve gone.csv missing"]
