"""The benchmark's results files: DIR/results.json (every finished run) and DIR/results.md (mean +- std tables).

A table gathers the runs of one setting (model, epochs, CLs per image, cleaning, validation, batching, precision,
init, MLP width, learning-rate rule); its rows are strategies, its columns datasets. Per cell the learning rate is
chosen by the run's ``lr_select`` rule:

- ``validation`` (the default, the sound rule): the lr with the best mean validation score over the seeds;
- ``reference`` (libcll's scripts): the lr whose run at the selection seed (1126) has the best TEST accuracy; the
  cell then averages the other seeds' runs at that lr. The table says that this looks at the test set.

Example:
    >>> runs = write_results("bench-out")          # doctest: +SKIP
    >>> print(results_markdown(runs))              # doctest: +SKIP
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

RESULTS_JSON, RESULTS_MD = "results.json", "results.md"
# A run record's settings, with the value a record written before the key existed stands for.
SETTING_DEFAULTS = {
    "model": None, "epochs": None, "num_cl": None, "clean_noisy": 0.0, "valid_type": "accuracy",
    "valid_rule": "empirical", "batch_by": "pair", "precision": None, "init": "pytorch", "hidden_dim": None,
    "lr_select": "validation",
}  # fmt: skip
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


def setting_of(run: dict) -> tuple:
    """The values of a run's settings, in SETTING_DEFAULTS order."""
    return tuple(run.get(key, default) for key, default in SETTING_DEFAULTS.items())


def collect_runs(output_dir: Path) -> list[dict]:
    """Every finished run under DIR/runs, plus the CLIP-zero-shot rows, in a stable order."""
    from aclbuild.bench.strategies import STRATEGIES  # torch: report reads results in a core install
    runs = [json.loads(p.read_text(encoding="utf-8")) for p in sorted((output_dir / "runs").glob("**/run.json"))]
    order = {name: i for i, name in enumerate(["CLIP-zero-shot", *STRATEGIES])}
    key = lambda r: (r["dataset"], order.get(r["strategy"], 99), bool(r.get("lr_selection")), r["seed"], r["lr"])  # noqa: E731
    return sorted(runs, key=key)


def _best_lr(groups: dict[float, list[dict]], score) -> float:
    """The lr whose runs score highest (``score`` of a run, averaged); ties go to the smaller lr."""
    return max(sorted(groups), key=lambda lr: float(np.mean([score(r) for r in groups[lr]])))


def choose_lr(cell_runs: list[dict], valid_type: str, lr_select: str) -> tuple[float, list[dict]]:
    """(chosen lr, the seed runs averaged at it) of one cell's runs, by the ``lr_select`` rule."""
    seed_runs = [r for r in cell_runs if not r.get("lr_selection")]
    by_lr: dict[float, list[dict]] = defaultdict(list)
    for run in seed_runs:
        by_lr[run["lr"]].append(run)
    selection: dict[float, list[dict]] = defaultdict(list)
    for run in cell_runs:
        if run.get("lr_selection"):
            selection[run["lr"]].append(run)
    if lr_select == "reference" and selection:
        lr = _best_lr(selection, lambda r: r["test_accuracy"])
    else:
        sign = 1 if valid_type == "accuracy" else -1
        lr = _best_lr(by_lr, lambda r: sign * r["valid_score"])
    return lr, by_lr.get(lr, [])


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


def results_markdown(runs: list[dict]) -> str:
    """One mean +- std table (in %) per setting: rows strategies, columns datasets."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for run in runs:
        groups[setting_of(run)].append(run)
    lines = ["# Benchmark results", ""]
    for setting, group in groups.items():
        values = dict(zip(SETTING_DEFAULTS, setting))
        lines += _heading(setting)
        if values["lr_select"] == "reference":
            seeds = sorted({r["seed"] for r in group if r.get("lr_selection")}) or ["(none run)"]
            lines += [REFERENCE_WARNING.format(seed=", ".join(map(str, seeds))), ""]
        lines += [ACCURACY_CAPTION, ""]
        datasets = list(dict.fromkeys(r["dataset"] for r in group))
        names = {r["dataset"]: r["dataset_name"] for r in group}
        strategies = list(dict.fromkeys(r["strategy"] for r in group))
        rows = [(s, [_cell([r for r in group if r["strategy"] == s and r["dataset"] == d], values) for d in datasets])
                for s in strategies]  # fmt: skip
        lines += [accuracy_table("strategy", [names[d] for d in datasets], rows), ""]
    return "\n".join(lines)


def _cell(cell_runs: list[dict], values: dict) -> AccuracyCell | None:
    """The table cell of one (strategy, dataset): the seed runs at the chosen lr, the lr named when several ran."""
    if not cell_runs:
        return None
    lr, chosen = choose_lr(cell_runs, values["valid_type"], values["lr_select"])
    lr_note = f" (lr {lr:g})" if len({r["lr"] for r in cell_runs}) > 1 else ""
    if not chosen:
        return AccuracyCell((), f"no seed runs yet{lr_note}")
    return AccuracyCell(tuple(r["test_accuracy"] for r in chosen), lr_note)


def write_results(output_dir: str | Path) -> list[dict]:
    """(Re)write DIR/results.json and DIR/results.md from every finished run; each file replaced atomically."""
    output_dir = Path(output_dir)
    runs = collect_runs(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    for name, text in (
        (RESULTS_JSON, json.dumps({"runs": runs}, indent=2) + "\n"),
        (RESULTS_MD, results_markdown(runs)),
    ):
        tmp = output_dir / f".{name}.tmp"
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(output_dir / name)
    return runs
