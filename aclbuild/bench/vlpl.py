"""VLPL-style baselines for CL data: CLIP zero-shot scores, cached per dataset, turned into pseudo-labels.

s = softmax over classes of cosine(image, text "a photo of a {name}") / 0.01, as VLPL (Xing et al., 2023) does.
An image's positive pseudo-label is its top-scoring class among those that are not its CLs, kept when s > 0.3;
its CLs are known negatives; every other class is unknown (cll-benchmark.md). The scores of a dataset are computed
once per CLIP checkpoint and kept beside it (``<parent>/.aclbuild-clip/<folder>/`` for a repository folder, the
aclbuild cache for a Hub id), keyed by the checkpoint, its revision, the class names, the prompt template and the
temperature (:func:`score_key`), and by a fingerprint of the images. The ``CLIP-zero-shot`` row of the results is
the test accuracy of argmax s, so a reader sees how much of EM-PL is the pseudo-labels alone.

Example:
    >>> scores = clip_scores("out/digits-uniform", "openai/clip-vit-base-patch32", train, test)  # doctest: +SKIP
    >>> states = pseudo_label_states(train, scores["train"])                                      # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from aclbuild.atomic import atomic_write_bytes, atomic_write_text, remove_leftovers
from aclbuild.bench.results import RunRecord, run_folder, slug, start_run, write_run
from aclbuild.cl_data import ClData
from aclbuild.errors import SourceError
from aclbuild.progress import progress_bar

TEMPERATURE = 0.01
THRESHOLD = 0.3
PROMPT = "a photo of a {}"
OPENAI_MEAN, OPENAI_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)
ZERO_SHOT = "CLIP-zero-shot"


def cache_folder(dataset: str) -> Path:
    """Where the CLIP scores of ``dataset`` are kept: beside a repository folder, or in the aclbuild cache."""
    path = Path(dataset)
    if path.is_dir():
        return path.resolve().parent / ".aclbuild-clip" / path.resolve().name
    root = Path(os.environ.get("ACLBUILD_CACHE", Path.home() / ".cache" / "aclbuild"))
    return root / "clip-scores" / slug(dataset)


def _fingerprint(images: torch.Tensor) -> str:
    return hashlib.blake2b(images.contiguous().numpy().tobytes(), digest_size=8).hexdigest()


def _one_line(exc: Exception) -> str:
    return " ".join(str(exc).split())[:300]


def clip_revision(clip_model: str) -> str:
    """What identifies the checkpoint's weights: a Hub id's commit, or a folder's file names, sizes and times.

    A Hub id resolves to the commit its ``main`` points at (online) or that the local Hugging Face cache holds
    (offline), through the small ``config.json`` that loading downloads anyway. A folder has no commit: its files'
    names, sizes and modification times stand for one (hashing gigabytes of weights for a cache key would cost more
    than the key saves).
    """
    folder = Path(clip_model)
    if folder.is_dir():
        files = sorted(p for p in folder.rglob("*") if p.is_file())
        stats = [(p.relative_to(folder).as_posix(), p.stat().st_size, p.stat().st_mtime_ns) for p in files]
        return "folder-" + hashlib.blake2b(repr(stats).encode(), digest_size=8).hexdigest()
    from huggingface_hub import hf_hub_download

    try:
        config = Path(hf_hub_download(clip_model, "config.json"))
    except Exception as exc:  # noqa: BLE001 - a bad id, no network and no cached copy, a gated repository, ...
        raise SourceError(f"cannot load CLIP model {clip_model!r}: {_one_line(exc)}") from None
    return config.parent.name  # the Hub cache keeps each file under snapshots/<commit>/


def score_key(clip_model: str, class_names: tuple[str, ...], revision: str, prompt: str = PROMPT) -> str:
    """The cache key of a dataset's scores: checkpoint, revision, class names, prompt template and temperature.

    Renaming a class, changing the template or the checkpoint makes other scores, so each is part of the key.

    Example:
        >>> key = score_key("openai/clip-vit-base-patch32", ("cat", "dog"), "abc123")
        >>> key == score_key("openai/clip-vit-base-patch32", ("cat", "dog"), "abc123"), len(key)
        (True, 16)
        >>> key == score_key("openai/clip-vit-base-patch32", ("cat", "wolf"), "abc123")
        False
    """
    settings = [clip_model, revision, list(class_names), prompt, TEMPERATURE]
    return hashlib.blake2b(json.dumps(settings).encode(), digest_size=8).hexdigest()


def _load_clip(clip_model: str, revision: str | None = None):
    """Model, tokenizer and normalisation of ``clip_model``, at ``revision`` (a Hub commit) when given."""
    from transformers import AutoImageProcessor, AutoTokenizer, CLIPModel

    at = {"revision": revision} if revision and not Path(clip_model).is_dir() else {}
    try:
        model = CLIPModel.from_pretrained(clip_model, **at)
        tokenizer = AutoTokenizer.from_pretrained(clip_model, **at)
    except Exception as exc:  # noqa: BLE001 - from_pretrained raises many types for a missing or foreign checkpoint
        raise SourceError(f"cannot load CLIP model {clip_model!r}: {_one_line(exc)}") from None
    try:
        processor = AutoImageProcessor.from_pretrained(clip_model, **at)
        mean, std = tuple(processor.image_mean), tuple(processor.image_std)
    except Exception:  # noqa: BLE001 - a checkpoint without a processor config: OpenAI's normalisation
        mean, std = OPENAI_MEAN, OPENAI_STD
    return model, tokenizer, mean, std


def _features(output) -> torch.Tensor:
    """transformers 4 returns the projected features, 5 an output whose pooler_output holds them."""
    return output if isinstance(output, torch.Tensor) else output.pooler_output


@torch.no_grad()
def compute_scores(images: torch.Tensor, class_names: tuple[str, ...], clip, batch_size: int = 256) -> np.ndarray:
    """N x K CLIP zero-shot scores s of uint8 N x 3 x H x W images."""
    model, tokenizer, mean, std = clip
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = model.to(device).eval()
    text = tokenizer([PROMPT.format(name) for name in class_names], padding=True, return_tensors="pt").to(device)
    text_features = F.normalize(_features(model.get_text_features(**text)).float(), dim=-1)
    size = model.config.vision_config.image_size
    mean_t = torch.tensor(mean, device=device).view(1, 3, 1, 1)
    std_t = torch.tensor(std, device=device).view(1, 3, 1, 1)
    scores = []
    with progress_bar("CLIP scores", len(images)) as advance:
        for start in range(0, len(images), batch_size):
            batch = images[start : start + batch_size].to(device).float() / 255
            batch = F.interpolate(batch, size=(size, size), mode="bicubic", align_corners=False).clamp(0, 1)
            image_features = _features(model.get_image_features(pixel_values=(batch - mean_t) / std_t)).float()
            cosine = F.normalize(image_features, dim=-1) @ text_features.T
            scores.append((cosine / TEMPERATURE).softmax(dim=1).cpu())
            advance(len(batch))
    return torch.cat(scores).numpy()


def clip_scores(dataset: str, clip_model: str, train: ClData, test: ClData) -> dict[str, np.ndarray]:
    """{"train": N x K, "test": M x K} scores, read from the cache or computed once and cached.

    The cache file of a split is ``<cache>/<model>/<score_key>/<split>-<image fingerprint>.npy``.
    """
    revision = clip_revision(clip_model)
    result, clip = {}, None
    for split, data in (("train", train), ("test", test)):
        folder = cache_folder(dataset) / slug(clip_model) / score_key(clip_model, data.class_names, revision, PROMPT)
        path = folder / f"{split}-{_fingerprint(data.images)}.npy"
        if path.is_file():
            result[split] = np.load(path)
            continue
        clip = clip or _load_clip(clip_model, revision)
        result[split] = compute_scores(data.images, data.class_names, clip)
        folder.mkdir(parents=True, exist_ok=True)
        remove_leftovers(folder)  # scores a killed process left half-written (never a live one's)
        buffer = io.BytesIO()
        np.save(buffer, result[split])
        atomic_write_bytes(path, buffer.getvalue())  # a temporary per process: several may compute at once
    return result


def pseudo_label_states(train: ClData, scores: np.ndarray) -> torch.Tensor:
    """N x K states: -1 on CLs, 1 on the top non-CL class when its score exceeds 0.3, 0 elsewhere."""
    is_cl = train.multi_hot > 0
    states = torch.where(is_cl, -1, 0)
    allowed = torch.from_numpy(scores).float().masked_fill(is_cl, -1.0)
    best, top = allowed.max(dim=1)
    confident = best > THRESHOLD
    states[confident.nonzero().flatten(), top[confident]] = 1
    return states


def record_zero_shot(output_dir: Path, dataset: str, scores: dict, train: ClData, test: ClData, spec) -> None:
    """Write the CLIP-zero-shot row (a run with no training) unless it is already there.

    Its valid_score is the zero-shot accuracy on the whole train split, its test_accuracy that on the test split.
    """
    folder = run_folder(Path(output_dir), dataset, ZERO_SHOT, spec.record(), 0, 0.0) / slug(spec.clip_model)
    if not start_run(folder, Path(output_dir), main_process=True):
        return
    accuracy = float((scores["test"].argmax(1) == test.ord_labels.numpy()).mean())
    train_accuracy = float((scores["train"].argmax(1) == train.ord_labels.numpy()).mean())
    curve = f"epoch,train_loss,valid_score,test_accuracy\n0,,{train_accuracy},{accuracy}\n"
    atomic_write_text(folder / "curve.csv", curve)
    record = RunRecord(
        dataset=dataset, dataset_name=train.name, strategy=ZERO_SHOT, seed=0, lr=0.0,
        **spec.record(), steps_per_epoch=0,  # the settings of the table it joins
        best_epoch=0, valid_score=train_accuracy, test_accuracy=accuracy,
        curve=(folder / "curve.csv").relative_to(output_dir).as_posix(), clip_model=spec.clip_model,
    )  # fmt: skip
    write_run(folder, record)
