"""`aclbuild benchmark`: the grid of runs, resuming, and the results files the `report` verb reads.

One run per (dataset, strategy, seed, lr). Each run lives in ``DIR/runs/<dataset>/<strategy>/<settings>/`` with its
curve (``curve.csv``, and TensorBoard when installed) and ``run.json``; a run whose ``run.json`` exists is skipped,
so an interrupted benchmark resumes where it stopped. ``DIR/results.json`` lists every finished run in DIR and
``DIR/results.md`` holds the mean +- std table (strategies x datasets, test accuracy in %): where several learning
rates were run, the one with the best mean validation score is chosen, as the reference's grid search does.

Example:
    >>> spec = BenchmarkSpec(["out/digits-uniform"], ["FWD", "SCL-NL"], model="mlp", epochs=20, lrs=[1e-3])  # doctest: +SKIP
    >>> runs = run_benchmark(spec, "bench-out")                                                              # doctest: +SKIP
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from aclbuild.bench.models import MODELS
from aclbuild.bench.strategies import CL_STRATEGIES, STRATEGIES, VLPL_STRATEGIES, strategy_class
from aclbuild.bench.train import RunData, TrainConfig, check_config, make_accelerator, train_run
from aclbuild.cl_data import ClData, estimate_transition, load_cl_dataset
from aclbuild.errors import InputError, UnknownNameError

REFERENCE_SEEDS = (1207, 9213, 17, 33)
VALID_FRACTION = 0.1
RESULTS_JSON, RESULTS_MD = "results.json", "results.md"
SETTING_KEYS = ("model", "epochs", "num_cl", "clean_noisy", "valid_type")


@dataclass(frozen=True)
class BenchmarkSpec:
    """Everything the command line gives `aclbuild benchmark`."""

    datasets: list[str]
    strategies: list[str]
    model: str = "resnet34"
    epochs: int = 300
    lrs: list[float] = field(default_factory=lambda: [1e-4])
    batch_size: int = 256
    seeds: list[int] = field(default_factory=lambda: list(REFERENCE_SEEDS))
    valid_type: str = "accuracy"
    eval_every: int = 10
    num_cl: int = 3
    clean_noisy: float = 0.0
    clip_model: str | None = None
    loader: str = "auto"
    types: list[str] = field(default_factory=list)  # libcll's --type, joined to each --strategy


def parse_lr_grid(text: str) -> list[float]:
    """``"1e-3,5e-4"`` -> [0.001, 0.0005]; raises InputError when empty or not numbers."""
    try:
        values = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise InputError(f"--lr-grid must be numbers separated by commas, got {text!r}") from None
    if not values:
        raise InputError("--lr-grid is empty; give at least one learning rate, e.g. 1e-3,1e-4")
    return values


def expand_strategies(names: list[str], clip_model: str | None, types: list[str] | None = None) -> list[str]:
    """Canonical names; ``all`` is every CL strategy and Ord, plus the VLPL family when a CLIP model is given.

    With ``types`` (libcll's spelling, ``--strategy URE --type NN --type GA``), each name that is not a strategy by
    itself is joined with each type: URE-NN, URE-GA. Example: ``expand_strategies(["SCL"], None, ["NL"]) ==
    ["SCL-NL"]``.
    """
    complete = {n.upper() for n in STRATEGIES} | {"ALL"}
    if types:
        names = [j for n in names for j in ([n] if n.upper() in complete else [f"{n}-{t}" for t in types])]
    chosen: list[str] = []
    for name in names:
        if name.lower() == "all":
            extra = [*CL_STRATEGIES, "Ord", *(VLPL_STRATEGIES if clip_model else ())]
        else:
            extra = [strategy_class(name).name]
        chosen += [n for n in extra if n not in chosen]
    if not chosen:
        raise InputError("give at least one --strategy (a name, or all)")
    return chosen


def split_indices(n: int, seed: int, valid_fraction: float = VALID_FRACTION) -> tuple[np.ndarray, np.ndarray]:
    """Seeded shuffle, first 90% train, last 10% validation (never trained on)."""
    order = np.random.default_rng(seed).permutation(n)
    cut = n - max(1, round(valid_fraction * n))
    return np.sort(order[:cut]), np.sort(order[cut:])


def prepare_run_data(train_split: ClData, test_split: ClData, seed: int, clean_noisy: float) -> RunData:
    """The 90/10 split of the train split; noisy pairs dropped from the training part; T estimated on it."""
    train_idx, valid_idx = split_indices(len(train_split.images), seed)
    train = train_split.subset(train_idx)
    if clean_noisy:
        train = train.drop_noisy(clean_noisy, seed)
    matrix = estimate_transition(train.ord_labels, train.pair_image, train.pair_cl, train.num_classes)
    valid = replace(train_split.subset(valid_idx), transition_matrix=matrix)
    return RunData(replace(train, transition_matrix=matrix), valid, replace(test_split, transition_matrix=matrix))


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text.strip("/")).strip("_") or "dataset"


def run_folder(output_dir: Path, dataset: str, strategy: str, spec: BenchmarkSpec, seed: int, lr: float) -> Path:
    settings = (
        f"{spec.model}_e{spec.epochs}_ncl{spec.num_cl}_clean{spec.clean_noisy:g}_{spec.valid_type}_seed{seed}_lr{lr:g}"
    )
    return output_dir / "runs" / slug(dataset) / strategy / settings


def _check_data(dataset: str, train: ClData, test: ClData, strategies: list[str], spec: BenchmarkSpec) -> None:
    if not len(train.pair_cl):
        raise InputError(f"{dataset}: the train split has no complementary labels")
    needs_truth = "Ord" in strategies or spec.valid_type == "accuracy"
    if needs_truth and not train.has_ord_labels:
        what = "Ord" if "Ord" in strategies else "--valid-type accuracy"
        raise InputError(f"{dataset} has no ord_labels (true labels) in its train split, which {what} needs")
    if not test.has_ord_labels:
        raise InputError(f"{dataset}: its test split lacks ord_labels, so test accuracy cannot be measured")


def load_splits(dataset: str, num_cl: int) -> tuple[ClData, ClData]:
    """(train, test) of a repository folder or Hub id, CLs kept as pairs, images N x 3 x H x W."""
    train = load_cl_dataset(dataset, "train", num_cl=num_cl, channels_first=True)
    test = load_cl_dataset(dataset, "test", num_cl=num_cl, channels_first=True)
    return train, test


def run_benchmark(spec: BenchmarkSpec, output_dir: str | Path, console=None, accelerator=None) -> list[dict]:
    """Run every missing run of the grid, then (re)write results.json and results.md; returns all runs in DIR.

    With a ``console``, each run's result and then the results table are printed (by the main process only).
    """
    output_dir = Path(output_dir)
    strategies = expand_strategies(spec.strategies, spec.clip_model, spec.types)
    if not spec.lrs:
        raise InputError("--lr-grid is empty; give at least one learning rate")
    if not spec.seeds:
        raise InputError("--seeds is empty; give at least one seed")
    if not spec.datasets:
        raise InputError("give at least one DATASET (a repository folder or a Hub id)")
    for lr in spec.lrs:
        check_config(TrainConfig(lr=lr, epochs=spec.epochs, valid_type=spec.valid_type, eval_every=spec.eval_every,
                                 batch_size=spec.batch_size))  # fmt: skip
    if spec.model not in MODELS:
        raise UnknownNameError(f"unknown model {spec.model!r}; choose one of: {', '.join(MODELS)}")
    vlpl = [s for s in strategies if s in VLPL_STRATEGIES]
    if vlpl and not spec.clip_model:
        raise InputError(f"{', '.join(vlpl)} need CLIP pseudo-labels: pass --clip-model (a checkpoint id or folder)")
    accelerator = accelerator or make_accelerator()
    for dataset in spec.datasets:
        train_split, test_split = load_splits(dataset, spec.num_cl)
        _check_data(dataset, train_split, test_split, strategies, spec)
        scores = None
        if spec.clip_model:
            from aclbuild.bench.vlpl import clip_scores, record_zero_shot

            scores = clip_scores(dataset, spec.clip_model, train_split, test_split)
            if accelerator.is_main_process:
                record_zero_shot(output_dir, dataset, scores, train_split, test_split, spec)
        for strategy in strategies:
            for seed in spec.seeds:
                data = prepare_run_data(train_split, test_split, seed, spec.clean_noisy)
                if strategy in VLPL_STRATEGIES:
                    from aclbuild.bench.vlpl import pseudo_label_states

                    train_idx, _ = split_indices(len(train_split.images), seed)
                    data = replace(data, train_states=pseudo_label_states(data.train, scores["train"][train_idx]))
                for lr in spec.lrs:
                    _one_run(
                        spec, output_dir, dataset, train_split.name, strategy, seed, lr, data, accelerator, console
                    )
                    accelerator.wait_for_everyone()  # every process sees the same finished runs before the next
    if not accelerator.is_main_process:
        return collect_runs(output_dir)
    runs = write_results(output_dir)
    if console:
        text = (output_dir / RESULTS_MD).read_text(encoding="utf-8")
        console.print(text, markup=False, highlight=False, soft_wrap=True)
    return runs


def _one_run(spec, output_dir, dataset, dataset_name, strategy, seed, lr, data, accelerator, console) -> None:
    folder = run_folder(output_dir, dataset, strategy, spec, seed, lr)
    if (folder / "run.json").is_file():
        if console and accelerator.is_main_process:
            console.print(f"  skip (done) {folder.relative_to(output_dir)}")
        return
    folder.mkdir(parents=True, exist_ok=True)
    config = TrainConfig(
        model=spec.model, epochs=spec.epochs, lr=lr, batch_size=spec.batch_size, seed=seed,
        valid_type=spec.valid_type, eval_every=spec.eval_every, loader=spec.loader,
    )  # fmt: skip
    result = train_run(strategy, data, config, folder / "curve.csv", accelerator)
    run = {
        "dataset": dataset, "dataset_name": dataset_name, "strategy": strategy, "model": spec.model, "seed": seed,
        "lr": lr, "num_cl": spec.num_cl, "clean_noisy": spec.clean_noisy, "valid_type": spec.valid_type,
        "epochs": spec.epochs, "best_epoch": result.best_epoch, "valid_score": result.valid_score,
        "test_accuracy": result.test_accuracy, "curve": (folder / "curve.csv").relative_to(output_dir).as_posix(),
    }  # fmt: skip
    if accelerator.is_main_process:
        tmp = folder / "run.json.tmp"
        tmp.write_text(json.dumps(run, indent=2) + "\n", encoding="utf-8")
        tmp.replace(folder / "run.json")  # written last and atomically: its presence means the run is complete
    if console and accelerator.is_main_process:
        console.print(f"  {strategy:8s} {dataset_name} seed {seed} lr {lr:g}: test {100 * result.test_accuracy:.2f}%")


def collect_runs(output_dir: Path) -> list[dict]:
    """Every finished run under DIR/runs, plus the CLIP-zero-shot rows, in a stable order."""
    runs = [json.loads(p.read_text(encoding="utf-8")) for p in sorted((output_dir / "runs").glob("**/run.json"))]
    order = {name: i for i, name in enumerate(["CLIP-zero-shot", *STRATEGIES])}
    return sorted(runs, key=lambda r: (r["dataset"], order.get(r["strategy"], 99), r["seed"], r["lr"]))


def _chosen_lr_runs(runs: list[dict], valid_type: str) -> list[dict]:
    """Runs of the learning rate with the best mean validation score (higher for accuracy, lower for risks)."""
    by_lr: dict[float, list[dict]] = defaultdict(list)
    for run in runs:
        by_lr[run["lr"]].append(run)
    sign = 1 if valid_type == "accuracy" else -1
    return max(by_lr.values(), key=lambda group: sign * float(np.mean([r["valid_score"] for r in group])))


def results_markdown(runs: list[dict]) -> str:
    """One mean +- std table (in %) per setting: rows strategies, columns datasets."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for run in runs:
        groups[tuple(run[k] for k in SETTING_KEYS)].append(run)
    lines = ["# Benchmark results", ""]
    for setting, group in groups.items():
        model, epochs, num_cl, clean, valid_type = setting
        lines += [
            f"## {model}, {epochs} epochs, {num_cl} CLs per image, cleaning {clean:g}, validation by {valid_type}",
            "", "Test accuracy (%) of the best-validation checkpoint, mean +- std (ddof=1) over seeds.", "",
        ]  # fmt: skip
        datasets = list(dict.fromkeys(r["dataset"] for r in group))
        names = {r["dataset"]: r["dataset_name"] for r in group}
        strategies = list(dict.fromkeys(r["strategy"] for r in group))
        lines.append("| strategy | " + " | ".join(names[d] for d in datasets) + " |")
        lines.append("|---|" + "---|" * len(datasets))
        for strategy in strategies:
            cells = []
            for dataset in datasets:
                cell_runs = [r for r in group if r["strategy"] == strategy and r["dataset"] == dataset]
                if not cell_runs:
                    cells.append("")
                    continue
                chosen = _chosen_lr_runs(cell_runs, valid_type)
                accs = 100 * np.array([r["test_accuracy"] for r in chosen])
                lr_note = f" (lr {chosen[0]['lr']:g})" if len({r["lr"] for r in cell_runs}) > 1 else ""
                spread = accs.std(ddof=1) if len(accs) > 1 else 0.0  # sample std over seeds
                cells.append(f"{accs.mean():.2f} +- {spread:.2f}{lr_note}")
            lines.append(f"| {strategy} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


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


def quick_benchmark(repo: str | Path, output_dir: str | Path, console=None) -> list[dict]:
    """The quickstart's short run: FWD and SCL-NL, an MLP, 10 epochs on one seed; prints the results table.

    Starts afresh (``output_dir`` is replaced), as the quickstart rebuilds its repository every time. Runs on one
    CPU thread: for a 64-500-10 MLP, thread synchronisation costs more than it saves (3-10x faster on 2 cores).
    """
    import shutil

    import torch

    spec = BenchmarkSpec(
        [str(repo)], ["FWD", "SCL-NL"], model="mlp", epochs=10, lrs=[1e-3], batch_size=64, seeds=[1207], eval_every=5
    )
    shutil.rmtree(output_dir, ignore_errors=True)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        runs = run_benchmark(spec, output_dir, console)
    finally:
        torch.set_num_threads(threads)
    return runs
