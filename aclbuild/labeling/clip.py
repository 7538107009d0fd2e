"""The CLIP zero-shot labeler (``--labeler clip``): any transformers dual encoder with an image and a text tower
(CLIP, SigLIP, ...) scores an image against "a photo of a {name}" for every class.

The complementary label of a query is the least likely of its shown candidates; in ordinary mode (all K shown) the
answer is the most likely class. "Likely" is the cosine of the image's and the text's embeddings: the model's own
logits (``logit_scale * cosine``, plus ``logit_bias`` for SigLIP) and its softmax or sigmoid are increasing in it, so
every one of them picks the same candidate. The text embeddings of the K class names are computed once, when the
backend is made; an image is embedded once for all of its rounds (they come in one batch; under -R, whose rounds are
separate calls, the last ``keep_prefixes`` images' embeddings are kept). No decoding, no parsing, no retries.

Like every labeler (:mod:`aclbuild.labeling.backend`) a batch goes through three stages: :meth:`ClipBackend.prepare`
(pixels: no model; in a DataLoader worker), :meth:`ClipBackend.run` (the image tower alone) and
:meth:`ClipBackend.replies` (choosing).

Example:
    >>> format_prompt("a photo of a {name}", "cat")
    'a photo of a cat'
    >>> backend = ClipBackend.from_pretrained("openai/clip-vit-base-patch32", ["cat", "dog"])   # doctest: +SKIP
    >>> ask(backend, queries)[0].choice                                                         # doctest: +SKIP
    1
"""

from __future__ import annotations

import contextlib
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from aclbuild.errors import InputError
from aclbuild.extras import needs_extra
from aclbuild.labeling.backend import Query, Reply, first_line, model_revision

CLIP_TEMPLATE = "a photo of a {name}"
SIGLIP_TEXT_LENGTH = 64  # SigLIP was trained on texts padded to 64 tokens (as transformers' zero-shot pipeline pads)


def format_prompt(template: str, name: str) -> str:
    """The text of class ``name``: ``template`` with ``{name}`` replaced."""
    return template.format(name=name)


def check_template(template: str) -> None:
    """Refuse a ``--clip-template`` that does not name the class as ``{name}``, or has another ``{field}``.

    Example:
        >>> check_template("a blurry photo of a {name}.")
        >>> check_template("a photo of a {}")
        Traceback (most recent call last):
        aclbuild.errors.InputError: --clip-template must contain {name} and no other {field} (write {{ for a brace), e.g. 'a photo of a {name}'; got 'a photo of a {}'
    """
    import string

    try:
        fields = {field for _, field, _, _ in string.Formatter().parse(template) if field is not None}
    except ValueError:  # a lone brace
        fields = set()
    if fields != {"name"}:
        raise InputError(
            "--clip-template must contain {name} and no other {field} (write {{ for a brace), "
            f"e.g. {CLIP_TEMPLATE!r}; got {template!r}"
        )


def features(output):
    """The projected embeddings of a ``get_image_features`` / ``get_text_features`` call: transformers 4 returns
    them, 5 an output whose ``pooler_output`` holds them."""
    import torch

    return output if isinstance(output, torch.Tensor) else output.pooler_output


def text_tokens(model, tokenizer, texts: list[str]):
    """Token ids of ``texts`` as the model expects them: SigLIP's padded to 64 tokens, others to the longest."""
    if "siglip" in model.config.model_type:
        longest = getattr(getattr(model.config, "text_config", None), "max_position_embeddings", SIGLIP_TEXT_LENGTH)
        padding = {"padding": "max_length", "max_length": min(SIGLIP_TEXT_LENGTH, longest), "truncation": True}
    else:
        padding = {"padding": True}
    return tokenizer(texts, return_tensors="pt", **padding)


def embed_texts(model, tokenizer, texts: list[str]):
    """Unit-length text embeddings (float32, on the model's device) of ``texts``."""
    import torch

    tokens = text_tokens(model, tokenizer, texts).to(model.device)
    with torch.inference_mode():
        return torch.nn.functional.normalize(features(model.get_text_features(**tokens)).float(), dim=-1)


def embed_images(model, pixel_values):
    """Unit-length image embeddings (float32) of preprocessed ``pixel_values`` (a torch tensor on any device)."""
    import torch

    pixels = pixel_values.to(model.device, model.dtype)
    with torch.inference_mode():
        return torch.nn.functional.normalize(features(model.get_image_features(pixel_values=pixels)).float(), dim=-1)


def load_dual_encoder(model_id: str, torch_dtype, device) -> tuple:
    """(model, tokenizer, image processor) of a checkpoint with an image and a text tower; one InputError when the
    weights are not at hand, or the checkpoint lacks a tower, a tokenizer or an image processor."""
    with needs_extra("label"):
        from transformers import AutoImageProcessor, AutoModel, AutoTokenizer

    try:
        with _quiet_loading():  # a small model: no "Loading weights" bar above the run's own
            model = AutoModel.from_pretrained(model_id, dtype=torch_dtype)
    except (OSError, ValueError, KeyError) as exc:
        raise InputError(
            f"cannot load a model from {model_id!r}: not a model folder, and not in the Hugging Face cache (offline "
            f"or wrong id?) ({first_line(exc)})"
        ) from None
    missing = [tower for tower in ("image", "text") if not callable(getattr(model, f"get_{tower}_features", None))]
    if missing:
        methods = " or ".join(f"get_{tower}_features" for tower in missing)
        raise InputError(
            f"{model_id!r} is a {type(model).__name__}, which cannot embed {' or '.join(t + 's' for t in missing)} "
            f"(no {methods}): --labeler clip needs a dual encoder with an image and a text tower (CLIP, SigLIP); for "
            "a chat VLM use --labeler vlm"
        )
    parts = []
    for what, loader in (("tokenizer", AutoTokenizer), ("image processor", AutoImageProcessor)):
        try:
            parts.append(loader.from_pretrained(model_id))
        except (OSError, ValueError, KeyError) as exc:
            raise InputError(
                f"{model_id!r} has no {what} (--labeler clip needs one to take "
                f"{'texts' if what == 'tokenizer' else 'images'}): {first_line(exc)}"
            ) from None
    return model.to(device).eval(), *parts


@contextlib.contextmanager
def _quiet_loading() -> Iterator[None]:
    """transformers' progress bars off for a while, then back as they were."""
    from transformers.utils import logging

    enabled = logging.is_progress_bar_enabled()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            logging.enable_progress_bar()


@dataclass(frozen=True)
class ClipBatch:
    """A batch as :meth:`ClipBackend.prepare` leaves it: its images, each once (``indices``), the pixels of those
    not kept from an earlier call (``todo``: their positions in ``indices``), and each query's image position."""

    indices: tuple[int, ...]
    todo: tuple[int, ...]
    pixel_values: object | None  # a torch tensor
    rows: tuple[int, ...]


class ClipBackend:
    """A dual encoder behind the :class:`aclbuild.labeling.backend.Backend` contract.

    ``class_names`` are the names the queries show (their text embeddings are computed here, once); ``mode`` is cl
    (the least likely shown candidate) or ord (the most likely).
    """

    def __init__(
        self, model, tokenizer, image_processor, class_names: list[str], mode: str = "cl",
        template: str = CLIP_TEMPLATE, model_id: str | None = None,
    ) -> None:  # fmt: skip
        """``model`` (in eval mode, on the device it runs on), ``tokenizer`` and ``image_processor`` of a dual
        encoder; ``model_id`` names it in the log (default: where it was loaded from). :meth:`from_pretrained` loads
        them."""
        from aclbuild.labeling.llava import dtype_name

        check_template(template)
        self.model, self.tokenizer, self.image_processor = model, tokenizer, image_processor
        self.device, self.dtype_name = model.device, dtype_name(model.dtype)
        self.model_id, self.mode, self.template = str(model_id or model.name_or_path), mode, template
        self.revision = model_revision(self.model, self.model_id)
        texts = [format_prompt(template, name) for name in dict.fromkeys(class_names)]
        embedded = embed_texts(self.model, self.tokenizer, texts)
        self.text = embedded.T.contiguous()  # [dim, names]: an image's cosines are one product
        self.column = {name: k for k, name in enumerate(dict.fromkeys(class_names))}
        self.keep_prefixes = 0  # images whose embeddings are kept between calls (set by the -R runner)
        self._kept: OrderedDict[int, object] = OrderedDict()  # image index -> its embedding

    @classmethod
    def from_pretrained(
        cls, model_id: str, class_names: list[str], mode: str = "cl", template: str = CLIP_TEMPLATE,
        dtype: str | None = None, device=None,
    ) -> ClipBackend:  # fmt: skip
        """The labeler of dual encoder ``model_id`` (Hub id or local folder) loaded in ``dtype`` (default bf16 on a
        GPU, fp32 on the CPU) on ``device`` (default the GPU if there is one); one InputError when it cannot be
        loaded."""
        from aclbuild.labeling.llava import model_placement

        check_template(template)  # before loading
        torch_device, torch_dtype = model_placement(dtype, device)
        model, tokenizer, image_processor = load_dual_encoder(str(model_id), torch_dtype, torch_device)
        return cls(model, tokenizer, image_processor, class_names, mode, template, model_id=str(model_id))

    @property
    def provenance(self) -> dict:
        """What the run's log records of this labeler beside its model (None: a VLM entry that does not apply)."""
        return {"clip_template": self.template, "scoring": "zero-shot", "prompt": None, "prompt_sha256": None,
                "max_retries": None, "max_new_tokens": None}  # fmt: skip

    def prepare(self, queries: list[Query]) -> ClipBatch:
        """The pixels of the batch's images not kept from an earlier call, each image once."""
        from aclbuild.labeling.inputs import to_pil

        first: dict[int, Query] = {}
        for q in queries:
            first.setdefault(q.index, q)
        indices = tuple(first)
        todo = tuple(k for k, i in enumerate(indices) if i not in self._kept)
        pixels = None
        if todo:
            images = [to_pil(first[indices[k]].image) for k in todo]
            pixels = self.image_processor(images=images, return_tensors="pt")["pixel_values"]
        position = {i: k for k, i in enumerate(indices)}
        return ClipBatch(indices, todo, pixels, tuple(position[q.index] for q in queries))

    def run(self, batch: ClipBatch) -> np.ndarray:
        """The image tower alone: the cosines of each of the batch's images with every class name [images, names]."""
        import torch

        embedded: list = [None] * len(batch.indices)
        if batch.todo:
            fresh = embed_images(self.model, batch.pixel_values)
            for row, k in enumerate(batch.todo):
                embedded[k] = fresh[row]
        for k, i in enumerate(batch.indices):
            if embedded[k] is None:
                if i not in self._kept:
                    raise RuntimeError(f"the embedding of image {i} was dropped after its batch was prepared")  # a bug
                self._kept.move_to_end(i)
                embedded[k] = self._kept[i]
            elif self.keep_prefixes:
                self._kept[i] = embedded[k]
        while len(self._kept) > self.keep_prefixes:
            self._kept.popitem(last=False)
        return (torch.stack(embedded) @ self.text).cpu().numpy()

    def replies(self, queries: list[Query], batch: ClipBatch, cosines: np.ndarray) -> list[Reply]:
        """Each query's choice among its shown options: the least similar (cl) or the most similar (ord)."""
        pick = np.argmin if self.mode == "cl" else np.argmax
        replies = []
        for q, row in zip(queries, batch.rows):
            choice = int(pick(cosines[row, [self.column[name] for name in q.options]]))
            replies.append(Reply(q.answers[choice], choice))
        return replies
