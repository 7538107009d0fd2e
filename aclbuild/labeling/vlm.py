"""Any chat VLM (transformers image-text-to-text with a chat template): the same question in the model's own format.

The question is the one ``--labeler llava`` asks (same template, options, rounds, -R, ``--prompt-file``), rendered
without LLaVA's ``[INST]`` wrapper and put into one user turn, the image first, by the processor's chat template.
Templated text is tokenised without special tokens: the template already holds them (Gemma 3's ``<bos>``).

``scoring="generate"``: greedy generation of up to ``max_new_tokens`` tokens, batched with left padding; the reply
is parsed by the project's parser and asked again when it names no option (as llava). ``scoring="likelihood"``:
every option's answer tokens are scored teacher-forced after the prompt, and the option greedy decoding would say
is chosen (:func:`aclbuild.labeling.packing.pick_options`). The prompt's tokens shared by an image's queries
(image and question up to the options) are run once per image into a key/value cache, kept across rounds (-R);
each query then costs one pass over its suffix and its options' answers (one row per option). The first time, the
cached scores are checked against a full pass; where they differ (a model whose cache cannot be continued so),
``prefix_shared`` is False, the log says so, and every option is scored by a full pass of its own.

Example:
    >>> backend = VlmBackend("HuggingFaceTB/SmolVLM-256M-Instruct", scoring="likelihood")   # doctest: +SKIP
    >>> backend.answer(queries)[0].choice                                                   # doctest: +SKIP
    2
"""

from __future__ import annotations

import copy
import sys
from collections import OrderedDict

import numpy as np

from aclbuild.errors import InputError
from aclbuild.extras import needs_extra
from aclbuild.labeling.backend import Query, Reply, first_line, model_revision
from aclbuild.labeling.llava import cache_keyword, model_placement, output_cache
from aclbuild.labeling.packing import pick_options
from aclbuild.labeling.prompts import unwrapped_question


class VlmBackend:
    """A chat VLM (Hub id or local folder) behind the :class:`aclbuild.labeling.backend.Backend` contract."""

    def __init__(
        self, model: str, dtype: str | None = None, scoring: str = "generate", max_new_tokens: int = 30,
        batch_size: int = 8, device=None, loaded: tuple | None = None,
    ) -> None:  # fmt: skip
        """``loaded`` = (processor, model) already in memory."""
        self.device, self.dtype_name, self.torch_dtype = model_placement(scoring, dtype, device)
        self.scoring, self.max_new_tokens, self.batch_size = scoring, max_new_tokens, batch_size
        self.model_id = str(model)
        self.processor, self.model = loaded or load_vlm(self.model_id, self.torch_dtype, self.device)
        check_processor(self.processor, self.model_id)
        self.tokenizer = self.processor.tokenizer
        self.tokenizer.padding_side = "left"
        self.revision = model_revision(self.model, self.model_id)
        self.cache_keyword = cache_keyword(self.model)
        self.prefix_shared: bool | None = None  # does a continued prefix cache score as a full pass? (logged)
        self.split_is_exact = None  # llava's notion; the vlm finds its shared prefix in token ids
        self.keep_prefixes = 0  # images whose prefix caches are kept between calls (set by the -R runner)
        self.prefix_passes = 0  # prefix passes run (for tests)
        self._kept: OrderedDict[tuple, object] = OrderedDict()  # (image index, prefix ids) -> prefix cache

    @property
    def provenance(self) -> dict:
        """The log's entries of this labeler: under likelihood scoring, whether the prefix cache was shared."""
        if self.scoring != "likelihood":
            return {}
        how = {True: "prefix cache shared by an image's queries", False: "one full pass per option (cache not reusable)"}
        return {"likelihood_passes": how.get(self.prefix_shared)}

    def chat_text(self, query: Query) -> str:
        """The query's question in the model's chat format, ending where the model's reply starts."""
        messages = [{"role": "user", "content": [{"type": "image"},
                                                 {"type": "text", "text": unwrapped_question(query.prompt)}]}]  # fmt: skip
        return self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)

    def encode(self, queries: list[Query], texts: list[str] | None = None) -> dict:
        """Processor inputs (torch, on the device) of ``queries``' images with their chat texts (left padded)."""
        from PIL import Image

        texts = texts or [self.chat_text(q) for q in queries]
        images = [[Image.fromarray(np.asarray(q.image))] for q in queries]
        inputs = self.processor(text=texts, images=images, padding=True, return_tensors="pt", add_special_tokens=False)
        inputs = {k: v.to(self.device) for k, v in inputs.items()}
        if "pixel_values" in inputs:
            inputs["pixel_values"] = inputs["pixel_values"].to(self.torch_dtype)
        return inputs

    def answer(self, queries: list[Query]) -> list[Reply]:
        """Greedy replies (``generate``) or the chosen options (``likelihood``) of ``queries``."""
        if self.scoring == "generate":
            chunks = [queries[s : s + self.batch_size] for s in range(0, len(queries), self.batch_size)]
            return [Reply(text.strip()) for chunk in chunks for text in self._generate(chunk)]
        replies = []
        for q in queries:
            choice = int(pick_options(*(a[None] for a in self.option_scores(q)))[0])
            replies.append(Reply(q.answers[choice], choice))
        return replies

    def _generate(self, queries: list[Query]) -> list[str]:
        import torch

        inputs = self.encode(queries)
        with torch.inference_mode():
            out = self.model.generate(
                **inputs, max_new_tokens=self.max_new_tokens, do_sample=False, pad_token_id=self.tokenizer.pad_token_id
            )  # fmt: skip
        return self.tokenizer.batch_decode(out[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True)

    # ---------------------------------------------------------------- likelihood scoring
    def option_scores(self, query: Query) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(greedy, lengths, logprobs)`` of each option's answer after the prompt (see
        :func:`aclbuild.labeling.packing.pick_options`)."""
        text = self.chat_text(query)
        answers = [self._answer_ids(text, a) for a in query.answers]
        inputs = self.encode([query])
        cut = self._prefix_cut(query, inputs["input_ids"].shape[1])
        if self.prefix_shared is None:
            cached = self._cached_scores(query, inputs, cut, answers)
            full = self._full_scores(inputs, answers)
            tolerance = 1e-3 if self.dtype_name == "fp32" else 0.25  # 16-bit passes of other shapes round apart
            self.prefix_shared = bool(
                np.array_equal(cached[0], full[0]) and np.allclose(cached[2], full[2], atol=tolerance)
            )  # a cache continued at wrong positions misses by far more
            if not self.prefix_shared:
                print(f"{self.model_id}: a continued prefix cache does not score as a full pass; scoring every option "
                      "with a full pass of its own (slower)", file=sys.stderr)  # fmt: skip
            return full
        if self.prefix_shared:
            return self._cached_scores(query, inputs, cut, answers)
        return self._full_scores(inputs, answers)

    def _answer_ids(self, text: str, answer: str) -> list[int]:
        """The answer's tokens as they follow the chat text (a sentencepiece tokenizer may merge across the seam:
        then the answer alone)."""
        whole, head = self.tokenizer([text + answer, text], add_special_tokens=False)["input_ids"]
        if whole[: len(head)] == head and len(whole) > len(head):
            return list(whole[len(head) :])
        return list(self.tokenizer(answer, add_special_tokens=False)["input_ids"])

    def _prefix_cut(self, query: Query, expanded_len: int) -> int:
        """How many of the query's ``expanded_len`` model tokens (image tokens widened) no option list changes:
        the chat text's tokens up to the options, plus the image's extra tokens (the image comes first)."""
        question = unwrapped_question(query.prompt)
        shared = query.prefix[query.prompt.index(question) :]  # the question's words before the options
        text = self.chat_text(query)
        # the tokenizer itself, not its backend: the processor leaves the backend padding batches
        whole, head = self.tokenizer([text, text[: text.index(question) + len(shared)]], add_special_tokens=False)[
            "input_ids"
        ]
        n = 0
        while n < min(len(whole), len(head)) and whole[n] == head[n]:
            n += 1
        return n + expanded_len - len(whole)

    def _cached_scores(self, query: Query, inputs: dict, cut: int, answers: list[list[int]]):
        """The scores from the image's prefix cache: one pass over the suffix and the answers, a row per option."""
        import torch

        ids = inputs["input_ids"]
        cache, rope_deltas = self._prefix_cache(query, inputs, cut)
        inner = getattr(self.model, "model", None)
        if hasattr(inner, "rope_deltas"):  # Qwen2-VL's M-RoPE: the text positions after this image continue from it
            inner.rope_deltas = rope_deltas
        suffix = ids[0, cut:].tolist()
        rows, width = len(answers), len(suffix) + max(len(a) for a in answers)
        pad = self.tokenizer.pad_token_id or 0
        batch = torch.tensor([suffix + a + [pad] * (width - len(suffix) - len(a)) for a in answers], device=self.device)
        continued = _shallow_copy(cache)
        continued.batch_repeat_interleave(rows)
        extra = {k: torch.zeros_like(batch) for k in _token_types(inputs)}
        with torch.inference_mode():
            logits = self.model(
                input_ids=batch,  # no mask: every row sees its whole prefix (positions then count from the cache)
                **{self.cache_keyword: continued}, **extra,
            ).logits.float()  # fmt: skip
        return _answer_scores(logits, len(suffix) - 1, answers)

    def _full_scores(self, inputs: dict, answers: list[list[int]]):
        """The scores from one full pass (image included) per option: the fallback, and the first query's check."""
        import torch

        greedy, lengths, logprobs = [], [], []
        for answer in answers:
            tail = torch.tensor([answer], device=self.device)
            full = dict(inputs)
            full["input_ids"] = torch.cat([inputs["input_ids"], tail], dim=1)
            full["attention_mask"] = torch.cat([inputs["attention_mask"], torch.ones_like(tail)], dim=1)
            for k in _token_types(inputs):
                full[k] = torch.cat([inputs[k], torch.zeros_like(tail)], dim=1)
            with torch.inference_mode():
                logits = self.model(**full).logits.float()
            g, n, lp = _answer_scores(logits, inputs["input_ids"].shape[1] - 1, [answer])
            greedy.append(g[0]), lengths.append(n[0]), logprobs.append(lp[0])
        return np.array(greedy), np.array(lengths), np.array(logprobs)

    def _prefix_cache(self, query: Query, inputs: dict, cut: int):
        """The key/value cache of the image with the first ``cut`` prompt tokens, and the model's M-RoPE offset after
        it (Qwen2-VL; else None); the last ``keep_prefixes`` images' (at least this one's) are kept, so that an
        image's rounds and retries share one prefix pass."""
        import torch

        key = (query.index, tuple(inputs["input_ids"][0, :cut].tolist()))
        if key in self._kept:
            self._kept.move_to_end(key)
            return self._kept[key]
        per_token = inputs["input_ids"].shape  # token-aligned inputs are cut; image ones (any shape) are not
        prefix = {k: (v[:, :cut] if v.shape == per_token else v) for k, v in inputs.items()}
        with torch.inference_mode():
            cache = output_cache(self.model(**prefix, use_cache=True))
        self.prefix_passes += 1
        self._kept[key] = cache, getattr(getattr(self.model, "model", None), "rope_deltas", None)
        while len(self._kept) > max(1, self.keep_prefixes):
            self._kept.popitem(last=False)
        return self._kept[key]


def _token_types(inputs: dict) -> list[str]:
    """The per-token inputs besides ids and mask (Gemma 3's ``token_type_ids``, ``mm_token_type_ids``): 0 = text."""
    shape = inputs["input_ids"].shape
    return [k for k, v in inputs.items() if k not in ("input_ids", "attention_mask") and v.shape == shape]


def _answer_scores(logits, last_prompt: int, answers: list[list[int]]):
    """Per answer (row of ``logits``): all tokens the arg-max?, token count, summed log-probability; the logits at
    ``last_prompt + j`` predict answer token j."""
    import torch

    greedy, lengths, logprobs = [], [], []
    for row, answer in enumerate(answers):
        steps = logits[row, last_prompt : last_prompt + len(answer)]
        target = torch.tensor(answer, device=steps.device)
        lp = torch.log_softmax(steps, dim=-1).gather(1, target[:, None])[:, 0]
        greedy.append(bool((steps.argmax(dim=-1) == target).all()))
        lengths.append(len(answer))
        logprobs.append(float(lp.sum()))
    return np.array(greedy), np.array(lengths), np.array(logprobs)


def _shallow_copy(cache):
    """A cache holding the same tensors as ``cache``; growing or repeating it leaves ``cache`` as it was."""
    memo = {id(t): t for layer in cache.layers for t in (layer.keys, layer.values) if t is not None}
    return copy.deepcopy(cache, memo)


def check_processor(processor, model_id: str) -> None:
    """Refuse a processor without a chat template or without an image processor (one line, exit 2)."""
    if getattr(processor, "chat_template", None) is None:
        raise InputError(
            f"{model_id!r} has no chat template: --labeler vlm needs an instruction-tuned model whose processor "
            "carries one (chat_template.jinja), or use --labeler llava for LLaVA-NeXT"
        )
    if getattr(processor, "image_processor", None) is None or getattr(processor, "tokenizer", None) is None:
        raise InputError(f"the processor of {model_id!r} cannot take images: --labeler vlm needs an image-text model")


def load_vlm(model_id: str, torch_dtype, device):
    """Processor and model, or one clear InputError (offline, wrong path, no weights, not an image-text model)."""
    with needs_extra("label"):
        from transformers import AutoModelForImageTextToText, AutoProcessor

    try:
        processor = AutoProcessor.from_pretrained(model_id)
        check_processor(processor, model_id)
        model = AutoModelForImageTextToText.from_pretrained(model_id, dtype=torch_dtype)
    except (OSError, ValueError, KeyError, ImportError) as exc:
        raise InputError(
            f"cannot load a chat VLM from {model_id!r}: not a model folder with weights, not in the Hugging Face cache "
            f"(offline or wrong id?), or not an image-text-to-text model ({first_line(exc)})"
        ) from None
    return processor, model.to(device).eval()
