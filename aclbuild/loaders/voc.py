"""Pascal VOC 2012 as a multi-label source, from ``VOCtrainval_11-May-2012.tar`` or its extracted folder.

As the SPML benchmark's ``preproc/format_pascal.py`` reads it: for each of the 20 classes in the official order, the
class file ``ImageSets/Main/<class>_<part>.txt`` lists every image of the part with 1 (present), -1 (absent) or 0
(difficult only); an image is a positive of the class only for 1, so "difficult" counts as absent. An image that is
a positive of no class is left out, as there. Images are sorted by id; a record's name is ``<id>.jpg``, its file
``JPEGImages/<id>.jpg``. The benchmark trains on part ``train`` and tests on ``val``; ``trainval`` is read too.

Example:
    >>> part = read_voc("VOCtrainval_11-May-2012.tar", "train")   # doctest: +SKIP
    >>> len(part.names), part.class_names[:3]                     # doctest: +SKIP
    (5717, ('aeroplane', 'bicycle', 'bird'))
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from aclbuild.errors import SourceError
from aclbuild.loaders.spml_source import SpmlPart, open_tree

VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "diningtable", "dog",
    "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)  # fmt: skip
VOC_PARTS = ("train", "val", "trainval")
VOC_ROOTS = ("VOCdevkit/VOC2012/", "VOC2012/", "")  # the tar's layout, or a folder inside it
_LAYOUT = "VOCtrainval_11-May-2012.tar or its folder (VOCdevkit/VOC2012/ImageSets/Main, JPEGImages)"


def parse_class_file(text: str, what: str) -> dict[str, int]:
    """Image id -> 1 / -1 / 0 of one class file (``<id> <flag>`` per line, any spacing); a bad line: one error.

    Example:
        >>> parse_class_file("2008_000002 -1\\n2008_000003  1\\n2008_000007  0\\n", "cat_train.txt")
        {'2008_000002': -1, '2008_000003': 1, '2008_000007': 0}
        >>> parse_class_file("2008_000002 yes\\n", "cat_train.txt")
        Traceback (most recent call last):
        aclbuild.errors.SourceError: cat_train.txt line 1 is not '<image id> <1, -1 or 0>': '2008_000002 yes'
    """
    flags = {}
    for number, line in enumerate(text.splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 2 or fields[1] not in ("1", "-1", "0"):
            raise SourceError(f"{what} line {number} is not '<image id> <1, -1 or 0>': {line.strip()!r}")
        flags[fields[0]] = int(fields[1])
    return flags


def read_voc(path: str | Path, part: str = "train", images: bool = True) -> SpmlPart:
    """The images of ``part`` (train, val or trainval) with at least one positive class, and their labels.
    ``images=False`` reads the labels alone (the records then have no image). Raises SourceError (one line) for a
    missing class file, a malformed line, or a listed image missing from JPEGImages."""
    if part not in VOC_PARTS:
        raise SourceError(f"VOC 2012 has parts {', '.join(VOC_PARTS)}, not {part!r}")
    tree = open_tree(path, "VOCtrainval_11-May-2012.tar or its extracted folder")
    tree.find_root(VOC_ROOTS, f"ImageSets/Main/{VOC_CLASSES[0]}_{part}.txt", _LAYOUT)
    positives: dict[str, list[int]] = {}
    for index, name in enumerate(VOC_CLASSES):
        rel = f"ImageSets/Main/{name}_{part}.txt"
        for image_id, flag in parse_class_file(tree.text(rel), f"{tree.label}:{tree.root}{rel}").items():
            if flag == 1:
                positives.setdefault(image_id, []).append(index)
    if not positives:
        raise SourceError(f"{tree.label}: the {part} class files list no positive image; is this VOC 2012?")
    ids = sorted(positives)
    labels = np.zeros((len(ids), len(VOC_CLASSES)), dtype=np.uint8)
    for row, image_id in enumerate(ids):
        labels[row, positives[image_id]] = 1
    files = [f"JPEGImages/{image_id}.jpg" for image_id in ids]
    if images:
        missing = next((f for f in files if not tree.has(f)), None)
        if missing is not None:
            raise SourceError(f"{tree.label} has no {tree.root}{missing}, which the {part} class files list; "
                              f"pass the whole {_LAYOUT}")  # fmt: skip
    return SpmlPart(VOC_CLASSES, [f"{i}.jpg" for i in ids], labels, tree if images else None, files)
