"""Where a verb may write, and what a failed write says: one check and one translation for every verb that writes.

:func:`check_output` runs before any work: an output may not be, hold or lie inside one of the command's inputs
(``build -o DIR --overwrite`` would otherwise delete the labels it reads), may not be a file where a folder goes
(or a folder where a file goes), may not lie under a file, and must be in a folder the user can write to.
:func:`write_errors` turns what the operating system says while writing (no space left, permission denied, a path
under a file) into one line: exit 1 for a full disk (the work failed), exit 2 for a path the user can mend.
:func:`staged_output` writes a file or folder whole or not at all (:func:`aclbuild.atomic.atomic_folder`).

Example:
    >>> import tempfile
    >>> root = Path(tempfile.mkdtemp())
    >>> _ = (root / "labels.csv").write_text("a.png,cat")
    >>> check_output(root / "repo", {"LABELS": root / "labels.csv"})
    >>> check_output(root, {"LABELS": root / "labels.csv"})  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    aclbuild.errors.InputError: ... holds LABELS ...labels.csv: writing there would replace the input; choose ...
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

from aclbuild.atomic import atomic_file, atomic_folder, remove_leftovers
from aclbuild.errors import AclbuildError, InputError, OutputExistsError

NO_SPACE = (errno.ENOSPC, errno.EDQUOT)
NO_PERMISSION = (errno.EACCES, errno.EPERM, errno.EROFS)
Inputs = Mapping[str, "str | Path | None"] | Iterable[tuple[str, "str | Path | None"]]  # label -> path


def check_output(
    output: str | Path, inputs: Inputs | None = None, option: str = "--output-dir", kind: str = "folder"
) -> None:
    """Refuse ``output`` (a ``folder`` or a ``file``, given as ``option``) before anything is written: onto, holding
    or inside an input (``inputs``: label -> path, a mapping or pairs; paths that do not exist and None, e.g. a Hub
    id, are skipped), a file where a folder goes or the reverse, under a file, or where the user cannot write.

    Example:
        >>> check_output("/proc/version", kind="folder")
        Traceback (most recent call last):
        aclbuild.errors.InputError: --output-dir /proc/version is a file; give a folder (it is made when missing)
    """
    output = Path(output)
    named = f"{option} {output}" if kind == "folder" else str(output)  # a file's name is the verb's choice
    for label, given in inputs.items() if isinstance(inputs, Mapping) else inputs or ():
        if given is not None and Path(given).exists():
            _check_apart(output, named, label, Path(given), option)
    above = _existing_ancestor(output)
    if not above.is_dir():
        raise InputError(f"{named} lies under {above}, which is a file; give {option} a path of folders")
    if output.exists() and kind == "folder" and not output.is_dir():
        raise InputError(f"{option} {output} is a file; give a folder (it is made when missing)")
    if output.is_dir() and kind == "file":
        raise InputError(f"{output} is a folder; move it away or choose another {option}")
    writable = output if output.is_dir() and kind == "folder" else above
    if not os.access(writable, os.W_OK | os.X_OK):
        raise InputError(f"cannot write in {writable}: permission denied; choose an {option} you can write to")


def _check_apart(output: Path, named: str, label: str, given: Path, option: str) -> None:
    """Refuse ``output`` (``named`` in the message) when it is, holds or lies inside the input ``given`` (symbolic
    links followed)."""
    out, inp = output.resolve(), given.resolve()
    if out == inp or out in inp.parents:
        relation, harm = ("is" if out == inp else "holds"), "replace"
    elif inp in out.parents:
        relation, harm = "lies inside", "change"
    else:
        return
    raise InputError(
        f"{named} {relation} {label} {given}: writing there would {harm} the input; choose an {option} outside "
        "every input"
    )


def _existing_ancestor(path: Path) -> Path:
    """``path``'s nearest ancestor that exists (the current folder for a relative path with none)."""
    for above in path.absolute().parents:
        if above.exists():
            return above
    return Path.cwd()  # not reached: the root exists


def megabytes(size: int) -> str:
    """A size for a message.

    Example:
        >>> megabytes(1_234_567), megabytes(81_000_000), megabytes(12)
        ('1.2 MB', '81 MB', '0.1 MB')
    """
    mb = max(size / 1e6, 0.1)
    return f"{mb:.1f} MB" if mb < 10 else f"{mb:.0f} MB"


def folder_size(path: Path) -> int:
    """Bytes of the files at or under ``path`` (0 when it is gone)."""
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else 0


def write_error(exc: OSError, where: Path, needed: int | None = None, option: str = "--output-dir") -> Exception:
    """The project error for ``exc``, raised while writing ``where``: no space left (exit 1; ``needed`` bytes, or as
    much as is known), permission denied or a path under a file (exit 2); ``exc`` itself for anything else, or when
    it names a file outside ``where`` (an input that could not be read is not a write that failed).

    Example:
        >>> write_error(OSError(errno.EACCES, "Permission denied"), Path("out/repo"))
        InputError('cannot write in out: permission denied; choose an --output-dir you can write to')
    """
    folder = where if where.is_dir() else where.parent
    named = Path(exc.filename).absolute() if isinstance(exc.filename, (str, os.PathLike)) else None
    if named is not None and named != folder.absolute() and folder.absolute() not in named.parents:
        return exc
    if exc.errno in NO_SPACE:
        free = shutil.disk_usage(_existing_ancestor(where / "x")).free
        need = f"{megabytes(needed)} needed, " if needed else ""
        return AclbuildError(
            f"no space left on {folder}: {need}{megabytes(free)} free; free some space or choose another {option}"
        )
    if exc.errno in NO_PERMISSION:
        return InputError(f"cannot write in {folder}: permission denied; choose an {option} you can write to")
    if exc.errno in (errno.ENOTDIR, errno.EEXIST) and not _existing_ancestor(where).is_dir():
        return InputError(f"{where} lies under {_existing_ancestor(where)}, which is a file; give {option} a path of "
                          "folders")  # fmt: skip
    return exc


@contextlib.contextmanager
def write_errors(where: str | Path, needed: int | None = None, option: str = "--output-dir") -> Iterator[None]:
    """Raise :func:`write_error`'s project error for an OSError of writing ``where`` (``needed``: the bytes the
    output takes, when known)."""
    try:
        yield
    except OSError as exc:
        error = write_error(exc, Path(where), needed, option)
        if error is exc:
            raise
        raise error from None


@contextlib.contextmanager
def staged_output(dest: Path | str, overwrite: bool, is_dir: bool = True, needed: int | None = None) -> Iterator[Path]:
    """Yield a path beside ``dest`` to write; on success it replaces ``dest``, on failure it is removed.

    Nothing half-written is ever left at ``dest``: readers see the old content or the complete new one; a kill
    leaves a hidden temporary that the next write of ``dest`` removes. An existing ``dest`` (a non-empty folder, or
    a file) is replaced only with ``overwrite``, and never a file by a folder or the reverse. A full disk or a
    folder without write permission is one line (:func:`write_errors`; ``needed``: the bytes expected, else those
    written when the disk filled are said).
    """
    dest = Path(dest)
    check_output(dest, kind="folder" if is_dir else "file")
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())) and not overwrite:
        raise OutputExistsError(f"{dest} already exists and is not empty; pass --overwrite to replace it")
    written = 0
    try:
        with write_errors(dest.parent):
            dest.parent.mkdir(parents=True, exist_ok=True)
        if not is_dir:
            remove_leftovers(dest.parent, dest.name)
        with atomic_folder(dest) if is_dir else atomic_file(dest) as staged:
            try:
                yield staged
            except OSError as exc:
                if exc.errno in NO_SPACE:
                    written = folder_size(staged)  # before the staging is removed: the least the output needs
                raise
    except OSError as exc:
        error = write_error(exc, dest.parent, needed or written)  # the staging lies beside dest
        if error is exc:
            raise
        raise error from None
