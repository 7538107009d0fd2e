"""The command line as a user meets it: verb order, --version, plain lines in logs, stats tables, n=1 tables."""

from __future__ import annotations

import io
import re
import shutil

import pytest

from aclbuild import __version__
from aclbuild.cli import VERB_ORDER
from aclbuild.progress import PROGRESS_SECONDS_ENV, LogConsole, progress_bar
from aclbuild.stats_tables import stats_renderables


def test_help_lists_the_verbs_in_the_order_a_user_runs_them(cli):
    result = cli("--help")
    assert result.exit_code == 0, result.stderr
    listed = re.findall(r"^│ ([a-z]+) {2,}", result.stdout, flags=re.MULTILINE)
    assert listed == ["quickstart", "datasets", "generate", "build", "validate", "stats", "export", "push", "verify",
                      "benchmark", "report"]  # fmt: skip
    assert list(VERB_ORDER) == listed


def test_version_prints_the_package_version(cli):
    result = cli("--version")
    assert result.exit_code == 0 and result.stdout == f"aclbuild {__version__}\n"


def test_old_flags_are_gone(cli, tmp_path):
    for args in (("build", tmp_path / "a.pkl", "-d", "aclcifar10", "--output", tmp_path / "o"),
                 ("build", tmp_path / "a.csv", "-d", "aclcifar10", "-o", tmp_path / "o", "--images", tmp_path),
                 ("benchmark", tmp_path, "-s", "FWD", "-o", tmp_path / "b", "--seeds", "1,2"),
                 ("benchmark", tmp_path, "-s", "FWD", "-o", tmp_path / "b", "--lr-grid", "1e-3,1e-4")):  # fmt: skip
        result = cli(*args)
        assert result.exit_code == 2 and "No such option" in result.output


def test_progress_prints_plain_lines_when_stderr_is_not_a_terminal(monkeypatch, capsys):
    monkeypatch.setenv(PROGRESS_SECONDS_ENV, "0")
    with progress_bar("generate digits (synthetic)", 4, "queries") as advance:
        for _ in range(4):
            advance(note="noise 0.00%")
    lines = capsys.readouterr().err.splitlines()
    assert lines[0].startswith("generate digits (synthetic): 1/4 queries (25.0%), ") and "eta" in lines[0]
    assert lines[0].endswith("; noise 0.00%")
    assert lines[3].startswith("generate digits (synthetic): 4/4 queries (100.0%)")
    assert "done in" in lines[-1] and len(lines) == 5
    assert not any("\r" in line or "\x1b" in line for line in lines)  # no bar redraws, no colours


def test_progress_is_silent_for_work_shorter_than_the_interval(monkeypatch, capsys):
    monkeypatch.setenv(PROGRESS_SECONDS_ENV, "60")
    with progress_bar("encoding train images", 3, "images") as advance:
        for _ in range(3):
            advance()
    assert capsys.readouterr().err == ""


def test_a_long_path_is_one_line_in_non_terminal_output(cli, digits_repo, tmp_path):
    folder = tmp_path
    for part in ("a-folder-with-a-long-name-" * 3, "and-another-one-" * 5, "digits-uniform-copy-" * 4):
        folder = folder / part
    shutil.copytree(digits_repo, folder)
    assert len(str(folder)) > 200  # wider than the 200 columns the cli fixture sets, and rich's 80
    result = cli("stats", folder)
    assert result.exit_code == 0, result.stderr
    assert result.stdout.splitlines()[0] == str(folder)


def test_stats_names_each_split_and_each_class(cli, digits_repo):
    result = cli("stats", digits_repo)
    assert result.exit_code == 0, result.stderr
    out = result.stdout
    assert [line.rstrip() for line in out.splitlines()[:2]] == [str(digits_repo), "train"]
    assert "\ntrain: CLs per class" in out
    assert re.search(r"class\s*┃\s*images\s*┃\s*CLs\s*┃\s*share", out)
    rows = re.findall(r"^│ (\d)\s+│\s+[\d,]+ │\s+[\d,]+ │\s+[\d.]+% │$", out, flags=re.MULTILINE)
    assert rows == [str(d) for d in range(10)]
    assert "test: 397 images, 10 classes, no complementary labels (true labels only)" in out


def test_stats_tables_show_class_names_counts_and_shares():
    stats = {
        "test": {"num_examples": 3, "num_classes": 2, "class_counts": [1, 2], "cls_per_image": 0},
        "train": {"num_examples": 4, "num_classes": 2, "class_counts": [3, 1], "cls_per_image": 1, "noise_rate": 0.25,
                  "noisy_pairs": 1, "cl_counts": [1, 3], "cl_marginals": [0.25, 0.75], "repeated_cl_rate": 0.0},
    }  # fmt: skip
    buffer = io.StringIO()
    console = LogConsole(file=buffer)
    for shown in stats_renderables("out/x", stats, ["automobile", "truck"]):
        console.print(shown)
    text = buffer.getvalue()
    assert text.startswith("out/x\ntrain") and text.index("train") < text.index("test: 3 images")  # train first
    assert re.search(r"automobile\s*│\s*3 │\s*1 │\s*25\.0%", text)
    assert re.search(r"truck\s*│\s*1 │\s*3 │\s*75\.0%", text)
    assert "25.00% (1 pairs)" in text


@pytest.mark.parametrize("accuracies,expected", [((0.8125,), "81.25 (n=1)"), ((0.8, 0.9), "85.00 +- 7.07")])
def test_accuracy_cell_says_n1_for_a_single_seed(accuracies, expected):
    from aclbuild.bench.results_tables import AccuracyCell

    assert AccuracyCell(accuracies).text == expected


def test_benchmark_logs_epochs_and_one_seed_tables_say_n1_in_results_and_report(cli, digits_repo, tmp_path,
                                                                                monkeypatch):  # fmt: skip
    monkeypatch.setenv(PROGRESS_SECONDS_ENV, "0")
    out = tmp_path / "bench"
    result = cli("benchmark", digits_repo, "-s", "FWD", "--model", "mlp", "--epochs", "2", "--eval-every", "1",
                 "--seed", "1207", "--lr", "1e-3", "--batch-size", "128", "-o", out)  # fmt: skip
    assert result.exit_code == 0, result.stderr
    epochs = [line for line in result.stderr.splitlines() if " mlp lr 0.001 seed 1207: " in line]
    assert epochs[0].startswith("FWD ") and "1/2 epochs (50.0%)" in epochs[0]
    assert re.search(r"; loss \d+\.\d{4}, valid accuracy \d\.\d{4} \(epoch 1\)$", epochs[0])
    assert "2/2 epochs (100.0%)" in epochs[1] and "(epoch 2)" in epochs[1]

    row = next(line for line in (out / "results.md").read_text().splitlines() if line.startswith("| FWD |"))
    cell = row.split("|")[2].strip()
    assert re.fullmatch(r"\d+\.\d\d \(n=1\)", cell)  # a mean without a spread, and says so
    report = cli("report", out, "-o", tmp_path / "report")
    assert report.exit_code == 0, report.stderr
    page = (tmp_path / "report" / "report.md").read_text()
    report_row = next(line for line in page.splitlines() if line.startswith("| FWD |"))
    assert cell in report_row  # one code path renders both tables
