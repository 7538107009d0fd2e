"""`aclbuild benchmark`: the grid of runs, resuming, and the results files the `report` verb reads.

One run per (dataset, strategy, seed, lr). Each run lives in ``DIR/runs/<dataset>/<strategy>/<settings>/`` with its
curve (``curve.csv``, and TensorBoard when installed) and ``run.json``; a run whose ``run.json`` exists is skipped,
so an interrupted benchmark resumes where it stopped. ``DIR/results.json`` lists every finished run in DIR and
``DIR/results.md`` holds the mean +- std table (strategies x datasets, test accuracy in %): where several learning
rates were run, the one with the best mean validation score is chosen (``lr_select="validation"``), or, as libcll's
scripts do (``lr_select="reference"``), the grid is run at one seed (1126), the lr with the best TEST accuracy there
is kept and only then are the seeds run at it (results.py). Each run record says how it was made: batching,
precision, init, MLP width, validation rule and lr rule beside the model, epochs and CLs.

``num_cl=0`` is libcll's random number of CLs: for each seed, every training image gets s CLs, s drawn with
probability C(K-1, s) / (2^(K-1) - 1), the CLs drawn without replacement from the uniform transition matrix given
its true label (libcll's synthetic CLs; the repository's stored CLs are not used).

Example:
    >>> spec = BenchmarkSpec(["out/digits-uniform"], ["FWD", "SCL-NL"], model="mlp", epochs=20, lrs=[1e-3])  # doctest: +SKIP
    >>> runs = run_benchmark(spec, "bench-out")                                                              # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from aclbuild.bench.models import MLP_HIDDEN, MODELS
from aclbuild.bench.results import (
    RESULTS_JSON,
    RESULTS_MD,
    RUN_JSON,
    RunRecord,
    choose_lr,
    collect_runs,
    read_run,
    run_folder,
    start_run,
    write_results,
    write_run,
)
from aclbuild.bench.strategies import CL_STRATEGIES, STRATEGIES, VLPL_STRATEGIES, strategy_class
from aclbuild.bench.train import RunData, TrainConfig, check_config, make_accelerator, precision_of, train_run
from aclbuild.bench.validation import check_valid_rule
from aclbuild.cl_data import ClData, estimate_transition, load_cl_dataset, with_random_cls
from aclbuild.errors import InputError, UnknownNameError
from aclbuild.paths import check_output
from aclbuild.progress import quiet_library_bars

__all__ = ["RESULTS_JSON", "RESULTS_MD", "BenchmarkSpec", "collect_runs", "run_benchmark", "write_results"]
REFERENCE_SEEDS = (1207, 9213, 17, 33)
LR_SELECTION_SEED = 1126  # libcll's scripts run the lr grid at this seed only
LR_SELECTS = ("validation", "reference")
VALID_FRACTION = 0.1


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
    types: list[str] = field(default_factory=list)  # libcll's --type, joined to each --strategy
    batch_by: str = "image"  # libcll: batch_size images with all their CLs; "pair": batch_size (image, CL) pairs
    precision: str = "fp32"  # "bf16": autocast on GPU (CPU runs are fp32 whatever this says)
    hidden_dim: int = MLP_HIDDEN
    init: str = "kaiming"
    valid_rule: str = "empirical"  # or "strategy": the CL-only risks with each strategy's T, as libcll
    lr_select: str = "validation"  # or "reference": best TEST accuracy at lr_seed, then the seeds (libcll)
    lr_seed: int = LR_SELECTION_SEED
    vlpl_alpha: float = 0.1  # the entropy weight of AN, EM and EM-PL (VLPL's per-dataset alpha)

    def train_config(self, seed: int, lr: float) -> TrainConfig:
        """The TrainConfig of one run of this benchmark."""
        return TrainConfig(
            model=self.model, epochs=self.epochs, lr=lr, batch_size=self.batch_size, seed=seed,
            valid_type=self.valid_type, eval_every=self.eval_every, batch_by=self.batch_by,
            hidden_dim=self.hidden_dim, init=self.init, valid_rule=self.valid_rule, vlpl_alpha=self.vlpl_alpha,
        )  # fmt: skip

    def record(self) -> dict:
        """The settings every run record of this benchmark carries (results.py groups tables by them)."""
        return {
            "model": self.model, "num_cl": self.num_cl, "clean_noisy": self.clean_noisy,
            "valid_type": self.valid_type, "epochs": self.epochs, "valid_rule": self.valid_rule,
            "batch_by": self.batch_by, "precision": self.precision, "init": self.init,
            "hidden_dim": self.hidden_dim if self.model == "mlp" else None, "lr_select": self.lr_select,
        }  # fmt: skip


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


def _spec_run_folder(
    output_dir: Path, dataset: str, strategy: str, spec: BenchmarkSpec, seed: int, lr: float, selection: bool = False
) -> Path:
    """The folder of one run of ``spec`` (results.run_folder named by the spec's settings)."""
    return run_folder(output_dir, dataset, strategy, _run_settings(spec, strategy), seed, lr, selection)


def _run_settings(spec: BenchmarkSpec, strategy: str) -> dict:
    """The spec's settings of one strategy's runs: the VLPL family's also carry its alpha."""
    return {**spec.record(), "vlpl_alpha": spec.vlpl_alpha if strategy in VLPL_STRATEGIES else None}


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
    """(train, test) of a repository folder or Hub id, CLs kept as pairs, images N x 3 x H x W.

    With ``num_cl`` 0 (random CLs, drawn per seed by :func:`seed_data`) the first stored CL is loaded meanwhile.
    """
    train = load_cl_dataset(dataset, "train", num_cl=max(num_cl, 1), channels_first=True)
    test = load_cl_dataset(dataset, "test", num_cl=max(num_cl, 1), channels_first=True)
    return train, test


def seed_data(train_split: ClData, test_split: ClData, seed: int, spec: BenchmarkSpec) -> RunData:
    """One seed's RunData: its CLs drawn first when ``num_cl`` is 0 (libcll draws them after seeding the run)."""
    if spec.num_cl == 0:
        from aclbuild.labeling.synthetic import transition_matrix

        train_split = with_random_cls(train_split, transition_matrix("uniform", train_split.num_classes), seed)
    return prepare_run_data(train_split, test_split, seed, spec.clean_noisy)


def check_spec(spec: BenchmarkSpec, strategies: list[str]) -> None:
    """Raise InputError (UnknownNameError) for anything the grid cannot run, before any run starts."""
    if not spec.lrs:
        raise InputError("no learning rate; give at least one --lr (repeat it for a grid: --lr 1e-3 --lr 1e-4)")
    if not spec.seeds:
        raise InputError("no seed; give at least one --seed (repeat it for several: --seed 1 --seed 2)")
    if not spec.datasets:
        raise InputError("give at least one DATASET (a repository folder or a Hub id)")
    if spec.num_cl < 0:
        raise InputError(f"--num-cl must be 0 (a random number per image, as libcll) or more, got {spec.num_cl}")
    if spec.lr_select not in LR_SELECTS:
        raise InputError(f"--lr-select must be one of {', '.join(LR_SELECTS)}, got {spec.lr_select!r}")
    for lr in spec.lrs:
        check_config(spec.train_config(spec.seeds[0], lr))
    if spec.model not in MODELS:
        raise UnknownNameError(f"unknown model {spec.model!r}; choose one of: {', '.join(MODELS)}")
    for strategy in strategies:
        check_valid_rule(strategy, spec.valid_type, spec.valid_rule)
    vlpl = [s for s in strategies if s in VLPL_STRATEGIES]
    if vlpl and not spec.clip_model:
        raise InputError(f"{', '.join(vlpl)} need CLIP pseudo-labels: pass --clip-model (a checkpoint id or folder)")


def run_benchmark(spec: BenchmarkSpec, output_dir: str | Path, console=None, accelerator=None) -> list[RunRecord]:
    """Run every missing run of the grid, then (re)write results.json and results.md; returns all runs in DIR.

    With a ``console``, each run's result and then the results table are printed (by the main process only).
    """
    output_dir = Path(output_dir)
    strategies = expand_strategies(spec.strategies, spec.clip_model, spec.types)
    check_spec(spec, strategies)
    inputs = [*(("the dataset", dataset) for dataset in spec.datasets), ("--clip-model", spec.clip_model)]
    check_output(output_dir, inputs)  # a Hub id is no path: skipped
    quiet_library_bars()  # in a log, only our plain progress lines (datasets' tqdm bars garble it)
    accelerator = accelerator or make_accelerator(precision=spec.precision)
    spec = replace(spec, precision=precision_of(accelerator))  # what the runs train in (fp32 on CPU)
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
            _strategy_runs(spec, output_dir, dataset, (train_split, test_split), strategy, scores, accelerator, console)
    if not accelerator.is_main_process:
        return collect_runs(output_dir)
    return write_results(output_dir, console)  # and the table printed


def _strategy_runs(spec, output_dir, dataset, splits, strategy, scores, accelerator, console) -> None:
    """Every run of one strategy on one dataset; with ``lr_select="reference"`` first the grid at ``lr_seed``."""
    train_split, test_split = splits

    def data_of(seed: int) -> RunData:
        data = seed_data(train_split, test_split, seed, spec)
        if strategy in VLPL_STRATEGIES:
            from aclbuild.bench.vlpl import pseudo_label_states

            train_idx, _ = split_indices(len(train_split.images), seed)
            data = replace(data, train_states=pseudo_label_states(data.train, scores["train"][train_idx]))
        return data

    def run(seed: int, lr: float, data: RunData, selection: bool = False) -> RunRecord:
        _one_run(spec, output_dir, dataset, train_split.name, strategy, seed, lr, data, accelerator, console, selection)
        accelerator.wait_for_everyone()  # every process sees the same finished runs before the next
        return read_run(_spec_run_folder(output_dir, dataset, strategy, spec, seed, lr, selection) / RUN_JSON)

    lrs = spec.lrs
    if spec.lr_select == "reference" and len(lrs) > 1:  # libcll: the grid at one seed, judged by TEST accuracy
        data = data_of(spec.lr_seed)
        tried = {lr: [run(spec.lr_seed, lr, data, selection=True).test_accuracy] for lr in lrs}
        lrs = [choose_lr(tried)]  # the rule results.md and report.md apply to these runs
    for seed in spec.seeds:
        data = data_of(seed)
        for lr in lrs:
            run(seed, lr, data)


def _one_run(
    spec, output_dir, dataset, dataset_name, strategy, seed, lr, data, accelerator, console, selection=False
) -> None:
    folder = _spec_run_folder(output_dir, dataset, strategy, spec, seed, lr, selection)
    if not start_run(folder, output_dir, accelerator.is_main_process, console):
        return
    result = train_run(strategy, data, spec.train_config(seed, lr), folder / "curve.csv", accelerator)
    record = RunRecord(
        dataset=dataset, dataset_name=dataset_name, strategy=strategy, seed=seed, lr=lr,
        **_run_settings(spec, strategy), lr_selection=selection, steps_per_epoch=result.steps_per_epoch,
        best_epoch=result.best_epoch,
        valid_score=result.valid_score, test_accuracy=result.test_accuracy,
        curve=(folder / "curve.csv").relative_to(output_dir).as_posix(),
    )  # fmt: skip
    if accelerator.is_main_process:
        write_run(folder, record)  # written last: its presence means the run is complete
    if console and accelerator.is_main_process:
        role = " (lr selection)" if selection else ""
        console.print(
            f"  {strategy:8s} {dataset_name} seed {seed} lr {lr:g}{role}: test {100 * result.test_accuracy:.2f}%"
        )


def quick_benchmark(repo: str | Path, output_dir: str | Path, console=None) -> list[RunRecord]:
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
