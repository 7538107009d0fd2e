"""`aclbuild generate --labeler clip` with tiny random CLIP and SigLIP models: the CLI end to end, every label
against an independent computation with plain transformers (``logits_per_image``), ordinary mode, -R, one image
pass per image, build -> validate, and the one-line refusals."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from tiny_clip import write_tiny_clip, write_tiny_siglip

from aclbuild.loaders.labels_table import table_provenance

DIGITS = [str(d) for d in range(10)]
BUILDERS = {"clip": write_tiny_clip, "siglip": write_tiny_siglip}


@pytest.fixture(scope="module", params=sorted(BUILDERS))
def tiny_model(request, tmp_path_factory) -> Path:
    return BUILDERS[request.param](tmp_path_factory.mktemp(request.param) / "model", DIGITS)


@pytest.fixture(scope="module")
def train_images() -> list[np.ndarray]:
    from aclbuild.loaders.digits import read_digits

    return [r.image for r in read_digits("train")]


def rows(folder: Path) -> list[dict]:
    return pq.read_table(folder / "labels.parquet").to_pylist()


def plain_logits(folder: Path, image: np.ndarray, texts: list[str]) -> np.ndarray:
    """``logits_per_image`` of one image against ``texts``, as transformers' own forward pass computes them."""
    import torch
    from PIL import Image
    from transformers import AutoImageProcessor, AutoModel, AutoTokenizer

    model = AutoModel.from_pretrained(folder).eval()
    siglip = model.config.model_type == "siglip"
    padding = {"padding": "max_length", "max_length": 16} if siglip else {"padding": True}
    tokens = AutoTokenizer.from_pretrained(folder)(texts, return_tensors="pt", **padding)
    pixels = AutoImageProcessor.from_pretrained(folder)(images=[Image.fromarray(image)], return_tensors="pt")
    with torch.no_grad():
        return model(**tokens, **pixels).logits_per_image[0].numpy()


def generate(cli, model: Path, out: Path, *args):
    result = cli("generate", "digits", "--labeler", "clip", "--model", model, "--output-dir", out, *args)
    assert result.exit_code == 0, result.output
    return rows(out)


def test_cl_is_the_least_likely_shown_candidate(cli, tiny_model, train_images, tmp_path):
    template = "a photo of a {name} photo"
    labels = generate(cli, tiny_model, tmp_path / "out", "--limit", "12", "--batch-size", "5",
                      "--clip-template", template)  # fmt: skip
    provenance = table_provenance(tmp_path / "out" / "labels.parquet")
    assert provenance["labeler"] == "clip" and provenance["model"] == str(tiny_model)
    assert provenance["revision"] == "local" and provenance["clip_template"] == template
    assert provenance["scoring"] == "zero-shot" and "max_new_tokens" not in provenance and "prompt" not in provenance
    assert len(labels) == 36 and all(r["status"] == "ok" and r["label"] in r["candidates"] for r in labels)
    assert len({r["label"] for r in labels}) > 2  # not one class everywhere: the comparison below means something
    for r in labels:
        texts = [template.format(name=name) for name in r["candidate_names"]]
        logits = plain_logits(tiny_model, train_images[r["index"]], texts)
        assert r["label"] == r["candidates"][int(np.argmin(logits))], r
        assert r["answer"] == DIGITS[r["label"]]


def test_ordinary_mode_is_the_argmax_over_all_classes(cli, tiny_model, train_images, tmp_path):
    labels = generate(cli, tiny_model, tmp_path / "out", "--mode", "ord", "--num-rounds", "1", "--limit", "10")
    texts = [f"a photo of a {n}" for n in DIGITS]
    assert [r["label"] for r in labels] == [int(np.argmax(plain_logits(tiny_model, train_images[i], texts)))
                                            for i in range(10)]  # fmt: skip
    assert all(len(r["candidates"]) == 10 for r in labels)


def test_bias_reduction_and_build_validate(cli, tiny_model, tmp_path):
    labels = generate(cli, tiny_model, tmp_path / "out", "-R", "--r-block", "8", "--limit", "20")
    assert len(labels) == 60 and all(r["label"] in r["candidates"] for r in labels)
    by_image: dict[int, list[int]] = {}
    for r in labels:
        by_image.setdefault(r["index"], []).append(r["label"])
    assert all(len(set(cls)) == 3 for cls in by_image.values())  # -R never offers an image's earlier CL again
    refused = cli("build", tmp_path / "out" / "labels.parquet", "--dataset", "acldigits", "-o", tmp_path / "no")
    assert refused.exit_code == 2 and "CLIP zero-shot labels" in refused.stderr
    built = cli("build", tmp_path / "out" / "labels.parquet", "--dataset", "acldigits", "--allow-kind-mismatch",
                "-o", tmp_path / "repo")  # fmt: skip
    assert built.exit_code == 0, built.output
    assert cli("validate", tmp_path / "repo").exit_code == 0
    card = (tmp_path / "repo" / "README.md").read_text(encoding="utf-8")
    assert "The labels are CLIP zero-shot labels." in card and "clip-labels" in card


@pytest.mark.parametrize("reduced", [False, True])
def test_each_image_goes_through_the_image_tower_once(tiny_model, tmp_path, reduced, monkeypatch):
    from aclbuild.labeling.clip import ClipBackend
    from aclbuild.labeling.runner import GenerateSettings, run_generate

    settings = GenerateSettings(base="digits", labeler="clip", model=str(tiny_model), limit=12,
                                bias_reduction=reduced, r_block=5)  # fmt: skip
    backend = ClipBackend.from_pretrained(str(tiny_model), DIGITS, "cl")
    embedded = []  # the number of images of each call of the image tower
    image_features = backend.model.get_image_features

    def counted(pixel_values, **kwargs):
        embedded.append(len(pixel_values))
        return image_features(pixel_values=pixel_values, **kwargs)

    monkeypatch.setattr(backend.model, "get_image_features", counted)
    run_generate(settings, None, tmp_path / "out", batch_size=4, backend=backend)
    assert sum(embedded) == 12
    again = generate_api(tiny_model, tmp_path / "again", reduced, batch_size=7)
    assert [r["label"] for r in rows(tmp_path / "out")] == [r["label"] for r in again]  # any batch size


def generate_api(model: Path, out: Path, reduced: bool, batch_size: int) -> list[dict]:
    from aclbuild.labeling.runner import GenerateSettings, run_generate

    settings = GenerateSettings(base="digits", labeler="clip", model=str(model), limit=12, bias_reduction=reduced,
                                r_block=5)  # fmt: skip
    return rows(run_generate(settings, None, out, batch_size=batch_size))


@pytest.fixture(scope="module")
def tiny_llava(tmp_path_factory) -> Path:
    """A chat VLM: AutoModel loads its LlavaNextModel, which embeds images but no texts."""
    from tiny_llava import build_tiny_llava

    return build_tiny_llava(tmp_path_factory.mktemp("tiny-llava") / "model")


def _without(folder: Path, tmp_path: Path, drop: str) -> Path:
    import shutil

    copy = shutil.copytree(folder, tmp_path / f"no-{drop}")
    (copy / drop).unlink()
    return copy


def _text_only(folder: Path, tmp_path: Path) -> Path:
    """The tiny CLIP's text half alone, saved as a model of its own (AutoModel loads it as a CLIPTextModel)."""
    from transformers import AutoModel, CLIPTextModel

    out = tmp_path / "text-only"
    CLIPTextModel(AutoModel.from_pretrained(folder).config.text_config).save_pretrained(out)
    for name in ("tokenizer.json", "tokenizer_config.json", "preprocessor_config.json"):
        (out / name).write_bytes((folder / name).read_bytes())
    return out


@pytest.mark.parametrize(
    "case, words",
    [
        ("missing", "cannot load a model"),
        ("no-weights", "cannot load a model"),
        ("text-only", "cannot embed images"),
        ("chat-vlm", "cannot embed texts (no get_text_features)"),
        ("no-image-processor", "no image processor"),
        ("default-model", "--labeler clip needs --model"),
        ("bad-template", "--clip-template must contain {name}"),
        ("template-without-clip", "--clip-template goes with --labeler clip only"),
    ],
)
def test_refusals_are_one_line_exit_2(cli, tmp_path, case, words, request):
    clip = write_tiny_clip(tmp_path / "clip", DIGITS)
    tiny_llava = request.getfixturevalue("tiny_llava") if case == "chat-vlm" else None
    args = {
        "missing": ["--labeler", "clip", "--model", tmp_path / "nowhere"],
        "no-weights": ["--labeler", "clip", "--model", _without(clip, tmp_path, "model.safetensors")],
        "text-only": ["--labeler", "clip", "--model", _text_only(clip, tmp_path)],
        "chat-vlm": ["--labeler", "clip", "--model", tiny_llava],
        "no-image-processor": ["--labeler", "clip", "--model", _without(clip, tmp_path, "preprocessor_config.json")],
        "default-model": ["--labeler", "clip"],
        "bad-template": ["--labeler", "clip", "--model", clip, "--clip-template", "a photo of a {}"],
        "template-without-clip": ["--labeler", "synthetic", "--clip-template", "a {name}"],
    }[case]
    result = cli("generate", "digits", "--limit", "4", "-o", tmp_path / "out", *args)
    assert result.exit_code == 2, result.output
    assert words in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "Traceback" not in result.output
