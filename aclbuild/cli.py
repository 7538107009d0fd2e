"""The `aclbuild` command line: each verb parses its options and calls one module.

Errors of the project (:mod:`aclbuild.errors`) become one line on stderr and exit 2 (bad input) or 1 (failed work).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from aclbuild import __version__
from aclbuild.cli_common import console, user_errors
from aclbuild.cli_work import benchmark_command, generate_command
from aclbuild.errors import InvalidRepositoryError
from aclbuild.extras import require_extra
from aclbuild.progress import quiet_library_bars

app = typer.Typer(
    name="aclbuild",
    help="Build, publish and benchmark complementary-label image datasets labeled by vision-language models.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,  # locals may hold a Hub token
    rich_markup_mode="markdown",
)
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
    from aclbuild.spml_card import SPML_SOURCES

    spml = Table(title="single-positive multi-label sets (build from the official files; benchmark --task spml)")
    for column in ("name", "pretty name", "source", "parts", "licence"):
        spml.add_column(column)
    for name, source in SPML_SOURCES.items():
        spml.add_row(name, source.pretty_name, source.source_name, source.parts, source.license_name or source.license)
    console.print(spml)


@app.command("build")
def build_command(
    labels: Annotated[Path, typer.Argument(
        metavar="LABELS", help="generate's labels.parquet or a label CSV (their images from --source), or a legacy "
        "CL pickle (it carries its images); for a single-positive multi-label set (voc2012-spml, coco2014-spml, "
        "nuswide-spml, cub-spml) its source: the VOC tar or folder, the COCO folder, the CUB tgz, the NUS folder",
        show_default=False
    )],  # fmt: skip
    dataset: Annotated[str, typer.Option(
        "--dataset", "-d", metavar="NAME", help="dataset variant, e.g. aclcifar10 (list: `aclbuild datasets`)"
    )],  # fmt: skip
    output_dir: Annotated[Path, typer.Option("--output-dir", "-o", metavar="DIR", help="repository folder to write")],
    source: Annotated[Optional[Path], typer.Option(
        metavar="PATH", help="archive or folder with the base's images: the train images a labels table or label "
        "CSV names, and the test split [default: none; a pickle's train images are its own, and the test split is "
        "left out; digits needs none]"
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
        metavar="FILE", help="for a legacy pickle or label CSV: the labels.json of the older `generate` run that made "
        "it, for the card (a labels.parquet carries its own) [default: none; the card says the settings were not "
        "recorded]"
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
    license: Annotated[Optional[str], typer.Option(
        metavar="NAME", help="labels of your own dataset (generate NAME --source ...): the licence for the card, a Hub "
        "licence id such as cc-by-4.0 [default: the source card's, else unknown]"
    )] = None,  # fmt: skip
) -> None:
    """Turn generate's labels.parquet, a label CSV or a legacy pickle into a Hub-ready Parquet repository with its
    dataset card.

    Example: `aclbuild build labels/labels.parquet --dataset aclmin10 --source tiny-imagenet-200.zip -o out/aclmin10`
    """
    from aclbuild.builder import build_from_source
    from aclbuild.registry import get_variant
    from aclbuild.repository import parse_size
    from aclbuild.spml_build import build_spml_command, is_spml_dataset

    # a single-positive multi-label set (an unknown *-spml name is named among them): LABELS is its source
    if is_spml_dataset(dataset) or dataset.lower().endswith("-spml"):
        with user_errors():
            folder = build_spml_command(labels, dataset, output_dir, repo_id, parse_size(max_shard_size), overwrite, {
                "--source": source, "--test-source": test_source, "--num-cl": num_cl, "--download": download,
                "--drop-failed": drop_failed, "--labels-log": labels_log, "--allow-kind-mismatch": allow_kind_mismatch,
                "--card-author": card_author, "--contact": contact, "--license": license,
            })  # fmt: skip
        console.print(f"wrote {folder}")
        return
    with user_errors():
        if download and source is None:
            from aclbuild.loaders.download import download_archive

            source = download_archive(get_variant(dataset).base, cache_dir.expanduser())
        folder = build_from_source(
            labels, dataset, output_dir, source=source, test_source=test_source, num_cl=num_cl,
            max_shard_size=parse_size(max_shard_size), overwrite=overwrite, drop_failed=drop_failed, repo_id=repo_id,
            labels_log=labels_log, allow_kind_mismatch=allow_kind_mismatch, card_authors=card_author or (),
            contact=contact, license=license,
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
    from aclbuild.repository import is_spml_columns, read_features
    from aclbuild.stats import checked_repository_stats
    from aclbuild.stats_tables import stats_renderables

    with user_errors():
        stats = checked_repository_stats(folder)
        features = read_features(folder)
    if as_json:
        print(json.dumps(stats, indent=2))
        return
    if is_spml_columns(features):  # a single-positive multi-label set
        from aclbuild.spml_stats import spml_stats_lines

        print("\n".join(spml_stats_lines(stats, features["observed_label"].names)))
        return
    class_names = features["ord_labels"].names
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
    from aclbuild.pickle_export import FORMATS, export_split

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
    from aclbuild.verification import verify_remote

    with user_errors():
        report = verify_remote(repo_id, revision=revision, against=against, streaming=streaming, token=token)
    for problem in report.problems:
        sys.stderr.write(f"{problem}\n")
    if report.problems:
        raise typer.Exit(1)
    console.print(f"{repo_id}: verified ({report.summary})", markup=False, highlight=False, soft_wrap=True)


# the two verbs with the most options live in their own module
app.command("generate")(generate_command)
app.command("benchmark")(benchmark_command)


def _order_verbs() -> None:
    """Sort the registered verbs by VERB_ORDER (typer lists them in registration order); others go last."""
    rank = {name: i for i, name in enumerate(VERB_ORDER)}
    app.registered_commands.sort(key=lambda command: rank.get(command.name or "", len(rank)))


_order_verbs()


def main() -> None:
    app(prog_name="aclbuild")


if __name__ == "__main__":
    main()
