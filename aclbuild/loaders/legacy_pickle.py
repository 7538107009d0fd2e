"""The legacy complementary-label pickle (what libcll and the released ACL/CL files use), read safely.

A dict with exactly ``names``, ``images``, ``ord_labels`` and ``cl_labels`` (sources.md). It is read through
:func:`aclbuild.loaders.safe_pickle.safe_load`, which admits only numpy arrays and builtin containers, so a malicious
file runs nothing.

Example:
    >>> records = read_legacy_pickle("aclcifar10.pkl", get_base("cifar10"))   # doctest: +SKIP
    >>> write_legacy_pickle(records, "copy.pkl")                              # doctest: +SKIP
"""

from __future__ import annotations

import pickle
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from aclbuild.errors import SourceError
from aclbuild.loaders.safe_pickle import safe_load
from aclbuild.registry import Base
from aclbuild.paths import staged_output
from aclbuild.schema import ClRecord

KEYS = ("names", "images", "ord_labels", "cl_labels")
FAILED_QUERY = -1  # the CL `aclbuild generate` writes for a query that never got a parseable answer


LABEL_ALLOWANCE = 2**20  # labels beyond one per byte of the file (rows a pickle shares by reference)


def _describe(value: object) -> str:
    """A short, safe description: repr for scalars only (a crafted nested list or huge int must not be printed)."""
    if isinstance(value, (bool, float, np.generic, type(None))) or (isinstance(value, str) and len(value) < 40):
        return f"{value!r:.40} ({type(value).__name__})"
    return f"a {type(value).__name__}"


def _not_integer(what: str, path: Path, found: str) -> SourceError:
    return SourceError(
        f"{path}: {what} {found}; labels must be integer class indices (bool 0/1 or float labels are not stored "
        "silently) - write them as ints, e.g. np.asarray(labels, dtype=np.int64) once they are known to be whole"
    )


def _label_row(row: object, what: str, path: Path, index: int) -> list[int]:
    """One image's labels as ints: a scalar, a list or tuple, or a 0-d/1-d integer array."""
    if isinstance(row, np.ndarray):
        if row.dtype.kind not in "iu" or row.ndim > 1:
            raise _not_integer(what, path, f"of image {index} is a {row.ndim}-d {row.dtype} array")
        return row.reshape(-1).tolist()
    values = row if isinstance(row, (list, tuple)) else (row,)
    for value in values:
        if type(value) is not int and not isinstance(value, np.integer):
            raise _not_integer(what, path, f"of image {index} holds {_describe(value)}")
    return [int(v) for v in values]


def _int_matrix(values: list | tuple | np.ndarray, what: str, path: Path, max_labels: int) -> np.ndarray:
    """Labels as an N x K int64 matrix; refuses non-integer dtypes, ragged rows and more than ``max_labels``."""
    if isinstance(values, np.ndarray) and values.dtype != object:  # fast path: one array, checked by its dtype
        if values.dtype.kind not in "iu":
            raise _not_integer(what, path, f"is a {values.dtype} array")
        if values.ndim > 2:
            raise SourceError(f"{path}: {what} has shape {values.shape}; expected one row of labels per image")
        return values.reshape(len(values), -1).astype(np.int64)
    rows: list[list[int]] = []
    total = 0
    for index, row in enumerate(values):
        total += row.size if isinstance(row, np.ndarray) else len(row) if isinstance(row, (list, tuple)) else 1
        if total > max_labels:  # counted before any row is copied: shared rows could make N x K from 2N bytes
            raise SourceError(
                f"{path}: {what} holds more than {max_labels} labels, more than a file of its size carries; "
                "it is corrupt or crafted - re-create it"
            )
        rows.append(_label_row(row, what, path, index))
    widths = {len(r) for r in rows}
    if len(widths) > 1:
        raise SourceError(
            f"{path}: {what} is ragged (rows of {sorted(widths)} labels); every image needs the same number of CLs"
        )
    try:
        return np.array(rows, dtype=np.int64).reshape(len(rows), widths.pop() if widths else 0)
    except OverflowError:
        raise SourceError(f"{path}: {what} holds a label too large for a 64-bit integer; labels are class indices")


def _sequence(data: dict, key: str, path: Path) -> list | tuple | np.ndarray:
    """``data[key]``, which must hold one entry per image."""
    value = data[key]
    if isinstance(value, (list, tuple)) or (isinstance(value, np.ndarray) and value.ndim >= 1):
        return value
    raise SourceError(f"{path}: {key} is a {type(value).__name__}; it must be a list or array, one entry per image")


def _check_range(labels: np.ndarray, what: str, base: Base, path: Path) -> None:
    bad = (labels < 0) | (labels >= base.num_classes)
    if bad.any():
        row = int(np.argwhere(bad)[0][0])
        raise SourceError(
            f"{path}: {what} of image {row} is {labels.reshape(len(labels), -1)[row].tolist()}, outside "
            f"0..{base.num_classes - 1} for base {base.name}; is --dataset right?"
        )


def _images(raw, count: int, base: Base, path: Path) -> list[np.ndarray]:
    images = list(raw) if not isinstance(raw, np.ndarray) or raw.ndim != 4 else raw  # raw: a checked _sequence
    if len(images) != count:
        raise SourceError(f"{path}: {len(images)} images but {count} names; every key must have one entry per image")
    shape = (base.image_size, base.image_size, 3)
    for i, image in enumerate(images):
        if not isinstance(image, np.ndarray) or image.dtype != np.uint8:
            kind = image.dtype if isinstance(image, np.ndarray) else type(image).__name__
            raise SourceError(f"{path}: image {i} is {kind}, expected a uint8 array of shape {shape}")
        if image.shape != shape:
            raise SourceError(
                f"{path}: image {i} has shape {image.shape}, expected {shape} for base {base.name}; is --dataset right?"
            )
    return [np.ascontiguousarray(image) for image in images]


def read_legacy_pickle(
    path: str | Path, base: Base, num_cl: int | None = None, drop_failed: bool = False
) -> list[ClRecord]:
    """Records of a legacy CL pickle, checked against ``base``; keeps the first ``num_cl`` CLs when given.

    Images with a failed query (a CL of -1, from `aclbuild generate`) are refused, or left out with ``drop_failed``.
    """
    path = Path(path)
    if not path.is_file():
        raise SourceError(f"{path} does not exist or is not a file")
    with path.open("rb") as f:
        data = safe_load(f, str(path))
    if not isinstance(data, dict):
        raise SourceError(f"{path} holds a {type(data).__name__}, expected a dict with keys {', '.join(KEYS)}")
    missing = [k for k in KEYS if k not in data]
    extra = [k if isinstance(k, str) else _describe(k) for k in data if k not in KEYS]
    if missing or extra:
        raise SourceError(
            f"{path}: keys must be exactly {', '.join(KEYS)}"
            + (f"; missing {', '.join(missing)}" if missing else "")
            + (f"; unexpected {', '.join(extra)}" if extra else "")
        )
    names = list(_sequence(data, "names", path))
    if not names:
        raise SourceError(f"{path} holds no images; a legacy pickle needs at least one")
    if not all(isinstance(n, str) for n in names):
        raise SourceError(f"{path}: names must be strings (file names)")
    if base.unique_names and len(set(names)) != len(names):  # cifar20's source itself repeats a name
        seen: set[str] = set()
        dup = next(n for n in names if n in seen or seen.add(n))
        raise SourceError(
            f"{path}: name {dup!r} appears more than once; base {base.name} names each image once, so names must be "
            "unique"
        )
    for key in ("images", "ord_labels", "cl_labels"):
        _sequence(data, key, path)
    for key in ("ord_labels", "cl_labels"):
        if len(data[key]) != len(names):
            raise SourceError(
                f"{path}: {len(data[key])} {key} but {len(names)} names; every key needs one entry per image"
            )
    images = _images(data["images"], len(names), base, path)
    max_labels = path.stat().st_size + LABEL_ALLOWANCE  # a label takes at least a byte unless its row is shared
    ord_labels = _int_matrix(data["ord_labels"], "ord_labels", path, max_labels)
    if ord_labels.shape[1] != 1:
        raise SourceError(f"{path}: ord_labels must hold one integer per image")
    cl_labels = _int_matrix(data["cl_labels"], "cl_labels", path, max_labels)
    failed = (cl_labels == FAILED_QUERY).any(axis=1)
    if failed.any():
        if not drop_failed:
            raise SourceError(
                f"{path}: {int(failed.sum())} images carry a failed query (CL -1); "
                "pass --drop-failed to build without those images"
            )
        if failed.all():
            raise SourceError(f"{path}: every image has a failed query; nothing is left to build")
        keep = np.flatnonzero(~failed)
        names, images = [names[i] for i in keep], [images[i] for i in keep]
        ord_labels, cl_labels = ord_labels[keep], cl_labels[keep]
    _check_range(ord_labels, "ord_labels", base, path)
    _check_range(cl_labels, "cl_labels", base, path)
    cl_labels = select_cls(cl_labels, num_cl, str(path))
    return [
        ClRecord(name, image, int(y), tuple(int(c) for c in cls))
        for name, image, y, cls in zip(names, images, ord_labels[:, 0], cl_labels)
    ]


def select_cls(cl_labels: np.ndarray, num_cl: int | None, source: str) -> np.ndarray:
    """The first ``num_cl`` CLs of each row (all when None); refuses more than the source holds."""
    if cl_labels.shape[1] == 0:
        raise SourceError(f"{source}: images carry no complementary labels")
    if num_cl is None:
        return cl_labels
    if not 1 <= num_cl <= cl_labels.shape[1]:
        width = cl_labels.shape[1]
        raise SourceError(f"{source} holds {width} CLs per image; --num-cl must be 1..{width}")
    return cl_labels[:, :num_cl]


def write_legacy_pickle(records: Sequence[ClRecord], path: str | Path, overwrite: bool = False) -> Path:
    """Write records as a legacy pickle (images stacked into one N x H x W x 3 uint8 array when they share a shape)."""
    shapes = {r.image.shape for r in records}
    images = np.stack([r.image for r in records]) if len(shapes) == 1 else [r.image for r in records]
    data = {
        "names": [r.name for r in records],
        "images": images,
        "ord_labels": [int(r.ord_label) for r in records],
        "cl_labels": [list(r.cl_labels or ()) for r in records],
    }
    with staged_output(path, overwrite, is_dir=False) as staged, staged.open("wb") as f:
        pickle.dump(data, f, protocol=4)
    return Path(path)
