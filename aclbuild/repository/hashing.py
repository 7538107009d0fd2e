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


def hash_parts(name: str, image_bytes: bytes, ord_label: int, cl_labels: Sequence[int] | None) -> tuple[bytes, ...]:
    """The bytes one row feeds into the content hash, in order (the writer hashes a chunk's rows as one string)."""
    labels = f"{ord_label}|{'' if cl_labels is None else ','.join(map(str, cl_labels))}\n"
    return name.encode() + b"\0", len(image_bytes).to_bytes(8, "little"), image_bytes, labels.encode()


def record_hash_update(digest, name: str, image_bytes: bytes, ord_label: int, cl_labels) -> None:
    """Feed one row into a split's content hash (names, image bytes, labels; order matters)."""
    digest.update(b"".join(hash_parts(name, image_bytes, ord_label, cl_labels)))


def hash_rows(digest, rows: Iterable[tuple]) -> None:
    """Feed rows of :func:`aclbuild.repository.rows.row_values` into a split's content hash."""
    for name, image, ord_label, cls in rows:
        record_hash_update(digest, name or "", image or b"", ord_label, cls)
