"""One rich progress bar for every long loop, quiet when stderr is not a terminal."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

_console = Console(stderr=True)


@contextlib.contextmanager
def progress_bar(description: str, total: int | None) -> Iterator[Callable[..., None]]:
    """Yield ``advance(n=1, **fields)``; shows a bar on a terminal, nothing in tests or logs.

    Example:
        >>> with progress_bar("encoding", 3) as advance:
        ...     for _ in range(3):
        ...         advance()
    """
    progress = Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[note]}"),
        console=_console,
        disable=not _console.is_terminal,
        transient=False,
    )
    with progress:
        task = progress.add_task(description, total=total, note="")

        def advance(n: int = 1, note: str | None = None) -> None:
            progress.update(task, advance=n, **({"note": note} if note is not None else {}))

        yield advance
