"""Prepare the next batches in a worker process while the model answers the current one.

Preparing a batch (candidate draws, prompts, the backend's image preprocessing, tokenising and suffix packing)
needs no model. Done in between the forward passes it leaves the model idle: about two thirds of the wall time with
the tiny test model on 2 CPU cores, and on a GPU the device waits for the CPU. A worker process (a process, not a
thread: the work is mostly Python, which would hold the GIL) prepares the batches in order and writes each one into
a pipe; the pipe's capacity is the back-pressure: once it is full the worker waits, one or two batches ahead.

The worker is forked, so it starts with the parent's model, records and tokenizer without pickling them, and it
never touches the GPU. It writes nothing to disk: a main process killed at any moment leaves no half-done work
behind it, and the worker dies with its parent. Where fork is not available, or for a single batch, batches are
prepared in place. (torch's DataLoader did the same with an index queue, a feeder thread per queue and a
timed poll per batch: 1.1 ms per batch on the main process against 0.4 ms for this pipe, on 2 cores.)

Large arrays (the pixels: about 0.9 MB for 32 CIFAR images, 220 MB with LLaVA-NeXT-7B's grid) do not go through
the pipe: pickle protocol 5 hands them over out of band, in one of a few shared-memory slots made before the fork,
and the main process reads them where they lie (through a pipe, 0.9 MB took 0.85 ms to receive on 2 cores). A
slot is reused once the main process asks for the next batch: **a batch's arrays are valid until then**.

Example:
    >>> for batch, ready in prepared_batches([[0, 1], [2, 3]], lambda b: [x * x for x in b]):   # doctest: +SKIP
    ...     print(batch, ready)
    [0, 1] [0, 1]
    [2, 3] [4, 9]
"""

from __future__ import annotations

import mmap
import multiprocessing
import os
import pickle
from collections.abc import Callable, Iterator
from typing import TypeVar

Batch = TypeVar("Batch")
Ready = TypeVar("Ready")

PIPE_BYTES = 1 << 20  # the most an unprivileged process may ask for
SLOTS = 3  # shared-memory slots: the batch the main process holds, and two prepared ahead
IN_BAND = 1 << 16  # arrays smaller than this are copied through the pipe (cheap, and no lifetime to watch)


def prepared_batches(batches: list[Batch], prepare: Callable[[Batch], Ready]) -> Iterator[tuple[Batch, Ready]]:
    """``(batch, prepare(batch))`` for each batch in order, ``prepare`` running ahead in a worker process.

    An exception raised by ``prepare`` in the worker is raised here, at the batch that raised it.
    """
    if len(batches) < 2 or "fork" not in multiprocessing.get_all_start_methods():
        for batch in batches:
            yield batch, prepare(batch)
        return
    import torch

    # A fast tokenizer that used its thread pool before the fork would print a warning in the worker and turn it
    # off; saying so up front keeps the log clean (these batches are too small to gain from it).
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # The first batch is prepared here, before the fork: the worker then starts with warm caches (template, token
    # ids, the image-token count), and it starts on the second batch while the model answers the first.
    first = prepare(batches[0])
    context = multiprocessing.get_context("fork")
    receiver, sender = context.Pipe(duplex=False)
    _widen(receiver)
    slots = _Slots(context, _out_of_band_bytes(first))
    worker = context.Process(target=_prepare_all, args=(batches[1:], prepare, sender, slots, os.getpid()), daemon=True)
    # Leave the worker a core: on 2 CPU cores, 2 model threads beside it made labeling ~15% slower than 1.
    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, threads - 1))
    try:
        worker.start()
        sender.close()  # the worker holds the only writing end: its death reads as end of file here
        yield batches[0], first
        for k, batch in enumerate(batches[1:]):
            try:
                message = receiver.recv()
            except EOFError:
                raise RuntimeError(f"the batch-preparing worker died (exit code {worker.exitcode})") from None
            yield batch, slots.unpack(k, message)
            slots.release(k)
    finally:
        torch.set_num_threads(threads)
        receiver.close()
        if worker.is_alive():
            worker.kill()
        worker.join()


def _prepare_all(batches: list, prepare: Callable, sender, slots: _Slots, parent: int) -> None:
    """The worker: every batch's preparation into the pipe, in order; an exception is sent in its place."""
    _die_with(parent)
    for k, batch in enumerate(batches):
        try:
            message = slots.pack(k, prepare(batch))
        except Exception as exc:  # noqa: BLE001 - handed to the main process, which raises it
            message = ("failed", exc)
        try:
            sender.send(message)
        except (BrokenPipeError, OSError):  # the main process stopped reading
            return
        if message[0] == "failed":
            return


class _Slots:
    """Shared-memory slots, made before the fork, that carry the large arrays of prepared batches.

    Batch k uses slot k % SLOTS. The worker takes a slot before it writes into it, the main process gives it back
    when it moves past batch k: the semaphore keeps the worker from overwriting arrays the main process still reads.
    """

    def __init__(self, context, first_bytes: int) -> None:
        self.size = max(IN_BAND, first_bytes + first_bytes // 4)  # later batches: as large, or smaller (the last)
        self.buffers = [mmap.mmap(-1, self.size) for _ in range(SLOTS)]  # anonymous and shared with the worker
        self.free = context.Semaphore(SLOTS)
        self.used: set[int] = set()  # batches whose arrays lie in a slot (main process)

    def pack(self, k: int, ready) -> tuple:
        """The message for batch k (worker): a pickle and where its large arrays lie in the slot."""
        buffers: list[pickle.PickleBuffer] = []
        data = pickle.dumps(ready, protocol=5, buffer_callback=lambda b: _in_band(b) or buffers.append(b))
        raws = [b.raw() for b in buffers]
        if sum(r.nbytes for r in raws) > self.size:  # a larger batch than the first: through the pipe
            return ("pipe", data, [bytes(r) for r in raws])
        self.free.acquire()
        slot, spans, at = self.buffers[k % SLOTS], [], 0
        for raw in raws:
            slot[at : at + raw.nbytes] = raw
            spans.append((at, raw.nbytes))
            at += raw.nbytes
        return ("slot", data, spans)

    def unpack(self, k: int, message: tuple):
        """Batch k's prepared value (main process); raises the worker's exception."""
        how, data, *rest = message
        if how == "failed":
            raise data
        if how == "pipe":
            return pickle.loads(data, buffers=rest[0])
        self.used.add(k)
        view = memoryview(self.buffers[k % SLOTS])
        return pickle.loads(data, buffers=[view[at : at + n] for at, n in rest[0]])

    def release(self, k: int) -> None:
        if k in self.used:
            self.used.discard(k)
            self.free.release()


def _in_band(buffer: pickle.PickleBuffer) -> bool:
    return buffer.raw().nbytes < IN_BAND


def _out_of_band_bytes(ready) -> int:
    sizes: list[int] = []
    pickle.dumps(ready, protocol=5, buffer_callback=lambda b: _in_band(b) or sizes.append(b.raw().nbytes))
    return sum(sizes)


def _widen(connection) -> None:
    """Let a whole prepared batch (about 1 MB for 32 CIFAR images) sit in the pipe.

    Through Linux's default 64 KiB pipe a batch takes some 16 hand-overs between the two processes: about 2 ms per
    batch on 2 cores against 0.4 ms. Where the OS has no F_SETPIPE_SZ nothing changes but the speed.
    """
    try:
        import fcntl

        fcntl.fcntl(connection.fileno(), getattr(fcntl, "F_SETPIPE_SZ", 1031), PIPE_BYTES)
    except (ImportError, OSError):
        pass


def _die_with(parent: int) -> None:
    """Make the worker die with the main process (kill -9 included). Left alive, it would keep the main process's
    output pipes open (a caller waiting for them to close would hang)."""
    import ctypes
    import signal

    try:
        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG (Linux)
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the main process died before prctl took effect
        os._exit(0)
