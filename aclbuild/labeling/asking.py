"""The labeling loop of one process without the model (:class:`aclbuild.labeling.pipeline.Asking`): batches of
(image, round) jobs to ask, and what the replies make.

An unparseable reply is asked again later, reshuffled, in a batch of its own, up to ``max_retries`` times (without
limit when it is None, as the reference tool did); then the query is recorded as failed. With a
:class:`aclbuild.labeling.backend.StagedBackend` a batch goes to the model side prepared, and its raw result comes
back to be made into replies here; any other backend gets the queries and answers them there.

Example:
    >>> asking = ModelAsking(job, batches=[[(0, 0), (1, 0)]], draw=lambda i, r: [3, 1, 4, 0])   # doctest: +SKIP
    >>> answer_all(asking, asking.model_side, advance)                                           # doctest: +SKIP
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

from aclbuild.labeling.backend import StagedBackend
from aclbuild.labeling.candidates import reshuffled
from aclbuild.labeling.outputs import FAILED
from aclbuild.labeling.parsing import parse_answer
from aclbuild.labeling.pipeline import Progress


class ModelAsking:
    """Asks a model-backed labeler the jobs of ``batches``; ``draw(i, r)`` gives the options of (image, round)
    in the order first shown. ``job`` is the runner's job: its settings, backend, query and row makers, commit."""

    def __init__(self, job, batches: list[list[tuple[int, int]]], draw: Callable[[int, int], list[int]]) -> None:
        self.job, self.draw = job, draw
        self.waiting = deque((jobs, 0) for jobs in batches if jobs)  # (jobs, attempt) not yet asked
        self.asked: dict[int, tuple] = {}  # batch number -> (jobs, attempt, shown, queries, what was sent)
        self.drawn: dict[tuple[int, int], list[int]] = {}  # candidates of the jobs not yet recorded
        self.staged = isinstance(job.backend, StagedBackend)
        self.model_side = job.backend.run if self.staged else job.backend.answer  # what the main process calls
        self.numbered = 0

    def next_batch(self) -> tuple[int, object] | None:
        if not self.waiting:
            return None
        jobs, attempt = self.waiting.popleft()
        s = self.job.s
        for i, r in jobs:
            self.drawn.setdefault((i, r), self.draw(i, r))
        shown = {(i, r): reshuffled(self.drawn[(i, r)], s.seed, i, r, attempt) for i, r in jobs}
        queries = [self.job.query(i, r, attempt, shown[(i, r)]) for i, r in jobs]
        number, self.numbered = self.numbered, self.numbered + 1
        sent = self.job.backend.prepare(queries) if self.staged else queries
        self.asked[number] = (jobs, attempt, shown, queries, sent)
        return number, sent

    def record(self, number: int, result) -> Progress:
        jobs, attempt, shown, queries, sent = self.asked.pop(number)
        replies = self.job.backend.replies(queries, sent, result) if self.staged else result
        limit, rows, again = self.job.s.max_retries, [], []
        for (i, r), query, reply in zip(jobs, queries, replies):
            pick = reply.choice if reply.choice is not None else parse_answer(reply.text, query.options)
            if pick is None and (limit is None or attempt < limit):
                again.append((i, r))
                continue
            label = FAILED if pick is None else shown[(i, r)][pick]
            rows.append(self.job.row(i, r, shown[(i, r)], reply.text, label, attempt))
            del self.drawn[(i, r)]
        if again:
            self.waiting.appendleft((again, attempt + 1))
        return self.job.commit(rows)
