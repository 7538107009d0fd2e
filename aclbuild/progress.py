"""Progress and console output: a rich bar on a terminal, plain periodic lines in a log (SLURM, nohup, a pipe).

A log gets one line at most every ``ACLBUILD_PROGRESS_SECONDS`` seconds (default 20) once a loop has run that long,
and a last line when it ends, e.g. ``generate cifar10 (llava): 1,200/150,000 queries (0.8%), 35 queries/s, eta 1h 11m``;
a short loop prints nothing. Tables and paths printed through :class:`LogConsole` are never wrapped in a log.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import time
from collections.abc import Callable, Iterator

from rich.console import Console, ConsoleDimensions
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

PROGRESS_SECONDS_ENV = "ACLBUILD_PROGRESS_SECONDS"
DEFAULT_PROGRESS_SECONDS = 20.0
LOG_WIDTH = 100_000  # wide enough that no path or table cell is ever wrapped in a log


class LogConsole(Console):
    """A rich Console that, writing to a file or a pipe, is as wide as its longest line (rich would wrap at 80)."""

    @property
    def size(self) -> ConsoleDimensions:
        if not self.is_terminal:
            return ConsoleDimensions(LOG_WIDTH, 25)
        return Console.size.fget(self)

    @size.setter
    def size(self, new_size: tuple[int, int]) -> None:
        Console.size.fset(self, new_size)


_console = LogConsole(stderr=True)


def stderr_is_terminal() -> bool:
    """Whether stderr, where progress goes, is a terminal (it is not in a log, a pipe or a test)."""
    return _console.is_terminal


def quiet_library_bars() -> None:
    """In a log, turn off the tqdm bars of datasets, huggingface_hub and transformers (our plain lines stay).

    Sets their environment switches for when they are imported later, and calls their switch where they are
    imported already; imports nothing.
    """
    if stderr_is_terminal():
        return
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    if "datasets" in sys.modules:
        sys.modules["datasets"].disable_progress_bars()
    if "huggingface_hub" in sys.modules:
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()


def progress_interval() -> float:
    """Seconds between two plain progress lines: ``ACLBUILD_PROGRESS_SECONDS``, or 20 when unset or not a number.

    Example:
        >>> os.environ[PROGRESS_SECONDS_ENV] = "5"; progress_interval()
        5.0
        >>> del os.environ[PROGRESS_SECONDS_ENV]; progress_interval()
        20.0
    """
    try:
        return max(0.0, float(os.environ.get(PROGRESS_SECONDS_ENV, DEFAULT_PROGRESS_SECONDS)))
    except ValueError:
        return DEFAULT_PROGRESS_SECONDS


def format_duration(seconds: float) -> str:
    """A short duration for a log line.

    Example:
        >>> format_duration(42.4), format_duration(1380), format_duration(4000)
        ('42s', '23m', '1h 06m')
    """
    if not math.isfinite(seconds):
        return "?"
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m"
    return f"{seconds // 3600}h {seconds % 3600 // 60:02d}m"


def progress_line(description: str, done: int, total: int | None, elapsed: float, unit: str = "",
                  note: str = "", finished: bool = False, rate: float | None = None) -> str:  # fmt: skip
    """One plain progress line; ``rate`` (per second) defaults to ``done / elapsed``.

    Example:
        >>> progress_line("generate digits (synthetic)", 1200, 50000, 34.3, "queries")
        'generate digits (synthetic): 1,200/50,000 queries (2.4%), 35 queries/s, eta 23m'
        >>> progress_line("FWD mlp seed 1", 3, 10, 6.0, "epochs", note="loss 1.2345", finished=True)
        'FWD mlp seed 1: 3/10 epochs (30.0%), 2.0 s each, done in 6s; loss 1.2345'
    """
    count = f"{done:,}/{total:,}" if total else f"{done:,}"
    parts = [count + (f" {unit}" if unit else "") + (f" ({100 * done / total:.1f}%)" if total else "")]
    if rate is None:
        rate = done / elapsed if elapsed > 0 else math.inf
    if rate and math.isfinite(rate):
        parts.append(f"{rate:,.0f} {unit or 'items'}/s" if rate >= 1 else f"{1 / rate:.1f} s each")
    if finished:
        parts.append(f"done in {format_duration(elapsed)}")
    elif total and rate and math.isfinite(rate):
        parts.append(f"eta {format_duration((total - done) / rate)}")
    return f"{description}: " + ", ".join(parts) + (f"; {note}" if note else "")


class PlainProgress:
    """Counts work and writes a :func:`progress_line` to stderr at most every ``interval`` seconds."""

    def __init__(self, description: str, total: int | None, unit: str = "", completed: int = 0,
                 interval: float | None = None) -> None:  # fmt: skip
        self.description, self.total, self.unit = description, total, unit
        self.interval = progress_interval() if interval is None else interval
        self.started = self.last = time.monotonic()
        self.completed = completed  # done before this run (a resumed run): not counted in the rate
        self.done, self.note, self.lines = completed, "", 0

    def advance(self, n: int = 1, note: str | None = None) -> None:
        self.done += n
        self.note = self.note if note is None else note
        now = time.monotonic()
        if now - self.last >= self.interval:
            self.last = now
            self._write(finished=False)

    def finish(self) -> None:
        """A last line with the total time, when the loop was long enough to have shown progress."""
        if self.lines:
            self._write(finished=True)

    def _write(self, finished: bool) -> None:
        elapsed = time.monotonic() - self.started
        rate = (self.done - self.completed) / elapsed if elapsed > 0 else math.inf
        line = progress_line(self.description, self.done, self.total, elapsed, self.unit, self.note, finished, rate)
        sys.stderr.write(line + "\n")
        sys.stderr.flush()
        self.lines += 1


@contextlib.contextmanager
def progress_bar(
    description: str, total: int | None, unit: str = "", completed: int = 0
) -> Iterator[Callable[..., None]]:
    """Yield ``advance(n=1, note=None)``: a bar on a terminal, plain periodic lines on stderr otherwise.

    ``completed`` counts work done before (a resumed run); ``unit`` names what is counted (images, epochs).

    Example:
        >>> with progress_bar("encoding", 3, "images") as advance:
        ...     for _ in range(3):
        ...         advance()
    """
    if not stderr_is_terminal():
        plain = PlainProgress(description, total, unit, completed)
        yield plain.advance
        plain.finish()
        return
    progress = Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[note]}"),
        console=_console,
        transient=False,
    )
    with progress:
        task = progress.add_task(description, total=total, completed=completed, note="")

        def advance(n: int = 1, note: str | None = None) -> None:
            progress.update(task, advance=n, **({"note": note} if note is not None else {}))

        yield advance
