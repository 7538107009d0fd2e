"""The labeling loop (aclbuild/labeling/loop.py): batches prepared in forked DataLoader workers and answered in order
in the main process, retries in later passes, tensors intact from the workers, and an error in the main process
keeping every batch recorded before it."""

from __future__ import annotations

import os

import pytest
import torch

from aclbuild.labeling.backend import Query, Reply
from aclbuild.labeling.loop import ask_all


def make_queries(jobs, attempt):
    return [Query(i, r, attempt, None, ["a", "b"], ["a", "b"], "", "", "") for i, r in jobs]


class Squares:
    """prepare (in a worker) records its process id and makes a tensor of the images' squares; run checks it; the
    reply names option 0, except for image ``unclear`` on its first attempt (an unparseable reply)."""

    model_id = revision = None

    def __init__(self, unclear: int | None = None, stop_at: int | None = None) -> None:
        self.unclear, self.stop_at, self.ran = unclear, stop_at, []

    def prepare(self, queries):
        return os.getpid(), torch.tensor([q.index**2 for q in queries]), [q.index for q in queries]

    def run(self, prepared):
        pid, squares, indices = prepared
        if self.stop_at in indices:
            raise KeyboardInterrupt("stopped")
        assert squares.tolist() == [i * i for i in indices]
        self.ran.append(pid)
        return indices

    def replies(self, queries, prepared, raw):
        assert all(q.image is None for q in queries)  # images stay in the worker
        return [Reply("?" if (q.index == self.unclear and q.attempt == 0) else "a") for q in queries]


def recorder(log):
    def record(queries, replies):
        again = [(q.index, q.round_) for q, reply in zip(queries, replies) if reply.text == "?"]
        log.append([(q.index, q.attempt) for q, reply in zip(queries, replies) if reply.text != "?"])
        return again

    return record


def test_batches_are_prepared_in_workers_and_recorded_in_order_then_retries():
    batches = [[(k, 0), (k + 1, 0)] for k in range(0, 12, 2)]
    log, labeler = [], Squares(unclear=5)
    stats = ask_all(batches, make_queries, labeler, recorder(log), num_workers=2)
    assert log[:6] == [[(k, 0), (k + 1, 0)] if k != 4 else [(4, 0)] for k in range(0, 12, 2)]
    assert log[6:] == [[(5, 1)]]  # asked again in a second pass, as attempt 1
    assert os.getpid() not in labeler.ran  # prepared in the workers
    assert stats.batches == 7 and stats.own_seconds >= 0


def test_without_workers_the_same_batches_in_the_same_order():
    log_in_place, log_workers = [], []
    batches = [[(k, r) for r in range(3)] for k in range(5)]
    ask_all(batches, make_queries, Squares(unclear=2), recorder(log_in_place), num_workers=0)
    ask_all(batches, make_queries, Squares(unclear=2), recorder(log_workers), num_workers=2)
    assert log_in_place == log_workers and len(log_in_place) == 6


def test_an_error_in_the_main_process_keeps_what_was_recorded():
    log = []
    with pytest.raises(KeyboardInterrupt):
        ask_all([[(k, 0)] for k in range(8)], make_queries, Squares(stop_at=4), recorder(log), num_workers=2)
    assert log == [[(k, 0)] for k in range(4)]


def test_an_error_in_a_worker_reaches_the_caller():
    class Broken(Squares):
        def prepare(self, queries):
            if queries[0].index == 3:
                raise ValueError("cannot prepare image 3")
            return super().prepare(queries)

    log = []
    with pytest.raises(ValueError, match="cannot prepare image 3"):
        ask_all([[(k, 0)] for k in range(6)], make_queries, Broken(), recorder(log), num_workers=1)
    assert log == [[(k, 0)] for k in range(3)]


def test_bad_input_found_in_a_worker_keeps_its_one_line_message():
    from aclbuild.errors import SourceError

    class Unreadable(Squares):
        def prepare(self, queries):
            raise SourceError("image 7 of the source is not a readable image; re-download it")

    with pytest.raises(SourceError) as raised:
        ask_all([[(7, 0)]], make_queries, Unreadable(), recorder([]), num_workers=1)
    assert str(raised.value) == "image 7 of the source is not a readable image; re-download it"
