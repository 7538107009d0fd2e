"""Each CL loss against an independent numpy expression of its formula (cll-benchmark.md), on a batch of 3 rows."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from aclbuild.bench.strategies import STRATEGIES, build_strategy
from aclbuild.errors import UnknownNameError

F = np.array([[1.0, 0.0, -1.0], [0.5, 2.0, 0.0], [0.0, 0.0, 0.3]])
CL = np.array([2, 0, 1])
T = np.array([[0.0, 0.6, 0.4], [0.3, 0.0, 0.7], [0.5, 0.5, 0.0]])
COUNTS = np.array([5.0, 3.0, 4.0])
K = 3
ROWS = np.arange(3)


def softmax(x):
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


P = softmax(F)
UNIFORM = (np.ones((K, K)) - np.eye(K)) / (K - 1)


def loss_of(name: str, target=None, logits=F) -> float:
    strategy = build_strategy(name, torch.tensor(T), torch.tensor(COUNTS))
    target = torch.tensor(CL) if target is None else torch.as_tensor(target)
    return float(strategy(torch.tensor(logits, dtype=torch.float32), target).detach())


def ure_risks(matrix, logits=F):
    t_inv = np.linalg.inv(matrix)
    prob = softmax(logits)
    risks = np.zeros(K)
    for j in range(K):
        rows = CL == j
        if rows.any():
            risks[j] = COUNTS[j] * np.mean([(t_inv[j] * -np.log(prob[i])).sum() for i in ROWS[rows]])
    return risks


def sigmoid(x):
    return 1 / (1 + np.exp(-x))


EXPECTED = {
    "SCL-NL": np.mean(-np.log(1 - P[ROWS, CL] + 1e-6)),
    "SCL-EXP": np.mean(np.exp(P[ROWS, CL])),
    "FWD": np.mean(-np.log((P @ T)[ROWS, CL] + 1e-6)),
    "CPE-F": np.mean(-np.log((P @ T)[ROWS, CL] + 1e-6)),
    "CPE-T": np.mean(-np.log((P @ T)[ROWS, CL] + 1e-6)),  # W = log T starts T~ at T exactly (zeros included)
    "CPE-I": np.mean(-np.log(P[ROWS, CL])),  # no epsilon, as libcll
    "DM": np.mean(-(1 + (1 - P[ROWS, CL]) / (K - 1)) * np.log((softmax(1 - P) + 1e-6)[ROWS, CL])),
    "PC": np.mean([sum(sigmoid(F[i, CL[i]] - F[i, k]) for k in range(K) if k != CL[i]) for i in ROWS]),
    "URE-NN": ure_risks(UNIFORM).clip(min=0).sum(),
    "URE-TNN": ure_risks(T).clip(min=0).sum(),
}


def op_expected() -> float:
    q1 = softmax(F) + 1e-18
    q2 = softmax(-F) + 1e-18
    w = q1 * softmax(1 / q2 + 1) + 1e-6
    return float(np.mean(-w[ROWS, CL] * np.log(q2[ROWS, CL])))


def scarce_expected() -> float:
    c = (K - 1) / K
    total = 0.0
    for k in range(K):
        rows = CL == k
        n = max(rows.sum(), 1)
        neg = -np.log(sigmoid(-F[:, k]))
        pos = -np.log(sigmoid(F[:, k]))
        total += c * neg[rows].sum() / n + abs(pos.mean() - c * pos[rows].sum() / n)
    return total


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_loss_matches_formula(name):
    assert loss_of(name) == pytest.approx(EXPECTED[name], rel=1e-5)


def test_op_and_scarce_match_formula():
    assert loss_of("OP") == pytest.approx(op_expected(), rel=1e-5)
    assert loss_of("SCARCE") == pytest.approx(scarce_expected(), rel=1e-5)


@pytest.mark.parametrize("name", ["URE-NN", "URE-GA"])
def test_ure_uniform_core_is_sum_minus_k_minus_one_times_cl_loss(name):
    # cll-benchmark.md: with uniform T, sum_k Tinv[j, k] l_k = sum_k l_k - (K - 1) l_j, whatever T the data has.
    ell = -np.log(P)
    direct = ell.sum(1) - (K - 1) * ell[ROWS, CL]  # no inverse taken
    expected = [COUNTS[j] * direct[CL == j].mean() for j in range(K)]  # every class is some row's CL here
    strategy = build_strategy(name, torch.tensor(T), torch.tensor(COUNTS)).double()
    risks = strategy.class_risks(torch.tensor(F), torch.tensor(CL))
    np.testing.assert_allclose(risks.detach().numpy(), expected, rtol=1e-10)


# Logits that push each row's CL far down and spread the rest evenly (overfitting the CLs): the unbiased risk
# sum_k l_k - (K - 1) l_ybar goes negative.
OFF_CL = np.array([[1.0, 1.0, -4.0], [-4.0, 1.0, 1.0], [1.0, -4.0, 1.0]])


@pytest.mark.parametrize("name,matrix", [("URE-GA", UNIFORM), ("URE-TGA", T)])
def test_ure_ga_ascends_on_negative_risks(name, matrix):
    risks = ure_risks(matrix, OFF_CL)
    assert (risks < 0).any(), "the batch must exercise the gradient-ascent branch"
    assert loss_of(name, logits=OFF_CL) == pytest.approx(-risks[risks < 0].sum(), rel=1e-5)
    nn_name = name.replace("GA", "NN")
    assert loss_of(nn_name, logits=OFF_CL) == pytest.approx(risks.clip(min=0).sum(), rel=1e-5)
    # Even logits: every l_k is log K and the rows of Tinv sum to 1, so each class risk is pi_j log K >= 0 and GA is
    # the plain sum, the same as NN.
    even = np.zeros((3, K))
    assert loss_of(name, logits=even) == pytest.approx(COUNTS.sum() * np.log(K), rel=1e-5)
    assert loss_of(nn_name, logits=even) == pytest.approx(COUNTS.sum() * np.log(K), rel=1e-5)


@pytest.mark.parametrize("name", ["URE-GA", "URE-TGA"])
@pytest.mark.parametrize("logits", [F, OFF_CL], ids=["sum-branch", "ascent-branch"])
def test_ure_ga_gradient(name, logits):
    strategy = build_strategy(name, torch.tensor(T), torch.tensor(COUNTS)).double()
    cl = torch.tensor(CL)
    assert torch.autograd.gradcheck(lambda f: strategy(f, cl), (torch.tensor(logits, requires_grad=True),))
    # In the ascent branch the gradient is minus that of the negative risks, computed here independently.
    f = torch.tensor(logits, requires_grad=True)
    strategy(f, cl).backward()
    g = torch.tensor(logits, requires_grad=True)
    risks = strategy.class_risks(g, cl)
    expected = -risks[risks < 0].sum() if (risks < 0).any() else risks.sum()
    expected.backward()
    torch.testing.assert_close(f.grad, g.grad)


def test_cpe_t_gradient_reaches_the_trainable_matrix():
    strategy = build_strategy("CPE-T", torch.tensor(T), torch.tensor(COUNTS)).double()
    cl = torch.tensor(CL)

    def independent(f, w):  # -log((p softmax(W))_ybar + 1e-6), written out again
        return -torch.log((f.softmax(1) @ w.softmax(1)).gather(1, cl[:, None]).squeeze(1) + 1e-6).mean()

    logits = torch.tensor(F, requires_grad=True)
    weight = strategy.W.detach().clone().requires_grad_(True)
    assert torch.autograd.gradcheck(independent, (logits, weight))
    strategy(logits, cl).backward()
    independent(logits.detach(), weight).backward()
    torch.testing.assert_close(strategy.W.grad, weight.grad)
    assert strategy.W.grad.abs().sum() > 0


def test_cpe_t_matrix_is_trainable_and_starts_at_t():
    strategy = build_strategy("CPE-T", torch.tensor(T), torch.tensor(COUNTS))
    assert [n for n, _ in strategy.named_parameters()] == ["W"]
    np.testing.assert_allclose(strategy.transition().detach().numpy(), T, atol=1e-5)


def test_mcl_losses_on_cl_sets():
    cl_set = np.zeros((3, K))
    cl_set[ROWS, CL] = 1
    cl_set[0, 1] = 1  # image 0 has two CLs
    s = (P * (1 - cl_set)).sum(1)
    size = cl_set.sum(1)
    for name, per_image in (("MCL-MAE", 1 - s), ("MCL-EXP", np.exp(-s)), ("MCL-LOG", -np.log(s))):
        expected = ((2 * K - 2) * per_image / size).sum()
        assert loss_of(name, torch.tensor(cl_set, dtype=torch.float32)) == pytest.approx(expected, rel=1e-5)


def test_vlpl_family_losses():
    states = np.array([[0, 1, -1], [-1, 0, 1], [0, -1, 0]])
    p = sigmoid(F)
    neg, pos = -np.log(1 - p), -np.log(p)
    entropy = -(p * np.log(p) + (1 - p) * np.log(1 - p))
    alpha = 0.1
    expected = {
        "EM-PL": np.where(states < 0, neg, np.where(states > 0, 0.7 * (0.9 * pos + 0.1 * neg), -alpha * entropy)),
        "EM": np.where(states < 0, neg, -alpha * entropy),
        "AN": np.where(states > 0, pos, neg),
    }
    for name, table in expected.items():
        assert loss_of(name, torch.tensor(states)) == pytest.approx(table.sum(1).mean(), rel=1e-5)
    # --vlpl-alpha: the entropy weight is the one given (EM at alpha 0.5: CLs negative, -0.5 H elsewhere).
    em = build_strategy("EM", torch.tensor(T), torch.tensor(COUNTS), vlpl_alpha=0.5).double()
    loss = em(torch.tensor(F, dtype=torch.float64), torch.tensor(states))
    assert float(loss) == pytest.approx(np.where(states < 0, neg, -0.5 * entropy).sum(1).mean(), rel=1e-9)


def test_ord_is_cross_entropy():
    y = np.array([0, 1, 2])
    assert loss_of("Ord", torch.tensor(y)) == pytest.approx(np.mean(-np.log(P[ROWS, y])), rel=1e-5)


def test_cpe_predicts_nearest_transition_row():
    strategy = build_strategy("CPE-F", torch.tensor(T), torch.tensor(COUNTS))
    # A one-hot p on class y gives pT = T[y], whose nearest row is T[y] itself.
    logits = torch.eye(K) * 50
    assert strategy.predict(logits).tolist() == [0, 1, 2]
    assert build_strategy("FWD", torch.tensor(T), torch.tensor(COUNTS)).predict(torch.tensor(F)).tolist() == [0, 1, 2]


def test_registry_names_and_unknown_name():
    expected = {
        "SCL-NL", "SCL-EXP", "FWD", "URE-NN", "URE-GA", "URE-TNN", "URE-TGA", "DM", "CPE-I", "CPE-F", "CPE-T",
        "MCL-MAE", "MCL-EXP", "MCL-LOG", "PC", "OP", "SCARCE", "Ord", "AN", "EM", "EM-PL",
    }  # fmt: skip
    assert set(STRATEGIES) == expected
    assert build_strategy("scl-nl", torch.tensor(T), torch.tensor(COUNTS)).name == "SCL-NL"
    with pytest.raises(UnknownNameError):
        build_strategy("NOPE", torch.tensor(T), torch.tensor(COUNTS))
