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
from aclbuild.repository import staged_output
from aclbuild.schema import ClRecord

KEYS = ("names", "images", "ord_labels", "cl_labels")
FAILED_QUERY = -1  # the CL `aclbuild generate` writes for a query that never got a parseable answer


def _int_matrix(values, what: str, path: Path) -> np.ndarray:
    try:  # fast path: a rectangular integer list or array converts in one call
        matrix = np.asarray(values)
        if matrix.dtype.kind in "iu" and matrix.ndim in (1, 2) and len(matrix) == len(values):
            return matrix.reshape(len(matrix), -1).astype(np.int64)
    except (ValueError, TypeError):
        pass  # ragged or mixed: the row-by-row path below says what is wrong
    rows = [list(np.asarray(v).reshape(-1)) if np.ndim(v) else [v] for v in values]
    widths = {len(r) for r in rows}
    if len(widths) > 1:
        raise SourceError(
            f"{path}: {what} is ragged (rows of {sorted(widths)} labels); every image needs the same number of CLs"
        )
    try:
        matrix = np.array(rows, dtype=np.float64).reshape(len(rows), widths.pop() if widths else 0)
    except (TypeError, ValueError):
        raise SourceError(f"{path}: {what} must hold integers") from None
    if not np.all(matrix == np.round(matrix)):
        raise SourceError(f"{path}: {what} must hold integers, found fractional values")
    return matrix.astype(np.int64)


def _check_range(labels: np.ndarray, what: str, base: Base, path: Path) -> None:
    bad = (labels < 0) | (labels >= base.num_classes)
    if bad.any():
        row = int(np.argwhere(bad)[0][0])
        raise SourceError(
            f"{path}: {what} of image {row} is {labels.reshape(len(labels), -1)[row].tolist()}, outside "
            f"0..{base.num_classes - 1} for base {base.name}; is --dataset right?"
        )


def _images(raw, count: int, base: Base, path: Path) -> list[np.ndarray]:
    images = list(raw) if not isinstance(raw, np.ndarray) or raw.ndim != 4 else raw
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
    missing, extra = [k for k in KEYS if k not in data], [str(k) for k in data if k not in KEYS]
    if missing or extra:
        raise SourceError(
            f"{path}: keys must be exactly {', '.join(KEYS)}"
            + (f"; missing {', '.join(missing)}" if missing else "")
            + (f"; unexpected {', '.join(extra)}" if extra else "")
        )
    names = list(data["names"])
    if not all(isinstance(n, str) for n in names):
        raise SourceError(f"{path}: names must be strings (file names)")
    if base.unique_names and len(set(names)) != len(names):  # cifar20's source itself repeats a name
        seen: set[str] = set()
        dup = next(n for n in names if n in seen or seen.add(n))
        raise SourceError(
            f"{path}: name {dup!r} appears more than once; base {base.name} names each image once, so names must be "
            "unique"
        )
    for key in ("ord_labels", "cl_labels"):
        if len(data[key]) != len(names):
            raise SourceError(
                f"{path}: {len(data[key])} {key} but {len(names)} names; every key needs one entry per image"
            )
    images = _images(data["images"], len(names), base, path)
    ord_labels = _int_matrix(data["ord_labels"], "ord_labels", path)
    if ord_labels.shape[1] != 1:
        raise SourceError(f"{path}: ord_labels must hold one integer per image")
    cl_labels = _int_matrix(data["cl_labels"], "cl_labels", path)
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
        raise SourceError(f"{source} holds {cl_labels.shape[1]} CLs per image; --num-cl must be 1..{cl_labels.shape[1]}")
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
