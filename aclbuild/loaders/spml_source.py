"""What the single-positive multi-label readers (voc, coco, cub, nuswide) share: a read-only view of a source tree
(a folder, a tar of any compression, or a zip), one official part read as a label matrix, and lazy records.

A reader returns an :class:`SpmlPart`: the class names, each image's name (its path as the SPML benchmark's
``formatted_*_images.npy`` spells it), the N x K 0/1 label matrix, and where each image lies in the tree. Nothing is
decoded until a record's ``image`` is read (:class:`SpmlRecords`), so a source larger than RAM works. A compressed
tar (CUB's .tgz) is read fastest in member order; extract it for random access.

Example:
    >>> part = SpmlPart(("cat", "dog"), ["a.jpg", "b.jpg"], np.array([[1, 0], [1, 1]], np.uint8), None, [])
    >>> records = SpmlRecords(part, observed=np.array([0, 1]))
    >>> [(r.name, r.labels, r.observed_label) for r in records]
    [('a.jpg', (0,), 0), ('b.jpg', (0, 1), 1)]
    >>> [r.name for r in records.subset([1])]
    ['b.jpg']
"""

from __future__ import annotations

import io
import tarfile
import zipfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from aclbuild.errors import SourceError
from aclbuild.schema import LazyImage, SpmlRecord

_ARCHIVE_ERRORS = (tarfile.TarError, zipfile.BadZipFile, zlib.error, OSError, EOFError)


class SourceTree:
    """Files of a folder or an archive, by path relative to ``root`` (a prefix found by :meth:`find_root`)."""

    def __init__(self, label: str):
        self.label = label  # the user's path, for messages
        self.root = ""

    def _has(self, path: str) -> bool:
        raise NotImplementedError

    def _read(self, path: str) -> bytes:
        raise NotImplementedError

    def has(self, rel: str, rooted: bool = True) -> bool:
        """Whether the file ``rel`` exists (under the root; ``rooted=False``: under the folder or archive's top)."""
        return self._has(self.root + rel if rooted else rel)

    def read(self, rel: str, rooted: bool = True) -> bytes:
        """The bytes of ``rel`` (as :meth:`has` finds it); a missing or unreadable file is one SourceError line."""
        path = self.root + rel if rooted else rel
        if not self._has(path):
            raise SourceError(f"{self.label} has no file {path}")
        try:
            return self._read(path)
        except _ARCHIVE_ERRORS as exc:
            raise SourceError(f"{self.label}: {path} cannot be read ({exc}); re-download it") from None

    def text(self, rel: str, rooted: bool = True) -> str:
        """``rel`` decoded as UTF-8 (undecodable bytes replaced, so the line-level checks name the bad line)."""
        return self.read(rel, rooted).decode("utf-8", "replace")

    def find_root(self, roots: Sequence[str], marker: str | Sequence[str], expected: str) -> None:
        """Set the root to the first of ``roots`` (prefixes such as ``"VOCdevkit/VOC2012/"``) holding ``marker``
        (or any of several); none does: one line saying what ``expected`` layout was looked for."""
        markers = [marker] if isinstance(marker, str) else list(marker)
        for root in roots:
            if any(self._has(root + m) for m in markers):
                self.root = root
                return
        marker = markers[0]
        raise SourceError(f"{self.label} holds no {marker} (looked under {', '.join(r or './' for r in roots)}); "
                          f"expected {expected}")  # fmt: skip


class _FolderTree(SourceTree):
    def __init__(self, label: str, folder: Path):
        super().__init__(label)
        self.folder = folder

    def _has(self, path: str) -> bool:
        return (self.folder / path).is_file()

    def _read(self, path: str) -> bytes:
        return (self.folder / path).read_bytes()


class _TarTree(SourceTree):
    def __init__(self, label: str, archive: tarfile.TarFile):
        super().__init__(label)
        self.archive = archive
        self.members = {m.name.removeprefix("./"): m for m in archive.getmembers() if m.isfile()}

    def _has(self, path: str) -> bool:
        return path in self.members

    def _read(self, path: str) -> bytes:
        handle = self.archive.extractfile(self.members[path])
        return handle.read() if handle is not None else b""


class _ZipTree(SourceTree):
    def __init__(self, label: str, archive: zipfile.ZipFile):
        super().__init__(label)
        self.archive = archive
        self.members = {n for n in archive.namelist() if not n.endswith("/")}

    def _has(self, path: str) -> bool:
        return path in self.members

    def _read(self, path: str) -> bytes:
        return self.archive.read(path)


def open_tree(path: str | Path, what: str) -> SourceTree:
    """A folder, tar (.tar, .tgz, .tar.gz, ...) or zip as a :class:`SourceTree`; ``what`` names the expected
    source in messages. The archive stays open as long as the tree (and the records made from it) lives.

    Example:
        >>> open_tree("/no/such/VOCtrainval.tar", "the VOC tar")
        Traceback (most recent call last):
        aclbuild.errors.SourceError: /no/such/VOCtrainval.tar does not exist; pass the VOC tar
    """
    path = Path(path).expanduser()
    if path.is_dir():
        return _FolderTree(str(path), path)
    if not path.is_file():
        raise SourceError(f"{path} does not exist; pass {what}")
    try:
        if zipfile.is_zipfile(path):
            return _ZipTree(str(path), zipfile.ZipFile(path))
        if tarfile.is_tarfile(path):
            return _TarTree(str(path), tarfile.open(path))
    except _ARCHIVE_ERRORS as exc:
        raise SourceError(f"{path} is not a readable archive ({exc}); re-download {what}") from None
    raise SourceError(f"{path} is neither a folder, a tar nor a zip; pass {what}")


def decode_rgb(data: bytes, what: str) -> np.ndarray:
    """An image file's bytes as H x W x 3 uint8 (any mode converted to RGB); unreadable: one SourceError line."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as image:
            return np.asarray(image.convert("RGB"), dtype=np.uint8)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise SourceError(f"{what} is not a readable image ({exc})") from None


@dataclass
class SpmlPart:
    """One official part (e.g. VOC's train) of a multi-label source: ``labels[i, k]`` is 1 when image ``i`` shows
    class ``k``; image ``i`` is the file ``files[i]`` of ``tree`` (None: no images, labels only)."""

    class_names: tuple[str, ...]
    names: list[str]
    labels: np.ndarray
    tree: SourceTree | None
    files: list[str]

    def image_bytes(self, i: int) -> bytes:
        """The file of image ``i`` as stored in the source (a writer can keep it without re-encoding)."""
        if self.tree is None:
            raise SourceError(f"image {self.names[i]}: this part was read without its images")
        return self.tree.read(self.files[i])


class LazySpmlRecord(LazyImage, SpmlRecord):
    """A record whose image is decoded when ``image`` is first read; names and labels cost nothing."""

    def __init__(self, name: str, labels: tuple[int, ...], observed_label: int | None, load) -> None:
        self.name, self.labels, self.observed_label = name, labels, observed_label
        self._pixels, self._load = None, load


class SpmlRecords(Sequence):
    """The records of ``part`` at ``positions`` (all by default), with ``observed[i]`` the observed positive of
    image ``i`` of the part (-1 or no array: none). Images are decoded on access, one record at a time."""

    def __init__(self, part: SpmlPart, observed: np.ndarray | None = None, positions: Sequence[int] | None = None):
        self.part, self.observed = part, observed
        self.positions = range(len(part.names)) if positions is None else positions

    def __len__(self) -> int:
        return len(self.positions)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return SpmlRecords(self.part, self.observed, self.positions[i])
        at = int(self.positions[i])
        labels = tuple(int(k) for k in np.flatnonzero(self.part.labels[at]))
        observed = None if self.observed is None or self.observed[at] < 0 else int(self.observed[at])
        load = None if self.part.tree is None else (lambda: decode_rgb(self.part.image_bytes(at), self.where(at)))
        return LazySpmlRecord(self.part.names[at], labels, observed, load)

    def subset(self, positions: Sequence[int]) -> SpmlRecords:
        """The records at ``positions`` of this sequence (copies nothing)."""
        return SpmlRecords(self.part, self.observed, [self.positions[int(p)] for p in positions])

    def where(self, at: int) -> str:
        tree = self.part.tree
        return f"{tree.label}:{tree.root}{self.part.files[at]}" if tree is not None else self.part.names[at]

    @property
    def names(self) -> list[str]:
        """Every record's name, without decoding an image."""
        return [self.part.names[int(p)] for p in self.positions]

    @property
    def label_matrix(self) -> np.ndarray:
        """The N x K 0/1 labels of these records."""
        return self.part.labels[np.asarray(self.positions, dtype=np.int64)]
