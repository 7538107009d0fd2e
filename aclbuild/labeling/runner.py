"""`aclbuild generate`: label a base's (or a custom source's) training images with a VLM, CLIP, a synthetic
labeler or a replayed label file, sharded and resumable.

The labels depend only on the settings (seed, candidates, model), never on the batch size, the number of processes
or an interruption (:mod:`aclbuild.labeling.job`). Under ``accelerate launch --num_processes N`` each process loads
its own model and labels its share, writing finished batches as part files; the main process merges them.
``--resume`` reads the part files and skips every (image, round) already done. Within a process DataLoader workers
prepare the batches and the main process runs the model (:mod:`aclbuild.labeling.loop`).

Example:
    >>> settings = GenerateSettings(base="digits", labeler="synthetic", limit=50)
    >>> run_generate(settings, source=None, output_dir=Path("out/digits-labels"))   # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path


from aclbuild import __version__
from aclbuild.atomic import atomic_write_text, remove_leftovers
from aclbuild.errors import InputError, OutputExistsError
from aclbuild.labeling.backend import Backend
from aclbuild.labeling.job import LabelingJob
from aclbuild.labeling.outputs import LOG, PARTS, containment, summarise, write_outputs
from aclbuild.labeling.prompts import load_template
from aclbuild.labeling.settings import GenerateSettings, check_settings
from aclbuild.paths import check_output, write_errors

__all__ = ["GenerateSettings", "read_log", "run_generate"]

RUN_FILE = "run.json"


def run_generate(
    settings: GenerateSettings, source: str | Path | None, output_dir: str | Path, resume: bool = False,
    batch_size: int = 8, backend: Backend | None = None, command: list[str] | None = None,
    num_workers: int | None = None,
) -> Path:  # fmt: skip
    """Label, write the outputs into ``output_dir``, and return it. ``backend`` replaces the settings' labeler (tests,
    benchmarks); ``num_workers`` DataLoader workers per process prepare the batches (default: :func:`default_workers`).
    """
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
    here = int(os.environ.get("LOCAL_WORLD_SIZE", state.num_processes))  # processes on this machine (torchrun)
    workers = default_workers(here) if num_workers is None else num_workers
    if workers < 0:
        raise InputError(f"--num-workers must be 0 or more, got {workers}")
    job = LabelingJob(settings, base, records, template, backend, output_dir / PARTS, batch_size, state, workers)
    job.load_streams(names)  # a bad answers or candidates file is refused before the output folder is made
    if state.is_main_process:
        _check_output(output_dir, settings, resume, source)
    if backend is None:  # a model that cannot load leaves no output folder behind
        job.backend = make_labeler(settings, job, batch_size, state.device)
    if state.is_main_process:
        _write_run_file(output_dir, settings)
    state.wait_for_everyone()
    started = time.perf_counter()
    with _cores_for_workers(state.device, job.num_workers):
        job.run()
    seconds = time.perf_counter() - started
    state.wait_for_everyone()
    if state.is_main_process:
        job.store.refresh()
        _finish(job, output_dir, seconds, command)
    state.wait_for_everyone()
    return output_dir


def make_labeler(settings: GenerateSettings, job: LabelingJob, batch_size: int, device) -> Backend:
    """The labeler the settings name, its model loaded on ``device``."""
    s = settings
    if s.labeler == "synthetic":
        from aclbuild.labeling.synthetic import SyntheticLabeler, transition_matrix

        matrix = transition_matrix(s.matrix, job.base.num_classes, s.seed, s.noise)
        return SyntheticLabeler(job.records, matrix, s.num_rounds, s.seed)
    if s.labeler == "replay":
        from aclbuild.labeling.replay import ReplayLabeler

        return ReplayLabeler(job.answers, job.names)
    if s.labeler == "clip":
        from aclbuild.labeling.clip import ClipBackend

        return ClipBackend.from_pretrained(s.model, job.names, s.mode, s.clip_template, s.dtype, device=device)
    if s.labeler == "vlm":
        from aclbuild.labeling.vlm import VlmBackend as ModelBackend
    else:
        from aclbuild.labeling.llava import LlavaBackend as ModelBackend
    return ModelBackend.from_pretrained(s.model, s.dtype, s.scoring, s.max_new_tokens, batch_size, device=device)


def default_workers(processes: int = 1) -> int:
    """DataLoader workers per process, ``processes`` sharing this machine: the cores left beside their own, at least
    1 and at most 4 (preparing a batch is a small share of a forward pass; more workers only hold more batches).

    Example:
        >>> 0 <= default_workers() <= 4
        True
    """
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(4, cores // max(processes, 1) - 1))


@contextlib.contextmanager
def _cores_for_workers(device, workers: int) -> Iterator[None]:
    """A model on the CPU leaves the DataLoader workers cores of their own while it labels: on 2 cores, 2 model
    threads beside one worker made a query 1.2-1.9x slower than 1 thread (tiny models, digits, batch 8)."""
    import torch

    threads = torch.get_num_threads()
    if device.type == "cpu" and workers:
        torch.set_num_threads(max(1, threads - workers))
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _cpu_only() -> bool:
    """No GPU, or `accelerate launch --cpu`: processes then meet over gloo (torchrun / --multi_gpu launchers)."""
    import torch

    return not torch.cuda.is_available() or os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true")


def _check_output(output_dir: Path, settings: GenerateSettings, resume: bool, source: str | Path | None = None) -> None:
    """Refuse an ``output_dir`` that is, holds or lies inside an input, is a file or cannot be written
    (:func:`aclbuild.paths.check_output`), or is not empty unless resuming a run with the same settings (before any
    model loads). What killed earlier runs left half-written there is removed."""
    s = settings
    inputs = {"--source": source, "--answers": s.answers, "--candidates-from": s.candidates_from,
              "--prompt-file": s.prompt_file, "--class-names": s.class_names}  # fmt: skip
    check_output(output_dir, inputs)
    remove_leftovers(output_dir)  # no other process writes there yet: every rank waits for this one
    remove_leftovers(output_dir / PARTS)
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
    text = json.dumps(json.loads(json.dumps(asdict(settings))), indent=2) + "\n"
    with write_errors(output_dir, needed=len(text)):
        output_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(output_dir / RUN_FILE, text)


def _finish(job: LabelingJob, output_dir: Path, seconds: float, command: list[str] | None) -> None:
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
        "processes": job.state.num_processes, "workers": job.num_workers,
        "main_process_ms_per_batch": round(job.loop.own_ms_per_batch(), 3), "prompt_template": job.template.source if job.template else None,
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
