"""Files written whole or not at all: a temporary name in the same folder, then one ``os.replace``.

A reader (or a resumed run) sees the old file or the complete new one, never a half-written one: a kill between
the write and the rename leaves only the hidden temporary ``.<name>.<pid>.aclbuild.tmp``, a name that nothing else
writes, so a later run removes it (:func:`remove_leftovers`, once the process that wrote it is gone).

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
import re
from collections.abc import Iterator
from pathlib import Path

TMP_SUFFIX = ".aclbuild.tmp"
LEFTOVER = re.compile(r"\..+\.(\d+)" + re.escape(TMP_SUFFIX))


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


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    return True


def remove_leftovers(folder: str | Path) -> list[Path]:
    """Remove the temporaries that killed aclbuild processes left in ``folder`` (not below); returns them.

    Only names this module writes are touched, and only those of processes no longer running (a live one may be
    about to rename its temporary into place).

    Example:
        >>> import tempfile
        >>> folder = Path(tempfile.mkdtemp())
        >>> _ = (folder / ".run.json.999999999.aclbuild.tmp").write_text("{")   # a pid no process has
        >>> _ = (folder / "notes.tmp").write_text("mine")                         # not aclbuild's: kept
        >>> [p.name for p in remove_leftovers(folder)], sorted(p.name for p in folder.iterdir())
        (['.run.json.999999999.aclbuild.tmp'], ['notes.tmp'])
    """
    removed = []
    for path in Path(folder).glob(f".*{TMP_SUFFIX}"):
        match = LEFTOVER.fullmatch(path.name)
        if match and path.is_file() and not _alive(int(match.group(1))):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed
