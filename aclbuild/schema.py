"""The one record type and its Hub schema (Features), defined once and used everywhere.

Loaders yield :class:`ClRecord`; labelers fill ``cl_labels``; the repository stores the columns of
:func:`features`; training reads them back. The columns are those of the human CLCIFAR sets on the Hub, so a user
can swap a human set for a VLM set without changing code.

The schema is defined once, by :func:`features_dict`, in datasets' own serialised form (what ``Features.to_dict()``
gives and what the Parquet metadata stores). :func:`features` turns it into datasets' Features; the writer takes
:func:`arrow_schema` and the card :func:`card_features`, which derive the Arrow types and the card YAML from the same
value without importing datasets (0.7 s, a third of a 50,000-image build). tests/test_schema.py checks that both equal
what datasets itself derives.

Example:
    >>> feats = features(("cat", "dog"), num_cl=3)
    >>> list(feats)
    ['names', 'images', 'ord_labels', 'cl_labels']
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

if TYPE_CHECKING:
    from datasets import Features

COLUMNS = ("names", "images", "ord_labels", "cl_labels")
# datasets' ClassLabel value for "no label" (its docs: "You can use -1 to represent unknown/missing labels"). A split
# without CLs (test) stores each row's cl_labels as num_cl of them: a null list breaks torch's default_collate on
# ``with_format("torch")`` (datasets 5.x) and fails to load at all in datasets 2.17 with pyarrow 15 ("Expected all
# lists to be of size=3"), while an empty list would drop the fixed length from the train split's feature.
NO_LABEL = -1


@dataclass
class ClRecord:
    """One image with its true label and, in a training split, its complementary labels.

    ``image`` is an H x W x 3 uint8 array (None only where a reader was asked for names and labels alone, for a
    labeler that needs no pixels); ``cl_labels`` is None in a test split (true labels only): the repository stores
    such a row's cl_labels as :func:`no_cl_labels`.
    """

    name: str
    image: np.ndarray | None
    ord_label: int
    cl_labels: tuple[int, ...] | None = None


class LazyImage:
    """A record's ``image`` decoded by ``self._load()`` when first read, then kept (names and labels cost nothing);
    the readers of large sources mix it into their record types.

    Example:
        >>> class LazyCl(LazyImage, ClRecord):
        ...     def __init__(self, name, ord_label, load):
        ...         self.name, self.ord_label, self.cl_labels, self._load = name, ord_label, None, load
        >>> record = LazyCl("a.png", 2, load=lambda: np.zeros((2, 2, 3), np.uint8))
        >>> record.name, record.image.shape
        ('a.png', (2, 2, 3))
    """

    _pixels: np.ndarray | None = None
    _load = None

    @property
    def image(self) -> np.ndarray | None:
        if self._pixels is None and self._load is not None:
            self._pixels, self._load = self._load(), None
        return self._pixels


def no_cl_labels(num_cl: int) -> tuple[int, ...]:
    """The stored cl_labels of a row without complementary labels (a test split): ``num_cl`` times ``NO_LABEL``.

    Example:
        >>> no_cl_labels(3)
        (-1, -1, -1)
    """
    return (NO_LABEL,) * num_cl


def features_dict(class_names: tuple[str, ...] | list[str], num_cl: int) -> dict:
    """The repository's Features as datasets serialises them: names, images, ord_labels (ClassLabel), cl_labels
    (a ClassLabel list of fixed length ``num_cl``)."""
    labels = {"names": list(class_names), "_type": "ClassLabel"}
    return {
        "names": {"dtype": "string", "_type": "Value"},
        "images": {"_type": "Image"},
        "ord_labels": labels,
        "cl_labels": {"feature": labels, "length": num_cl, "_type": "List"},
    }


def features(class_names: tuple[str, ...] | list[str], num_cl: int) -> Features:
    """The repository's Features (datasets' object) of :func:`features_dict`."""
    from datasets import Features

    return Features.from_dict(features_dict(class_names, num_cl))


def arrow_schema(class_names: tuple[str, ...] | list[str], num_cl: int) -> pa.Schema:
    """The shards' Arrow schema, with the Features in its metadata exactly as datasets writes them (``load_dataset``
    reads ClassLabel names and the fixed length back from there)."""
    fields = [
        ("names", pa.string()),
        ("images", pa.struct([("bytes", pa.binary()), ("path", pa.string())])),  # datasets' Image storage
        ("ord_labels", pa.int64()),  # ClassLabel storage
        ("cl_labels", pa.list_(pa.int64(), num_cl)),  # a List with a length is a fixed-size list
    ]
    metadata = {"huggingface": json.dumps({"info": {"features": features_dict(class_names, num_cl)}})}
    return pa.schema(fields, metadata=metadata)


def card_features(class_names: tuple[str, ...] | list[str], num_cl: int) -> list[dict]:
    """The ``dataset_info.features`` list of the card's YAML (datasets' ``DatasetInfo._to_yaml_dict`` form)."""
    label = {"class_label": {"names": {str(i): name for i, name in enumerate(class_names)}}}
    return [
        {"name": "names", "dtype": "string"},
        {"name": "images", "dtype": "image"},
        {"name": "ord_labels", "dtype": label},
        {"name": "cl_labels", "list": label, "length": num_cl},
    ]


# --- Single-positive multi-label (SPML) sets: VLPL's setting (issue 16) --------------------------------------------


@dataclass
class SpmlRecord:
    """One image with its full positive set and, in a training split, its single observed positive.

    ``labels`` holds the class indices of every positive, ascending; ``observed_label`` is the one positive a
    single-positive learner sees (drawn as :mod:`aclbuild.loaders.observed` says), None in validation and test splits
    and for a training image without any positive. ``image`` is H x W x 3 uint8 at the image's own size.
    """

    name: str
    image: np.ndarray | None
    labels: tuple[int, ...]
    observed_label: int | None = None


SPML_COLUMNS = ("names", "images", "labels", "observed_label")


@dataclass(frozen=True)
class SpmlSchema:
    """The SPML repository's columns for ``class_names``: names, images, labels (a ClassLabel list of any length),
    observed_label (a ClassLabel, null where there is none). One value gives datasets' Features, the Arrow schema
    and the card's features, all derived from :meth:`features_dict` as the CL record's are.

    Example:
        >>> schema = SpmlSchema(("cat", "dog", "car"))
        >>> row = schema.encode_row(SpmlRecord("a.jpg", None, (0, 2), 2), image_bytes=b"...")
        >>> row["labels"], row["observed_label"], row["images"]["bytes"]
        ([0, 2], 2, b'...')
        >>> schema.decode_labels(row)
        (['cat', 'car'], 'car')
        >>> schema.decode_labels(schema.encode_row(SpmlRecord("b.jpg", None, (1,)), image_bytes=b"..."))
        (['dog'], None)
        >>> list(schema.arrow_schema().names) == list(SPML_COLUMNS)
        True
    """

    class_names: tuple[str, ...]

    def features_dict(self) -> dict:
        """The Features as datasets serialises them (``Features.to_dict()``, the Parquet metadata's form)."""
        label = {"names": list(self.class_names), "_type": "ClassLabel"}
        return {
            "names": {"dtype": "string", "_type": "Value"},
            "images": {"_type": "Image"},
            "labels": {"feature": label, "_type": "List"},
            "observed_label": label,
        }

    def features(self) -> Features:
        """datasets' Features object of :meth:`features_dict`."""
        from datasets import Features

        return Features.from_dict(self.features_dict())

    def arrow_schema(self) -> pa.Schema:
        """The shards' Arrow schema with the Features in its metadata; observed_label is a nullable int64."""
        fields = [
            ("names", pa.string()),
            ("images", pa.struct([("bytes", pa.binary()), ("path", pa.string())])),
            ("labels", pa.list_(pa.int64())),  # a List without a length: each image has its own number of positives
            ("observed_label", pa.int64()),
        ]
        metadata = {"huggingface": json.dumps({"info": {"features": self.features_dict()}})}
        return pa.schema(fields, metadata=metadata)

    def card_features(self) -> list[dict]:
        """The ``dataset_info.features`` list of the card's YAML (datasets' ``DatasetInfo._to_yaml_dict`` form)."""
        label = {"class_label": {"names": {str(i): name for i, name in enumerate(self.class_names)}}}
        return [
            {"name": "names", "dtype": "string"},
            {"name": "images", "dtype": "image"},
            {"name": "labels", "list": label},
            {"name": "observed_label", "dtype": label},
        ]

    def encode_row(self, record: SpmlRecord, image_bytes: bytes) -> dict:
        """One stored row of ``record`` whose image file is ``image_bytes`` (stored as they are, not re-encoded)."""
        indices = (*record.labels, record.observed_label)
        bad = [i for i in indices if i is not None and not 0 <= i < len(self.class_names)]
        if bad:
            raise ValueError(f"{record.name}: class index {bad[0]} outside 0..{len(self.class_names) - 1}")
        return {"names": record.name, "images": {"bytes": image_bytes, "path": None},
                "labels": [int(i) for i in record.labels], "observed_label": record.observed_label}  # fmt: skip

    def decode_labels(self, row: dict) -> tuple[list[str], str | None]:
        """A stored row's positives and observed positive as class names (None: no observed label)."""
        observed = row["observed_label"]
        return [self.class_names[i] for i in row["labels"]], None if observed is None else self.class_names[observed]
