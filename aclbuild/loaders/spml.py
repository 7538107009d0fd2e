"""The four single-positive multi-label sets by name: each source's train, validation and test records.

``read_spml_splits("voc2012-spml", "VOCtrainval_11-May-2012.tar")`` reads the official training and test parts
with the source's reader and splits them as :func:`aclbuild.loaders.observed.spml_splits` says. ``source`` is
what the reader takes for both parts: the VOC tar or folder; a COCO folder holding ``train2014.zip`` and
``val2014.zip`` (or their folders) and ``annotations_trainval2014.zip`` (or ``annotations/``); the CUB tgz or
folder; the NUS-WIDE folder with VLPL's formatted files and ``Flickr/``.

Example:
    >>> sorted(SPML_SETS)
    ['coco2014-spml', 'cub-spml', 'nuswide-spml', 'voc2012-spml']
    >>> read_spml_splits("imagenet-spml", "x")
    Traceback (most recent call last):
    aclbuild.errors.UnknownNameError: unknown SPML set 'imagenet-spml'; choose one of: voc2012-spml, coco2014-spml, ...
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from aclbuild.errors import UnknownNameError
from aclbuild.loaders.observed import SEED, spml_splits
from aclbuild.loaders.spml_source import SpmlPart, SpmlRecords


@dataclass(frozen=True)
class SpmlSet:
    """A set's reader (``reader(source, part, images=...)``) and the official parts it trains and tests on."""

    name: str
    reader: Callable[..., SpmlPart]
    train_part: str
    test_part: str


def _voc(source, part, images):
    from aclbuild.loaders.voc import read_voc

    return read_voc(source, part, images=images)


def _coco(source, part, images):
    from aclbuild.loaders.coco import read_coco

    return read_coco(source, part, images=images)


def _nuswide(source, part, images):
    from aclbuild.loaders.nuswide import read_nuswide

    return read_nuswide(source, part, images=images)


def _cub(source, part, images):
    from aclbuild.loaders.cub import read_cub

    return read_cub(source, part, images=images)


SPML_SETS = {
    s.name: s
    for s in (
        SpmlSet("voc2012-spml", _voc, "train", "val"),
        SpmlSet("coco2014-spml", _coco, "train", "val"),
        SpmlSet("nuswide-spml", _nuswide, "train", "val"),
        SpmlSet("cub-spml", _cub, "train", "test"),
    )
}


def read_spml_splits(name: str, source: str | Path, images: bool = True, seed: int = SEED) -> dict[str, SpmlRecords]:
    """The ``train`` (with observed labels), ``validation`` and ``test`` records of the set ``name`` from
    ``source``; ``images=False`` reads labels alone."""
    spml_set = SPML_SETS.get(name.lower())
    if spml_set is None:
        raise UnknownNameError(f"unknown SPML set {name!r}; choose one of: {', '.join(SPML_SETS)}")
    train = spml_set.reader(source, spml_set.train_part, images)
    test = spml_set.reader(source, spml_set.test_part, images)
    return spml_splits(train, test, seed)
