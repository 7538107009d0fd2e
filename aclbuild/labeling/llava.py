"""The LLaVA-NeXT labeler: greedy generation as the reference did it, or likelihood scoring with a reused cache.

``scoring="generate"`` is the reference loop: the whole prompt (image included) goes through the model for every
query, then up to ``max_new_tokens`` greedy tokens (batched, left padding, ``image_sizes`` passed).

``scoring="likelihood"`` encodes each image once together with the prompt prefix that precedes the options
(:meth:`aclbuild.labeling.prompts.PromptTemplate.split_prompt`), keeps that key/value cache, and scores every
round's and retry's candidate answers in one more pass over the short suffixes, all of an image's queries packed
into one sequence (:mod:`aclbuild.labeling.packing`). The winner is the candidate
whose tokens greedy decoding would produce (each token the arg-max given the previous ones); only when no candidate
is such a greedy path is the most likely one taken. So it picks the same option as greedy generation whenever greedy
generation starts its answer with an option, and it never needs a retry.

Either way a batch goes through three stages: :meth:`LlavaBackend.prepare` (pixels, token ids, packing: no model;
in a DataLoader worker), :meth:`LlavaBackend.run` (the forward passes alone) and :meth:`LlavaBackend.replies`
(decoding or choosing), as every labeler does (:mod:`aclbuild.labeling.backend`).

Example:
    >>> model_id = "llava-hf/llava-v1.6-mistral-7b-hf"
    >>> backend = LlavaBackend.from_pretrained(model_id, scoring="likelihood")   # doctest: +SKIP
    >>> ask(backend, queries)[0].choice                                          # doctest: +SKIP
    2
"""

from __future__ import annotations

import copy
import functools
import inspect
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from aclbuild.errors import InputError
from aclbuild.extras import needs_extra
from aclbuild.labeling.backend import Query, Reply, first_line, model_revision, on_device, shareable
from aclbuild.labeling.inputs import BatchInputs
from aclbuild.labeling.packing import SuffixPack, answer_scores, choose, pack_suffixes

DTYPES = ("bf16", "fp16", "fp32")
SCORINGS = ("generate", "likelihood")


def kv_bytes_per_token(text_config, dtype_bytes: int) -> int:
    """Key/value cache bytes one token takes (all layers): 128 KiB for Mistral-7B in 16-bit."""
    heads = getattr(text_config, "num_key_value_heads", None) or text_config.num_attention_heads
    head_dim = getattr(text_config, "head_dim", None) or text_config.hidden_size // text_config.num_attention_heads
    return 2 * text_config.num_hidden_layers * heads * head_dim * dtype_bytes


@dataclass(frozen=True)
class PrefixPass:
    """A likelihood pass as :meth:`LlavaBackend.prepare` leaves it: images of one size, each with its queries.

    ``inputs`` are the images' prefix inputs (CPU tensors), or None when their kept prefix cache (-R) made them unneeded
    when prepared; ``images`` are then kept instead. ``pack`` holds their queries, which are the batch's queries
    ``positions``. ``bytes_per_image``: GPU memory an image takes in the pass (cache and logits).
    """

    indices: tuple[int, ...]
    prefix: str
    prefix_len: int
    inputs: dict | None
    images: list[np.ndarray] | None
    pack: SuffixPack
    positions: np.ndarray
    bytes_per_image: int


@dataclass(frozen=True)
class Prepared:
    """A batch as :meth:`LlavaBackend.prepare` leaves it for :meth:`LlavaBackend.run`: the generation inputs of
    each --batch-size chunk, or the likelihood passes; and whether the prompt's prefix/suffix split is exact."""

    passes: list
    split_is_exact: bool | None = None


class LlavaBackend:
    """A LLaVA-NeXT model behind the :class:`aclbuild.labeling.backend.Backend` contract."""

    def __init__(
        self, processor, model, *, scoring: str = "generate", max_new_tokens: int = 30, batch_size: int = 8,
        model_id: str | None = None,
    ) -> None:  # fmt: skip
        """``processor`` and ``model`` of a LLaVA-NeXT checkpoint, the model in eval mode on the device it runs on
        (its device and dtype are the labeler's); ``model_id`` names it in the log (default: where it was loaded
        from). :meth:`from_pretrained` loads them."""
        check_scoring(scoring)
        self.processor, self.model = processor, model
        self.device, self.torch_dtype, self.dtype_name = model.device, model.dtype, dtype_name(model.dtype)
        self.scoring, self.max_new_tokens, self.batch_size = scoring, max_new_tokens, batch_size
        self.model_id = str(model_id or model.name_or_path)
        self.tokenizer = self.processor.tokenizer
        self.tokenizer.padding_side = "left"
        self.inputs = BatchInputs(self.processor)
        self.revision = model_revision(self.model, self.model_id)
        self.kv_bytes_per_token = kv_bytes_per_token(self.model.config.text_config, self.model.dtype.itemsize)
        self.cache_keyword = cache_keyword(self.model)
        self.split_is_exact: bool | None = None  # do prefix and suffix tokenise as the whole prompt does?
        self._tokens: dict[str, list[int]] = {}
        self.keep_prefixes = 0  # images whose prefix caches are kept between calls (set by the -R runner)
        self._kept: OrderedDict[tuple, object] = OrderedDict()  # (image indices..., prefix) -> prefix cache

    @classmethod
    def from_pretrained(
        cls, model_id: str, dtype: str | None = None, scoring: str = "generate", max_new_tokens: int = 30,
        batch_size: int = 8, device=None,
    ) -> LlavaBackend:  # fmt: skip
        """The labeler of checkpoint ``model_id`` (Hub id or local folder) loaded in ``dtype`` (default bf16 on a GPU,
        fp32 on the CPU) on ``device`` (default the GPU if there is one); one InputError when it cannot be loaded."""
        check_scoring(scoring)
        torch_device, torch_dtype = model_placement(dtype, device)
        processor, model = _load(str(model_id), torch_dtype, torch_device)
        return cls(processor, model, scoring=scoring, max_new_tokens=max_new_tokens, batch_size=batch_size,
                   model_id=str(model_id))  # fmt: skip

    # The three stages (:mod:`aclbuild.labeling.backend`): prepare runs in a DataLoader worker, the others here.
    def prepare(self, queries: list[Query]) -> Prepared:
        """The model inputs of ``queries`` that need no model: pixels, token ids, the packed suffixes."""
        if self.scoring == "generate":
            chunks = [queries[s : s + self.batch_size] for s in range(0, len(queries), self.batch_size)]
            return Prepared([_cpu(self.inputs([q.image for q in c], [q.prompt for q in c])) for c in chunks])
        if self.split_is_exact is None:
            self.split_is_exact = self._split_is_exact(queries[0])
        groups: dict[tuple, dict[int, list[int]]] = {}  # (image size, prefix) -> image -> its queries' positions
        for position, q in enumerate(queries):
            groups.setdefault((np.shape(q.image), q.prefix), {}).setdefault(q.index, []).append(position)
        passes = [p for (_, prefix), by_image in groups.items() for p in self._prepare_pass(queries, by_image, prefix)]
        return Prepared(passes, self.split_is_exact)

    def run(self, prepared: Prepared) -> list:
        """The forward passes (the only stage that needs the model): generated token ids per chunk, or each
        likelihood pass's answer scores (:func:`aclbuild.labeling.packing.answer_scores`)."""
        if self.split_is_exact is None:
            self.split_is_exact = prepared.split_is_exact
        if self.scoring == "generate":
            return [self._generate(inputs) for inputs in prepared.passes]
        return [self._run_pass(p) for p in prepared.passes]

    def replies(self, queries: list[Query], prepared: Prepared, raw: list) -> list[Reply]:
        """What :meth:`run` returned for ``queries``, as replies (decoded text, or the chosen option)."""
        if self.scoring == "generate":
            texts = [t for ids in raw for t in self.tokenizer.batch_decode(ids, skip_special_tokens=True)]
            return [Reply(text.strip()) for text in texts]
        replies: list[Reply | None] = [None] * len(queries)
        for p, scores in zip(prepared.passes, raw):
            for position, choice in zip(p.positions, choose(p.pack, *scores).tolist()):
                replies[position] = Reply(queries[position].answers[choice], choice)
        if any(r is None for r in replies):
            raise RuntimeError("likelihood scoring lost queries")  # a bug, not bad input
        return replies  # type: ignore[return-value]

    # ---------------------------------------------------------------- the reference loop
    def _generate(self, ready: dict) -> np.ndarray:
        import torch

        inputs = on_device(ready, self.device)
        inputs["pixel_values"] = inputs["pixel_values"].to(self.torch_dtype)
        with torch.inference_mode():
            out = self.model.generate(
                **inputs, max_new_tokens=self.max_new_tokens, do_sample=False, pad_token_id=self.tokenizer.pad_token_id
            )  # fmt: skip
        return out[:, inputs["input_ids"].shape[1] :].cpu().numpy()

    # ---------------------------------------------------------------- likelihood scoring with a shared prefix
    def _prepare_pass(self, queries: list[Query], by_image: dict[int, list[int]], prefix: str) -> list[PrefixPass]:
        """The pass of some same-size images: their prefix inputs, and all their queries packed one row per image."""
        firsts = [queries[positions[0]] for positions in by_image.values()]
        indices = tuple(by_image)
        images, inputs = [q.image for q in firsts], None
        if (*indices, prefix) not in self._kept:  # under -R an image's kept cache makes its pixels unneeded
            inputs = _cpu(self._prefix_inputs(images, prefix))
            if len(firsts) > 1 and not inputs["attention_mask"].all():  # unequal prefixes: one image per pass
                return [p for i in indices for p in self._prepare_pass(queries, {i: by_image[i]}, prefix)]
            images = None
        prefix_len = inputs["input_ids"].shape[1] if inputs is not None else self.inputs.length(firsts[0].image, prefix)
        positions = np.array([p for ps in by_image.values() for p in ps], dtype=np.int64)
        pack = self._pack(firsts, [queries[p] for p in positions])
        width, vocab = pack.ids.shape[1], self.model.config.text_config.vocab_size
        per_image = self.kv_bytes_per_token * (prefix_len + width) + width * vocab * 4  # caches, then fp32 logits
        return [PrefixPass(indices, prefix, prefix_len, inputs, images, pack, positions, per_image)]

    def _run_pass(self, p: PrefixPass) -> tuple[np.ndarray, np.ndarray]:
        """A pass's answer scores; split over several forward passes when its images would not fit the GPU."""
        n = len(p.indices)
        per_pass = self._images_per_pass(p.bytes_per_image)
        if per_pass >= n:
            return self._score(p, 0, n, p.pack)
        logprobs, is_argmax = np.zeros(p.pack.reads.shape, np.float32), np.zeros(p.pack.reads.shape, bool)
        for start in range(0, n, per_pass):
            part, held = p.pack.take(start, min(n, start + per_pass))  # held: which of the pack's queries
            logprobs[held], is_argmax[held] = self._score(p, start, min(n, start + per_pass), part)
        return logprobs, is_argmax

    def _images_per_pass(self, bytes_per_image: int) -> int:
        """At most --batch-size images, fewer when their key/value caches and logits would not fit in half the free
        GPU memory."""
        if self.device.type != "cuda":
            return self.batch_size
        import torch

        free, _ = torch.cuda.mem_get_info(self.device)
        return max(1, min(self.batch_size, int(0.5 * free // bytes_per_image)))

    def _score(self, p: PrefixPass, start: int, stop: int, pack: SuffixPack) -> tuple[np.ndarray, np.ndarray]:
        """Two forward passes: the prefix of images ``start:stop`` of ``p`` (or their kept cache), then all of their
        queries' suffixes and candidate answers packed one sequence per image (:mod:`aclbuild.labeling.packing`)."""
        import torch

        prefix_cache = self._prefix_cache(p, start, stop)
        tensor = functools.partial(torch.as_tensor, device=self.device)
        visible = tensor(pack.visible)[:, None]  # [images, 1, width, width]: one mask for every head
        sees_prefix = torch.ones(*visible.shape[:3], p.prefix_len, dtype=torch.bool, device=self.device)
        # a kept prefix cache (-R) must stay the prefix alone: the pass appends to a copy that shares its tensors
        cache = _shallow_copy(prefix_cache) if self.keep_prefixes else prefix_cache
        with torch.inference_mode():
            logits = self.model(
                input_ids=tensor(pack.ids), attention_mask=torch.cat([sees_prefix, visible], dim=-1),
                position_ids=p.prefix_len + tensor(pack.offsets), **{self.cache_keyword: cache},
            ).logits  # fmt: skip
            return answer_scores(logits, pack)

    def _pack(self, firsts: list[Query], group_queries: list[Query]) -> SuffixPack:
        row_of = {q.index: row for row, q in enumerate(firsts)}
        self._tokenise([q.suffix for q in group_queries] + [a for q in group_queries for a in q.answers])
        return pack_suffixes(
            [row_of[q.index] for q in group_queries], [self._tokens[q.suffix] for q in group_queries],
            [[self._tokens[a] for a in q.answers] for q in group_queries], len(firsts),
            self.tokenizer.pad_token_id or 0,
        )  # fmt: skip

    def _prefix_cache(self, p: PrefixPass, start: int, stop: int):
        """The key/value cache of images ``start:stop`` of ``p`` with the prompt prefix.

        With ``keep_prefixes`` > 0 (the -R runner, whose rounds of a block are separate calls) the caches of the
        last ``keep_prefixes`` images are kept, so that an image goes through the model once, not once per round.
        """
        import torch

        key = (*p.indices[start:stop], p.prefix)
        if key in self._kept:
            self._kept.move_to_end(key)
            return self._kept[key]
        if p.inputs is not None:
            ready = {k: v[start:stop] for k, v in p.inputs.items()}
        else:  # the cache kept when this pass was prepared has been dropped since
            ready = _cpu(self._prefix_inputs(p.images[start:stop], p.prefix))
        inputs = on_device(ready, self.device)
        inputs["pixel_values"] = inputs["pixel_values"].to(self.torch_dtype)
        with torch.inference_mode():
            cache = output_cache(self.model(**inputs, use_cache=True))
        if self.keep_prefixes >= stop - start:
            self._kept[key] = cache
            while sum(len(k) - 1 for k in self._kept) > self.keep_prefixes:
                self._kept.popitem(last=False)
        return cache

    def _prefix_inputs(self, images: list[np.ndarray], prefix: str):
        return self.inputs(images, [prefix] * len(images))

    def _tokenise(self, texts: list[str]) -> None:
        """Token ids of suffixes and answers, memoised (the same class names and option lists recur)."""
        new = list(dict.fromkeys(t for t in texts if t not in self._tokens))
        if new:
            for text, ids in zip(new, _token_ids(self.tokenizer, new)):
                self._tokens[text] = ids
        if len(self._tokens) > 200_000:  # option lists of a long run: keep memory bounded
            self._tokens.clear()
            self._tokenise(texts)

    def _split_is_exact(self, query: Query) -> bool:
        """Do prefix and suffix tokenise as the whole prompt does? (logged, not fatal). The tokenizer alone says it:
        the processor only widens the image placeholder, the same in both."""
        whole = self.tokenizer(query.prompt)["input_ids"]
        parts = (
            self.tokenizer(query.prefix)["input_ids"]
            + self.tokenizer(query.suffix, add_special_tokens=False)["input_ids"]
        )
        return list(whole) == list(parts)


def _cpu(inputs) -> dict:
    """Processor outputs as a worker hands them over (:func:`aclbuild.labeling.backend.shareable`)."""
    return shareable(dict(inputs.items()))


def _token_ids(tokenizer, texts: list[str]) -> list[list[int]]:
    """``tokenizer(texts, add_special_tokens=False)["input_ids"]``, without the Python wrapping of every encoding."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return [list(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]
    return [e.ids for e in backend.encode_batch(texts, add_special_tokens=False)]


def check_scoring(scoring: str) -> None:
    """Refuse an unknown --scoring (one line, exit 2)."""
    if scoring not in SCORINGS:
        raise InputError(f"unknown --scoring {scoring!r}; choose generate or likelihood")


def model_placement(dtype: str | None, device=None) -> tuple:
    """Check --dtype; the torch device and dtype a model labeler loads its model with (default bf16 on a GPU, fp32
    on the CPU): ``(device, torch dtype)``.

    Example:
        >>> model_placement(None, "cpu")
        (device(type='cpu'), torch.float32)
    """
    with needs_extra("label"):
        import torch

    if dtype is not None and dtype not in DTYPES:
        raise InputError(f"unknown --dtype {dtype!r}; choose one of: {', '.join(DTYPES)}")
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    name = dtype or ("bf16" if device.type == "cuda" else "fp32")
    return device, {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[name]


def dtype_name(torch_dtype) -> str:
    """The --dtype name of a model's torch dtype, as the log records it (another dtype: torch's own name).

    Example:
        >>> import torch
        >>> dtype_name(torch.bfloat16), dtype_name(torch.float64)
        ('bf16', 'float64')
    """
    names = {"bfloat16": "bf16", "float16": "fp16", "float32": "fp32"}
    return names.get(str(torch_dtype).removeprefix("torch."), str(torch_dtype).removeprefix("torch."))


def cache_keyword(model) -> str:
    """The forward argument that takes a key/value cache: ``cache`` since transformers 5.24 (``past_key_values``,
    which older 5.x releases take, is deprecated and goes in 5.40).

    Example:
        >>> class New:
        ...     def forward(self, input_ids=None, cache=None): ...
        >>> class Old:
        ...     def forward(self, input_ids=None, past_key_values=None): ...
        >>> cache_keyword(New()), cache_keyword(Old())
        ('cache', 'past_key_values')
    """
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def output_cache(outputs):
    """The key/value cache a forward pass returned, under its new name ``cache`` or its old ``past_key_values``
    (reading the old attribute on a new output logs a deprecation warning).

    Example:
        >>> output_cache({"logits": 1, "cache": "kv"}), output_cache({"past_key_values": "old"})
        ('kv', 'old')
    """
    return outputs["cache"] if "cache" in outputs else outputs["past_key_values"]


def _shallow_copy(cache):
    """A cache that holds the same tensors as ``cache``; appending to it leaves ``cache`` as it was."""
    memo = {id(t): t for layer in cache.layers for t in (layer.keys, layer.values)}
    return copy.deepcopy(cache, memo)


def _load(model_id: str, torch_dtype, device):
    """Processor and model, or one clear InputError when the weights are not at hand (offline, wrong path)."""
    with needs_extra("label"):
        from transformers import AutoProcessor, LlavaNextForConditionalGeneration

    try:
        processor = AutoProcessor.from_pretrained(model_id)
        model = LlavaNextForConditionalGeneration.from_pretrained(
            model_id, dtype=torch_dtype, attn_implementation="sdpa"
        )
    except (OSError, ValueError, KeyError) as exc:
        raise InputError(
            f"cannot load a LLaVA-NeXT model from {model_id!r}: not a model folder, and not in the Hugging Face cache "
            f"(offline or wrong id?) ({first_line(exc)})"
        ) from None
    return processor, model.to(device).eval()
