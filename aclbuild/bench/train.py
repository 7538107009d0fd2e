"""One training run of the reference protocol, airbench-style: readable, and fast where the data fits on the device.

Protocol (cll-benchmark.md): Adam with no weight decay and no schedule; validate every ``eval_every`` epochs by
true-label accuracy of the held-out 10% or by a CL-only risk (URE, SCEL; lower is better; see validation.py);
report the test accuracy of the best-validation checkpoint. Test accuracy is measured at every validation, so the
best checkpoint's test accuracy is read off the curve instead of reloading a saved model (the same number, without
the disk round trip). Batches are libcll's by default: 256 images with all their CLs (see batches.py).

Fast path (images up to 64x64): the whole uint8 dataset sits on the device; each batch is gathered, cropped,
flipped and normalised there with tensor operations, so no DataLoader worker is involved. The DataLoader path does
the same augmentation per image on the CPU, as torchvision would; `benchmarks/bench_train.py` times one against the
other. Training goes through accelerate: CPU here, one or many GPUs elsewhere; fp32 as libcll by default, bf16
autocast on GPU with ``precision="bf16"`` (not yet measured to leave the accuracies within their seed spread).

Example:
    >>> result = train_run("FWD", run_data, TrainConfig(model="mlp", epochs=20, lr=1e-3), "curve.csv")  # doctest: +SKIP
    >>> result.test_accuracy, result.steps_per_epoch                                                       # doctest: +SKIP
"""

from __future__ import annotations

import csv
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from aclbuild.atomic import atomic_file
from aclbuild.bench.batches import Augment, AugmentedUnits, BatchPlan, check_batch_by
from aclbuild.bench.models import INITS, MLP_HIDDEN, build_model
from aclbuild.bench.strategies import Strategy, build_strategy
from aclbuild.bench.validation import VALID_RULES, VALID_TYPES, check_valid_rule, evaluate
from aclbuild.cl_data import ClData
from aclbuild.errors import InputError
from aclbuild.progress import progress_bar

__all__ = ["Augment", "RunData", "RunResult", "TrainConfig", "check_config", "make_accelerator", "train_run"]
PRECISIONS = ("fp32", "bf16")
FAST_PATH_MAX_SIZE = 64


@dataclass(frozen=True)
class TrainConfig:
    """Settings of one run; defaults are the reference protocol's as libcll runs it."""

    model: str = "resnet34"
    epochs: int = 300
    lr: float = 1e-4
    batch_size: int = 256
    seed: int = 1126
    valid_type: str = "accuracy"
    eval_every: int = 10
    loader: str = "auto"  # "fast" (on-device), "dataloader", or "auto": fast up to 64x64
    workers: int = 0  # DataLoader worker processes (the DataLoader path only)
    batch_by: str = "image"  # "image": batch_size images with all their CLs (libcll); "pair": batch_size pairs
    hidden_dim: int = MLP_HIDDEN  # the MLP's hidden width
    init: str = "kaiming"  # convolution init: "kaiming" (libcll's) or "pytorch"
    valid_rule: str = "empirical"  # T of the CL-only risks: "empirical" everywhere or per "strategy" (libcll)
    vlpl_alpha: float = 0.1  # the VLPL family's entropy weight on unknowns (VLPL: 0.2 VOC, 0.1 COCO/NUS, 0.01 CUB)


@dataclass(frozen=True)
class RunData:
    """The three parts of one run: training images with their CLs, validation images, test images.

    ``train_states`` (N_train x K, for the VLPL family) marks -1 CLs, 1 the CLIP pseudo-positive, 0 unknown.
    """

    train: ClData
    valid: ClData
    test: ClData
    train_states: Tensor | None = None


@dataclass(frozen=True)
class RunResult:
    best_epoch: int
    valid_score: float
    test_accuracy: float
    curve: list[dict]
    epoch_seconds: list[float]  # training time of each epoch, evaluation excluded
    steps_per_epoch: int = 0  # optimiser steps in an epoch (on each process)


def check_config(config: TrainConfig) -> None:
    """Raise InputError for any setting out of range, naming the option to fix."""
    if config.valid_type not in VALID_TYPES:
        raise InputError(f"--valid-type must be one of {', '.join(VALID_TYPES)}, got {config.valid_type!r}")
    if config.valid_rule not in VALID_RULES:
        raise InputError(f"--valid-rule must be one of {', '.join(VALID_RULES)}, got {config.valid_rule!r}")
    if config.init not in INITS:
        raise InputError(f"--init must be one of {', '.join(INITS)}, got {config.init!r}")
    check_batch_by(config.batch_by)
    if config.epochs < 1 or config.eval_every < 1 or config.batch_size < 1 or config.hidden_dim < 1:
        raise InputError("--epochs, --eval-every, --batch-size and --hidden-dim must be at least 1")
    if not config.lr > 0:
        raise InputError(f"learning rates must be positive, got {config.lr}")
    if not config.vlpl_alpha >= 0:
        raise InputError(f"--vlpl-alpha must be 0 or more, got {config.vlpl_alpha}")


def _targets(strategy: Strategy, data: RunData) -> tuple[Tensor, Tensor]:
    """(image row, target) of every training row, in the layout the strategy needs."""
    train = data.train
    if strategy.needs == "cl":
        return train.pair_image, train.pair_cl
    rows = torch.arange(len(train.images))
    if strategy.needs == "y":
        return rows, train.ord_labels
    if strategy.needs == "cl_set":
        return rows, train.multi_hot
    if data.train_states is None:
        raise InputError(f"{strategy.name} needs CLIP pseudo-labels (run it through `aclbuild benchmark`)")
    return rows, data.train_states


def _as_nchw(images: Tensor) -> Tensor:
    return images if images.shape[1] == 3 else images.permute(0, 3, 1, 2).contiguous()


def make_accelerator(cpu: bool = False, precision: str = "fp32"):
    """An Accelerator: bf16 autocast on GPU when ``precision`` is bf16, full precision otherwise (and on CPU)."""
    from accelerate import Accelerator

    if precision not in PRECISIONS:
        raise InputError(f"--precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    use_gpu = torch.cuda.is_available() and not cpu
    return Accelerator(cpu=not use_gpu, mixed_precision="bf16" if use_gpu and precision == "bf16" else "no")


def precision_of(accelerator) -> str:
    """The precision the accelerator trains in: ``bf16`` or ``fp32``."""
    return "bf16" if str(accelerator.mixed_precision) == "bf16" else "fp32"


def _write_curve(path: Path, curve: list[dict]) -> None:
    """The run's curve CSV, written atomically (report reads it beside run.json)."""
    with atomic_file(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, ["epoch", "train_loss", "valid_score", "test_accuracy"])
        writer.writeheader()
        writer.writerows(curve)


def _tensorboard(path: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is optional; the CSV curve is always written
        return None
    return SummaryWriter(str(path.with_suffix("")) + "-tb")


def train_run(
    strategy_name: str, data: RunData, config: TrainConfig, curve_path: str | Path | None = None, accelerator=None
) -> RunResult:
    """Train one (strategy, seed, lr) run; write its curve CSV; return the best-validation numbers."""
    check_config(config)
    check_valid_rule(strategy_name, config.valid_type, config.valid_rule)
    accelerator = accelerator or make_accelerator()
    device = accelerator.device
    torch.manual_seed(config.seed)
    train = data.train
    num_classes, image_size = train.num_classes, train.images.shape[2]
    strategy = build_strategy(
        strategy_name, train.transition_matrix, torch.bincount(train.pair_cl, minlength=num_classes), config.vlpl_alpha
    ).to(device)
    model = build_model(config.model, num_classes, image_size, config.hidden_dim, config.init).to(device)
    if device.type == "cuda":  # channels-last convolutions are the fast ones on GPU
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam([*model.parameters(), *strategy.parameters()], lr=config.lr, weight_decay=0)
    model, optimizer = accelerator.prepare(model, optimizer)
    augment = Augment.for_size(image_size)
    rows, targets = _targets(strategy, data)
    by_image = config.batch_by == "image" and strategy.needs == "cl"  # other strategies' rows are images already
    plan = BatchPlan(rows, targets, len(train.images), by_image, config.batch_size)
    fast = config.loader == "fast" or (config.loader == "auto" and image_size <= FAST_PATH_MAX_SIZE)
    train_images = _as_nchw(train.images)
    if fast:
        train_images = train_images.to(device)
    else:
        units = AugmentedUnits(train_images, plan, augment)
        loader = torch.utils.data.DataLoader(
            units, batch_size=config.batch_size, shuffle=True, generator=torch.Generator().manual_seed(config.seed),
            num_workers=config.workers, pin_memory=device.type == "cuda", persistent_workers=config.workers > 0,
            collate_fn=units.collate,
        )  # fmt: skip
        loader = accelerator.prepare(loader)
    generator = torch.Generator().manual_seed(config.seed)
    lower_is_better = config.valid_type != "accuracy"
    best = (0, math.inf if lower_is_better else -math.inf, 0.0)
    curve: list[dict] = []
    seconds: list[float] = []
    steps = 0
    writer = _tensorboard(Path(curve_path)) if curve_path and accelerator.is_main_process else None
    run_name = f"{strategy_name} {train.name} {config.model} lr {config.lr:g} seed {config.seed}"
    last_valid = ""  # the latest validation, shown on every progress line until the next
    with progress_bar(run_name, config.epochs, "epochs") as advance:
        for epoch in range(1, config.epochs + 1):
            if fast:
                rank, world = accelerator.process_index, accelerator.num_processes
                batches = (
                    (augment.batch(train_images[images.to(device)]), expand, target.to(device))
                    for images, expand, target in plan.epoch(generator, rank, world)
                )
            else:
                batches = iter(loader)
            total, count, started = torch.zeros((), device=device), 0, time.perf_counter()
            for images, expand, target in batches:
                if expand is not None:  # image batching: row r of the loss belongs to image expand[r]
                    expand = expand.to(device)
                    if not plan.same_count:
                        images = images[expand]  # libcll's repeated images: batch norm weighs each by its CLs
                if device.type == "cuda":
                    images = images.contiguous(memory_format=torch.channels_last)
                with accelerator.autocast():
                    logits = model(images).float()
                if expand is not None and plan.same_count:
                    logits = logits[expand]  # equal CL counts: repeating the logits is repeating the images
                loss = strategy(logits, target)
                optimizer.zero_grad(set_to_none=True)
                accelerator.backward(loss)
                for param in strategy.parameters():  # CPE-T's matrix lies outside DDP: average its gradient here
                    if param.grad is not None and accelerator.num_processes > 1:
                        param.grad = accelerator.reduce(param.grad, "mean")
                optimizer.step()
                total, count = total + loss.detach(), count + 1  # no float() here: it would sync every step
            if device.type == "cuda":
                torch.cuda.synchronize()  # the step is asynchronous: wait for it before reading the clock
            seconds.append(time.perf_counter() - started)
            steps = steps or count
            row = {"epoch": epoch, "train_loss": float(total) / max(count, 1), "valid_score": "", "test_accuracy": ""}
            if epoch % config.eval_every == 0 or epoch == config.epochs:
                net = accelerator.unwrap_model(model)
                score = evaluate(net, strategy, data.valid, augment.normalise, device, config.valid_type,
                                 config.valid_rule, accelerator.autocast)  # fmt: skip
                test_acc = evaluate(net, strategy, data.test, augment.normalise, device, "accuracy",
                                    config.valid_rule, accelerator.autocast)  # fmt: skip
                row.update(valid_score=score, test_accuracy=test_acc)
                last_valid = f", valid {config.valid_type} {score:.4f} (epoch {epoch})"
                if (score < best[1]) if lower_is_better else (score > best[1]):
                    best = (epoch, score, test_acc)
                if writer is not None:
                    writer.add_scalar("valid_score", score, epoch)
                    writer.add_scalar("test_accuracy", test_acc, epoch)
            if writer is not None:
                writer.add_scalar("train_loss", row["train_loss"], epoch)
            curve.append(row)
            advance(note=f"loss {row['train_loss']:.4f}{last_valid}")
    if writer is not None:
        writer.close()
    if curve_path and accelerator.is_main_process:
        _write_curve(Path(curve_path), curve)
    if best[0] == 0:  # every validation score was NaN (a diverged run): report the last evaluation
        best = (curve[-1]["epoch"], curve[-1]["valid_score"], curve[-1]["test_accuracy"])
    return RunResult(best[0], float(best[1]), float(best[2]), curve, seconds, steps)
