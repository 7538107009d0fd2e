"""The benchmark's run record and results files; this module alone knows their format.

- ``DIR/runs/<dataset>/<strategy>/<settings>/run.json``: one finished run (:class:`RunRecord`), named by
  :func:`run_folder`, written last and atomically, so its presence means the run is complete (a rerun skips it).
- ``DIR/results.json``: ``{"runs": [every run.json of DIR]}``, the file `aclbuild report` reads.
- ``DIR/results.md``: one mean +- std table per setting (results_tables.py), CL and SPML runs alike.
- An SPML run's record is spml_results.py's :class:`SpmlRunRecord` (``"task": "spml"``); :func:`run_record` tells
  the two apart.

Per table cell the learning rate is chosen by :func:`cell_lr`, which results.md and report.md share, following the
runs' ``lr_select`` rule:

- ``validation`` (the default, the sound rule): the lr with the best mean validation score over the seeds
  (:func:`choose_lr`: a NaN never wins, ties go to the smaller lr);
- ``reference`` (libcll's scripts): the lr whose run at the selection seed (1126) has the best TEST accuracy (the
  same :func:`choose_lr` on those runs); the cell then averages the other seeds' runs at that lr. The table says
  that this looks at the test set.

Example:
    >>> runs = write_results("bench-out")          # doctest: +SKIP
    >>> [run.strategy for run in runs]            # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path


from aclbuild.atomic import atomic_write_text, remove_leftovers
from aclbuild.bench.spml_results import TASK as SPML_TASK
from aclbuild.bench.spml_results import SpmlRunRecord
from aclbuild.errors import InputError

RUN_JSON, RESULTS_JSON, RESULTS_MD = "run.json", "results.json", "results.md"
DEFAULT_VLPL_ALPHA = 0.1  # bench.strategies.VLPL.DEFAULT_ALPHA (not imported: report reads results without torch)
HIGHER_IS_BETTER = {"accuracy"}  # the CL-only criteria (ure, scel) are risks: lower is better
# A run record's settings, with the value a record written before the key existed stands for.
SETTING_DEFAULTS = {
    "model": None, "epochs": None, "num_cl": None, "clean_noisy": 0.0, "valid_type": "accuracy",
    "valid_rule": "empirical", "batch_by": "pair", "precision": None, "init": "pytorch", "hidden_dim": None,
    "lr_select": "validation",
}  # fmt: skip



# ---------------------------------------------------------------- the run record


@dataclass(frozen=True)
class RunRecord:
    """One finished benchmark run, as its run.json and results.json hold it.

    The optional fields are None in records written before aclbuild recorded them. ``curve`` is the run's curve
    CSV (``epoch,train_loss,valid_score,test_accuracy``) relative to the benchmark folder, or, once `report` has
    read the record, the path it resolves to. ``lr_selection`` marks a run of libcll's lr grid at its selection
    seed: it chose the lr of the runs beside it and is no result itself.
    """

    dataset: str
    dataset_name: str
    strategy: str
    model: str
    seed: int
    lr: float
    num_cl: int
    clean_noisy: float
    valid_type: str
    epochs: int
    best_epoch: int
    valid_score: float
    test_accuracy: float
    curve: str | None
    valid_rule: str | None = None
    batch_by: str | None = None
    precision: str | None = None
    init: str | None = None
    hidden_dim: int | None = None
    lr_select: str | None = None
    lr_selection: bool = False
    steps_per_epoch: int | None = None
    clip_model: str | None = None
    vlpl_alpha: float | None = None  # the VLPL family's entropy weight (None: not a VLPL run, or not recorded: 0.1)

    def to_dict(self) -> dict:
        """The record as run.json and results.json write it: every key, null where not recorded or not applicable."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, raw: object, where: str) -> RunRecord:
        """The record of a run.json or results.json entry; InputError naming ``where`` for anything malformed.

        Example:
            >>> raw = {"dataset": "out/d", "dataset_name": "D", "strategy": "FWD", "model": "mlp", "seed": 1,
            ...        "lr": 1e-3, "num_cl": 3, "clean_noisy": 0, "valid_type": "accuracy", "epochs": 2,
            ...        "best_epoch": 2, "valid_score": 0.9, "test_accuracy": 0.85, "curve": None}
            >>> RunRecord.from_dict(raw, "run 0").clean_noisy, RunRecord.from_dict(raw, "run 0").batch_by
            (0.0, None)
            >>> RunRecord.from_dict({**raw, "seed": "1"}, "run 0")
            Traceback (most recent call last):
            aclbuild.errors.InputError: run 0: 'seed' must be int, got '1'
        """
        if not isinstance(raw, dict):
            raise InputError(f"{where} is not a JSON object")
        values = {key: _checked(raw, key, kind, where) for key, kind in REQUIRED_FIELDS.items()}
        values |= {key: _checked(raw, key, kind, where) for key, kind in OPTIONAL_FIELDS.items() if key in raw}
        if not 0.0 <= values["test_accuracy"] <= 1.0:
            raise InputError(f"{where}: test_accuracy {values['test_accuracy']} is not a fraction in [0, 1]")
        if not 0.0 <= values["clean_noisy"] <= 1.0 or values["num_cl"] < 0:
            raise InputError(f"{where}: clean_noisy must lie in [0, 1] and num_cl be at least 0 (0: random)")
        return cls(**values)

    @property
    def label(self) -> str:
        """The strategy as tables name it: with its alpha where a VLPL run was not at the default 0.1.

        Example:
            >>> raw = {"dataset": "d", "dataset_name": "D", "strategy": "EM-PL", "model": "mlp", "seed": 1, "lr": 1e-3,
            ...        "num_cl": 3, "clean_noisy": 0, "valid_type": "accuracy", "epochs": 2, "best_epoch": 2,
            ...        "valid_score": 0.9, "test_accuracy": 0.85, "curve": None}
            >>> RunRecord.from_dict(raw, "r").label, RunRecord.from_dict({**raw, "vlpl_alpha": 0.2}, "r").label
            ('EM-PL', 'EM-PL (alpha 0.2)')
        """
        default = self.vlpl_alpha is None or self.vlpl_alpha == DEFAULT_VLPL_ALPHA
        return self.strategy if default else f"{self.strategy} (alpha {self.vlpl_alpha:g})"

    @property
    def higher_is_better(self) -> bool:
        """Whether a larger validation score is better (accuracy) or worse (a CL-only risk)."""
        return self.valid_type in HIGHER_IS_BETTER


# Every record carries these keys (float fields accept JSON integers; curve may be null) ...
REQUIRED_FIELDS: dict[str, type] = {
    "dataset": str, "dataset_name": str, "strategy": str, "model": str, "seed": int, "lr": float, "num_cl": int,
    "clean_noisy": float, "valid_type": str, "epochs": int, "best_epoch": int, "valid_score": float,
    "test_accuracy": float, "curve": str,
}  # fmt: skip
# ... and these where the aclbuild that wrote it recorded them (null: not recorded).
OPTIONAL_FIELDS: dict[str, type] = {
    "valid_rule": str, "batch_by": str, "precision": str, "init": str, "hidden_dim": int, "lr_select": str,
    "lr_selection": bool, "steps_per_epoch": int, "clip_model": str, "vlpl_alpha": float,
}  # fmt: skip


def _checked(raw: dict, key: str, kind: type, where: str):
    """``raw[key]`` checked to be a ``kind`` (an int passes for a float, a bool for nothing else)."""
    if key not in raw:
        raise InputError(f"{where} lacks '{key}'")
    value = raw[key]
    if value is None and (key == "curve" or key in OPTIONAL_FIELDS):
        return None if key != "lr_selection" else False
    numeric = kind is float and isinstance(value, (int, float))
    if isinstance(value, bool) != (kind is bool) or not (numeric or isinstance(value, kind)):
        raise InputError(f"{where}: '{key}' must be {kind.__name__}, got {value!r}")
    return float(value) if kind is float else value


def slug(text: str) -> str:
    """A dataset id or path as one folder name.

    Example:
        >>> slug("out/digits-uniform/"), slug("user/ACL CIFAR")
        ('out_digits-uniform', 'user_ACL_CIFAR')
    """
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text.strip("/")).strip("_") or "dataset"


def run_folder(
    output_dir: Path, dataset: str, strategy: str, settings: Mapping, seed: int, lr: float, selection: bool = False
) -> Path:
    """DIR/runs/<dataset>/<strategy>/<settings>: one folder per run, named by everything that sets it apart.

    ``settings`` are the record's settings (BenchmarkSpec.record()); an MLP's width is part of its model name.

    Example:
        >>> settings = {"model": "mlp", "hidden_dim": 500, "epochs": 20, "num_cl": 3, "clean_noisy": 0.0,
        ...             "valid_type": "accuracy", "valid_rule": "empirical", "batch_by": "image",
        ...             "precision": "fp32", "init": "kaiming", "lr_select": "validation"}
        >>> folder = run_folder(Path("b"), "out/digits", "FWD", settings, 1207, 1e-3)
        >>> folder.parent.as_posix()
        'b/runs/out_digits/FWD'
        >>> print(*folder.name.split("_"))
        mlp500 e20 ncl3 clean0 accuracy-empirical byimage fp32 kaiming validation seed1207 lr0.001
    """
    s = settings
    model = f"{s['model']}{s['hidden_dim']}" if s["model"] == "mlp" else s["model"]
    name = (
        f"{model}_e{s['epochs']}_ncl{s['num_cl']}_clean{s['clean_noisy']:g}_{s['valid_type']}-{s['valid_rule']}"
        f"_by{s['batch_by']}_{s['precision']}_{s['init']}_{s['lr_select']}_seed{seed}_lr{lr:g}"
    )
    alpha = s.get("vlpl_alpha")
    if alpha is not None and alpha != DEFAULT_VLPL_ALPHA:  # only then: folders of earlier runs keep their names
        name += f"_alpha{alpha:g}"
    return Path(output_dir) / "runs" / slug(dataset) / strategy / (name + ("_lrselection" if selection else ""))


def start_run(folder: Path, output_dir: Path, main_process: bool, console=None) -> bool:
    """False when the run in ``folder`` has finished (its run.json exists; said on ``console``), so a benchmark
    resumes; else True, the folder made and cleared of what a killed earlier try of the run left half-written."""
    if (folder / RUN_JSON).is_file():
        if console and main_process:
            console.print(f"  skip (done) {folder.relative_to(output_dir)}")
        return False
    folder.mkdir(parents=True, exist_ok=True)
    if main_process:
        remove_leftovers(folder)
    return True


def write_run(folder: Path, record: RunRecord) -> Path:
    """Write ``folder/run.json`` atomically (a run's last write: its presence means the run is complete)."""
    return atomic_write_text(Path(folder) / RUN_JSON, json.dumps(record.to_dict(), indent=2) + "\n")


def run_record(raw: object, where: str) -> RunRecord | SpmlRunRecord:
    """The record of a run.json or results.json entry: an SPML run's (``"task": "spml"``) or a CL run's."""
    if isinstance(raw, dict) and raw.get("task") == SPML_TASK:
        return SpmlRunRecord.from_dict(raw, where)
    return RunRecord.from_dict(raw, where)


def read_run(path: Path) -> RunRecord | SpmlRunRecord:
    """The record of one run.json; InputError naming the file when it is not one."""
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"cannot read {path} as JSON ({exc}); delete its folder to run that run again") from None
    return run_record(raw, str(path))


def collect_runs(output_dir: Path) -> list[RunRecord | SpmlRunRecord]:
    """Every finished run under DIR/runs (CL and SPML), plus the CLIP-zero-shot rows, in a stable order."""
    from aclbuild.bench.spml_losses import LOSSES
    from aclbuild.bench.strategies import STRATEGIES  # torch: report reads results in a core install

    runs = [read_run(p) for p in sorted((Path(output_dir) / "runs").glob(f"**/{RUN_JSON}"))]
    order = {name: i for i, name in enumerate(["CLIP-zero-shot", *STRATEGIES, *LOSSES])}
    return sorted(runs, key=lambda r: (r.dataset, order.get(r.strategy, 99), r.lr_selection, r.seed, r.lr))


def read_results(path: Path) -> list[RunRecord | SpmlRunRecord]:
    """The runs of a results.json (or of the folder holding it), selection runs included; InputError if malformed."""
    path = Path(path)
    file = path / RESULTS_JSON if path.is_dir() else path
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"cannot read {file} as JSON: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("runs"), list):
        raise InputError(f'{file} is not a benchmark results file: expected {{"runs": [...]}}')
    return [run_record(raw, f"{file}: run {index}") for index, raw in enumerate(data["runs"])]


def write_results(output_dir: str | Path, console=None) -> list[RunRecord | SpmlRunRecord]:
    """(Re)write DIR/results.json and DIR/results.md from every finished run, each file replaced atomically; print
    results.md on ``console`` when one is given."""
    output_dir = Path(output_dir)
    from aclbuild.bench.results_tables import results_markdown

    runs = collect_runs(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    remove_leftovers(output_dir)  # results files a killed earlier benchmark left half-written
    atomic_write_text(output_dir / RESULTS_JSON, json.dumps({"runs": [r.to_dict() for r in runs]}, indent=2) + "\n")
    atomic_write_text(output_dir / RESULTS_MD, results_markdown(runs))
    if console:
        console.print(results_markdown(runs), markup=False, highlight=False, soft_wrap=True)
    return runs


# ---------------------------------------------------------------- the learning-rate choice


def choose_lr(scores: Mapping[float, Sequence[float]], higher_is_better: bool = True) -> float:
    """The learning rate whose runs have the best mean score: the one rule of results.md and report.md.

    ``scores`` holds, per lr, the score of each of its seed runs. A NaN (a diverged run) makes its lr's mean NaN,
    and a NaN mean never beats a number; equal means (to 1e-12), or no lr with a number, go to the smaller lr.

    Example:
        >>> choose_lr({1e-3: [0.8, 0.9], 1e-4: [0.9, 0.8]})               # a tie: the smaller lr
        0.0001
        >>> choose_lr({1e-3: [0.99, float("nan")], 1e-4: [0.5, 0.5]})    # a diverged seed never wins
        0.0001
        >>> choose_lr({1e-3: [0.3], 1e-4: [0.5]}, higher_is_better=False)  # a risk: lower is better
        0.001
    """
    if not scores:
        raise ValueError("choose_lr needs at least one learning rate")
    sign = 1.0 if higher_is_better else -1.0

    def merit(lr: float) -> float:
        mean = math.fsum(scores[lr]) / len(scores[lr]) if scores[lr] else math.nan
        return -math.inf if math.isnan(mean) else sign * mean

    best = min(scores)
    for lr in sorted(scores)[1:]:
        if merit(lr) > merit(best) + 1e-12 * max(1.0, abs(merit(best))):
            best = lr
    return best


def cell_lr(cell_runs: Sequence[RunRecord]) -> tuple[float, list[RunRecord]]:
    """(chosen lr, the seed runs at it, by seed) of one table cell's runs, by their ``lr_select`` rule.

    ``validation``: :func:`choose_lr` on the validation scores of the seed runs; ``reference``: on the test
    accuracies of the selection runs (when there are any). Selection runs are never averaged in.
    """
    seed_runs = [r for r in cell_runs if not r.lr_selection]
    selection = [r for r in cell_runs if r.lr_selection]
    if selection and cell_runs[0].lr_select == "reference":
        lr = choose_lr(_by_lr(selection, "test_accuracy"))
    else:
        judged = seed_runs or cell_runs
        lr = choose_lr(_by_lr(judged, "valid_score"), judged[0].higher_is_better)
    return lr, sorted((r for r in seed_runs if r.lr == lr), key=lambda r: r.seed)


def _by_lr(runs: Sequence[RunRecord], score: str) -> dict[float, list[float]]:
    """Per lr, the ``score`` of each of its runs."""
    return {lr: [getattr(r, score) for r in runs if r.lr == lr] for lr in {r.lr for r in runs}}
