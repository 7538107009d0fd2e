"""Tiny MNIST-family sources in the official IDX format, for tests that must not download anything.

:func:`make_idx_folder` writes the four files MNIST, Fashion-MNIST and KMNIST all ship
(``train-images-idx3-ubyte.gz``, ``train-labels-idx1-ubyte.gz``, ``t10k-images-idx3-ubyte.gz``,
``t10k-labels-idx1-ubyte.gz``: a big-endian header, magic 2051 for images and 2049 for labels, one int32 per
dimension, then uint8 values), gzip-compressed or not, optionally in torchvision's ``<root>/<Set>/raw`` layout.
:func:`idx_arrays` returns the arrays those files hold, so a test can compute what a reader should give back;
:func:`idx_bytes` encodes any array (a test can then damage it).

Example:
    >>> folder = make_idx_folder(tmp_path, n_train=12, n_test=5)   # doctest: +SKIP
    >>> sorted(p.name for p in folder.iterdir())[0]                 # doctest: +SKIP
    't10k-images-idx3-ubyte.gz'
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

IMAGES_MAGIC, LABELS_MAGIC = 2051, 2049
STEMS = {"train": "train", "test": "t10k"}


def idx_bytes(array: np.ndarray, magic: int | None = None) -> bytes:
    """``array`` (uint8) as an IDX file: magic (default 2051 for 3 dimensions, 2049 for 1), dims, values."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    if magic is None:
        magic = IMAGES_MAGIC if array.ndim == 3 else LABELS_MAGIC
    header = b"".join(int(v).to_bytes(4, "big") for v in (magic, *array.shape))
    return header + array.tobytes()


def idx_arrays(n_train: int = 12, n_test: int = 5, seed: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """split -> (N x 28 x 28 uint8 images, N uint8 labels). Labels cycle through 0..9 from a split offset, so every
    class appears once there are 10 images; pixels are random, so a mix-up of images shows."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for offset, (split, n) in enumerate((("train", n_train), ("test", n_test))):
        labels = np.array([(offset * 3 + i) % 10 for i in range(n)], dtype=np.uint8)
        arrays[split] = (rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), labels)
    return arrays


def idx_file_name(split: str, kind: str, gz: bool = True) -> str:
    """``train-images-idx3-ubyte.gz`` and its siblings (``kind`` is "images" or "labels")."""
    return f"{STEMS[split]}-{kind}-idx{3 if kind == 'images' else 1}-ubyte" + (".gz" if gz else "")


def make_idx_folder(
    directory: str | Path,
    n_train: int = 12,
    n_test: int = 5,
    seed: int = 0,
    gz: bool = True,
    torchvision_set: str | None = None,
) -> Path:
    """Write the four IDX files of :func:`idx_arrays` into ``directory`` (or ``directory/<torchvision_set>/raw``,
    e.g. ``FashionMNIST``); return the folder the files are in."""
    folder = Path(directory) / torchvision_set / "raw" if torchvision_set else Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    for split, (images, labels) in idx_arrays(n_train, n_test, seed).items():
        for kind, array in (("images", images), ("labels", labels)):
            blob = idx_bytes(array)
            (folder / idx_file_name(split, kind, gz)).write_bytes(gzip.compress(blob, mtime=0) if gz else blob)
    return folder
