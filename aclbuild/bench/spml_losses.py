"""VLPL's single-positive multi-label losses, one small class each, named as VLPL's CLI spells them.

Every loss takes the logits f (B x K; p = sigmoid(f)) and the observed labels (B x K: 1 the observed positive,
0 unknown, -1 an observed negative, which SPML data never has) and returns the mean over all B x K entries of a
per-entry loss, as VLPL's ``compute_batch_loss`` (sum / (B K)). With pos = -log p and neg = -log(1 - p):

- ``bce``: y pos + (1 - y) neg on the full labels y (the upper bound; ``labels``);
- ``iun``: pos on observed positives, neg on true negatives (y = 0), nothing on unobserved positives (``labels``);
- ``an`` (assume negative): pos on the observed positive, neg on every other class;
- ``EM``: pos on the observed positive, -alpha H(p) (entropy maximisation) on unknowns;
- ``EM_APL``: EM, and on a soft negative with target t (``soft_negatives``, NaN = none; spml.py draws them):
  apl_beta [t pos + (1 - t) neg] instead of the entropy;
- ``EM_PL`` (VLPL): EM, and on a positive pseudo-label (``pseudo`` = 1) beta_pos [0.9 pos + 0.1 neg], on a
  negative one (-1) beta_neg [0.1 pos + 0.9 neg] (beta_neg 0 in VLPL's runs: they cost nothing).

Differences from VLPL's code, each on purpose: pos and neg are exact (log-sigmoid; VLPL's log(p + 1e-5) differs by
under 1e-5 until p saturates, where it caps the loss at 11.5 and stops the gradient); an observed -1 is a known
negative in every loss (VLPL's ``an`` and ``EM`` assert on it, its EM_PL gives it no loss, its EM_APL scores it
as a positive); EM_APL gets its soft negatives and beta (VLPL's raises KeyError 'beta' and would equal EM).

Example:
    >>> em_pl = build_loss("EM-PL", vlpl_settings("voc2012-spml"))
    >>> loss = em_pl(torch.zeros(1, 2), torch.tensor([[1, 0]]), pseudo=torch.tensor([[0, 1]]))
    >>> em_pl.name, round(float(loss), 4)   # (log 2 + 0.7 log 2) / 2
    ('EM_PL', 0.5892)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from aclbuild.bench.spml import VlplSettings, vlpl_settings
from aclbuild.errors import InputError, UnknownNameError

__all__ = ["LOSSES", "SpmlLoss", "build_loss", "loss_class", "vlpl_settings"]


def positive_nll(logits: Tensor) -> Tensor:
    """-log p, p = sigmoid(f), finite for any f."""
    return -F.logsigmoid(logits)


def negative_nll(logits: Tensor) -> Tensor:
    """-log(1 - p)."""
    return -F.logsigmoid(-logits)


def entropy(logits: Tensor) -> Tensor:
    """H(p) = p (-log p) + (1 - p) (-log(1 - p)), in nats."""
    p = torch.sigmoid(logits)
    return p * positive_nll(logits) + (1 - p) * negative_nll(logits)


def _same_shape(logits: Tensor, matrix: Tensor | None, what: str, allowed: tuple[int, ...] | None) -> Tensor:
    """``matrix`` checked against the logits' shape and, unless None, the values in ``allowed``."""
    matrix = torch.as_tensor(matrix, device=logits.device)
    if matrix.shape != logits.shape:
        raise InputError(f"the {what} are {tuple(matrix.shape)}, the logits {tuple(logits.shape)}: give one per logit")
    if allowed is not None and not torch.isin(matrix, torch.tensor(allowed, device=matrix.device)).all():
        raise InputError(f"the {what} hold values other than {', '.join(map(str, allowed))}")
    return matrix


class SpmlLoss(nn.Module):
    """Base: ``forward`` checks the inputs and averages ``entries`` over every image and class.

    The value checks read the targets' values, which on a GPU waits for every queued step; a training loop checks its
    whole target matrices once and passes ``checked=True`` per step, so the CPU queues the next step meanwhile.
    """

    name = ""
    needs: tuple[str, ...] = ()  # besides the logits and observed labels: "labels", "pseudo", "soft_negatives"

    def __init__(self, settings: VlplSettings):
        super().__init__()
        self.settings = settings

    def entries(self, logits: Tensor, observed: Tensor, extra: dict[str, Tensor]) -> Tensor:
        raise NotImplementedError

    def forward(
        self, logits: Tensor, observed: Tensor, labels=None, pseudo=None, soft_negatives=None, checked: bool = False
    ) -> Tensor:  # fmt: skip
        if logits.dim() != 2:
            raise InputError(f"the logits must be B x K, got shape {tuple(logits.shape)}")
        given = {"labels": labels, "pseudo": pseudo, "soft_negatives": soft_negatives}
        missing = [name for name in self.needs if given[name] is None]
        if missing:
            raise InputError(f"the {self.name} loss needs {' and '.join(missing)}: pass {missing[0]}=...")
        allowed = {"labels": (0, 1), "pseudo": (-1, 0, 1), "soft_negatives": None, "observed labels": (-1, 0, 1)}
        if checked:  # shapes only: the values were checked before
            allowed = dict.fromkeys(allowed)
        extra = {name: _same_shape(logits, given[name], name.replace("_", " "), allowed[name]) for name in self.needs}
        soft = extra.get("soft_negatives")
        if soft is not None and not checked and ((soft < 0) | (soft > 1)).any():
            raise InputError("the soft negatives must be NaN (none) or targets in [0, 1]")
        observed = _same_shape(logits, observed, "observed labels", allowed["observed labels"])
        return self.entries(logits, observed, extra).mean()


class BCE(SpmlLoss):
    """bce: y (-log p) + (1 - y) (-log(1 - p)) on the full labels (the upper bound)."""

    name, needs = "bce", ("labels",)

    def entries(self, logits, observed, extra):
        y = extra["labels"].to(logits.dtype)
        return y * positive_nll(logits) + (1 - y) * negative_nll(logits)


class IUN(SpmlLoss):
    """iun: -log p on observed positives, -log(1 - p) on true negatives, 0 on unobserved positives."""

    name, needs = "iun", ("labels",)

    def entries(self, logits, observed, extra):
        negative = negative_nll(logits) * ((extra["labels"] == 0) | (observed < 0))
        return torch.where(observed > 0, positive_nll(logits), negative)


class AN(SpmlLoss):
    """an (assume negative): -log p on the observed positive, -log(1 - p) on every other class."""

    name = "an"

    def entries(self, logits, observed, extra):
        return torch.where(observed > 0, positive_nll(logits), negative_nll(logits))


class EM(SpmlLoss):
    """EM: -log p on the observed positive, -alpha H(p) on unknowns, -log(1 - p) on observed negatives."""

    name = "EM"

    def entries(self, logits, observed, extra):
        unknown = -self.settings.alpha * entropy(logits)
        known = torch.where(observed > 0, positive_nll(logits), negative_nll(logits))
        return torch.where(observed == 0, unknown, known)


class EMAPL(EM):
    """EM_APL: EM, and apl_beta [t (-log p) + (1 - t) (-log(1 - p))] on an unknown with soft negative target t."""

    name, needs = "EM_APL", ("soft_negatives",)

    def entries(self, logits, observed, extra):
        target = extra["soft_negatives"].to(logits.dtype)
        has_target = (observed == 0) & ~target.isnan()
        t = target.nan_to_num(0.0)
        soft = self.settings.apl_beta * (t * positive_nll(logits) + (1 - t) * negative_nll(logits))
        return torch.where(has_target, soft, super().entries(logits, observed, extra))


class EMPL(EM):
    """EM_PL (VLPL): EM, and beta_pos [0.9 (-log p) + 0.1 (-log(1 - p))] on an unknown with a positive pseudo-label.

    A negative pseudo-label costs beta_neg [0.1 (-log p) + 0.9 (-log(1 - p))] (VLPL: beta_neg 0).
    """

    name, needs = "EM_PL", ("pseudo",)

    def entries(self, logits, observed, extra):
        s = self.settings
        q = s.pseudo_target
        pseudo = torch.where(observed == 0, extra["pseudo"], torch.zeros_like(extra["pseudo"]))
        positive = s.beta_pos * (q * positive_nll(logits) + (1 - q) * negative_nll(logits))
        negative = s.beta_neg * ((1 - q) * positive_nll(logits) + q * negative_nll(logits))
        loss = torch.where(pseudo > 0, positive, super().entries(logits, observed, extra))
        return torch.where(pseudo < 0, negative, loss)


LOSSES: dict[str, type[SpmlLoss]] = {cls.name: cls for cls in (BCE, IUN, AN, EM, EMAPL, EMPL)}


def loss_class(name: str) -> type[SpmlLoss]:
    """The class of loss ``name``, as VLPL's CLI spells it (bce, iun, an, EM, EM_APL, EM_PL); case and hyphens free.

    Example:
        >>> loss_class("em-pl").name, loss_class("AN").name
        ('EM_PL', 'an')
    """
    by_key = {key.upper(): cls for key, cls in LOSSES.items()}
    try:
        return by_key[name.upper().replace("-", "_")]
    except KeyError:
        raise UnknownNameError(f"unknown SPML loss {name!r}; choose from: {', '.join(LOSSES)}") from None


def build_loss(name: str, settings: VlplSettings) -> SpmlLoss:
    """A ready loss with the hyper-parameters of ``settings`` (:func:`aclbuild.bench.spml.vlpl_settings`)."""
    return loss_class(name)(settings)
