"""The benchmark as libcll runs it (issue 12): image batching, init, CPE-T/CPE-I, validation rules, lr choice,
random CL counts, DenseNet. CPU, offline, a few seconds in all."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from aclbuild.bench.batches import BatchPlan
from aclbuild.bench.benchmark import prepare_run_data
from aclbuild.bench.models import build_model
from aclbuild.bench.results import RunRecord, cell_lr, read_results
from aclbuild.bench.results_tables import results_markdown
from aclbuild.bench.strategies import build_strategy
from aclbuild.bench.train import TrainConfig, make_accelerator, train_run
from aclbuild.bench.validation import cl_risk
from aclbuild.cl_data import ClData, load_cl_dataset, random_cl_count_probabilities, with_random_cls
from aclbuild.errors import InputError
from aclbuild.labeling.synthetic import transition_matrix

UNIFORM = transition_matrix("uniform", 10)


pytestmark = pytest.mark.usefixtures("one_thread")  # fixtures one_thread, digits_repo: conftest.py


@pytest.fixture(scope="module")
def digits_data(digits_repo):
    splits = [load_cl_dataset(digits_repo, s, num_cl=3, channels_first=True) for s in ("train", "test")]
    return prepare_run_data(*splits, seed=1207, clean_noisy=0.0)


# ---------------------------------------------------------------- batching


def test_image_batching_takes_a_third_of_the_steps_of_pair_batching(digits_data):
    """libcll: 256 images with all their CLs per step, ceil(N/256); pairs: ceil(3N/256)."""
    n = len(digits_data.train.images)
    assert n == 1260 and len(digits_data.train.pair_cl) == 3 * n
    steps = {}
    for batch_by in ("image", "pair"):
        config = TrainConfig(model="mlp", epochs=2, lr=1e-3, batch_size=256, seed=1207, eval_every=2, batch_by=batch_by)
        result = train_run("SCL-NL", digits_data, config)
        steps[batch_by] = result.steps_per_epoch
        assert result.test_accuracy > 0.3, (batch_by, result.test_accuracy)  # it learns either way
    assert steps == {"image": math.ceil(n / 256), "pair": math.ceil(3 * n / 256)} == {"image": 5, "pair": 15}
    # MCL's rows are images whatever --batch-by says.
    config = TrainConfig(model="mlp", epochs=1, lr=1e-3, batch_size=256, seed=1207, eval_every=1, batch_by="pair")
    assert train_run("MCL-LOG", digits_data, config).steps_per_epoch == 5


def test_an_image_batch_holds_every_cl_of_its_images_once():
    rows = torch.tensor([2, 0, 1, 0, 2, 1, 0, 1, 2, 3])  # image 3 has one CL, the others three
    targets = torch.arange(10) * 10
    plan = BatchPlan(rows, targets, n_images=5, by_image=True, batch_size=2)  # image 4 has none: it sits out
    assert plan.steps() == 2 and not plan.same_count
    seen = []
    for images, expand, batch_targets in plan.epoch(torch.Generator().manual_seed(0)):
        assert len(images) <= 2 and len(expand) == len(batch_targets)
        for position, target in zip(expand.tolist(), batch_targets.tolist()):
            seen.append((int(images[position]), target))
    assert sorted(seen) == sorted(zip(rows.tolist(), targets.tolist()))  # each (image, CL) exactly once


def test_repeating_logits_is_repeating_images_for_batch_norm():
    """With equal CL counts the trainer runs each image once and repeats its logits: the same loss and gradients
    as libcll's repeated images, batch norm included."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Flatten(),
                                torch.nn.Linear(4 * 6 * 6, 5))  # fmt: skip
    images, expand = torch.randn(6, 3, 8, 8), torch.arange(6).repeat_interleave(3)
    cl = torch.randint(0, 5, (18,))
    strategy = build_strategy("SCL-NL", torch.tensor(transition_matrix("uniform", 5)).float(), torch.ones(5))
    strategy(model(images)[expand], cl).backward()
    once = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    strategy(model(images[expand]), cl).backward()
    for a, b in zip(once, (p.grad for p in model.parameters())):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


# ---------------------------------------------------------------- models


def test_conv_init_is_kaiming_fan_out_as_libcll():
    torch.manual_seed(0)
    kaiming, default = build_model("resnet18", 10, 32), build_model("resnet18", 10, 32, init="pytorch")
    stem = kaiming.stem[0].weight.detach()  # 64 x 3 x 3 x 3: fan_out 576
    assert float(stem.std()) == pytest.approx(math.sqrt(2 / 576), rel=0.05)  # 0.0589
    assert float(default.stem[0].weight.detach().std()) == pytest.approx(1 / math.sqrt(3 * 27), rel=0.05)  # 0.111
    deep = kaiming.layers[-1].conv2.weight.detach()  # 512 x 512 x 3 x 3
    assert float(deep.std()) == pytest.approx(math.sqrt(2 / (512 * 9)), rel=0.01)
    assert float(deep.mean()) == pytest.approx(0.0, abs=1e-3)
    batch_norms = [m for m in kaiming.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert all(bool((m.weight == 1).all() and (m.bias == 0).all()) for m in batch_norms)


def test_densenet_has_libclls_parameter_count_and_init():
    model = build_model("densenet", 10, 32)
    assert sum(p.numel() for p in model.parameters()) == 769_162
    stem = model.features[0].weight.detach()  # 24 x 3 x 3 x 3
    assert float(stem.std()) == pytest.approx(math.sqrt(2 / (9 * 24)), rel=0.15)
    model.eval()
    assert model(torch.zeros(1, 3, 32, 32)).shape == (1, 10)


def test_mlp_width_is_256_by_default_and_500_on_request():
    assert build_model("mlp", 10, 8)[1].out_features == 256
    assert build_model("mlp", 10, 8, hidden_dim=500)[1].out_features == 500


def test_precision_is_fp32_by_default_and_bf16_only_on_gpu():
    assert make_accelerator(cpu=True).mixed_precision == "no"
    assert make_accelerator(cpu=True, precision="bf16").mixed_precision == "no"  # bf16 autocast is GPU only
    with pytest.raises(InputError, match="--precision"):
        make_accelerator(precision="fp16")


# ---------------------------------------------------------------- CPE


def test_cpe_t_keeps_a_zero_diagonal_through_training():
    torch.manual_seed(0)
    uniform = torch.tensor(transition_matrix("uniform", 4)).float()
    strategy = build_strategy("CPE-T", uniform, torch.ones(4))
    logits = torch.randn(32, 4, requires_grad=True)
    cl = torch.randint(0, 4, (32,))
    optimizer = torch.optim.Adam([logits, *strategy.parameters()], lr=0.1)
    for _ in range(20):
        optimizer.zero_grad()
        strategy(logits, cl).backward()
        optimizer.step()
    learned = strategy.transition().detach()
    assert torch.all(learned.diagonal() == 0) and torch.isfinite(strategy.W).all()
    assert not torch.allclose(learned, uniform, atol=1e-3)  # the off-diagonal part did train
    torch.testing.assert_close(learned.sum(1), torch.ones(4))
    # A noisy T (a CL may equal the true label) has a nonzero diagonal: libcll trains it like the rest.
    noisy = build_strategy("CPE-T", torch.full((4, 4), 0.25), torch.ones(4))
    assert bool(noisy.support.all())


def test_cpe_i_loss_has_no_epsilon():
    strategy = build_strategy("CPE-I", torch.tensor(UNIFORM).float(), torch.ones(10))
    logits = torch.zeros(1, 10)
    logits[0, 3] = -40.0  # p_3 = e^-40 / (9 + e^-40): -log(p_3 + 1e-6) would be 13.8
    loss = float(strategy(logits, torch.tensor([3])))
    assert loss == pytest.approx(40 + math.log(9), rel=1e-6)


# ---------------------------------------------------------------- validation rules


def test_validation_risks_per_strategy_as_libcll():
    torch.manual_seed(1)
    k = 4
    empirical = torch.tensor([[0.1, 0.5, 0.2, 0.2], [0.3, 0.0, 0.4, 0.3], [0.2, 0.2, 0.1, 0.5], [0.3, 0.3, 0.4, 0.0]])
    uniform = torch.tensor(transition_matrix("uniform", k)).float()
    logits, cl = torch.randn(6, k), torch.tensor([0, 1, 2, 3, 1, 0])
    p = logits.softmax(1)

    def scel(matrix):
        return float(-torch.log((p @ matrix)[torch.arange(6), cl] + 1e-6).mean())

    def ure(matrix):
        return float((-p.log() * torch.linalg.inv(matrix)[cl]).sum(1).mean())

    fwd, ure_nn, ure_tnn = (build_strategy(n, empirical, torch.ones(k)) for n in ("FWD", "URE-NN", "URE-TNN"))
    cpe_i, cpe_t = build_strategy("CPE-I", empirical, torch.ones(k)), build_strategy("CPE-T", empirical, torch.ones(k))
    with torch.no_grad():
        cpe_t.W.add_(torch.randn(k, k))  # a learned T~ that is no longer T
    for strategy in (fwd, ure_nn, ure_tnn, cpe_i, cpe_t):  # today's rule: the empirical T for everyone
        assert cl_risk("scel", "empirical", strategy, logits, cl) == pytest.approx(scel(empirical), rel=1e-5)
    assert cl_risk("ure", "empirical", ure_nn, logits, cl) == pytest.approx(ure(empirical), rel=1e-4)
    # libcll's rule: URE-NN / GA the uniform T, CPE-T its learned T~, CPE-I -log p, the others the empirical T.
    assert cl_risk("scel", "strategy", ure_nn, logits, cl) == pytest.approx(scel(uniform), rel=1e-5)
    assert cl_risk("ure", "strategy", ure_nn, logits, cl) == pytest.approx(ure(uniform), rel=1e-4)
    assert cl_risk("ure", "strategy", ure_tnn, logits, cl) == pytest.approx(ure(empirical), rel=1e-4)
    assert cl_risk("scel", "strategy", fwd, logits, cl) == pytest.approx(scel(empirical), rel=1e-5)
    learned = cpe_t.transition().detach()
    assert cl_risk("scel", "strategy", cpe_t, logits, cl) == pytest.approx(scel(learned), rel=1e-5)
    expected_i = float(-p.log()[torch.arange(6), cl].mean())
    assert cl_risk("scel", "strategy", cpe_i, logits, cl) == pytest.approx(expected_i, rel=1e-5)


# ---------------------------------------------------------------- learning-rate choice


def _run(lr, seed, valid, test, selection=False, valid_type="accuracy", lr_select="reference"):
    return RunRecord(
        dataset="out/d", dataset_name="D", strategy="FWD", model="mlp", seed=seed, lr=lr, num_cl=3, clean_noisy=0.0,
        valid_type=valid_type, epochs=2, best_epoch=2, valid_score=valid, test_accuracy=test, curve=None,
        lr_select=lr_select, lr_selection=selection,
    )  # fmt: skip


def test_reference_lr_select_chooses_by_test_accuracy_at_the_selection_seed():
    runs = [
        _run(1e-3, 1126, valid=0.90, test=0.60, selection=True),
        _run(1e-4, 1126, valid=0.50, test=0.70, selection=True),  # worse validation, better TEST: libcll takes it
        *(_run(1e-3, s, valid=0.90, test=0.61) for s in (1207, 17)),
        *(_run(1e-4, s, valid=0.50, test=0.72) for s in (1207, 17)),
    ]
    lr, chosen = cell_lr(runs)
    assert lr == 1e-4 and [r.seed for r in chosen] == [17, 1207]  # the selection seed is not averaged in
    by_validation = [replace(r, lr_select="validation") for r in runs]
    lr, chosen = cell_lr(by_validation)
    assert lr == 1e-3 and len(chosen) == 2  # the sound rule never looks at the test set
    assert cell_lr([replace(r, valid_type="ure") for r in by_validation])[0] == 1e-4  # risks: lower is better


def test_reference_lr_select_runs_the_grid_at_one_seed_then_the_seeds(cli, digits_repo, tmp_path):
    out = tmp_path / "bench"
    result = cli("benchmark", digits_repo, "-s", "FWD", "--model", "mlp", "--epochs", "1", "--lr", "1e-2",
                 "--lr", "1e-6", "--seed", "17", "--seed", "33", "--lr-select", "reference", "-o", out)  # fmt: skip
    assert result.exit_code == 0, result.stderr
    runs = json.loads((out / "results.json").read_text())["runs"]
    selection = {r["lr"]: r["test_accuracy"] for r in runs if r["lr_selection"]}
    assert {r["seed"] for r in runs if r["lr_selection"]} == {1126} and set(selection) == {1e-2, 1e-6}
    best = max(sorted(selection), key=selection.__getitem__)  # ties: the smaller lr
    assert {(r["seed"], r["lr"]) for r in runs if not r["lr_selection"]} == {(17, best), (33, best)}
    assert all(r["lr_select"] == "reference" for r in runs)
    table = (out / "results.md").read_text()
    assert "TEST accuracy at seed 1126" in table and f"(lr {best:g})" in table
    assert results_markdown(read_results(out)) == table
    report = cli("report", out / "results.json", "--output-dir", tmp_path / "report")  # selection runs left out
    assert report.exit_code == 0, report.stderr


# ---------------------------------------------------------------- random number of CLs


def test_random_cl_counts_follow_libclls_distribution():
    probabilities = random_cl_count_probabilities(10)
    assert probabilities.sum() == pytest.approx(1.0) and len(probabilities) == 9
    assert probabilities[0] == pytest.approx(9 / 511) and probabilities[4] == pytest.approx(126 / 511)
    n = 4000
    data = ClData(torch.zeros(n, 1, 1, 3, dtype=torch.uint8), torch.arange(n) % 10, torch.zeros(0, dtype=torch.int64),
                  torch.zeros(0, dtype=torch.int64), torch.eye(10), tuple("abcdefghij"), 3)  # fmt: skip
    drawn = with_random_cls(data, UNIFORM, seed=5)
    counts = torch.bincount(drawn.pair_image, minlength=n).numpy()
    observed = np.bincount(counts, minlength=10)[1:] / n
    np.testing.assert_allclose(observed, probabilities, atol=0.02)
    assert bool((drawn.pair_cl != drawn.ord_labels[drawn.pair_image]).all())  # never the true label
    multi_hot = torch.zeros(n, 10)
    multi_hot[drawn.pair_image, drawn.pair_cl] += 1
    assert multi_hot.max() == 1  # distinct CLs per image
    again = with_random_cls(data, UNIFORM, seed=5)
    assert torch.equal(again.pair_cl, drawn.pair_cl) and not torch.equal(with_random_cls(data, UNIFORM, 6).pair_cl,
                                                                         drawn.pair_cl)  # fmt: skip


def test_num_cl_zero_benchmark(cli, digits_repo, tmp_path):
    out = tmp_path / "bench"
    result = cli("benchmark", digits_repo, "-s", "SCL-NL", "--model", "mlp", "--epochs", "1", "--seed", "17",
                 "--num-cl", "0", "--lr", "1e-3", "-o", out)  # fmt: skip
    assert result.exit_code == 0, result.stderr
    (run,) = json.loads((out / "results.json").read_text())["runs"]
    assert run["num_cl"] == 0 and run["steps_per_epoch"] == 5  # 1,260 images, whatever their number of CLs
    assert "a random number of uniform synthetic CLs" in (out / "results.md").read_text()


def test_results_and_report_keep_batchings_apart(cli, digits_repo, tmp_path):
    out = tmp_path / "bench"
    for batch_by in ("image", "pair"):
        result = cli("benchmark", digits_repo, "-s", "FWD", "--model", "mlp", "--epochs", "1", "--seed", "17",
                     "--batch-by", batch_by, "-o", out)  # fmt: skip
        assert result.exit_code == 0, result.stderr
    runs = json.loads((out / "results.json").read_text())["runs"]
    assert sorted((r["batch_by"], r["steps_per_epoch"]) for r in runs) == [("image", 5), ("pair", 15)]
    table = (out / "results.md").read_text()
    assert "Batches by image" in table and "Batches by pair" in table  # two tables, never one cell of both
    report = cli("report", out, "--output-dir", tmp_path / "report")
    assert report.exit_code == 0, report.stderr
    page = (tmp_path / "report" / "report.md").read_text()
    assert "by image, fp32, hidden 256" in page and "by pair, fp32, hidden 256" in page
