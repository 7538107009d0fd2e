"""Files written whole or not at all: a temporary name in the same folder, then one ``os.replace``.

A reader (or a resumed run) sees the old file or the complete new one, never a half-written one: a kill between
the write and the rename leaves only the hidden temporary ``.<name>.<pid>.aclbuild.tmp``, a name that nothing else
writes, so a later run may remove it.

Example:
    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> atomic_write_text(folder / "run.json", '{"seed": 1}\\n').read_text()
    '{"seed": 1}\\n'
    >>> sorted(p.name for p in folder.iterdir())  # no temporary left beside it
    ['run.json']
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

TMP_SUFFIX = ".aclbuild.tmp"


def temporary_name(path: Path) -> Path:
    """The hidden temporary that ``path`` is written under before it is renamed into place (one per process)."""
    return path.with_name(f".{path.name}.{os.getpid()}{TMP_SUFFIX}")


@contextlib.contextmanager
def atomic_file(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` to write; on success it replaces ``path``, on failure it is removed.

    Example:
        >>> import tempfile
        >>> target = Path(tempfile.mkdtemp()) / "curve.csv"
        >>> with atomic_file(target) as tmp:
        ...     _ = tmp.write_text("epoch\\n")
        ...     target.exists()
        False
        >>> target.read_text()
        'epoch\\n'
    """
    path = Path(path)
    tmp = temporary_name(path)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)  # after a failure; after success the name is already gone


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; returns ``path``."""
    with atomic_file(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; returns ``path``."""
    return atomic_write_bytes(path, text.encode("utf-8"))
