"""Records in, a complete Hub dataset repository folder out: Parquet shards, card, figures, manifest.

Example:
    >>> from aclbuild.builder import build_from_source
    >>> build_from_source("aclmin10.pkl", "aclmin10", "out/aclmin10", test_source="tiny-imagenet-200.zip")  # doctest: +SKIP
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path

import numpy as np

from aclbuild import __version__
from aclbuild.card_facts import check_label_kind
from aclbuild.bench.heatmaps import save_transition_heatmap
from aclbuild.cards import HEATMAP_PATH, render_card
from aclbuild.errors import InputError, OutputExistsError, SourceError
from aclbuild.registry import Base, Variant, get_variant
from aclbuild.repository import staged_output, write_split
from aclbuild.schema import ClRecord, arrow_schema
from aclbuild.stats import label_stats

MANIFEST = "aclbuild.json"
DEFAULT_MAX_SHARD_SIZE = 500 * 10**6


def check_records(records: Sequence[ClRecord], base: Base, split: str, need_cls: bool) -> None:
    """Raise on anything the repository must not hold: bad shapes, labels out of range, and a repeated training name
    where the base's source names every image once (``base.unique_names``).

    Rows are told apart by position, and ``names`` holds the source's file names as they are, so the train split of
    cifar20 keeps CIFAR-100's two ``baby_s_000333.png``. The test split is always read from the base's own source,
    whose names are not ours to refuse.

    Example:
        >>> from aclbuild.registry import get_base
        >>> image = np.zeros((8, 8, 3), np.uint8)
        >>> check_records([ClRecord("a.png", image, 1, (2,)), ClRecord("a.png", image, 3, (4,))],
        ...               get_base("digits"), "train", need_cls=True)
        Traceback (most recent call last):
        aclbuild.errors.SourceError: train: name 'a.png' appears more than once; base digits names each image once, so an image went in twice
    """
    if not records:
        raise SourceError(f"the {split} split is empty")
    if split == "train" and base.unique_names:
        seen: set[str] = set()
        dup = next((r.name for r in records if r.name in seen or seen.add(r.name)), None)
        if dup is not None:
            raise SourceError(
                f"{split}: name {dup!r} appears more than once; base {base.name} names each image once, so an image "
                "went in twice"
            )
    shape = (base.image_size, base.image_size, 3)
    widths = {len(r.cl_labels) if r.cl_labels is not None else None for r in records}
    if need_cls and (None in widths or len(widths) != 1):
        raise SourceError(f"{split}: every image needs the same number of complementary labels")
    for r in records:
        if r.image.shape != shape or r.image.dtype != np.uint8:
            raise SourceError(f"{split}: image {r.name!r} is {r.image.dtype} {r.image.shape}, expected uint8 {shape}")
        labels = (r.ord_label, *(r.cl_labels or ()))
        if min(labels) < 0 or max(labels) >= base.num_classes:
            raise SourceError(f"{split}: labels of {r.name!r} ({labels}) lie outside 0..{base.num_classes - 1}")


def build_repository(
    variant: Variant,
    train: Sequence[ClRecord],
    test: Sequence[ClRecord] | None,
    output: str | Path,
    overwrite: bool = False,
    max_shard_size: int = DEFAULT_MAX_SHARD_SIZE,
    provenance: dict | None = None,
    repo_id: str | None = None,
    allow_kind_mismatch: bool = False,
    card_authors: Sequence[str] = (),
    contact: str | None = None,
) -> Path:
    """Write a repository folder from train (with CLs) and optional test (true labels only) records.

    ``provenance`` (what `aclbuild generate` recorded) decides what the card says about the labels; one whose labeler
    contradicts ``variant``'s kind is refused unless ``allow_kind_mismatch``. ``repo_id``, ``card_authors`` and
    ``contact`` go into the card. The folder is written beside ``output`` under a temporary name and renamed into
    place at the end, so a failed or interrupted build leaves nothing behind.
    """
    base = variant.base
    check_label_kind(variant, provenance, allow_kind_mismatch)
    check_repo_id(repo_id)
    check_records(train, base, "train", need_cls=True)
    if test:
        check_records(test, base, "test", need_cls=False)
        test = [r if r.cl_labels is None else ClRecord(r.name, r.image, r.ord_label) for r in test]
    num_cl = len(train[0].cl_labels or ())
    schema = arrow_schema(base.class_names, num_cl)
    train_stats = label_stats(
        np.array([r.ord_label for r in train]), np.array([r.cl_labels for r in train]), base.num_classes
    )
    with staged_output(output, overwrite) as staged, ThreadPoolExecutor(1) as background:
        # The figure is drawn while the shards are written: matplotlib holds the GIL, the encoder's deflate does not.
        heatmap = background.submit(
            save_transition_heatmap, np.array(train_stats["transition_matrix"]), base.class_names,
            f"{variant.pretty_name}: P(CL | true label)", staged / HEATMAP_PATH,
        )  # fmt: skip
        splits = [write_split(staged, "train", train, schema, max_shard_size)]
        if test:
            splits.append(write_split(staged, "test", test, schema, max_shard_size))
        heatmap.result()
        download_size = sum(path.stat().st_size for path in (staged / "data").glob("*.parquet"))
        card = render_card(
            variant, num_cl, splits, train_stats, provenance, repo_id, download_size, card_authors, contact
        )
        (staged / "README.md").write_text(str(card), encoding="utf-8")
        manifest = {
            "dataset": variant.name,
            "built_with": f"aclbuild {__version__}",
            "repo_id": repo_id,
            "splits": {s.name: asdict(s) for s in splits},
            "provenance": provenance or {},
        }
        (staged / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return Path(output)


def load_source(
    source: str | Path, base: Base, num_cl: int | None, images: str | Path | None, drop_failed: bool = False
) -> list[ClRecord]:
    """Training records from generate's labels table (``.parquet``) or a label CSV, each joined with ``images`` (by
    position when it follows the source's order, else by file name: :func:`aclbuild.loaders.label_csv.match_images`),
    or from a legacy pickle, which carries its own images."""
    from aclbuild.loaders.images import read_source_images
    from aclbuild.loaders.label_csv import attach_labels, read_label_csv
    from aclbuild.loaders.labels_table import read_labels_table
    from aclbuild.loaders.legacy_pickle import read_legacy_pickle

    source = Path(source)
    if not source.exists():
        raise SourceError(f"{source} does not exist")
    kind = _labels_kind(source)
    if kind != "pickle" and images is None and base.archive is not None:
        what = "a label CSV" if kind == "csv" else "generate's labels table, which holds no pixels"
        raise InputError(f"{source} is {what}: pass --source with the {base.archive.filename} it labels")
    if kind == "csv":
        rows = read_label_csv(source, base)
        return attach_labels(rows, read_source_images(base, images, "train"), num_cl, str(source))
    if kind == "table":
        return read_labels_table(source, base, read_source_images(base, images, "train"), num_cl, drop_failed)
    if images is not None:
        raise InputError("images go with a label CSV or labels table; a legacy pickle carries its own images")
    return read_legacy_pickle(source, base, num_cl, drop_failed)


def _labels_kind(labels: str | Path) -> str:
    """``table`` (generate's labels.parquet), ``csv`` (a label CSV) or ``pickle``, by the file's suffix.

    Example:
        >>> _labels_kind("labels/labels.parquet"), _labels_kind("aclmin10.CSV"), _labels_kind("aclcifar10.pkl")
        ('table', 'csv', 'pickle')
    """
    suffix = Path(labels).suffix.lower()
    return {".parquet": "table", ".csv": "csv"}.get(suffix, "pickle")


def build_from_source(
    labels: str | Path,
    dataset: str,
    output_dir: str | Path,
    source: str | Path | None = None,
    test_source: str | Path | None = None,
    num_cl: int | None = None,
    max_shard_size: int = DEFAULT_MAX_SHARD_SIZE,
    overwrite: bool = False,
    provenance: dict | None = None,
    drop_failed: bool = False,
    repo_id: str | None = None,
    allow_kind_mismatch: bool = False,
    card_authors: Sequence[str] = (),
    contact: str | None = None,
    labels_log: str | Path | None = None,
    license: str | None = None,
) -> Path:
    """What `aclbuild build` does: read the labels, add the test split when its images are at hand, write.

    ``labels`` is `generate`'s ``labels.parquet`` or a label CSV, whose train images come from ``source`` (the
    base's archive or folder), or a legacy pickle (it carries its train images); the test split comes from
    ``test_source``, else ``source``.

    Without ``num_cl`` the variant's released number of CLs (3) is kept, or all when the source holds fewer. The
    labels' provenance is ``provenance``, else the one recorded in the labels table's metadata, else (for a pickle or
    CSV) that of ``labels_log`` (an older `generate` run's ``labels.json``); nothing is looked for beside ``labels``.
    The variant must agree with it (see :func:`build_repository`). Labels of a custom source (`generate NAME
    --source ORG/NAME_OR_FOLDER`) build as a variant of their own base (acl<name>, acl<name>-r, <name>-<matrix>);
    ``license`` then replaces the licence carried over from the source.
    """
    from aclbuild.loaders.images import read_source_images

    from aclbuild.loaders.images import source_variant

    check_repo_id(repo_id)
    if provenance is None:
        provenance = _recorded_provenance(Path(labels), labels_log)
    # labels of a custom source (generate NAME --source ORG/NAME_OR_FOLDER) make a variant of their own base
    variant = source_variant(dataset, provenance, source, license) or get_variant(dataset)
    if license is not None and variant.license != license:
        raise InputError(f"--license is for labels of your own dataset; {variant.name}'s licence is {variant.license}")
    base = variant.base
    check_label_kind(variant, provenance, allow_kind_mismatch)  # before the images are read
    output_dir = Path(output_dir)
    if output_dir.exists() and output_dir.is_dir() and any(output_dir.iterdir()) and not overwrite:
        raise OutputExistsError(f"{output_dir} already exists and is not empty; pass --overwrite to replace it")
    train_images = source if _labels_kind(labels) != "pickle" else None  # a pickle carries its own images
    train = load_source(labels, base, num_cl, train_images, drop_failed)
    if num_cl is None and len(train[0].cl_labels or ()) > variant.num_cl:
        train = [ClRecord(r.name, r.image, r.ord_label, r.cl_labels[: variant.num_cl]) for r in train]
    test_path = test_source or source
    test = read_source_images(base, test_path, "test") if (test_path or base.archive is None) else None
    return build_repository(
        variant, train, test, output_dir, overwrite, max_shard_size, provenance, repo_id, allow_kind_mismatch,
        card_authors, contact,
    )  # fmt: skip


def _recorded_provenance(labels: Path, labels_log: str | Path | None) -> dict | None:
    """The labeling settings: a labels table's own (``--labels-log`` is then refused: it could only contradict
    them), else those of ``labels_log``; None when not recorded."""
    from aclbuild.loaders.labels_table import table_provenance

    if _labels_kind(labels) == "table":
        if labels_log is not None:
            raise InputError(
                f"--labels-log is for a legacy pickle or label CSV; {labels} carries its own provenance: drop it"
            )
        return table_provenance(labels) if labels.exists() else None
    return read_provenance(labels_log) if labels_log else None


def read_provenance(labels_log: str | Path) -> dict:
    """The ``provenance`` dict of a `generate` run's ``labels.json`` (given with ``--labels-log`` for a legacy
    pickle or label CSV); raises when the file is missing, unreadable or records none."""
    path = Path(labels_log)
    try:
        log = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(f"--labels-log {path}: not a readable labels.json ({exc}); give generate's own") from None
    if not isinstance(log, dict) or not isinstance(log.get("provenance"), dict):
        raise InputError(f"--labels-log {path} records no 'provenance'; give the labels.json of a generate run")
    return log["provenance"]


def check_repo_id(repo_id: str | None) -> None:
    """Refuse a repo id that is not ORG/NAME (None is fine: the card then says YOUR_ORG/<variant name>).

    Example:
        >>> check_repo_id("aclorg/aclcifar10")
        >>> check_repo_id("aclcifar10")
        Traceback (most recent call last):
        aclbuild.errors.InputError: --repo-id 'aclcifar10' is not ORG/NAME; give the Hub repository the set goes to, e.g. aclorg/aclcifar10
    """
    if repo_id is None:
        return
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(repo_id)
        valid = repo_id.count("/") == 1
    except HFValidationError:
        valid = False
    if not valid:
        raise InputError(
            f"--repo-id {repo_id!r} is not ORG/NAME; give the Hub repository the set goes to, e.g. aclorg/aclcifar10"
        )
