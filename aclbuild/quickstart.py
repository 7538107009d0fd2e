"""The whole pipeline, offline, on the embedded digits base: README's main job.

Example:
    >>> run_quickstart("aclbuild-quickstart")   # doctest: +SKIP
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from rich.console import Console

from aclbuild.atomic import LEFTOVER
from aclbuild.builder import build_repository
from aclbuild.errors import AclbuildError, OutputExistsError
from aclbuild.paths import check_output
from aclbuild.pickle_export import export_split, pickle_name
from aclbuild.labeling.synthetic import label_records, transition_matrix
from aclbuild.loaders.digits import read_digits
from aclbuild.progress import LogConsole, quiet_library_bars
from aclbuild.registry import get_variant
from aclbuild.stats import repository_stats
from aclbuild.validate import validate_repository

SEED = 1126
NUM_CL = 3
VARIANT = "digits-uniform"
BENCHMARK = "benchmark"
HF_CACHE = ".hf-cache"


def check_output_dir(output_dir: Path) -> None:
    """Refuse an output that is a file, lies under one or where the user cannot write, and a folder holding anything
    the quickstart does not write itself (it replaces its own outputs on every run, and nothing else).

    Example:
        >>> import tempfile
        >>> folder = Path(tempfile.mkdtemp())
        >>> _ = (folder / "digitsuniform.pkl").write_bytes(b"")   # an earlier quickstart's: replaced
        >>> check_output_dir(folder)
        >>> _ = (folder / "thesis.tex").write_text("")            # the user's: kept, so the folder is refused
        >>> check_output_dir(folder)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        aclbuild.errors.OutputExistsError: ... holds thesis.tex, which the quickstart did not write; ...
    """
    check_output(output_dir)
    own = {VARIANT, pickle_name(VARIANT), BENCHMARK, HF_CACHE}
    found = sorted(p.name for p in output_dir.iterdir()) if output_dir.is_dir() else []
    foreign = [name for name in found if name not in own and not LEFTOVER.fullmatch(name)]
    if foreign:
        raise OutputExistsError(
            f"{output_dir} holds {', '.join(foreign[:3])}{', ...' if len(foreign) > 3 else ''}, which the quickstart "
            "did not write; it replaces what it writes there, so give it a new or empty --output-dir"
        )


def run_quickstart(output_dir: str | Path, console: Console | None = None) -> dict:
    """Label digits with 3 uniform synthetic CLs, build, validate, load back with ``load_dataset``, report.

    Returns the paths and train statistics; raises when any step does not hold.
    """
    console = console or LogConsole()
    quiet_library_bars()  # in a log, datasets' tqdm bars would garble the lines below
    output_dir = Path(output_dir)
    check_output_dir(output_dir)
    started = time.perf_counter()
    variant = get_variant(VARIANT)
    base = variant.base

    console.print(f"[bold]1/5[/] digits: {base.train_source}; {base.test_source}")
    train, test = read_digits("train"), read_digits("test")
    matrix = transition_matrix("uniform", base.num_classes)
    train = label_records(train, matrix, num_cl=NUM_CL, seed=SEED)
    provenance = {"labeler": "synthetic", "matrix": "uniform", "cls_per_image": NUM_CL, "seed": SEED}

    repo = output_dir / variant.name
    console.print(f"[bold]2/5[/] building the repository {repo}")
    build_repository(variant, train, test, repo, overwrite=True, provenance=provenance)

    console.print("[bold]3/5[/] validating")
    problems = validate_repository(repo)
    if problems:
        raise AclbuildError("quickstart built an invalid repository: " + "; ".join(problems))

    console.print("[bold]4/5[/] loading it back with datasets.load_dataset")
    from datasets import load_dataset

    loaded = load_dataset(str(repo), cache_dir=str(output_dir / HF_CACHE))
    back = loaded["train"]
    same = (
        back["names"] == [r.name for r in train]
        and back["ord_labels"] == [r.ord_label for r in train]
        and back["cl_labels"] == [list(r.cl_labels) for r in train]
        and all(np.array_equal(np.asarray(back[i]["images"]), train[i].image) for i in range(0, len(train), 97))
    )
    if not same or len(loaded["test"]) != len(test):
        raise AclbuildError("quickstart: the loaded dataset differs from what was built")
    pickle_path = export_split(repo, output_dir, overwrite=True)  # libcll reads it as root=output_dir

    console.print("[bold]5/5[/] statistics")
    stats = repository_stats(repo)["train"]
    console.print(
        f"  train {stats['num_examples']} images x {stats['cls_per_image']} CLs, noise rate "
        f"{100 * stats['noise_rate']:.2f}%, repeated CLs {100 * stats['repeated_cl_rate']:.2f}%; "
        f"test {len(loaded['test'])} images"
    )
    console.print(
        "  CL share per class: "
        + ", ".join(f"{n}:{100 * m:.1f}%" for n, m in zip(base.class_names, stats["cl_marginals"]))
    )
    console.print("[bold]benchmark[/] FWD and SCL-NL, MLP, 10 epochs (aclbuild benchmark)")
    from aclbuild.bench.benchmark import quick_benchmark

    quick_benchmark(repo, output_dir / BENCHMARK, console)
    console.print(f"\n[green]done in {time.perf_counter() - started:.1f}s[/]")
    console.print(f"  repository     {repo}  (load_dataset({str(repo)!r}))")
    console.print(f"  dataset card   {repo / 'README.md'}")
    console.print(f"  heatmap        {repo / 'figures' / 'transition_matrix.png'}")
    console.print(f"  legacy pickle  {pickle_path}")
    console.print(f"  benchmark      {output_dir / BENCHMARK / 'results.md'}")
    return {"repository": repo, "pickle": pickle_path, "stats": stats}
