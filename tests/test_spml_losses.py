"""VLPL's SPML losses, pseudo-labels, APL and mAP against independent numpy expressions of their formulas.

The formulas are VLPL's (losses.py, models.py, metrics.py of github.com/mvrl/VLPL) as written in
../shared/reference/cll-benchmark.md; each expected value below is computed entry by entry on 3 rows.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from aclbuild.bench.spml import (
    VLPL_DEFAULTS, apl_counts, apl_due, asymmetric_pseudo_labels, clip_softmax, pseudo_labels, vlpl_settings,
)  # fmt: skip
from aclbuild.bench.spml_losses import LOSSES, build_loss, loss_class
from aclbuild.bench.spml_metrics import average_precision, mean_average_precision
from aclbuild.errors import InputError, UnknownNameError

F = np.array([[1.0, -0.5, 2.0, 0.0], [-1.5, 0.3, 0.7, -2.0], [0.2, 1.1, -0.4, 0.9]])
OBSERVED = np.array([[0, 0, 1, 0], [0, 1, 0, 0], [1, 0, 0, 0]])  # one observed positive per image
LABELS = np.array([[1, 0, 1, 0], [0, 1, 1, 0], [1, 1, 0, 1]])  # the full positive sets
PSEUDO = np.array([[1, 0, 1, -1], [0, 0, 1, 0], [0, 1, 0, -1]])  # 1 / -1 pseudo-labels, one on an observed positive
NAN = float("nan")
SOFT = np.array([[NAN, 0.2, NAN, 0.05], [0.1, NAN, NAN, NAN], [NAN, NAN, 0.3, NAN]])  # APL soft negative targets
SETTINGS = vlpl_settings("voc2012-spml", beta_neg=0.5)  # alpha 0.2, beta_pos 0.7, apl_beta 0.02; beta_neg on


def sigmoid(x):
    return 1 / (1 + np.exp(-x))


P = sigmoid(F)
POS, NEG = -np.log(P), -np.log(1 - P)
H = P * POS + (1 - P) * NEG


def expected_entry(name: str, i: int, k: int, s=SETTINGS) -> float:
    """The per-entry loss of ``name`` at (i, k), from the formula, one case at a time."""
    pos, neg, obs = POS[i, k], NEG[i, k], OBSERVED[i, k]
    if name == "bce":
        return pos if LABELS[i, k] else neg
    if name == "iun":
        return pos if obs == 1 else (neg if LABELS[i, k] == 0 else 0.0)
    if name == "an":
        return pos if obs == 1 else neg
    if obs == 1:
        return pos
    if name == "EM_APL" and not math.isnan(SOFT[i, k]):
        t = SOFT[i, k]
        return s.apl_beta * (t * pos + (1 - t) * neg)
    if name == "EM_PL" and PSEUDO[i, k] == 1:
        return s.beta_pos * (0.9 * pos + 0.1 * neg)
    if name == "EM_PL" and PSEUDO[i, k] == -1:
        return s.beta_neg * (0.1 * pos + 0.9 * neg)
    return -s.alpha * H[i, k]


def loss_of(name: str, logits=F, observed=OBSERVED, settings=SETTINGS) -> torch.Tensor:
    extra = {"labels": torch.tensor(LABELS), "pseudo": torch.tensor(PSEUDO), "soft_negatives": torch.tensor(SOFT)}
    loss = build_loss(name, settings)
    logits = torch.as_tensor(logits, dtype=torch.float64)
    return loss(logits, torch.as_tensor(observed), **{key: extra[key] for key in loss.needs})


@pytest.mark.parametrize("name", ["bce", "iun", "an", "EM", "EM_APL", "EM_PL"])
def test_loss_matches_formula(name):
    expected = np.mean([expected_entry(name, i, k) for i in range(3) for k in range(4)])  # VLPL: sum / (B K)
    assert float(loss_of(name)) == pytest.approx(expected, rel=1e-12)


def test_losses_by_hand_on_zero_logits():
    """p = 1/2 everywhere: -log p = -log(1 - p) = H = log 2; row 0 of the batch, K = 4."""
    log2 = math.log(2)
    zeros, observed = torch.zeros(1, 4), torch.tensor([[0, 0, 1, 0]])
    voc = vlpl_settings("voc2012-spml")
    an = build_loss("an", voc)(zeros, observed)
    em = build_loss("EM", voc)(zeros, observed)
    em_pl = build_loss("EM_PL", voc)(zeros, observed, pseudo=torch.tensor([[1, 0, 0, -1]]))
    assert float(an) == pytest.approx(log2)
    assert float(em) == pytest.approx((log2 - 3 * 0.2 * log2) / 4)
    assert float(em_pl) == pytest.approx((log2 + 0.7 * log2 - 0.2 * log2 + 0.0) / 4)  # pseudo-negative: beta_neg 0
    cub = build_loss("EM", vlpl_settings("cub"))(zeros, observed)
    assert float(cub) == pytest.approx((log2 - 3 * 0.01 * log2) / 4)


def test_em_apl_without_soft_negatives_is_em_and_with_them_differs():
    """The reference's EM_APL equals EM (its soft negatives are never drawn); here they change the loss."""
    none = torch.full((3, 4), NAN, dtype=torch.float64)
    logits = torch.tensor(F)
    apl = build_loss("EM_APL", SETTINGS)
    assert float(apl(logits, torch.tensor(OBSERVED), soft_negatives=none)) == pytest.approx(float(loss_of("EM")))
    assert float(loss_of("EM_APL")) != pytest.approx(float(loss_of("EM")))


def test_observed_negatives_are_known_negatives():
    """An observed -1 (VLPL's an and EM assert on it) costs -log(1 - p) in an, EM, EM_PL and EM_APL."""
    observed = OBSERVED.copy()
    observed[0, 1] = -1
    for name in ("an", "EM", "EM_PL", "EM_APL"):
        change = (float(loss_of(name, observed=observed)) - float(loss_of(name))) * 12
        assert change == pytest.approx(NEG[0, 1] - expected_entry(name, 0, 1), rel=1e-9), name


def test_matches_vlpl_epsilon_formula_at_moderate_logits():
    """VLPL's neg_log is -log(x + 1e-5); away from saturation the exact form agrees to 1e-4."""
    eps = 1e-5
    pos, neg = -np.log(P + eps), -np.log(1 - P + eps)
    entropy = P * pos + (1 - P) * neg
    em_vlpl = np.where(OBSERVED == 1, pos, -0.2 * entropy).mean()
    an_vlpl = np.where(OBSERVED == 1, pos, neg).mean()
    assert float(loss_of("EM")) == pytest.approx(em_vlpl, abs=1e-4)
    assert float(loss_of("an")) == pytest.approx(an_vlpl, abs=1e-4)


@pytest.mark.parametrize("name", ["bce", "iun", "an", "EM", "EM_APL", "EM_PL"])
def test_gradients_finite_at_saturated_outputs(name):
    """p near 0 and 1 (|f| up to 100, float32): the loss and every gradient are finite."""
    logits = torch.tensor([[-100.0, 100.0, -30.0, 30.0], [30.0, -30.0, 100.0, -100.0], [0.0, 50.0, -50.0, 17.0]],
                          requires_grad=True)  # fmt: skip
    loss = loss_of(name, logits=logits.double())
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logits.grad).all(), name
    if name in ("an", "EM", "EM_PL", "EM_APL"):  # the observed positive at f = -30 still pulls up (no 1e-5 floor)
        assert logits.grad[2, 0] < 0 and logits.grad[0, 2] < -0.05, name


def test_registry_names_hyphens_and_errors():
    assert list(LOSSES) == ["bce", "iun", "an", "EM", "EM_APL", "EM_PL"]  # as VLPL's -l spells them
    assert loss_class("EM-PL") is loss_class("em_pl") is LOSSES["EM_PL"]
    assert loss_class("EM-APL").name == "EM_APL" and loss_class("BCE").name == "bce"
    with pytest.raises(UnknownNameError, match="bce, iun, an, EM, EM_APL, EM_PL"):
        loss_class("EM-ASL")
    with pytest.raises(InputError, match="needs pseudo"):
        build_loss("EM_PL", SETTINGS)(torch.zeros(2, 3), torch.zeros(2, 3))
    with pytest.raises(InputError, match="values other than -1, 0, 1"):
        build_loss("an", SETTINGS)(torch.zeros(1, 3), torch.tensor([[2, 0, 0]]))
    with pytest.raises(InputError, match="give one per logit"):
        build_loss("bce", SETTINGS)(torch.zeros(2, 3), torch.zeros(2, 3), labels=torch.zeros(2, 4))


def test_settings_table_and_overrides():
    assert {k: (v.alpha, v.beta_pos, v.lr) for k, v in VLPL_DEFAULTS.items()} == {
        "voc2012-spml": (0.2, 0.7, 1e-5), "coco2014-spml": (0.1, 0.7, 1e-5), "nuswide-spml": (0.1, 0.7, 1e-5),
        "cub-spml": (0.01, 0.7, 1e-4),
    }  # fmt: skip
    voc = vlpl_settings("pascal")
    assert (voc.threshold, voc.temperature, voc.pseudo_target, voc.batch_size, voc.epochs) == (0.3, 0.01, 0.9, 8, 10)
    assert vlpl_settings("NUS", alpha=0.5, threshold=None).alpha == 0.5 and vlpl_settings("nus").threshold == 0.3
    with pytest.raises(UnknownNameError, match="voc2012-spml"):
        vlpl_settings("imagenet")
    with pytest.raises(InputError, match="unknown VLPL setting"):
        vlpl_settings("coco", gamma=1.0)
    with pytest.raises(InputError, match="threshold"):
        vlpl_settings("coco", threshold=1.5)


def test_pseudo_labels_from_cosines():
    """s = softmax(cos / 0.01); every class above 0.3 positive; partial: the lowest int(partial K) negative."""
    cosines = np.array([[0.250, 0.245, 0.20, 0.10], [0.30, 0.10, 0.10, 0.10], [0.20, 0.20, 0.20, 0.20]])
    e = np.exp(cosines / 0.01)
    expected_s = e / e.sum(1, keepdims=True)
    s = clip_softmax(torch.tensor(cosines), 0.01)
    assert np.allclose(s.numpy(), expected_s, atol=1e-6)
    # row 0: s = 0.62, 0.38, 0.004, 0: two positives; row 1: one; row 2: 0.25 each, none above 0.3
    assert pseudo_labels(s).tolist() == [[1, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0]]
    # int(0.5 * 4) = 2 negatives per image, ties broken by class order (row 1: classes 1 and 2, not 3)
    assert pseudo_labels(s, partial=0.5).tolist() == [[1, 1, -1, -1], [1, -1, -1, 0], [-1, -1, 0, 0]]
    assert pseudo_labels(torch.tensor([[0.3, 0.7]]), threshold=0.3).tolist() == [[0, 1]]  # strictly above
    with pytest.raises(InputError, match="partial"):
        pseudo_labels(s, partial=1.0)


def test_asymmetric_pseudo_labels_rounds():
    """Per class, the lowest predictions among still-unknown entries become soft negatives; earlier ones stay."""
    preds = torch.tensor([[0.9, 0.4], [0.1, 0.3], [0.2, 0.05], [0.15, 0.6], [0.5, 0.2]])
    observed = torch.tensor([[1, 0], [0, 0], [0, 1], [0, 0], [0, 0]])
    settings = vlpl_settings("voc", epochs=3, apl_warmup=1)
    counts = apl_counts(observed, settings)
    assert counts.tolist() == [1, 1]  # int(0.9 * 4 / 2) per class
    soft = asymmetric_pseudo_labels(preds, observed, torch.full((5, 2), NAN), counts)
    assert torch.equal(soft.isnan(), torch.tensor([[1, 1], [0, 1], [1, 1], [1, 1], [1, 0]], dtype=torch.bool))
    assert soft[1, 0] == pytest.approx(0.1) and soft[4, 1] == pytest.approx(0.2)  # class 1: 0.05 is observed
    later = asymmetric_pseudo_labels(torch.full((5, 2), 0.01), observed, soft, counts)  # next round, all tied
    assert later[1, 0] == pytest.approx(0.1) and later[4, 1] == pytest.approx(0.2)  # the earlier targets stay
    assert later[2, 0] == pytest.approx(0.01) and later[0, 1] == pytest.approx(0.01)  # ties: the first unknown row
    assert int((~later.isnan()).sum()) == 4
    assert [apl_due(e, settings) for e in (0, 1, 2, 3)] == [False, True, True, True]


def brute_force_ap(scores: np.ndarray, positives: np.ndarray) -> float:
    """AP as the mean over positives of the precision of "score >= that positive's score" (ties counted whole)."""
    precisions = [np.sum(positives & (scores >= s)) / np.sum(scores >= s) for s in scores[positives]]
    return float(np.mean(precisions))


def test_map_against_an_independent_definition():
    rng = np.random.default_rng(7)
    scores = rng.integers(0, 6, size=(40, 5)) / 5  # few distinct values: many ties
    labels = (rng.random((40, 5)) < 0.3).astype(int)
    labels[:, 4] = 0  # a class with no positive
    expected = [brute_force_ap(scores[:, k], labels[:, k] == 1) for k in range(4)]
    assert mean_average_precision(scores, labels) == pytest.approx(np.mean(expected), rel=1e-12)
    assert mean_average_precision(scores, labels, empty="zero") == pytest.approx(np.sum(expected) / 5, rel=1e-12)
    assert math.isnan(average_precision(scores[:, 4], labels[:, 4] == 1))
    hand = average_precision(np.array([0.9, 0.8, 0.7, 0.1]), np.array([1, 0, 1, 0]))
    assert hand == pytest.approx((1 / 1 + 2 / 3) / 2)
    with pytest.raises(InputError, match="no class has a positive"):
        mean_average_precision(scores[:, 4:], labels[:, 4:])
    with pytest.raises(InputError, match="NaN"):
        mean_average_precision(np.full((2, 2), np.nan), np.eye(2))


def test_map_equals_scikit_learn():
    """The reference calls sklearn.metrics.average_precision_score per class (scikit-learn, when installed)."""
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(3)
    scores = np.round(rng.random((60, 6)), 1)
    labels = (rng.random((60, 6)) < 0.25).astype(int)
    labels[0] = 1  # every class has a positive
    expected = np.mean([metrics.average_precision_score(labels[:, k], scores[:, k]) for k in range(6)])
    assert mean_average_precision(scores, labels) == pytest.approx(expected, rel=1e-12)
