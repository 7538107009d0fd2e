"""The `aclbuild` command line: each verb parses its options and calls one module.

Errors of the project (:mod:`aclbuild.errors`) become one line on stderr and exit 2 (bad input) or 1 (failed work).
"""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from aclbuild import __version__
from aclbuild.errors import AclbuildError, InvalidRepositoryError
from aclbuild.extras import needs_extra, require_extra
from aclbuild.progress import LogConsole, quiet_library_bars

app = typer.Typer(
    name="aclbuild",
    help="Build, publish and benchmark complementary-label image datasets labeled by vision-language models.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,  # locals may hold a Hub token
    rich_markup_mode="markdown",
)
console = LogConsole()  # in a log (not a terminal): whole lines, never wrapped at 80 columns
# `aclbuild --help` lists the verbs in the order a user runs them
VERB_ORDER = ("quickstart", "datasets", "generate", "build", "validate", "stats", "export", "push", "verify",
              "benchmark", "report")  # fmt: skip


def _print_version(value: bool) -> None:
    if value:
        print(f"aclbuild {__version__}")
        raise typer.Exit()


@app.callback()
def _main_options(
    version: Annotated[bool, typer.Option(
        "--version", callback=_print_version, is_eager=True, help="print the version and exit"
    )] = False,  # fmt: skip
) -> None:
    """Build, publish and benchmark complementary-label image datasets labeled by vision-language models."""
    quiet_library_bars()  # in a log, library tqdm bars would garble the plain progress lines


@contextlib.contextmanager
def user_errors():
    """Turn a project error into one line on stderr and its exit code."""
    try:
        yield
    except AclbuildError as exc:
        message = " ".join(str(exc).split())
        sys.stderr.write(f"error: {message}\n")
        raise typer.Exit(exc.exit_code) from None


@app.command("datasets")
def datasets_command() -> None:
    """List the bases and dataset variants. Example: `aclbuild datasets`"""
    from aclbuild.registry import VARIANTS

    table = Table(title="aclbuild dataset variants")
    for column in ("name", "pretty name", "base", "K", "image", "labels", "licence"):
        table.add_column(column)
    for v in VARIANTS.values():
        labels = {"vlm": "VLM", "vlm-r": "VLM, bias-reduced", "human": "human"}.get(v.kind, f"synthetic {v.matrix}")
        size = f"{v.base.image_size}x{v.base.image_size}"
        table.add_row(v.name, v.pretty_name, v.base.name, str(v.base.num_classes), size, labels, v.license)
    console.print(table)


@app.command("build")
def build_command(
    labels: Annotated[Path, typer.Argument(
        metavar="LABELS", help="legacy CL pickle, or label CSV (its images from --source)", show_default=False
    )],  # fmt: skip
    dataset: Annotated[str, typer.Option(
        "--dataset", "-d", metavar="NAME", help="dataset variant, e.g. aclcifar10 (list: `aclbuild datasets`)"
    )],  # fmt: skip
    output_dir: Annotated[Path, typer.Option("--output-dir", "-o", metavar="DIR", help="repository folder to write")],
    source: Annotated[Optional[Path], typer.Option(
        metavar="PATH", help="archive or folder with the base's images: the train images a label CSV names, and the "
        "test split [default: none; a pickle's train images are its own, and the test split is left out]"
    )] = None,  # fmt: skip
    test_source: Annotated[Optional[Path], typer.Option(
        metavar="PATH", help="archive or folder with the base's test images [default: --source]"
    )] = None,  # fmt: skip
    num_cl: Annotated[Optional[int], typer.Option(
        metavar="N", help="keep the first N CLs per image [default: the variant's released number, 3]"
    )] = None,  # fmt: skip
    max_shard_size: Annotated[str, typer.Option(metavar="SIZE", help="largest Parquet shard, e.g. 500MB")] = "500MB",
    download: Annotated[bool, typer.Option(help="download the base's official archive (checksum verified)")] = False,
    cache_dir: Annotated[Path, typer.Option(metavar="DIR", help="where --download keeps archives")] = Path(
        "~/.cache/aclbuild"
    ),
    overwrite: Annotated[bool, typer.Option(help="replace a non-empty output folder")] = False,
    drop_failed: Annotated[bool, typer.Option(help="drop images whose `generate` query failed (CL -1)")] = False,
    repo_id: Annotated[Optional[str], typer.Option(
        metavar="ORG/NAME", help="the Hub repository the card's usage example names [default: YOUR_ORG/DATASET, "
        "which `push` fills in]"
    )] = None,  # fmt: skip
    labels_log: Annotated[Optional[Path], typer.Option(
        metavar="FILE", help="the labels.json of the `generate` run that made LABELS, for the card [default: the "
        "labels.json beside LABELS, if any; else the card says the settings were not recorded]"
    )] = None,  # fmt: skip
    allow_kind_mismatch: Annotated[bool, typer.Option(
        help="build even when the recorded labeler contradicts the variant's kind (the card says what the labels are)"
    )] = False,  # fmt: skip
    card_author: Annotated[Optional[list[str]], typer.Option(
        metavar="NAME", help="a dataset card author (repeat for several) [default: none, the card says not given]"
    )] = None,  # fmt: skip
    contact: Annotated[Optional[str], typer.Option(
        metavar="TEXT", help="how to reach the card's authors [default: none, the card points to the Hub page]"
    )] = None,  # fmt: skip
) -> None:
    """Turn a legacy pickle or a label CSV into a Hub-ready Parquet repository with its dataset card.

    Example: `aclbuild build aclmin10.csv --dataset aclmin10 --source tiny-imagenet-200.zip -o out/aclmin10`
    """
    from aclbuild.build import build_from_source
    from aclbuild.registry import get_variant
    from aclbuild.repository import parse_size

    with user_errors():
        if download and source is None:
            from aclbuild.loaders.download import download_archive

            source = download_archive(get_variant(dataset).base, cache_dir.expanduser())
        images = source if labels.suffix.lower() == ".csv" else None  # a pickle carries its own train images
        folder = build_from_source(
            labels, dataset, output_dir, images=images, test_source=test_source or source, num_cl=num_cl,
            max_shard_size=parse_size(max_shard_size), overwrite=overwrite, drop_failed=drop_failed, repo_id=repo_id,
            labels_log=labels_log, allow_kind_mismatch=allow_kind_mismatch, card_authors=card_author or (),
            contact=contact,
        )  # fmt: skip
    console.print(f"wrote {folder}")


@app.command("validate")
def validate_command(
    folder: Annotated[Path, typer.Argument(metavar="DIR", help="repository folder", show_default=False)],
) -> None:
    """Check a repository folder: card YAML, shards, features, sizes, labels, content hash.

    Example: `aclbuild validate out/aclcifar10`
    """
    from aclbuild.validate import validate_repository

    problems = validate_repository(folder)
    for problem in problems:
        sys.stderr.write(f"{problem}\n")
    if problems:
        raise typer.Exit(InvalidRepositoryError.exit_code)
    console.print(f"{folder}: valid")


@app.command("stats")
def stats_command(
    folder: Annotated[Path, typer.Argument(metavar="DIR", help="repository folder", show_default=False)],
    as_json: Annotated[bool, typer.Option("--json", help="print JSON instead of tables")] = False,
) -> None:
    """Label statistics per split: noise rate, repeated CLs, and each class by name with its CLs and share.

    Example: `aclbuild stats out/aclcifar10 --json`
    """
    from aclbuild.repository import read_features
    from aclbuild.stats import repository_stats
    from aclbuild.stats_tables import stats_renderables

    with user_errors():
        stats = repository_stats(folder)
        class_names = read_features(folder)["ord_labels"].names
    if as_json:
        print(json.dumps(stats, indent=2))
        return
    for shown in stats_renderables(folder, stats, class_names):
        console.print(shown, markup=False, highlight=False)


@app.command("export")
def export_command(
    folder: Annotated[Path, typer.Argument(metavar="DIR", help="repository folder", show_default=False)],
    output_dir: Annotated[
        Path,
        typer.Option(
            "--output-dir", "-o", metavar="DIR", show_default=False,
            help="folder for the pickle, named as libcll reads it: aclcifar10-r gives aclcifar10r.pkl (train), "
            "aclcifar10r_test.pkl (test)",
        ),
    ],
    to: Annotated[str, typer.Option("--to", metavar="FORMAT", help="format: pickle (legacy, for libcll)")] = "pickle",
    split: Annotated[str, typer.Option(metavar="train|test", help="which split")] = "train",
    overwrite: Annotated[bool, typer.Option(help="replace an existing pickle")] = False,
) -> None:
    """Write a split back as the legacy pickle. Example: `aclbuild export out/aclcifar10 -o pickles`"""
    from aclbuild.errors import InputError
    from aclbuild.export import FORMATS, export_split

    with user_errors():
        if to not in FORMATS:
            raise InputError(f"unknown export format {to!r}; choose one of: {', '.join(FORMATS)}")
        path = export_split(folder, output_dir, split, overwrite)
    console.print(f"wrote {path}")


@app.command("quickstart")
def quickstart_command(
    output_dir: Annotated[
        Path, typer.Option("--output-dir", "-o", metavar="DIR", help="where to put everything")
    ] = Path("aclbuild-quickstart"),
) -> None:
    """The whole pipeline offline on the embedded digits set. Example: `aclbuild quickstart`"""
    from aclbuild.quickstart import run_quickstart

    with user_errors():
        require_extra("bench", "torch", "accelerate")  # the quickstart ends with a benchmark: refuse before building
        run_quickstart(output_dir, console)


@app.command("report")
def report_command(
    inputs: Annotated[
        list[Path],
        typer.Argument(
            metavar="RESULTS_OR_REPOS",
            help="benchmark outputs (folder with results.json, or the file) and repositories",
        ),
    ],
    output_dir: Annotated[
        Path, typer.Option("--output-dir", "-o", metavar="DIR", help="folder for report.md and figures/")
    ],
    overwrite: Annotated[bool, typer.Option(help="replace a non-empty output folder")] = False,
    figure_format: Annotated[
        str, typer.Option("--format", metavar="png|pdf|svg", help="file format of the figures (default: png)")
    ] = "png",
    dpi: Annotated[
        int, typer.Option(metavar="N", help="resolution of the figures in dots per inch (default: 200)")
    ] = 200,
    test_curves: Annotated[
        bool, typer.Option("--test-curves", help="also draw test accuracy against epoch (default: off)")
    ] = False,
) -> None:
    """Figures and a Markdown page: the results table, accuracy bars, heatmaps and their differences, noise and
    CL-share bars, learning curves, sweeps. A figure without signal is left out with a line saying why.

    Example: `aclbuild report runs/ out/aclmin10 out/aclmin10-r --output-dir report --format pdf`
    """
    from aclbuild.bench.report import write_report

    with user_errors():
        report = write_report(inputs, output_dir, overwrite, fmt=figure_format, dpi=dpi, test_curves=test_curves)
    console.print(f"wrote {report.path} with {len(report.figures)} figures")
    for reason in report.skipped:
        console.print(f"  skipped {reason}")


@app.command("push")
def push_command(
    folders: Annotated[list[Path], typer.Argument(
        metavar="DIR", help="repository folders that `aclbuild build` wrote", show_default=False
    )],  # fmt: skip
    repo_id: Annotated[Optional[str], typer.Option(
        metavar="ORG/NAME", help="target dataset repo (one folder) [default: none; give it or --org]"
    )] = None,  # fmt: skip
    org: Annotated[Optional[str], typer.Option(
        metavar="ORG", help="push each folder to ORG/DATASET (named in aclbuild.json) [default: none]"
    )] = None,  # fmt: skip
    private: Annotated[bool, typer.Option(help="create the repository private")] = False,
    revision: Annotated[Optional[str], typer.Option(
        metavar="BRANCH", help="branch to commit to (created when missing) [default: main]"
    )] = None,  # fmt: skip
    create_pr: Annotated[bool, typer.Option(help="open a pull request instead of committing to the branch")] = False,
    message: Annotated[Optional[str], typer.Option(
        metavar="TEXT", help="commit message [default: 'Upload FOLDER with aclbuild']"
    )] = None,  # fmt: skip
    token: Annotated[Optional[str], typer.Option(
        metavar="TOKEN", help="Hub token [default: HF_TOKEN, then the saved login]"
    )] = None,  # fmt: skip
    endpoint: Annotated[Optional[str], typer.Option(
        metavar="URL", help="Hub URL [default: HF_ENDPOINT, else https://huggingface.co]"
    )] = None,  # fmt: skip
    dry_run: Annotated[bool, typer.Option(help="list what would be added, changed and deleted; upload nothing")] = False,
) -> None:
    """Publish repository folders as dataset repos on the Hub, one atomic commit each (none when unchanged).

    The uploaded card's usage example names the repo it goes to; other configs the repo holds are kept. The folder is
    only read.

    Example: `aclbuild push out/aclcifar10 --repo-id my-org/aclcifar10` or `aclbuild push out/* --org my-org`
    """
    from aclbuild.hub import push_folder, push_report, target_repo_ids

    with user_errors():
        for folder, rid in zip(folders, target_repo_ids(folders, repo_id, org)):
            result = push_folder(
                folder, rid, token=token, endpoint=endpoint, private=private, revision=revision,
                create_pr=create_pr, message=message, dry_run=dry_run,
            )  # fmt: skip
            console.print(push_report(result, dry_run), markup=False, highlight=False, soft_wrap=True)


@app.command("verify")
def verify_command(
    repo_id: Annotated[str, typer.Argument(
        metavar="ORG/NAME", help="published dataset repo", show_default=False
    )],  # fmt: skip
    revision: Annotated[Optional[str], typer.Option(
        metavar="REVISION", help="branch, tag or commit [default: main]"
    )] = None,  # fmt: skip
    endpoint: Annotated[Optional[str], typer.Option(
        metavar="URL", help="Hub URL [default: HF_ENDPOINT, else https://huggingface.co]"
    )] = None,  # fmt: skip
    against: Annotated[Optional[Path], typer.Option(
        metavar="DIR", help="local repository folder every row must equal [default: none, no row check]"
    )] = None,  # fmt: skip
    streaming: Annotated[bool, typer.Option(help="load with streaming=True as well")] = False,
    token: Annotated[Optional[str], typer.Option(
        metavar="TOKEN", help="Hub token for a private repo [default: HF_TOKEN, then the saved login]"
    )] = None,  # fmt: skip
) -> None:
    """Load a published dataset as a downstream user would and check card, features, splits, classes and rows.

    The default config is checked; other configs the repo holds are named.

    Example: `aclbuild verify my-org/aclcifar10 --against out/aclcifar10 --streaming`
    """
    import os

    if endpoint:  # datasets and huggingface_hub read it when first imported
        os.environ["HF_ENDPOINT"] = endpoint.rstrip("/")
    from aclbuild.verify import verify_remote

    with user_errors():
        report = verify_remote(repo_id, revision=revision, against=against, streaming=streaming, token=token)
    for problem in report.problems:
        sys.stderr.write(f"{problem}\n")
    if report.problems:
        raise typer.Exit(1)
    console.print(f"{repo_id}: verified ({report.summary})", markup=False, highlight=False, soft_wrap=True)


@app.command("benchmark")
def benchmark_command(
    datasets: Annotated[list[str], typer.Argument(
        metavar="DATASET", help="repository folders or Hub ids (ORG/NAME)", show_default=False
    )],  # fmt: skip
    output_dir: Annotated[Path, typer.Option(
        "--output-dir", "-o", metavar="DIR", help="folder for runs/, results.json, results.md"
    )],  # fmt: skip
    strategy: Annotated[list[str], typer.Option(
        "--strategy", "-s", metavar="NAME", help="strategy name, or all; repeat for several: -s FWD -s SCL-NL"
    )],  # fmt: skip
    strategy_type: Annotated[Optional[list[str]], typer.Option(
        "--type", metavar="TYPE", help="libcll spelling: --strategy URE --type NN is URE-NN [default: none]"
    )] = None,  # fmt: skip
    model: Annotated[
        str, typer.Option(metavar="NAME", help="resnet34, resnet18, densenet, mlp or linear")
    ] = "resnet34",
    epochs: Annotated[int, typer.Option(metavar="N", help="training epochs per run")] = 300,
    lr: Annotated[Optional[list[float]], typer.Option(
        metavar="LR", help="learning rate (Adam, no weight decay); repeat for a grid, the best chosen by --lr-select: "
        "--lr 1e-3 --lr 1e-4 [default: 1e-4]"
    )] = None,  # fmt: skip
    batch_size: Annotated[int, typer.Option(metavar="N", help="rows per batch")] = 256,
    seed: Annotated[Optional[list[int]], typer.Option(
        metavar="N", help="training seed; repeat for several: --seed 1 --seed 2 [default: 1207, 9213, 17 and 33]"
    )] = None,  # fmt: skip
    valid_type: Annotated[str, typer.Option(metavar="NAME", help="accuracy, ure or scel")] = "accuracy",
    eval_every: Annotated[int, typer.Option(metavar="N", help="validate every N epochs")] = 10,
    num_cl: Annotated[int, typer.Option(
        metavar="N", help="use the first N CLs of each image; 0: a random number of uniform synthetic CLs per image "
        "(libcll)")] = 3,  # fmt: skip
    clean_noisy: Annotated[float, typer.Option(
        metavar="FRACTION", help="drop this fraction of the pairs whose CL is the true label")] = 0.0,  # fmt: skip
    clip_model: Annotated[Optional[str], typer.Option(
        metavar="PATH", help="CLIP checkpoint id or folder, for AN, EM, EM-PL [default: none]")] = None,  # fmt: skip
    batch_by: Annotated[str, typer.Option(
        metavar="NAME", help="image: --batch-size images with all their CLs, one view each (libcll); pair: (image, "
        "CL) pairs")] = "image",  # fmt: skip
    precision: Annotated[str, typer.Option(metavar="NAME", help="fp32 (libcll) or bf16 (autocast, GPU only)")] = "fp32",
    hidden_dim: Annotated[int, typer.Option(
        metavar="N", help="MLP hidden width (libcll trains with 256; its argparse says 500)")] = 256,  # fmt: skip
    init: Annotated[str, typer.Option(
        metavar="NAME", help="conv init: kaiming (fan_out, as libcll) or pytorch (default init)")] = "kaiming",
    valid_rule: Annotated[str, typer.Option(
        metavar="NAME", help="T of the ure/scel scores: empirical for all, or strategy (each strategy's own, as "
        "libcll)")] = "empirical",  # fmt: skip
    lr_select: Annotated[str, typer.Option(
        metavar="NAME", help="validation (best mean validation score) or reference (libcll: best TEST accuracy at "
        "--lr-seed)")] = "validation",  # fmt: skip
    lr_seed: Annotated[int, typer.Option(metavar="N", help="the seed --lr-select reference tries the grid at")] = 1126,
) -> None:
    """Train complementary-label learners on datasets; write results.json and a mean +- std table.

    Example: `aclbuild benchmark out/aclcifar10 -s FWD -s SCL-NL --model resnet18 --seed 1 --seed 2 -o bench`
    """
    with user_errors():
        with needs_extra("bench"):
            from aclbuild.bench.benchmark import REFERENCE_SEEDS, BenchmarkSpec, run_benchmark

        spec = BenchmarkSpec(
            datasets, strategy, model=model, epochs=epochs, lrs=lr or [1e-4], batch_size=batch_size,
            seeds=seed or list(REFERENCE_SEEDS), valid_type=valid_type, eval_every=eval_every, num_cl=num_cl,
            clean_noisy=clean_noisy, clip_model=clip_model, types=strategy_type or [], batch_by=batch_by,
            precision=precision, hidden_dim=hidden_dim, init=init, valid_rule=valid_rule, lr_select=lr_select,
            lr_seed=lr_seed,
        )  # fmt: skip
        run_benchmark(spec, output_dir, console)  # prints each run and the table (main process only)


@app.command("generate")
def generate_command(
    base: Annotated[str, typer.Argument(
        metavar="BASE", help="base to label: cifar10, cifar20, min10, min20, digits, mnist, fmnist, kmnist",
        show_default=False,
    )],  # fmt: skip
    output_dir: Annotated[Path, typer.Option(
        "--output-dir", "-o", metavar="DIR", help="folder for the table, pickle and log"
    )],  # fmt: skip
    source: Annotated[Optional[Path], typer.Option(
        metavar="PATH", help="the base's archive or folder (mnist, fmnist, kmnist: the folder of its four IDX files) "
        "[default: none; digits needs none, the others --source or --download]"
    )] = None,  # fmt: skip
    download: Annotated[bool, typer.Option(help="download the base's official archive (checksum verified)")] = False,
    cache_dir: Annotated[Path, typer.Option(metavar="DIR", help="where --download keeps archives")] = Path(
        "~/.cache/aclbuild"
    ),
    labeler: Annotated[str, typer.Option(
        metavar="NAME", help="llava, synthetic, or replay (answers from --answers FILE)"
    )] = "llava",  # fmt: skip
    model: Annotated[str, typer.Option(
        metavar="ORG/NAME", help="LLaVA-NeXT Hub id or local folder"
    )] = "llava-hf/llava-v1.6-mistral-7b-hf",  # fmt: skip
    mode: Annotated[str, typer.Option(
        metavar="NAME", help="cl (which label does not belong) or ord (most related)"
    )] = "cl",  # fmt: skip
    num_rounds: Annotated[int, typer.Option(metavar="N", help="queries (labels) per image")] = 3,
    bias_reduction: Annotated[bool, typer.Option("--bias-reduction", "-R", help="budgeted candidates (-R)")] = False,
    protocol: Annotated[str, typer.Option(
        metavar="NAME", help="aclbuild, or reference: every reference behaviour at once (released candidate stream "
        "and question, fp16, batch 16, -R blocks of 16, long names, unlimited retries); options given explicitly "
        "still win"
    )] = "aclbuild",  # fmt: skip
    candidates: Annotated[Optional[str], typer.Option(
        metavar="NAME", help="seeded (per image and round) or reference: the released sets' draws from numpy's "
        "global stream (cifar10, cifar20, min10, min20; -R: cifar10, min10). The order options are shown in is always "
        "aclbuild's: the reference's depended on its model's answers and retries [default: seeded; --protocol "
        "reference: reference]"
    )] = None,  # fmt: skip
    candidates_from: Annotated[Optional[Path], typer.Option(
        metavar="FILE", help="ask exactly the candidate sets of an earlier run's labels.parquet (any labeler) "
        "[default: none, draw them]"
    )] = None,  # fmt: skip
    answers: Annotated[Optional[Path], typer.Option(
        metavar="FILE", help="--labeler replay: the label file to replay (the reference tool's CSV, or a "
        "labels.parquet) [default: none]"
    )] = None,  # fmt: skip
    r_block: Annotated[Optional[int], typer.Option(
        metavar="N", help="-R: images whose draws share one budget snapshot [default: 64; --protocol reference: 16]"
    )] = None,  # fmt: skip
    long_label: Annotated[Optional[bool], typer.Option(
        "--long-label/--short-label", help="full class names in prompts [default: short; --protocol reference: long]",
        show_default=False,
    )] = None,  # fmt: skip
    batch_size: Annotated[Optional[int], typer.Option(
        metavar="N", help="images (generate: queries) per model pass [default: 8; --protocol reference: 16]"
    )] = None,  # fmt: skip
    seed: Annotated[int, typer.Option(metavar="N", help="seed of every candidate draw")] = 1126,
    matrix: Annotated[str, typer.Option(metavar="NAME", help="synthetic: uniform, weak, strong or noisy")] = "uniform",
    noise: Annotated[float, typer.Option(metavar="LAMBDA", help="synthetic noisy matrix: lambda")] = 0.1,
    prompt: Annotated[Optional[str], typer.Option(
        metavar="NAME", help="named question: default (the reference tool's) or acl-min (the older one that made "
        "ACLMIN10/ACLMIN20) [default: default]"
    )] = None,  # fmt: skip
    prompt_file: Annotated[Optional[Path], typer.Option(
        metavar="FILE", help="Jinja question template using {{ options }} [default: none, --prompt's question]"
    )] = None,  # fmt: skip
    max_new_tokens: Annotated[int, typer.Option(metavar="N", help="longest generated answer")] = 30,
    max_retries: Annotated[Optional[str], typer.Option(
        metavar="N", help="re-asks of an unparseable answer before the query fails, or 'unlimited' [default: 10; "
        "--protocol reference: unlimited]"
    )] = None,  # fmt: skip
    dtype: Annotated[Optional[str], typer.Option(
        metavar="NAME", help="bf16, fp16 or fp32 [default: bf16 on GPU, fp32 on CPU; --protocol reference: fp16]"
    )] = None,  # fmt: skip
    scoring: Annotated[Optional[str], typer.Option(
        metavar="NAME", help="generate (the reference's) or likelihood (cached prefix, faster) [default: generate]"
    )] = None,  # fmt: skip
    limit: Annotated[Optional[int], typer.Option(
        metavar="N", help="label only the first N images [default: all]"
    )] = None,  # fmt: skip
    resume: Annotated[bool, typer.Option(help="continue an interrupted run in --output-dir")] = False,
) -> None:
    """Label a base's training images with LLaVA-NeXT, a synthetic labeler, or a replayed label file: table, legacy
    pickle and log.

    Example: `aclbuild generate cifar10 --source cifar-10-python.tar.gz --scoring likelihood --output-dir labels/`
    """
    from aclbuild.labeling.runner import run_generate
    from aclbuild.labeling.settings import GenerateSettings, parse_max_retries, resolve_protocol
    from aclbuild.registry import get_base

    with user_errors():
        require_extra("label", "torch", "accelerate")  # every labeler runs under accelerate
        if download:
            from aclbuild.loaders.download import download_archive

            source = source or download_archive(get_base(base), cache_dir.expanduser())
        chosen = resolve_protocol(
            protocol, base, bias_reduction, candidates=candidates, r_block=r_block, prompt=prompt, dtype=dtype,
            max_retries=max_retries, batch_size=batch_size, long_label=long_label, scoring=scoring,
        )  # fmt: skip
        settings = GenerateSettings(
            base=base, labeler=labeler, model=model, mode=mode, num_rounds=num_rounds, bias_reduction=bias_reduction,
            long_label=chosen["long_label"], seed=seed, matrix=matrix, noise=noise, prompt=chosen["prompt"],
            prompt_file=str(prompt_file) if prompt_file else None, max_new_tokens=max_new_tokens,
            max_retries=parse_max_retries(chosen["max_retries"]), dtype=chosen["dtype"], scoring=chosen["scoring"],
            limit=limit, candidates=chosen["candidates"], r_block=chosen["r_block"], protocol=protocol,
            candidates_from=str(candidates_from) if candidates_from else None,
            answers=str(answers) if answers else None,
        )  # fmt: skip
        folder = run_generate(settings, source, output_dir, resume=resume, batch_size=chosen["batch_size"],
                              command=["aclbuild", *sys.argv[1:]])  # fmt: skip
    console.print(f"wrote {folder}", markup=False, highlight=False, soft_wrap=True)


def _order_verbs() -> None:
    """Sort the registered verbs by VERB_ORDER (typer lists them in registration order); others go last."""
    rank = {name: i for i, name in enumerate(VERB_ORDER)}
    app.registered_commands.sort(key=lambda command: rank.get(command.name or "", len(rank)))


_order_verbs()


def main() -> None:
    app(prog_name="aclbuild")


if __name__ == "__main__":
    main()
