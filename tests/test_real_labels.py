"""Every released label CSV (../shared/data/acl-labels) built into a repository, as `aclbuild build` does it.

The images are placeholders (CIFAR and TinyImageNet are not redistributable): fake archives in the real formats
whose file names are the CSVs' in the same order. CIFAR-100's train split names two images ``baby_s_000333.png``
(rows 3,440 and 50,000), and so does the fake, so ACLCIFAR20 must be joined by position. For the MicroImageNet sets
the true label follows from the wnid in each file name, so their statistics must equal what the reference tool
printed (reference-logs/) and the published noise rates (vlm-labeling.md).
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from aclbuild.loaders.images import read_source_images
from aclbuild.registry import BASES, get_variant
from aclbuild.repository import decode_image, label_arrays, read_table
from tests.conftest import SHARED
from tests.fakes import cifar_archive_with_names, make_tinyimagenet

LABELS = SHARED / "data" / "acl-labels"
pytestmark = pytest.mark.skipif(not LABELS.is_dir(), reason="../shared/data/acl-labels is absent")

# dataset -> (label CSV, --num-cl or None for the default, CLs per image in the built set)
RELEASED = {
    "aclcifar10": ("aclcifar10.csv", None, 3),  # the CSV keeps 9 rounds; the released set is the first 3
    "aclcifar10-r": ("aclcifar10r.csv", 6, 6),
    "aclcifar20": ("aclcifar20.csv", None, 3),
    "aclmin10": ("aclmin10.csv", None, 3),
    "aclmin10-r": ("aclmin10r.csv", 6, 6),
    "aclmin20": ("aclmin20.csv", None, 3),
}
MIN_LOGS = {"aclmin10": "aclmin10", "aclmin10-r": "aclmin10r", "aclmin20": "aclmin20"}
PUBLISHED_NOISE = {"aclmin10": 0.0066, "aclmin10-r": 0.0054, "aclmin20": 0.0086}
REPEATED_NAME, REPEATED_ROWS = "baby_s_000333.png", (3_439, 49_999)  # 0-based rows of aclcifar20.csv


def _read_csv(name: str) -> list[list[str]]:
    with open(LABELS / name, newline="", encoding="utf-8") as f:
        return list(csv.reader(f))


@pytest.fixture(scope="module")
def released(tmp_path_factory):
    """dataset -> the repository folder `aclbuild build` made from its CSV (built once per module, on first use)."""
    from aclbuild.cli import app

    root = tmp_path_factory.mktemp("released")
    cifar10_names = [row[0] for row in _read_csv("aclcifar10.csv")]
    images = {
        "cifar10": cifar_archive_with_names(root / "cifar10", "cifar10", cifar10_names),
        "cifar20": cifar_archive_with_names(root / "cifar20", "cifar20", [row[0] for row in _read_csv("aclcifar20.csv")]),
        # <wnid>_0..499.JPEG under train/<wnid>/images/: the real names, which the MIN CSVs list in the same order
        "tiny": make_tinyimagenet(root / "tiny", ("min10", "min20"), n_train=500, n_val=1, as_zip=True),
    }
    built: dict[str, Path] = {}

    def build(dataset: str) -> Path:
        if dataset not in built:
            csv_name, num_cl, _ = RELEASED[dataset]
            base = get_variant(dataset).base.name
            out = root / dataset
            args = ["build", str(LABELS / csv_name), "--dataset", dataset, "-o", str(out)]
            args += ["--source", str(images.get(base, images["tiny"]))]
            args += ["--num-cl", str(num_cl)] if num_cl else []
            with pytest.MonkeyPatch.context() as env:
                env.setenv("HF_HOME", str(root / "hf_home"))
                env.setenv("HF_HUB_OFFLINE", "1")
                result = CliRunner().invoke(app, args, prog_name="aclbuild")
            assert result.exit_code == 0, result.output
            built[dataset] = out
        return built[dataset]

    return build


def _stats(cli, folder: Path) -> dict:
    result = cli("stats", folder, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)["train"]


@pytest.mark.parametrize("dataset", list(RELEASED))
def test_every_released_csv_builds(cli, released, dataset):
    out = released(dataset)
    csv_name, _, num_cl = RELEASED[dataset]
    rows = _read_csv(csv_name)
    base = get_variant(dataset).base
    assert cli("validate", out).exit_code == 0
    table = read_table(out, "train", columns=["names", "ord_labels", "cl_labels"])
    assert table.column("names").to_pylist() == [row[0] for row in rows]
    _, cl_labels = label_arrays(table)
    expected = [[base.class_index(label) for label in row[1 : 1 + num_cl]] for row in rows]
    assert cl_labels.tolist() == expected  # the first num_cl rounds of each row, in CSV order
    train = _stats(cli, out)
    assert train["num_examples"] == len(rows) == base.num_train
    assert train["cls_per_image"] == num_cl
    if dataset.endswith("-r"):
        assert train["repeated_cl_rate"] == 0.0  # -R draws distinct CLs per image


def test_aclcifar20_keeps_cifar100s_repeated_name_by_position(released):
    out = released("aclcifar20")
    table = read_table(out, "train")
    names = table.column("names").to_pylist()
    assert [i for i, name in enumerate(names) if name == REPEATED_NAME] == list(REPEATED_ROWS)
    images = table.column("images").combine_chunks().field("bytes")
    for row in REPEATED_ROWS:  # each keeps the image and true label of its own archive position
        image = decode_image(images[row].as_py())
        assert (int(image[0, 0, 0]), int(image[0, 1, 0])) == (row % 256, row // 256)
        assert table.column("ord_labels")[row].as_py() == row % 20


def parse_reference_log(path: Path) -> tuple[str, list[list[str]]]:
    """The noise rate and the transition matrix (rows of numbers) as the reference tool printed them, as text."""
    text = path.read_text(encoding="utf-8")
    noise = re.search(r"^Noise (\S+)$", text, re.MULTILINE)
    assert noise and "tensor(" in text, f"{path} is not a reference log"
    body = text[text.index("tensor(") + len("tensor(") :]
    return noise[1], [[cell.strip() for cell in row.split(",")] for row in re.findall(r"\[([^\[\]]+)\]", body)]


def half_unit(printed: str) -> float:
    """Half a unit in the last printed digit: 5e-5 for "0.1180", 5e-8 for "1.1111e-03"."""
    mantissa, _, exponent = printed.lower().partition("e")
    decimals = len(mantissa.partition(".")[2])
    return 0.5 * 10.0 ** (-decimals + int(exponent or 0))


@pytest.mark.parametrize("dataset", list(MIN_LOGS))
def test_stats_equal_the_reference_log(cli, released, dataset):
    train = _stats(cli, released(dataset))
    noise, matrix = parse_reference_log(LABELS / "reference-logs" / f"{MIN_LOGS[dataset]}.logs.txt")
    # The reference printed a float32: ours must round to the same float32.
    assert np.float32(train["noise_rate"]) == np.float32(float(noise)), (train["noise_rate"], noise)
    ours = np.array(train["transition_matrix"])
    assert ours.shape == (len(matrix), len(matrix[0]))
    for y, row in enumerate(matrix):
        for j, printed in enumerate(row):
            assert abs(ours[y, j] - float(printed)) <= half_unit(printed) + 1e-7 * abs(ours[y, j]), (y, j, printed)


@pytest.mark.parametrize("dataset", list(PUBLISHED_NOISE))
def test_published_noise_rates_and_card(cli, released, dataset):
    out = released(dataset)
    train = _stats(cli, out)
    assert round(train["noise_rate"], 4) == PUBLISHED_NOISE[dataset]
    if dataset.endswith("-r"):
        assert max(train["cl_marginals"]) < 0.13 and min(train["cl_marginals"]) > 0.04
    assert f"({100 * PUBLISHED_NOISE[dataset]:.2f}%) name the image's true class" in (out / "README.md").read_text()


def test_min_csvs_follow_the_source_order(released):
    """The MIN CSVs list the images in the source's order, so they are joined by position as well."""
    released("aclmin20")  # makes the fake zip
    tiny = next(Path(p) for p in Path(released("aclmin10")).parent.glob("tiny*/tiny-imagenet-200.zip"))
    for stem, base in (("aclmin10.csv", "min10"), ("aclmin20.csv", "min20")):
        source = read_source_images(BASES[base], tiny, "train", pixels=False)
        assert [row[0] for row in _read_csv(stem)] == [r.name for r in source]
