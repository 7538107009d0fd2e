"""The labeling work of one process: its share of the pending (image, round) jobs, asked batch by batch through
:mod:`aclbuild.labeling.loop`, one part file per batch.

By default the candidates of (image i, round r) come from a generator seeded by (seed, i, r), never from a shared
stream, so the label depends only on the seed, i and r (and, with -R, on the answers of earlier blocks). With
``--candidates reference`` or ``--candidates-from`` they are drawn or read whole (:meth:`LabelingJob.load_streams`)
before the images are shared out. A model's query shows them in an order seeded by (seed, i, r, attempt): a retry
is reshuffled. Under ``accelerate launch`` each process takes a contiguous slice of the pending images
(``PartialState.split_between_processes``); with -R, (block, round) units go in order, every process waiting for
the others at the end of each, since the next unit's draws depend on all of its answers (a unit is a few batches,
prepared in the main process).

Example:
    >>> job = LabelingJob(settings, base, records, template, labeler, parts, batch_size=8, state=PartialState())  # doctest: +SKIP
    >>> job.run()                                                                                             # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path

from aclbuild.labeling.backend import Backend, Query, Reply
from aclbuild.labeling.budgets import SeededReduction
from aclbuild.labeling.candidates import ordinary_options, reshuffled, uniform_candidates
from aclbuild.labeling.loop import Job, LoopStats, ask_all
from aclbuild.labeling.outputs import FAILED, PartStore, write_part
from aclbuild.labeling.parsing import parse_answer
from aclbuild.progress import progress_bar

MODEL_FREE_PART = 4096  # images per part file for the labelers without a model (they label thousands a second)


class LabelingJob:
    """One process's labeling: ``backend`` answers, ``store`` holds the finished rows (read from part files)."""

    def __init__(self, settings, base, records, template, backend: Backend | None, parts: Path, batch_size: int,
                 state, num_workers: int = 1) -> None:  # fmt: skip
        self.s, self.base, self.records, self.template, self.backend = settings, base, records, template, backend
        self.batch_size, self.state = batch_size, state
        self.num_workers = num_workers if settings.uses_model else 0  # the others label faster than a worker starts
        self.names = list(base.prompt_names(settings.long_label))
        self.store = PartStore(parts)
        self.images_to_label = 0
        self.noisy = self.answered = 0
        self.loop = LoopStats()
        self.sets: list | None = None  # N x R x 4 candidates drawn up front (reference stream, or a file's)
        self.answers: list | None = None  # N x R labels of the replayed file
        self._advance = None

    def load_streams(self, source_names: list[str]) -> None:
        """Everything drawn or read before any image is asked: the same in every process."""
        from aclbuild.labeling import replay
        from aclbuild.labeling.reference_stream import reference_candidate_sets

        s, n = self.s, len(self.records)
        if s.answers is not None:
            self.answers = replay.read_answers(s.answers, self.base, source_names, s.num_rounds, n).tolist()
        if s.candidates_from is not None:
            sets = replay.read_candidate_sets(s.candidates_from, self.base, source_names, s.num_rounds, n)
            self.sets = sets.tolist()
        elif s.candidates == "reference" and s.labeler != "synthetic" and not s.bias_reduction:
            self.sets = reference_candidate_sets(self.base.name, source_names, s.num_rounds, s.seed)[:n].tolist()

    def _mine(self, items: list) -> list:
        """This process's contiguous slice of ``items``."""
        with self.state.split_between_processes(items) as mine:
            return list(mine)

    def run(self) -> None:
        self._snapshot()
        rounds = range(self.s.num_rounds)
        pending = [i for i in range(len(self.records)) if not all(self.store.done(i, r) for r in rounds)]
        self.images_to_label = len(pending)  # over all processes (for images per second)
        total = len(self.records) * self.s.num_rounds
        name = f"generate {self.base.name} ({self.s.labeler})"
        with progress_bar(name, total, "queries", completed=len(self.store.rows)) as advance:
            self._advance = advance
            if self.s.bias_reduction:
                self._run_reduced()
                return
            mine = self._mine(pending)
            size = self.batch_size if self.s.uses_model else MODEL_FREE_PART
            batches = [
                [(i, r) for i in mine[start : start + size] for r in rounds if not self.store.done(i, r)]
                for start in range(0, len(mine), size)
            ]  # fmt: skip
            self._ask(batches, self.draw)

    def _run_reduced(self) -> None:
        """-R: (block, round) units in order; each unit's draws use the budgets left by all earlier units."""
        from aclbuild.labeling.reference_stream import ReducedReferenceStream

        s, n = self.s, len(self.records)
        if s.candidates == "reference":
            reduction = ReducedReferenceStream(self.base.name, n, s.num_rounds, s.seed, s.r_block)
        else:
            reduction = SeededReduction(n, self.base.num_classes, s.num_rounds, s.seed, s.r_block)
        if hasattr(self.backend, "keep_prefixes"):  # a block's rounds come one after the other: keep its images
            self.backend.keep_prefixes = s.r_block
        previous: tuple[list[int], int] | None = None
        for block in reduction.blocks:
            for rnd in range(s.num_rounds):
                if self.state.num_processes > 1:
                    self._snapshot()  # every process has finished the previous unit: read its answers
                if previous is not None:
                    labels = [self.store.rows[(i, previous[1])]["label"] for i in previous[0]]
                    reduction.answered([label for label in labels if label != FAILED])
                previous = (block, rnd)
                excluded = {i: [self.store.rows[(i, q)]["label"] for q in range(rnd)] for i in block}
                shown = reduction.draw_unit(block, excluded, rnd)  # every image's: the stream must move on
                mine = self._mine([i for i in block if not self.store.done(i, rnd)])
                size = self.batch_size if s.uses_model else MODEL_FREE_PART
                # prepared in this process: forking workers for a unit of a few batches would cost more (it takes
                # time in proportion to the process's memory: 30 ms at 0.4 GB, 0.2-0.5 s at 4.4 GB)
                self._ask([[(i, rnd) for i in mine[k : k + size]] for k in range(0, len(mine), size)],
                          lambda i, r: shown[i], workers=0)  # fmt: skip
                self.state.wait_for_everyone()  # the next unit's budgets need every process's answers

    def _ask(self, batches: list[list[Job]], draw, workers: int | None = None) -> None:
        batches = [jobs for jobs in batches if jobs]
        if not batches:
            return
        workers = self.num_workers if workers is None else workers
        stats = ask_all(batches, lambda jobs, attempt: self.make_queries(jobs, attempt, draw), self.backend,
                        self.record, workers, self.batch_size)  # fmt: skip
        self.loop.batches += stats.batches
        self.loop.own_seconds += stats.own_seconds
        self.loop.run_seconds += stats.run_seconds

    def _snapshot(self) -> None:
        """Read the finished parts, then wait until every process has: they must all cut the same pending list."""
        self.store.refresh()
        self.state.wait_for_everyone()

    def draw(self, i: int, r: int) -> list[int]:
        """The candidates of (image i, round r) before any reshuffle (without -R); all K classes in ordinary mode
        and for the synthetic labeler, which picks its CL among all of them."""
        if self.s.mode == "ord" or self.s.labeler == "synthetic":
            return ordinary_options(self.base.num_classes)
        if self.sets is not None:
            return list(self.sets[i][r])
        return uniform_candidates(self.s.seed, i, r, self.base.num_classes)

    def make_queries(self, jobs: list[Job], attempt: int, draw) -> list[Query]:
        """The queries of ``jobs`` (a worker makes them): a model sees the options in a seeded order of its own."""
        s = self.s
        if not s.uses_model:
            return [self.query(i, r, attempt, draw(i, r)) for i, r in jobs]
        return [self.query(i, r, attempt, reshuffled(draw(i, r), s.seed, i, r, attempt)) for i, r in jobs]

    def query(self, i: int, r: int, attempt: int, shown: list[int]) -> Query:
        names = [self.names[c] for c in shown]
        if self.template is None:  # synthetic, replay: no question, no image
            return Query(i, r, attempt, None, names, names, "", "", "", tuple(shown))
        answers = [str(k + 1) for k in range(len(shown))] if self.template.numbered else names
        prefix, suffix = self.template.split_prompt(names)
        image = self.records[i].image
        return Query(i, r, attempt, image, names, answers, f"{prefix} {suffix}", prefix, suffix, tuple(shown))

    def record(self, queries: list[Query], replies: list[Reply]) -> list[Job]:
        """Rows of the answered queries, written at once; returns the queries to ask again (no option named, retries
        left: ``--max-retries``, or without limit when it is None, as the reference tool did)."""
        limit, rows, again = self.s.max_retries, [], []
        shows_candidates = self.s.labeler != "synthetic"
        for q, reply in zip(queries, replies):
            pick = reply.choice
            if pick is None and not reply.status:
                pick = parse_answer(reply.text, q.options)
                if pick is None and (limit is None or q.attempt < limit):
                    again.append((q.index, q.round_))
                    continue
            label = FAILED if pick is None else q.classes[pick]
            shown = list(q.classes) if shows_candidates else []
            rows.append(self.row(q.index, q.round_, shown, reply.text, label, q.attempt, reply.status))
        self._progress(*self.commit(rows))
        return again

    def _progress(self, done: int, answered: int, noisy: int) -> None:
        """Advance the progress bar, showing the running noise (cl) or accuracy (ord)."""
        self.answered, self.noisy = self.answered + answered, self.noisy + noisy
        what = "noise" if self.s.mode == "cl" else "accuracy"
        self._advance(done, note=f"{what} {100 * self.noisy / max(self.answered, 1):.2f}%")

    def row(self, i: int, r: int, shown: list[int], answer: str, label: int, retries: int, status: str = "") -> dict:
        rec = self.records[i]
        return {
            "index": i, "name": rec.name, "round": r, "ord_label": rec.ord_label, "candidates": list(shown),
            "candidate_names": [self.names[c] for c in shown], "answer": answer, "label": int(label),
            "retries": retries, "status": status or ("ok" if label != FAILED else "failed"),
        }  # fmt: skip

    def commit(self, rows: list[dict]) -> tuple[int, int, int]:
        """Record finished rows; returns (rows, answered, noisy or right) for the progress bar.

        A model's rows go to a part file at once (a kill loses only the batch being asked). Without -R they are not
        kept in memory: the merge reads them back. With -R they are kept, since the next unit's draws need them. The
        labelers without a model keep their rows in memory when they run alone (they redo a whole run in seconds,
        so a part file would cost more than it saves) and write part files only to share rows between processes.
        """
        keep = self.s.bias_reduction or self._alone_without_model()
        if keep:
            for row in rows:
                self.store.rows[(row["index"], row["round"])] = row
        if not self._alone_without_model():
            path = write_part(rows, self.store.parts)
            if keep and path is not None:
                self.store.seen(path)
        answered = sum(row["status"] == "ok" for row in rows)
        noisy = sum(row["status"] == "ok" and row["label"] == row["ord_label"] for row in rows)
        return len(rows), answered, noisy

    def _alone_without_model(self) -> bool:
        return not self.s.uses_model and self.state.num_processes == 1
