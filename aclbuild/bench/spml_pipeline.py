"""The ResNet-50 image pipeline of the SPML benchmark, as VLPL's: decode, Resize((448, 448)), flip, normalise.

VLPL trains on ``Resize((448, 448))``, ``RandomHorizontalFlip()``, ``ToTensor()`` and ImageNet's mean and std, and
evaluates without the flip. :class:`SpmlImages` does the same per image with Pillow (bilinear resize, as torchvision's
``Resize`` on a PIL image) in a ``torch.utils.data.Dataset``, so a DataLoader decodes in ``--workers`` processes. Each
item is (image tensor, row index): the training loop looks the labels up by index, so the soft negatives EM_APL
draws between epochs need no new dataset.

Example:
    >>> import io
    >>> from PIL import Image
    >>> buffer = io.BytesIO(); Image.new("RGB", (12, 8), (255, 0, 0)).save(buffer, "PNG")
    >>> image, index = SpmlImages([buffer.getvalue()], size=16, train=False)[0]
    >>> tuple(image.shape), index, round(float(image[0, 0, 0]), 3)   # (1 - 0.485) / 0.229
    ((3, 16, 16), 0, 2.249)
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image

from aclbuild.errors import SourceError

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def decode_resized(data: bytes, size: int) -> np.ndarray:
    """An encoded image as size x size x 3 uint8 RGB (bilinear resize; any mode converted to RGB)."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            return np.array(image.convert("RGB").resize((size, size), Image.BILINEAR))  # a writable copy
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise SourceError(f"an image does not decode ({exc}); the repository is damaged: rebuild it") from None


class SpmlImages(torch.utils.data.Dataset):
    """Encoded images as normalised 3 x size x size float tensors, randomly flipped when ``train``."""

    def __init__(self, images: Sequence[bytes], size: int, train: bool):
        self.images, self.size, self.train = images, size, train
        self.mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
        self.std = torch.tensor(IMAGENET_STD).view(3, 1, 1)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        pixels = torch.from_numpy(decode_resized(self.images[index], self.size)).permute(2, 0, 1)
        if self.train and torch.rand(()) < 0.5:  # the torch generator: seeded per worker by the DataLoader
            pixels = pixels.flip(2)
        return (pixels.float() / 255 - self.mean) / self.std, index


def image_loader(images: Sequence[bytes], size: int, train: bool, batch_size: int, workers: int, seed: int,
                 pin_memory: bool = False) -> torch.utils.data.DataLoader:  # fmt: skip
    """A DataLoader of (images, row indices): shuffled and flipped when ``train`` (seeded), in order otherwise.

    Only the training loader keeps its workers between epochs; an evaluation loader starts them per pass, so the
    validation, test and EM_APL loaders do not hold ``workers`` processes each for the whole run."""
    generator = torch.Generator().manual_seed(seed) if train else None
    return torch.utils.data.DataLoader(
        SpmlImages(images, size, train), batch_size=batch_size, shuffle=train, generator=generator,
        num_workers=workers, pin_memory=pin_memory, persistent_workers=workers > 0 and train,
    )  # fmt: skip


def feature_batches(count: int, batch_size: int, generator: torch.Generator | None):
    """Row-index batches of a features tensor: a seeded permutation when ``generator`` is given, else in order.

    Example:
        >>> [b.tolist() for b in feature_batches(5, 2, None)]
        [[0, 1], [2, 3], [4]]
    """
    order = torch.randperm(count, generator=generator) if generator is not None else torch.arange(count)
    return list(order.split(batch_size))
