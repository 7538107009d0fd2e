"""What every verb of the command line shares: the console it prints to and its handling of project errors."""

from __future__ import annotations

import contextlib
import errno
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
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        # a full disk where no verb expected one (a benchmark's curves, a cache): still one line, failed work
        where = f" writing {exc.filename}" if exc.filename else ""
        sys.stderr.write(f"error: no space left on the device{where}; free some space and run the command again\n")
        raise typer.Exit(1) from None
