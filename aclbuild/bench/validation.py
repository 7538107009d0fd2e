"""Validation and test scores of a model: true-label accuracy, or a CL-only risk (URE, SCEL; lower is better).

The CL-only risks need a transition matrix, and ``rule`` says which:

- ``empirical`` (the default): the fixed empirical T of the training part for every strategy, so every strategy is
  scored by the same yardstick.
- ``strategy``: the matrix each strategy trains with, as libcll computes them: uniform for URE-NN and URE-GA, the
  learned T~ for CPE-T, none for CPE-I (SCEL is then -log p_ybar, without the 1e-6), the empirical T otherwise;
  URE validation is refused for the CPE family, as libcll refuses it.

URE risk: mean over the pairs of sum_k Tinv[ybar, k] (-log p_k); SCEL: mean of -log((pT)_ybar + 1e-6). Both are
exact means over every validation pair (libcll averages per-batch means, which weighs the last batch more).

Example:
    >>> from aclbuild.bench.strategies import build_strategy
    >>> fwd = build_strategy("FWD", torch.full((2, 2), 0.5), torch.ones(2))
    >>> round(cl_risk("scel", "empirical", fwd, torch.zeros(1, 2), torch.tensor([0])), 4)   # -log(0.5 + 1e-6)
    0.6931
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from aclbuild.bench.strategies import CPE, CPEI, CPET, URE, Strategy
from aclbuild.cl_data import ClData
from aclbuild.errors import InputError

VALID_TYPES = ("accuracy", "ure", "scel")
VALID_RULES = ("empirical", "strategy")
EPS = 1e-6


def check_valid_rule(strategy_name: str, valid_type: str, rule: str) -> None:
    """Raise InputError for an unknown rule, or for URE validation of a CPE strategy under the strategy rule."""
    from aclbuild.bench.strategies import strategy_class

    if rule not in VALID_RULES:
        raise InputError(f"--valid-rule must be one of {', '.join(VALID_RULES)}, got {rule!r}")
    if rule == "strategy" and valid_type == "ure" and issubclass(strategy_class(strategy_name), CPE):
        raise InputError(
            f"{strategy_name}: libcll defines no URE validation for CPE; use --valid-type scel or accuracy, "
            "or --valid-rule empirical"
        )


def risk_matrix(strategy: Strategy, rule: str) -> Tensor | None:
    """The K x K matrix the CL-only risk of ``strategy`` uses under ``rule`` (None: p itself, CPE-I's)."""
    if rule == "empirical":
        return strategy.T
    if isinstance(strategy, URE) and strategy.uniform:
        k = strategy.num_classes
        return (torch.ones(k, k, device=strategy.T.device) - torch.eye(k, device=strategy.T.device)) / (k - 1)
    if isinstance(strategy, CPET):
        return strategy.transition().detach()
    if isinstance(strategy, CPEI):
        return None
    return strategy.T


def cl_risk(kind: str, rule: str, strategy: Strategy, logits: Tensor, cl: Tensor) -> float:
    """The ``ure`` or ``scel`` risk of ``logits`` (one row per pair) against their CLs ``cl``, under ``rule``."""
    matrix = risk_matrix(strategy, rule)
    if kind == "ure":
        if matrix is None:
            raise InputError("libcll defines no URE validation for CPE-I; use --valid-type scel or accuracy")
        t_inv = torch.linalg.pinv(matrix.double()).float()  # the inverse when T is regular
        return float((-F.log_softmax(logits, 1) * t_inv[cl]).sum(1).mean())
    if matrix is None:  # CPE-I under libcll's rule: -log p_ybar, no epsilon
        return float(-F.log_softmax(logits, 1).gather(1, cl[:, None]).mean())
    cl_prob = (logits.softmax(1) @ matrix).gather(1, cl[:, None]).squeeze(1)
    return float(-torch.log(cl_prob + EPS).mean())


@torch.no_grad()
def evaluate(model, strategy: Strategy, data: ClData, normalise, device, kind: str, rule: str, autocast) -> float:
    """Accuracy (higher is better) or the URE / SCEL risk on the CL pairs (lower is better) of ``data``.

    ``normalise`` turns a uint8 batch into the model's float input (no augmentation); images go in chunks of 1024.
    """
    model.eval()
    images = data.images if data.images.shape[1] == 3 else data.images.permute(0, 3, 1, 2)
    logits = []
    for start in range(0, len(images), 1024):
        with autocast():
            logits.append(model(normalise(images[start : start + 1024].to(device))).float())
    logits = torch.cat(logits) if logits else torch.zeros(0, strategy.num_classes, device=device)
    model.train()
    if kind == "accuracy":
        return float((strategy.predict(logits).cpu() == data.ord_labels).double().mean())
    return cl_risk(kind, rule, strategy, logits[data.pair_image.to(device)], data.pair_cl.to(device))
