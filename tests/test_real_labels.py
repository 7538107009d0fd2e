"""The real VLM labels of ACLMIN10, ACLMIN10-R and ACLMIN20 (../shared/data/acl-labels) built into repositories.

True labels follow from the wnid in each file name; the images are placeholders in a tiny-imagenet-200 tree
(the real images are not redistributable). The noise rates must equal the published ones (vlm-labeling.md).
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import SHARED

LABELS = SHARED / "data" / "acl-labels"
pytestmark = pytest.mark.skipif(not LABELS.is_dir(), reason="../shared/data/acl-labels is absent")

PUBLISHED_NOISE = {"aclmin10": 0.0066, "aclmin10-r": 0.0054, "aclmin20": 0.0086}


def _placeholder_tree(root: Path, names: set[str]) -> Path:
    """tiny-imagenet-200 with one shared placeholder JPEG per named training file and one val image per wnid."""
    buf = io.BytesIO()
    Image.fromarray(np.full((64, 64, 3), 127, np.uint8)).save(buf, format="JPEG")
    jpeg = buf.getvalue()
    tree = root / "tiny-imagenet-200"
    wnids = sorted({n.split("_")[0] for n in names})
    for name in names:
        folder = tree / "train" / name.split("_")[0] / "images"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(jpeg)
    (tree / "val" / "images").mkdir(parents=True)
    lines = []
    for i, wnid in enumerate(wnids):
        (tree / "val" / "images" / f"val_{i}.JPEG").write_bytes(jpeg)
        lines.append(f"val_{i}.JPEG\t{wnid}\t0\t0\t63\t63")
    (tree / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    (tree / "wnids.txt").write_text("\n".join(wnids) + "\n")
    return tree


@pytest.fixture(scope="module")
def tiny_imagenet(tmp_path_factory) -> Path:
    names = set()
    for stem in ("aclmin10", "aclmin20"):
        with open(LABELS / f"{stem}.csv", newline="") as f:
            names |= {row[0] for row in csv.reader(f)}
    return _placeholder_tree(tmp_path_factory.mktemp("tin"), names)


@pytest.mark.parametrize(
    "dataset, csv_name, num_cl",
    [("aclmin10", "aclmin10.csv", 3), ("aclmin10-r", "aclmin10r.csv", 6), ("aclmin20", "aclmin20.csv", 3)],
)
def test_published_noise_rates(cli, tmp_path, tiny_imagenet, dataset, csv_name, num_cl):
    out = tmp_path / dataset
    result = cli(
        "build", LABELS / csv_name, "--dataset", dataset, "--images", tiny_imagenet, "--num-cl", num_cl, "-o", out
    )
    assert result.exit_code == 0, result.output
    assert cli("validate", out).exit_code == 0
    stats = json.loads(cli("stats", out, "--json").stdout)
    train = stats["train"]
    assert train["cls_per_image"] == num_cl
    assert round(train["noise_rate"], 4) == PUBLISHED_NOISE[dataset]
    with open(LABELS / csv_name, newline="") as f:
        rows = list(csv.reader(f))
    assert train["num_examples"] == len(rows)
    if dataset.endswith("-r"):
        assert train["repeated_cl_rate"] == 0.0  # -R draws distinct CLs per image
        assert max(train["cl_marginals"]) < 0.13 and min(train["cl_marginals"]) > 0.04
    card = (out / "README.md").read_text()
    assert f"**{100 * PUBLISHED_NOISE[dataset]:.2f}%**" in card
