"""The dataset card of a single-positive multi-label (SPML) repository: Hub YAML as the CL cards carry it, and prose
derived from the data (what the observed label is and how it was drawn, the splits, per-class positive counts).

Example:
    >>> from aclbuild.repository import SplitInfo
    >>> from aclbuild.spml_stats import spml_label_stats
    >>> splits = [SplitInfo("train", 2, 100, 1, "0" * 64), SplitInfo("test", 1, 50, 1, "0" * 64)]
    >>> stats = {"train": spml_label_stats([[0, 1], [1]], [1, 1], 20), "test": spml_label_stats([[3]], [None], 20)}
    >>> from aclbuild.loaders.voc import VOC_CLASSES
    >>> card = render_spml_card("voc2012-spml", VOC_CLASSES, splits, stats, {"seed": 1200}, None, 150)
    >>> card.data.pretty_name, card.data.tags[:2]
    ('Pascal VOC 2012, single positive labels', ['multi-label-image-classification', 'single-positive-multi-label'])
    >>> spml_card_problems(card)
    []
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

from huggingface_hub import DatasetCard, DatasetCardData

from aclbuild import __version__
from aclbuild.cards import REQUIRED_YAML, size_category
from aclbuild.card_text import code
from aclbuild.repository import SplitInfo, split_files_pattern
from aclbuild.schema import SpmlSchema

SPML_TAG = "single-positive-multi-label"


@dataclass(frozen=True)
class SpmlSource:
    """What a card says about an SPML set's source: its name, licence (a Hub id; ``other`` with a name and link),
    the official parts used, and its citation."""

    pretty_name: str
    source_name: str
    license: str
    license_name: str | None
    license_link: str | None
    parts: str
    citation: str


_VOC = """@article{everingham2015pascal,
  title   = {The Pascal Visual Object Classes Challenge: A Retrospective},
  author  = {Everingham, Mark and Eslami, S. M. Ali and Van Gool, Luc and Williams, Christopher K. I. and Winn, John
             and Zisserman, Andrew},
  journal = {International Journal of Computer Vision},
  volume  = {111},
  number  = {1},
  pages   = {98--136},
  year    = {2015}
}"""
_COCO = """@inproceedings{lin2014microsoft,
  title     = {Microsoft {COCO}: Common Objects in Context},
  author    = {Lin, Tsung-Yi and Maire, Michael and Belongie, Serge and Hays, James and Perona, Pietro and Ramanan, Deva
               and Doll{\\'a}r, Piotr and Zitnick, C. Lawrence},
  booktitle = {European Conference on Computer Vision (ECCV)},
  pages     = {740--755},
  year      = {2014}
}"""
_CUB = """@techreport{wah2011caltech,
  title       = {The {Caltech-UCSD} Birds-200-2011 Dataset},
  author      = {Wah, Catherine and Branson, Steve and Welinder, Peter and Perona, Pietro and Belongie, Serge},
  institution = {California Institute of Technology},
  number      = {CNS-TR-2011-001},
  year        = {2011}
}"""
_NUS = """@inproceedings{chua2009nuswide,
  title     = {{NUS-WIDE}: A Real-World Web Image Database from National University of Singapore},
  author    = {Chua, Tat-Seng and Tang, Jinhui and Hong, Richang and Li, Haojie and Luo, Zhiping and Zheng, Yantao},
  booktitle = {ACM International Conference on Image and Video Retrieval (CIVR)},
  year      = {2009}
}"""
COLE_CITATION = """@inproceedings{cole2021multi,
  title     = {Multi-Label Learning from Single Positive Labels},
  author    = {Cole, Elijah and Mac Aodha, Oisin and Lorieul, Titouan and Perona, Pietro and Morris, Dan and Jojic,
               Nebojsa},
  booktitle = {Proceedings of the IEEE/CVF Conference on Computer Vision and Pattern Recognition (CVPR)},
  pages     = {933--942},
  year      = {2021}
}"""
VLPL_CITATION = """@article{xing2023vision,
  title   = {Vision-Language Pseudo-Labels for Single-Positive Multi-Label Learning},
  author  = {Xing, Xin and Xiong, Zhexiao and Stylianou, Abby and Sastry, Srikumar and Gong, Liyu and Jacobs, Nathan},
  journal = {arXiv preprint arXiv:2310.15985},
  year    = {2023}
}"""

SPML_SOURCES = {
    "voc2012-spml": SpmlSource(
        "Pascal VOC 2012, single positive labels", "Pascal VOC 2012", "other", "pascal-voc-2012-terms",
        "http://host.robots.ox.ac.uk/pascal/VOC/voc2012/",
        "VOC 2012 trainval: its `train` list (train and validation splits here) and its `val` list (test here)", _VOC,
    ),
    "coco2014-spml": SpmlSource(
        "MS-COCO 2014, single positive labels", "MS-COCO 2014", "cc-by-4.0", None, None,
        "COCO 2014 `train2014` (train and validation splits here) and `val2014` (test here), images with at least "
        "one object annotation", _COCO,
    ),
    "nuswide-spml": SpmlSource(
        "NUS-WIDE, single positive labels", "NUS-WIDE", "other", "nus-wide-terms",
        "https://lms.comp.nus.edu.sg/wp-content/uploads/2019/research/nuswide/NUS-WIDE.html",
        "VLPL's formatted NUS-WIDE files: `formatted_train_*` (train and validation splits here) and "
        "`formatted_val_*` (test here), 81 concepts", _NUS,
    ),
    "cub-spml": SpmlSource(
        "CUB-200-2011 attributes, single positive labels", "CUB-200-2011", "other", "cub-200-2011-terms",
        "https://www.vision.caltech.edu/datasets/cub_200_2011/",
        "CUB-200-2011's official train/test split, its 312 binary attributes as the classes", _CUB,
    ),
}


SOURCE_DATASETS = {"voc2012-spml": "pascal_voc", "coco2014-spml": "coco", "nuswide-spml": "nus_wide",
                   "cub-spml": "cub_200_2011"}  # the card's source_datasets names (extended|NAME)


def spml_card_metadata(
    dataset: str, class_names: Sequence[str], splits: list[SplitInfo], download_size: int | None
) -> DatasetCardData:
    """The card's YAML: licence, names, tags, then dataset_info (features, split sizes) and configs as datasets'
    ``push_to_hub`` writes them, as :func:`aclbuild.cards.card_metadata` does for a CL set."""
    source = SPML_SOURCES[dataset]
    info: dict = {"features": SpmlSchema(tuple(class_names)).card_features()}
    info["splits"] = [{"name": s.name, "num_bytes": s.num_bytes, "num_examples": s.num_examples} for s in splits]
    if download_size is not None:
        info["download_size"] = download_size
    info["dataset_size"] = sum(s.num_bytes for s in splits)
    configs = [{"config_name": "default",
                "data_files": [{"split": s.name, "path": split_files_pattern(s.name)} for s in splits]}]  # fmt: skip
    extra = {"license_name": source.license_name, "license_link": source.license_link} if source.license_name else {}
    return DatasetCardData(
        license=source.license,
        pretty_name=source.pretty_name,
        language=["en"],
        task_categories=["image-classification"],
        task_ids=["multi-label-image-classification"],
        tags=["multi-label-image-classification", SPML_TAG, "weakly-supervised-learning", "partial-labels"],
        size_categories=[size_category(sum(s.num_examples for s in splits))],
        annotations_creators=["crowdsourced"],
        source_datasets=[f"extended|{SOURCE_DATASETS[dataset]}"],
        **extra,
        # a JSON round trip unshares the ClassLabel dicts, which yaml would dump as an anchor and an alias
        dataset_info=json.loads(json.dumps(info)),
        configs=json.loads(json.dumps(configs)),
    )


def _parts_text(parts, described: str) -> str:
    """The official parts each split comes from, in words (the provenance's mapping), else the set's description.

    Example:
        >>> _parts_text({"train": "train", "validation": "train", "test": "val"}, "")
        "train and validation from the official part 'train', test from 'val'"
    """
    if not isinstance(parts, dict) or not parts:
        return described
    by_part: dict[str, list[str]] = {}
    for split, part in parts.items():
        by_part.setdefault(str(part), []).append(split)
    texts = [f"{' and '.join(splits)} from {'the official part ' if i == 0 else ''}'{part}'"
             for i, (part, splits) in enumerate(by_part.items())]  # fmt: skip
    return ", ".join(texts)


def render_spml_card(
    dataset: str,
    class_names: Sequence[str],
    splits: list[SplitInfo],
    stats: dict[str, dict],
    provenance: dict,
    repo_id: str | None,
    download_size: int | None,
) -> DatasetCard:
    """The full card of an SPML repository; ``stats`` are :func:`aclbuild.spml_stats.spml_label_stats` per split,
    ``provenance`` the manifest's (seed, rule, validation fraction, parts). Its YAML is checked before it is
    returned."""
    source = SPML_SOURCES[dataset]
    data = spml_card_metadata(dataset, class_names, splits, download_size)
    body = "\n".join(_body(dataset, source, class_names, splits, stats, provenance, repo_id or f"YOUR_ORG/{dataset}"))
    card = DatasetCard(f"---\n{data.to_yaml()}\n---\n\n{body}\n")
    problems = spml_card_problems(card)
    if problems:  # a bug here, not bad input
        raise RuntimeError("generated card is invalid: " + "; ".join(problems))
    return card


def spml_card_problems(card: DatasetCard) -> list[str]:
    """Required YAML keys or the SPML tag that a card lacks, and a dataset_info datasets cannot parse (empty: none)."""
    from datasets import DatasetInfo

    data = card.data.to_dict()
    problems = [f"card YAML lacks '{key}'" for key in REQUIRED_YAML if not data.get(key)]
    if SPML_TAG not in (data.get("tags") or []):
        problems.append(f"card YAML tags lack '{SPML_TAG}'")
    if data.get("dataset_info"):
        try:
            DatasetInfo._from_yaml_dict(dict(data["dataset_info"]))
        except Exception as exc:  # noqa: BLE001 - any parse failure is a card problem
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            problems.append(f"card dataset_info does not parse: {first}")
    return problems


def _body(dataset, source: SpmlSource, class_names, splits, stats, provenance, repo_id) -> list[str]:
    """The card's Markdown below the YAML."""
    seed = provenance.get("seed", "not recorded")
    fraction = provenance.get("validation_fraction", "not recorded")
    train = stats.get("train", {})
    lines = [
        f"# {source.pretty_name}",
        "",
        f"{source.source_name} as a **single-positive multi-label** (SPML) image classification set, the setting of "
        "Cole et al. (CVPR 2021) and of VLPL (Xing et al., 2023): every image keeps its full set of positive "
        f"classes in `labels`, and each training image also carries one **observed label**, `observed_label`, the "
        "single positive a single-positive learner is allowed to see. Built with aclbuild "
        f"{__version__} (`{dataset}`).",
        "",
        "## The observed label and how it was drawn",
        "",
        f"- Rule: {provenance.get('observed_rule', 'one positive per training image, drawn uniformly')}.",
        f"- Seed: {seed} (`np.random.RandomState({seed})`, as the SPML benchmark's `generate_observed_labels.py` "
        "with `--num-pos 1 --num-neg 0`); the same source gives the same observed labels.",
        f"- A training image without any positive has no observed label (null): "
        f"{train.get('num_examples', 0) - train.get('observed', 0)} of {train.get('num_examples', 0)} here.",
        f"- Observed labels that are a true positive: {100 * train.get('observed_true_share', 0):.1f}% of training "
        f"images (all images that have one); images with an observed label: "
        f"{100 * train.get('observed_share', 0):.1f}%.",
        "- Validation and test rows have no observed label (null): the benchmark selects and evaluates on the full "
        "`labels` (mean average precision).",
        "",
        "## Splits",
        "",
        f"Source parts: {_parts_text(provenance.get('parts'), source.parts)}. The validation split is {fraction} of "
        "the official "
        f"training part, drawn with `np.random.RandomState({seed}).permutation` as the benchmark's `generate_split` "
        "does (the last share of the permutation), both kept in source order; test is the official evaluation part.",
        "",
        "| split | images | positives per image (label cardinality) | images without a positive | bytes |",
        "|---|---|---|---|---|",
    ]
    for s in splits:
        st = stats[s.name]
        lines.append(f"| {s.name} | {s.num_examples:,} | {st['label_cardinality']} | "
                     f"{st['images_without_positive']:,} | {s.num_bytes:,} |")  # fmt: skip
    names = [s.name for s in splits]
    lines += ["", "## Per-class positive counts", "",
              "Images with each class among their positives, per split; in train also how often it is the observed "
              "label.", "",
              "| index | class | " + " | ".join(names) + " | train observed |",
              "|---|---|" + "---|" * (len(names) + 1)]  # fmt: skip
    for k, name in enumerate(class_names):
        counts = " | ".join(f"{stats[n]['positive_counts'][k]:,}" for n in names)
        observed = f"{train['observed_counts'][k]:,}" if train else "-"
        lines.append(f"| {k} | {code(name)} | {counts} | {observed} |")
    lines += [
        "", "## Columns", "",
        "- `names`: the image's file name in the source.",
        "- `images`: the source's image file, stored as distributed (JPEG, not re-encoded).",
        "- `labels`: every positive class (a list of ClassLabel, ascending).",
        "- `observed_label`: the single observed positive (ClassLabel), null outside train and for an image without "
        "positives.",
        "", "## Usage", "", "```python", "from datasets import load_dataset", "",
        f'ds = load_dataset("{repo_id}")',
        'names = ds["train"].features["labels"].feature.names',
        'row = ds["train"][0]',
        'print([names[k] for k in row["labels"]], names[row["observed_label"]])', "```", "",
        "`aclbuild benchmark DIR_OR_REPO --task spml --strategy EM_PL` trains VLPL's losses on it.", "",
        "## Licence", "",
        f"The images and annotations are {source.source_name}'s, under its terms"
        + (f" ({source.license_link})." if source.license_link else f" ({source.license})."),
        "", "## Citation", "",
        f"The source ({source.source_name}):", "", "```bibtex", source.citation, "```", "",
        "The single-positive protocol (observed labels, validation split):", "", "```bibtex", COLE_CITATION, "```", "",
        "VLPL:", "", "```bibtex", VLPL_CITATION, "```",
    ]
    return lines
