"""`aclbuild benchmark --task spml`: VLPL's single-positive multi-label runs, resumable, beside the CL benchmark.

One run per (dataset, loss, seed, lr), in ``DIR/runs/<dataset>/<loss>/<settings>/`` (spml_results.spml_run_folder)
with its curve CSV and ``run.json``; a run whose ``run.json`` exists is skipped, so an interrupted benchmark resumes.
``DIR/results.json`` and ``DIR/results.md`` list every finished run in DIR, CL and SPML alike (results.py).

Each dataset's hyper-parameters are VLPL's for it (bench/spml.py: alpha, beta, lr, batch size, epochs), found by the
repository's variant name (``voc2012-spml``, ...: the manifest's ``dataset``) or named with ``defaults_of``;
options given override them. A frozen CLIP runs once per dataset (cached; bench/spml_clip.py) where something needs
it: EM_PL's pseudo-labels, or the clip-linear model's features. With CLIP, a ``CLIP-zero-shot`` row gives the test
mAP of CLIP's scores s alone, so a reader sees how much of EM_PL is the pseudo-labels.

Example:
    >>> spec = SpmlBenchmarkSpec(["out/voc2012-spml"], ["EM_PL", "an"], model="clip-linear")  # doctest: +SKIP
    >>> runs = run_spml_benchmark(spec, "bench-out")                                          # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from aclbuild.bench.results import collect_runs, start_run, write_results, write_run
from aclbuild.bench.spml import VlplSettings, clip_softmax, pseudo_labels, vlpl_settings
from aclbuild.bench.spml_losses import LOSSES, loss_class
from aclbuild.bench.spml_results import ZERO_SHOT, SpmlRunRecord, spml_run_folder
from aclbuild.errors import InputError
from aclbuild.paths import check_output

PAPER_CLIP = "openai/clip-vit-large-patch14-336"  # VLPL's pseudo-labeller (ViT-L/14 at 336 px)
PAPER_SEEDS = (0,)  # VLPL's --pytorch_seed default
SETTING_OPTIONS = ("alpha", "beta_pos", "threshold", "partial", "temperature")


@dataclass(frozen=True)
class SpmlBenchmarkSpec:
    """What the command line gives `aclbuild benchmark --task spml`; None takes the dataset's VLPL default."""

    datasets: list[str]
    strategies: list[str]
    model: str = "resnet50"
    clip_model: str = PAPER_CLIP
    epochs: int | None = None
    lrs: list[float] | None = None
    batch_size: int | None = None
    seeds: list[int] = field(default_factory=lambda: list(PAPER_SEEDS))
    image_size: int = 448
    init: str | None = None
    workers: int = 4
    precision: str = "fp32"
    overrides: dict = field(default_factory=dict)  # VLPL settings by name (SETTING_OPTIONS), None = the default
    defaults_of: str | None = None  # whose VLPL defaults: voc2012-spml, ... (None: the repository's variant)


def expand_losses(names: list[str]) -> list[str]:
    """VLPL's loss names (bce, iun, an, EM, EM_APL, EM_PL; hyphens and any case accepted); ``all`` is every one."""
    chosen: list[str] = []
    for name in names:
        for canonical in LOSSES if name.lower() == "all" else [loss_class(name).name]:
            chosen += [canonical] if canonical not in chosen else []
    if not chosen:
        raise InputError("give at least one --strategy (bce, iun, an, EM, EM_APL, EM_PL, or all)")
    return chosen


def variant_of(dataset: str) -> str | None:
    """The SPML variant a repository was built as (its manifest's ``dataset``), or None where none is recorded."""
    from aclbuild.repository import MANIFEST, parse_manifest, read_manifest

    try:
        if Path(dataset).is_dir():
            return read_manifest(dataset).dataset
        from huggingface_hub import hf_hub_download

        path = hf_hub_download(dataset, MANIFEST, repo_type="dataset")
        return parse_manifest(Path(path).read_text(encoding="utf-8")).dataset
    except Exception:  # noqa: BLE001 - no manifest (a dataset not built by aclbuild), offline, unreadable
        return None


def dataset_settings(dataset: str, spec: SpmlBenchmarkSpec) -> VlplSettings:
    """VLPL's settings for ``dataset`` with the spec's options applied; one line when no defaults are known."""
    name = spec.defaults_of or variant_of(dataset)
    if name is None:
        raise InputError(f"{dataset} does not say which SPML set it is (no manifest names it): pass --vlpl-defaults "
                         "voc2012-spml, coco2014-spml, nuswide-spml or cub-spml to pick VLPL's settings")  # fmt: skip
    overrides = {key: spec.overrides.get(key) for key in SETTING_OPTIONS}
    defaults = vlpl_settings(name)
    epochs = _or(spec.epochs, defaults.epochs)
    warmup = min(defaults.apl_warmup, epochs - 1)  # EM_APL draws from this epoch on: within a short run
    return vlpl_settings(name, **overrides, epochs=epochs, batch_size=spec.batch_size, apl_warmup=warmup)


def run_config(spec: SpmlBenchmarkSpec, settings: VlplSettings, seed: int, lr: float):
    """The SpmlConfig of one run."""
    from aclbuild.bench.spml_train import SpmlConfig

    return SpmlConfig(model=spec.model, epochs=settings.epochs, lr=lr, batch_size=settings.batch_size, seed=seed,
                      image_size=spec.image_size, init=spec.init, workers=spec.workers)  # fmt: skip


def check_spml_spec(spec: SpmlBenchmarkSpec) -> None:
    """Refuse what the grid cannot run before any data is read: bad options, a missing --init file."""
    from aclbuild.bench.spml_train import SpmlConfig, check_spml_config

    if not spec.seeds:
        raise InputError("no seed; give at least one --seed (repeat it for several: --seed 0 --seed 1)")
    if not spec.datasets:
        raise InputError("give at least one DATASET (an SPML repository folder or Hub id)")
    if spec.lrs is not None and not spec.lrs:
        raise InputError("no learning rate; give at least one --lr, or none for VLPL's")
    for lr in spec.lrs or [1e-5]:  # epochs and batch size: the options, or VLPL's values where none is given
        config = SpmlConfig(model=spec.model, epochs=_or(spec.epochs, 10), lr=lr, batch_size=_or(spec.batch_size, 8),
                            image_size=spec.image_size, init=spec.init, workers=spec.workers)  # fmt: skip
        check_spml_config(config)
    # VLPL's options in range, and a known --vlpl-defaults (each dataset's own defaults are checked as it comes)
    vlpl_settings(spec.defaults_of or "voc2012-spml", **{key: spec.overrides.get(key) for key in SETTING_OPTIONS})
    if spec.init and not Path(spec.init).is_file():
        raise InputError(f"--init {spec.init}: no such file (give a .safetensors or torch file of ResNet-50 weights)")
    if spec.init and spec.model != "resnet50":
        raise InputError(f"--init loads ResNet-50 weights; --model {spec.model} has none to load")


def _or(value, default):
    """``value``, or ``default`` where the option was not given (0 stays 0, to be refused)."""
    return default if value is None else value


def _needs_clip(spec: SpmlBenchmarkSpec, losses: list[str]) -> bool:
    return spec.model == "clip-linear" or any("pseudo" in loss_class(name).needs for name in losses)


def run_spml_benchmark(spec: SpmlBenchmarkSpec, output_dir: str | Path, console=None, accelerator=None) -> list:
    """Run every missing run of the grid, then (re)write results.json and results.md; returns all runs in DIR."""
    from aclbuild.bench.spml_data import check_evaluable, load_spml_splits
    from aclbuild.bench.train import make_accelerator, precision_of

    output_dir = Path(output_dir)
    losses = expand_losses(spec.strategies)
    check_spml_spec(spec)
    inputs = [*(("the dataset", d) for d in spec.datasets), ("--clip-model", spec.clip_model), ("--init", spec.init)]
    check_output(output_dir, inputs)
    accelerator = accelerator or make_accelerator(precision=spec.precision)
    spec = replace(spec, precision=precision_of(accelerator))
    for dataset in spec.datasets:
        splits = load_spml_splits(dataset)  # first: a CL repository is refused as such
        check_evaluable(splits["validation"], "validation")
        check_evaluable(splits["test"], "test")
        settings = dataset_settings(dataset, spec)
        clip = None
        if _needs_clip(spec, losses):
            from aclbuild.bench.spml_clip import spml_clip_outputs

            clip = spml_clip_outputs(dataset, spec.clip_model, splits, workers=spec.workers)
            if accelerator.is_main_process:
                _record_zero_shot(output_dir, dataset, splits, clip, settings, spec)
        for loss in losses:
            data = _run_data(splits, clip, settings, spec, loss)
            for seed in spec.seeds:
                for lr in spec.lrs or [settings.lr]:
                    _one_run(spec, output_dir, dataset, loss, seed, lr, data, settings, accelerator, console)
    if not accelerator.is_main_process:
        return collect_runs(output_dir)
    return write_results(output_dir, console)  # and the table printed


def _run_data(splits, clip, settings: VlplSettings, spec: SpmlBenchmarkSpec, loss: str):
    """The SpmlRunData of one loss: CLIP features for clip-linear, pseudo-labels where the loss takes them."""
    from aclbuild.bench.spml_train import SpmlRunData

    pseudo = features = None
    if clip is not None and "pseudo" in loss_class(loss).needs:
        scores = clip_softmax(clip["train"].cosines, settings.temperature)
        pseudo = pseudo_labels(scores, settings.threshold, settings.partial)
    if spec.model == "clip-linear":
        features = {"train": clip["train"].features, "valid": clip["validation"].features,
                    "test": clip["test"].features}  # fmt: skip
    return SpmlRunData(splits["train"], splits["validation"], splits["test"], pseudo, features)


def _template(spec, dataset, dataset_name, loss, settings, uses_clip: bool) -> SpmlRunRecord:
    """A record of the run's settings (figures zero), which names its folder before it runs."""
    return SpmlRunRecord(
        dataset=dataset, dataset_name=dataset_name, strategy=loss, model=spec.model, seed=0, lr=0.0,
        epochs=settings.epochs, batch_size=settings.batch_size,
        image_size=spec.image_size if spec.model == "resnet50" else None,
        init=str(spec.init) if spec.init else None, clip_model=str(spec.clip_model) if uses_clip else None,
        precision=spec.precision, alpha=settings.alpha, beta_pos=settings.beta_pos, threshold=settings.threshold,
        partial=settings.partial, temperature=settings.temperature, best_epoch=0, valid_map=0.0, test_map=0.0,
        steps_per_epoch=0, curve=None,
    )  # fmt: skip


def _one_run(spec, output_dir, dataset, loss, seed, lr, data, settings, accelerator, console) -> None:
    from aclbuild.bench.spml_train import train_spml_run

    uses_clip = spec.model == "clip-linear" or data.pseudo is not None
    template = _template(spec, dataset, data.train.name, loss, settings, uses_clip)
    folder = spml_run_folder(output_dir, template, seed, lr)
    if not start_run(folder, output_dir, accelerator.is_main_process, console):
        return
    result = train_spml_run(loss, data, run_config(spec, settings, seed, lr), settings, folder / "curve.csv",
                            accelerator)  # fmt: skip
    record = replace(template, seed=seed, lr=lr, best_epoch=result.best_epoch, valid_map=result.valid_map,
                     test_map=result.test_map, steps_per_epoch=result.steps_per_epoch,
                     curve=(folder / "curve.csv").relative_to(output_dir).as_posix())  # fmt: skip
    if accelerator.is_main_process:
        write_run(folder, record)  # written last: its presence means the run is complete
        if console:
            console.print(f"  {loss:8s} {data.train.name} seed {seed} lr {lr:g}: test mAP {100 * result.test_map:.2f}")
    accelerator.wait_for_everyone()


def _record_zero_shot(output_dir, dataset, splits, clip, settings, spec) -> None:
    """The CLIP-zero-shot row: the validation and test mAP of CLIP's scores s alone (no training)."""
    from aclbuild.bench.spml_metrics import mean_average_precision

    def score(key: str) -> float:
        return mean_average_precision(clip_softmax(clip[key].cosines, settings.temperature).numpy(),
                                      splits[key].labels.numpy())  # fmt: skip

    zero = _template(spec, dataset, splits["train"].name, ZERO_SHOT, settings, True)  # the settings of its table
    folder = spml_run_folder(output_dir, zero, 0, 0.0)
    if not start_run(folder, output_dir, main_process=True):
        return
    write_run(folder, replace(zero, valid_map=score("validation"), test_map=score("test")))
