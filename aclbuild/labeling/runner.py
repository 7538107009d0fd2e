"""`aclbuild generate`: label a base's training images with a VLM or a synthetic labeler, sharded and resumable.

The label of (image i, round r) depends only on the seed, i and r (and, with -R, on the answers of earlier
blocks): candidates come from generators seeded by (seed, i, r, attempt), never from a shared stream. So the result
is the same for 1 or N processes, for any batch size, and with or without an interruption.

Under ``accelerate launch --num_processes N`` each process takes a contiguous slice of the pending images, loads
its own model, and writes finished batches as part files; the main process merges them. ``--resume`` reads the
part files and skips every (image, round) already done. Within a process the model answers in the main process
and a forked worker does the rest of the loop (:class:`_Asking`, driven by :mod:`aclbuild.labeling.pipeline`).

Example:
    >>> settings = GenerateSettings(base="digits", labeler="synthetic", limit=50)
    >>> run_generate(settings, source=None, output_dir=Path("out/digits-labels"))   # doctest: +SKIP
"""

from __future__ import annotations

import json
import shlex
import shutil
import sys
import time
from collections import deque
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from aclbuild import __version__
from aclbuild.errors import InputError, OutputExistsError
from aclbuild.labeling import budgets
from aclbuild.labeling.backend import Backend, Query, StagedBackend
from aclbuild.labeling.candidates import ordinary_options, reshuffled, uniform_candidates
from aclbuild.labeling.outputs import FAILED, LOG, PARTS, PartStore, summarise, write_outputs, write_part
from aclbuild.labeling.parsing import parse_answer
from aclbuild.labeling.pipeline import Progress, answer_all
from aclbuild.labeling.prompts import load_template
from aclbuild.progress import progress_bar
from aclbuild.registry import DEFAULT_VLM, SYNTHETIC_MATRICES, Base, get_base

LABELERS = ("llava", "synthetic")
RUN_FILE = "run.json"


@dataclass(frozen=True)
class GenerateSettings:
    """Every option that decides the labels (stored in run.json; --resume must match it)."""

    base: str
    labeler: str = "llava"
    model: str = DEFAULT_VLM
    mode: str = "cl"
    num_rounds: int = 3
    bias_reduction: bool = False
    long_label: bool = False
    seed: int = 1126
    matrix: str = "uniform"
    noise: float = 0.1
    prompt_file: str | None = None
    max_new_tokens: int = 30
    max_retries: int = 10
    dtype: str | None = None
    scoring: str = "generate"
    limit: int | None = None


def check_settings(s: GenerateSettings, base: Base) -> None:
    """Refuse contradictory or out-of-range options before anything is loaded."""
    if s.labeler not in LABELERS:
        raise InputError(f"unknown --labeler {s.labeler!r}; choose one of: {', '.join(LABELERS)}")
    if s.mode not in ("cl", "ord"):
        raise InputError(f"unknown --mode {s.mode!r}; choose cl or ord")
    if s.num_rounds < 1:
        raise InputError(f"--num-rounds must be at least 1, got {s.num_rounds}")
    if s.max_retries < 0 or (s.limit is not None and s.limit < 1):
        raise InputError("--max-retries must be >= 0 and --limit >= 1")
    if s.bias_reduction:
        if s.mode != "cl":
            raise InputError("--bias-reduction applies to complementary labels (--mode cl)")
        budgets.check_rounds(s.num_rounds, base.num_classes)
    if s.labeler == "synthetic":
        if s.matrix not in SYNTHETIC_MATRICES:
            raise InputError(f"unknown --matrix {s.matrix!r}; choose one of: {', '.join(SYNTHETIC_MATRICES)}")
        if s.mode != "cl" or s.bias_reduction:
            raise InputError("--labeler synthetic gives complementary labels only (no --mode ord, no -R)")
        if s.num_rounds > base.num_classes - 1:
            raise InputError(f"--labeler synthetic draws distinct CLs: --num-rounds must be <= {base.num_classes - 1}")


def run_generate(
    settings: GenerateSettings, source: str | Path | None, output_dir: str | Path, resume: bool = False,
    batch_size: int = 8, backend: Backend | None = None, command: list[str] | None = None,
) -> Path:  # fmt: skip
    """Label, write the outputs into ``output_dir``, and return it. ``backend`` replaces the LLaVA model (tests)."""
    from accelerate import PartialState

    from aclbuild.loaders.images import read_source_images

    base = get_base(settings.base)
    check_settings(settings, base)
    if batch_size < 1:
        raise InputError(f"--batch-size must be at least 1, got {batch_size}")
    template = load_template(settings.mode, settings.prompt_file) if settings.labeler == "llava" else None
    records = read_source_images(base, source, "train")[: settings.limit]
    output_dir = Path(output_dir)
    state = PartialState(cpu=_cpu_only())
    if state.is_main_process:
        _prepare_output(output_dir, settings, resume)
    state.wait_for_everyone()
    if settings.labeler == "llava" and backend is None:
        from aclbuild.labeling.llava import LlavaBackend

        backend = LlavaBackend(
            settings.model, settings.dtype, settings.scoring, settings.max_new_tokens, batch_size, device=state.device
        )
    job = _Job(settings, base, records, template, backend, output_dir / PARTS, batch_size, state)
    started = time.perf_counter()
    job.run()
    seconds = time.perf_counter() - started
    state.wait_for_everyone()
    if state.is_main_process:
        job.store.refresh()
        _finish(job, output_dir, seconds, command)
    state.wait_for_everyone()
    return output_dir


def _cpu_only() -> bool:
    """No GPU, or `accelerate launch --cpu`: processes then meet over gloo (torchrun / --multi_gpu launchers)."""
    import os

    import torch

    return not torch.cuda.is_available() or os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true")


def _prepare_output(output_dir: Path, settings: GenerateSettings, resume: bool) -> None:
    run_file = output_dir / RUN_FILE
    wanted = json.loads(json.dumps(asdict(settings)))
    if resume and run_file.is_file():
        stored = json.loads(run_file.read_text(encoding="utf-8"))
        if stored != wanted:
            changed = sorted(k for k in wanted if stored.get(k) != wanted[k])
            raise InputError(f"--resume: {output_dir} was started with other settings ({', '.join(changed)})")
        return
    if output_dir.exists() and any(output_dir.iterdir()) and not resume:
        raise OutputExistsError(
            f"{output_dir} is not empty; pass --resume to continue a run there, or pick a new folder"
        )
    output_dir.mkdir(parents=True, exist_ok=True)
    tmp = run_file.with_name(f".{RUN_FILE}.tmp")
    tmp.write_text(json.dumps(wanted, indent=2) + "\n", encoding="utf-8")
    tmp.replace(run_file)


class _Job:
    """The work of one process: its slice of the pending images, batch by batch, one part file per batch."""

    def __init__(self, settings, base, records, template, backend, parts, batch_size, state) -> None:
        self.s, self.base, self.records, self.template, self.backend = settings, base, records, template, backend
        self.batch_size, self.state = batch_size, state
        self.names = list(base.prompt_names(settings.long_label))
        self.store = PartStore(parts)
        self.images_to_label = 0
        self.noisy = self.answered = 0

    def _mine(self, items: list) -> list:
        """This process's contiguous slice (as accelerate's split_between_processes cuts it)."""
        n, k, rank = len(items), self.state.num_processes, self.state.process_index
        per, extra = divmod(n, k)
        start = rank * per + min(rank, extra)
        return items[start : start + per + (1 if rank < extra else 0)]

    def run(self) -> None:
        self._snapshot()
        rounds = range(self.s.num_rounds)
        # images this run labels, over all processes (for images per second)
        self.images_to_label = sum(not all(self.store.done(i, r) for r in rounds) for i in range(len(self.records)))
        total = len(self.records) * self.s.num_rounds
        with progress_bar(f"labeling {self.base.name} ({self.s.labeler})", total) as advance:
            advance(len(self.store.rows))
            if self.s.bias_reduction:
                self._run_reduced(advance)
                return
            pending = [i for i in range(len(self.records)) if not all(self.store.done(i, r) for r in rounds)]
            mine = self._mine(pending)
            batches = [
                [(i, r) for i in mine[start : start + self.batch_size] for r in rounds if not self.store.done(i, r)]
                for start in range(0, len(mine), self.batch_size)
            ]  # fmt: skip
            if self.s.labeler == "synthetic":
                record = self._advancer(advance)
                for jobs in batches:
                    record(*self._commit(self._synthetic(jobs)))
                return
            asking = _Asking(self, batches)
            answer_all(asking, asking.model_side, self._advancer(advance))

    def _run_reduced(self, advance) -> None:
        """-R: (block, round) units in order; each unit's draws use the budgets left by all earlier units."""
        if hasattr(self.backend, "keep_prefixes"):  # a block's rounds come one after the other: keep its images
            self.backend.keep_prefixes = budgets.BLOCK
        blocks = budgets.visit_blocks(list(range(len(self.records))), self.s.seed)
        initial = budgets.initial_budgets(len(self.records), self.base.num_classes, self.s.num_rounds)
        chosen = np.zeros(self.base.num_classes, dtype=np.int64)  # CLs of every unit before the current one
        previous: tuple[list[int], int] | None = None
        for b, block in enumerate(blocks):
            for rnd in range(self.s.num_rounds):
                self._snapshot()
                if previous is not None:  # every process has finished the previous unit: count its answers
                    for i in previous[0]:
                        label = self.store.rows[(i, previous[1])]["label"]
                        if label != FAILED:
                            chosen[label] += 1
                previous = (block, rnd)
                snapshot = budgets.budgets_after(initial, chosen)
                mine = self._mine([i for i in block if not self.store.done(i, rnd)])

                def draw(i: int, r: int, snapshot=snapshot) -> list[int]:
                    earlier = [self.store.rows[(i, q)]["label"] for q in range(r)]
                    return budgets.budget_candidates(snapshot, [c for c in earlier if c != FAILED], self.s.seed, i, r)

                batches = [
                    [(i, rnd) for i in mine[s : s + self.batch_size]] for s in range(0, len(mine), self.batch_size)
                ]
                # in place: the unit's rows are needed next, and after its first round a block's prefix caches are kept
                asking = _Asking(self, batches, draw)
                answer_all(asking, asking.model_side, self._advancer(advance), in_place=True)
                self.state.wait_for_everyone()  # the next unit's budgets need every process's answers

    def _snapshot(self) -> None:
        """Read the finished parts, then wait until every process has: they must all cut the same pending list."""
        self.store.refresh()
        self.state.wait_for_everyone()

    def _uniform(self, i: int, r: int) -> list[int]:
        if self.s.mode == "ord":
            return ordinary_options(self.base.num_classes)
        return uniform_candidates(self.s.seed, i, r, self.base.num_classes)

    def _query(self, i: int, r: int, attempt: int, shown: list[int]) -> Query:
        names = [self.names[c] for c in shown]
        answers = names if self.s.mode == "cl" else [str(k + 1) for k in range(len(shown))]
        prefix, suffix = self.template.split_prompt(names)
        return Query(i, r, attempt, self.records[i].image, names, answers, f"{prefix} {suffix}", prefix, suffix)

    def _advancer(self, advance):
        """``advance`` of the progress bar, fed with :meth:`_Asking.record`'s counts, showing the running noise."""
        what = "noise" if self.s.mode == "cl" else "accuracy"

        def record(done: int, answered: int, noisy: int) -> None:
            self.answered, self.noisy = self.answered + answered, self.noisy + noisy
            advance(done, note=f"{what} {100 * self.noisy / max(self.answered, 1):.2f}%")

        return record

    def _synthetic(self, jobs: list[tuple[int, int]]) -> list[dict]:
        """The foundation's seeded draw: image i's CLs come from rng(seed, i), the same in any batch or process."""
        from aclbuild.labeling.synthetic import draw_cls, transition_matrix

        matrix = transition_matrix(self.s.matrix, self.base.num_classes, self.s.seed, self.s.noise)
        rows = []
        for i in sorted({i for i, _ in jobs}):
            cls = draw_cls(np.array([self.records[i].ord_label]), matrix, self.s.num_rounds, self.s.seed, offset=i)[0]
            rows += [self._row(i, r, [], self.names[cls[r]], int(cls[r]), 0) for _, r in [j for j in jobs if j[0] == i]]
        return rows

    def _row(self, i: int, r: int, shown: list[int], answer: str, label: int, retries: int) -> dict:
        rec = self.records[i]
        return {
            "index": i, "name": rec.name, "round": r, "ord_label": rec.ord_label, "candidates": list(shown),
            "candidate_names": [self.names[c] for c in shown], "answer": answer, "label": int(label),
            "retries": retries, "status": "ok" if label != FAILED else "failed",
        }  # fmt: skip

    def _commit(self, rows: list[dict]) -> Progress:
        """Write finished rows as a part file; returns (rows, answered, noisy or right) for the progress bar.

        The rows are not kept in memory: the next :meth:`_snapshot` (or the merge) reads them back from the part
        file, and a worker process that held every row would slow down as its collector scanned them all.
        """
        write_part(rows, self.store.parts)
        answered = sum(row["status"] == "ok" for row in rows)
        noisy = sum(row["status"] == "ok" and row["label"] == row["ord_label"] for row in rows)
        return len(rows), answered, noisy


class _Asking:
    """The labeling loop of one process without the model (:class:`aclbuild.labeling.pipeline.Asking`): batches of
    (image, round) jobs to ask, and what the replies make. An unparseable reply is asked again later, reshuffled,
    in a batch of its own, up to --max-retries times; then the query is recorded as failed.

    With a :class:`aclbuild.labeling.backend.StagedBackend` a batch goes to the model side prepared, and its raw
    result comes back to be made into replies here; any other backend gets the queries and answers them there.
    """

    def __init__(self, job: _Job, batches: list[list[tuple[int, int]]], draw=None) -> None:
        self.job, self.draw = job, draw or job._uniform
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
        queries = [self.job._query(i, r, attempt, shown[(i, r)]) for i, r in jobs]
        number, self.numbered = self.numbered, self.numbered + 1
        sent = self.job.backend.prepare(queries) if self.staged else queries
        self.asked[number] = (jobs, attempt, shown, queries, sent)
        return number, sent

    def record(self, number: int, result) -> Progress:
        jobs, attempt, shown, queries, sent = self.asked.pop(number)
        replies = self.job.backend.replies(queries, sent, result) if self.staged else result
        s, rows, again = self.job.s, [], []
        for (i, r), query, reply in zip(jobs, queries, replies):
            pick = reply.choice if reply.choice is not None else parse_answer(
                reply.text, query.options, numbered=s.mode == "ord"
            )  # fmt: skip
            if pick is None and attempt < s.max_retries:
                again.append((i, r))
                continue
            label = FAILED if pick is None else shown[(i, r)][pick]
            rows.append(self.job._row(i, r, shown[(i, r)], reply.text, label, attempt))
            del self.drawn[(i, r)]
        if again:
            self.waiting.appendleft((again, attempt + 1))
        return self.job._commit(rows)


def _finish(job: _Job, output_dir: Path, seconds: float, command: list[str] | None) -> None:
    s = job.s
    rows = [job.store.rows[(i, r)] for i in range(len(job.records)) for r in range(s.num_rounds)]
    images_per_second = job.images_to_label / seconds if seconds > 0 else 0.0
    backend = job.backend
    provenance = {
        "labeler": s.labeler, "model": getattr(backend, "model_id", None) if s.labeler == "llava" else None,
        "revision": getattr(backend, "revision", None), "mode": s.mode, "num_rounds": s.num_rounds,
        "seed": s.seed, "prompt_sha256": job.template.sha256 if job.template else None,
        "bias_reduction": s.bias_reduction, "long_label": s.long_label, "scoring": s.scoring if s.labeler == "llava" else None,
        "dtype": getattr(backend, "dtype_name", None), "matrix": s.matrix if s.labeler == "synthetic" else None,
        "noise": s.noise if s.labeler == "synthetic" and s.matrix == "noisy" else None,
        "max_retries": s.max_retries if s.labeler == "llava" else None, "aclbuild_version": __version__,
        "max_new_tokens": s.max_new_tokens if s.labeler == "llava" and s.scoring == "generate" else None,
    }  # fmt: skip
    log = {
        "provenance": {k: v for k, v in provenance.items() if v is not None},
        "base": job.base.name, "images": len(job.records), "statistics": summarise(rows, job.base.num_classes, s.mode, s.num_rounds),
        "images_per_second": round(images_per_second, 3), "seconds": round(seconds, 3),
        "processes": job.state.num_processes, "prompt_template": job.template.source if job.template else None,
        "prompt_split_exact": getattr(backend, "split_is_exact", None),
        "command": shlex.join(command if command is not None else sys.argv),
    }  # fmt: skip
    write_outputs(output_dir, rows, job.records, s.mode, log)
    shutil.rmtree(output_dir / PARTS, ignore_errors=True)


def read_log(output_dir: str | Path) -> dict:
    """The JSON log of a finished run."""
    return json.loads((Path(output_dir) / LOG).read_text(encoding="utf-8"))
