"""CIFAR-10 and CIFAR-100 (bases cifar10 and cifar20) from the official python archives or their folders.

Batches are pickles, read with :func:`aclbuild.loaders.safe_pickle.safe_load` (never plain ``pickle.load``: the
archive could come from a mirror). Tar members are read straight from the archive, in stream order, without
extracting anything to disk. Records keep the archive's own order; ``name`` is the archive's file name, ``ord_label``
the CIFAR-10 label or the CIFAR-100 *coarse* label.

Example:
    >>> from aclbuild.registry import get_base
    >>> train = read_cifar("cifar-10-python.tar.gz", get_base("cifar10"), "train")   # doctest: +SKIP
    >>> len(train), train[0].name, train[0].image.shape                               # doctest: +SKIP
    (50000, 'leptodactylus_pentadactylus_s_000004.png', (32, 32, 3))
"""

from __future__ import annotations

import tarfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from aclbuild.errors import SourceError
from aclbuild.loaders.safe_pickle import safe_load
from aclbuild.progress import progress_bar
from aclbuild.registry import Base
from aclbuild.schema import ClRecord

SPLITS = ("train", "test")


@dataclass(frozen=True)
class _Layout:
    """Where one archive keeps its batches and which label key a base reads."""

    title: str  # what users call the archive
    filename: str
    folder: str  # the archive's single top folder
    meta: str  # the metadata file beside the batches (marks a renamed extracted folder)
    members: dict[str, tuple[str, ...]]  # split -> batch files inside folder, in order
    label_key: str


LAYOUTS = {
    "cifar10": _Layout(
        "CIFAR-10", "cifar-10-python.tar.gz", "cifar-10-batches-py", "batches.meta",
        {"train": tuple(f"data_batch_{i}" for i in range(1, 6)), "test": ("test_batch",)}, "labels",
    ),
    "cifar20": _Layout(
        "CIFAR-100", "cifar-100-python.tar.gz", "cifar-100-python", "meta",
        {"train": ("train",), "test": ("test",)}, "coarse_labels",
    ),
}  # fmt: skip


def read_cifar(path: str | Path, base: Base, split: str, pixels: bool = True) -> list[ClRecord]:
    """Records of ``split`` ("train" or "test") of base cifar10 or cifar20, in the archive's order (no CLs).
    With ``pixels=False`` the image planes are not turned into images and every ``image`` is None.

    ``path`` is the ``.tar.gz`` archive, its extracted batch folder, or a folder that contains either.
    Raises :class:`SourceError` (one line) for a missing, corrupt or wrong archive.

    Example:
        >>> recs = read_cifar("data/cifar-100-python", get_base("cifar20"), "test")   # doctest: +SKIP
        >>> recs[0].ord_label in range(20)                                             # doctest: +SKIP
        True
    """
    layout = LAYOUTS.get(base.name)
    if layout is None:
        raise SourceError(f"read_cifar reads bases {', '.join(LAYOUTS)}, not {base.name}")
    if split not in SPLITS:
        raise SourceError(f"base {base.name} has splits {' and '.join(SPLITS)}, not {split!r}")
    path = Path(path)
    if not path.exists():
        raise SourceError(
            f"{path} does not exist; point it at {layout.filename} or its extracted {layout.folder}/ folder "
            "(or pass --download)"
        )
    if path.is_dir() and not (path / layout.folder).is_dir() and (path / layout.filename).is_file():
        path = path / layout.filename  # a folder holding the archive, such as the --download cache
    members = layout.members[split]
    blobs = _folder_members(path, layout, base, members) if path.is_dir() else _tar_members(path, layout, base, members)
    by_member: dict[str, list[ClRecord]] = {}
    with progress_bar(f"reading {base.name} {split} batches", len(members)) as advance:
        # Parse each batch as it arrives so only one pickle's bytes are in memory at a time.
        for member, what, blob in blobs:
            by_member[member] = _batch_records(blob, what, layout, base, pixels)
            advance()
    return [record for member in members for record in by_member[member]]


def _wrong_base(path: Path, found: _Layout, base: Base) -> SourceError:
    wanted = LAYOUTS[base.name]
    return SourceError(
        f"{path} is the {found.title} archive ({found.folder}/), but base {base.name} needs {wanted.filename}; "
        f"pass that file or its {wanted.folder}/ folder instead (or pass --download)"
    )


def _other_layouts(base: Base) -> list[_Layout]:
    return [layout for name, layout in LAYOUTS.items() if name != base.name]


def _folder_members(
    path: Path, layout: _Layout, base: Base, members: tuple[str, ...]
) -> Iterator[tuple[str, str, bytes]]:
    """(member, description, bytes) of each batch file in the extracted folder (or the folder containing it)."""
    if (path / layout.folder).is_dir():
        folder = path / layout.folder
    elif path.name == layout.folder or (path / layout.meta).is_file():
        folder = path
    else:
        for other in _other_layouts(base):
            if path.name == other.folder or (path / other.folder).is_dir():
                raise _wrong_base(path, other, base)
        raise SourceError(
            f"{path} holds no {layout.folder}/ folder; point it at {layout.filename} or the folder extracted from it"
        )
    for member in members:
        file = folder / member
        if not file.is_file():
            raise SourceError(
                f"{folder} has no {member}; it is not a complete extracted {layout.filename} (extract it again)"
            )
        yield member, str(file), file.read_bytes()


def _tar_members(
    path: Path, layout: _Layout, base: Base, members: tuple[str, ...]
) -> Iterator[tuple[str, str, bytes]]:
    """(member, description, bytes) of each wanted batch, read in one pass over the compressed tar stream."""
    wanted = {f"{layout.folder}/{m}": m for m in members}
    seen: set[str] = set()
    try:
        # Stream mode ("r|*"): one sequential decompression, no seeking back through the gzip stream.
        with tarfile.open(path, "r|*") as tar:
            for info in tar:
                name = info.name.removeprefix("./")
                for other in _other_layouts(base):
                    if name.split("/")[0] == other.folder:
                        raise _wrong_base(path, other, base)
                member = wanted.get(name)
                if member is None or not info.isfile():
                    continue
                file = tar.extractfile(info)
                assert file is not None  # isfile() members always have data
                data = file.read()
                seen.add(member)
                yield member, f"{path}:{name}", data
                if len(seen) == len(wanted):
                    return  # the rest of the archive is not needed
    except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
        raise SourceError(
            f"{path} is not a readable {layout.filename} (truncated or corrupt: {exc}); re-download it "
            "(or pass --download)"
        ) from None
    missing = [m for m in members if m not in seen]
    raise SourceError(
        f"{path} has no {layout.folder}/{missing[0]}; it is not a complete {layout.filename} "
        "(re-download it, or pass --download)"
    )


def _text(value: object) -> str:
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return value.decode("latin1")
    if isinstance(value, str):
        return value
    raise TypeError(type(value).__name__)


def _int_labels(value: object, count: int) -> np.ndarray | None:
    """``value`` as an integer array if it is ``count`` integers, else None. A list is checked before numpy sees it:
    it could be ragged (numpy raises) or repeat one long row by reference (numpy would build N x its length)."""
    if isinstance(value, (list, tuple)):
        if len(value) != count or not all(type(v) is int or isinstance(v, np.integer) for v in value):
            return None
    elif not isinstance(value, np.ndarray):
        return None
    labels = np.asarray(value)
    return labels if labels.shape == (count,) and np.issubdtype(labels.dtype, np.integer) else None


def _batch_records(blob: bytes, what: str, layout: _Layout, base: Base, pixels: bool = True) -> list[ClRecord]:
    """Check one batch pickle and turn it into records."""
    batch = safe_load(blob, what)
    if not isinstance(batch, dict):
        raise SourceError(f"{what} holds a {type(batch).__name__}, expected a CIFAR batch dict")
    # Keys are bytes when written by Python 3 (or read with encoding="bytes"), str for Python 2 files under latin1.
    batch = {_text(k) if isinstance(k, (bytes, str)) else k: v for k, v in batch.items()}
    missing = [k for k in ("data", layout.label_key, "filenames") if k not in batch]
    if missing:
        raise SourceError(f"{what} lacks {', '.join(missing)}; it is not a {layout.title} batch for base {base.name}")
    data = batch["data"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        shape = getattr(data, "shape", None)
        raise SourceError(f"{what}: data is {type(data).__name__} {shape}, expected an N x 3072 uint8 array")
    count = len(data)
    labels = _int_labels(batch[layout.label_key], count)
    if labels is None:
        raise SourceError(f"{what}: {layout.label_key} must be {count} integers, one per image")
    if count and (labels.min() < 0 or labels.max() >= base.num_classes):
        raise SourceError(f"{what}: {layout.label_key} outside 0..{base.num_classes - 1} for base {base.name}")
    try:
        names = [_text(n) for n in batch["filenames"]]
    except TypeError as exc:
        raise SourceError(f"{what}: filenames must be strings, found {exc}") from None
    if len(names) != count:
        raise SourceError(f"{what}: {len(names)} filenames but {count} images")
    if not pixels:
        return [ClRecord(name, None, int(labels[i])) for i, name in enumerate(names)]
    # CIFAR stores each row as R, G, B planes of 32x32; one contiguous N x 32 x 32 x 3 block, each image a view.
    images = np.ascontiguousarray(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
    return [ClRecord(name, images[i], int(labels[i])) for i, name in enumerate(names)]
