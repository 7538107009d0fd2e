"""Any image-classification dataset as a base: a Hub dataset id (ORG/NAME) or a local folder ``datasets`` reads
(Parquet/Arrow files, or an image folder with one sub-folder per class).

The split stays in ``datasets``' memory-mapped Arrow cache; an image is decoded only when a record is asked for
(:class:`LazyRecords`), so a source larger than RAM works. Image size policy: the first image of the split sets the
side (its larger dimension); every image is converted to RGB and, when not already side x side, resized to it
(bicubic, aspect ratio not kept), so the repository holds one size.

Example:
    >>> read_class_names_text("butterfly\\tsulphur butterfly\\nbackpack\\n")
    (('butterfly', 'backpack'), ('sulphur butterfly', 'backpack'))
"""

from __future__ import annotations


import io
import json
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache, partial
from pathlib import Path, PurePath

import numpy as np

from aclbuild.errors import InputError, SourceError, UnknownNameError
from aclbuild.registry import BASES, SYNTHETIC_MATRICES, Base, CustomBase, Variant
from aclbuild.schema import ClRecord, LazyImage

DECODE_CACHE = 256  # recently decoded images kept, so a batch that reads a record several times decodes it once
DECODE_CACHE_BYTES = 64 << 20  # ... and at most this many bytes of them (large images: fewer)


@dataclass(frozen=True)
class SourceSpec:
    """Where a custom base's images come from and which columns hold image and label."""

    source: str  # Hub id ORG/NAME or a local folder
    split: str = "train"
    image_column: str | None = None
    label_column: str | None = None
    class_names: str | None = None  # FILE: one name per line, or short<TAB>long


def read_class_names_text(text: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(short names, long names) from ``--class-names``' text: ``name`` or ``short<TAB>long`` per line. Prompts use
    the short names (the long ones with --long-label); the repository's ClassLabel publishes the long ones."""
    short, long = [], []
    for line in text.splitlines():
        if not line.strip():
            continue
        first, _, second = line.partition("\t")
        short.append(first.strip())
        long.append((second or first).strip())
    return tuple(short), tuple(long)


def open_split(spec: SourceSpec):
    """The split of ``spec``'s source as a memory-mapped ``datasets.Dataset``; one-line errors for bad input."""
    import datasets

    folder = Path(spec.source).expanduser()
    is_hub_id = not folder.exists() and spec.source.count("/") == 1 and not spec.source.startswith((".", "/", "~"))
    if not folder.exists() and not is_hub_id:
        raise SourceError(f"--source {spec.source}: no such folder, and not a Hub dataset id ORG/NAME")
    try:
        if folder.is_dir() and any((folder / f).is_file() for f in ("dataset_dict.json", "dataset_info.json")):
            loaded = datasets.load_from_disk(str(folder))  # written by save_to_disk
            split = loaded[spec.split] if isinstance(loaded, datasets.DatasetDict) else loaded
        else:
            split = datasets.load_dataset(str(folder) if folder.exists() else spec.source, split=spec.split)
    except KeyError:
        raise InputError(f"--source {spec.source} has no split {spec.split!r}; pass --split with one it has") from None
    except Exception as exc:  # datasets raises many kinds (offline, missing repo, unknown split, bad files)
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise SourceError(f"--source {spec.source} (split {spec.split}) could not be read: {first}") from None
    return split


def find_columns(features: dict, image_column: str | None, label_column: str | None) -> tuple[str, str]:
    """The image and label columns: those given, else the only ``Image`` and the only ``ClassLabel`` column.

    Example:
        >>> from datasets import ClassLabel, Image, Value
        >>> find_columns({"img": Image(), "label": ClassLabel(names=["a", "b"]), "id": Value("int64")}, None, None)
        ('img', 'label')
        >>> find_columns({"img": Image(), "id": Value("int64")}, None, None)
        Traceback (most recent call last):
        aclbuild.errors.InputError: the source has no ClassLabel column (columns: img, id); pass --label-column NAME with a ClassLabel column
    """
    from datasets import ClassLabel, Image

    chosen = []
    for given, kind, option in ((image_column, Image, "--image-column"), (label_column, ClassLabel, "--label-column")):
        if given is not None:
            if not isinstance(features.get(given), kind):
                article = "an" if kind is Image else "a"
                raise InputError(f"{option} {given!r} is not {article} {kind.__name__} column of the source; its "
                                 f"columns: {', '.join(features)}")  # fmt: skip
            chosen.append(given)
            continue
        candidates = [name for name, feature in features.items() if isinstance(feature, kind)]
        if len(candidates) != 1:
            found = f"{len(candidates)} {kind.__name__} columns ({', '.join(candidates)})" if candidates else (
                f"no {kind.__name__} column (columns: {', '.join(features)})")
            article = "an" if kind is Image else "a"
            raise InputError(f"the source has {found}; pass {option} NAME with {article} {kind.__name__} column")
        chosen.append(candidates[0])
    return chosen[0], chosen[1]


def source_facts(spec: SourceSpec, split) -> dict:
    """What the card says of the source: its id, revision (Hub commit) and licence (the Hub card's, if any)."""
    if Path(spec.source).expanduser().exists():
        return {"id": str(spec.source), "hub": False, "revision": None, "license": split.info.license or None}
    revision, license = None, split.info.license or None
    try:
        from huggingface_hub import DatasetCard, HfApi

        revision = HfApi().dataset_info(spec.source).sha
        card_license = DatasetCard.load(spec.source, repo_type="dataset").data.license  # the source card's YAML
        license = (card_license[0] if isinstance(card_license, list) else card_license) or license
    except Exception:  # offline after load_dataset's cache hit: the revision stays unknown
        pass
    return {"id": spec.source, "hub": True, "revision": revision, "license": license}


def decode_image(cell: dict, side: int) -> np.ndarray:
    """One stored image cell (``{"bytes", "path"}``) as side x side x 3 uint8 (see the module's size policy)."""
    from PIL import Image as PILImage

    data = cell.get("bytes")
    with PILImage.open(io.BytesIO(data) if data is not None else cell["path"]) as image:
        rgb = image.convert("RGB")
        if rgb.size != (side, side):
            rgb = rgb.resize((side, side), PILImage.Resampling.BICUBIC)
        return np.asarray(rgb, dtype=np.uint8)


def _decode(table, image_column: str, side: int, position: int) -> np.ndarray:
    return decode_image(table[position][image_column], side)


class LazyRecord(LazyImage, ClRecord):
    """A record whose image is decoded when ``image`` is first read: name and label cost nothing.

    Example:
        >>> record = LazyRecord("train_0000001", ord_label=2, load=lambda: np.zeros((2, 2, 3), np.uint8))
        >>> record.name, record.ord_label, record.image.shape
        ('train_0000001', 2, (2, 2, 3))
    """

    def __init__(self, name: str, image: np.ndarray | None = None, ord_label: int = 0,
                 cl_labels: tuple[int, ...] | None = None, load=None) -> None:  # fmt: skip
        self.name, self.ord_label, self.cl_labels = name, ord_label, cl_labels
        self._pixels, self._load = image, load


class LazyRecords(Sequence):
    """Records of a split that decode image ``i`` only when record ``i`` is read; slicing copies nothing (a slice
    shares its parent's cache of recent decodes)."""

    def __init__(self, table, image_column: str, labels: np.ndarray, side: int, prefix: str,
                 positions: range | None = None, pixels: bool = True, decoded=None) -> None:  # fmt: skip
        self.table, self.image_column, self.labels, self.side = table, image_column, labels, side
        self.prefix, self.pixels = prefix, pixels
        self.positions = positions if positions is not None else range(len(labels))
        entries = max(1, min(DECODE_CACHE, DECODE_CACHE_BYTES // (3 * side * side)))
        self._image = decoded or lru_cache(entries)(partial(_decode, table, image_column, side))

    def __len__(self) -> int:
        return len(self.positions)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return LazyRecords(self.table, self.image_column, self.labels, self.side, self.prefix,
                               self.positions[i], self.pixels, self._image)  # fmt: skip
        position = self.positions[i]
        load = (lambda: self._image(position)) if self.pixels else None
        return LazyRecord(self.name_of(position), None, int(self.labels[position]), load=load)

    def name_of(self, position: int) -> str:
        return f"{self.prefix}{position:07d}"

    @property
    def names(self) -> list[str]:
        """Every record's name, without decoding an image."""
        return [self.name_of(p) for p in self.positions]


def split_records(spec: SourceSpec, pixels: bool = True) -> tuple[LazyRecords, dict]:
    """The lazy records of ``spec``'s split and the source's description (class names, image size, facts)."""
    from datasets import Image

    split = open_split(spec)
    image_column, label_column = find_columns(dict(split.features), spec.image_column, spec.label_column)
    class_label = split.features[label_column]
    table = split.select_columns([image_column]).cast_column(image_column, Image(decode=False))
    labels = np.asarray(split.select_columns([label_column]).with_format("numpy")[label_column], dtype=np.int64)
    if len(labels) == 0:
        raise SourceError(f"--source {spec.source}: split {spec.split} is empty")
    first = table[0][image_column]
    from PIL import Image as PILImage

    with PILImage.open(io.BytesIO(first["bytes"]) if first.get("bytes") is not None else first["path"]) as image:
        side = max(image.size)
    short_names, long_names = tuple(class_label.names), tuple(class_label.names)
    if spec.class_names:
        short_names, long_names = read_class_names_file(spec.class_names, len(long_names))
    description = {
        **source_facts(spec, split), "split": spec.split, "image_column": image_column, "label_column": label_column,
        "class_names": list(long_names), "long_names": list(long_names), "short_names": list(short_names),
        "source_class_names": list(class_label.names), "image_size": side, "num_rows": len(labels),
    }  # fmt: skip
    records = LazyRecords(table, image_column, labels, side, f"{spec.split}_", pixels=pixels)
    return records, description


def read_class_names_file(path: str, num_classes: int) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """``--class-names FILE``: as many names as the ClassLabel has classes, else a one-line error."""
    try:
        names, long_names = read_class_names_text(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise InputError(f"--class-names {path}: cannot read it ({exc.strerror})") from None
    if len(names) != num_classes:
        raise InputError(f"--class-names {path} gives {len(names)} names; the source's ClassLabel has {num_classes}")
    return names, long_names


def custom_base(name: str, spec: object, description: dict, license: str | None = None) -> CustomBase:
    """The base called ``name`` over ``spec``'s split, described by ``description`` (``split_records``'s).

    Example:
        >>> facts = {"id": "org/pets", "hub": True, "revision": "abc", "license": "mit", "split": "train",
        ...          "image_size": 16, "class_names": ["cat", "dog"], "long_names": ["cat", "dog"], "num_rows": 4}
        >>> b = custom_base("pets", None, facts)
        >>> b.pretty_name, b.license, b.num_classes, b.source_dataset
        ('PETS', 'mit', 2, 'org/pets')
    """
    if name.lower() in BASES:
        raise UnknownNameError(f"{name} is a built-in base; give a new name for a custom source")
    source_id, revision = description["id"], description.get("revision")
    is_hub_id = bool(description.get("hub"))
    shown = source_id if is_hub_id else f"the local folder {PurePath(source_id).name}"
    at = f" at revision {revision}" if revision else ""
    origin = f"the '{description['split']}' split of {shown}{at}"
    return CustomBase(
        name.lower(), name.upper(), tuple(description["class_names"]), tuple(description["long_names"]),
        int(description["image_size"]), int(description["num_rows"]), 0, origin, "", None,
        source_id if is_hub_id else "original",
        license or description.get("license") or "unknown", train_origin=origin,
        test_origin=f"the 'test' split of {shown}{at}", producers=f"the authors of {shown}",
        image_terms=f"the terms of {shown}", spec=spec,
        description=json.dumps({**description, "base": name.lower()}, sort_keys=True),
        given_short_names=tuple(description.get("short_names") or ()),
    )  # fmt: skip


def custom_variants(base: Base) -> dict[str, Variant]:
    """The variants a custom base gets: acl<name> (VLM), acl<name>-r, and <name>-<matrix> (synthetic).

    Example:
        >>> from aclbuild.registry import get_base
        >>> sorted(custom_variants(get_base("digits")))[:3]
        ['acldigits', 'acldigits-r', 'digits-noisy']
    """
    variants = {f"acl{base.name}": Variant(f"acl{base.name}", base, "vlm"),
                f"acl{base.name}-r": Variant(f"acl{base.name}-r", base, "vlm-r")}  # fmt: skip
    for matrix in SYNTHETIC_MATRICES:
        variants[f"{base.name}-{matrix}"] = Variant(f"{base.name}-{matrix}", base, "synthetic", matrix)
    return variants
