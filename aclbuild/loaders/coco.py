"""MS-COCO 2014 as a multi-label source: ``train2014.zip`` / ``val2014.zip`` (or their folders) and
``instances_{train,val}2014.json`` (or ``annotations_trainval2014.zip``).

As the SPML benchmark's ``preproc/format_coco.py`` reads it: the 80 categories in the order the json lists them
(category-id order in the official files) are the classes; an image is a positive of every category it has an
annotation of (crowd ones included). Only images with at least one annotation are kept, as there (about 1% of the
images, those with no object, are left out); they are ordered by their id sorted as text (the benchmark's
"backwards compatibility"). A record's name is ``<part>2014/COCO_<part>2014_<id, 12 digits>.jpg``, the benchmark's.
The benchmark trains on part ``train`` and tests on ``val``.

Example:
    >>> part = read_coco("train2014.zip", "train", "annotations_trainval2014.zip")   # doctest: +SKIP
    >>> len(part.class_names), part.names[0]                                        # doctest: +SKIP
    (80, 'train2014/COCO_train2014_000000000009.jpg')
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from aclbuild.errors import SourceError
from aclbuild.loaders.spml_source import SpmlPart, open_tree

COCO_PARTS = ("train", "val")
ANNOTATIONS_ZIP = "annotations_trainval2014.zip"


def coco_labels(instances: dict, what: str) -> tuple[tuple[str, ...], list[int], np.ndarray]:
    """(category names, image ids, label matrix) of a parsed ``instances_*.json``, as the benchmark formats them.

    Example:
        >>> doc = {"categories": [{"id": 1, "name": "person"}, {"id": 3, "name": "car"}], "images": [],
        ...        "annotations": [{"image_id": 9, "category_id": 3}, {"image_id": 25, "category_id": 1},
        ...                        {"image_id": 9, "category_id": 1}]}
        >>> names, ids, labels = coco_labels(doc, "x.json")
        >>> names, ids, labels.tolist()
        (('person', 'car'), [25, 9], [[1, 0], [1, 1]])
    """
    try:
        categories = [(int(c["id"]), str(c["name"])) for c in instances["categories"]]
        pairs = [(int(a["image_id"]), int(a["category_id"])) for a in instances["annotations"]]
    except (KeyError, TypeError, ValueError) as exc:
        raise SourceError(f"{what} is not a COCO instances file (categories, annotations with image_id and "
                          f"category_id): {type(exc).__name__} {exc}")  # fmt: skip
    column = {category_id: i for i, (category_id, _) in enumerate(categories)}
    unknown = next((c for _, c in pairs if c not in column), None)
    if unknown is not None:
        raise SourceError(f"{what}: an annotation has category_id {unknown}, which its categories do not list")
    ids = sorted({image_id for image_id, _ in pairs}, key=str)  # as text, as the benchmark sorts them
    row = {image_id: i for i, image_id in enumerate(ids)}
    labels = np.zeros((len(ids), len(categories)), dtype=np.uint8)
    for image_id, category_id in pairs:
        labels[row[image_id], column[category_id]] = 1
    return tuple(name for _, name in categories), ids, labels


def _read_instances(annotations: Path, part: str) -> dict:
    """The parsed ``instances_<part>2014.json`` from that file, an annotations zip, or a folder holding either."""
    member = f"instances_{part}2014.json"
    if annotations.is_dir() and not (annotations / member).is_file():
        zipped = annotations / ANNOTATIONS_ZIP
        annotations = zipped if zipped.is_file() else annotations / "annotations"
    if annotations.is_file() and annotations.suffix == ".json":
        data, what = _read_file(annotations), str(annotations)
    else:
        tree = open_tree(annotations, f"{member} or {ANNOTATIONS_ZIP}")
        tree.find_root(("annotations/", ""), member, f"{ANNOTATIONS_ZIP} or a folder with {member}")
        data, what = tree.read(member), f"{tree.label}:{tree.root}{member}"
    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise SourceError(f"{what} is not valid JSON ({exc}); re-download {ANNOTATIONS_ZIP}") from None


def _read_file(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise SourceError(f"cannot read {path}: {exc.strerror or exc}") from None


def read_coco(path: str | Path, part: str = "train", annotations: str | Path | None = None,
              images: bool = True) -> SpmlPart:  # fmt: skip
    """The annotated images of ``part`` (train or val) and their labels. ``path`` is ``<part>2014.zip``, the
    ``<part>2014/`` folder, or a folder holding either; ``annotations`` the instances json, the annotations zip, or
    a folder with either (default: ``path``'s folder, then its ``annotations/``). ``images=False`` reads the labels
    alone. Raises SourceError (one line) for a missing or malformed file or an annotated image missing."""
    if part not in COCO_PARTS:
        raise SourceError(f"COCO 2014 has parts {', '.join(COCO_PARTS)}, not {part!r}")
    path = Path(path).expanduser()
    folder = path if path.is_dir() else path.parent
    instances = _read_instances(Path(annotations).expanduser() if annotations else folder, part)
    class_names, ids, labels = coco_labels(instances, f"instances_{part}2014.json")
    if not ids:
        raise SourceError(f"instances_{part}2014.json has no annotation; re-download {ANNOTATIONS_ZIP}")
    names = [f"{part}2014/COCO_{part}2014_{image_id:012d}.jpg" for image_id in ids]
    tree = None
    if images:
        if path.is_dir() and (path / f"{part}2014.zip").is_file() and not (path / f"{part}2014").is_dir():
            path = path / f"{part}2014.zip"
        tree = open_tree(path, f"{part}2014.zip or its folder")
        files = [n.partition("/")[2] for n in names]
        tree.find_root((f"{part}2014/", ""), files, f"{part}2014.zip or its {part}2014/ folder")
        missing = next((n for n, f in zip(names, files) if not tree.has(f)), None)
        if missing is not None:
            raise SourceError(f"{tree.label} has no {missing}, which instances_{part}2014.json annotates")
    return SpmlPart(class_names, names, labels, tree, [n.partition("/")[2] for n in names])
