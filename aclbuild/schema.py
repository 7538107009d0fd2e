"""The one record type and its Hub schema (Features), defined once and used everywhere.

Loaders yield :class:`ClRecord`; labelers fill ``cl_labels``; the repository stores the columns of
:func:`features`; training reads them back. The columns are those of the human CLCIFAR sets on the Hub, so a user
can swap a human set for a VLM set without changing code.

Example:
    >>> feats = features(("cat", "dog"), num_cl=3)
    >>> list(feats)
    ['names', 'images', 'ord_labels', 'cl_labels']
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from datasets import ClassLabel, Features, Image, List, Value

COLUMNS = ("names", "images", "ord_labels", "cl_labels")


@dataclass
class ClRecord:
    """One image with its true label and, in a training split, its complementary labels.

    ``image`` is an H x W x 3 uint8 array; ``cl_labels`` is None in a test split (true labels only).
    """

    name: str
    image: np.ndarray
    ord_label: int
    cl_labels: tuple[int, ...] | None = None


def features(class_names: tuple[str, ...] | list[str], num_cl: int) -> Features:
    """The repository's Features: names, images, ord_labels (ClassLabel), cl_labels (fixed-length ClassLabel list)."""
    labels = ClassLabel(names=list(class_names))
    return Features(
        {
            "names": Value("string"),
            "images": Image(),
            "ord_labels": labels,
            "cl_labels": List(labels, length=num_cl),
        }
    )
