"""CUB-200-2011 as a multi-label source: its 312 binary attributes as the classes, from ``CUB_200_2011.tgz`` or the
folder it extracts to.

As the SPML benchmark's ``preproc/format_cub.py`` reads it: the classes are the attributes of ``attributes.txt`` (at
the top of the tgz, beside ``CUB_200_2011/``; ``attributes/attributes.txt`` inside it is taken too), in id order; an
image is a positive of every attribute whose ``is_present`` is 1 in ``attributes/image_attribute_labels.txt``
(certainty ignored); ``train_test_split.txt`` sends ``is_train`` 1 to part ``train`` and 0 to ``test`` (the
benchmark's "val", its test set). Images keep the order of ``images.txt``; an image with no attribute present stays
(it gets no observed label). A record's name is the ``images.txt`` path, its file ``images/<path>``.

Example:
    >>> part = read_cub("CUB_200_2011.tgz", "train")   # doctest: +SKIP
    >>> len(part.names), len(part.class_names)         # doctest: +SKIP
    (5994, 312)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from aclbuild.errors import SourceError
from aclbuild.loaders.spml_source import SourceTree, SpmlPart, open_tree

CUB_PARTS = ("train", "test")
_LAYOUT = "CUB_200_2011.tgz or its folder (CUB_200_2011/images.txt, attributes/, images/)"


def parse_id_lines(text: str, what: str) -> dict[int, str]:
    """``<id> <value>`` lines as id -> value (CUB's values hold no space); a bad line: one error.

    Example:
        >>> parse_id_lines("1 001.Albatross/a.jpg\\n2 002.Auklet/b.jpg\\n", "images.txt")
        {1: '001.Albatross/a.jpg', 2: '002.Auklet/b.jpg'}
        >>> parse_id_lines("one a.jpg\\n", "images.txt")
        Traceback (most recent call last):
        aclbuild.errors.SourceError: images.txt line 1 is not '<id> <value>': 'one a.jpg'
    """
    values = {}
    for number, line in enumerate(text.splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 2 or not fields[0].isdigit():
            raise SourceError(f"{what} line {number} is not '<id> <value>': {line.strip()!r}")
        values[int(fields[0])] = fields[1]
    return values


def attribute_matrix(text: str, image_ids: list[int], num_attributes: int, what: str) -> np.ndarray:
    """The images x attributes 0/1 matrix of ``image_attribute_labels.txt`` (``<image> <attribute> <is_present>
    <certainty> <time>``; extra fields, as a few official lines have, are ignored). Every image needs every attribute.

    Example:
        >>> attribute_matrix("1 1 0 3 1.5\\n1 2 1 4 2.0\\n2 1 1 3 1.0\\n2 2 1 3 0.5\\n", [2, 1], 2, "x").tolist()
        [[1, 1], [0, 1]]
    """
    row = {image_id: i for i, image_id in enumerate(image_ids)}
    labels = np.zeros((len(image_ids), num_attributes), dtype=np.uint8)
    seen = np.zeros_like(labels, dtype=bool)
    for number, line in enumerate(text.splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        try:
            image_id, attribute, present = int(fields[0]), int(fields[1]), int(fields[2])
        except (ValueError, IndexError):
            raise SourceError(f"{what} line {number} is not '<image> <attribute> <is_present> ...': "
                              f"{line.strip()!r}") from None  # fmt: skip
        if not 1 <= attribute <= num_attributes or present not in (0, 1):
            raise SourceError(f"{what} line {number}: attribute {attribute} (of 1..{num_attributes}) or "
                              f"is_present {present} (0 or 1) out of range")  # fmt: skip
        if image_id in row:
            labels[row[image_id], attribute - 1] = present
            seen[row[image_id], attribute - 1] = True
    if not seen.all():
        image, attribute = np.argwhere(~seen)[0]
        raise SourceError(f"{what} gives no value of attribute {attribute + 1} for image {image_ids[image]}")
    return labels


def _attribute_names(tree: SourceTree) -> tuple[str, ...]:
    """The attribute names in id order, from the tgz's top-level ``attributes.txt`` or ``attributes/``'s."""
    for rel, rooted in (("attributes.txt", False), ("attributes/attributes.txt", True), ("attributes.txt", True)):
        if tree.has(rel, rooted):
            what = f"{tree.label}:{'' if not rooted else tree.root}{rel}"
            names = parse_id_lines(tree.text(rel, rooted), what)
            if sorted(names) != list(range(1, len(names) + 1)):
                raise SourceError(f"{what}: attribute ids are not 1..{len(names)}")
            return tuple(names[i] for i in range(1, len(names) + 1))
    raise SourceError(f"{tree.label} has no attributes.txt (beside CUB_200_2011/ or in attributes/); pass {_LAYOUT}")


def read_cub(path: str | Path, part: str = "train", images: bool = True) -> SpmlPart:
    """The images of ``part`` (train or test) and their attributes. ``images=False`` reads the labels alone.
    Raises SourceError (one line) for a missing or malformed file or an image missing from ``images/``."""
    if part not in CUB_PARTS:
        raise SourceError(f"CUB-200-2011 has parts {', '.join(CUB_PARTS)}, not {part!r}")
    tree = open_tree(path, "CUB_200_2011.tgz or its extracted folder")
    tree.find_root(("CUB_200_2011/", ""), "images.txt", _LAYOUT)
    where = f"{tree.label}:{tree.root}"
    class_names = _attribute_names(tree)
    paths = parse_id_lines(tree.text("images.txt"), f"{where}images.txt")
    is_train = parse_id_lines(tree.text("train_test_split.txt"), f"{where}train_test_split.txt")
    unsplit = next((i for i in paths if is_train.get(i) not in ("0", "1")), None)
    if unsplit is not None:
        raise SourceError(f"{where}train_test_split.txt gives image {unsplit} no is_train 0 or 1")
    wanted = "1" if part == "train" else "0"
    ids = [i for i in paths if is_train[i] == wanted]  # images.txt's order
    if not ids:
        raise SourceError(f"{where}train_test_split.txt puts no image in part {part}")
    rel = "attributes/image_attribute_labels.txt"
    labels = attribute_matrix(tree.text(rel), ids, len(class_names), f"{where}{rel}")
    files = [f"images/{paths[i]}" for i in ids]
    if images:
        missing = next((f for f in files if not tree.has(f)), None)
        if missing is not None:
            raise SourceError(f"{tree.label} has no {tree.root}{missing}, which images.txt lists; pass {_LAYOUT}")
    return SpmlPart(class_names, [paths[i] for i in ids], labels, tree if images else None, files)
