"""TinyImageNet-200 subsets (bases min10 and min20) from ``tiny-imagenet-200.zip`` or its extracted folder.

Order (sources.md): ``train`` is each wnid of the base in sorted order, then its ``train/<wnid>/images/*.JPEG``
sorted as strings (``n_0, n_1, n_10, n_2``); ``test`` is the val images whose wnid (``val/val_annotations.txt``) is
in the base, ordered by wnid then file name. ``name`` is the file name; ``ord_label`` the wnid's index in
``base.wnids``. Zip members are read directly, nothing is extracted; greyscale JPEGs become RGB.

Example:
    >>> from aclbuild.registry import get_base
    >>> test = read_tinyimagenet("tiny-imagenet-200.zip", get_base("min10"), "test")   # doctest: +SKIP
    >>> len(test), test[0].image.shape                                                  # doctest: +SKIP
    (500, (64, 64, 3))
"""

from __future__ import annotations

import contextlib
import io
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image

from aclbuild.errors import SourceError
from aclbuild.progress import progress_bar
from aclbuild.registry import TINYIMAGENET_ARCHIVE, Base
from aclbuild.schema import ClRecord

ROOT = "tiny-imagenet-200"
SPLITS = ("train", "test")
_FIX = f"re-download {TINYIMAGENET_ARCHIVE.filename} (or pass --download)"


class _Tree:
    """Read-only view of the ``tiny-imagenet-200/`` tree, in a zip or on disk: list a folder, read a file."""

    def __init__(self, label: str):
        self.label = label  # the user's path, for messages

    def listdir(self, folder: str) -> list[str] | None:
        """File names directly inside ``folder`` (relative to the root), or None when there is no such folder."""
        raise NotImplementedError

    def read(self, rel: str) -> bytes:
        raise NotImplementedError


class _DirTree(_Tree):
    def __init__(self, label: str, root: Path):
        super().__init__(label)
        self.root = root

    def listdir(self, folder: str) -> list[str] | None:
        path = self.root / folder
        return [p.name for p in path.iterdir() if p.is_file()] if path.is_dir() else None

    def read(self, rel: str) -> bytes:
        try:
            return (self.root / rel).read_bytes()
        except OSError as exc:
            raise SourceError(f"cannot read {self.root / rel}: {exc.strerror or exc}") from None


class _ZipTree(_Tree):
    def __init__(self, label: str, zf: zipfile.ZipFile):
        super().__init__(label)
        self.zf = zf
        names = zf.namelist()
        # The official zip has one top folder; accept a zip of its contents too.
        self.prefix = f"{ROOT}/" if any(n.startswith(f"{ROOT}/") for n in names) else ""
        self.folders: dict[str, list[str]] = {}
        for name in names:
            if not name.startswith(self.prefix):
                continue
            folder, _, file = name[len(self.prefix) :].rpartition("/")
            # Directory entries ("a/b/") still mark their folder as present, with no file.
            self.folders.setdefault(folder, [])
            if file:
                self.folders[folder].append(file)
            # Parents of a file exist even when the zip has no entry for them.
            while folder:
                folder = folder.rpartition("/")[0]
                self.folders.setdefault(folder, [])

    def listdir(self, folder: str) -> list[str] | None:
        files = self.folders.get(folder.strip("/"))
        return None if files is None else list(files)

    def read(self, rel: str) -> bytes:
        try:
            return self.zf.read(self.prefix + rel)
        except KeyError:
            raise SourceError(f"{self.label} has no member {self.prefix + rel}; {_FIX}") from None
        except (zipfile.BadZipFile, zlib.error, OSError, EOFError) as exc:
            raise SourceError(f"{self.label}: member {self.prefix + rel} is corrupt ({exc}); {_FIX}") from None


@contextlib.contextmanager
def _open_tree(path: Path) -> Iterator[_Tree]:
    if not path.exists():
        raise SourceError(f"{path} does not exist; point it at {TINYIMAGENET_ARCHIVE.filename} or its {ROOT}/ folder")
    if path.is_dir() and not (path / ROOT).is_dir() and (path / TINYIMAGENET_ARCHIVE.filename).is_file():
        path = path / TINYIMAGENET_ARCHIVE.filename  # a folder holding the zip, such as the --download cache
    if path.is_dir():
        root = path / ROOT if (path / ROOT).is_dir() else path
        if not (root / "train").is_dir() and not (root / "val").is_dir():
            raise SourceError(
                f"{path} holds no {ROOT}/ folder (with train/ and val/); extract the zip there or pass the zip itself"
            )
        yield _DirTree(str(path), root)
        return
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise SourceError(f"{path} is not a readable {TINYIMAGENET_ARCHIVE.filename} ({exc}); {_FIX}") from None
    with zf:
        tree = _ZipTree(str(path), zf)
        if "train" not in tree.folders and "val" not in tree.folders:
            raise SourceError(f"{path} holds no {ROOT}/ tree (train/, val/); is it {TINYIMAGENET_ARCHIVE.filename}?")
        yield tree


def read_tinyimagenet(path: str | Path, base: Base, split: str, pixels: bool = True) -> list[ClRecord]:
    """Records of ``split`` ("train" or "test" = TinyImageNet val) of base min10 or min20, 64x64x3 uint8, no CLs.
    With ``pixels=False`` no JPEG is opened and every ``image`` is None (names and labels only).

    ``path`` is ``tiny-imagenet-200.zip``, the extracted ``tiny-imagenet-200/`` folder, or a folder holding either.
    Raises :class:`SourceError` (one line) for a missing wnid, a corrupt zip or an unreadable or misshapen JPEG.

    Example:
        >>> recs = read_tinyimagenet("data/tiny-imagenet-200", get_base("min20"), "train")   # doctest: +SKIP
        >>> recs[0].name, recs[0].ord_label                                                   # doctest: +SKIP
        ('n01644900_0.JPEG', 0)
    """
    if not base.wnids:
        raise SourceError(f"read_tinyimagenet reads the TinyImageNet bases (min10, min20), not {base.name}")
    if split not in SPLITS:
        raise SourceError(f"base {base.name} has splits {' and '.join(SPLITS)}, not {split!r}")
    with _open_tree(Path(path)) as tree:
        items = _train_items(tree, base) if split == "train" else _val_items(tree, base)
        if not pixels:
            return [ClRecord(rel.rpartition("/")[2], None, label) for rel, label in items]
        records = []
        with progress_bar(f"decoding {base.name} {split} images", len(items)) as advance:
            for rel, label in items:
                image = _decode(tree.read(rel), f"{tree.label}:{rel}", base.image_size)
                records.append(ClRecord(rel.rpartition("/")[2], image, label))
                advance()
    return records


def _is_jpeg(name: str) -> bool:
    return name.lower().endswith((".jpeg", ".jpg"))


def _train_items(tree: _Tree, base: Base) -> list[tuple[str, int]]:
    """(file relative to the root, label) of every train image of the base, in the published order."""
    items = []
    for label, wnid in enumerate(base.wnids):
        folder = f"train/{wnid}/images"
        files = tree.listdir(folder)
        if files is None:
            raise SourceError(f"{tree.label} has no {folder}/ folder, which base {base.name} needs; {_FIX}")
        files = sorted(f for f in files if _is_jpeg(f))  # as strings: n_0, n_1, n_10, n_2
        if not files:
            raise SourceError(f"{tree.label}: {folder}/ holds no JPEG; {_FIX}")
        items.extend((f"{folder}/{f}", label) for f in files)
    return items


def _val_items(tree: _Tree, base: Base) -> list[tuple[str, int]]:
    """(file relative to the root, label) of the val images of the base's wnids, by wnid then file name."""
    text = tree.read("val/val_annotations.txt").decode("utf-8", "replace")
    index = {wnid: i for i, wnid in enumerate(base.wnids)}
    chosen: list[tuple[str, str]] = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) < 2 or not _is_jpeg(fields[0]):
            raise SourceError(
                f"{tree.label}: val/val_annotations.txt line {number} is not 'file<TAB>wnid<TAB>box'; {_FIX}"
            )
        if fields[1].strip() in index:
            chosen.append((fields[1].strip(), fields[0].strip()))
    absent = sorted(set(index) - {wnid for wnid, _ in chosen})
    if absent:
        raise SourceError(f"{tree.label}: val/val_annotations.txt lists no image of wnid {absent[0]}; {_FIX}")
    return [(f"val/images/{file}", index[wnid]) for wnid, file in sorted(chosen)]


def _decode(data: bytes, what: str, size: int) -> np.ndarray:
    """One JPEG as a size x size x 3 uint8 array (greyscale and other modes converted to RGB)."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()  # decode now, so a truncated file fails here with its name
            array = np.array(image if image.mode == "RGB" else image.convert("RGB"), dtype=np.uint8)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise SourceError(f"{what} is not a readable image ({exc}); {_FIX}") from None
    if array.shape != (size, size, 3):
        raise SourceError(
            f"{what} is {array.shape[1]}x{array.shape[0]}, expected {size}x{size}; is this the original {ROOT}?"
        )
    return array
