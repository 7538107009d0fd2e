"""The inputs of `aclbuild report`, read and checked, and benchmark runs grouped into table cells.

``results.json`` (written by `aclbuild benchmark`) is ``{"runs": [run record, ...]}``, its format and reading owned
by :mod:`aclbuild.bench.results` (:class:`~aclbuild.bench.results.RunRecord`); ``curve`` names the run's CSV
(``epoch,train_loss,valid_score,test_accuracy``, empty where not evaluated) relative to the file.
A *setting* is what makes two runs the same experiment apart from strategy, seed and learning rate:
(dataset_name, model, valid_type, epochs, num_cl, clean_noisy, protocol), ``protocol`` summing up how the run was
trained (batching, precision, init, MLP width, validation rule, lr rule; empty for runs recorded before those were).
A *cell* is one (setting, strategy) at the lr :func:`aclbuild.bench.results.cell_lr` chooses, the rule results.md
applies too. Runs of libcll's lr grid at its selection seed (``lr_selection``) only chose the lr of the runs beside
them, so no cell averages them in.

Example:
    >>> runs, repositories = load_inputs(["runs/results.json", "out/aclmin10"])   # doctest: +SKIP
    >>> cell = choose_cells(runs)[0]; round(100 * cell.mean, 2), cell.lr           # doctest: +SKIP
    (91.2, 0.001)
"""

from __future__ import annotations

import csv
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import NamedTuple

import numpy as np

from aclbuild.bench.results import HIGHER_IS_BETTER, RunRecord, cell_lr
from aclbuild.bench.results import read_results as read_records
from aclbuild.errors import InputError
from aclbuild.progress import progress_bar
from aclbuild.repository import is_spml_repository, split_shards

__all__ = ["HIGHER_IS_BETTER", "Cell", "RepositorySummary", "Setting", "choose_cells", "load_inputs", "read_results"]
RESULTS_FILE = "results.json"
CURVE_COLUMNS = ("epoch", "train_loss", "valid_score", "test_accuracy")


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


def setting_of(run: RunRecord) -> Setting:
    """The setting (table column) a run belongs to."""
    return Setting(run.dataset_name, run.model, run.valid_type, run.epochs, run.num_cl, run.clean_noisy,
                   protocol_of(run))  # fmt: skip


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
    """The seed runs of one (setting, strategy) at the learning rate its runs' rule chose (results.cell_lr)."""

    setting: Setting
    strategy: str
    lr: float
    lrs_tried: int
    runs: tuple[RunRecord, ...]

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


def protocol_of(run: RunRecord) -> str:
    """``by image, fp32, kaiming init``: how a run was trained, from its record ("" when it predates the keys)."""
    if run.batch_by is None:
        return ""
    parts = [f"by {run.batch_by}", str(run.precision)]
    if run.model not in ("mlp", "linear"):
        parts.append(f"{run.init} init")
    if run.hidden_dim:
        parts.append(f"hidden {run.hidden_dim}")
    if run.valid_rule == "strategy" and run.valid_type != "accuracy":
        parts.append("T per strategy")
    if run.lr_select == "reference":
        parts.append("lr by TEST accuracy")
    return ", ".join(parts)


def read_results(path: Path) -> list[RunRecord]:
    """The runs of a results.json (or of the folder holding it), each ``curve`` resolved against the file's folder.

    Raises InputError on any malformed run (results.RunRecord.from_dict says which and why).
    """
    path = Path(path)
    folder = path if path.is_dir() else path.parent
    return [replace(r, curve=str(folder / r.curve) if r.curve else None) for r in read_records(path)]


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
    from aclbuild.stats import checked_repository_stats

    pretty_name = card_pretty_name(folder)
    class_names = tuple(read_features(folder)["ord_labels"].names)
    train = checked_repository_stats(folder).get("train")
    if not train or not train.get("cls_per_image"):
        raise InputError(f"{folder} has no train split with complementary labels to report on")
    return RepositorySummary(folder, pretty_name, class_names, train, *_base_of(folder, class_names))


def _base_of(folder: Path, class_names: tuple[str, ...]) -> tuple[str, str]:
    """(base, variant kind) named by the build's aclbuild.json; the class names stand in where it names none."""
    from aclbuild.errors import SourceError, UnknownNameError
    from aclbuild.registry import get_variant
    from aclbuild.repository import read_manifest

    try:
        variant = get_variant(str(read_manifest(folder).dataset))
    except (SourceError, UnknownNameError):
        return "classes: " + ", ".join(class_names), ""
    return variant.base.name, variant.kind


def load_inputs(paths: Sequence[Path | str]) -> tuple[list[RunRecord], list[RepositorySummary]]:
    """Sort each path into benchmark results or repository and read it; raises InputError on anything else."""
    runs: list[RunRecord] = []
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
            elif path.is_dir() and is_spml_repository(path):
                raise InputError(f"{path} is a single-positive multi-label repository: the report draws CL "
                                 "repositories; give the output of `aclbuild benchmark --task spml` on it instead")
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


def choose_cells(runs: Iterable[RunRecord]) -> list[Cell]:
    """One cell per (setting, strategy): its seed runs at the lr its rule chooses (results.cell_lr, as results.md).

    By validation (the default): the best mean validation score over seeds; a NaN never wins; ties go to the
    smaller lr. Cells come ordered by dataset and strategy as they first appear in the runs, settings of a dataset
    in ascending order. A cell with selection runs only (its seeds not run yet) is left out.
    """
    groups: dict[tuple, list[RunRecord]] = defaultdict(list)
    for run in runs:
        groups[(setting_of(run), run.label)].append(run)
    dataset_order = {name: i for i, name in enumerate(dict.fromkeys(s.dataset_name for s, _ in groups))}
    strategy_order = {name: i for i, name in enumerate(dict.fromkeys(k for _, k in groups))}
    groups = dict(sorted(groups.items(), key=lambda item: (dataset_order[item[0][0].dataset_name], item[0][0][1:],
                                                           strategy_order[item[0][1]])))  # fmt: skip
    cells = []
    for (setting, strategy), members in groups.items():
        lr, chosen = cell_lr(members)
        if chosen:
            cells.append(Cell(setting, strategy, lr, len({r.lr for r in members}), tuple(chosen)))
    return cells


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
