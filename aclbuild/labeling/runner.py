"""`aclbuild generate`: label a base's training images with a VLM, a synthetic labeler or a replayed label file,
sharded and resumable.

By default the candidates of (image i, round r) come from a generator seeded by (seed, i, r), never from a shared
stream, so the label depends only on the seed, i and r (and, with -R, on the answers of earlier blocks). With
``--candidates reference`` they are the released sets' own draws from numpy's global stream
(:mod:`aclbuild.labeling.reference_stream`), drawn whole before the images are split between processes; with
``--candidates-from`` they are an earlier run's. Either way the result is the same for 1 or N processes, for any
batch size, and with or without an interruption. The order in which a query's options are shown is aclbuild's own
(seeded by image, round and attempt): the reference's depended on its model's answers and retries.

Under ``accelerate launch --num_processes N`` each process takes a contiguous slice of the pending images, loads
its own model, and writes finished batches as part files; the main process merges them. ``--resume`` reads the
part files and skips every (image, round) already done. Within a process the model answers in the main process
and a forked worker does the rest of the loop (:class:`aclbuild.labeling.asking.ModelAsking`, driven by
:mod:`aclbuild.labeling.pipeline`). The labelers without a model (synthetic, replay) run in the main process.

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
from dataclasses import asdict
from pathlib import Path

import numpy as np

from aclbuild import __version__
from aclbuild.errors import InputError, OutputExistsError
from aclbuild.labeling.asking import ModelAsking
from aclbuild.labeling.backend import Backend, Query
from aclbuild.labeling.budgets import SeededReduction
from aclbuild.labeling.candidates import ordinary_options, uniform_candidates
from aclbuild.labeling.outputs import FAILED, LOG, PARTS, PartStore, containment, summarise, write_outputs, write_part
from aclbuild.labeling.pipeline import Progress, answer_all
from aclbuild.labeling.prompts import load_template
from aclbuild.labeling.settings import GenerateSettings, check_settings
from aclbuild.progress import progress_bar

__all__ = ["GenerateSettings", "read_log", "run_generate"]

RUN_FILE = "run.json"
MODEL_FREE_PART = 4096  # images per part file for the labelers without a model (they label thousands a second)


def run_generate(
    settings: GenerateSettings, source: str | Path | None, output_dir: str | Path, resume: bool = False,
    batch_size: int = 8, backend: Backend | None = None, command: list[str] | None = None,
) -> Path:  # fmt: skip
    """Label, write the outputs into ``output_dir``, and return it. ``backend`` replaces the LLaVA model (tests)."""
    from accelerate import PartialState

    from aclbuild.loaders.images import read_source_images, record_names, source_base

    s = settings  # a custom source (Hub id or folder) makes a base of its own
    base = source_base(s.base, source, s.split, s.image_column, s.label_column, s.class_names)
    check_settings(settings, base)
    if batch_size < 1:
        raise InputError(f"--batch-size must be at least 1, got {batch_size}")
    template = load_template(settings.mode, settings.prompt_file, settings.prompt) if settings.uses_model else None
    # the replay labeler never looks at an image: read names and labels only
    every = read_source_images(base, source, "train", pixels=settings.labeler != "replay")
    records = every[: settings.limit]
    names = record_names(every)  # a lazy source's names come without decoding its images
    output_dir = Path(output_dir)
    state = PartialState(cpu=_cpu_only())
    job = _Job(settings, base, records, template, backend, output_dir / PARTS, batch_size, state)
    job.load_streams(names)  # a bad answers or candidates file is refused before the output folder is made
    if state.is_main_process:
        _check_output(output_dir, settings, resume)
    if settings.labeler == "clip" and backend is None:  # a model that cannot load leaves no output folder behind
        from aclbuild.labeling.clip import ClipBackend

        job.backend = ClipBackend(
            settings.model, job.names, settings.mode, settings.clip_template, settings.dtype, device=state.device
        )
    elif settings.uses_model and backend is None:
        if settings.labeler == "vlm":
            from aclbuild.labeling.vlm import VlmBackend as ModelBackend
        else:
            from aclbuild.labeling.llava import LlavaBackend as ModelBackend

        job.backend = ModelBackend(
            settings.model, settings.dtype, settings.scoring, settings.max_new_tokens, batch_size, device=state.device
        )
    if state.is_main_process:
        _write_run_file(output_dir, settings)
    state.wait_for_everyone()
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


def _check_output(output_dir: Path, settings: GenerateSettings, resume: bool) -> None:
    """Refuse a non-empty ``output_dir`` unless resuming a run with the same settings (before any model loads)."""
    run_file = output_dir / RUN_FILE
    if resume and run_file.is_file():
        stored = json.loads(run_file.read_text(encoding="utf-8"))
        wanted = json.loads(json.dumps(asdict(settings)))
        if stored != wanted:
            changed = sorted(k for k in wanted if stored.get(k) != wanted[k])
            raise InputError(f"--resume: {output_dir} was started with other settings ({', '.join(changed)})")
        return
    if output_dir.exists() and any(output_dir.iterdir()) and not resume:
        raise OutputExistsError(
            f"{output_dir} is not empty; pass --resume to continue a run there, or pick a new folder"
        )


def _write_run_file(output_dir: Path, settings: GenerateSettings) -> None:
    """The run's settings, which ``--resume`` compares (written once everything is checked and loaded)."""
    output_dir.mkdir(parents=True, exist_ok=True)
    run_file = output_dir / RUN_FILE
    tmp = run_file.with_name(f".{RUN_FILE}.tmp")
    tmp.write_text(json.dumps(json.loads(json.dumps(asdict(settings))), indent=2) + "\n", encoding="utf-8")
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
        self.sets: list | None = None  # N x R x 4 candidates drawn up front (reference stream, or a file's)
        self.answers: list | None = None  # N x R labels of the replayed file

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
        name = f"generate {self.base.name} ({self.s.labeler})"
        with progress_bar(name, total, "queries", completed=len(self.store.rows)) as advance:
            if self.s.bias_reduction:
                self._run_reduced(advance)
                return
            pending = [i for i in range(len(self.records)) if not all(self.store.done(i, r) for r in rounds)]
            mine = self._mine(pending)
            size = self.batch_size if self.s.uses_model else MODEL_FREE_PART
            batches = [
                [(i, r) for i in mine[start : start + size] for r in rounds if not self.store.done(i, r)]
                for start in range(0, len(mine), size)
            ]  # fmt: skip
            record = self._advancer(advance)
            if not self.s.uses_model:
                for jobs in batches:
                    shown = {} if self.s.labeler == "synthetic" else {(i, r): self.draw(i, r) for i, r in jobs}
                    record(*self.commit(self._answer_without_model(jobs, shown)))
                return
            asking = ModelAsking(self, batches, self.draw)
            answer_all(asking, asking.model_side, record)

    def _run_reduced(self, advance) -> None:
        """-R: (block, round) units in order; each unit's draws use the budgets left by all earlier units."""
        from aclbuild.labeling.reference_stream import ReducedReferenceStream

        s, n, record = self.s, len(self.records), self._advancer(advance)
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
                if not s.uses_model:
                    jobs = [(i, rnd) for i in mine]
                    record(*self.commit(self._answer_without_model(jobs, {(i, rnd): shown[i] for i in mine})))
                elif mine:
                    size = self.batch_size
                    batches = [[(i, rnd) for i in mine[k : k + size]] for k in range(0, len(mine), size)]
                    # in place: the unit's rows are needed next; after its first round a block's prefix caches are kept
                    asking = ModelAsking(self, batches, lambda i, r: shown[i])
                    answer_all(asking, asking.model_side, record, in_place=True)
                self.state.wait_for_everyone()  # the next unit's budgets need every process's answers

    def _snapshot(self) -> None:
        """Read the finished parts, then wait until every process has: they must all cut the same pending list."""
        self.store.refresh()
        self.state.wait_for_everyone()

    def draw(self, i: int, r: int) -> list[int]:
        """The options of (image i, round r), in the order first shown (without -R)."""
        if self.s.mode == "ord":
            return ordinary_options(self.base.num_classes)
        if self.sets is not None:
            return list(self.sets[i][r])
        return uniform_candidates(self.s.seed, i, r, self.base.num_classes)

    def query(self, i: int, r: int, attempt: int, shown: list[int]) -> Query:
        names = [self.names[c] for c in shown]
        answers = [str(k + 1) for k in range(len(shown))] if self.template.numbered else names
        prefix, suffix = self.template.split_prompt(names)
        return Query(i, r, attempt, self.records[i].image, names, answers, f"{prefix} {suffix}", prefix, suffix)

    def _advancer(self, advance):
        """``advance`` of the progress bar, fed with :meth:`commit`'s counts, showing the running noise."""
        what = "noise" if self.s.mode == "cl" else "accuracy"

        def record(done: int, answered: int, noisy: int) -> None:
            self.answered, self.noisy = self.answered + answered, self.noisy + noisy
            advance(done, note=f"{what} {100 * self.noisy / max(self.answered, 1):.2f}%")

        return record

    def _answer_without_model(self, jobs: list[tuple[int, int]], shown: dict[tuple[int, int], list[int]]) -> list[dict]:
        return self._synthetic(jobs) if self.s.labeler == "synthetic" else self._replay(jobs, shown)

    def _synthetic(self, jobs: list[tuple[int, int]]) -> list[dict]:
        """The foundation's seeded draw: image i's CLs come from rng(seed, i), the same in any batch or process."""
        from aclbuild.labeling.synthetic import draw_cls, transition_matrix

        matrix = transition_matrix(self.s.matrix, self.base.num_classes, self.s.seed, self.s.noise)
        rounds: dict[int, list[int]] = {}
        for i, r in jobs:
            rounds.setdefault(i, []).append(r)
        rows = []
        for i in sorted(rounds):
            cls = draw_cls(np.array([self.records[i].ord_label]), matrix, self.s.num_rounds, self.s.seed, offset=i)[0]
            rows += [self.row(i, r, [], self.names[cls[r]], int(cls[r]), 0) for r in rounds[i]]
        return rows

    def _replay(self, jobs: list[tuple[int, int]], shown: dict[tuple[int, int], list[int]]) -> list[dict]:
        """The replayed file's label of each query, where it is among the options shown."""
        from aclbuild.labeling.replay import NO_LABEL

        rows = []
        for i, r in jobs:
            label, options = self.answers[i][r], shown[(i, r)]
            if label == NO_LABEL:
                rows.append(self.row(i, r, options, "", FAILED, 0, status="no_answer"))
            elif label in options:
                rows.append(self.row(i, r, options, self.names[label], label, 0))
            else:
                rows.append(self.row(i, r, options, self.names[label], FAILED, 0, status="not_in_candidates"))
        return rows

    def row(self, i: int, r: int, shown: list[int], answer: str, label: int, retries: int, status: str = "") -> dict:
        rec = self.records[i]
        return {
            "index": i, "name": rec.name, "round": r, "ord_label": rec.ord_label, "candidates": list(shown),
            "candidate_names": [self.names[c] for c in shown], "answer": answer, "label": int(label),
            "retries": retries, "status": status or ("ok" if label != FAILED else "failed"),
        }  # fmt: skip

    def commit(self, rows: list[dict]) -> Progress:
        """Record finished rows; returns (rows, answered, noisy or right) for the progress bar.

        A model's rows go to a part file at once (a kill loses only the batches in flight). Without -R they are not
        kept in memory: the merge reads them back, and a worker process that held every row would slow down as its
        collector scanned them all; with -R (always in this process) they are kept, since the next unit's draws need
        them. The labelers without a model keep their rows in memory when they run alone (they redo a whole run in
        seconds, so a part file would cost more than it saves) and write part files only to share rows between
        processes.
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


def _finish(job: _Job, output_dir: Path, seconds: float, command: list[str] | None) -> None:
    s = job.s
    rows = [job.store.rows[(i, r)] for i in range(len(job.records)) for r in range(s.num_rounds)]
    images_per_second = job.images_to_label / seconds if seconds > 0 else 0.0
    backend, model = job.backend, s.uses_model
    provenance = {
        "labeler": s.labeler, "model": getattr(backend, "model_id", None) if model else None,
        "revision": getattr(backend, "revision", None), "mode": s.mode, "num_rounds": s.num_rounds,
        "seed": s.seed, "prompt_sha256": job.template.sha256 if job.template else None,
        "prompt": s.prompt if model and not s.prompt_file else None, "protocol": s.protocol,
        "candidates": _candidates_provenance(s),
        "bias_reduction": s.bias_reduction, "r_block": s.r_block if s.bias_reduction else None,
        "long_label": s.long_label, "scoring": s.scoring if model else None,
        "dtype": getattr(backend, "dtype_name", None), "matrix": s.matrix if s.labeler == "synthetic" else None,
        "noise": s.noise if s.labeler == "synthetic" and s.matrix == "noisy" else None,
        "max_retries": (s.max_retries if s.max_retries is not None else "unlimited") if model else None,
        "answers": s.answers, "aclbuild_version": __version__,
        "source": json.loads(job.base.description) if hasattr(job.base, "description") else None,
        "max_new_tokens": s.max_new_tokens if model and s.scoring == "generate" else None,
    }  # fmt: skip
    provenance.update(getattr(backend, "provenance", {}))  # a labeler's own entries (clip: its text template)
    statistics = summarise(rows, job.base.num_classes, s.mode, s.num_rounds)
    if s.labeler == "replay":
        statistics["containment"] = containment(rows)
    log = {
        "provenance": {k: v for k, v in provenance.items() if v is not None},
        "base": job.base.name, "images": len(job.records), "statistics": statistics,
        "images_per_second": round(images_per_second, 3), "seconds": round(seconds, 3),
        "processes": job.state.num_processes, "prompt_template": job.template.source if job.template else None,
        "prompt_split_exact": getattr(backend, "split_is_exact", None),
        "command": shlex.join(command if command is not None else sys.argv),
    }  # fmt: skip
    # the table carries the provenance itself; build takes it alone, its images from --source
    write_outputs(output_dir, rows, log)
    shutil.rmtree(output_dir / PARTS, ignore_errors=True)


def _candidates_provenance(s: GenerateSettings) -> str | None:
    if s.labeler == "synthetic" or s.mode == "ord":
        return None
    if s.candidates_from is not None:
        return f"from {s.candidates_from}"
    return s.candidates


def read_log(output_dir: str | Path) -> dict:
    """The JSON log of a finished run."""
    return json.loads((Path(output_dir) / LOG).read_text(encoding="utf-8"))
