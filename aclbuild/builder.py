"""Records in, a complete Hub dataset repository folder out: Parquet shards, card, figures, manifest.

Example:
    >>> from aclbuild.builder import build_from_source
    >>> build_from_source("aclmin10.pkl", "aclmin10", "out/aclmin10", test_source="tiny-imagenet-200.zip")  # doctest: +SKIP
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from aclbuild import __version__
from aclbuild.card_facts import check_label_kind
from aclbuild.bench.heatmaps import save_transition_heatmap
from aclbuild.cards import HEATMAP_PATH, render_card
from aclbuild.errors import InputError, OutputExistsError, SourceError
from aclbuild.paths import check_output, staged_output
from aclbuild.registry import Base, Variant, get_variant
from aclbuild.repository import Manifest, shards_size, write_manifest, write_split
from aclbuild.schema import ClRecord, arrow_schema
from aclbuild.stats import label_stats

DEFAULT_MAX_SHARD_SIZE = 500 * 10**6


def check_records(
    records: Sequence[ClRecord], base: Base, split: str, need_cls: bool
) -> tuple[np.ndarray, np.ndarray | None]:
    """Raise on labels the repository must not hold: labels out of range, a varying number of CLs, and a repeated
    training name where the base's source names every image once (``base.unique_names``); return the labels
    (ord_labels, and the N x m cl_labels when ``need_cls``) for the statistics.

    One pass over names and labels: no image is read, so a lazy source decodes each image once, when
    :func:`aclbuild.repository.write_split` encodes it (it checks each image's shape there). Rows are told apart by
    position, and ``names`` holds the source's file names as they are, so the train split of cifar20 keeps
    CIFAR-100's two ``baby_s_000333.png``. The test split is always read from the base's own source, whose names are
    not ours to refuse.

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
    seen: set[str] | None = set() if split == "train" and base.unique_names else None
    dup, out_of_range, ord_labels, cl_labels, widths = None, None, [], [], set()
    for r in records:
        if seen is not None and dup is None and (r.name in seen or seen.add(r.name)):
            dup = r.name
        labels = (r.ord_label, *(r.cl_labels or ()))
        if out_of_range is None and (min(labels) < 0 or max(labels) >= base.num_classes):
            out_of_range = f"{split}: labels of {r.name!r} ({labels}) lie outside 0..{base.num_classes - 1}"
        ord_labels.append(r.ord_label)
        cl_labels.append(r.cl_labels)
        widths.add(None if r.cl_labels is None else len(r.cl_labels))
    if dup is not None:
        raise SourceError(
            f"{split}: name {dup!r} appears more than once; base {base.name} names each image once, so an image "
            "went in twice"
        )
    if need_cls and (None in widths or len(widths) != 1):
        raise SourceError(f"{split}: every image needs the same number of complementary labels")
    if out_of_range is not None:
        raise SourceError(out_of_range)
    return np.array(ord_labels, dtype=np.int64), np.array(cl_labels, dtype=np.int64) if need_cls else None


class RecordView(Sequence):
    """``records`` seen through ``change``, applied when a record is read: nothing is copied, so a lazy source stays
    lazy (slices are views too).

    Example:
        >>> view = RecordView(range(3), lambda i: ClRecord(f"r{i}", None, i))
        >>> len(view), view[2].name, [r.ord_label for r in view[1:]]
        (3, 'r2', [1, 2])
    """

    def __init__(self, records: Sequence, change: Callable[[object], ClRecord]) -> None:
        self.records, self.change = records, change

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return RecordView(self.records[i], self.change)
        return self.change(self.records[i])


def relabelled(record: ClRecord, name: str, ord_label: int, cl_labels: tuple[int, ...] | None) -> ClRecord:
    """``record``'s image with other labels; the image is read only when the new record's is."""
    from aclbuild.loaders.hf_source import LazyRecord

    return LazyRecord(name, None, ord_label, cl_labels, load=lambda: record.image)


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
    check_max_shard_size(max_shard_size)
    ord_labels, cl_labels = check_records(train, base, "train", need_cls=True)
    if test:
        check_records(test, base, "test", need_cls=False)
        if any(r.cl_labels is not None for r in test):  # a test split holds true labels only
            test = RecordView(test, lambda r: relabelled(r, r.name, r.ord_label, None))
    num_cl = cl_labels.shape[1]
    schema = arrow_schema(base.class_names, num_cl)
    train_stats = label_stats(ord_labels, cl_labels, base.num_classes)
    shape = (base.image_size, base.image_size, 3)  # write_split checks every image as it encodes it
    needed = (len(train) + len(test or ())) * int(np.prod(shape))  # the pixels; PNG rarely takes more
    with staged_output(output, overwrite, needed=needed) as staged, ThreadPoolExecutor(1) as background:
        # The figure is drawn while the shards are written: matplotlib holds the GIL, the encoder's deflate does not.
        heatmap = background.submit(
            save_transition_heatmap, np.array(train_stats["transition_matrix"]), base.class_names,
            f"{variant.pretty_name}: P(CL | true label)", staged / HEATMAP_PATH,
        )  # fmt: skip
        splits = [write_split(staged, "train", train, schema, max_shard_size, shape)]
        if test:
            splits.append(write_split(staged, "test", test, schema, max_shard_size, shape))
        heatmap.result()
        download_size = shards_size(staged)
        card = render_card(
            variant, num_cl, splits, train_stats, provenance, repo_id, download_size, card_authors, contact
        )
        (staged / "README.md").write_text(str(card), encoding="utf-8")
        by_name = {s.name: s for s in splits}
        write_manifest(staged, Manifest(variant.name, repo_id, by_name, provenance or {}, f"aclbuild {__version__}"))
    return Path(output)


def load_source(
    source: str | Path, base: Base, num_cl: int | None, images: str | Path | None, drop_failed: bool = False
) -> Sequence[ClRecord]:
    """Training records from generate's labels table (``.parquet``) or a label CSV, each joined with ``images`` (by
    position when it follows the source's order, else by file name: :func:`aclbuild.loaders.label_csv.match_images`),
    or from a legacy pickle, which carries its own images. A lazy source stays lazy: its images are decoded when
    the records are read (once, by write_split)."""
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
    if kind in ("csv", "table"):
        rows = read_label_csv(source, base) if kind == "csv" else None  # a bad CSV is refused before images are read
        pixels = read_source_images(base, images, "train")
        names = _without_pixels(pixels)  # the labels are joined with names and labels only
        if rows is not None:
            labelled = attach_labels(rows, names, num_cl, str(source))
        else:
            labelled = read_labels_table(source, base, names, num_cl, drop_failed)
        return labelled if names is pixels else _with_pixels(labelled, pixels, str(source))
    if images is not None:
        raise InputError("images go with a label CSV or labels table; a legacy pickle carries its own images")
    return read_legacy_pickle(source, base, num_cl, drop_failed)


def _without_pixels(records: Sequence[ClRecord]) -> Sequence[ClRecord]:
    """A lazy source (:class:`aclbuild.loaders.hf_source.LazyRecords`) as names and labels only, so that joining
    labels with it decodes nothing; any other source as it is (its pixels are in memory already)."""
    from aclbuild.loaders.hf_source import LazyRecords

    if not isinstance(records, LazyRecords):
        return records
    return LazyRecords(records.table, records.image_column, records.labels, records.side, records.prefix,
                       records.positions, pixels=False)  # fmt: skip


def _with_pixels(labelled: Sequence[ClRecord], pixels: Sequence[ClRecord], source: str) -> RecordView:
    """``labelled`` (records joined with :func:`_without_pixels`) with their images from ``pixels``, read when a
    record is: found by name, which a lazy source gives each image once."""
    from aclbuild.loaders.images import record_names
    from aclbuild.loaders.label_csv import match_images

    positions = match_images([r.name for r in labelled], record_names(pixels), source)
    return RecordView(range(len(labelled)), lambda k: relabelled(
        pixels[positions[k]], labelled[k].name, labelled[k].ord_label, labelled[k].cl_labels))  # fmt: skip


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
    check_output(output_dir, {"LABELS": labels, "--source": source, "--test-source": test_source,
                              "--labels-log": labels_log})  # fmt: skip
    check_max_shard_size(max_shard_size)
    if output_dir.exists() and any(output_dir.iterdir()) and not overwrite:  # refused before any image is read
        raise OutputExistsError(f"{output_dir} already exists and is not empty; pass --overwrite to replace it")
    train_images = source if _labels_kind(labels) != "pickle" else None  # a pickle carries its own images
    train = load_source(labels, base, num_cl, train_images, drop_failed)
    if num_cl is None and len(train[0].cl_labels or ()) > variant.num_cl:
        train = RecordView(train, lambda r: relabelled(r, r.name, r.ord_label, r.cl_labels[: variant.num_cl]))
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


def check_max_shard_size(max_shard_size: int) -> None:
    """Refuse a shard size below one byte (each shard holds at least one row, so any positive size works).

    Example:
        >>> check_max_shard_size(0)
        Traceback (most recent call last):
        aclbuild.errors.InputError: --max-shard-size must be more than 0 bytes, got 0; give a size like 500MB
    """
    if max_shard_size < 1:
        raise InputError(f"--max-shard-size must be more than 0 bytes, got {max_shard_size}; give a size like 500MB")
