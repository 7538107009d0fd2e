"""One run of VLPL's single-positive multi-label protocol: a loss of spml_losses, a model, mAP per epoch.

Protocol (VLPL's ``main_clip.py``; see :mod:`aclbuild.bench.spml`): Adam at ``lr`` with no weight decay and no
schedule, ``batch_size`` images, ``epochs`` epochs; after each epoch the mAP (sigmoid scores, classes without a
positive skipped) of the validation and the test split; the reported figure is the test mAP of the epoch with the
best validation mAP, read off the curve (the same number as reloading that epoch's weights). The loss sees the
observed matrix (1 at each image's observed positive), and as it needs: the true labels (bce, iun), the
pseudo-labels (EM_PL), EM_APL's soft negatives, drawn after each epoch from ``apl_warmup`` on over the model's
predictions (eval mode, no flip) on the training split (:func:`aclbuild.bench.spml.asymmetric_pseudo_labels`).

Models (:mod:`aclbuild.bench.spml_models`): ResNet-50 on images through a DataLoader (:mod:`.spml_pipeline`), or,
when ``SpmlRunData.features`` is given, a linear head on those features (frozen CLIP image features: clip-linear),
the whole features tensor on the device and no DataLoader. accelerate picks the device; bf16 autocast on GPU with an
accelerator made by :func:`aclbuild.bench.train.make_accelerator` (``precision="bf16"``). One process: the run
does not shard batches across GPUs. The same seed gives the same curve on CPU.

Example:
    >>> data = SpmlRunData(train, valid, test, pseudo=pseudo)                            # doctest: +SKIP
    >>> result = train_spml_run("EM_PL", data, SpmlConfig(), vlpl_settings("voc"))       # doctest: +SKIP
    >>> result.test_map, result.best_epoch                                               # doctest: +SKIP
"""

from __future__ import annotations

import csv
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import Tensor, nn

from aclbuild.atomic import atomic_file
from aclbuild.bench.spml import VlplSettings, apl_counts, apl_due, asymmetric_pseudo_labels
from aclbuild.bench.spml_data import SpmlSplit, check_evaluable, observed_matrix
from aclbuild.bench.spml_losses import SpmlLoss, build_loss
from aclbuild.bench.spml_metrics import mean_average_precision
from aclbuild.bench.spml_models import SPML_MODELS, build_spml_model
from aclbuild.bench.spml_pipeline import feature_batches, image_loader
from aclbuild.errors import InputError
from aclbuild.progress import progress_bar

__all__ = ["CURVE_COLUMNS", "SpmlConfig", "SpmlRunData", "SpmlRunResult", "check_spml_config", "train_spml_run"]
CURVE_COLUMNS = ("epoch", "train_loss", "valid_map", "test_map")
EVAL_BATCH_FACTOR = 4  # evaluation batches: this many training batches' images (no gradients kept)


@dataclass(frozen=True)
class SpmlConfig:
    """Settings of one run; defaults are VLPL's (ResNet-50 at 448 px, Adam 1e-5, batch 8, 10 epochs)."""

    model: str = "resnet50"  # or "clip-linear"
    epochs: int = 10
    lr: float = 1e-5
    batch_size: int = 8
    seed: int = 1200
    image_size: int = 448  # resnet50's input side (VLPL: Resize((448, 448)), flip, ImageNet normalisation)
    init: str | None = None  # resnet50: a safetensors or torch file of ImageNet weights (torchvision's key names)
    workers: int = 0  # DataLoader workers decoding images (resnet50)


@dataclass(frozen=True)
class SpmlRunData:
    """The three splits of a run, with EM_PL's pseudo-labels and, for a linear head, each split's features."""

    train: SpmlSplit
    valid: SpmlSplit
    test: SpmlSplit
    pseudo: Tensor | None = None  # N_train x K int8 pseudo-labels (1, 0, -1), EM_PL
    features: dict[str, Tensor] | None = None  # "train"/"valid"/"test": N x D; given => a linear head on them


@dataclass(frozen=True)
class SpmlRunResult:
    best_epoch: int
    valid_map: float
    test_map: float
    curve: list[dict]  # epoch, train_loss, valid_map, test_map
    epoch_seconds: list[float]  # training time of each epoch, evaluation excluded
    steps_per_epoch: int


def check_spml_config(config: SpmlConfig) -> None:
    """Raise InputError for a setting out of range, naming the option to fix."""
    if config.model not in SPML_MODELS:
        raise InputError(f"--model must be one of {', '.join(SPML_MODELS)} with --task spml, got {config.model!r}")
    if min(config.epochs, config.batch_size, config.image_size) < 1 or config.workers < 0:
        raise InputError("--epochs, --batch-size and --image-size must be at least 1, --workers at least 0")
    if not config.lr > 0:
        raise InputError(f"learning rates must be positive, got {config.lr}")


def _check_data(data: SpmlRunData, loss: SpmlLoss) -> None:
    """The splits agree on their classes; the features and pseudo-labels fit their splits."""
    names = {data.train.class_names, data.valid.class_names, data.test.class_names}
    if len(names) != 1:
        raise InputError("the train, validation and test splits have different class names")
    empty = [key for key, split in (("train", data.train), ("validation", data.valid), ("test", data.test))
             if not len(split)]  # fmt: skip
    if empty:
        raise InputError(f"{data.train.name}: the {' and '.join(empty)} split holds no image; training and mAP need "
                         "images in all three")  # fmt: skip
    check_evaluable(data.valid, "validation")
    check_evaluable(data.test, "test")
    if "pseudo" in loss.needs:
        if data.pseudo is None:
            raise InputError(f"{loss.name} needs CLIP pseudo-labels of the training split (pass --clip-model)")
        if tuple(data.pseudo.shape) != tuple(data.train.labels.shape):
            raise InputError(f"the pseudo-labels are {tuple(data.pseudo.shape)}, the training labels "
                             f"{tuple(data.train.labels.shape)}")  # fmt: skip
    if data.features is not None:
        for key, split in (("train", data.train), ("valid", data.valid), ("test", data.test)):
            rows = data.features.get(key)
            if rows is None or rows.dim() != 2 or len(rows) != len(split):
                raise InputError(f"features[{key!r}] must be {len(split)} x D, one row per image of the split")


class SplitInputs:
    """How one split reaches the model: rows of a features tensor on the device, or images through a DataLoader."""

    def __init__(self, split: SpmlSplit, features: Tensor | None, config: SpmlConfig, device, train: bool):
        self.count, self.device, self.train = len(split), device, train
        self.features = None if features is None else features.float().to(device)
        self.generator = torch.Generator().manual_seed(config.seed) if train else None
        self.batch_size = config.batch_size if train else config.batch_size * EVAL_BATCH_FACTOR
        self.loader = None
        self.eval_loader = None
        if self.features is None:
            pin = device.type == "cuda"
            self.loader = image_loader(split.images, config.image_size, train, self.batch_size, config.workers,
                                       config.seed, pin)  # fmt: skip
            if train:  # the training split is also predicted, in order and unflipped, for EM_APL
                eval_batch = config.batch_size * EVAL_BATCH_FACTOR
                self.eval_loader = image_loader(split.images, config.image_size, False, eval_batch, config.workers,
                                                config.seed, pin)  # fmt: skip

    def batches(self, ordered: bool = False):
        """(inputs on the device, row indices) of every batch: shuffled when training, in order when ``ordered``."""
        if self.features is not None:
            generator = None if ordered or not self.train else self.generator
            size = self.batch_size * (EVAL_BATCH_FACTOR if ordered and self.train else 1)
            for rows in feature_batches(self.count, size, generator):
                yield self.features[rows.to(self.device, non_blocking=True)], rows
            return
        loader = self.eval_loader if ordered and self.eval_loader is not None else self.loader
        for images, rows in loader:
            images = images.to(self.device, non_blocking=True)
            if self.device.type == "cuda":  # channels-last convolutions are the fast ones on GPU
                images = images.contiguous(memory_format=torch.channels_last)
            yield images, rows

    @torch.no_grad()
    def predict(self, model: nn.Module, autocast) -> Tensor:
        """N x K sigmoid probabilities (float32, CPU) of the split, in row order, the model in eval mode."""
        model.eval()
        parts = []
        for inputs, _ in self.batches(ordered=True):
            with autocast():
                parts.append(torch.sigmoid(model(inputs).float()).cpu())
        model.train()
        return torch.cat(parts)


def _write_curve(path: Path, curve: list[dict]) -> None:
    """The run's curve CSV (epoch, train_loss, valid_map, test_map), written atomically."""
    with atomic_file(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, CURVE_COLUMNS)
        writer.writeheader()
        writer.writerows(curve)


def _apl_state(loss: SpmlLoss, observed: Tensor, settings: VlplSettings, epochs: int):
    """(soft negatives, per-class counts per round) of EM_APL, or (None, None) for another loss.

    The counts use this run's epochs; with ``apl_warmup`` >= epochs no round comes and EM_APL trains as EM.
    """
    if "soft_negatives" not in loss.needs:
        return None, None
    soft = torch.full(observed.shape, float("nan"))
    if settings.apl_warmup >= epochs:
        return soft, None
    return soft, apl_counts(observed, replace(settings, epochs=epochs))


def train_spml_run(
    strategy: str, data: SpmlRunData, config: SpmlConfig, settings: VlplSettings,
    curve_path: str | Path | None = None, accelerator=None,
) -> SpmlRunResult:  # fmt: skip
    """Train one (loss, seed, lr) run; write its curve CSV; return the best-validation-mAP epoch's numbers."""
    from aclbuild.bench.train import make_accelerator

    check_spml_config(config)
    loss_fn = build_loss(strategy, settings)
    _check_data(data, loss_fn)
    accelerator = accelerator or make_accelerator()
    device = accelerator.device
    torch.manual_seed(config.seed)
    features = data.features or {}
    feature_dim = features["train"].shape[1] if data.features is not None else None
    model = build_spml_model(config.model, data.train.num_classes, feature_dim, config.init).to(device)
    if device.type == "cuda" and feature_dim is None:
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=0)
    model, optimizer = accelerator.prepare(model, optimizer)
    inputs = {key: SplitInputs(split, features.get(key), config, device, train=key == "train")
              for key, split in (("train", data.train), ("valid", data.valid), ("test", data.test))}  # fmt: skip
    observed = observed_matrix(data.train)
    soft, counts = _apl_state(loss_fn, observed, settings, config.epochs)
    targets = {"labels": data.train.labels.long(), "pseudo": data.pseudo}
    whole = {name: soft if name == "soft_negatives" else targets[name] for name in loss_fn.needs}
    loss_fn(torch.zeros(observed.shape), observed, **whole)  # every target's values checked once, on the CPU
    # On the device once: a blocking copy per step would wait for the steps queued before it.
    on_device = {name: tensor.to(device) for name, tensor in {"observed": observed, **whole}.items()}
    curve: list[dict] = []
    seconds: list[float] = []
    steps, best = 0, (0, -1.0, 0.0)
    run_name = f"{loss_fn.name} {data.train.name} {config.model} lr {config.lr:g} seed {config.seed}"
    with progress_bar(run_name, config.epochs, "epochs") as advance:
        for epoch in range(1, config.epochs + 1):
            model.train()
            total, count, started = torch.zeros((), device=device), 0, time.perf_counter()
            for batch, rows in inputs["train"].batches():
                rows = rows.to(device, non_blocking=True)
                extra = {name: on_device[name][rows] for name in loss_fn.needs}
                with accelerator.autocast():
                    logits = model(batch).float()
                loss = loss_fn(logits, on_device["observed"][rows], **extra, checked=True)  # values checked above
                optimizer.zero_grad(set_to_none=True)
                accelerator.backward(loss)
                optimizer.step()
                total, count = total + loss.detach(), count + 1  # no float() here: it would sync every step
            if device.type == "cuda":
                torch.cuda.synchronize()  # the steps are asynchronous: wait for them before reading the clock
            seconds.append(time.perf_counter() - started)
            steps = steps or count
            net = accelerator.unwrap_model(model)
            valid_map = mean_average_precision(inputs["valid"].predict(net, accelerator.autocast), data.valid.labels)
            test_map = mean_average_precision(inputs["test"].predict(net, accelerator.autocast), data.test.labels)
            if valid_map > best[1]:
                best = (epoch, valid_map, test_map)
            if counts is not None and apl_due(epoch, settings) and epoch < config.epochs:
                predictions = inputs["train"].predict(net, accelerator.autocast)
                soft = asymmetric_pseudo_labels(predictions, observed, soft, counts)
                on_device["soft_negatives"] = soft.to(device)
            row = {"epoch": epoch, "train_loss": float(total) / max(count, 1), "valid_map": valid_map,
                   "test_map": test_map}  # fmt: skip
            curve.append(row)
            advance(note=f"loss {row['train_loss']:.4f}, valid mAP {valid_map:.4f}")
    if curve_path and accelerator.is_main_process:
        _write_curve(Path(curve_path), curve)
    return SpmlRunResult(best[0], float(best[1]), float(best[2]), curve, seconds, steps)
