"""The dataset card: YAML metadata validated by huggingface_hub, a body rendered from ``dataset_cards/``, figures.

Example:
    >>> import numpy as np
    >>> from aclbuild.registry import get_variant
    >>> from aclbuild.repository import SplitInfo
    >>> from aclbuild.stats import label_stats
    >>> stats = label_stats(np.array([0, 1, 2, 3]), np.array([[1], [2], [3], [0]]), num_classes=10)
    >>> train = SplitInfo("train", num_examples=4, num_bytes=4096, num_shards=1, sha256="0" * 64)
    >>> card = render_card(get_variant("aclcifar10"), 1, [train], stats, repo_id="org/aclcifar10")
    >>> card.data.pretty_name, card.data.task_categories
    ('ACLCIFAR10', ['image-classification'])
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

from huggingface_hub import DatasetCard, DatasetCardData

from aclbuild import __version__
from aclbuild.card_facts import INSIST_FLAG, LabelOrigin, label_origin
from aclbuild.card_text import annotation_process, annotators, bias_lines, code, kind_risk, public_settings
from aclbuild.registry import DEFAULT_VLM, Base, Variant
from aclbuild.repository import SplitInfo, split_files_pattern
from aclbuild.schema import card_features

HEATMAP_PATH = "figures/transition_matrix.png"
REQUIRED_YAML = (
    "license", "pretty_name", "task_categories", "tags", "size_categories", "annotations_creators",
    "source_datasets", "configs", "dataset_info",
)  # fmt: skip
LLAVA_CITATION = """@inproceedings{liu2024improved,
  title     = {Improved Baselines with Visual Instruction Tuning},
  author    = {Liu, Haotian and Li, Chunyuan and Li, Yuheng and Lee, Yong Jae},
  booktitle = {Proceedings of the IEEE/CVF Conference on Computer Vision and Pattern Recognition (CVPR)},
  pages     = {26296--26306},
  year      = {2024}
}"""
NOT_GIVEN = "Not given."


def size_category(num_examples: int) -> str:
    for limit, label in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")):
        if num_examples < limit:
            return label
    return "1M<n<10M"


def card_metadata(
    variant: Variant, num_cl: int, splits: list[SplitInfo], download_size: int | None = None,
    origin: LabelOrigin | None = None,
) -> DatasetCardData:  # fmt: skip
    """The card's YAML: licence, names, tags, then dataset_info (features, split sizes) and configs as datasets'
    ``push_to_hub`` writes them (same keys, same order, no YAML anchors or aliases).

    ``download_size`` is the bytes of the Parquet shards (left out when not given, as datasets does). The labels'
    tag and ``annotations_creators`` follow ``origin`` (the recorded labeler); without a record, the variant's
    release.

    Example:
        >>> from aclbuild.registry import get_variant
        >>> data = card_metadata(get_variant("aclcifar10"), 3, [], origin=LabelOrigin("synthetic", "synthetic"))
        >>> data.tags[-1], data.annotations_creators
        ('synthetic-labels', ['machine-generated'])
    """
    kind = origin.kind if origin is not None and origin.recorded else variant.kind
    kind_tags = [f"{kind}-labels"] if kind else []
    info: dict = {"features": card_features(variant.base.class_names, num_cl)}
    info["splits"] = [{"name": s.name, "num_bytes": s.num_bytes, "num_examples": s.num_examples} for s in splits]
    if download_size is not None:
        info["download_size"] = download_size
    info["dataset_size"] = sum(s.num_bytes for s in splits)
    files = [{"split": s.name, "path": split_files_pattern(s.name)} for s in splits]
    configs = [{"config_name": "default", "data_files": files}]
    extra = {}
    if variant.license == "other":
        extra = {"license_name": "imagenet-terms-of-access", "license_link": "https://image-net.org/download.php"}
    return DatasetCardData(
        license=variant.license,
        pretty_name=variant.pretty_name,
        language=["en"],
        task_categories=["image-classification"],
        tags=["complementary-label-learning", "weakly-supervised-learning", *kind_tags],
        size_categories=[size_category(sum(s.num_examples for s in splits))],
        annotations_creators=[{"human": "crowdsourced", None: "other"}.get(kind, "machine-generated")],
        task_ids=["multi-class-image-classification"],
        source_datasets=[variant.base.source_dataset],
        **extra,
        # datasets writes dataset_info, then configs; a JSON round trip unshares the ClassLabel dict that ord_labels
        # and cl_labels would otherwise share, which yaml dumps as an anchor (&id001) and an alias (*id001).
        dataset_info=json.loads(json.dumps(info)),
        configs=json.loads(json.dumps(configs)),
    )


def render_card(
    variant: Variant,
    num_cl: int,
    splits: list[SplitInfo],
    train_stats: dict,
    provenance: dict | None = None,
    repo_id: str | None = None,
    download_size: int | None = None,
    card_authors: Sequence[str] = (),
    contact: str | None = None,
) -> DatasetCard:
    """The full card; its YAML is parsed back and checked before it is returned.

    Every statement about the labels follows ``provenance`` (what `aclbuild generate` recorded; None: not recorded,
    and the card then attributes what it says to the variant's release) and the splits' own statistics; a
    provenance that contradicts the variant's kind was refused or allowed before (:func:`check_label_kind`).
    ``download_size``: the bytes of the repository's Parquet shards, written into ``dataset_info`` as datasets does.
    Without ``repo_id`` the usage example says ``YOUR_ORG/<variant name>``, which `push` replaces.
    """
    template = resources.files("aclbuild").joinpath("dataset_cards/dataset_card.md").read_text(encoding="utf-8")
    base = variant.base
    origin = label_origin(provenance)
    provenance = public_settings(provenance or {})
    repo_id = repo_id or f"YOUR_ORG/{variant.name}"
    authors = ", ".join(card_authors)
    card = DatasetCard.from_template(
        card_metadata(variant, num_cl, splits, download_size, origin),
        template_str=template,
        name=variant.name,
        libcll_file=variant.name.replace("-", "") + ".pkl",
        base_pretty=base.pretty_name,
        num_classes=base.num_classes,
        num_train=train_stats["num_examples"],
        num_cl=train_stats["cls_per_image"],
        image_size=base.image_size,
        converted=bool((provenance or {}).get("source")),  # a custom source's images are made RGB and resized
        origin_words=origin.describe() if origin.recorded else f"{_variant_words(variant)}, per {variant.release}",
        variant_words=_variant_words(variant),
        mismatch=not origin.matches(variant),
        insist_flag=INSIST_FLAG,
        curators=authors or NOT_GIVEN,
        shared_by=authors or NOT_GIVEN,  # not the repo's owner: `push` may send the folder to another one
        license_name=_LICENSE_NAMES.get(variant.license),
        image_terms=base.image_terms or f"those of {base.pretty_name}",
        repo_id=repo_id,
        split_rows=[_split_row(s, base) for s in splits],
        class_list=", ".join(f"{i} {code(n)}" for i, n in enumerate(base.class_names)),
        rationale_labels=_rationale(origin, variant),
        producers=base.producers or f"The authors of {base.pretty_name}",
        process=annotation_process(origin, provenance, variant, train_stats["cls_per_image"]),
        provenance=provenance,
        annotators=annotators(origin, provenance, variant),
        bias=bias_lines(train_stats, base.class_names),
        kind_risk=kind_risk(origin, variant),
        cl_rows=[
            {"name": code(n), "count": c, "share": m}
            for n, c, m in zip(base.class_names, train_stats["cl_counts"], train_stats["cl_marginals"])
        ],
        heatmap=HEATMAP_PATH,
        base_citation=base.citation,
        **_model_citation(origin, provenance, variant),
        acl_release=(origin.kind if origin.recorded else variant.kind) in ("vlm", "vlm-r"),
        authors=authors or NOT_GIVEN,
        contact=contact or "Not given; use the Community tab of the dataset's Hub page.",
        version=__version__,
    )
    # dataset_info is not parsed with datasets here (a 0.7 s import); tests/test_schema.py checks its features list.
    problems = card_yaml_problems(DatasetCard(str(card)))
    if problems:  # a template or metadata bug, not bad input
        raise RuntimeError("generated card is invalid: " + "; ".join(problems))
    return card


_LICENSE_NAMES = {"other": "ImageNet terms of access"}


def _variant_words(variant: Variant) -> str:
    """The labels the variant's name stands for, in words."""
    return LabelOrigin(variant.kind, variant.kind, variant.matrix).describe()


def _split_row(split: SplitInfo, base: Base) -> dict:
    """A split's row of the structure table: its size and where its images come from (and how many of them)."""
    origin, full = (base.train_origin, base.num_train) if split.name == "train" else (base.test_origin, base.num_test)
    part = f" ({split.num_examples:,} of its {full:,})" if split.num_examples < full else ""
    return {"name": split.name, "num_examples": split.num_examples, "origin": (origin or base.pretty_name) + part}


def _rationale(origin: LabelOrigin, variant: Variant) -> str:
    kind = origin.kind if origin.recorded else variant.kind
    if kind == "synthetic":
        return "labels whose transition matrix is known"
    return "labels a real labeler gave" if kind else "these labels"


def _model_citation(origin: LabelOrigin, provenance: dict, variant: Variant) -> dict:
    """The labeling model's paper, when a LLaVA model made the labels (recorded, or claimed by the release)."""
    if origin.labeler == "llava" and "llava" in str(provenance.get("model", "")).lower():
        return {"model_citation": LLAVA_CITATION, "model_citation_note": "The labels were given by a LLaVA-NeXT model:"}
    if origin.labeler in (None, "replay") and variant.kind in ("vlm", "vlm-r"):
        note = f"According to {variant.release}, its labels were given by {DEFAULT_VLM} (LLaVA-NeXT):"
        return {"model_citation": LLAVA_CITATION, "model_citation_note": note}
    return {"model_citation": "", "model_citation_note": ""}


def card_pretty_name(folder: str | Path) -> str:
    """The card's ``pretty_name`` of a repository folder, else the folder's name (no card, or one that does not parse).

    Example:
        >>> card_pretty_name("out/aclcifar10")   # doctest: +SKIP
        'ACLCIFAR10'
    """
    folder = Path(folder)
    try:
        return DatasetCard.load(folder / "README.md").data.pretty_name or folder.name
    except Exception:  # noqa: BLE001 - a missing or broken card still leaves the data readable
        return folder.name


def card_parse_problem(exc: Exception, text: str, name: str = "README.md") -> str:
    """One line for a card that does not parse: the file, the line of the YAML problem (counted in the file, not in
    its front matter) and what YAML expected there.

    Example:
        >>> text = "---\\nlicense: [mit\\npretty_name: X\\n---\\n"
        >>> try:
        ...     DatasetCard(text)
        ... except Exception as exc:
        ...     print(card_parse_problem(exc, text))   # doctest: +ELLIPSIS
        README.md line 3: the card's YAML does not parse: expected ',' or ']', but got ':' (in a flow sequence ...)...
    """
    from huggingface_hub.repocard import REGEX_YAML_BLOCK

    block = REGEX_YAML_BLOCK.search(text)
    mark, problem = getattr(exc, "problem_mark", None), getattr(exc, "problem", None)
    if block is None or mark is None or not problem:  # not a YAML syntax error: e.g. a block that is not a mapping
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        return f"{name} does not parse as a dataset card: {first}"
    offset = len(block.group(1).splitlines())  # lines up to the opening ---: YAML counts from the line after
    where = f"{name} line {mark.line + 1 + offset}"
    context, context_mark = getattr(exc, "context", None), getattr(exc, "context_mark", None)
    opened = ""
    if context and context_mark is not None:
        context = context.replace("while parsing ", "in ").replace("while scanning ", "in ")
        opened = f" ({context} opened at line {context_mark.line + 1 + offset})"
    return f"{where}: the card's YAML does not parse: {problem}{opened}; fix the YAML between the two --- lines"


def card_yaml_problems(card: DatasetCard) -> list[str]:
    """Required YAML keys or the complementary-label-learning tag that a card lacks (empty when none)."""
    data = card.data.to_dict()
    problems = [f"card YAML lacks '{key}'" for key in REQUIRED_YAML if not data.get(key)]
    if "complementary-label-learning" not in (data.get("tags") or []):
        problems.append("card YAML tags lack 'complementary-label-learning'")
    return problems


def card_problems(card: DatasetCard) -> list[str]:
    """What is missing or wrong in a card's YAML, its dataset_info parsed by datasets (empty when it is complete)."""
    from datasets import DatasetInfo

    problems = card_yaml_problems(card)
    data = card.data.to_dict()
    if data.get("dataset_info"):
        try:
            DatasetInfo._from_yaml_dict(dict(data["dataset_info"]))
        except Exception as exc:  # noqa: BLE001 - any parse failure is a card problem
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]  # a problem is one line
            problems.append(f"card dataset_info does not parse: {first}")
    return problems
