"""The labeling loop in two processes: the main process runs the model, a forked worker does everything else.

Everything but the forward passes needs no model: candidate draws, prompts, image preprocessing and tokenising,
suffix packing, then parsing the replies, retries, rows and part files. Done in between the forward passes it
leaves the model idle (two thirds of the wall time with the tiny test model on 2 CPU cores; on a GPU the device
waits for the CPU). So a worker process (a process, not a thread: the work is mostly Python, which would hold the
GIL) drives the loop (:class:`Asking`): it sends the main process batches ready for the model (the model inputs
alone, with a :class:`aclbuild.labeling.backend.StagedBackend`), up to ``SLOTS`` ahead, and makes rows of what
comes back. The main process only runs the model.

The worker is forked, so it starts with the parent's model, records, tokenizer and output folder without pickling
them, and it never touches the GPU. It dies with the main process: a kill -9 loses the batches in flight (at most
``SLOTS``), and the part files already renamed into place stay; after an exception in the main process (Ctrl-C
included) the worker first records every batch already answered. Where fork is not available everything runs in the
main process, in the same order.

Arrays (the pixels: about 0.9 MB for 32 CIFAR images, 130 MB with LLaVA-NeXT-7B's 336 grid) do
not go through the pipe: pickle protocol 5 hands them over out of band, in one of ``SLOTS`` shared-memory slots
made before the fork, and the main process reads them where they lie (through a pipe, 0.9 MB took 0.85 ms to
receive on 2 cores). A batch's slot is reused once the worker has its result.

Example:
    >>> answer_all(asking, backend.run, lambda done, answered, noisy: None)   # doctest: +SKIP
"""

from __future__ import annotations

import gc
import mmap
import multiprocessing
import os
import pickle
from collections.abc import Callable
from typing import Any, Protocol

PIPE_BYTES = 1 << 20  # the most an unprivileged process may ask for
SLOTS = 3  # batches in flight: the one being answered, and two prepared ahead
IN_BAND = 1 << 10  # arrays smaller than this are copied through the pipe; larger ones (images too) lie in a slot

Progress = tuple[int, int, int]  # queries finished, of which answered, of which noisy (cl) or right (ord)


class Asking(Protocol):
    """The labeling loop without the model (the runner's): which batches to ask, and what their results make."""

    def next_batch(self) -> tuple[int, Any] | None:
        """(number, what the model side needs) of the next batch to ask; None while there is none."""

    def record(self, number: int, result: Any) -> Progress:
        """Take what the model side returned for batch ``number``: rows, part files, retries to ask later."""


def answer_all(
    asking: Asking, answer: Callable[[Any], Any], advance: Callable[..., None], in_place: bool = False
) -> None:
    """Ask every batch of ``asking`` until none is left, ``answer(batch)`` running the model here and everything
    else running in a worker process (or here too, with ``in_place`` or without fork); ``advance(*progress)``
    reports finished queries. The arrays in a batch may lie in shared memory that the worker reuses: ``answer``
    must not keep them past its return."""
    first = asking.next_batch()
    if first is None:
        return
    if in_place or "fork" not in multiprocessing.get_all_start_methods():
        while first is not None:
            advance(*asking.record(first[0], answer(first[1])))
            first = asking.next_batch()
        return
    import torch

    # A fast tokenizer that used its thread pool before the fork would print a warning in the worker and turn it
    # off; saying so up front keeps the log clean (these batches are too small to gain from it).
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    context = multiprocessing.get_context("fork")
    batches, batch_sender = context.Pipe(duplex=False)
    results_receiver, results = context.Pipe(duplex=False)
    _widen(batches)
    # The first batch was prepared here, before the fork: the worker then starts with warm caches (template, token
    # ids, the image-token count) and with that batch in flight, and its size sizes the slots.
    slots = _Slots(_out_of_band_bytes(first[1]))
    work = (asking, batch_sender, results_receiver, slots, os.getpid(), (batches, results))
    worker = context.Process(target=_drive, args=work, daemon=True)
    # Leave the worker a core: on 2 CPU cores, 2 model threads beside it made labeling ~15% slower than 1.
    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, threads - 1))
    done = False
    try:
        # The parent's objects go to the GC's permanent generation for the fork: the worker's collections then never
        # touch them (no copy-on-write of their pages, and no freeing of pre-fork garbage, CUDA tensors included).
        gc.freeze()
        try:
            worker.start()
        finally:
            gc.unfreeze()
        batch_sender.close()  # the worker holds the only writing end: its death reads as end of file here
        results_receiver.close()
        results.send((first[0], answer(first[1])))
        while True:
            try:
                kind, progress, *message = batches.recv()
            except EOFError:
                raise RuntimeError(f"the labeling worker process died (exit code {worker.exitcode})") from None
            if kind == "failed":
                raise message[0]
            advance(*progress)
            if kind == "done":  # every batch recorded: the worker is exiting (not waited for: ~10 ms of teardown)
                done = True
                break
            number, batch = message[0], slots.unpack(*message)
            results.send((number, answer(batch)))
    finally:
        torch.set_num_threads(threads)
        if done:
            batches.close()
            results.close()
        else:
            _stop(worker, batches, results)


def _stop(worker, batches, results, wait: float = 30.0) -> None:
    """After an error here (Ctrl-C included), let the worker record every batch already answered, then end it: it
    reads the results sent, then the end of the pipe, and stops. Meanwhile its messages are read and dropped, so
    that it never waits on a full pipe."""
    import time

    results.close()
    deadline = time.monotonic() + wait
    while worker.is_alive() and time.monotonic() < deadline:
        try:
            if batches.poll(0.05):
                batches.recv()
        except (EOFError, OSError):
            break
    worker.join(max(0.0, deadline - time.monotonic()))
    if worker.is_alive():
        worker.kill()
        worker.join()
    batches.close()


def _drive(asking: Asking, sender, results, slots: _Slots, parent: int, main_ends: tuple) -> None:
    """The worker: send batches while fewer than SLOTS are in flight, else record the result of one."""
    import signal

    _die_with(parent)
    for end in main_ends:  # the main process's ends of the pipes, inherited: closed, so that its closing them counts
        end.close()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the main process, which then stops this one
    in_flight, progress = 1, (0, 0, 0)  # the main process prepared the first batch and answers it
    try:
        while True:
            batch = asking.next_batch() if in_flight < SLOTS else None
            if batch is not None:
                sender.send(("batch", progress, batch[0], *slots.pack(batch[0], batch[1])))
                in_flight, progress = in_flight + 1, (0, 0, 0)
            elif in_flight:
                number, result = results.recv()
                done = asking.record(number, result)
                in_flight, progress = in_flight - 1, tuple(a + b for a, b in zip(progress, done))
            else:
                sender.send(("done", progress))
                return
    except (BrokenPipeError, EOFError):  # the main process stopped: nothing to tell it
        return
    except Exception as exc:  # noqa: BLE001 - handed to the main process, which raises it
        try:
            sender.send(("failed", progress, exc))
        except (BrokenPipeError, OSError):
            pass


class _Slots:
    """Shared-memory slots, made before the fork, that carry the large arrays of the batches in flight.

    Batch k uses slot k % SLOTS. The worker has at most SLOTS batches in flight and writes batch k + SLOTS only
    after it has the result of batch k: by then the main process no longer reads batch k's arrays.
    """

    def __init__(self, first_bytes: int) -> None:
        self.size = max(IN_BAND, first_bytes + first_bytes // 4)  # later batches: as large, or smaller (the last)
        self.buffers = [mmap.mmap(-1, self.size) for _ in range(SLOTS)]  # anonymous and shared with the worker

    def pack(self, k: int, ready) -> tuple:
        """The message for batch k (worker): a pickle, and where its large arrays lie in the slot."""
        data, raws = _dumps(ready)
        if sum(r.nbytes for r in raws) > self.size:  # a larger batch than the first: through the pipe
            return ("pipe", data, [bytes(r) for r in raws])
        slot, spans, at = self.buffers[k % SLOTS], [], 0
        for raw in raws:
            slot[at : at + raw.nbytes] = raw
            spans.append((at, raw.nbytes))
            at += raw.nbytes
        return ("slot", data, spans)

    def unpack(self, k: int, how: str, data: bytes, rest: list):
        """Batch k (main process); its arrays are valid until its result is sent."""
        if how == "pipe":
            return pickle.loads(data, buffers=rest)
        view = memoryview(self.buffers[k % SLOTS])
        return pickle.loads(data, buffers=[view[at : at + n] for at, n in rest])


def _dumps(value) -> tuple[bytes, list[memoryview]]:
    """``value`` pickled, and its arrays of IN_BAND bytes or more left out of band (their raw memory)."""
    raws: list[memoryview] = []

    def keep_small(buffer: pickle.PickleBuffer) -> bool:  # True: in the pickle; False: out of band
        raw = buffer.raw()
        if raw.nbytes < IN_BAND:
            return True
        raws.append(raw)
        return False

    return pickle.dumps(value, protocol=5, buffer_callback=keep_small), raws


def _out_of_band_bytes(value) -> int:
    return sum(raw.nbytes for raw in _dumps(value)[1])


def _widen(connection) -> None:
    """Let a whole batch message sit in the pipe (one larger than the first batch carries its arrays: 0.9 MB for 32
    CIFAR images): through Linux's default 64 KiB pipe it takes several hand-overs between the two processes. Where
    the OS has no F_SETPIPE_SZ nothing changes but the speed."""
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
