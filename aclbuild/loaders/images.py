"""One entry point for a base's source images: CIFAR archives, TinyImageNet, MNIST-family IDX files, or the
embedded digits.

Example:
    >>> from aclbuild.registry import get_base
    >>> len(read_source_images(get_base("digits"), None, "test"))   # doctest: +SKIP
    397
"""

from __future__ import annotations

from pathlib import Path

from aclbuild.errors import SourceError
from aclbuild.registry import Base, FileSet
from aclbuild.schema import ClRecord


def read_source_images(base: Base, path: str | Path | None, split: str, pixels: bool = True) -> list[ClRecord]:
    """Records (true labels, no CLs) of ``split`` of ``base``, read from ``path`` (ignored for ``digits``).
    ``pixels=False`` asks for names and labels only: a reader that can skips decoding (``image`` is then None).

    Example:
        >>> recs = read_source_images(get_base("cifar10"), "cifar-10-python.tar.gz", "test")   # doctest: +SKIP
        >>> len(recs)                                                                           # doctest: +SKIP
        10000
    """
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
