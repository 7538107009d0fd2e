"""The inputs of `aclbuild report`, read and checked, and benchmark runs grouped into table cells.

``results.json`` (written by `aclbuild benchmark`) is ``{"runs": [{dataset, dataset_name, strategy, model, seed, lr,
num_cl, clean_noisy, valid_type, epochs, best_epoch, valid_score, test_accuracy, curve}, ...]}``; ``curve`` names
the run's CSV (``epoch,train_loss,valid_score,test_accuracy``, empty where not evaluated) relative to the file.
A *setting* is what makes two runs the same experiment apart from strategy, seed and learning rate:
(dataset_name, model, valid_type, epochs, num_cl, clean_noisy, protocol), ``protocol`` summing up how the run was
trained (batching, precision, init, MLP width, validation rule, lr rule; empty for runs recorded before those were).
A *cell* is one (setting, strategy) at its lr. Runs of libcll's lr grid at its selection seed (``lr_selection``)
only chose the lr of the runs beside them, so they are left out.

Example:
    >>> runs, repositories = load_inputs(["runs/results.json", "out/aclmin10"])   # doctest: +SKIP
    >>> cell = choose_cells(runs)[0]; round(100 * cell.mean, 2), cell.lr           # doctest: +SKIP
    (91.2, 0.001)
"""

from __future__ import annotations

import csv
import json
import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import NamedTuple

import numpy as np

from aclbuild.errors import InputError
from aclbuild.progress import progress_bar
from aclbuild.repository import split_shards

RESULTS_FILE = "results.json"
CURVE_COLUMNS = ("epoch", "train_loss", "valid_score", "test_accuracy")
# Every run of results.json carries these keys (the benchmark's fixed format); float fields accept JSON integers.
RUN_FIELDS: dict[str, type] = {
    "dataset": str, "dataset_name": str, "strategy": str, "model": str, "seed": int, "lr": float, "num_cl": int,
    "clean_noisy": float, "valid_type": str, "epochs": int, "best_epoch": int, "valid_score": float,
    "test_accuracy": float, "curve": str,
}  # fmt: skip
HIGHER_IS_BETTER = {"accuracy"}  # the CL-only criteria (ure, scel) are risks: lower is better


class Setting(NamedTuple):
    """What makes two runs the same experiment apart from strategy, seed and learning rate (a table column)."""

    dataset_name: str
    model: str
    valid_type: str
    epochs: int | str  # "*" in a sweep's panel key, where the dimension is free
    num_cl: int | str
    clean_noisy: float | str
    protocol: str = ""


SETTING_DIMS = Setting._fields[1:]


@dataclass(frozen=True)
class Run:
    """One benchmark run of results.json; ``curve`` is resolved against the results folder (None when absent)."""

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
    curve: Path | None
    protocol: str = ""

    @property
    def setting(self) -> Setting:
        return Setting(
            self.dataset_name, self.model, self.valid_type, self.epochs, self.num_cl, self.clean_noisy, self.protocol
        )


@dataclass(frozen=True)
class RepositorySummary:
    """A dataset repository's name, classes and train-split label statistics (from aclbuild.stats)."""

    folder: Path
    pretty_name: str
    class_names: tuple[str, ...]
    stats: dict
    base: str = ""  # the base the labels are on (aclbuild.json's dataset); repositories of one base are compared
    kind: str = ""  # vlm, vlm-r, human or synthetic; "" where aclbuild.json names no known dataset


@dataclass(frozen=True)
class Cell:
    """The runs of one (setting, strategy) at the learning rate chosen by mean validation score."""

    setting: Setting
    strategy: str
    lr: float
    lrs_tried: int
    runs: tuple[Run, ...]

    @property
    def accuracies(self) -> np.ndarray:
        return np.array([r.test_accuracy for r in self.runs])

    @property
    def mean(self) -> float:
        return float(self.accuracies.mean())

    @property
    def std(self) -> float:
        """Sample standard deviation over seeds (ddof=1); 0 for a single run."""
        return float(self.accuracies.std(ddof=1)) if len(self.runs) > 1 else 0.0


# ---------------------------------------------------------------- reading inputs


def _check_field(run: dict, key: str, kind: type, where: str):
    if key not in run:
        raise InputError(f"{where} lacks '{key}'")
    value = run[key]
    if key == "curve" and value is None:
        return None
    numeric = kind is float and isinstance(value, (int, float))
    if isinstance(value, bool) or not (numeric or isinstance(value, kind)):
        raise InputError(f"{where}: '{key}' must be {kind.__name__}, got {value!r}")
    return float(value) if kind is float else value


def protocol_of(run: dict) -> str:
    """``by image, fp32, kaiming init``: how a run was trained, from its record ("" when it predates the keys)."""
    if "batch_by" not in run:
        return ""
    parts = [f"by {run['batch_by']}", str(run.get("precision"))]
    if run.get("model") not in ("mlp", "linear"):
        parts.append(f"{run.get('init')} init")
    if run.get("hidden_dim"):
        parts.append(f"hidden {run['hidden_dim']}")
    if run.get("valid_rule") == "strategy" and run.get("valid_type") != "accuracy":
        parts.append("T per strategy")
    if run.get("lr_select") == "reference":
        parts.append("lr by TEST accuracy")
    return ", ".join(parts)


def read_results(path: Path) -> list[Run]:
    """The runs of a results.json (or of the folder holding it); raises InputError on any malformed run."""
    path = Path(path)
    file = path / RESULTS_FILE if path.is_dir() else path
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"cannot read {file} as JSON: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("runs"), list):
        raise InputError(f'{file} is not a benchmark results file: expected {{"runs": [...]}}')
    runs = []
    for index, raw in enumerate(data["runs"]):
        where = f"{file}: run {index}"
        if not isinstance(raw, dict):
            raise InputError(f"{where} is not a JSON object")
        if raw.get("lr_selection"):  # a run of libcll's lr grid at its selection seed: it chose the lr, no result
            continue
        values = {key: _check_field(raw, key, kind, where) for key, kind in RUN_FIELDS.items()}
        if not 0.0 <= values["test_accuracy"] <= 1.0:
            raise InputError(f"{where}: test_accuracy {values['test_accuracy']} is not a fraction in [0, 1]")
        if not 0.0 <= values["clean_noisy"] <= 1.0 or values["num_cl"] < 0:
            raise InputError(f"{where}: clean_noisy must lie in [0, 1] and num_cl be at least 0 (0: random)")
        values["curve"] = file.parent / values["curve"] if values["curve"] else None
        runs.append(Run(**values, protocol=protocol_of(raw)))
    return runs


def read_curve(path: Path) -> dict[str, dict[int, float]]:
    """Per column (train_loss, valid_score, test_accuracy), its value by epoch from a run's curve CSV; epochs where
    a column was not evaluated (an empty cell) are left out of it."""
    try:
        with Path(path).open(newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
            header = tuple(rows[0].keys()) if rows else ()
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"cannot read curve {path}: {exc}") from None
    if rows and ("epoch" not in header or not set(CURVE_COLUMNS[1:]) & set(header)):
        raise InputError(f"curve {path} has header {','.join(header)}; expected {','.join(CURVE_COLUMNS)}")
    curve: dict[str, dict[int, float]] = {column: {} for column in CURVE_COLUMNS[1:]}
    for line, row in enumerate(rows, start=2):
        for column, values in curve.items():
            cell = (row.get(column) or "").strip()
            if not cell:
                continue
            try:
                epoch, value = int(row["epoch"]), float(cell)
            except (TypeError, ValueError):
                raise InputError(f"{path}:{line}: epoch and {column} must be numbers") from None
            if column == "test_accuracy" and not 0.0 <= value <= 1.0:
                raise InputError(f"{path}:{line}: test_accuracy {value} is not a fraction in [0, 1]")
            values[epoch] = value
    return curve


def read_repository(folder: Path) -> RepositorySummary:
    """Name (card YAML pretty_name, else the folder name), class names and train statistics of a repository."""
    from aclbuild.cards import card_pretty_name
    from aclbuild.repository import read_features
    from aclbuild.stats import repository_stats

    pretty_name = card_pretty_name(folder)
    class_names = tuple(read_features(folder)["ord_labels"].names)
    train = repository_stats(folder).get("train")
    if not train or not train.get("cls_per_image"):
        raise InputError(f"{folder} has no train split with complementary labels to report on")
    return RepositorySummary(folder, pretty_name, class_names, train, *_base_of(folder, class_names))


def _base_of(folder: Path, class_names: tuple[str, ...]) -> tuple[str, str]:
    """(base, variant kind) named by the build's aclbuild.json; the class names stand in where it names none."""
    from aclbuild.builder import MANIFEST
    from aclbuild.errors import UnknownNameError
    from aclbuild.registry import get_variant

    try:
        variant = get_variant(json.loads((folder / MANIFEST).read_text(encoding="utf-8"))["dataset"])
    except (OSError, ValueError, KeyError, TypeError, UnknownNameError):
        return "classes: " + ", ".join(class_names), ""
    return variant.base.name, variant.kind


def load_inputs(paths: Sequence[Path | str]) -> tuple[list[Run], list[RepositorySummary]]:
    """Sort each path into benchmark results or repository and read it; raises InputError on anything else."""
    runs: list[Run] = []
    repositories: list[RepositorySummary] = []
    seen: set[Path] = set()  # a file or folder named twice (runs/ and runs/results.json) counts once
    with progress_bar("reading inputs", len(paths)) as advance:
        for path in map(Path, paths):
            if not path.exists():
                raise InputError(f"{path} does not exist (report reads local folders and files only)")
            results = path / RESULTS_FILE if path.is_dir() else path
            key = (results if results.is_file() else path).resolve()
            if key in seen:
                advance()
                continue
            seen.add(key)
            if path.is_file() and path.suffix.lower() == ".json" or path.is_dir() and results.is_file():
                runs.extend(read_results(path))
            elif path.is_dir() and split_shards(path):
                repositories.append(read_repository(path))
            else:
                raise InputError(
                    f"{path} is neither benchmark output (a results.json or a folder holding one) nor a dataset "
                    "repository folder (data/*.parquet)"
                )
            advance()
    names = Counter(r.pretty_name for r in repositories)
    repositories = [
        r if names[r.pretty_name] == 1 else replace(r, pretty_name=f"{r.pretty_name} ({r.folder.name})")
        for r in repositories
    ]
    return runs, repositories


# ---------------------------------------------------------------- aggregating runs


def choose_cells(runs: Iterable[Run]) -> list[Cell]:
    """One cell per (setting, strategy): the learning rate with the best mean validation score, all its seeds.

    Ties and all-NaN validation scores fall to the smaller learning rate; test accuracy never chooses. Cells come
    ordered by dataset and strategy as they first appear in the runs, settings of a dataset in ascending order.
    """
    groups: dict[tuple, list[Run]] = defaultdict(list)
    for run in runs:
        groups[(run.setting, run.strategy)].append(run)
    dataset_order = {name: i for i, name in enumerate(dict.fromkeys(s.dataset_name for s, _ in groups))}
    strategy_order = {name: i for i, name in enumerate(dict.fromkeys(k for _, k in groups))}
    groups = dict(sorted(groups.items(), key=lambda item: (dataset_order[item[0][0].dataset_name], item[0][0][1:],
                                                           strategy_order[item[0][1]])))  # fmt: skip
    cells = []
    for (setting, strategy), members in groups.items():
        by_lr: dict[float, list[Run]] = defaultdict(list)
        for run in members:
            by_lr[run.lr].append(run)
        scores = {lr: _validation_score(lr_runs) for lr, lr_runs in by_lr.items()}
        best = max(sorted(by_lr), key=scores.__getitem__)
        chosen = tuple(sorted(by_lr[best], key=lambda r: r.seed))
        cells.append(Cell(setting, strategy, best, len(by_lr), chosen))
    return cells


def _validation_score(runs: Sequence[Run]) -> float:
    """Mean validation score of the runs, signed so that larger is better; -inf when none is finite."""
    values = [r.valid_score for r in runs if math.isfinite(r.valid_score)]
    sign = 1.0 if runs[0].valid_type in HIGHER_IS_BETTER else -1.0
    return sign * float(np.mean(values)) if values else -math.inf


def varying_dims(settings: Iterable[Setting]) -> set[str]:
    """The setting dimensions (model, valid_type, epochs, num_cl, clean_noisy, protocol) taking several values."""
    settings = list(settings)
    return {dim for dim in SETTING_DIMS if len({getattr(s, dim) for s in settings}) > 1}


def setting_label(setting: Setting, shown: set[str]) -> str:
    """``ACLMIN10 · 6 CLs · cleaned 50%``: the dataset name and only the dimensions in ``shown``."""
    parts = [setting.dataset_name]
    if "num_cl" in shown:
        parts.append(f"{setting.num_cl} CL" + ("s" if setting.num_cl != 1 else ""))
    if "clean_noisy" in shown and setting.clean_noisy != 0:  # uncleaned is the default, so it goes unsaid
        parts.append(f"cleaned {100 * setting.clean_noisy:g}%")
    if "model" in shown:
        parts.append(setting.model)
    if "epochs" in shown:
        parts.append(f"{setting.epochs} epochs")
    if "valid_type" in shown:
        parts.append(f"valid {setting.valid_type}")
    if "protocol" in shown:
        parts.append(setting.protocol or "protocol unrecorded")
    return " · ".join(parts)


def main_settings(cells: Sequence[Cell]) -> list[Setting]:
    """Per (dataset, model, valid_type, epochs, protocol): the least-cleaned setting, in it the number of CLs with
    most runs."""
    runs_per_setting: Counter[Setting] = Counter()
    for c in cells:
        runs_per_setting[c.setting] += len(c.runs)
    chosen: dict[tuple, Setting] = {}
    for s in sorted(runs_per_setting, key=lambda s: (s.clean_noisy, -runs_per_setting[s], s.num_cl)):
        chosen.setdefault((*s[:4], s.protocol), s)  # each training protocol keeps its own main setting
    return sorted(chosen.values(), key=list(runs_per_setting).index)
