"""VLPL in its own setting (single-positive multi-label, issue 16 §2): hyper-parameters, CLIP pseudo-labels, APL.

Facts from VLPL's code (github.com/mvrl/VLPL, ``main_clip.py``, ``models.py``) and, for EM_APL, from the code it
takes that loss from (github.com/Correr-Zhou/SPML-AckTheUnknown, ``main.py``):

- Pseudo-labels: s = softmax over classes of cosine(image, text) / temperature (0.01); every class with
  s > threshold (0.3) is a positive pseudo-label (1), not only the top one; with ``partial`` > 0 the
  int(partial * K) lowest-scoring classes of each image are negative pseudo-labels (-1); the rest 0.
- Hyper-parameters per dataset: alpha (entropy weight on unknowns) 0.2 VOC, 0.1 COCO and NUS-WIDE, 0.01 CUB;
  the positive pseudo-label's weight beta_pos 0.7 and its target 0.9 (0.9 (-log p) + 0.1 (-log(1 - p))) on all
  four; Adam, lr 1e-5 (CUB 1e-4), batch 8, 10 epochs.
- EM_APL (asymmetric pseudo-labelling, Zhou et al. 2022): from epoch ``apl_warmup`` on, after each training
  epoch, the apl_proportion / (epochs - apl_warmup) share of each class's unknowns with the lowest predictions
  become soft negatives whose target is that prediction; weight apl_beta. VLPL's copy never makes them (the call
  is commented out) and has no beta (KeyError 'beta'); the values here are Zhou et al.'s, whose EM+APL row VLPL's
  table quotes: apl_beta 0.02 / 0.9 / 0.2 / 0.4 and warm-up 5 / 5 / 4 / 3 epochs (VOC / COCO / NUS / CUB).

Example:
    >>> settings = vlpl_settings("pascal", alpha=0.3)
    >>> settings.alpha, settings.beta_pos, settings.lr
    (0.3, 0.7, 1e-05)
    >>> pseudo_labels(torch.tensor([[0.5, 0.4, 0.1], [0.2, 0.2, 0.6]])).tolist()
    [[1, 1, 0], [0, 0, 1]]
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import torch
from torch import Tensor

from aclbuild.errors import InputError, UnknownNameError


@dataclass(frozen=True)
class VlplSettings:
    """VLPL's hyper-parameters of one dataset (see the module docstring for where each comes from)."""

    alpha: float  # weight of the entropy term -alpha H(p) on unknown labels (EM, EM_PL, EM_APL)
    apl_beta: float  # weight of EM_APL's soft negative pseudo-labels
    apl_warmup: int  # EM_APL: the first epoch after which soft negatives are drawn
    beta_pos: float = 0.7  # weight of a positive pseudo-label (EM_PL)
    pseudo_target: float = 0.9  # a positive pseudo-label's target: 0.9 (-log p) + 0.1 (-log(1 - p))
    beta_neg: float = 0.0  # weight of a negative pseudo-label (0 in every VLPL run: they cost nothing)
    threshold: float = 0.3  # s above which a class is a positive pseudo-label
    temperature: float = 0.01  # of the softmax over classes of the CLIP cosines
    partial: float = 0.0  # share of the classes made negative pseudo-labels (the lowest s of each image)
    apl_proportion: float = 0.9  # share of each class's unknowns EM_APL turns into soft negatives in all
    lr: float = 1e-5
    batch_size: int = 8
    epochs: int = 10

    def __post_init__(self) -> None:
        for name in ("alpha", "apl_beta", "beta_pos", "beta_neg"):
            if not getattr(self, name) >= 0:
                raise InputError(f"VLPL's {name} must be 0 or more, got {getattr(self, name)}")
        for name in ("threshold", "pseudo_target", "apl_proportion"):
            if not 0 <= getattr(self, name) <= 1:
                raise InputError(f"VLPL's {name} must lie in [0, 1], got {getattr(self, name)}")
        if not 0 <= self.partial < 1:
            raise InputError(f"VLPL's partial (share of negative pseudo-labels) must lie in [0, 1), got {self.partial}")
        if not self.temperature > 0 or not self.lr > 0:
            raise InputError(f"VLPL's temperature and lr must be above 0, got {self.temperature} and {self.lr}")
        if self.batch_size < 1 or self.epochs < 1 or not 0 <= self.apl_warmup < self.epochs:
            raise InputError(
                f"VLPL needs batch_size and epochs of 1 or more and 0 <= apl_warmup < epochs, got batch_size "
                f"{self.batch_size}, epochs {self.epochs}, apl_warmup {self.apl_warmup}"
            )


VLPL_DEFAULTS: dict[str, VlplSettings] = {
    "voc2012-spml": VlplSettings(alpha=0.2, apl_beta=0.02, apl_warmup=5),
    "coco2014-spml": VlplSettings(alpha=0.1, apl_beta=0.9, apl_warmup=5),
    "nuswide-spml": VlplSettings(alpha=0.1, apl_beta=0.2, apl_warmup=4),
    "cub-spml": VlplSettings(alpha=0.01, apl_beta=0.4, apl_warmup=3, lr=1e-4),
}
DATASET_ALIASES = {"pascal": "voc2012-spml", "voc": "voc2012-spml", "coco": "coco2014-spml",
                   "nuswide": "nuswide-spml", "nus": "nuswide-spml", "cub": "cub-spml"}  # fmt: skip  # VLPL's -d


def vlpl_settings(dataset: str, **overrides) -> VlplSettings:
    """VLPL's settings of ``dataset`` (voc2012-spml, ..., or VLPL's own -d names), with ``overrides`` applied.

    An override of None keeps the default, so command-line options that were not given can be passed as they are.

    Example:
        >>> vlpl_settings("CUB").alpha, vlpl_settings("cub-spml", lr=None).lr, vlpl_settings("coco").apl_beta
        (0.01, 0.0001, 0.9)
    """
    key = dataset.lower()
    key = DATASET_ALIASES.get(key, key)
    if key not in VLPL_DEFAULTS:
        names = ", ".join([*VLPL_DEFAULTS, *DATASET_ALIASES])
        raise UnknownNameError(f"no VLPL settings for dataset {dataset!r}; choose one of: {names}")
    known = {f.name for f in fields(VlplSettings)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise InputError(f"unknown VLPL setting(s) {', '.join(unknown)}; choose from: {', '.join(sorted(known))}")
    return replace(VLPL_DEFAULTS[key], **{name: value for name, value in overrides.items() if value is not None})


def _matrix(values, what: str) -> Tensor:
    """``values`` as a float 2-D tensor of finite numbers, or an InputError naming ``what``."""
    matrix = torch.as_tensor(values).float()
    if matrix.dim() != 2 or not torch.isfinite(matrix).all():
        raise InputError(f"{what} must be a finite N x K matrix, got shape {tuple(matrix.shape)}")
    return matrix


def clip_softmax(cosines, temperature: float = 0.01) -> Tensor:
    """s = softmax over classes of cosine / temperature, from N x K cosines of image and class-text features.

    Example:
        >>> [round(s, 3) for s in clip_softmax(torch.tensor([[0.30, 0.29, 0.20]]))[0].tolist()]  # e / (1 + e), ...
        [0.731, 0.269, 0.0]
    """
    if not temperature > 0:
        raise InputError(f"the CLIP temperature must be above 0, got {temperature}")
    return (_matrix(cosines, "the CLIP cosines") / temperature).softmax(dim=1)


def pseudo_labels(scores, threshold: float = 0.3, partial: float = 0.0) -> Tensor:
    """N x K int8 pseudo-labels of N x K CLIP scores s: 1 where s > threshold, -1 on negatives, 0 elsewhere.

    With ``partial`` > 0, the int(partial * K) lowest-scoring classes of each image are negatives (ties by class
    order); a class above the threshold stays positive (VLPL's scatter would overwrite it, possible only when
    partial * K reaches a positive class).

    Example:
        >>> pseudo_labels(torch.tensor([[0.55, 0.35, 0.06, 0.04], [0.25, 0.25, 0.25, 0.25]]), partial=0.5).tolist()
        [[1, 1, -1, -1], [-1, -1, 0, 0]]
    """
    scores = _matrix(scores, "the CLIP scores")
    if not 0 <= threshold < 1 or not 0 <= partial < 1:
        raise InputError(f"threshold and partial must lie in [0, 1), got {threshold} and {partial}")
    labels = (scores > threshold).to(torch.int8)
    lowest = torch.argsort(scores, dim=1, stable=True)[:, : int(partial * scores.shape[1])]
    negative = torch.zeros_like(labels, dtype=torch.bool).scatter_(1, lowest, True) & (labels == 0)
    return labels.masked_fill(negative, -1)


def apl_counts(observed: Tensor, settings: VlplSettings) -> Tensor:
    """EM_APL's soft negatives per class and round: int(apl_proportion * unknowns_k / (epochs - apl_warmup)).

    ``observed`` is the initial N x K observed-label matrix (0 = unknown), as Zhou et al. count it once.

    Example:
        >>> observed = torch.tensor([[1, 0], [0, 0], [0, 1], [0, 0]] * 5)
        >>> apl_counts(observed, vlpl_settings("cub", epochs=4, apl_warmup=1)).tolist()   # 0.9 * 15 / 3, 0.9 * 15 / 3
        [4, 4]
    """
    unknown = (torch.as_tensor(observed) == 0).sum(dim=0).double()
    return (settings.apl_proportion * unknown / (settings.epochs - settings.apl_warmup)).floor().long()


def apl_due(epoch: int, settings: VlplSettings) -> bool:
    """Whether soft negatives are drawn after training epoch ``epoch`` (1-based): from apl_warmup on."""
    return epoch >= settings.apl_warmup


def asymmetric_pseudo_labels(preds: Tensor, observed: Tensor, soft_negatives: Tensor, counts: Tensor) -> Tensor:
    """One APL round: a new N x K soft-negative matrix (NaN = none) with up to counts[k] more per class k.

    Among the entries that are still unknown (observed 0, no soft negative yet), the counts[k] with the lowest
    predicted probability ``preds`` in class k get that probability as their soft target (ties by row order);
    soft negatives drawn before keep their targets.

    Example:
        >>> preds = torch.tensor([[0.9, 0.25], [0.5, 0.75], [0.125, 0.5]])
        >>> observed = torch.tensor([[1, 0], [0, 0], [0, 1]])
        >>> asymmetric_pseudo_labels(preds, observed, torch.full((3, 2), float("nan")), torch.tensor([1, 1])).tolist()
        [[nan, 0.25], [nan, nan], [0.125, nan]]
    """
    preds = _matrix(preds, "the predictions")
    soft = torch.as_tensor(soft_negatives).float()
    if soft.shape != preds.shape or torch.as_tensor(observed).shape != preds.shape:
        raise InputError(f"predictions, observed labels and soft negatives differ in shape: {tuple(preds.shape)}, "
                         f"{tuple(torch.as_tensor(observed).shape)}, {tuple(soft.shape)}")  # fmt: skip
    candidate = (torch.as_tensor(observed) == 0) & soft.isnan()
    order = torch.argsort(preds.masked_fill(~candidate, torch.inf), dim=0, stable=True)
    rank = torch.empty_like(order).scatter_(0, order, torch.arange(len(preds))[:, None].expand_as(order))
    chosen = candidate & (rank < torch.as_tensor(counts).view(1, -1))
    return torch.where(chosen, preds, soft)
