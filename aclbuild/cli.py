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
from rich.console import Console
from rich.table import Table

from aclbuild.errors import AclbuildError, InvalidRepositoryError

app = typer.Typer(
    name="aclbuild",
    help="Build, publish and benchmark complementary-label image datasets labeled by vision-language models.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,  # locals may hold a Hub token
    rich_markup_mode="markdown",
)
console = Console()


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
    source: Annotated[Path, typer.Argument(help="legacy CL pickle, or label CSV (with --images)")],
    dataset: Annotated[str, typer.Option("--dataset", "-d", help="dataset variant, e.g. aclcifar10")],
    output: Annotated[Path, typer.Option("--output", "-o", help="repository folder to write")],
    test_source: Annotated[Optional[Path], typer.Option(help="archive or folder with the base's test images")] = None,
    num_cl: Annotated[Optional[int], typer.Option(help="keep the first N CLs per image (default 3)")] = None,
    images: Annotated[Optional[Path], typer.Option(help="archive or folder with the images a label CSV names")] = None,
    max_shard_size: Annotated[str, typer.Option(help="largest Parquet shard, e.g. 500MB")] = "500MB",
    download: Annotated[bool, typer.Option(help="download the base's official archive (checksum verified)")] = False,
    cache_dir: Annotated[Path, typer.Option(help="where --download keeps archives")] = Path("~/.cache/aclbuild"),
    overwrite: Annotated[bool, typer.Option(help="replace a non-empty output folder")] = False,
) -> None:
    """Turn a legacy pickle or a label CSV into a Hub-ready Parquet repository with its dataset card.

    Example: `aclbuild build aclmin10.csv --dataset aclmin10 --images tiny-imagenet-200.zip --output out/aclmin10`
    """
    from aclbuild.build import build_from_source
    from aclbuild.registry import get_variant
    from aclbuild.repository import parse_size

    with user_errors():
        if download:
            from aclbuild.loaders.download import download_archive

            archive = download_archive(get_variant(dataset).base, cache_dir.expanduser())
            images = images or (archive if source.suffix.lower() == ".csv" else None)
            test_source = test_source or archive
        folder = build_from_source(
            source, dataset, output, images=images, test_source=test_source, num_cl=num_cl,
            max_shard_size=parse_size(max_shard_size), overwrite=overwrite,
        )  # fmt: skip
    console.print(f"wrote {folder}")


@app.command("validate")
def validate_command(folder: Annotated[Path, typer.Argument(help="repository folder")]) -> None:
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
    folder: Annotated[Path, typer.Argument(help="repository folder")],
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Label statistics per split: noise rate, CL marginals, transition matrix, repeated CLs.

    Example: `aclbuild stats out/aclcifar10 --json`
    """
    from aclbuild.stats import repository_stats

    with user_errors():
        stats = repository_stats(folder)
    if as_json:
        print(json.dumps(stats, indent=2))
        return
    for split, s in stats.items():
        table = Table(title=f"{folder} [{split}]", show_header=False)
        table.add_row("images", f"{s['num_examples']:,}")
        table.add_row("classes", str(s["num_classes"]))
        table.add_row("CLs per image", str(s["cls_per_image"]))
        if s["cls_per_image"]:
            table.add_row("noise rate", f"{100 * s['noise_rate']:.2f}% ({s['noisy_pairs']} pairs)")
            table.add_row("images with a repeated CL", f"{100 * s['repeated_cl_rate']:.2f}%")
            table.add_row("CL share per class", " ".join(f"{100 * m:.1f}%" for m in s["cl_marginals"]))
        console.print(table)


@app.command("export")
def export_command(
    folder: Annotated[Path, typer.Argument(help="repository folder")],
    output: Annotated[Path, typer.Option("--output", "-o", help="file to write")],
    to: Annotated[str, typer.Option("--to", help="format: pickle (legacy, for libcll)")] = "pickle",
    split: Annotated[str, typer.Option(help="which split")] = "train",
    overwrite: Annotated[bool, typer.Option(help="replace an existing file")] = False,
) -> None:
    """Write a split back as the legacy pickle. Example: `aclbuild export out/aclcifar10 --to pickle -o a.pkl`"""
    from aclbuild.errors import InputError
    from aclbuild.export import FORMATS, export_pickle

    with user_errors():
        if to not in FORMATS:
            raise InputError(f"unknown export format {to!r}; choose one of: {', '.join(FORMATS)}")
        path = export_pickle(folder, output, split, overwrite)
    console.print(f"wrote {path}")


@app.command("quickstart")
def quickstart_command(
    output_dir: Annotated[Path, typer.Option(help="where to put everything")] = Path("aclbuild-quickstart"),
) -> None:
    """The whole pipeline offline on the embedded digits set. Example: `aclbuild quickstart`"""
    from aclbuild.quickstart import run_quickstart

    with user_errors():
        run_quickstart(output_dir, console)


def main() -> None:
    app(prog_name="aclbuild")


if __name__ == "__main__":
    main()
