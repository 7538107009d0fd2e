"""Tiny source archives in the real formats, for tests that must not download anything.

Builders write what the official files hold, only smaller:

- :func:`make_cifar10_archive` / :func:`make_cifar100_archive`: ``cifar-10-python.tar.gz`` (folder
  ``cifar-10-batches-py/``: ``data_batch_1..5``, ``test_batch``, ``batches.meta``) and ``cifar-100-python.tar.gz``
  (``cifar-100-python/``: ``train``, ``test``, ``meta``). Batches are dicts with *bytes* keys (``b"data"`` N x 3072
  uint8 as R, G, B planes, ``b"labels"`` or ``b"fine_labels"``/``b"coarse_labels"``, ``b"filenames"`` as bytes),
  pickled with protocol 2. :func:`cifar10_batches` / :func:`cifar100_batches` return the same dicts, so a test
  can compute what a reader should give back. :func:`write_cifar_archive` writes any members (raw ``bytes`` values
  are written as they are: a truncated or malicious pickle).
- :func:`make_tinyimagenet`: a ``tiny-imagenet-200/`` tree (``wnids.txt``, ``words.txt``,
  ``train/<wnid>/images/<wnid>_<i>.JPEG``, ``train/<wnid>/<wnid>_boxes.txt``, ``val/images/val_<k>.JPEG``,
  ``val/val_annotations.txt``, ``test/images``) or the same as ``tiny-imagenet-200.zip``. Every JPEG is one solid
  colour, :func:`tiny_pixel` of its file name, so a test can check pixels despite JPEG loss.

Example:
    >>> archive = make_cifar10_archive(tmp_path, n_per_batch=3)      # doctest: +SKIP
    >>> tree = make_tinyimagenet(tmp_path, bases=("min10", "min20"))  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import io
import pickle
import struct
import tarfile
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

from aclbuild.registry import BASES, CIFAR10_NAMES

CIFAR10_FOLDER, CIFAR10_FILE = "cifar-10-batches-py", "cifar-10-python.tar.gz"
CIFAR100_FOLDER, CIFAR100_FILE = "cifar-100-python", "cifar-100-python.tar.gz"
CIFAR10_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
EXTRA_WNID = "n01443537"  # goldfish: in TinyImageNet-200 but in no base, so readers must skip it
JPEG_TOLERANCE = 4  # a solid-colour JPEG at quality 95 decodes within a few levels of its colour


def _pixels(n: int, rng: np.random.Generator) -> np.ndarray:
    return rng.integers(0, 256, (n, 3 * 32 * 32), dtype=np.uint8)


def cifar10_batches(n_per_batch: int = 4, n_test: int | None = None, seed: int = 0) -> dict[str, dict]:
    """Member name -> batch dict of a fake CIFAR-10 archive (what :func:`make_cifar10_archive` pickles).

    Labels cycle through the 10 classes from a batch-dependent offset; file names look like CIFAR's
    (``cat_s_000007.png``) and are unique across the archive.
    """
    rng = np.random.default_rng(seed)
    batches: dict[str, dict] = {}
    serial = 0
    for index, member in enumerate((*CIFAR10_TRAIN, "test_batch")):
        n = n_per_batch if member != "test_batch" or n_test is None else n_test
        labels = [(index * 3 + i) % 10 for i in range(n)]
        names = [f"{CIFAR10_NAMES[y]}_s_{serial + i:06d}.png".encode() for i, y in enumerate(labels)]
        serial += n
        title = f"training batch {index + 1} of 5" if member != "test_batch" else "testing batch 1 of 1"
        batches[member] = {
            b"batch_label": title.encode(), b"labels": labels, b"data": _pixels(n, rng), b"filenames": names,
        }  # fmt: skip
    batches["batches.meta"] = {
        b"num_cases_per_batch": n_per_batch, b"label_names": [c.encode() for c in CIFAR10_NAMES], b"num_vis": 3072,
    }  # fmt: skip
    return batches


def cifar100_batches(n_train: int = 8, n_test: int = 4, seed: int = 0) -> dict[str, dict]:
    """Member name -> batch dict of a fake CIFAR-100 archive (``train``, ``test``, ``meta``).

    Fine labels run 0, 7, 14, ... mod 100 and coarse labels are ``fine % 20``; file names are unique.
    """
    rng = np.random.default_rng(seed)
    batches: dict[str, dict] = {}
    serial = 0
    for member, n in (("train", n_train), ("test", n_test)):
        fine = [(serial + i) * 7 % 100 for i in range(n)]
        batches[member] = {
            b"filenames": [f"fine{f}_s_{serial + i:06d}.png".encode() for i, f in enumerate(fine)],
            b"batch_label": f"{member}ing batch 1 of 1".encode(),
            b"fine_labels": fine,
            b"coarse_labels": [f % 20 for f in fine],
            b"data": _pixels(n, rng),
        }
        serial += n
    batches["meta"] = {
        b"fine_label_names": [f"fine{i}".encode() for i in range(100)],
        b"coarse_label_names": [name.encode() for name in BASES["cifar20"].class_names],
    }
    return batches


class _Py2Pickler(pickle._Pickler):  # the pure-Python pickler: its dispatch table can be patched
    dispatch = pickle._Pickler.dispatch.copy()

    def _save_str8(self, obj: bytes) -> None:
        # Python 2 wrote its byte strings with (SHORT_)BINSTRING, which Python 3 reads back as str under latin1.
        n = len(obj)
        self.write((pickle.SHORT_BINSTRING + bytes([n]) if n < 256 else pickle.BINSTRING + struct.pack("<i", n)) + obj)
        self.memoize(obj)

    dispatch[bytes] = _save_str8


def py2_pickle(obj: object) -> bytes:
    """``obj`` pickled as Python 2 and numpy 1.x wrote the real CIFAR batches (protocol 2, byte strings as STRING,
    ``numpy.core.multiarray._reconstruct``); bytes keys and names come back as str under latin1."""
    out = io.BytesIO()
    _Py2Pickler(out, protocol=2).dump(obj)
    return out.getvalue().replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n")


def write_cifar_archive(
    directory: str | Path, folder: str, members: dict[str, object], as_folder: bool = False
) -> Path:
    """Write ``members`` (name -> object to pickle with protocol 2, or raw ``bytes``) under ``folder/``.

    Returns ``directory/<folder>.tar.gz``-style archive (named as the official file when ``folder`` is a CIFAR
    folder), or the folder ``directory/<folder>`` itself when ``as_folder``.
    """
    directory = Path(directory)
    blobs = {name: v if isinstance(v, bytes) else pickle.dumps(v, protocol=2) for name, v in members.items()}
    if as_folder:
        root = directory / folder
        root.mkdir(parents=True, exist_ok=True)
        for name, blob in blobs.items():
            (root / name).write_bytes(blob)
        return root
    filename = {CIFAR10_FOLDER: CIFAR10_FILE, CIFAR100_FOLDER: CIFAR100_FILE}.get(folder, f"{folder}.tar.gz")
    archive = directory / filename
    directory.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive, "w:gz") as tar:
        top = tarfile.TarInfo(folder)
        top.type, top.mode = tarfile.DIRTYPE, 0o755
        tar.addfile(top)
        for name, blob in blobs.items():
            info = tarfile.TarInfo(f"{folder}/{name}")
            info.size, info.mode = len(blob), 0o644
            tar.addfile(info, io.BytesIO(blob))
    return archive


def make_cifar10_archive(
    directory: str | Path, n_per_batch: int = 4, n_test: int | None = None, seed: int = 0, as_folder: bool = False
) -> Path:
    """A fake ``cifar-10-python.tar.gz`` in ``directory`` (or its extracted ``cifar-10-batches-py/`` folder).

    Contents are :func:`cifar10_batches` with the same arguments; ``n_test`` defaults to ``n_per_batch``.
    """
    return write_cifar_archive(directory, CIFAR10_FOLDER, cifar10_batches(n_per_batch, n_test, seed), as_folder)


def make_cifar100_archive(
    directory: str | Path, n_train: int = 8, n_test: int = 4, seed: int = 0, as_folder: bool = False
) -> Path:
    """A fake ``cifar-100-python.tar.gz`` in ``directory`` (or its extracted ``cifar-100-python/`` folder).

    Contents are :func:`cifar100_batches` with the same arguments.
    """
    return write_cifar_archive(directory, CIFAR100_FOLDER, cifar100_batches(n_train, n_test, seed), as_folder)


def _placeholder_planes(n: int) -> np.ndarray:
    """N x 3072 CIFAR rows, blank but for the row index in the first two red bytes, so a test can tell rows apart."""
    data = np.zeros((n, 3 * 32 * 32), np.uint8)
    data[:, 0], data[:, 1] = np.arange(n) % 256, np.arange(n) // 256
    return data


def cifar_archive_with_names(directory: Path, base: str, names: list[str], as_folder: bool = False) -> Path:
    """A fake CIFAR archive of ``base`` (cifar10: 5 equal batches) whose train split holds ``names`` in order
    (labels: row index mod K), or its extracted folder with ``as_folder``: for the released label CSVs."""
    k, n_test = BASES[base].num_classes, 20
    labels, data = [i % k for i in range(len(names))], _placeholder_planes(len(names))
    encoded = [name.encode() for name in names]
    test = {b"filenames": [f"test_{i}.png".encode() for i in range(n_test)], b"data": _placeholder_planes(n_test)}
    if base == "cifar10":
        size = len(names) // len(CIFAR10_TRAIN)
        members: dict[str, object] = {
            member: {b"labels": labels[i * size : (i + 1) * size], b"data": data[i * size : (i + 1) * size],
                     b"filenames": encoded[i * size : (i + 1) * size]}
            for i, member in enumerate(CIFAR10_TRAIN)
        }  # fmt: skip
        members["test_batch"] = test | {b"labels": [i % k for i in range(n_test)]}
        members["batches.meta"] = {b"label_names": [c.encode() for c in BASES[base].class_names]}
        return write_cifar_archive(directory, CIFAR10_FOLDER, members, as_folder)
    test_labels = [i % k for i in range(n_test)]
    members = {
        "train": {b"coarse_labels": labels, b"fine_labels": labels, b"data": data, b"filenames": encoded},
        "test": test | {b"coarse_labels": test_labels, b"fine_labels": test_labels},
        "meta": {b"coarse_label_names": [c.encode() for c in BASES[base].class_names]},
    }
    return write_cifar_archive(directory, CIFAR100_FOLDER, members, as_folder)


def cifar_images(batch: dict) -> np.ndarray:
    """The N x 32 x 32 x 3 images a reader must return for ``batch`` (R, G, B planes -> HWC)."""
    return batch[b"data"].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)


def tiny_is_greyscale(name: str) -> bool:
    """Whether :func:`make_tinyimagenet` (with ``greyscale_some``) writes ``name`` as a greyscale JPEG.

    The rule: the number after the last ``_`` is 1 mod 3 (``n..._1.JPEG``, ``n..._4.JPEG``, ``val_7.JPEG``).
    """
    return int(name.rsplit("_", 1)[1].split(".")[0]) % 3 == 1


def tiny_pixel(name: str, greyscale_some: bool = True) -> tuple[int, int, int]:
    """The solid RGB colour of the fake JPEG called ``name`` (grey levels repeated for a greyscale one)."""
    digest = hashlib.md5(name.encode()).digest()
    if greyscale_some and tiny_is_greyscale(name):
        return (16 + digest[0] % 224,) * 3
    return tuple(16 + b % 224 for b in digest[:3])  # type: ignore[return-value]


def tiny_jpeg(name: str, greyscale_some: bool = True, size: int = 64) -> bytes:
    """JPEG bytes of the fake image ``name``: mode L when greyscale, else RGB, one solid colour."""
    colour = tiny_pixel(name, greyscale_some)
    grey = greyscale_some and tiny_is_greyscale(name)
    image = Image.new("L", (size, size), colour[0]) if grey else Image.new("RGB", (size, size), colour)
    out = io.BytesIO()
    image.save(out, "JPEG", quality=95)
    return out.getvalue()


def tiny_wnids(bases: tuple[str, ...] | list[str]) -> list[str]:
    """The wnids :func:`make_tinyimagenet` writes for ``bases``: their union plus :data:`EXTRA_WNID`, sorted."""
    return sorted({w for b in bases for w in BASES[b].wnids} | {EXTRA_WNID})


def make_tinyimagenet(
    directory: str | Path,
    bases: tuple[str, ...] | list[str] = ("min10",),
    n_train: int = 3,
    n_val: int = 2,
    as_zip: bool = False,
    greyscale_some: bool = True,
) -> Path:
    """A fake TinyImageNet-200 holding the wnids of ``bases`` (plus one distractor wnid), in the real layout.

    Each wnid gets ``n_train`` train images ``<wnid>_<i>.JPEG`` and ``n_val`` val images; val images are numbered
    round-robin over the sorted wnids (``val_k`` belongs to wnid ``k % len(wnids)``), so they interleave like the
    real ones. Returns ``directory/tiny-imagenet-200`` or, with ``as_zip``, ``directory/tiny-imagenet-200.zip``
    (with directory entries, as the official zip has).
    """
    directory = Path(directory)
    wnids = tiny_wnids(bases)
    words = {w: n for b in bases for w, n in zip(BASES[b].wnids, BASES[b].class_names)} | {EXTRA_WNID: "goldfish"}
    files: dict[str, bytes] = {
        "wnids.txt": "".join(f"{w}\n" for w in wnids).encode(),
        "words.txt": "".join(f"{w}\t{words[w]}\n" for w in wnids).encode(),
    }
    for w in wnids:
        names = [f"{w}_{i}.JPEG" for i in range(n_train)]
        files[f"train/{w}/{w}_boxes.txt"] = "".join(f"{n}\t0\t0\t63\t63\n" for n in names).encode()
        files.update({f"train/{w}/images/{n}": tiny_jpeg(n, greyscale_some) for n in names})
    annotations = []
    for k in range(n_val * len(wnids)):
        name = f"val_{k}.JPEG"
        files[f"val/images/{name}"] = tiny_jpeg(name, greyscale_some)
        annotations.append(f"{name}\t{wnids[k % len(wnids)]}\t0\t0\t63\t63\n")
    files["val/val_annotations.txt"] = "".join(annotations).encode()
    files["test/images/test_0.JPEG"] = tiny_jpeg("test_0.JPEG", greyscale_some)
    directory.mkdir(parents=True, exist_ok=True)
    if as_zip:
        archive = directory / "tiny-imagenet-200.zip"
        folders = sorted({"/".join(rel.split("/")[:i]) for rel in files for i in range(1, rel.count("/") + 1)})
        with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
            zf.writestr("tiny-imagenet-200/", b"")
            for folder in folders:
                zf.writestr(f"tiny-imagenet-200/{folder}/", b"")
            for rel, data in files.items():
                zf.writestr(f"tiny-imagenet-200/{rel}", data)
        return archive
    root = directory / "tiny-imagenet-200"
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return root
