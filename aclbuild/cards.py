"""The dataset card: YAML metadata validated by huggingface_hub, a body rendered from ``dataset_cards/``, figures.

Example:
    >>> card = render_card(variant, splits, stats, repo_id="org/aclcifar10")   # doctest: +SKIP
    >>> card.data.pretty_name                                                   # doctest: +SKIP
    'ACLCIFAR10'
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import numpy as np
from huggingface_hub import DatasetCard, DatasetCardData

from aclbuild import __version__
from aclbuild.registry import Variant
from aclbuild.repository import SplitInfo
from aclbuild.schema import card_features

HEATMAP_PATH = "figures/transition_matrix.png"
REQUIRED_YAML = (
    "license", "pretty_name", "task_categories", "tags", "size_categories", "annotations_creators",
    "source_datasets", "configs", "dataset_info",
)  # fmt: skip
_KIND_SENTENCES = {
    "vlm": "Its complementary labels were given by a vision-language model (LLaVA-NeXT).",
    "vlm-r": "Its complementary labels were given by a vision-language model (LLaVA-NeXT) with the bias-reduced "
    "(-R) candidate draw, so every class is about equally often a complementary label.",
    "human": "Its complementary labels were given by human annotators.",
    "synthetic": "Its complementary labels are synthetic, drawn from a known transition matrix.",
}


def size_category(num_examples: int) -> str:
    for limit, label in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")):
        if num_examples < limit:
            return label
    return "1M<n<10M"


def card_metadata(
    variant: Variant, num_cl: int, splits: list[SplitInfo], download_size: int | None = None
) -> DatasetCardData:
    """The card's YAML: licence, names, tags, then dataset_info (features, split sizes) and configs as datasets'
    ``push_to_hub`` writes them (same keys, same order, no YAML anchors or aliases).

    ``download_size`` is the bytes of the Parquet shards (left out when not given, as datasets does).
    """
    info: dict = {"features": card_features(variant.base.class_names, num_cl)}
    info["splits"] = [{"name": s.name, "num_bytes": s.num_bytes, "num_examples": s.num_examples} for s in splits]
    if download_size is not None:
        info["download_size"] = download_size
    info["dataset_size"] = sum(s.num_bytes for s in splits)
    configs = [
        {"config_name": "default", "data_files": [{"split": s.name, "path": f"data/{s.name}-*"} for s in splits]}
    ]
    extra = {}
    if variant.license == "other":
        extra = {"license_name": "imagenet-terms-of-access", "license_link": "https://image-net.org/download.php"}
    return DatasetCardData(
        license=variant.license,
        pretty_name=variant.pretty_name,
        language=["en"],
        task_categories=["image-classification"],
        tags=["complementary-label-learning", "weakly-supervised-learning", f"{variant.kind}-labels"],
        size_categories=[size_category(sum(s.num_examples for s in splits))],
        annotations_creators=[variant.annotations_creators],
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
) -> DatasetCard:
    """The full card; its YAML is parsed back and checked before it is returned.

    ``download_size``: the bytes of the repository's Parquet shards, written into ``dataset_info`` as datasets does.
    """
    template = resources.files("aclbuild").joinpath("dataset_cards/dataset_card.md").read_text(encoding="utf-8")
    base = variant.base
    card = DatasetCard.from_template(
        card_metadata(variant, num_cl, splits, download_size),
        template_str=template,
        name=variant.name,
        kind=variant.kind,
        base_pretty=base.pretty_name,
        base_license=base.license,
        base_citation=base.citation,
        num_classes=base.num_classes,
        class_names=base.class_names,
        num_cl=train_stats["cls_per_image"],
        image_size=base.image_size,
        kind_sentence=_KIND_SENTENCES[variant.kind],
        labeling_summary=variant.labeling_summary,
        provenance=provenance or {},
        train_source=base.train_source,
        test_source=base.test_source,
        has_test=any(s.name == "test" for s in splits),
        splits=splits,
        repo_id=repo_id or f"YOUR_ORG/{variant.name}",
        stats=train_stats,
        heatmap=HEATMAP_PATH,
        version=__version__,
    )
    # dataset_info is not parsed with datasets here (a 0.7 s import); tests/test_schema.py checks its features list.
    problems = card_yaml_problems(DatasetCard(str(card)))
    if problems:  # a template or metadata bug, not bad input
        raise RuntimeError("generated card is invalid: " + "; ".join(problems))
    return card


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
            problems.append(f"card dataset_info does not parse: {exc}")
    return problems


def save_heatmap(matrix: np.ndarray, class_names: tuple[str, ...], title: str, path: Path) -> None:
    """A PNG heatmap of a transition matrix (rows: true label, columns: CL)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k = len(class_names)
    size = 4 + 0.35 * k
    fig, ax = plt.subplots(figsize=(size, size * 0.85))
    im = ax.imshow(matrix, cmap="viridis", vmin=0)
    ax.set_xticks(range(k), class_names, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(k), class_names, fontsize=8)
    ax.set_xlabel("complementary label")
    ax.set_ylabel("true label")
    ax.set_title(title)
    if k <= 12:
        bright = 0.6 * (matrix.max() or 1)  # dark text on the bright end of viridis, white on the dark end
        for y in range(k):
            for j in range(k):
                colour = "black" if matrix[y, j] > bright else "white"
                ax.text(j, y, f"{matrix[y, j]:.2f}", ha="center", va="center", fontsize=6, color=colour)
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
