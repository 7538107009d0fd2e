"""A split's content hash: sha256 over its rows in order, each row its name, image bytes and labels.

Example:
    >>> import hashlib
    >>> digest = hashlib.sha256()
    >>> hash_rows(digest, [("a.png", b"png", 3, [1, 2]), ("b.png", b"", 0, None)])
    >>> digest.hexdigest()[:12]
    '8ae2f0fb3973'
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import NamedTuple


def hash_parts(name: str, image_bytes: bytes, ord_label: int, cl_labels: Sequence[int] | None) -> tuple[bytes, ...]:
    """The bytes one row feeds into the content hash, in order (the writer hashes a chunk's rows as one string)."""
    labels = f"{ord_label}|{'' if cl_labels is None else ','.join(map(str, cl_labels))}\n"
    return name.encode() + b"\0", len(image_bytes).to_bytes(8, "little"), image_bytes, labels.encode()


def spml_hash_parts(
    name: str, image_bytes: bytes, labels: Sequence[int], observed_label: int | None
) -> tuple[bytes, ...]:
    """The bytes one single-positive multi-label row feeds into the content hash: name, NUL, image byte count,
    image bytes as :func:`hash_parts`, then ``"{label,label,...}|{observed_label}\\n"`` (nothing after ``|`` where
    there is no observed label).

    Example:
        >>> spml_hash_parts("a.jpg", b"jpg", [0, 2], None)[-1], spml_hash_parts("b.jpg", b"", [1], 1)[-1]
        (b'0,2|\\n', b'1|1\\n')
    """
    text = f"{','.join(map(str, labels))}|{'' if observed_label is None else observed_label}\n"
    return name.encode() + b"\0", len(image_bytes).to_bytes(8, "little"), image_bytes, text.encode()


def record_hash_update(digest, name: str, image_bytes: bytes, ord_label: int, cl_labels) -> None:
    """Feed one row into a split's content hash (names, image bytes, labels; order matters)."""
    digest.update(b"".join(hash_parts(name, image_bytes, ord_label, cl_labels)))


def hash_rows(digest, rows: Iterable[tuple]) -> None:
    """Feed rows of :func:`aclbuild.repository.rows.row_values` into a split's content hash (a single-positive
    multi-label row, :class:`SpmlRow`, by :func:`spml_hash_parts`)."""
    for row in rows:
        if isinstance(row, SpmlRow):
            digest.update(b"".join(spml_hash_parts(row.name or "", row.image or b"", row.labels, row.observed_label)))
        else:
            name, image, ord_label, cls = row
            record_hash_update(digest, name or "", image or b"", ord_label, cls)


class SpmlRow(NamedTuple):
    """A stored single-positive multi-label row as the content hash covers it (a CL row is a plain tuple)."""

    name: str
    image: bytes
    labels: list[int]
    observed_label: int | None
