"""Every complementary-label learning strategy, one small class each, readable next to its formula.

Formulas follow ../shared/reference/cll-benchmark.md: f are the logits (B x K), p = softmax(f), ybar a CL, T the
K x K transition matrix T[y, j] = P(ybar = j | y). A strategy is a ``torch.nn.Module`` (CPE-T trains a matrix) whose
``forward(logits, target)`` is the batch loss and ``predict(logits)`` the predicted classes. ``target`` depends on
the strategy's ``needs``:

- ``"cl"``: one CL per row (int64 B), each (image, CL) pair a row;
- ``"cl_set"``: a B x K multi-hot matrix of the image's CLs (MCL);
- ``"states"``: a B x K int matrix, -1 a CL (known negative), 1 the CLIP pseudo-positive, 0 unknown (VLPL family);
- ``"y"``: the true label (Ord, the upper bound).

Example:
    >>> T = torch.full((3, 3), 0.5).fill_diagonal_(0)
    >>> fwd = build_strategy("FWD", T, torch.tensor([4.0, 4.0, 4.0]))
    >>> loss = fwd(torch.zeros(2, 3), torch.tensor([0, 2]))
    >>> round(float(loss), 4)   # -log(1/3 + 1e-6)
    1.0986
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from aclbuild.errors import UnknownNameError

EPS = 1e-6


class Strategy(nn.Module):
    """Base: keeps T (fixed, a buffer) and the training CL counts per class; predicts argmax p."""

    name = ""
    needs = "cl"

    def __init__(self, transition: Tensor, cl_counts: Tensor):
        super().__init__()
        self.num_classes = transition.shape[0]
        self.register_buffer("T", transition.float().clone())
        self.register_buffer("cl_counts", cl_counts.float().clone())

    def predict(self, logits: Tensor) -> Tensor:
        return logits.argmax(dim=1)


def _pick(values: Tensor, index: Tensor) -> Tensor:
    """values[i, index[i]] for every row i."""
    return values.gather(1, index[:, None]).squeeze(1)


class Ord(Strategy):
    """Cross-entropy on the true label: the upper bound, needs ordinary labels."""

    name, needs = "Ord", "y"

    def forward(self, logits: Tensor, y: Tensor) -> Tensor:
        return F.cross_entropy(logits, y)


class SCLNL(Strategy):
    """SCL-NL: -log(1 - p_ybar + 1e-6)."""

    name = "SCL-NL"

    def forward(self, logits: Tensor, cl: Tensor) -> Tensor:
        return -torch.log(1 - _pick(logits.softmax(1), cl) + EPS).mean()


class SCLEXP(Strategy):
    """SCL-EXP: exp(p_ybar)."""

    name = "SCL-EXP"

    def forward(self, logits: Tensor, cl: Tensor) -> Tensor:
        return torch.exp(_pick(logits.softmax(1), cl)).mean()


class FWD(Strategy):
    """FWD: -log((pT)_ybar + 1e-6), T the empirical matrix; predicts argmax p."""

    name = "FWD"

    def forward(self, logits: Tensor, cl: Tensor) -> Tensor:
        return -torch.log(_pick(logits.softmax(1) @ self.T, cl) + EPS).mean()


class URE(Strategy):
    """Unbiased risk: L_j = pi_j * mean_{ybar=j} sum_k Tinv[j, k] (-log p_k), pi_j = training CL count of j.

    NN keeps the positive L_j; GA sums them all unless one is negative, then ascends on the negative ones.
    ``uniform`` forces T uniform (URE-NN, URE-GA); otherwise the empirical T (URE-TNN, URE-TGA).
    """

    gradient_ascent = False
    uniform = True

    def __init__(self, transition: Tensor, cl_counts: Tensor):
        super().__init__(transition, cl_counts)
        k = self.num_classes
        matrix = (torch.ones(k, k) - torch.eye(k)) / (k - 1) if self.uniform else self.T
        self.register_buffer("T_inv", torch.linalg.pinv(matrix.double()).float())  # pinv = inverse when regular

    def class_risks(self, logits: Tensor, cl: Tensor) -> Tensor:
        """L_j for every class j; zero for a class with no row in the batch."""
        row_risk = (-F.log_softmax(logits, 1) * self.T_inv[cl]).sum(1)  # sum_k Tinv[ybar, k] (-log p_k)
        sums = torch.zeros(self.num_classes, device=logits.device, dtype=row_risk.dtype).index_add(0, cl, row_risk)
        counts = torch.bincount(cl, minlength=self.num_classes).clamp_min(1)
        return self.cl_counts * sums / counts

    def forward(self, logits: Tensor, cl: Tensor) -> Tensor:
        risks = self.class_risks(logits, cl)
        if not self.gradient_ascent:
            return risks.clamp_min(0).sum()
        negative = risks < 0
        return -risks[negative].sum() if negative.any() else risks.sum()


class URENN(URE):
    name = "URE-NN"


class UREGA(URE):
    name, gradient_ascent = "URE-GA", True


class URETNN(URE):
    name, uniform = "URE-TNN", False


class URETGA(URE):
    name, uniform, gradient_ascent = "URE-TGA", False, True


class DM(Strategy):
    """DM: q = softmax(1 - p) + 1e-6; -(1 + (1 - p_ybar)/(K - 1)) log q_ybar."""

    name = "DM"

    def forward(self, logits: Tensor, cl: Tensor) -> Tensor:
        p = logits.softmax(1)
        q = (1 - p).softmax(1) + EPS
        weight = 1 + (1 - _pick(p, cl)) / (self.num_classes - 1)
        return -(weight * torch.log(_pick(q, cl))).mean()


class CPE(Strategy):
    """CPE: p read as the CL distribution through a transition; predicts argmin_k ||v - T_k||_1."""

    def transition(self) -> Tensor | None:
        return self.T

    def cl_distribution(self, logits: Tensor) -> Tensor:
        matrix = self.transition()
        p = logits.softmax(1)
        return p if matrix is None else p @ matrix

    def forward(self, logits: Tensor, cl: Tensor) -> Tensor:
        return -torch.log(_pick(self.cl_distribution(logits), cl) + EPS).mean()

    def predict(self, logits: Tensor) -> Tensor:
        matrix = self.transition()
        rows = self.T if matrix is None else matrix  # CPE-I decodes against the empirical T
        return torch.cdist(self.cl_distribution(logits).float(), rows.float(), p=1).argmin(dim=1)


class CPEI(CPE):
    """CPE-I: -log p_ybar (no epsilon, as libcll; log_softmax keeps it finite); decoding against the empirical T."""

    name = "CPE-I"

    def transition(self) -> Tensor | None:
        return None

    def forward(self, logits: Tensor, cl: Tensor) -> Tensor:
        return -_pick(F.log_softmax(logits, 1), cl).mean()


class CPEF(CPE):
    """CPE-F: -log((pT)_ybar + 1e-6), T fixed to the empirical matrix."""

    name = "CPE-F"


class CPET(CPE):
    """CPE-T: -log((p T~)_ybar + 1e-6), T~ = row-softmax(W), W trainable, initialised to log(T).

    As libcll (W = log T, so log 0 = -inf), an entry where T is 0 stays 0 in T~ however W trains: the diagonal of a
    noise-free T is held at zero. The zeros are kept by a mask rather than by -inf in W, so W and its Adam state
    stay finite; the loss and every gradient are libcll's.
    """

    name = "CPE-T"

    def __init__(self, transition: Tensor, cl_counts: Tensor):
        super().__init__(transition, cl_counts)
        support = self.T > 0
        self.register_buffer("support", support | ~support.any(1, keepdim=True))  # an all-zero row: all free
        self.W = nn.Parameter(torch.log(self.T.clamp_min(torch.finfo(torch.float32).tiny)))

    def transition(self) -> Tensor:
        return self.W.masked_fill(~self.support, -torch.inf).softmax(dim=1)


class MCL(Strategy):
    """MCL: s = sum_{k not in Ybar} p_k; loss = sum over the batch of (2K - 2) l(s) / |Ybar|."""

    needs = "cl_set"

    def per_image(self, s: Tensor) -> Tensor:
        raise NotImplementedError

    def forward(self, logits: Tensor, cl_set: Tensor) -> Tensor:
        s = (logits.softmax(1) * (1 - cl_set)).sum(1)
        size = cl_set.sum(1).clamp_min(1)
        return ((2 * self.num_classes - 2) * self.per_image(s) / size).sum()


class MCLMAE(MCL):
    name = "MCL-MAE"

    def per_image(self, s: Tensor) -> Tensor:
        return 1 - s


class MCLEXP(MCL):
    name = "MCL-EXP"

    def per_image(self, s: Tensor) -> Tensor:
        return torch.exp(-s)


class MCLLOG(MCL):
    name = "MCL-LOG"

    def per_image(self, s: Tensor) -> Tensor:
        return -torch.log(s.clamp_min(1e-12))  # clamp: s is 0 only when p sits on a CL, log would be -inf


class PC(Strategy):
    """PC: sum_{k != ybar} sigmoid(f_ybar - f_k)."""

    name = "PC"

    def forward(self, logits: Tensor, cl: Tensor) -> Tensor:
        margins = torch.sigmoid(_pick(logits, cl)[:, None] - logits)  # the k = ybar term is sigmoid(0) = 1/2
        return (margins.sum(1) - 0.5).mean()


class OP(Strategy):
    """OP: Q1 = softmax(f), Q2 = softmax(-f) (+1e-18); w = Q1 softmax(1/Q2 + 1) + 1e-6; -w_ybar log Q2_ybar."""

    name = "OP"

    def forward(self, logits: Tensor, cl: Tensor) -> Tensor:
        q1 = logits.float().softmax(1) + 1e-18
        q2 = (-logits.float()).softmax(1) + 1e-18
        w = q1 * (1 / q2 + 1).softmax(1) + EPS
        return -(_pick(w, cl) * torch.log(_pick(q2, cl))).mean()


class SCARCE(Strategy):
    """SCARCE: sum_k c E_{ybar=k}[-log s(-f_k)] + sum_k |E_all[-log s(f_k)] - c E_{ybar=k}[-log s(f_k)]|."""

    name = "SCARCE"

    def forward(self, logits: Tensor, cl: Tensor) -> Tensor:
        k = self.num_classes
        c = (k - 1) / k
        is_cl = F.one_hot(cl, k).to(logits.dtype)  # B x K, row i marks ybar_i
        n = is_cl.sum(0).clamp_min(1)
        neg_loss = -F.logsigmoid(-logits)  # -log sigmoid(-f_k): class k treated as negative
        pos_loss = -F.logsigmoid(logits)  # -log sigmoid(f_k): class k treated as positive
        on_cls = c * (is_cl * neg_loss).sum(0) / n
        corrected = pos_loss.mean(0) - c * (is_cl * pos_loss).sum(0) / n
        return on_cls.sum() + corrected.abs().sum()


class VLPL(Strategy):
    """VLPL-style, sigmoid outputs: CLs -log(1 - p); the rest by ``positive`` and ``unknown`` weights below.

    states: -1 CL (known negative), 1 CLIP pseudo-positive, 0 unknown. Predicts argmax f.
    """

    needs = "states"
    DEFAULT_ALPHA = 0.1  # entropy weight on unknowns (VLPL: 0.2 / 0.1 / 0.01 by dataset; --vlpl-alpha)

    def __init__(self, transition: Tensor, cl_counts: Tensor, alpha: float = DEFAULT_ALPHA):
        super().__init__(transition, cl_counts)
        self.alpha = alpha

    def positive_loss(self, logits: Tensor) -> Tensor:
        return 0.7 * (0.9 * -F.logsigmoid(logits) + 0.1 * -F.logsigmoid(-logits))

    def unknown_loss(self, logits: Tensor) -> Tensor:
        p = torch.sigmoid(logits)
        entropy = -(p * F.logsigmoid(logits) + (1 - p) * F.logsigmoid(-logits))
        return -self.alpha * entropy

    def forward(self, logits: Tensor, states: Tensor) -> Tensor:
        loss = torch.where(states < 0, -F.logsigmoid(-logits), torch.zeros_like(logits))
        loss = torch.where(states > 0, self.positive_loss(logits), loss)
        loss = torch.where(states == 0, self.unknown_loss(logits), loss)
        return loss.sum(1).mean()


class EMPL(VLPL):
    """EM-PL (VLPL): pseudo-positive 0.7 [0.9 (-log p) + 0.1 (-log(1 - p))], entropy -alpha H(p) on unknowns."""

    name = "EM-PL"


class EM(VLPL):
    """EM: no pseudo-labels; CLs negative, entropy maximisation on every other class."""

    name = "EM"

    def positive_loss(self, logits: Tensor) -> Tensor:
        return self.unknown_loss(logits)


class AN(VLPL):
    """AN (assume negative): the pseudo-positive -log p, every other class -log(1 - p)."""

    name = "AN"

    def positive_loss(self, logits: Tensor) -> Tensor:
        return -F.logsigmoid(logits)

    def unknown_loss(self, logits: Tensor) -> Tensor:
        return -F.logsigmoid(-logits)


STRATEGIES: dict[str, type[Strategy]] = {
    cls.name: cls
    for cls in (
        SCLNL, SCLEXP, FWD, URENN, UREGA, URETNN, URETGA, DM, CPEI, CPEF, CPET, MCLMAE, MCLEXP, MCLLOG, PC, OP,
        SCARCE, Ord, AN, EM, EMPL,
    )
}  # fmt: skip
CL_STRATEGIES = tuple(name for name, cls in STRATEGIES.items() if cls.needs in ("cl", "cl_set"))
VLPL_STRATEGIES = tuple(name for name, cls in STRATEGIES.items() if cls.needs == "states")


def strategy_class(name: str) -> type[Strategy]:
    """The class of strategy ``name`` (case-insensitive, as the CLI spells it: FWD, URE-TGA, MCL-LOG, Ord)."""
    by_upper = {key.upper(): cls for key, cls in STRATEGIES.items()}
    try:
        return by_upper[name.upper()]
    except KeyError:
        raise UnknownNameError(f"unknown strategy {name!r}; choose from: {', '.join(STRATEGIES)}, or all") from None


def build_strategy(name: str, transition: Tensor, cl_counts: Tensor, vlpl_alpha: float | None = None) -> Strategy:
    """A ready strategy: ``transition`` the empirical T of the training part, ``cl_counts`` its CLs per class;
    ``vlpl_alpha`` the entropy weight of the VLPL family (None: VLPL.DEFAULT_ALPHA; other strategies ignore it)."""
    cls = strategy_class(name)
    if issubclass(cls, VLPL) and vlpl_alpha is not None:
        return cls(transition, cl_counts, alpha=vlpl_alpha)
    return cls(transition, cl_counts)
