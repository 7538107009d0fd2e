"""A repository split back to the legacy pickle that libcll and the original tools read.

Example:
    >>> export_pickle("out/aclcifar10", "aclcifar10.pkl")   # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path

from aclbuild.errors import InputError
from aclbuild.loaders.legacy_pickle import write_legacy_pickle
from aclbuild.progress import progress_bar
from aclbuild.repository import iter_records, read_table

FORMATS = ("pickle",)


def export_pickle(folder: str | Path, output: str | Path, split: str = "train", overwrite: bool = False) -> Path:
    """Write ``split`` of the repository ``folder`` as a legacy pickle at ``output`` (atomically)."""
    total = read_table(folder, split, columns=["ord_labels"]).num_rows
    records = []
    with progress_bar(f"decoding {split}", total) as advance:
        for record in iter_records(folder, split):
            records.append(record)
            advance()
    if split == "train" and any(r.cl_labels is None for r in records):
        raise InputError(f"split {split} of {folder} has images without complementary labels")
    return write_legacy_pickle(records, output, overwrite)
