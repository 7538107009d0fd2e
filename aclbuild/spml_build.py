"""`aclbuild build SOURCE --dataset voc2012-spml` (or coco2014-spml, nuswide-spml, cub-spml): a single-positive
multi-label repository in the CL sets' folder format (card, manifest, ``data/{split}-*.parquet``; splits train,
validation, test), its images the source's own files.

Example:
    >>> build_spml("VOCtrainval_11-May-2012.tar", "voc2012-spml", "out/voc2012-spml")   # doctest: +SKIP
    >>> is_spml_dataset("VOC2012-SPML"), is_spml_dataset("aclcifar10")
    (True, False)
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

from aclbuild import __version__
from aclbuild.builder import DEFAULT_MAX_SHARD_SIZE, check_max_shard_size, check_repo_id
from aclbuild.errors import OutputExistsError, SourceError, UnknownNameError
from aclbuild.loaders.observed import SEED, VAL_FRACTION
from aclbuild.loaders.spml import SPML_SETS
from aclbuild.paths import check_output, staged_output
from aclbuild.repository import Manifest, encode_spml_chunk, shards_size, spml_record_batch, write_manifest, write_split
from aclbuild.schema import SpmlSchema
from aclbuild.spml_card import SPML_SOURCES, render_spml_card
from aclbuild.spml_stats import spml_label_stats

SPML_SPLITS = ("train", "validation", "test")
OBSERVED_RULE = ("one positive per training image, drawn uniformly from its positives: the first of its shuffled "
                 "positive indices, the generator walking the official training part in order")  # fmt: skip


def is_spml_dataset(name: str) -> bool:
    """Whether ``name`` is one of the single-positive multi-label sets (case-insensitive)."""
    return name.lower() in SPML_SETS


def spml_provenance(dataset: str, source: str | Path) -> dict:
    """The manifest's ``provenance`` of an SPML build: what the observed labels are and how they and the validation
    split were drawn, and which official parts of the source were read.

    Example:
        >>> p = spml_provenance("cub-spml", "/data/CUB_200_2011.tgz")
        >>> p["seed"], p["validation_fraction"], p["parts"]["train"], p["source"]
        (1200, 0.2, 'train', 'CUB_200_2011.tgz')
    """
    spml_set = SPML_SETS[dataset]
    return {
        "labeler": "spml",
        "observed_label": "a single positive per training image; null in validation and test",
        "observed_rule": OBSERVED_RULE,
        "seed": SEED,
        "validation_fraction": VAL_FRACTION,
        "reference": "Cole et al. 2021, preproc/generate_observed_labels.py --num-pos 1 --num-neg 0 and "
        "generate_split (used unchanged by VLPL)",
        "parts": {"train": spml_set.train_part, "validation": spml_set.train_part, "test": spml_set.test_part},
        "source": Path(source).name,  # its name only: a local path says nothing on the Hub
    }


def build_spml(
    source: str | Path,
    dataset: str,
    output_dir: str | Path,
    repo_id: str | None = None,
    max_shard_size: int = DEFAULT_MAX_SHARD_SIZE,
    overwrite: bool = False,
) -> Path:
    """Read ``source`` as the set ``dataset`` names (:func:`aclbuild.loaders.spml.read_spml_splits`) and write its
    repository at ``output_dir``: staged, so a failed build leaves nothing; the image files streamed into shards
    of at most ``max_shard_size`` bytes, never all in memory; the card and manifest derived from the labels. A split
    without images (validation, when the official training part has fewer than 3) is left out."""
    from aclbuild.loaders.spml import read_spml_splits

    name = dataset.lower()
    if name not in SPML_SETS:
        raise UnknownNameError(f"unknown SPML set {dataset!r}; choose one of: {', '.join(SPML_SETS)}")
    check_repo_id(repo_id)
    check_max_shard_size(max_shard_size)
    output_dir = Path(output_dir)
    check_output(output_dir, {"SOURCE": source})
    if output_dir.exists() and any(output_dir.iterdir()) and not overwrite:  # refused before the source is read
        raise OutputExistsError(f"{output_dir} already exists and is not empty; pass --overwrite to replace it")
    splits = read_spml_splits(name, source)
    if not len(splits["train"]):
        raise SourceError(f"{source} holds no training image with a label; pass the {SPML_SOURCES[name].source_name} "
                          "source itself")  # fmt: skip
    # an empty split (validation of fewer than 3 training images) is left out: load_dataset refuses one
    splits = {split: records for split, records in splits.items() if len(records)}
    class_names = splits["train"].part.class_names
    schema = SpmlSchema(tuple(class_names)).arrow_schema()
    stats = {split: _split_stats(records, len(class_names)) for split, records in splits.items()}
    provenance = spml_provenance(name, source)
    with staged_output(output_dir, overwrite) as staged:
        infos = [
            write_split(staged, split, splits[split], schema, max_shard_size,
                        encode=partial(encode_spml_chunk, split=split), make_batch=spml_record_batch)
            for split in SPML_SPLITS if split in splits
        ]  # fmt: skip
        card = render_spml_card(name, class_names, infos, stats, provenance, repo_id, shards_size(staged))
        (staged / "README.md").write_text(str(card), encoding="utf-8")
        manifest = Manifest(name, repo_id, {s.name: s for s in infos}, provenance, f"aclbuild {__version__}")
        write_manifest(staged, manifest)
    return output_dir


def _split_stats(records, num_classes: int) -> dict:
    """:func:`aclbuild.spml_stats.spml_label_stats` of lazy records: names and labels only, no image is read."""
    rows = [records[i] for i in range(len(records))]
    return spml_label_stats([r.labels for r in rows], [r.observed_label for r in rows], num_classes)


def build_spml_command(
    source: str | Path, dataset: str, output_dir: str | Path, repo_id: str | None, max_shard_size: int,
    overwrite: bool, cl_options: dict[str, object],
) -> Path:  # fmt: skip
    """`aclbuild build` for an SPML set: ``cl_options`` (option -> value, None or False when not given) are the
    build options of the CL sets, each refused in one line when given.

    Example:
        >>> build_spml_command("voc.tar", "voc2012-spml", "out", None, 10, False, {"--num-cl": 3})   # doctest: +ELLIPSIS
        Traceback (most recent call last):
        aclbuild.errors.InputError: --num-cl is for the CL sets; build voc2012-spml from its source alone: `aclbuild ...`
    """
    from aclbuild.errors import InputError

    given = [option for option, value in cl_options.items() if value not in (None, False, (), [])]
    if given:
        raise InputError(f"{given[0]} is for the CL sets; build {dataset} from its source alone: "
                         f"`aclbuild build SOURCE -d {dataset} -o DIR`")  # fmt: skip
    return build_spml(source, dataset, output_dir, repo_id, max_shard_size, overwrite)
