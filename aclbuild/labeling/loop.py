"""The labeling loop: a DataLoader whose worker processes prepare batches, and the main process, which runs the model
and turns its scores into rows.

A batch is a list of (image, round) jobs. A worker makes the batch's queries (candidates in the order shown, the
prompt, the image) and calls the labeler's ``prepare`` (pixels, token ids, packed suffixes); the main process calls
``run`` (the model alone) and ``replies``, then ``record``, which makes the rows, writes the part file and says
which jobs to ask again (an unparseable reply). Those are asked in a further pass, a new attempt, reshuffled; a pass
is one DataLoader over its batches, in order.

The workers are forked: they start with the labeler, the records and the candidate streams as they are, without
pickling any of it, and they never touch the GPU (``prepare`` needs no model). Each pass forks its own, so they see
what earlier passes left. Forking takes time in proportion to the process's memory (30 ms at 0.4 GB, 0.2-0.5 s at
4.4 GB on 2 cores), which a pass of thousands of batches does not notice; the runner prepares short passes (-R's
units) in the main process. A worker dies with the main process (kill -9 included); an exception in the main
process (Ctrl-C included) ends the pass, every batch recorded before it stays. Without fork, or with
``num_workers=0``, the main process prepares too, in the same order.

Example:
    >>> from aclbuild.labeling.backend import Query, Reply
    >>> class Echo:  # answers with the first option
    ...     model_id = revision = None
    ...     def prepare(self, queries): return None
    ...     def run(self, prepared): return None
    ...     def replies(self, queries, prepared, raw): return [Reply(q.options[0], 0) for q in queries]
    >>> def make_queries(jobs, attempt):
    ...     return [Query(i, r, attempt, None, ["cat", "dog"], ["cat", "dog"], "", "", "") for i, r in jobs]
    >>> recorded = []
    >>> stats = ask_all([[(0, 0), (1, 0)], [(2, 0)]], make_queries, Echo(),
    ...                 lambda queries, replies: recorded.extend(replies) or [], num_workers=0)
    >>> len(recorded), stats.batches
    (3, 2)
"""

from __future__ import annotations

import multiprocessing
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from aclbuild.errors import AclbuildError
from aclbuild.labeling.backend import Backend, Query, Reply

Job = tuple[int, int]  # (image index, round)


@dataclass(frozen=True)
class PreparedBatch:
    """What a worker hands the main process: the batch's queries (without images) and the labeler's inputs."""

    queries: list[Query]
    inputs: Any


@dataclass
class LoopStats:
    """Where the main process's time went: ``own_seconds`` is its thread's CPU time outside ``run`` (receiving the
    prepared batches, replies, rows, part files, progress: waiting costs no CPU time), ``run_seconds`` the wall time
    inside ``run``."""

    batches: int = 0
    own_seconds: float = 0.0
    run_seconds: float = 0.0

    def own_ms_per_batch(self) -> float:
        return 1000 * self.own_seconds / max(self.batches, 1)


class _PreparedBatches(torch.utils.data.Dataset):
    """Batch k of a pass, prepared: what a DataLoader worker makes."""

    def __init__(self, batches: list[list[Job]], attempt: int, make_queries, prepare) -> None:
        self.batches, self.attempt, self.make_queries, self.prepare = batches, attempt, make_queries, prepare

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, k: int) -> PreparedBatch | AclbuildError:
        try:
            queries = self.make_queries(self.batches[k], self.attempt)
            return PreparedBatch([q.without_image() for q in queries], self.prepare(queries))
        except AclbuildError as exc:  # bad input (an unreadable image): raised as it is in the main process
            return exc  # (DataLoader would put the worker's traceback into its message)


def ask_all(
    batches: list[list[Job]],
    make_queries: Callable[[list[Job], int], list[Query]],
    backend: Backend,
    record: Callable[[list[Query], list[Reply]], list[Job]],
    num_workers: int = 1,
    batch_size: int | None = None,
) -> LoopStats:
    """Ask every job of ``batches`` (``make_queries(jobs, attempt)`` makes their queries) until none is left to ask
    again: ``record(queries, replies)`` takes each batch's replies in order and returns the jobs to re-ask, which
    go in batches of ``batch_size`` (default: the first batch's size) into the next pass."""
    stats, attempt = LoopStats(), 0
    size = batch_size or max(map(len, batches), default=1)
    while batches:
        again: list[Job] = []
        loader = _loader(_PreparedBatches(batches, attempt, make_queries, backend.prepare), num_workers)
        mark = time.thread_time()
        for batch in loader:
            if isinstance(batch, AclbuildError):
                raise batch
            started = time.perf_counter()
            own = time.thread_time() - mark
            raw = backend.run(batch.inputs)
            stats.run_seconds += time.perf_counter() - started
            mark = time.thread_time()
            again += record(batch.queries, backend.replies(batch.queries, batch.inputs, raw))
            stats.own_seconds += own + time.thread_time() - mark
            stats.batches += 1
            mark = time.thread_time()
        batches = [again[k : k + size] for k in range(0, len(again), size)]
        attempt += 1
    return stats


def _loader(dataset: _PreparedBatches, num_workers: int) -> torch.utils.data.DataLoader:
    """Batches in order, already batched (``batch_size=None``) and passed on as they are (no collation)."""
    forked = num_workers > 0 and "fork" in multiprocessing.get_all_start_methods()
    if forked:
        # A fast tokenizer that used its thread pool before the fork would warn in each worker and turn it off;
        # saying so up front keeps the log clean (a worker's batches are too small to gain from it).
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    return torch.utils.data.DataLoader(
        dataset, batch_size=None, collate_fn=_as_is, num_workers=min(num_workers, len(dataset)) if forked else 0,
        multiprocessing_context="fork" if forked else None, worker_init_fn=_die_with_parent if forked else None,
    )  # fmt: skip


def _as_is(batch: PreparedBatch | AclbuildError) -> PreparedBatch | AclbuildError:
    return batch


def _die_with_parent(_worker_id: int) -> None:
    """A worker dies with the main process, kill -9 included (Linux): left alive until DataLoader's own watchdog
    notices (seconds later), it would hold the main process's output pipes open, and a caller waiting on them."""
    import ctypes
    import signal

    try:
        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
