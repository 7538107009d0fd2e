"""One pass of a frozen CLIP over an SPML dataset: image features (clip-linear's input) and class cosines (VLPL's s).

For each image: the L2-normalised image features (N x D float32) and the cosines with the text features of
"a photo of a {class}" (N x K); :func:`aclbuild.bench.spml.clip_softmax` and :func:`~aclbuild.bench.spml.pseudo_labels`
turn the cosines into VLPL's pseudo-labels. Images are preprocessed by the checkpoint's own image processor
(resize, centre crop, normalisation), as VLPL's ``clip.load`` preprocess does. The outputs are cached where
:mod:`aclbuild.bench.vlpl` caches its scores (its cache folder, :func:`~aclbuild.bench.vlpl.score_key` of the model,
revision, class names, prompt and temperature), one ``.npz`` per split keyed also by a fingerprint of its image
bytes, so a second run loads no model.

Example:
    >>> outputs = spml_clip_outputs("out/voc2012-spml", "openai/clip-vit-large-patch14-336", splits)  # doctest: +SKIP
    >>> outputs["train"].features.shape, outputs["train"].cosines.shape                               # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from aclbuild.atomic import atomic_write_bytes, remove_leftovers
from aclbuild.bench.results import slug
from aclbuild.bench.spml_data import SpmlSplit
from aclbuild.bench.vlpl import PROMPT, _features, _load_clip, _one_line, cache_folder, clip_revision, score_key
from aclbuild.errors import SourceError
from aclbuild.progress import progress_bar

CLIP_BATCH = 64


@dataclass(frozen=True)
class SpmlClipOutputs:
    """A split's frozen-CLIP outputs: L2-normalised image features (N x D) and class cosines (N x K), float32."""

    features: torch.Tensor
    cosines: torch.Tensor


def images_fingerprint(images: Sequence[bytes]) -> str:
    """A short hash of the encoded images, in order (a rebuilt split with other images gets other outputs).

    Example:
        >>> images_fingerprint([b"ab", b"c"]) == images_fingerprint([b"a", b"bc"])
        False
    """
    digest = hashlib.blake2b(digest_size=8)
    for data in images:
        digest.update(len(data).to_bytes(8, "little"))
        digest.update(data)
    return digest.hexdigest()


def _image_processor(clip_model: str, revision: str):
    from transformers import AutoImageProcessor

    at = {"revision": revision} if not Path(clip_model).is_dir() else {}
    try:
        return AutoImageProcessor.from_pretrained(clip_model, **at)
    except Exception as exc:  # noqa: BLE001 - from_pretrained raises many types for a missing or foreign checkpoint
        raise SourceError(f"cannot load the image processor of CLIP model {clip_model!r}: {_one_line(exc)}") from None


def _pil(data: bytes):
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as image:
            return image.convert("RGB")
    except (OSError, ValueError) as exc:
        raise SourceError(f"an image does not decode ({exc}); the repository is damaged: rebuild it") from None


class ProcessedImages(torch.utils.data.Dataset):
    """Encoded images decoded and preprocessed by the checkpoint's image processor, one at a time (DataLoader workers
    can do it in parallel)."""

    def __init__(self, images: Sequence[bytes], processor):
        self.images, self.processor = images, processor

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.processor(images=[_pil(self.images[index])], return_tensors="pt")["pixel_values"][0]


@torch.no_grad()
def compute_clip_outputs(split: SpmlSplit, clip, processor, what: str, workers: int = 0) -> SpmlClipOutputs:
    """Features and cosines of every image of ``split`` with the loaded ``clip`` (model, tokenizer, ...), the
    images decoded and preprocessed in ``workers`` DataLoader processes (0: in this one)."""
    model, tokenizer = clip[0], clip[1]
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = model.to(device).eval()
    text = tokenizer([PROMPT.format(name) for name in split.class_names], padding=True, return_tensors="pt").to(device)
    text_features = F.normalize(_features(model.get_text_features(**text)).float(), dim=-1)
    features, cosines = [], []
    loader = torch.utils.data.DataLoader(ProcessedImages(split.images, processor), batch_size=CLIP_BATCH,
                                         num_workers=workers, pin_memory=device == "cuda")  # fmt: skip
    with progress_bar(f"CLIP features of {what}", len(split), "images") as advance:
        for pixels in loader:
            pixels = pixels.to(device, non_blocking=True)
            image_features = F.normalize(_features(model.get_image_features(pixel_values=pixels)).float(), dim=-1)
            features.append(image_features.cpu())
            cosines.append((image_features @ text_features.T).cpu())
            advance(len(pixels))
    dim = text_features.shape[1]
    return SpmlClipOutputs(
        torch.cat(features) if features else torch.zeros(0, dim),
        torch.cat(cosines) if cosines else torch.zeros(0, len(split.class_names)),
    )


def spml_clip_outputs(
    dataset: str, clip_model: str, splits: dict[str, SpmlSplit], workers: int = 0
) -> dict[str, SpmlClipOutputs]:
    """{split: outputs} for every split of ``splits``, read from the cache or computed once and cached (images
    decoded and preprocessed in ``workers`` DataLoader processes).

    The cache file of a split is ``<cache>/<model>/<score_key>/spml-<split>-<image fingerprint>.npz``.
    """
    revision = clip_revision(str(clip_model))
    result, clip, processor = {}, None, None
    for key, split in splits.items():
        folder = cache_folder(str(dataset)) / slug(str(clip_model)) / score_key(str(clip_model), split.class_names,
                                                                                revision, PROMPT)  # fmt: skip
        path = folder / f"spml-{slug(key)}-{images_fingerprint(split.images)}.npz"
        if path.is_file():
            with np.load(path) as stored:
                result[key] = SpmlClipOutputs(torch.from_numpy(stored["features"]), torch.from_numpy(stored["cosines"]))
            continue
        if clip is None:
            clip, processor = _load_clip(str(clip_model), revision), _image_processor(str(clip_model), revision)
        result[key] = compute_clip_outputs(split, clip, processor, f"{split.name} {key}", workers)
        folder.mkdir(parents=True, exist_ok=True)
        remove_leftovers(folder)  # outputs a killed process left half-written (never a live one's)
        buffer = io.BytesIO()
        np.savez(buffer, features=result[key].features.numpy(), cosines=result[key].cosines.numpy())
        atomic_write_bytes(path, buffer.getvalue())  # a temporary per process: several may compute at once
    return result
