"""Any image-classification source through generate -> build -> validate -> load_dataset: an image folder, a Parquet
folder written by ``datasets``, and a tiny dataset served by the loopback Hub; bad input is one line, exit 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from datasets import ClassLabel, Dataset, Features, Image, Value, load_dataset
from hub_server import TOKEN, HubServer
from PIL import Image as PILImage

from aclbuild.loaders import hf_source
from aclbuild.loaders.hf_source import SourceSpec, split_records

CLASSES = ["cat", "dog", "bird"]


def image_folder(root: Path, sizes=((12, 12), (10, 12))) -> Path:
    """An image folder with one sub-folder per class, train and test, images of two sizes."""
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for name in CLASSES:
            (root / split / name).mkdir(parents=True)
            for i in range(3):
                h, w = sizes[i % len(sizes)]
                pixels = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
                PILImage.fromarray(pixels).save(root / split / name / f"{i}.png")
    return root


def tiny_dataset(n: int = 9, extra_label: bool = False) -> Dataset:
    rng = np.random.default_rng(1)
    images = [PILImage.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)) for _ in range(n)]
    columns = {"img": images, "fine": [i % 3 for i in range(n)], "id": list(range(n))}
    features = {"img": Image(), "fine": ClassLabel(names=["n001", "n002", "n003"]), "id": Value("int64")}
    if extra_label:
        columns["coarse"], features["coarse"] = [0] * n, ClassLabel(names=["all"])
    return Dataset.from_dict(columns, features=Features(features))


def through_build(cli, tmp_path: Path, source: str, *generate_options: str, build_options: tuple = ()) -> Path:
    """generate (synthetic) -> build -> validate; returns the repository folder."""
    labels, repo = tmp_path / "labels", tmp_path / "repo"
    result = cli("generate", "pets", "--source", source, "--labeler", "synthetic", "--num-rounds", "2", "-o", labels,
                 *generate_options)  # fmt: skip
    assert result.exit_code == 0, result.output
    result = cli("build", labels / "labels.parquet", "-d", "pets-uniform", "--source", source, "-o", repo,
                 *build_options)
    assert result.exit_code == 0, result.output
    result = cli("validate", repo)
    assert result.exit_code == 0, result.output
    return repo


def test_image_folder_generate_build_validate_load(cli, tmp_path):
    folder = image_folder(tmp_path / "imgs")
    repo = through_build(cli, tmp_path, str(folder), build_options=("--license", "cc-by-4.0"))
    train = load_dataset(str(repo), split="train")
    assert train.features["ord_labels"].names == sorted(CLASSES)  # imagefolder's ClassLabel: sorted folder names
    assert len(train) == 9 and all(np.asarray(im).shape == (12, 12, 3) for im in train["images"])  # resized to 12
    assert len(load_dataset(str(repo), split="test")) == 9
    card = (repo / "README.md").read_text(encoding="utf-8")
    assert "local folder imgs" in card and "license: cc-by-4.0" in card and str(tmp_path) not in card
    assert "resized to 12x12" in card and "unchanged apart from" not in card  # the card says the images were resized
    manifest = json.loads((repo / "aclbuild.json").read_text(encoding="utf-8"))
    assert manifest["provenance"]["source"]["image_size"] == 12
    result = cli("build", tmp_path / "labels" / "labels.parquet", "-d", "aclpets", "--source", folder,
                 "-o", tmp_path / "other", "--allow-kind-mismatch", "--license", "mit")  # fmt: skip
    assert result.exit_code == 0, result.output
    result = cli("build", tmp_path / "labels" / "labels.parquet", "-d", "cifar10-uniform", "-o", tmp_path / "x")
    assert result.exit_code == 2 and "acl" in result.output  # names the custom base's variants


def test_parquet_folder_with_class_names_file(cli, tmp_path):
    dataset = tiny_dataset()
    folder = tmp_path / "parquet"
    folder.mkdir()
    dataset.to_parquet(str(folder / "train.parquet"))
    names = tmp_path / "names.txt"
    names.write_text("fox\tred fox\nwolf\tgrey wolf\nbear\n", encoding="utf-8")
    repo = through_build(cli, tmp_path, str(folder), "--class-names", str(names))
    train = load_dataset(str(repo), split="train")
    assert train.features["ord_labels"].names == ["red fox", "grey wolf", "bear"]  # the long names, published
    assert train["ord_labels"] == dataset["fine"]  # the source's order and labels
    labels = pq.read_table(tmp_path / "labels" / "labels.parquet").to_pylist()
    assert {n for row in labels for n in row["candidate_names"]} <= {"fox", "wolf", "bear"}  # short prompt names
    assert "n001" in (repo / "README.md").read_text(encoding="utf-8")  # the source's own names stay on record


def test_hub_dataset_through_loopback_hub(tmp_path):
    """Pushed with datasets' own push_to_hub; generate and build read it by id; the card carries id and revision."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING"))}
    with HubServer() as hub:
        env.update(HF_ENDPOINT=hub.url, HF_HUB_DISABLE_XET="1", HF_TOKEN=TOKEN, HF_HOME=str(tmp_path / "hf_home"),
                   HF_HUB_DISABLE_TELEMETRY="1", HF_HUB_DISABLE_PROGRESS_BARS="1", COLUMNS="200")  # fmt: skip
        push = textwrap.dedent("""
            import sys
            sys.path.insert(0, sys.argv[1])
            from test_custom_source import tiny_dataset
            from huggingface_hub import DatasetCard
            tiny_dataset().push_to_hub("aclorg/tinyset")
            card = DatasetCard.load("aclorg/tinyset")
            card.data.license = "mit"  # the licence build must carry over
            card.push_to_hub("aclorg/tinyset")
        """)  # fmt: skip

        def run(*args: str) -> subprocess.CompletedProcess:
            return subprocess.run(args, env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)

        proc = run(sys.executable, "-c", push, str(Path(__file__).parent))
        assert proc.returncode == 0, proc.stderr[-3000:]
        revision = hub.head("aclorg/tinyset")
        aclbuild = [sys.executable, "-m", "aclbuild"]
        proc = run(*aclbuild, "generate", "tiny", "--source", "aclorg/tinyset", "--labeler", "synthetic", "-o", "lab",
                   "--num-rounds", "2")
        assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
        proc = run(*aclbuild, "build", "lab/labels.parquet", "-d", "tiny-uniform", "-o", "repo")
        assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
        proc = run(*aclbuild, "push", "repo", "--repo-id", "aclorg/tiny-uniform")  # push and verify as any other
        assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
        proc = run(*aclbuild, "verify", "aclorg/tiny-uniform", "--against", "repo")
        assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    repo = tmp_path / "repo"
    card = (repo / "README.md").read_text(encoding="utf-8")
    assert "aclorg/tinyset" in card and revision in card and "license: mit" in card
    assert len(load_dataset(str(repo), split="train")) == 9


def test_records_decode_only_what_is_read(tmp_path, monkeypatch):
    """Images are decoded one record at a time, never the whole split; slicing decodes nothing."""
    folder = tmp_path / "parquet"
    folder.mkdir()
    tiny_dataset(30).to_parquet(str(folder / "train.parquet"))
    decoded = []
    real = hf_source.decode_image
    monkeypatch.setattr(hf_source, "decode_image", lambda cell, side: decoded.append(1) or real(cell, side))
    records, description = split_records(SourceSpec(str(folder)))
    head = records[:5]
    assert len(head) == 5 and description["image_size"] == 8 and decoded == []
    assert head[4].ord_label == 1 and head[4].name == "train_0000004" and decoded == []  # name and label: no image
    assert head[4].image.shape == (8, 8, 3) and len(decoded) == 1
    assert head[4].image.shape == (8, 8, 3) and len(records.names) == 30  # a repeated read is cached
    assert len(decoded) == 1


@pytest.mark.parametrize(
    ("options", "words"),
    [
        (["--label-column", "nope"], "--label-column 'nope' is not a ClassLabel column"),
        (["--image-column", "id"], "--image-column 'id' is not an Image column"),
        ([], "2 ClassLabel columns (fine, coarse)"),
    ],
)
def test_bad_columns_are_one_line_exit_2(cli, tmp_path, options, words):
    folder = tmp_path / "parquet"
    folder.mkdir()
    tiny_dataset(extra_label=True).to_parquet(str(folder / "train.parquet"))
    result = cli("generate", "pets", "--source", folder, "--labeler", "synthetic", "-o", tmp_path / "out", *options)
    assert result.exit_code == 2 and words in result.output and len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_no_class_label_and_missing_id_offline_are_one_line_exit_2(cli, tmp_path, monkeypatch):
    folder = tmp_path / "parquet"
    folder.mkdir()
    Dataset.from_dict({"img": [PILImage.new("RGB", (4, 4))], "y": [0]}, features=Features(
        {"img": Image(), "y": Value("int64")})).to_parquet(str(folder / "train.parquet"))  # fmt: skip
    result = cli("generate", "pets", "--source", folder, "--labeler", "synthetic", "-o", tmp_path / "a")
    assert result.exit_code == 2 and "no ClassLabel column (columns: img, y)" in result.output
    import datasets.config
    import huggingface_hub.constants

    # offline, as HF_HUB_OFFLINE=1 makes it (read at import): the unreachable Hub's retries took 23 s here
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    result = cli("generate", "pets", "--source", "noorg/missing", "--labeler", "synthetic", "-o", tmp_path / "b")
    assert result.exit_code == 2 and "noorg/missing" in result.output
    assert len(result.output.strip().splitlines()) == 1
    result = cli("generate", "pets", "--labeler", "synthetic", "-o", tmp_path / "c")
    assert result.exit_code == 2 and "--source ORG/NAME_OR_FOLDER" in result.output
    result = cli("generate", "digits", "--split", "test", "--labeler", "synthetic", "-o", tmp_path / "f")
    assert result.exit_code == 2 and "are for a custom source; base digits has its own" in result.output
    result = cli("generate", "pets", "--source", image_folder(tmp_path / "imgs"), "-o", tmp_path / "e")  # 3 classes
    assert result.exit_code == 2 and "has 3 classes; a query shows 4 candidates" in result.output
    names = tmp_path / "names.txt"
    names.write_text("a\nb\n", encoding="utf-8")
    tiny = tmp_path / "tiny"
    tiny.mkdir()
    tiny_dataset().to_parquet(str(tiny / "train.parquet"))
    result = cli("generate", "pets", "--source", tiny, "--class-names", names, "--labeler", "synthetic",
                 "-o", tmp_path / "d")  # fmt: skip
    assert result.exit_code == 2 and "gives 2 names; the source's ClassLabel has 3" in result.output


def test_save_to_disk_folder_reads_its_split(tmp_path):
    """A DatasetDict written by save_to_disk: its train and test splits."""
    from datasets import DatasetDict

    DatasetDict({"train": tiny_dataset(6), "test": tiny_dataset(3)}).save_to_disk(str(tmp_path / "saved"))
    records, description = split_records(SourceSpec(str(tmp_path / "saved"), split="test"))
    assert len(records) == 3 and description["class_names"] == ["n001", "n002", "n003"]
    assert records[2].image.shape == (8, 8, 3) and records[2].ord_label == 2


def test_generate_reads_only_the_images_it_labels(cli, tmp_path, monkeypatch):
    """generate --limit 5 on a 30-row source decodes at most those 5 images, each at most once."""
    folder = tmp_path / "parquet"
    folder.mkdir()
    tiny_dataset(30).to_parquet(str(folder / "train.parquet"))
    decoded = []
    real = hf_source.decode_image
    monkeypatch.setattr(hf_source, "decode_image", lambda cell, side: decoded.append(cell) or real(cell, side))
    result = cli("generate", "pets", "--source", folder, "--labeler", "synthetic", "--num-rounds", "2", "--limit", "5",
                 "-o", tmp_path / "out")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert len(decoded) <= 5
    assert pq.read_table(tmp_path / "out" / "labels.parquet").num_rows == 10


def test_llava_labels_a_custom_source(cli, tmp_path):
    """The tiny random LLaVA-NeXT, likelihood scoring and -R, on a 5-class image folder of 16x20 images."""
    from tiny_llava import build_tiny_llava

    model = build_tiny_llava(tmp_path / "model")
    rng = np.random.default_rng(2)
    for name in ("cat", "dog", "bird", "fish", "frog"):
        (tmp_path / "imgs" / "train" / name).mkdir(parents=True)
        for i in range(2):
            PILImage.fromarray(rng.integers(0, 255, (16, 20, 3), dtype=np.uint8)).save(tmp_path / "imgs" / "train" /
                                                                                      name / f"{i}.png")  # fmt: skip
    result = cli("generate", "pets", "--source", tmp_path / "imgs", "--model", model, "--scoring", "likelihood", "-R",
                 "--num-rounds", "2", "-o", tmp_path / "labels")  # fmt: skip
    assert result.exit_code == 0, result.output
    result = cli("build", tmp_path / "labels" / "labels.parquet", "-d", "aclpets-r", "--source", tmp_path / "imgs",
                 "-o", tmp_path / "repo")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert cli("validate", tmp_path / "repo").exit_code == 0
    train = load_dataset(str(tmp_path / "repo"), split="train")
    assert len(train) == 10 and np.asarray(train[0]["images"]).shape == (20, 20, 3)


def test_clip_labels_a_folder_of_your_own_photos(cli, tmp_path):
    """README's folder example: CLIP zero-shot on a custom source, built under acl<name> with the insisting flag."""
    from tests.tiny_clip import write_tiny_clip

    names = ["cat", "dog", "bird", "fish", "frog"]  # a VLM-style query shows 4 candidates, so at least 4 classes
    rng = np.random.default_rng(2)
    for split in ("train", "test"):
        for name in names:
            (tmp_path / "photos" / split / name).mkdir(parents=True)
            for i in range(2):
                pixels = rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)
                PILImage.fromarray(pixels).save(tmp_path / "photos" / split / name / f"{i}.png")
    model = write_tiny_clip(tmp_path / "clip", names)
    labels, repo = tmp_path / "labels", tmp_path / "repo"
    result = cli("generate", "pets", "--source", tmp_path / "photos", "--labeler", "clip", "--model", model,
                 "-o", labels)  # fmt: skip
    assert result.exit_code == 0, result.output
    refused = cli("build", labels / "labels.parquet", "--dataset", "aclpets", "--source", tmp_path / "photos",
                  "-o", repo)  # fmt: skip
    assert refused.exit_code == 2 and "--allow-kind-mismatch" in refused.stderr
    result = cli("build", labels / "labels.parquet", "--dataset", "aclpets", "--allow-kind-mismatch",
                 "--source", tmp_path / "photos", "-o", repo)  # fmt: skip
    assert result.exit_code == 0, result.output
    assert cli("validate", repo).exit_code == 0
    card = (repo / "README.md").read_text(encoding="utf-8")
    assert "CLIP zero-shot labels" in card and "local folder photos" in card
    assert len(load_dataset(str(repo), split="train")) == 10
    # the run read back on the same folder: replayed, its labels all lie in their candidates; asked again with its
    # candidate sets, CLIP gives the same labels
    replayed, again = tmp_path / "replayed", tmp_path / "again"
    result = cli("generate", "pets", "--source", tmp_path / "photos", "--labeler", "replay",
                 "--answers", labels / "labels.parquet", "--candidates-from", labels / "labels.parquet",
                 "-o", replayed)  # fmt: skip
    assert result.exit_code == 0, result.output
    assert json.loads((replayed / "labels.json").read_text())["statistics"]["containment"]["rate"] == 1.0
    result = cli("generate", "pets", "--source", tmp_path / "photos", "--labeler", "clip", "--model", model,
                 "--candidates-from", labels / "labels.parquet", "-o", again)  # fmt: skip
    assert result.exit_code == 0, result.output
    first, second, third = (pq.read_table(d / "labels.parquet").to_pylist() for d in (labels, replayed, again))
    assert [r["label"] for r in second] == [r["label"] for r in first] == [r["label"] for r in third]
    assert [sorted(r["candidates"]) for r in third] == [sorted(r["candidates"]) for r in first]
