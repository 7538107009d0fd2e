"""Prepare the next batches in a data-loader worker process while the model answers the current one.

Preparing a batch (candidate draws, prompts, the backend's image preprocessing and tokenising) needs no model.
Done in between the forward passes it leaves the model idle: about two thirds of the wall time with the tiny test
model on 2 CPU cores, and on a GPU the device waits for the CPU. torch's DataLoader runs it in a worker process (a
process, not a thread: the work is mostly Python, which would hold the GIL) up to two batches ahead and hands the
results back in order, through a pipe.

The worker is forked, so it starts with the parent's model, records and tokenizer without pickling them, and it
never touches the GPU. It writes nothing: a main process killed at any moment leaves no half-done work behind it,
and the worker exits when it sees its parent gone. Where fork is not available, or for a single batch, batches are
prepared in place.

Example:
    >>> for batch, ready in prepared_batches([[0, 1], [2, 3]], lambda b: [x * x for x in b]):   # doctest: +SKIP
    ...     print(batch, ready)
    [0, 1] [0, 1]
    [2, 3] [4, 9]
"""

from __future__ import annotations

import functools
import multiprocessing
import os
from collections.abc import Callable, Iterator
from typing import TypeVar

Batch = TypeVar("Batch")
Ready = TypeVar("Ready")

AHEAD = 2  # batches prepared ahead of the one being answered


def prepared_batches(batches: list[Batch], prepare: Callable[[Batch], Ready]) -> Iterator[tuple[Batch, Ready]]:
    """``(batch, prepare(batch))`` for each batch in order, ``prepare`` running ahead in a worker process."""
    if len(batches) < 2 or "fork" not in multiprocessing.get_all_start_methods():
        for batch in batches:
            yield batch, prepare(batch)
        return
    import torch
    from torch.utils.data import DataLoader

    # A fast tokenizer that used its thread pool before the fork would print a warning in the worker and turn it
    # off; saying so up front keeps the log clean (these batches are too small to gain from it).
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # The first batch is prepared here, before the fork: the worker then starts with warm caches (template, token
    # ids, the image-token count), and it starts on the second batch while the model answers the first.
    first = prepare(batches[0])
    loader = DataLoader(
        _Prepared(batches[1:], prepare), batch_size=None, num_workers=1, prefetch_factor=AHEAD,
        collate_fn=_as_is, multiprocessing_context="fork", worker_init_fn=functools.partial(_die_with, os.getpid()),
    )  # fmt: skip
    # Leave the worker a core: on 2 CPU cores, 2 model threads beside it made labeling ~15% slower than 1.
    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, threads - 1))
    try:
        later = iter(loader)  # forks the worker now
        _widen_result_pipe(later)
        yield batches[0], first
        yield from zip(batches[1:], later)
    finally:
        torch.set_num_threads(threads)


class _Prepared:
    """The map-style dataset the worker reads: item k is ``prepare(batches[k])``."""

    def __init__(self, batches: list, prepare: Callable) -> None:
        self.batches, self.prepare = batches, prepare

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, k: int):
        return self.prepare(self.batches[k])


def _widen_result_pipe(iterator) -> None:
    """Let a whole prepared batch (about 1.2 MB for 32 CIFAR images) sit in the pipe from the worker.

    Through Linux's default 64 KiB pipe it takes some 20 hand-overs between the two processes: about 2 ms per
    batch on 2 cores, 1.1 ms with a 1 MiB pipe (the most an unprivileged process may ask for). This reaches into
    the DataLoader iterator's result queue; where that is not there (another torch, another OS) nothing changes
    but the speed.
    """
    try:
        import fcntl

        reader = iterator._worker_result_queue._reader  # torch's multiprocessing.Queue, its receiving Connection
        fcntl.fcntl(reader.fileno(), getattr(fcntl, "F_SETPIPE_SZ", 1031), 1 << 20)
    except (AttributeError, ImportError, OSError):
        pass


def _die_with(parent: int, _worker_id: int) -> None:
    """Make the worker die with the main process (kill -9 included). Left alive, it would keep the main process's
    output pipes open, and torch's worker can hang at exit with a result half-written into a full pipe."""
    import ctypes
    import signal

    try:
        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG (Linux)
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the main process died before prctl took effect
        os._exit(0)


def _as_is(item):
    return item

