"""A repository split back to the legacy pickle that libcll and the original tools read.

``export_split`` names the file as libcll looks for it: libcll's ACL datasets read ``{root}/aclcifar10.pkl``, so
the train split of ``aclcifar10-r`` becomes ``aclcifar10r.pkl`` and its test split ``aclcifar10r_test.pkl``.

Example:
    >>> pickle_name("aclcifar10-r"), pickle_name("aclcifar10-r", "test")
    ('aclcifar10r.pkl', 'aclcifar10r_test.pkl')
"""

from __future__ import annotations

from pathlib import Path

from aclbuild.errors import InputError, OutputExistsError, SourceError
from aclbuild.paths import check_output
from aclbuild.loaders.legacy_pickle import write_legacy_pickle
from aclbuild.progress import progress_bar
from aclbuild.repository import SPLITS, is_spml_repository, iter_records, read_manifest, read_table

FORMATS = ("pickle",)


def pickle_name(variant: str, split: str = "train") -> str:
    """libcll's file name of a variant's split: the name without dashes, ``_test`` for the test split."""
    stem = variant.replace("-", "")
    return f"{stem}.pkl" if split == "train" else f"{stem}_{split}.pkl"


def variant_name(folder: str | Path) -> str:
    """The dataset variant a repository folder was built as (its ``aclbuild.json``), else the folder's name."""
    try:
        name = read_manifest(folder).dataset
    except SourceError:  # no manifest, or a broken one: the folder's name stands in
        name = None
    return name or Path(folder).resolve().name


def export_split(folder: str | Path, output_dir: str | Path, split: str = "train", overwrite: bool = False) -> Path:
    """Write ``split`` of the repository ``folder`` as ``output_dir/<libcll's name>`` (:func:`pickle_name`).

    ``output_dir`` is always a folder (made when missing; an existing one, empty or not, keeps what it holds).
    Raises InputError for an unknown split, a pickle inside ``folder`` (the output must not change the input), an
    ``output_dir`` that is a file or lies where the user cannot write (:func:`aclbuild.paths.check_output`), and
    OutputExistsError when the pickle exists and ``overwrite`` is false.
    """
    folder, output_dir = Path(folder), Path(output_dir)
    if is_spml_repository(folder):
        raise InputError(f"{folder} is a single-positive multi-label repository; export writes libcll's CL pickle, "
                         "which has no multi-label form: load it with datasets.load_dataset or aclbuild benchmark "
                         "--task spml instead")  # fmt: skip
    if split not in SPLITS:
        raise InputError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    check_output(output_dir)  # a folder (or none yet) that the user can write in
    output = output_dir / pickle_name(variant_name(folder), split)
    check_output(output, {"the repository": folder}, kind="file")  # may lie beside, not in it
    if output.exists() and not overwrite:
        raise OutputExistsError(f"{output} already exists; pass --overwrite to replace it")
    return export_pickle(folder, output, split, overwrite)


def export_pickle(folder: str | Path, output: str | Path, split: str = "train", overwrite: bool = False) -> Path:
    """Write ``split`` of the repository ``folder`` as a legacy pickle at ``output`` (atomically).

    The test split has no complementary labels: its rows get an empty ``cl_labels`` list.
    """
    total = read_table(folder, split, columns=["ord_labels"]).num_rows
    records = []
    with progress_bar(f"decoding {split}", total) as advance:
        for record in iter_records(folder, split):
            records.append(record)
            advance()
    if split == "train" and any(r.cl_labels is None for r in records):
        raise InputError(f"split {split} of {folder} has images without complementary labels")
    return write_legacy_pickle(records, output, overwrite)
