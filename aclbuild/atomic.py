"""Files and folders written whole or not at all: a temporary name in the same folder, then a rename.

A reader (or a resumed run) sees the old file or the complete new one, never a half-written one: a kill between
the write and the rename leaves only the hidden temporary ``.<name>.<pid>.aclbuild.tmp`` (a file, or the folder
:func:`atomic_folder` stages in), a name that nothing else writes, so a later run removes it
(:func:`remove_leftovers`, once the process that wrote it is gone). Folders are made with the user's umask.

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
import shutil
from collections.abc import Iterator
from pathlib import Path

TMP_SUFFIX = ".aclbuild.tmp"
OLD = "old"  # marks the replaced folder, set aside until the new one is in place: .<name>.old.<pid>.aclbuild.tmp
LEFTOVER = re.compile(r"\..+\.(?P<pid>\d+)" + re.escape(TMP_SUFFIX))


def leftover_pattern(name: str | None = None) -> re.Pattern:
    """The temporaries of ``name`` (a file or folder name; any when None), the writer's pid as group ``pid``.

    Example:
        >>> names = (".repo.old.42.aclbuild.tmp", ".repo2.42.aclbuild.tmp")
        >>> [bool(leftover_pattern("repo").fullmatch(name)) for name in names]
        [True, False]
    """
    if name is None:
        return LEFTOVER
    return re.compile(r"\." + re.escape(name) + r"(?:\." + OLD + r")?\.(?P<pid>\d+)" + re.escape(TMP_SUFFIX))


def temporary_name(path: Path, role: str = "") -> Path:
    """The hidden temporary that ``path`` is written under before it is renamed into place (one per process);
    ``role`` ``old`` names where a replaced folder waits to be removed.

    Example:
        >>> temporary_name(Path("out/repo")).name == f".repo.{os.getpid()}.aclbuild.tmp"
        True
    """
    return path.with_name(f".{path.name}{'.' + role if role else ''}.{os.getpid()}{TMP_SUFFIX}")


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


def remove_leftovers(folder: str | Path, name: str | None = None) -> list[Path]:
    """Remove the temporaries (files and staging folders) that killed aclbuild processes left in ``folder`` (not
    below), only those of ``name`` when given; returns them.

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
    removed, pattern = [], leftover_pattern(name)
    for path in Path(folder).glob(f".*{TMP_SUFFIX}") if Path(folder).is_dir() else []:
        match = pattern.fullmatch(path.name)
        if not match or _alive(int(match["pid"])):
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        removed.append(path)
    return removed


@contextlib.contextmanager
def atomic_folder(dest: str | Path) -> Iterator[Path]:
    """Yield an empty hidden folder beside ``dest`` to fill; on success it takes ``dest``'s place (an existing
    ``dest`` is removed once the new one is there), on failure it is removed. What killed earlier runs left for
    ``dest`` is removed first. The folder gets the user's umask (``tempfile.mkdtemp`` would make it 0700).

    Example:
        >>> import tempfile
        >>> dest = Path(tempfile.mkdtemp()) / "repo"
        >>> with atomic_folder(dest) as staged:
        ...     _ = (staged / "README.md").write_text("card")
        ...     dest.exists()
        False
        >>> sorted(p.name for p in dest.parent.iterdir()), (dest / "README.md").read_text()
        (['repo'], 'card')
    """
    dest = Path(dest)
    remove_leftovers(dest.parent, dest.name)
    staged, old = temporary_name(dest), temporary_name(dest, OLD)
    for mine in (staged, old):  # this process's own, from an earlier call that could not clean up
        shutil.rmtree(mine, ignore_errors=True)
    staged.mkdir()
    try:
        yield staged
        if dest.exists():  # two renames: between them, the old folder waits under a name a rerun removes
            dest.rename(old)
            staged.rename(dest)
            shutil.rmtree(old) if old.is_dir() and not old.is_symlink() else old.unlink()  # a link, not its target
        else:
            staged.rename(dest)
    finally:
        shutil.rmtree(staged, ignore_errors=True)  # after a failure; after success the name is already gone
