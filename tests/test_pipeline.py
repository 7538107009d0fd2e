"""The two-process labeling loop: batches asked in order, results recorded in the worker, retries, large arrays
through shared-memory slots, and errors on either side reaching the caller without losing answered batches."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from aclbuild.labeling.pipeline import answer_all


class Counting:
    """An Asking whose batches are lists of numbers (and an array of ``size`` values, if any); the result is the
    numbers squared, recorded as one JSON file per batch (as part files are), named by the batch's number. The batch holding ``again`` is asked once more, as a
    retry would be."""

    def __init__(self, folder: Path, batches: list[list[int]], size: int = 0, again: int | None = None) -> None:
        self.folder, self.waiting, self.size, self.again = folder, list(batches), size, again
        self.asked: dict[int, list[int]] = {}
        self.numbered = 0

    def next_batch(self):
        if not self.waiting:
            return None
        batch = self.waiting.pop(0)
        number, self.numbered = self.numbered, self.numbered + 1
        self.asked[number] = batch
        return number, (batch, {"values": np.full(self.size, float(number))} if self.size else None)

    def record(self, number: int, result: list[int]) -> tuple[int, int, int]:
        batch = self.asked.pop(number)
        assert result == [x * x for x in batch]
        if self.again in batch:
            self.again = None
            self.waiting.insert(0, batch)
        (self.folder / f"{number:03d}.json").write_text(json.dumps(batch))
        return len(batch), len(batch), 0

    def recorded(self) -> list[list[int]]:
        return [json.loads(p.read_text()) for p in sorted(self.folder.glob("*.json"))]


def square(batch: tuple[list[int], dict | None]) -> list[int]:
    return [x * x for x in batch[0]]


def test_every_batch_answered_here_and_recorded_in_the_worker(tmp_path):
    batches = [[k, k + 1] for k in range(0, 12, 2)]
    asking, progress, threads = Counting(tmp_path, batches, again=5), [], torch.get_num_threads()
    answer_all(asking, square, lambda *p: progress.append(p))
    recorded = asking.recorded()  # in the order asked: [4, 5] again as soon as its result was recorded
    assert recorded[:3] == batches[:3] and sorted(recorded) == sorted(batches + [[4, 5]])
    assert sum(p[0] for p in progress) == 14
    assert torch.get_num_threads() == threads  # the model's threads are given back


def test_large_arrays_come_through_shared_slots_intact(tmp_path):
    """Arrays past the in-band size lie in shared-memory slots that the worker must not overwrite while read."""

    def answer(batch):
        time.sleep(0.02)  # the worker runs ahead meanwhile
        assert bool((batch[1]["values"] == expected.pop(0)).all())
        return square(batch)

    expected = list(range(8))
    answer_all(Counting(tmp_path, [[k] for k in range(8)], size=200_000), answer, lambda *p: None)
    assert expected == []


def test_a_failing_record_reaches_the_caller(tmp_path):
    asking = Counting(tmp_path, [[1], [2], [3]])
    asking.record = lambda number, result: 1 / 0
    with pytest.raises(ZeroDivisionError):
        answer_all(asking, square, lambda *p: None)


def test_a_failing_answer_keeps_what_was_answered(tmp_path):
    def answer(batch):
        if batch[0] == [4]:
            raise KeyboardInterrupt("stopped")
        return square(batch)

    asking = Counting(tmp_path, [[k] for k in range(8)])
    with pytest.raises(KeyboardInterrupt):
        answer_all(asking, answer, lambda *p: None)
    assert asking.recorded() == [[0], [1], [2], [3]]
