"""Training batches: which rows go together, and the augmentation (crop, flip, normalise) they get.

Two ways to batch (``--batch-by``), for the strategies whose rows are (image, CL) pairs:

- ``image`` (libcll, the default): a batch is ``batch_size`` IMAGES with all their CLs, each image augmented once
  and that one view shared by its CLs; an epoch has ceil(N_images / batch_size) steps.
- ``pair``: a batch is ``batch_size`` (image, CL) pairs, each augmented on its own; ceil(N_pairs / batch_size)
  steps, so three times as many updates per epoch at 3 CLs per image.

Strategies whose rows are images already (MCL, Ord, the VLPL family) batch images either way. An image-batch comes
with ``expand``, the image of each of its rows (0, 0, 0, 1, 1, 1, ...). When every image has the same number of
CLs, the model runs on each image once and its logits are repeated (libcll feeds the repeated images: batch norm
sees the same mean and variance, the loss and its gradients are the same, at a third of the cost); otherwise the
images themselves are repeated, as libcll does, so batch norm weighs an image by its number of CLs.

Example:
    >>> plan = BatchPlan(torch.tensor([0, 0, 1, 1, 2, 2]), torch.arange(6), 3, by_image=True, batch_size=2)
    >>> plan.steps(), BatchPlan(torch.tensor([0, 0, 1, 1, 2, 2]), torch.arange(6), 3, False, 2).steps()
    (2, 3)
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from aclbuild.errors import InputError

BATCH_BY = ("image", "pair")
CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.247, 0.2435, 0.2616)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Augment:
    """Random crop with zero padding, horizontal flip, normalisation: the per-base reference augmentation."""

    padding: int
    flip: bool
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    @classmethod
    def for_size(cls, image_size: int) -> Augment:
        """The bases' reference augmentations by image size; any other natural-image size (your own dataset, 16
        pixels or more) gets the same recipe scaled: padding of 1/8 of the side, flips, ImageNet statistics.

        Example:
            >>> Augment.for_size(96).padding, Augment.for_size(96).flip, Augment.for_size(12).padding
            (12, True, 0)
        """
        if image_size == 32:
            return cls(4, True, CIFAR_MEAN, CIFAR_STD)
        if image_size == 64:
            return cls(8, True, IMAGENET_MEAN, IMAGENET_STD)
        if image_size == 28:  # MNIST, Fashion-MNIST, KMNIST: x / 255 in [0, 1], as libcll feeds them
            return cls(0, False, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
        if image_size >= 16:  # CIFAR pads 4 of 32 and TinyImageNet 8 of 64: the same share of the side
            return cls(image_size // 8, True, IMAGENET_MEAN, IMAGENET_STD)
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


class BatchPlan:
    """The batches of an epoch: ``rows[i]`` is the image of training row i, ``targets[i]`` its target (CPU).

    ``by_image`` groups the rows by image (``--batch-by image``); otherwise each row is drawn on its own.
    """

    def __init__(self, rows: Tensor, targets: Tensor, n_images: int, by_image: bool, batch_size: int):
        self.rows, self.targets, self.by_image, self.batch_size = rows.cpu(), targets.cpu(), by_image, batch_size
        if by_image:
            self.row_order = torch.argsort(self.rows, stable=True)  # rows grouped by image
            self.counts = torch.bincount(self.rows, minlength=n_images)
            self.starts = torch.cumsum(self.counts, 0) - self.counts
            self.units = torch.nonzero(self.counts).flatten()  # images without a CL (all cleaned away) sit out
            present = self.counts[self.units]
            self.same_count = bool(len(present) == 0 or (present == present[0]).all())
        else:
            self.units = torch.arange(len(self.rows))
            self.same_count = True

    def steps(self, world: int = 1) -> int:
        """Optimiser steps per epoch on each of ``world`` processes."""
        return math.ceil((len(self.units) // world) / self.batch_size)

    def epoch(self, generator: torch.Generator, rank: int = 0, world: int = 1) -> Iterator[tuple[Tensor, ...]]:
        """(image of each input, expand or None, targets) per batch: a seeded permutation, each process its slice."""
        order = self.units[torch.randperm(len(self.units), generator=generator)]
        share = len(order) // world
        for chosen in order[rank * share : (rank + 1) * share].split(self.batch_size):
            if not self.by_image:
                yield self.rows[chosen], None, self.targets[chosen]
                continue
            expand, pairs = self.expand(chosen)
            yield chosen, expand, self.targets[pairs]

    def expand(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """For a batch of images: the batch position of each of their rows, and those rows' indices."""
        counts = self.counts[images]
        expand = torch.arange(len(images)).repeat_interleave(counts)
        within = torch.arange(len(expand)) - (torch.cumsum(counts, 0) - counts).repeat_interleave(counts)
        return expand, self.row_order[self.starts[images].repeat_interleave(counts) + within]


class AugmentedUnits(torch.utils.data.Dataset):
    """The DataLoader path: item u is one augmented image (augmented on the CPU, one image at a time, as torchvision)
    with the target of its row (pair batching) or the targets of all its rows (image batching)."""

    def __init__(self, images: Tensor, plan: BatchPlan, augment: Augment):
        self.images, self.plan, self.augment = images, plan, augment

    def __len__(self) -> int:
        return len(self.plan.units)

    def __getitem__(self, i: int):
        unit = int(self.plan.units[i])
        image = self.plan.rows[unit] if not self.plan.by_image else unit
        augmented = self.augment.batch(self.images[image][None])[0]
        if not self.plan.by_image:
            return augmented, self.plan.targets[unit]
        _, pairs = self.plan.expand(torch.tensor([unit]))
        return augmented, self.plan.targets[pairs]

    def collate(self, items: list) -> tuple[Tensor, Tensor | None, Tensor]:
        """(images, expand or None, targets) as :meth:`BatchPlan.epoch` gives them."""
        images = torch.stack([image for image, _ in items])
        if not self.plan.by_image:
            return images, None, torch.stack([target for _, target in items])
        counts = torch.tensor([len(target) for _, target in items])
        return images, torch.arange(len(items)).repeat_interleave(counts), torch.cat([t for _, t in items])


def check_batch_by(batch_by: str) -> None:
    if batch_by not in BATCH_BY:
        raise InputError(f"--batch-by must be one of {', '.join(BATCH_BY)}, got {batch_by!r}")
