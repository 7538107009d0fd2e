"""The labels table `aclbuild generate` writes (``labels.parquet``), read by `aclbuild build` on its own.

One row per (image, round): ``index`` (the image's position in the source), ``name``, ``round``, ``ord_label``,
``label`` (-1 for a failed query) and more (candidates, answer, retries, status). The run's settings travel inside
the file, as JSON under the Parquet schema metadata key ``aclbuild`` (``{"base", "images", "provenance"}``), so
nothing has to be found beside it. The table holds no pixels: the images come from the base's source, joined by
position (``index``) when the source's names agree, else by name (:func:`aclbuild.loaders.label_csv.match_images`).

Example:
    >>> meta = read_table_metadata("labels/labels.parquet")                                      # doctest: +SKIP
    >>> records = read_labels_table("labels/labels.parquet", base, read_digits("train"), 3)     # doctest: +SKIP
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from aclbuild.errors import SourceError
from aclbuild.loaders.label_csv import match_images
from aclbuild.loaders.legacy_pickle import FAILED_QUERY, select_cls
from aclbuild.registry import Base
from aclbuild.schema import ClRecord

METADATA_KEY = b"aclbuild"
COLUMNS = ("index", "name", "round", "ord_label", "label")


def encode_metadata(metadata: dict) -> dict[bytes, bytes]:
    """The schema metadata entry that carries ``metadata`` (JSON under :data:`METADATA_KEY`).

    Example:
        >>> encode_metadata({"base": "digits"})
        {b'aclbuild': b'{"base": "digits"}'}
    """
    return {METADATA_KEY: json.dumps(metadata, sort_keys=True).encode("utf-8")}


def read_table_metadata(path: str | Path) -> dict | None:
    """The metadata `generate` stored in the table (None when it stored none); raises when ``path`` is not a
    Parquet file or not a labels table (it lacks a column of :data:`COLUMNS`). Reads the footer only."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    try:
        schema = pq.read_schema(path)
    except (OSError, pa.ArrowException) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise SourceError(f"{path} is not a readable Parquet file ({reason}); give the labels.parquet of a generate "
                          "run") from None  # fmt: skip
    missing = [name for name in COLUMNS if name not in schema.names]
    if missing:
        raise SourceError(
            f"{path} is a Parquet file but not a labels table of `aclbuild generate` (no column {missing[0]!r}); "
            "give generate's labels.parquet, a legacy pickle or a label CSV"
        )
    raw = (schema.metadata or {}).get(METADATA_KEY)
    if raw is None:
        return None
    try:
        metadata = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        metadata = None
    if not isinstance(metadata, dict) or not isinstance(metadata.get("provenance", {}), dict):
        raise SourceError(f"{path}: its {METADATA_KEY.decode()!r} metadata is not the JSON object generate writes")
    return metadata


def table_provenance(path: str | Path) -> dict | None:
    """The labeling settings recorded in the table (None: not recorded), for the dataset card."""
    metadata = read_table_metadata(path)
    return None if metadata is None else metadata.get("provenance")


def read_labels_table(
    path: str | Path, base: Base, images: Sequence[ClRecord], num_cl: int | None, drop_failed: bool = False
) -> list[ClRecord]:
    """Training records: each image's CLs in round order, its pixels and true label from ``images`` (the source).

    A failed query (-1) is refused unless ``drop_failed``, which leaves out the images that have one; a table of
    ordinary labels, of another base, with a missing round, or whose true labels disagree with ``images`` is refused.
    """
    import pyarrow.parquet as pq

    path = Path(path)
    metadata = read_table_metadata(path) or {}
    provenance = metadata.get("provenance") or {}
    if provenance.get("mode") == "ord":
        raise SourceError(f"{path} holds ordinary labels (generate --mode ord); build takes complementary labels")
    if metadata.get("base") not in (None, base.name):
        raise SourceError(f"{path} labels base {metadata['base']}, not {base.name}; is --dataset right?")
    columns = pq.read_table(path, columns=list(COLUMNS)).to_pydict()
    index, round_, label = (np.asarray(columns[k], dtype=np.int64) for k in ("index", "round", "label"))
    if len(index) == 0:
        raise SourceError(f"{path} holds no rows")
    images_in_table, first_row, rows_of = np.unique(index, return_index=True, return_inverse=True)
    num_rounds = int(round_.max()) + 1
    cls = np.full((len(images_in_table), num_rounds), -2, dtype=np.int64)
    cls[rows_of, round_] = label
    if round_.min() < 0 or len(index) != cls.size or (cls == -2).any():
        raise SourceError(f"{path}: not every image has one row for each of rounds 0..{num_rounds - 1}")
    names = [columns["name"][i] for i in first_row]  # each image's first row gives its name and true label
    ord_labels = [columns["ord_label"][i] for i in first_row]
    failed = (cls == FAILED_QUERY).any(axis=1)
    if failed.any() and not drop_failed:
        raise SourceError(
            f"{path}: {int(failed.sum())} images carry a failed query (label -1; its status column says which); "
            "pass --drop-failed to build without those images"
        )
    keep = np.flatnonzero(~failed)
    if len(keep) == 0:
        raise SourceError(f"{path}: every image has a failed query; nothing is left to build")
    positions = _join(path, [int(images_in_table[k]) for k in keep], [names[k] for k in keep], images)
    cls = select_cls(cls[keep], num_cl, str(path))
    records = []
    for k, position, row in zip(keep, positions, cls):
        image = images[position]
        if image.ord_label != ord_labels[k]:
            raise SourceError(
                f"{path}: image {names[k]!r} is class {ord_labels[k]} in the table but {image.ord_label} in the "
                "image source; is --source the one generate labelled?"
            )
        records.append(ClRecord(names[k], image.image, image.ord_label, tuple(int(c) for c in row)))
    return records


def _join(path: Path, indices: list[int], names: list[str], images: Sequence[ClRecord]) -> list[int]:
    """Each table image's position in ``images``: its recorded index when the names there agree, else by name.

    Example:
        >>> source = [ClRecord("a.png", None, 0), ClRecord("b.png", None, 1)]
        >>> _join(Path("t"), [1], ["b.png"], source), _join(Path("t"), [0], ["b.png"], source)
        ([1], [1])
    """
    if all(0 <= i < len(images) and images[i].name == name for i, name in zip(indices, names)):
        return indices
    return match_images(names, [record.name for record in images], str(path))
