"""One entry point for a base's source images: CIFAR archives, TinyImageNet, MNIST-family IDX files, or the
embedded digits.

Example:
    >>> from aclbuild.registry import get_base
    >>> len(read_source_images(get_base("digits"), None, "test"))   # doctest: +SKIP
    397
"""

from __future__ import annotations

from pathlib import Path

import json
from collections.abc import Sequence

from aclbuild.errors import InputError, SourceError, UnknownNameError
from aclbuild.registry import BASES, Base, CustomBase, FileSet, Variant, get_base
from aclbuild.schema import ClRecord


def read_source_images(base: Base, path: str | Path | None, split: str, pixels: bool = True) -> Sequence[ClRecord]:
    """Records (true labels, no CLs) of ``split`` of ``base``, read from ``path`` (ignored for ``digits``).
    ``pixels=False`` asks for names and labels only: a reader that can skips decoding (``image`` is then None).

    Example:
        >>> recs = read_source_images(get_base("cifar10"), "cifar-10-python.tar.gz", "test")   # doctest: +SKIP
        >>> len(recs)                                                                           # doctest: +SKIP
        10000
    """
    if isinstance(base, CustomBase):
        return _custom_records(base, path, split, pixels)
    if base.name == "digits":
        from aclbuild.loaders.digits import read_digits  # lazy: pulls in scikit-learn

        return read_digits(split)
    if path is None:
        filename = base.archive.filename if base.archive else "its source archive"
        the = "the " if isinstance(base.archive, FileSet) else ""
        raise SourceError(
            f"base {base.name} needs --source/--test-source pointing at {the}{filename} (or pass --download)"
        )
    if base.name in ("cifar10", "cifar20"):
        from aclbuild.loaders.cifar import read_cifar

        return read_cifar(path, base, split, pixels)
    if base.name in ("min10", "min20"):
        from aclbuild.loaders.tinyimagenet import read_tinyimagenet

        return read_tinyimagenet(path, base, split, pixels)
    if isinstance(base.archive, FileSet):
        from aclbuild.loaders.mnist import read_mnist

        return read_mnist(path, base, split, pixels)
    raise SourceError(f"no image reader for base {base.name}")


def _custom_records(base: CustomBase, path: str | Path | None, split: str, pixels: bool) -> Sequence[ClRecord]:
    """A custom base's records, lazily decoded: its own split for ``train``; for ``test`` the source's ``test``
    split when it has one (else none). ``path`` replaces the recorded source (a local copy of it)."""
    from dataclasses import replace

    from aclbuild.loaders.hf_source import split_records

    spec = base.spec if path is None else replace(base.spec, source=str(path))
    if split == "test":
        if spec.split == "test":
            return []
        try:
            records, _ = split_records(replace(spec, split="test", class_names=None), pixels)
        except (InputError, SourceError):
            return []  # the source has no test split (or none like the train one): the repository has none
        if records.side != base.image_size:
            records.side = base.image_size  # one size in the repository: the train split's
        return records
    records, description = split_records(spec, pixels)
    recorded = json.loads(base.description).get("source_class_names")
    if recorded is not None and list(description["source_class_names"]) != list(recorded):
        raise SourceError(f"--source {spec.source}: its classes ({', '.join(description['source_class_names'])}) are "
                          f"not the ones the labels were made with ({', '.join(recorded)})")  # fmt: skip
    records.side = base.image_size
    return records


def source_base(
    base_name: str, source: str | Path | None, split: str | None = None, image_column: str | None = None,
    label_column: str | None = None, class_names: str | None = None,
) -> Base:  # fmt: skip
    """`generate`'s base: a built-in one by name, or a new base ``base_name`` made from ``source`` (a Hub id or a
    folder ``datasets`` reads), described by its split's columns, class names and first image's size."""
    from aclbuild.loaders.hf_source import SourceSpec, custom_base, split_records

    custom_options = (split, image_column, label_column, class_names) != (None, None, None, None)
    if base_name.lower() in BASES:
        if custom_options:
            raise InputError(f"--split, --image-column, --label-column and --class-names are for a custom source; "
                             f"base {base_name} has its own")  # fmt: skip
        return get_base(base_name)
    if source is None:
        raise UnknownNameError(
            f"unknown base {base_name!r}; choose one of: {', '.join(BASES)}, or label your own dataset as a new base: "
            f"`generate {base_name} --source ORG/NAME_OR_FOLDER`"
        )
    spec = SourceSpec(str(source), split or "train", image_column, label_column, class_names)
    _, description = split_records(spec, pixels=False)
    return custom_base(base_name, spec, description)


def record_names(records: Sequence[ClRecord]) -> list[str]:
    """Every record's name; a lazy source's without decoding an image."""
    names = getattr(records, "names", None)
    return list(names) if names is not None else [r.name for r in records]


def source_variant(
    dataset: str, provenance: dict | None, source: str | Path | None, license: str | None = None
) -> Variant | None:
    """The variant ``dataset`` of the custom base the labels' provenance records (None: no custom source recorded).
    The images come from ``source``, else from the recorded source id; ``license`` replaces the source's."""
    from aclbuild.loaders.hf_source import SourceSpec, custom_base, custom_variants

    described = (provenance or {}).get("source")
    if not isinstance(described, dict):
        return None
    spec = SourceSpec(str(source or described["id"]), described["split"], described["image_column"],
                      described["label_column"])  # fmt: skip
    base = custom_base(str(described["base"]), spec, described, license)
    variants = custom_variants(base)
    if dataset.lower() not in variants:
        raise UnknownNameError(f"the labels were made on custom base {base.name}: build them as one of "
                               f"{', '.join(variants)}")  # fmt: skip
    return variants[dataset.lower()]
