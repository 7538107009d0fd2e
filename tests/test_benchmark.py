"""load_cl_dataset, the trainer, `aclbuild benchmark` and the proof of learning on digits (CPU, offline)."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from aclbuild.bench.benchmark import prepare_run_data, split_indices
from aclbuild.bench.models import build_model
from aclbuild.bench.strategies import STRATEGIES
from aclbuild.bench.train import Augment, TrainConfig, train_run
from aclbuild.builder import build_repository
from aclbuild.cl_data import ClData, estimate_transition, load_cl_dataset
from aclbuild.errors import InputError
from aclbuild.registry import get_variant
from aclbuild.repository import write_split
from aclbuild.schema import ClRecord, arrow_schema
from aclbuild.stats import repository_stats

TESTS = Path(__file__).resolve().parent
BASE_KEYS = {
    "dataset", "dataset_name", "strategy", "model", "seed", "lr", "num_cl", "clean_noisy", "valid_type", "epochs",
    "best_epoch", "valid_score", "test_accuracy", "curve",
}  # fmt: skip
# How a run was made (issue 12): every record of today's benchmark carries these too.
RUN_KEYS = BASE_KEYS | {
    "batch_by", "precision", "init", "hidden_dim", "valid_rule", "lr_select", "lr_selection", "steps_per_epoch",
    "clip_model", "vlpl_alpha",
}  # fmt: skip


pytestmark = pytest.mark.usefixtures("one_thread")  # fixtures one_thread, digits_repo: conftest.py


@pytest.fixture(scope="module")
def digits_splits(digits_repo):
    train = load_cl_dataset(digits_repo, "train", num_cl=3, channels_first=True)
    test = load_cl_dataset(digits_repo, "test", num_cl=3, channels_first=True)
    return train, test


def test_load_cl_dataset_layouts_and_transition(digits_repo):
    pairs = load_cl_dataset(digits_repo, "train", num_cl=2)
    assert pairs.images.shape == (1400, 8, 8, 3) and pairs.images.dtype == torch.uint8
    assert len(pairs) == 2800 and pairs.cl_labels.shape == (2800,)
    image, cl, label = pairs[1]
    assert image.shape == (8, 8, 3) and int(cl) == int(pairs.pair_cl[1]) and int(label) == int(pairs.ord_labels[0])
    sets = load_cl_dataset(digits_repo, "train", num_cl=3, expand=False, channels_first=True)
    assert sets.images.shape == (1400, 3, 8, 8) and len(sets) == 1400
    assert sets.cl_labels.shape == (1400, 10) and torch.all(sets.cl_labels.sum(1) == 3)  # distinct CLs
    assert sets.name == "Digits-Uniform"
    stats = repository_stats(digits_repo)["train"]
    np.testing.assert_allclose(sets.transition_matrix.numpy(), stats["transition_matrix"], atol=1e-6)
    test = load_cl_dataset(digits_repo, "test", num_cl=3)
    assert len(test.images) == 397 and len(test.pair_cl) == 0
    torch.testing.assert_close(test.transition_matrix, sets.transition_matrix)
    # Restricted to a training part, T is estimated on those images only.
    part = load_cl_dataset(digits_repo, "test", num_cl=3, train_indices=np.arange(100))
    first = sets.subset(np.arange(100))
    expected = estimate_transition(first.ord_labels, first.pair_image, first.pair_cl, 10)
    torch.testing.assert_close(part.transition_matrix, expected)


def test_load_through_datasets_gives_the_same_labels(digits_repo):
    from aclbuild.cl_data import _read_hub
    from aclbuild.png import decode_image

    rows, names, _ = _read_hub(str(digits_repo), "train", with_images=True)
    local = load_cl_dataset(digits_repo, "train", num_cl=3)
    assert names == local.class_names
    np.testing.assert_array_equal(rows.ord_labels, local.ord_labels.numpy())
    np.testing.assert_array_equal(rows.cl_labels.reshape(-1), local.pair_cl.numpy())
    np.testing.assert_array_equal(decode_image(rows.images[7]), local.images[7].numpy())


def test_num_cl_out_of_range_is_bad_input(digits_repo):
    with pytest.raises(InputError, match="larger than the 3 CLs"):
        load_cl_dataset(digits_repo, "train", num_cl=4)
    with pytest.raises(InputError):
        load_cl_dataset(digits_repo, "train", num_cl=0)


def _toy(ord_labels, cls) -> ClData:
    cls = torch.tensor(cls)
    n, m = cls.shape
    return ClData(
        images=torch.zeros(n, 2, 2, 3, dtype=torch.uint8), ord_labels=torch.tensor(ord_labels),
        pair_image=torch.arange(n).repeat_interleave(m), pair_cl=cls.reshape(-1),
        transition_matrix=torch.eye(3), class_names=("a", "b", "c"), num_cl=m,
    )  # fmt: skip


def test_subset_and_drop_noisy():
    data = _toy([0, 1, 2, 0], [[0, 1], [2, 0], [2, 1], [0, 0]])  # 4 noisy pairs of 8
    assert data.noise_rate() == 0.5
    assert data.drop_noisy(1.0, seed=0).noise_rate() == 0.0 and len(data.drop_noisy(1.0, seed=0)) == 4
    assert len(data.drop_noisy(0.5, seed=0)) == 6 and len(data.drop_noisy(0.0, seed=0)) == 8
    sub = data.subset(np.array([3, 1]))
    # Pairs keep their stored order (image 1's, then image 3's), pointing at the new rows (1 -> 1, 3 -> 0).
    assert sub.ord_labels.tolist() == [0, 1] and sub.pair_image.tolist() == [1, 1, 0, 0]
    assert sub.pair_cl.tolist() == [2, 0, 0, 0]
    with pytest.raises(InputError):
        data.drop_noisy(1.5, seed=0)


def test_strategy_names_all_and_libcll_types():
    from aclbuild.bench.benchmark import expand_strategies

    assert expand_strategies(["URE", "FWD"], None, ["NN", "GA"]) == ["URE-NN", "URE-GA", "FWD"]
    with pytest.raises(InputError):
        expand_strategies(["MCL"], None, ["NN"])  # MCL-NN does not exist
    assert expand_strategies(["all"], None) == [n for n in STRATEGIES if n not in ("AN", "EM", "EM-PL")]
    assert expand_strategies(["all", "FWD"], "clip")[-3:] == ["AN", "EM", "EM-PL"]


def test_split_is_seeded_ninety_ten():
    train, valid = split_indices(1400, seed=1207)
    assert len(valid) == 140 and len(np.intersect1d(train, valid)) == 0 and len(train) + len(valid) == 1400
    again, _ = split_indices(1400, seed=1207)
    other, _ = split_indices(1400, seed=17)
    assert np.array_equal(train, again) and not np.array_equal(train, other)


def test_augment_crops_and_flips_on_tensors():
    images = torch.arange(2 * 3 * 32 * 32, dtype=torch.int64).remainder(251).to(torch.uint8).view(2, 3, 32, 32)
    augment = Augment.for_size(32)
    out = augment.batch(images, torch.Generator().manual_seed(0))
    assert out.shape == (2, 3, 32, 32) and out.dtype == torch.float32
    # Every output is the image shifted by at most 4 pixels (zeros coming in), maybe flipped, then normalised.
    padded = torch.nn.functional.pad(images, (4, 4, 4, 4))
    for i in range(2):
        candidates = [
            augment.normalise(view[None])[0]
            for dy in range(9) for dx in range(9)
            for view in (padded[i, :, dy : dy + 32, dx : dx + 32], padded[i, :, dy : dy + 32, dx : dx + 32].flip(2))
        ]  # fmt: skip
        assert any(torch.allclose(out[i], c) for c in candidates)
    assert not Augment.for_size(8).flip and Augment.for_size(8).padding == 0  # digits are not flipped


@pytest.mark.parametrize("name,size", [("resnet18", 32), ("resnet34", 64), ("densenet", 8), ("mlp", 8), ("linear", 8)])
def test_models_give_logits(name, size):
    model = build_model(name, num_classes=10, image_size=size)
    assert model(torch.zeros(2, 3, size, size)).shape == (2, 10)


def test_resnet18_is_the_cifar_style_reference():
    model = build_model("resnet18", 10, 32)
    assert sum(p.numel() for p in model.parameters()) == 11_173_962  # torchvision resnet18, 3x3 stem, fc 10
    assert model.stem[0].kernel_size == (3, 3) and model.stem[0].stride == (1, 1)
    assert isinstance(model.stem[3], torch.nn.MaxPool2d)


# Proof of learning (issue 5, section 6): MLP, Adam lr 1e-3, 10 epochs, batch 64, digits with 3 uniform CLs.
THRESHOLDS = {"FWD": 0.85, "SCL-NL": 0.85, "SCL-EXP": 0.85, "CPE-F": 0.85, "MCL-LOG": 0.85, "Ord": 0.95}


@pytest.mark.parametrize("strategy", list(THRESHOLDS))
def test_mlp_learns_digits_from_complementary_labels(strategy, digits_splits, tmp_path):
    data = prepare_run_data(*digits_splits, seed=1207, clean_noisy=0.0)
    config = TrainConfig(model="mlp", epochs=10, lr=1e-3, batch_size=64, seed=1207, eval_every=5)
    result = train_run(strategy, data, config, tmp_path / "curve.csv")
    assert result.test_accuracy >= THRESHOLDS[strategy], f"{strategy}: {result.test_accuracy:.3f}"
    with open(tmp_path / "curve.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["epoch", "train_loss", "valid_score", "test_accuracy"] and len(rows) == 10
    assert rows[0]["valid_score"] == "" and float(rows[4]["valid_score"]) > 0.5
    assert float(rows[-1]["train_loss"]) < float(rows[0]["train_loss"])


def test_resnet_runs_through_both_input_paths(tmp_path):
    rng = np.random.default_rng(0)
    def make(n, cls):
        return [
            ClRecord(f"img_{i}.png", rng.integers(0, 256, (32, 32, 3), dtype=np.uint8), i % 10, cls(i)) for i in range(n)
        ]
    train = make(40, lambda i: ((i + 1) % 10, (i + 2) % 10))
    repo = build_repository(get_variant("aclcifar10"), train, make(20, lambda i: None), tmp_path / "tiny")
    data = prepare_run_data(*[load_cl_dataset(repo, s, num_cl=2, channels_first=True) for s in ("train", "test")],
                            seed=1, clean_noisy=0.0)  # fmt: skip
    for loader in ("fast", "dataloader"):
        for batch_by, steps in (("image", 2), ("pair", 3)):  # 36 training images with 2 CLs each, batches of 32
            config = TrainConfig(model="resnet18", epochs=1, lr=1e-3, batch_size=32, seed=1, eval_every=1,
                                 loader=loader, batch_by=batch_by)  # fmt: skip
            result = train_run("FWD", data, config)
            assert result.best_epoch == 1 and result.test_accuracy == result.curve[0]["test_accuracy"]
            assert round(20 * result.test_accuracy, 9).is_integer()  # a share of the 20 test images
            assert result.steps_per_epoch == steps, (loader, batch_by)


def test_benchmark_command_every_strategy_one_epoch(cli, digits_repo, tmp_path):
    sys.path.insert(0, str(TESTS))
    from tiny_clip import write_tiny_clip

    clip = write_tiny_clip(tmp_path / "clip", [str(d) for d in range(10)])
    out = tmp_path / "bench"
    args = ["benchmark", digits_repo, "--strategy", "all", "--clip-model", clip, "--model", "linear", "--epochs", "1",
            "--seed", "3", "--eval-every", "1", "--lr", "1e-3", "--output-dir", out]  # fmt: skip
    result = cli(*args)
    assert result.exit_code == 0, result.stderr + result.stdout
    runs = json.loads((out / "results.json").read_text())["runs"]
    assert {r["strategy"] for r in runs} == set(STRATEGIES) | {"CLIP-zero-shot"}
    for run in runs:
        assert set(run) == RUN_KEYS, run
        with (out / run["curve"]).open(newline="") as f:  # the record's accuracy is its best epoch's on the curve
            at_best = next(row for row in csv.DictReader(f) if int(row["epoch"]) == run["best_epoch"])
        assert run["test_accuracy"] == float(at_best["test_accuracy"]), run
    # The zero-shot row, computed here from the cached CLIP scores and the repository's own test labels.
    (scores,) = (digits_repo.parent / ".aclbuild-clip").rglob("test-*.npy")
    truth = load_cl_dataset(digits_repo, "test", num_cl=1).ord_labels.numpy()
    zero_shot = next(r for r in runs if r["strategy"] == "CLIP-zero-shot")
    assert zero_shot["test_accuracy"] == pytest.approx(float((np.load(scores).argmax(1) == truth).mean()), abs=1e-12)
    table = (out / "results.md").read_text()
    assert "| CLIP-zero-shot |" in table and "| EM-PL |" in table and "Digits-Uniform" in table
    assert {r["vlpl_alpha"] for r in runs if r["strategy"] in ("AN", "EM", "EM-PL")} == {0.1}
    assert {r["vlpl_alpha"] for r in runs if r["strategy"] not in ("AN", "EM", "EM-PL")} == {None}
    # Another alpha is another run beside the first (its own folder, its own row), not a resumed one.
    result = cli(*args[:2], "-s", "EM", *args[4:], "--vlpl-alpha", "0.5")
    assert result.exit_code == 0, result.stderr + result.stdout
    em = [r for r in json.loads((out / "results.json").read_text())["runs"] if r["strategy"] == "EM"]
    assert sorted(r["vlpl_alpha"] for r in em) == [0.1, 0.5] and len({r["curve"] for r in em}) == 2
    assert "| EM (alpha 0.5) |" in (out / "results.md").read_text()


def test_benchmark_resumes_and_writes_the_results_format(cli, digits_repo, tmp_path):
    out = tmp_path / "bench"
    args = ["benchmark", digits_repo, "-s", "FWD", "-s", "SCL", "--type", "NL", "--model", "mlp", "--epochs", "2",
            "--seed", "1207", "--seed", "17", "--eval-every", "1", "--lr", "1e-3", "--lr", "1e-4",
            "--batch-size", "128", "-o", out]  # fmt: skip
    first = cli(*args)
    assert first.exit_code == 0, first.stderr
    runs = json.loads((out / "results.json").read_text())["runs"]
    assert len(runs) == 8 and all(set(r) == RUN_KEYS for r in runs)
    assert {(r["seed"], r["lr"]) for r in runs} == {(1207, 1e-3), (1207, 1e-4), (17, 1e-3), (17, 1e-4)}
    stamp = {r["curve"]: (out / r["curve"]).stat().st_mtime_ns for r in runs}
    again = cli(*args)
    assert again.exit_code == 0 and again.stdout.count("skip (done)") == 8
    assert stamp == {r["curve"]: (out / r["curve"]).stat().st_mtime_ns for r in runs}
    table = (out / "results.md").read_text()
    assert "| SCL-NL |" in table and "+-" in table and "(lr " in table  # the grid's chosen lr is named


def test_clean_noisy_and_num_cl_runs(cli, digits_repo, tmp_path):
    out = tmp_path / "bench"
    result = cli("benchmark", digits_repo, "-s", "FWD", "--model", "mlp", "--epochs", "1", "--seed", "5",
                 "--num-cl", "1", "--clean-noisy", "1.0", "--valid-type", "scel", "-o", out)  # fmt: skip
    assert result.exit_code == 0, result.stderr
    (run,) = json.loads((out / "results.json").read_text())["runs"]
    assert run["num_cl"] == 1 and run["clean_noisy"] == 1.0 and run["valid_type"] == "scel"
    assert run["batch_by"] == "image" and run["precision"] == "fp32" and run["init"] == "kaiming"
    assert run["hidden_dim"] == 256 and run["valid_rule"] == "empirical" and run["lr_select"] == "validation"
    assert run["valid_score"] > 0  # SCEL risk, lower is better


@pytest.fixture
def repo_without_true_labels(tmp_path) -> Path:
    """A repository whose train split has CLs but null ord_labels (what a CL-only release could hold)."""
    rng = np.random.default_rng(0)
    schema = arrow_schema(tuple(str(d) for d in range(10)), 2)
    def image():
        return rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    repo = tmp_path / "repo"
    write_split(repo, "train", [ClRecord(f"t{i}", image(), None, (1, 2)) for i in range(20)], schema)
    write_split(repo, "test", [ClRecord(f"s{i}", image(), i % 10) for i in range(10)], schema)
    return repo


@pytest.mark.parametrize(
    "extra,message",
    [
        (["-s", "NOPE"], "unknown strategy"),
        (["-s", "FWD", "--lr", "0"], "learning rates must be positive"),
        (["-s", "FWD", "--num-cl", "4"], "larger than the 3 CLs"),
        (["-s", "FWD", "--valid-type", "top5"], "--valid-type"),
        (["-s", "FWD", "--model", "vit"], "unknown model"),
        (["-s", "EM-PL"], "--clip-model"),
        (["-s", "FWD", "--batch-by", "cl"], "--batch-by"),
        (["-s", "FWD", "--precision", "fp16"], "--precision"),
        (["-s", "FWD", "--lr-select", "test"], "--lr-select"),
        (["-s", "FWD", "--valid-rule", "uniform"], "--valid-rule"),
        (["-s", "FWD", "--init", "xavier"], "--init"),
        (["-s", "FWD", "--num-cl", "-1"], "--num-cl must be 0"),
        (["-s", "CPE-T", "--valid-type", "ure", "--valid-rule", "strategy"], "no URE validation for CPE"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(cli, digits_repo, tmp_path, extra, message):
    model = [] if "--model" in extra else ["--model", "mlp"]
    result = cli("benchmark", digits_repo, *extra, *model, "--epochs", "1", "-o", tmp_path / "out")
    assert result.exit_code == 2, result.stdout + result.stderr
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error:") and message in result.stderr
    assert not (tmp_path / "out" / "results.json").exists()


def test_ord_needs_true_labels(cli, repo_without_true_labels, tmp_path):
    result = cli(
        "benchmark", repo_without_true_labels, "-s", "Ord", "--num-cl", "2", "--model", "mlp", "-o", tmp_path / "o"
    )
    assert result.exit_code == 2 and "has no ord_labels" in result.stderr and result.stderr.count("\n") == 1


def test_results_example_matches_the_format():
    example = json.loads((TESTS / "data" / "results_example.json").read_text())
    assert example["runs"] and all(set(r) == BASE_KEYS for r in example["runs"])  # written before issue 12
    for run in example["runs"]:
        with open(TESTS / "data" / run["curve"], newline="") as f:
            assert next(csv.reader(f)) == ["epoch", "train_loss", "valid_score", "test_accuracy"]


def test_accelerate_two_cpu_processes(digits_repo, tmp_path):
    script = tmp_path / "two.py"
    script.write_text(
        "import json, sys, torch\n"
        "torch.set_num_threads(1)\n"
        "from aclbuild.bench.benchmark import BenchmarkSpec, run_benchmark\n"
        "from aclbuild.bench.train import make_accelerator\n"
        "acc = make_accelerator(cpu=True)\n"
        "spec = BenchmarkSpec([sys.argv[1]], ['FWD', 'CPE-T'], model='mlp', epochs=2, lrs=[1e-3], seeds=[1207],\n"
        "                     eval_every=1, batch_size=64)\n"
        "run_benchmark(spec, sys.argv[2], accelerator=acc)\n"
        "open(f'{sys.argv[2]}/rank{acc.process_index}-of-{acc.num_processes}', 'w').close()\n"
    )
    env = dict(os.environ, OMP_NUM_THREADS="1")
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", str(script),
               str(digits_repo), str(tmp_path / "out")]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert {p.name for p in (tmp_path / "out").glob("rank*")} == {"rank0-of-2", "rank1-of-2"}
    runs = json.loads((tmp_path / "out" / "results.json").read_text())["runs"]
    assert {r["strategy"] for r in runs} == {"FWD", "CPE-T"} and all(r["test_accuracy"] > 0.5 for r in runs)


def test_benchmark_reads_a_hub_id_from_the_loopback_hub(digits_repo, tmp_path):
    """The digits repository pushed to tests/hub_server.py, then benchmarked by its id: the datasets route."""
    sys.path.insert(0, str(TESTS))
    from hub_server import TOKEN, HubServer

    with HubServer() as hub:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING"))}
        env.update(HF_ENDPOINT=hub.url, HF_HUB_DISABLE_XET="1", HF_HOME=str(tmp_path / "hf"), HF_TOKEN=TOKEN,
                   NO_COLOR="1", OMP_NUM_THREADS="1")  # fmt: skip

        def aclbuild(*args):
            command = [sys.executable, "-m", "aclbuild", *map(str, args)]
            return subprocess.run(command, env=env, capture_output=True, text=True, timeout=180, check=False)

        pushed = aclbuild("push", digits_repo, "--repo-id", "aclorg/digits-uniform")
        assert pushed.returncode == 0, pushed.stderr[-2000:]
        done = aclbuild("benchmark", "aclorg/digits-uniform", "-s", "FWD", "--model", "mlp", "--epochs", "6",
                        "--seed", "1207", "--lr", "1e-3", "--batch-size", "64", "-o", tmp_path / "out")  # fmt: skip
        assert done.returncode == 0, done.stderr[-2000:]
    (run,) = json.loads((tmp_path / "out" / "results.json").read_text())["runs"]
    assert run["dataset"] == "aclorg/digits-uniform" and run["dataset_name"] == "Digits-Uniform"  # from the card
    assert run["test_accuracy"] > 0.8


def test_clip_score_cache_is_keyed_by_class_names_prompt_and_checkpoint(tmp_path, monkeypatch):
    """Renaming a class, changing the prompt or the checkpoint's files misses the cache; the same inputs hit it."""
    from dataclasses import replace

    from aclbuild.bench import vlpl

    computed = []

    def fake_scores(images, class_names, clip, batch_size=256):
        computed.append(tuple(class_names))
        return np.full((len(images), len(class_names)), 1 / len(class_names), dtype=np.float32)

    monkeypatch.setattr(vlpl, "_load_clip", lambda model, revision=None: "a loaded CLIP")
    monkeypatch.setattr(vlpl, "compute_scores", fake_scores)
    checkpoint = tmp_path / "clip"
    checkpoint.mkdir()
    (checkpoint / "config.json").write_text("{}")
    images = torch.arange(2 * 3 * 4 * 4, dtype=torch.uint8).reshape(2, 3, 4, 4)
    split = ClData(images, torch.tensor([0, 1]), torch.tensor([0]), torch.tensor([1]), torch.eye(2), ("cat", "dog"), 1)
    repo = tmp_path / "repo"
    repo.mkdir()

    def scores_of(data: ClData) -> None:
        vlpl.clip_scores(str(repo), str(checkpoint), data, data)

    scores_of(split)
    assert computed == [("cat", "dog")] * 2  # train and test, computed once each
    scores_of(split)
    assert len(computed) == 2  # the same model, names, prompt and images: read from the cache
    scores_of(replace(split, class_names=("cat", "wolf")))
    assert computed[2:] == [("cat", "wolf")] * 2  # a renamed class: computed again
    monkeypatch.setattr(vlpl, "PROMPT", "a blurry photo of a {}")
    scores_of(split)
    assert len(computed) == 6  # another prompt template
    (checkpoint / "model.safetensors").write_bytes(b"new weights")
    scores_of(split)
    assert len(computed) == 8  # the checkpoint folder changed
