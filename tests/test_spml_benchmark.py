"""`aclbuild benchmark --task spml` and `aclbuild report` on its output (issue 16 §2-§3): every loss runs, results.json
rows carry test_map and valid_map read off their curves, runs resume, VLPL's options reach the runs, options of the
other task and non-SPML data are refused in one line."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import average_precision_score

from aclbuild.bench.spml import clip_softmax

TESTS = Path(__file__).resolve().parent
sys.path.insert(0, str(TESTS))
from test_spml_train import CLASSES, write_spml_repository  # noqa: E402
from tiny_clip import write_tiny_clip  # noqa: E402

SPML_KEYS = {
    "task", "dataset", "dataset_name", "strategy", "model", "seed", "lr", "epochs", "batch_size", "image_size", "init",
    "clip_model", "precision", "alpha", "beta_pos", "threshold", "partial", "temperature", "best_epoch", "valid_map",
    "test_map", "steps_per_epoch", "curve",
}  # fmt: skip
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def voc_and_clip(tmp_path_factory):
    root = tmp_path_factory.mktemp("spml-bench")
    repo = write_spml_repository(root / "voc", dataset="voc2012-spml")
    return repo, Path(write_tiny_clip(root / "clip", list(CLASSES)))


def test_every_loss_runs_and_its_record_is_read_off_its_curve(cli, voc_and_clip, tmp_path):
    repo, clip = voc_and_clip
    out = tmp_path / "bench"
    args = ["benchmark", repo, "--task", "spml", "-s", "all", "--model", "clip-linear", "--clip-model", clip,
            "--epochs", "2", "--lr", "1e-2", "--seed", "3", "--workers", "0", "-o", out]  # fmt: skip
    result = cli(*args)
    assert result.exit_code == 0, result.stderr + result.stdout
    runs = json.loads((out / "results.json").read_text())["runs"]
    assert [r["strategy"] for r in runs] == ["CLIP-zero-shot", "bce", "iun", "an", "EM", "EM_APL", "EM_PL"]
    for run in runs:
        assert set(run) == SPML_KEYS and run["task"] == "spml", run
        assert (run["alpha"], run["beta_pos"], run["lr"]) == (0.2, 0.7, 1e-2 if run["curve"] else 0.0)  # VOC's
        if run["strategy"] == "CLIP-zero-shot":
            continue
        with (out / run["curve"]).open(newline="") as f:
            curve = list(csv.DictReader(f))
        assert len(curve) == 2 and run["epochs"] == 2 and run["seed"] == 3
        best = max(curve, key=lambda row: float(row["valid_map"]))  # ties: the first, as the run keeps it
        assert run["best_epoch"] == int(best["epoch"]), run
        assert (run["valid_map"], run["test_map"]) == (float(best["valid_map"]), float(best["test_map"]))
    # The zero-shot row against scikit-learn's AP of CLIP's scores (read back from the run's cache).
    (cache,) = (repo.parent / ".aclbuild-clip").rglob("spml-test-*.npz")
    scores = clip_softmax(np.load(cache)["cosines"]).numpy()
    truth = np.array([[int(k in p) for k in range(3)] for p in [(0, 2), (1,), (2,), (0,)]])  # test_spml_train.LABELS
    expected = np.mean([average_precision_score(truth[:, k], scores[:, k]) for k in range(3)])
    assert runs[0]["test_map"] == pytest.approx(expected, abs=1e-12)
    table = (out / "results.md").read_text()
    assert "| CLIP-zero-shot |" in table and "| EM_PL |" in table and "Test mAP (%)" in table
    # A rerun resumes: every run is found done, nothing is trained again.
    again = cli(*args)
    assert again.exit_code == 0 and again.stdout.count("skip (done)") == 6, again.stdout
    # Another alpha is another run (its own folder and row); the report draws the mAP curves of both.
    alpha = cli(*args[:5], "EM_PL", *args[6:], "--vlpl-alpha", "0.5")
    assert alpha.exit_code == 0, alpha.stderr
    em_pl = [r for r in json.loads((out / "results.json").read_text())["runs"] if r["strategy"] == "EM_PL"]
    assert sorted(r["alpha"] for r in em_pl) == [0.2, 0.5] and len({r["curve"] for r in em_pl}) == 2
    assert "| EM_PL (alpha 0.5) |" in (out / "results.md").read_text()
    report = cli("report", out, "-o", tmp_path / "report")
    assert report.exit_code == 0, report.stderr
    page = (tmp_path / "report" / "report.md").read_text()
    assert "figures/spml_curves.png" in page and "| EM_PL (alpha 0.5) |" in page
    summary = json.loads((tmp_path / "report" / "summary.json").read_text())
    assert len(summary["spml_results"]) == 8


def test_resnet50_runs_on_the_images(cli, voc_and_clip, tmp_path):
    repo, clip = voc_and_clip
    out = tmp_path / "bench"
    result = cli("benchmark", repo, "--task", "spml", "-s", "an", "--epochs", "1", "--image-size", "32",
                 "--workers", "0", "--batch-size", "4", "-o", out)  # fmt: skip
    assert result.exit_code == 0, result.stderr + result.stdout
    (run,) = json.loads((out / "results.json").read_text())["runs"]  # an needs no CLIP: no zero-shot row either
    assert (run["model"], run["image_size"], run["clip_model"], run["steps_per_epoch"]) == ("resnet50", 32, None, 3)
    assert 0.0 <= run["test_map"] <= 1.0


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--num-cl", "2"], "--num-cl only applies to --task cl"),
        (["--model", "resnet18"], "--model must be one of resnet50, clip-linear"),
        (["-s", "FWD"], "unknown SPML loss 'FWD'"),
        (["--init", "missing.safetensors"], "--init missing.safetensors: no such file"),
        (["--epochs", "0"], "--epochs, --batch-size and --image-size must be at least 1"),
        (["--vlpl-threshold", "1.5"], "VLPL's threshold must lie in [0, 1], got 1.5"),
        (["--vlpl-defaults", "imagenet"], "no VLPL settings for dataset 'imagenet'"),
    ],
)
def test_bad_spml_options_are_one_line(cli, voc_and_clip, tmp_path, extra, message):
    repo, _ = voc_and_clip
    result = cli("benchmark", repo, "--task", "spml", "-s", "an", *extra, "-o", tmp_path / "out")
    assert result.exit_code == 2 and message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_the_other_tasks_data_and_options_are_refused(cli, voc_and_clip, digits_repo, tmp_path):
    repo, _ = voc_and_clip
    cl_options = cli("benchmark", digits_repo, "-s", "FWD", "--image-size", "32", "--vlpl-beta", "1", "-o", tmp_path)
    assert cl_options.exit_code == 2
    assert "--vlpl-beta, --image-size only apply to --task spml" in cl_options.stderr
    on_cl_data = cli("benchmark", digits_repo, "--task", "spml", "-s", "an", "-o", tmp_path / "a")
    assert on_cl_data.exit_code == 2 and "--task cl" in on_cl_data.stderr, on_cl_data.stderr
    (repo.parent / "nameless").mkdir()
    for item in ("data", "README.md"):
        if (repo / item).exists():
            (repo.parent / "nameless" / item).symlink_to(repo / item)
    no_name = cli("benchmark", repo.parent / "nameless", "--task", "spml", "-s", "an", "-o", tmp_path / "b")
    assert no_name.exit_code == 2 and "pass --vlpl-defaults" in no_name.stderr, no_name.stderr
