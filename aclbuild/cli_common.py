"""What every verb of the command line shares: the console it prints to and its handling of project errors."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator

import typer

from aclbuild.errors import AclbuildError
from aclbuild.progress import LogConsole

console = LogConsole()  # in a log (not a terminal): whole lines, never wrapped at 80 columns


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Turn a project error into one line on stderr and its exit code (2 bad input, 1 failed work)."""
    try:
        yield
    except AclbuildError as exc:
        message = " ".join(str(exc).split())
        sys.stderr.write(f"error: {message}\n")
        raise typer.Exit(exc.exit_code) from None
