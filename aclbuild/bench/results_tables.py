"""results.md: the mean +- std tables of a benchmark folder's runs, one per setting; report.md uses the same tables.

CL runs: one table per setting (model, epochs, CLs per image, cleaning, validation, batching, precision, init, MLP
width, learning-rate rule), rows strategies, columns datasets, test accuracy in %, each cell at the lr results.cell_lr
chooses. SPML runs (spml_results.py) follow, in mAP.

Example:
    >>> print(accuracy_table("strategy", ["A"], [("FWD", [AccuracyCell((0.5, 0.7))])]))
    | strategy | A |
    |---|---|
    | FWD | 60.00 +- 14.14 |
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from aclbuild.bench.results import SETTING_DEFAULTS, RunRecord, cell_lr
from aclbuild.bench.spml_results import SpmlRunRecord, spml_results_markdown

ACCURACY_CAPTION = (
    "Test accuracy (%) of the best-validation checkpoint, mean +- std (ddof=1) over seeds; n=1: a single seed, "
    "no spread."
)
REFERENCE_WARNING = (
    "**Learning rate chosen by TEST accuracy at seed {seed} (libcll's rule, `--lr-select reference`): the test set "
    "took part in choosing, so these accuracies are optimistic.**"
)


@dataclass(frozen=True)
class AccuracyCell:
    """One cell of a results table: the test accuracies (fractions) of its seed runs, and a note after them."""

    accuracies: tuple[float, ...]
    note: str = ""

    @property
    def mean(self) -> float:
        return float(np.mean(self.accuracies))

    @property
    def text(self) -> str:
        """``81.25 +- 0.43`` (in %, sample std over seeds), ``81.25 (n=1)`` for one seed: no spread to show.

        Example:
            >>> AccuracyCell((0.8, 0.9)).text, AccuracyCell((0.8125,), " (lr 0.001)").text
            ('85.00 +- 7.07', '81.25 (n=1) (lr 0.001)')
        """
        if not self.accuracies:
            return self.note.strip()
        accs = 100 * np.asarray(self.accuracies)
        spread = f"+- {accs.std(ddof=1):.2f}" if len(accs) > 1 else "(n=1)"
        return f"{accs.mean():.2f} {spread}{self.note}"


def accuracy_table(
    corner: str, columns: Sequence[str], rows: Sequence[tuple[str, Sequence[AccuracyCell | None]]],
    bold_best: bool = False, missing: str = "",
) -> str:  # fmt: skip
    """The Markdown results table of results.md and report.md: mean +- std per cell, ``(n=1)`` for a single seed.

    ``rows`` are (name, one cell per column, None where nothing ran); with ``bold_best`` the best mean of each
    column is bold.

    Example:
        >>> rows = [("FWD", [AccuracyCell((0.5,))]), ("SCL", [None])]
        >>> print(accuracy_table("strategy", ["A"], rows, bold_best=True, missing="-"))
        | strategy | A |
        |---|---|
        | FWD | **50.00 (n=1)** |
        | SCL | - |
    """
    best = {}
    for i in range(len(columns)):
        means = [cells[i].mean for _, cells in rows if cells[i] is not None and cells[i].accuracies]
        best[i] = max(means) if means else None
    lines = [f"| {corner} | " + " | ".join(columns) + " |", "|---|" + "---|" * len(columns)]
    for name, cells in rows:
        texts = []
        for i, cell in enumerate(cells):
            text = missing if cell is None else cell.text
            if bold_best and cell is not None and cell.accuracies and cell.mean == best[i]:
                text = f"**{text}**"
            texts.append(text)
        lines.append(f"| {name} | " + " | ".join(texts) + " |")
    return "\n".join(lines)


def setting_of(run: RunRecord) -> tuple:
    """The values of a run's settings in SETTING_DEFAULTS order, a default standing in for one not recorded."""
    values = (getattr(run, key) for key in SETTING_DEFAULTS)
    return tuple(default if value is None else value for value, default in zip(values, SETTING_DEFAULTS.values()))


def _heading(setting: tuple) -> list[str]:
    values = dict(zip(SETTING_DEFAULTS, setting))
    num_cl = values["num_cl"]
    cls = f"{num_cl} CLs per image" if num_cl else "a random number of uniform synthetic CLs per image (num_cl 0)"
    model = values["model"] + (f" (hidden {values['hidden_dim']})" if values["hidden_dim"] else "")
    per_strategy = values["valid_rule"] == "strategy" and values["valid_type"] != "accuracy"
    title = (
        f"## {model}, {values['epochs']} epochs, {cls}, cleaning {values['clean_noisy']:g}, validation by "
        f"{values['valid_type']}" + (" (T per strategy, libcll)" if per_strategy else "")
    )
    precision = values["precision"] or "precision not recorded"  # runs of aclbuild before it was recorded
    init = f"{values['init']} init, " if values["model"] not in ("mlp", "linear") else ""  # convolutions only
    how = (
        f"Batches by {values['batch_by']}, {precision}, {init}"
        f"learning rate by {'test accuracy (reference)' if values['lr_select'] == 'reference' else 'validation'}."
    )
    return [title, "", how, ""]


def results_markdown(runs: Sequence[RunRecord | SpmlRunRecord]) -> str:
    """One mean +- std table (in %) per setting: rows strategies, columns datasets; SPML tables (mAP) after."""
    groups: dict[tuple, list[RunRecord]] = defaultdict(list)
    for run in runs:
        if isinstance(run, RunRecord):
            groups[setting_of(run)].append(run)
    lines = ["# Benchmark results", ""]
    for setting, group in groups.items():
        values = dict(zip(SETTING_DEFAULTS, setting))
        lines += _heading(setting)
        if values["lr_select"] == "reference":
            seeds = sorted({r.seed for r in group if r.lr_selection}) or ["(none run)"]
            lines += [REFERENCE_WARNING.format(seed=", ".join(map(str, seeds))), ""]
        lines += [ACCURACY_CAPTION, ""]
        datasets = list(dict.fromkeys(r.dataset for r in group))
        names = {r.dataset: r.dataset_name for r in group}
        strategies = list(dict.fromkeys(r.label for r in group))
        rows = [(s, [_cell([r for r in group if r.label == s and r.dataset == d]) for d in datasets])
                for s in strategies]  # fmt: skip
        lines += [accuracy_table("strategy", [names[d] for d in datasets], rows), ""]
    lines += spml_results_markdown([run for run in runs if isinstance(run, SpmlRunRecord)])
    return "\n".join(lines)


def _cell(cell_runs: list[RunRecord]) -> AccuracyCell | None:
    """The table cell of one (strategy, dataset): the seed runs at the chosen lr, the lr named when several ran."""
    if not cell_runs:
        return None
    lr, chosen = cell_lr(cell_runs)
    lr_note = f" (lr {lr:g})" if len({r.lr for r in cell_runs}) > 1 else ""
    if not chosen:
        return AccuracyCell((), f"no seed runs yet{lr_note}")
    return AccuracyCell(tuple(r.test_accuracy for r in chosen), lr_note)
