"""The dataset card is derived from the labels' recorded provenance and the data, never from the variant's name."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import make_legacy_dict, write_pickle
from huggingface_hub import DatasetCard

from aclbuild.builder import build_repository
from aclbuild.errors import InputError
from aclbuild.registry import get_variant
from aclbuild.schema import ClRecord

# provenance dicts as `aclbuild generate` writes them (runner._finish), one per kind of labeler
_COMMON = {"mode": "cl", "num_rounds": 3, "seed": 1126, "protocol": "aclbuild", "long_label": False,
           "aclbuild_version": "0.1.0"}  # fmt: skip
_LLAVA = _COMMON | {
    "labeler": "llava", "model": "llava-hf/llava-v1.6-mistral-7b-hf", "revision": "0123abcd", "prompt": "default",
    "prompt_sha256": "f" * 64, "candidates": "seeded", "bias_reduction": False, "scoring": "generate",
    "dtype": "fp16", "max_retries": 10, "max_new_tokens": 30,
}  # fmt: skip
_REPLAY = _COMMON | {"labeler": "replay", "candidates": "reference", "bias_reduction": False, "answers": "acl.csv"}
PROVENANCES = {
    "unrecorded": None,
    "llava": _LLAVA,
    "llava-R": _LLAVA | {"bias_reduction": True, "r_block": 16},
    "replay": _REPLAY,
    "replay-R": _REPLAY | {"bias_reduction": True, "r_block": 16},
    "synthetic-uniform": _COMMON | {"labeler": "synthetic", "bias_reduction": False, "matrix": "uniform"},
    "synthetic-strong": _COMMON | {"labeler": "synthetic", "bias_reduction": False, "matrix": "strong"},
    "human": {"labeler": "human", "num_rounds": 3},
}
# the variant kind each provenance's labels are (None: not recorded, the variant's release is taken at its word)
LABELS_KIND = {"unrecorded": None, "llava": "vlm", "llava-R": "vlm-r", "replay": "vlm", "replay-R": "vlm-r",
               "synthetic-uniform": "synthetic", "synthetic-strong": "synthetic", "human": "human"}  # fmt: skip
VARIANTS = ("aclcifar10", "aclcifar10-r", "clcifar10", "cifar10-uniform")
KIND_TAGS = {"vlm-labels", "vlm-r-labels", "human-labels", "synthetic-labels"}


def records(n: int = 12, seed: int = 0, with_cls: bool = True, skew: int | None = None) -> list[ClRecord]:
    """Tiny CIFAR-shaped records; ``skew`` makes that class the first CL of every image."""
    d = make_legacy_dict(n=n, seed=seed)
    rows = []
    for name, image, y, cls in zip(d["names"], d["images"], d["ord_labels"], d["cl_labels"]):
        cls = list(cls)
        if skew is not None and y != skew:
            cls[0] = skew
        rows.append(ClRecord(name, image, y, tuple(cls) if with_cls else None))
    return rows


def matches(labels: str, variant_name: str) -> bool:
    variant = get_variant(variant_name)
    kind = LABELS_KIND[labels]
    if kind is None:
        return True
    if labels.startswith("synthetic"):
        return variant.kind == "synthetic" and labels == f"synthetic-{variant.matrix}"
    return kind == variant.kind


def card_of(folder) -> tuple[dict, str]:
    card = DatasetCard.load(folder / "README.md")
    return card.data.to_dict(), card.text


@pytest.mark.parametrize("variant_name", VARIANTS)
@pytest.mark.parametrize("labels", list(PROVENANCES))
def test_every_labeler_kind_against_every_variant_kind(labels, variant_name, tmp_path):
    variant, provenance = get_variant(variant_name), PROVENANCES[labels]
    out = tmp_path / "repo"
    if not matches(labels, variant_name):
        with pytest.raises(InputError) as refused:
            build_repository(variant, records(), None, out, provenance=provenance)
        message = str(refused.value)
        assert "\n" not in message and variant_name in message and "--allow-kind-mismatch" in message
        assert not out.exists() and not list(tmp_path.iterdir())  # refused before anything was written
    build_repository(variant, records(), None, out, provenance=provenance, allow_kind_mismatch=True)
    data, text = card_of(out)
    kind = LABELS_KIND[labels] or variant.kind
    assert set(data["tags"]) & KIND_TAGS == {f"{kind}-labels"}
    assert data["annotations_creators"] == ["crowdsourced" if kind == "human" else "machine-generated"]
    assert ("built under the name" in text) == (not matches(labels, variant_name))
    if provenance is None:
        assert "were not recorded" in text and f"According to {variant.release}, " in text
    else:  # the release's account appears only beside a replayed file, whose writer is not recorded
        assert "were not recorded" not in text
        assert ("According to" in text) == (labels.startswith("replay") and variant.kind in ("vlm", "vlm-r"))
    if labels.startswith("llava"):
        assert "`llava-hf/llava-v1.6-mistral-7b-hf` at revision `0123abcd`" in text
        assert "Which label does not belong to this image?" in text and "Improved Baselines" in text
    if labels.startswith("replay"):
        assert "`acl.csv`" in text and "the model that wrote that file is not recorded" in text
    if labels.startswith("synthetic"):
        matrix = labels.split("-")[1]
        assert f"synthetic labels (the '{matrix}' transition matrix)" in text
        assert "llava" not in text.lower() and "vision-language" not in text  # nothing of the name's VLM survives
    if labels.endswith("-R"):
        assert "bias reduction, -R, blocks of 16 images" in text
    if LABELS_KIND[labels] in ("synthetic", "human"):
        assert "Improved Baselines" not in text


def test_synthetic_labels_built_as_a_vlm_set_by_the_cli(cli, tmp_path):
    data = make_legacy_dict(n=20)
    (tmp_path / "run").mkdir()
    source = write_pickle(tmp_path / "run" / "labels.pkl", data)
    log = {"provenance": PROVENANCES["synthetic-strong"]}
    (tmp_path / "run" / "labels.json").write_text(json.dumps(log), encoding="utf-8")
    out, log_option = tmp_path / "repo", ("--labels-log", tmp_path / "run" / "labels.json")
    refused = cli("build", source, "--dataset", "aclcifar10", "-o", out, *log_option)
    assert refused.exit_code == 2 and not out.exists()
    assert "cifar10-strong" in refused.output and "--allow-kind-mismatch" in refused.output
    assert cli("build", source, "--dataset", "aclcifar10", "-o", out, "--allow-kind-mismatch", *log_option).exit_code == 0
    card, text = card_of(out)
    assert "synthetic-labels" in card["tags"] and "vlm-labels" not in card["tags"]
    assert "LLaVA" not in text and "labeler | synthetic" in text


def test_labels_log_option(cli, tmp_path):
    source = write_pickle(tmp_path / "labels.pkl", make_legacy_dict(n=20))
    log = tmp_path / "elsewhere.json"
    log.write_text(json.dumps({"provenance": PROVENANCES["llava-R"]}), encoding="utf-8")
    out = tmp_path / "repo"
    assert cli("build", source, "-d", "aclcifar10", "-o", out, "--labels-log", log).exit_code == 2
    result = cli("build", source, "-d", "aclcifar10-r", "-o", out, "--labels-log", log)
    assert result.exit_code == 0, result.output
    assert "bias-reduced (-R) VLM labels" in card_of(out)[1]
    assert json.loads((out / "aclbuild.json").read_text())["provenance"]["r_block"] == 16
    log.write_text("{}", encoding="utf-8")
    assert cli("build", source, "-d", "aclcifar10-r", "-o", tmp_path / "r2", "--labels-log", log).exit_code == 2


def test_repo_id_authors_and_contact(cli, legacy_pickle, tmp_path):
    out = tmp_path / "named"
    result = cli(
        "build", legacy_pickle, "-d", "aclcifar10", "-o", out, "--repo-id", "aclorg/aclcifar10",
        "--card-author", "Ada Lovelace", "--card-author", "Alan Turing", "--contact", "cl@example.org",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    text = card_of(out)[1]
    assert 'load_dataset("aclorg/aclcifar10")' in text and "YOUR_ORG" not in text
    assert "**Curated by:** Ada Lovelace, Alan Turing" in text and "**Shared by:** Ada Lovelace, Alan Turing" in text
    assert "## Dataset Card Authors\n\nAda Lovelace, Alan Turing" in text and "cl@example.org" in text
    assert json.loads((out / "aclbuild.json").read_text())["repo_id"] == "aclorg/aclcifar10"
    plain = tmp_path / "plain"
    assert cli("build", legacy_pickle, "-d", "aclcifar10", "-o", plain).exit_code == 0
    text = card_of(plain)[1]
    assert 'load_dataset("YOUR_ORG/aclcifar10")' in text and "## Dataset Card Authors\n\nNot given." in text
    bad = cli("build", legacy_pickle, "-d", "aclcifar10", "-o", tmp_path / "bad", "--repo-id", "aclcifar10")
    assert bad.exit_code == 2 and "ORG/NAME" in bad.output and not (tmp_path / "bad").exists()


def test_sizes_bias_and_rounds_come_from_the_data(tmp_path):
    out = tmp_path / "repo"
    train, test = records(30, skew=9), records(7, seed=2, with_cls=False)
    build_repository(get_variant("aclcifar10"), train, test, out, provenance=PROVENANCES["llava"] | {"num_rounds": 9})
    text = card_of(out)[1]
    assert "50,000 CIFAR-10" not in text and "30 training images, each with 3 complementary" in text
    assert "| train | 30 | CIFAR-10's training set, in the archive's order (30 of its 50,000) |" in text
    assert "| test | 7 | CIFAR-10's test set (7 of its 10,000) |" in text
    shares = np.bincount([c for r in train for c in r.cl_labels], minlength=10) / 90
    assert f"`truck` is the most frequent CL ({100 * shares[9]:.1f}% of CLs)" in text
    noisy = sum(c == r.ord_label for r in train for c in r.cl_labels)
    assert f"Noise: {noisy} of the 90 (image, CL) pairs" in text
    assert "Rounds: 9 per image, one CL each; this set keeps the first 3." in text


def test_licences_and_class_names_follow_the_base(tmp_path):
    min10 = tmp_path / "min10"
    d = make_legacy_dict(n=10, size=64)
    train = [ClRecord(*row[:3], tuple(row[3])) for row in zip(d["names"], d["images"], d["ord_labels"], d["cl_labels"])]
    build_repository(get_variant("aclmin10"), train, None, min10)
    data, text = card_of(min10)
    assert data["license"] == "other" and data["task_ids"] == ["multi-class-image-classification"]
    assert "ImageNet's terms of access" in text and "Tiny ImageNet Visual Recognition Challenge" in text
    assert "0 `sulphur butterfly`, 1 `backpack`" in text
    cifar20 = tmp_path / "cifar20"
    build_repository(get_variant("aclcifar20"), records(), None, cifar20)
    data, text = card_of(cifar20)
    assert "It covers the complementary labels" in text
    assert "the images keep their own terms: the CIFAR images" in text and "Krizhevsky" in text
    assert "3 `food_containers`, 4 `fruit, vegetables and mushrooms`" in text
    assert "| `fruit, vegetables and mushrooms` |" in text  # the CL table writes names the same way
    names = data["dataset_info"]["features"][2]["dtype"]["class_label"]["names"]
    assert names["4"] == "fruit, vegetables and mushrooms"


def test_an_unknown_labeler_is_named_not_guessed(tmp_path):
    provenance = {"labeler": "oracle", "num_rounds": 3}
    with pytest.raises(InputError, match="unknown labeler 'oracle'"):
        build_repository(get_variant("aclcifar10"), records(), None, tmp_path / "r", provenance=provenance)
    build_repository(get_variant("aclcifar10"), records(), None, tmp_path / "r", provenance=provenance,
                     allow_kind_mismatch=True)  # fmt: skip
    data, text = card_of(tmp_path / "r")
    assert not set(data["tags"]) & KIND_TAGS and data["annotations_creators"] == ["other"]
    assert "The labeler `oracle`, of which nothing else is recorded." in text and "LLaVA" not in text
