"""One training run of the reference protocol, airbench-style: readable, and fast where the data fits on the device.

Protocol (cll-benchmark.md): Adam with no weight decay and no schedule; validate every ``eval_every`` epochs by
true-label accuracy of the held-out 10% or by a CL-only risk (URE, SCEL; lower is better); report the test accuracy
of the best-validation checkpoint. Test accuracy is measured at every validation, so the best checkpoint's test
accuracy is read off the curve instead of reloading a saved model (the same number, without the disk round trip).

Fast path (images up to 64x64): the whole uint8 dataset sits on the device; each batch is gathered, cropped,
flipped and normalised there with tensor operations, so no DataLoader worker is involved. The DataLoader path does
the same augmentation per image on the CPU, as torchvision would; `benchmarks/bench_train.py` times one against the
other. Training goes through accelerate: CPU here, one or many GPUs elsewhere, bf16 autocast on GPU.

Example:
    >>> result = train_run("FWD", run_data, TrainConfig(model="mlp", epochs=20, lr=1e-3), "curve.csv")  # doctest: +SKIP
    >>> result.test_accuracy                                                                               # doctest: +SKIP
"""

from __future__ import annotations

import csv
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from aclbuild.bench.models import build_model
from aclbuild.bench.strategies import Strategy, build_strategy
from aclbuild.cl_data import ClData
from aclbuild.errors import InputError
from aclbuild.progress import progress_bar

VALID_TYPES = ("accuracy", "ure", "scel")
CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.247, 0.2435, 0.2616)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
FAST_PATH_MAX_SIZE = 64


@dataclass(frozen=True)
class TrainConfig:
    """Settings of one run; defaults are the reference protocol's."""

    model: str = "resnet34"
    epochs: int = 300
    lr: float = 1e-4
    batch_size: int = 256
    seed: int = 1126
    valid_type: str = "accuracy"
    eval_every: int = 10
    loader: str = "auto"  # "fast" (on-device), "dataloader", or "auto": fast up to 64x64
    workers: int = 0  # DataLoader worker processes (the DataLoader path only)


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


@dataclass(frozen=True)
class Augment:
    """Random crop with zero padding, horizontal flip, normalisation: the per-base reference augmentation."""

    padding: int
    flip: bool
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    @classmethod
    def for_size(cls, image_size: int) -> Augment:
        if image_size == 32:
            return cls(4, True, CIFAR_MEAN, CIFAR_STD)
        if image_size == 64:
            return cls(8, True, IMAGENET_MEAN, IMAGENET_STD)
        return cls(0, False, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))  # digits: a flipped or shifted 8x8 digit is another

    def normalise(self, images: Tensor) -> Tensor:
        """uint8 B x 3 x H x W -> float, (x / 255 - mean) / std."""
        mean = torch.tensor(self.mean, device=images.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=images.device).view(1, 3, 1, 1)
        return (images.float() / 255 - mean) / std

    def batch(self, images: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Augment a uint8 batch on its device: one gather does every image's crop at once."""
        n, _, h, w = images.shape
        if self.padding:
            pad = self.padding
            padded = F.pad(images, (pad, pad, pad, pad))
            dy = torch.randint(0, 2 * pad + 1, (n,), device=images.device, generator=generator)
            dx = torch.randint(0, 2 * pad + 1, (n,), device=images.device, generator=generator)
            rows = (dy[:, None] + torch.arange(h, device=images.device))[:, None, :, None]
            cols = (dx[:, None] + torch.arange(w, device=images.device))[:, None, None, :]
            channels = torch.arange(3, device=images.device)[None, :, None, None]
            images = padded[torch.arange(n, device=images.device)[:, None, None, None], channels, rows, cols]
        if self.flip:
            flip = torch.rand(n, device=images.device, generator=generator) < 0.5
            images = torch.where(flip[:, None, None, None], images.flip(3), images)
        return self.normalise(images)


def check_config(config: TrainConfig) -> None:
    if config.valid_type not in VALID_TYPES:
        raise InputError(f"--valid-type must be one of {', '.join(VALID_TYPES)}, got {config.valid_type!r}")
    if config.epochs < 1 or config.eval_every < 1 or config.batch_size < 1:
        raise InputError("--epochs, --eval-every and --batch-size must be at least 1")
    if not config.lr > 0:
        raise InputError(f"learning rates must be positive, got {config.lr}")


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


@torch.no_grad()
def _evaluate(model, strategy: Strategy, data: ClData, augment: Augment, device, kind: str, autocast) -> float:
    """Accuracy (higher is better) or the URE / SCEL risk on the CL pairs (lower is better) of ``data``."""
    model.eval()
    images = _as_nchw(data.images)
    logits = []
    for start in range(0, len(images), 1024):
        with autocast():
            logits.append(model(augment.normalise(images[start : start + 1024].to(device))).float())
    logits = torch.cat(logits) if logits else torch.zeros(0, strategy.num_classes, device=device)
    model.train()
    if kind == "accuracy":
        return float((strategy.predict(logits).cpu() == data.ord_labels).double().mean())
    pair_logits, cls = logits[data.pair_image.to(device)], data.pair_cl.to(device)
    transition = data.transition_matrix.to(device)
    if kind == "ure":
        t_inv = torch.linalg.pinv(transition.double()).float()
        return float((-F.log_softmax(pair_logits, 1) * t_inv[cls]).sum(1).mean())
    cl_prob = (pair_logits.softmax(1) @ transition).gather(1, cls[:, None]).squeeze(1)
    return float(-torch.log(cl_prob + 1e-6).mean())


def _fast_batches(images: Tensor, rows: Tensor, targets: Tensor, config, augment, generator, rank, world):
    """Yield augmented device batches: a seeded permutation shared by all processes, each taking its slice."""
    order = torch.randperm(len(rows), generator=generator)
    share = len(order) // world
    order = order[rank * share : (rank + 1) * share].to(images.device)
    for start in range(0, len(order), config.batch_size):
        chosen = order[start : start + config.batch_size]
        yield augment.batch(images[rows[chosen]]), targets[chosen]


class _AugmentedRows(torch.utils.data.Dataset):
    """The DataLoader path: one (augmented image, target) per training row, augmented on the CPU per image."""

    def __init__(self, images: Tensor, rows: Tensor, targets: Tensor, augment: Augment):
        self.images, self.rows, self.targets, self.augment = images, rows, targets, augment

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int):
        return self.augment.batch(self.images[self.rows[i]][None])[0], self.targets[i]


def make_accelerator(cpu: bool = False):
    """An Accelerator with bf16 autocast on GPU, full precision on CPU."""
    from accelerate import Accelerator

    use_gpu = torch.cuda.is_available() and not cpu
    return Accelerator(cpu=not use_gpu, mixed_precision="bf16" if use_gpu else "no")


def _write_curve(path: Path, curve: list[dict]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, ["epoch", "train_loss", "valid_score", "test_accuracy"])
        writer.writeheader()
        writer.writerows(curve)
    tmp.replace(path)


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
    accelerator = accelerator or make_accelerator()
    device = accelerator.device
    torch.manual_seed(config.seed)
    train = data.train
    num_classes, image_size = train.num_classes, train.images.shape[2]
    strategy = build_strategy(
        strategy_name, train.transition_matrix, torch.bincount(train.pair_cl, minlength=num_classes)
    ).to(device)
    model = build_model(config.model, num_classes, image_size).to(device)
    if device.type == "cuda":  # channels-last convolutions are the fast ones under bf16 autocast
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam([*model.parameters(), *strategy.parameters()], lr=config.lr, weight_decay=0)
    model, optimizer = accelerator.prepare(model, optimizer)
    augment = Augment.for_size(image_size)
    rows, targets = _targets(strategy, data)
    fast = config.loader == "fast" or (config.loader == "auto" and image_size <= FAST_PATH_MAX_SIZE)
    train_images = _as_nchw(train.images)
    if fast:
        train_images, rows, targets = train_images.to(device), rows.to(device), targets.to(device)
    else:
        loader = torch.utils.data.DataLoader(
            _AugmentedRows(train_images, rows, targets, augment), batch_size=config.batch_size, shuffle=True,
            generator=torch.Generator().manual_seed(config.seed), num_workers=config.workers,
            pin_memory=device.type == "cuda", persistent_workers=config.workers > 0,
        )  # fmt: skip
        loader = accelerator.prepare(loader)
    generator = torch.Generator().manual_seed(config.seed)
    lower_is_better = config.valid_type != "accuracy"
    best = (0, math.inf if lower_is_better else -math.inf, 0.0)
    curve: list[dict] = []
    seconds: list[float] = []
    writer = _tensorboard(Path(curve_path)) if curve_path and accelerator.is_main_process else None
    with progress_bar(f"{strategy_name} {config.model} lr {config.lr:g} seed {config.seed}", config.epochs) as advance:
        for epoch in range(1, config.epochs + 1):
            if fast:
                rank, world = accelerator.process_index, accelerator.num_processes
                batches = _fast_batches(train_images, rows, targets, config, augment, generator, rank, world)
            else:
                batches = iter(loader)
            total, count, started = torch.zeros((), device=device), 0, time.perf_counter()
            for images, target in batches:
                if device.type == "cuda":
                    images = images.contiguous(memory_format=torch.channels_last)
                with accelerator.autocast():
                    loss = strategy(model(images).float(), target)
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
            row = {"epoch": epoch, "train_loss": float(total) / max(count, 1), "valid_score": "", "test_accuracy": ""}
            if epoch % config.eval_every == 0 or epoch == config.epochs:
                net = accelerator.unwrap_model(model)
                score = _evaluate(net, strategy, data.valid, augment, device, config.valid_type, accelerator.autocast)
                test_acc = _evaluate(net, strategy, data.test, augment, device, "accuracy", accelerator.autocast)
                row.update(valid_score=score, test_accuracy=test_acc)
                if (score < best[1]) if lower_is_better else (score > best[1]):
                    best = (epoch, score, test_acc)
                if writer is not None:
                    writer.add_scalar("valid_score", score, epoch)
                    writer.add_scalar("test_accuracy", test_acc, epoch)
            if writer is not None:
                writer.add_scalar("train_loss", row["train_loss"], epoch)
            curve.append(row)
            advance(note=f"loss {row['train_loss']:.4f}")
    if writer is not None:
        writer.close()
    if curve_path and accelerator.is_main_process:
        _write_curve(Path(curve_path), curve)
    if best[0] == 0:  # every validation score was NaN (a diverged run): report the last evaluation
        best = (curve[-1]["epoch"], curve[-1]["valid_score"], curve[-1]["test_accuracy"])
    return RunResult(best[0], float(best[1]), float(best[2]), curve, seconds)
