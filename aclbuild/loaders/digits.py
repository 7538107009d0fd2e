"""The embedded ``digits`` base: scikit-learn's 1,797 8x8 handwritten digits, usable offline.

Split (stated in every card): a permutation of the 1,797 images with numpy seed 0; the first 1,400 are ``train``,
the other 397 ``test``. Pixel values 0..16 are scaled to 0..255 and repeated over three channels (RGB 8x8).

Example:
    >>> train = read_digits("train"); len(train), train[0].image.shape
    (1400, (8, 8, 3))
"""

from __future__ import annotations

import numpy as np

from aclbuild.errors import SourceError
from aclbuild.schema import ClRecord

NUM_TRAIN = 1400


def read_digits(split: str) -> list[ClRecord]:
    """Records of the ``train`` or ``test`` split of the digits base (true labels, no CLs)."""
    from sklearn.datasets import load_digits  # imported here: scikit-learn is slow to import

    if split not in ("train", "test"):
        raise SourceError(f"digits has splits train and test, not {split!r}")
    digits = load_digits()
    order = np.random.RandomState(0).permutation(len(digits.target))
    chosen = order[:NUM_TRAIN] if split == "train" else order[NUM_TRAIN:]
    pixels = np.rint(digits.images * (255 / 16)).astype(np.uint8)
    return [
        ClRecord(f"digit_{i:04d}.png", np.repeat(pixels[i][:, :, None], 3, axis=2), int(digits.target[i]))
        for i in chosen
    ]
