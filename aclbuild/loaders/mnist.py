"""MNIST, Fashion-MNIST and Kuzushiji-MNIST (bases mnist, fmnist, kmnist) from their official IDX files.

The source is a folder holding the four files ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
``t10k-images-idx3-ubyte`` and ``t10k-labels-idx1-ubyte``, each gzip-compressed (``.gz``, as downloaded) or not
(as torchvision extracts them); gzip is recognised by its magic bytes, and a ``.gz`` file is read before its
extracted twin. torchvision's root folder (``<root>/MNIST/raw``, ``FashionMNIST/raw``, ``KMNIST/raw``) and the
``--download`` cache folder (``~/.cache/aclbuild/mnist``) are found too. The three sets use the same four file
names, so a folder of the wrong set cannot be told apart: point each base at its own folder.

IDX layout: a big-endian header (magic 2051 for images, 2049 for labels, then one int32 per dimension) and the
uint8 values. Records keep the file's order. ``names`` follow one convention, since the files carry none:
``train_00000.png`` ... ``train_59999.png`` and ``test_00000.png`` ... ``test_09999.png``, the number being the
0-based position in the split's IDX file. Images are 28x28 greyscale, stored as the schema's H x W x 3 uint8 with
three equal channels; libcll feeds the same pixels to its MLP as one 28x28 channel (784 inputs, against 2,352 here).

Example:
    >>> from aclbuild.registry import get_base
    >>> train = read_mnist("data/mnist", get_base("mnist"), "train")   # doctest: +SKIP
    >>> len(train), train[0].name, train[0].image.shape                # doctest: +SKIP
    (60000, 'train_00000.png', (28, 28, 3))
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np

from aclbuild.errors import SourceError
from aclbuild.registry import Base, FileSet
from aclbuild.schema import ClRecord

IMAGES_MAGIC, LABELS_MAGIC = 2051, 2049
SIDE = 28
SPLIT_STEMS = {"train": "train", "test": "t10k"}  # split -> the IDX files' name prefix
GZ = (".gz", "")  # the downloaded file first, then an extracted one
TORCHVISION_FOLDERS = {"mnist": "MNIST", "fmnist": "FashionMNIST", "kmnist": "KMNIST"}  # <root>/<folder>/raw


def read_mnist(path: str | Path, base: Base, split: str, pixels: bool = True) -> list[ClRecord]:
    """Records of ``split`` ("train" or "test") of base mnist, fmnist or kmnist, in the IDX files' order (no CLs).
    With ``pixels=False`` every ``image`` is None (the files are still read whole and checked).

    Raises :class:`SourceError` (one line) for a missing, truncated or malformed file, or counts that disagree.

    Example:
        >>> recs = read_mnist("data/FashionMNIST/raw", get_base("fmnist"), "test")   # doctest: +SKIP
        >>> recs[0].name, recs[0].ord_label                                           # doctest: +SKIP
        ('test_00000.png', 9)
    """
    if not isinstance(base.archive, FileSet) or base.name not in TORCHVISION_FOLDERS:
        raise SourceError(f"read_mnist reads bases {', '.join(TORCHVISION_FOLDERS)}, not {base.name}")
    if split not in SPLIT_STEMS:
        raise SourceError(f"base {base.name} has splits {' and '.join(SPLIT_STEMS)}, not {split!r}")
    folder = find_idx_folder(Path(path), base)
    stem = SPLIT_STEMS[split]
    images = read_idx(folder, f"{stem}-images-idx3-ubyte", IMAGES_MAGIC, base)
    labels = read_idx(folder, f"{stem}-labels-idx1-ubyte", LABELS_MAGIC, base)
    if len(images) != len(labels):
        raise SourceError(
            f"{folder}: {stem}-images holds {len(images)} images but {stem}-labels {len(labels)} labels; the two "
            f"files come from different sets or one is damaged (re-download both, or pass --download)"
        )
    if len(labels) and labels.max() >= base.num_classes:
        raise SourceError(
            f"{folder}: {stem}-labels has label {int(labels.max())}, outside 0..{base.num_classes - 1} of base "
            f"{base.name}; it is not an {base.archive.title} label file"
        )
    names = [f"{split}_{i:05d}.png" for i in range(len(labels))]
    if not pixels:
        return [ClRecord(name, None, int(y)) for name, y in zip(names, labels)]
    # One contiguous N x 28 x 28 x 3 block (grey repeated over R, G, B); each record's image is a view of it.
    rgb = np.repeat(images[:, :, :, None], 3, axis=3)
    return [ClRecord(name, rgb[i], int(y)) for i, (name, y) in enumerate(zip(names, labels))]


def find_idx_folder(path: Path, base: Base) -> Path:
    """The folder that holds ``base``'s IDX files: ``path`` itself, or torchvision's ``path/<Set>/raw``."""
    assert isinstance(base.archive, FileSet)
    fix = f"point it at the folder holding {base.archive.title}'s four *-idx*-ubyte.gz files (or pass --download)"
    if not path.exists():
        raise SourceError(f"{path} does not exist; {fix}")
    if not path.is_dir():
        raise SourceError(f"{path} is a file; {fix}")
    for folder in (path, path / TORCHVISION_FOLDERS[base.name] / "raw", path / base.archive.folder):
        if any((folder / f"{stem}-images-idx3-ubyte{gz}").is_file() for stem in SPLIT_STEMS.values() for gz in GZ):
            return folder
    raise SourceError(f"{path} holds no train-images-idx3-ubyte(.gz) nor t10k-images-idx3-ubyte(.gz); {fix}")


def read_idx(folder: Path, name: str, magic: int, base: Base) -> np.ndarray:
    """The uint8 array of IDX file ``folder/name`` (``.gz`` or not): N x 28 x 28 images or N labels, checked."""
    file = next((folder / f"{name}{gz}" for gz in GZ if (folder / f"{name}{gz}").is_file()), None)
    if file is None:
        raise SourceError(
            f"{folder} has no {name}.gz (nor {name}); a {base.name} source needs all four IDX files "
            "(download them again, or pass --download)"
        )
    data = _decompressed(file)
    ndim = 3 if magic == IMAGES_MAGIC else 1
    what = "image" if magic == IMAGES_MAGIC else "label"
    header = 4 * (1 + ndim)
    if len(data) < 4 or int.from_bytes(data[:4], "big") != magic:
        found = int.from_bytes(data[:4], "big") if len(data) >= 4 else None
        raise SourceError(
            f"{file}: magic number {found} is not {magic} (an IDX {what} file of unsigned bytes); the file is not "
            f"{name} or is damaged (re-download it, or pass --download)"
        )
    if len(data) < header:
        raise SourceError(f"{file}: the IDX header is cut short ({len(data)} bytes); re-download it")
    dims = tuple(int.from_bytes(data[4 * (1 + i) : 4 * (2 + i)], "big") for i in range(ndim))
    if ndim == 3 and dims[1:] != (SIDE, SIDE):
        raise SourceError(f"{file}: images are {dims[1]}x{dims[2]}, but base {base.name} is {SIDE}x{SIDE}")
    expected = int(np.prod(dims))
    if len(data) - header != expected:
        state = "truncated" if len(data) - header < expected else "longer than its header says"
        raise SourceError(
            f"{file}: the header announces {dims[0]} {what}s ({expected} bytes) but {len(data) - header} bytes "
            f"follow; the file is {state} (re-download it, or pass --download)"
        )
    return np.frombuffer(data, np.uint8, expected, header).reshape(dims)


def _decompressed(file: Path) -> bytes:
    """The bytes of ``file``, gunzipped when it starts with gzip's magic bytes (whatever its suffix)."""
    raw = file.read_bytes()
    if raw[:2] != b"\x1f\x8b":
        return raw
    try:
        return gzip.decompress(raw)
    except (EOFError, OSError, zlib.error) as exc:  # gzip.BadGzipFile is an OSError
        raise SourceError(
            f"{file} is not a readable gzip file (truncated or corrupt: {exc}); re-download it (or pass --download)"
        ) from None
