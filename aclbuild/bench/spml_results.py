"""The run record of `aclbuild benchmark --task spml` and its results table; results.py files them beside the CL runs.

An SPML run's ``run.json`` (and its row in ``results.json``) carries ``"task": "spml"``, the run's settings (model,
epochs, batch size, image size, init, CLIP checkpoint, precision and VLPL's alpha, beta, threshold, partial and
temperature), and its figures: ``valid_map`` (the best validation mAP) and ``test_map`` (the test mAP at that
epoch), both shares in [0, 1]. Its curve CSV has the columns ``epoch,train_loss,valid_map,test_map``.

A results table cell is the mean +- std over seeds of ``test_map`` at the learning rate with the best mean validation
mAP (results.choose_lr: a NaN never wins, ties go to the smaller lr).

Example:
    >>> record = SpmlRunRecord("out/voc", "VOC2012-SPML", "EM_PL", "clip-linear", 0, 1e-3, 2, 8, None, None,
    ...                        "clip", "fp32", 0.2, 0.7, 0.3, 0.0, 0.01, 2, 0.81, 0.79, 12, "runs/c.csv")
    >>> SpmlRunRecord.from_dict(record.to_dict(), "run 0") == record
    True
    >>> spml_run_folder(Path("b"), record, 0, 1e-3).name
    'clip-linear_e2_b8_fp32_a0.2_bp0.7_t0.3_p0_T0.01_clip_seed0_lr0.001'
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from aclbuild.errors import InputError

TASK = "spml"
ZERO_SHOT = "CLIP-zero-shot"  # the mAP of CLIP's scores alone, beside the learners
MAP_CAPTION = (
    "Test mAP (%) at the epoch of best validation mAP, mean +- std (ddof=1) over seeds; n=1: a single seed, no "
    "spread. Classes without a positive in a split are left out of its mean."
)


@dataclass(frozen=True)
class SpmlRunRecord:
    """One finished SPML run: where it ran, how, and its validation and test mAP (shares in [0, 1])."""

    dataset: str
    dataset_name: str
    strategy: str
    model: str
    seed: int
    lr: float
    epochs: int
    batch_size: int
    image_size: int | None  # resnet50's input side; None for a head on features
    init: str | None  # the --init file of resnet50 (None: random init)
    clip_model: str | None  # the CLIP checkpoint of the pseudo-labels or features (None: not used)
    precision: str
    alpha: float
    beta_pos: float
    threshold: float
    partial: float
    temperature: float
    best_epoch: int
    valid_map: float
    test_map: float
    steps_per_epoch: int
    curve: str | None
    task: str = TASK

    def to_dict(self) -> dict:
        """The record as run.json and results.json write it."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, raw: object, where: str) -> SpmlRunRecord:
        """The record of a run.json or results.json entry; InputError naming ``where`` for anything malformed."""
        if not isinstance(raw, dict):
            raise InputError(f"{where} is not a JSON object")
        values = {}
        for field in dataclasses.fields(cls):
            if field.name not in raw:
                raise InputError(f"{where} lacks '{field.name}'")
            values[field.name] = _checked(raw[field.name], field.name, where)
        for key in ("valid_map", "test_map"):
            if not 0.0 <= values[key] <= 1.0 and values[key] == values[key]:  # NaN: a diverged run, kept as such
                raise InputError(f"{where}: {key} {values[key]} is not a share in [0, 1]")
        return cls(**values)

    @property
    def lr_selection(self) -> bool:
        """SPML benchmarks run no test-chosen lr grid: every run is a result."""
        return False

    def setting(self) -> tuple:
        """What sets a table apart: the model and how it is trained (a row tells CLIP and VLPL settings apart)."""
        return (self.model, self.epochs, self.batch_size, self.image_size, self.init, self.precision)


_FLOATS = {"lr", "alpha", "beta_pos", "threshold", "partial", "temperature", "valid_map", "test_map"}
_INTS = {"seed", "epochs", "batch_size", "best_epoch", "steps_per_epoch"}
_OPTIONAL = {"image_size", "init", "clip_model", "curve"}


def _checked(value, key: str, where: str):
    """``value`` of field ``key`` checked to have its type (an int passes for a float; null only where allowed)."""
    if value is None and key in _OPTIONAL:
        return None
    if key in _FLOATS:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif key in _INTS or key == "image_size":
        ok = isinstance(value, int) and not isinstance(value, bool)
    else:
        ok = isinstance(value, str)
    if not ok:
        raise InputError(f"{where}: '{key}' has the wrong type: {value!r}")
    if key == "task" and value != TASK:
        raise InputError(f"{where}: task {value!r} is not {TASK!r}")
    return value


def spml_run_folder(output_dir: Path, record: SpmlRunRecord, seed: int, lr: float) -> Path:
    """DIR/runs/<dataset>/<strategy>/<settings>: one folder per SPML run, named by what sets it apart.

    ``record`` gives the settings (its own seed and lr are ignored: a run's folder is known before it runs).
    """
    from aclbuild.bench.results import slug

    r = record
    size = f"_{r.image_size}px" if r.image_size else ""
    init = f"_init-{slug(Path(r.init).stem)}" if r.init else ""
    clip = f"_{slug(r.clip_model)}" if r.clip_model else ""
    vlpl = "" if r.strategy == ZERO_SHOT else f"_a{r.alpha:g}_bp{r.beta_pos:g}_t{r.threshold:g}_p{r.partial:g}"
    name = f"{r.model}{size}_e{r.epochs}_b{r.batch_size}_{r.precision}{init}{vlpl}_T{r.temperature:g}{clip}"
    name += f"_seed{seed}_lr{lr:g}"
    return Path(output_dir) / "runs" / slug(r.dataset) / r.strategy / name


ROW_DIMS = ("clip_model", "alpha", "beta_pos", "threshold", "partial", "temperature")  # named in a row where varied
ZERO_SHOT_DIMS = ("clip_model", "temperature")  # what CLIP's own scores depend on


def _heading(setting: tuple, group: Sequence[SpmlRunRecord]) -> list[str]:
    model, epochs, batch_size, image_size, init, precision = setting
    what = f"{model} at {image_size}x{image_size}" if image_size else f"{model} (a linear head on CLIP features)"
    start = f"initialised from {init}" if init else "random init" if model == "resnet50" else ""
    clips = sorted({r.clip_model for r in group if r.clip_model})
    clip = f"CLIP {', '.join(clips)}" if clips else "no CLIP"
    details = ", ".join(part for part in (start, clip, precision) if part)
    runs = f"{epochs} epoch{'s' if epochs != 1 else ''}, batch {batch_size}"
    return [f"## Single-positive multi-label: {what}, {runs}", "", f"{details}.", ""]


def _row_labels(group: Sequence[SpmlRunRecord]) -> dict[int, str]:
    """Each run's row: its strategy, with the CLIP and VLPL settings that vary within the table named."""
    varied = [d for d in ROW_DIMS if len({getattr(r, d) for r in group if getattr(r, d) is not None}) > 1]
    labels = {}
    for run in group:
        dims = [d for d in varied if run.strategy != ZERO_SHOT or d in ZERO_SHOT_DIMS]
        parts = [f"{d} {getattr(run, d):g}" if isinstance(getattr(run, d), float) else str(getattr(run, d))
                 for d in dims if getattr(run, d) is not None]  # fmt: skip
        labels[id(run)] = run.strategy + (f" ({', '.join(parts)})" if parts else "")
    return labels


@dataclass(frozen=True)
class SpmlCell:
    """One table cell: the seed runs of a (setting, row, dataset) at the lr with the best mean validation mAP."""

    setting: tuple
    label: str  # the row: the strategy, with the CLIP or VLPL settings that vary within the table
    dataset: str
    lr: float
    lrs_tried: int
    runs: tuple[SpmlRunRecord, ...]  # by seed


def spml_cells(runs: Sequence[SpmlRunRecord]) -> list[SpmlCell]:
    """Every cell of the SPML tables, in the order the runs first show each setting, row and dataset; results.md
    and the report's curves are made from the same cells."""
    from aclbuild.bench.results import choose_lr

    groups: dict[tuple, list[SpmlRunRecord]] = defaultdict(list)
    for run in runs:
        groups[run.setting()].append(run)
    cells = []
    for setting, group in groups.items():
        labels = _row_labels(group)
        members: dict[tuple, list[SpmlRunRecord]] = defaultdict(list)
        for run in group:
            members[(labels[id(run)], run.dataset)].append(run)
        for (label, dataset), cell_runs in members.items():
            lrs = {lr: [r.valid_map for r in cell_runs if r.lr == lr] for lr in {r.lr for r in cell_runs}}
            lr = choose_lr(lrs)
            chosen = tuple(sorted((r for r in cell_runs if r.lr == lr), key=lambda r: r.seed))
            cells.append(SpmlCell(setting, label, dataset, lr, len(lrs), chosen))
    return cells


def spml_results_markdown(runs: Sequence[SpmlRunRecord]) -> list[str]:
    """The lines of results.md's SPML tables (in %): rows strategies, columns datasets, one table per setting."""
    from aclbuild.bench.results_tables import AccuracyCell, accuracy_table

    cells = spml_cells(runs)
    lines: list[str] = []
    for setting in dict.fromkeys(cell.setting for cell in cells):
        group = [r for r in runs if r.setting() == setting]
        lines += _heading(setting, group) + [MAP_CAPTION, ""]
        datasets = list(dict.fromkeys(r.dataset for r in group))
        names = {r.dataset: r.dataset_name for r in group}
        table = {(c.label, c.dataset): c for c in cells if c.setting == setting}
        rows = []
        for label in dict.fromkeys(label for label, _ in table):
            row = []
            for dataset in datasets:
                cell = table.get((label, dataset))
                note = f" (lr {cell.lr:g})" if cell and cell.lrs_tried > 1 else ""
                row.append(AccuracyCell(tuple(r.test_map for r in cell.runs), note) if cell else None)
            rows.append((label, row))
        lines += [accuracy_table("strategy", [names[d] for d in datasets], rows), ""]
    return lines
