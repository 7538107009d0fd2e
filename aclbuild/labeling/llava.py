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

Example:
    >>> backend = LlavaBackend("llava-hf/llava-v1.6-mistral-7b-hf", scoring="likelihood")   # doctest: +SKIP
    >>> backend.answer(queries)[0].choice                                                    # doctest: +SKIP
    2
"""

from __future__ import annotations

import copy
import functools
from collections import OrderedDict
from pathlib import Path

import numpy as np

from aclbuild.errors import InputError
from aclbuild.labeling.backend import Query, Reply
from aclbuild.labeling.inputs import BatchInputs
from aclbuild.labeling.packing import SuffixPack, choose_from_logits, pack_suffixes

DTYPES = ("bf16", "fp16", "fp32")
SCORINGS = ("generate", "likelihood")


def kv_bytes_per_token(text_config, dtype_bytes: int) -> int:
    """Key/value cache bytes one token takes (all layers): 128 KiB for Mistral-7B in 16-bit."""
    heads = getattr(text_config, "num_key_value_heads", None) or text_config.num_attention_heads
    head_dim = getattr(text_config, "head_dim", None) or text_config.hidden_size // text_config.num_attention_heads
    return 2 * text_config.num_hidden_layers * heads * head_dim * dtype_bytes


class LlavaBackend:
    """Any LLaVA-NeXT checkpoint (Hub id or local folder) behind the :class:`aclbuild.labeling.backend.Backend` contract."""

    def __init__(
        self, model: str, dtype: str | None = None, scoring: str = "generate", max_new_tokens: int = 30,
        batch_size: int = 8, device=None, loaded: tuple | None = None,
    ) -> None:  # fmt: skip
        """``loaded`` = (processor, model) already in memory (the benchmark's randomly initialised 7B model)."""
        import torch

        if scoring not in SCORINGS:
            raise InputError(f"unknown --scoring {scoring!r}; choose generate or likelihood")
        if dtype is not None and dtype not in DTYPES:
            raise InputError(f"unknown --dtype {dtype!r}; choose one of: {', '.join(DTYPES)}")
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.dtype_name = dtype or ("bf16" if self.device.type == "cuda" else "fp32")
        self.torch_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[self.dtype_name]
        self.scoring, self.max_new_tokens, self.batch_size = scoring, max_new_tokens, batch_size
        self.model_id = str(model)
        self.processor, self.model = loaded or _load(self.model_id, self.torch_dtype, self.device)
        self.tokenizer = self.processor.tokenizer
        self.tokenizer.padding_side = "left"
        self.inputs = BatchInputs(self.processor)
        self.revision = getattr(self.model.config, "_commit_hash", None) or (
            "local" if Path(self.model_id).is_dir() else "unknown"
        )
        self.kv_bytes_per_token = kv_bytes_per_token(self.model.config.text_config, self.model.dtype.itemsize)
        self.split_is_exact: bool | None = None  # do prefix and suffix tokenise as the whole prompt does?
        self._tokens: dict[str, list[int]] = {}
        self.keep_prefixes = 0  # images whose prefix caches are kept between calls (set by the -R runner)
        self.prefix_passes = 0  # images sent through the model with their prefix (for tests and benchmarks)
        self._kept: OrderedDict[tuple, tuple] = OrderedDict()
        self._ready: dict = {}  # what prepare() computed for the current answer() call

    def answer(self, queries: list[Query], prepared: dict | None = None) -> list[Reply]:
        """The replies to ``queries``; ``prepared`` is what :meth:`prepare` returned for them, if it was called."""
        self._ready = prepared or {}
        try:
            return self._likelihood(queries) if self.scoring == "likelihood" else self._generate(queries)
        finally:
            self._ready = {}

    def prepare(self, queries: list[Query]) -> dict:
        """The model inputs of ``queries`` that need no model (pixels, token ids, the packed suffixes), for
        :meth:`answer`.

        The runner calls this for the next batches in its worker process while the model answers the current one,
        so that preprocessing and tokenising overlap the forward passes (:mod:`aclbuild.labeling.pipeline`, which
        hands numpy arrays over through shared memory).
        """
        if self.scoring == "generate":
            chunks = (queries[s : s + self.batch_size] for s in range(0, len(queries), self.batch_size))
            return {
                "prompts": {_keys(c): _numpy(self.inputs([q.image for q in c], [q.prompt for q in c])) for c in chunks}
            }
        firsts = list({q.index: q for q in queries}.values())
        rows = {q.index: row for row, q in enumerate(firsts)}
        prefix = (firsts[0].prefix, rows, _numpy(self._prefix_inputs([q.image for q in firsts], firsts[0].prefix)))
        return {"prefix": prefix, "pack": (_keys(queries), self._pack(firsts, queries))}

    # ---------------------------------------------------------------- the reference loop
    def _generate(self, queries: list[Query]) -> list[Reply]:
        import torch

        replies: list[Reply] = []
        for start in range(0, len(queries), self.batch_size):
            chunk = queries[start : start + self.batch_size]
            ready = self._ready.get("prompts", {}).get(_keys(chunk))
            if ready is not None:
                inputs = {k: torch.from_numpy(v).to(self.device) for k, v in ready.items()}
            else:
                inputs = self.inputs([q.image for q in chunk], [q.prompt for q in chunk]).to(self.device)
            inputs["pixel_values"] = inputs["pixel_values"].to(self.torch_dtype)
            with torch.inference_mode():
                out = self.model.generate(
                    **inputs, max_new_tokens=self.max_new_tokens, do_sample=False,
                    pad_token_id=self.tokenizer.pad_token_id,
                )  # fmt: skip
            texts = self.tokenizer.batch_decode(out[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
            replies.extend(Reply(text.strip()) for text in texts)
        return replies

    # ---------------------------------------------------------------- likelihood scoring with a shared prefix
    def _likelihood(self, queries: list[Query]) -> list[Reply]:
        by_image: OrderedDict[int, list[int]] = OrderedDict()
        for position, q in enumerate(queries):
            by_image.setdefault(q.index, []).append(position)
        replies: list[Reply | None] = [None] * len(queries)
        images = list(by_image)
        per_pass = self._images_per_pass(queries[0], max(len(v) for v in by_image.values()))
        for start in range(0, len(images), per_pass):
            group = images[start : start + per_pass]
            positions = [p for i in group for p in by_image[i]]
            choices = self._score_group([queries[by_image[i][0]] for i in group], [queries[p] for p in positions])
            for p, choice in zip(positions, choices):
                replies[p] = Reply(queries[p].answers[choice], choice)
        missing = [p for p, r in enumerate(replies) if r is None]
        if missing:
            raise RuntimeError(f"likelihood scoring lost {len(missing)} of {len(queries)} queries")  # a bug, not input
        return [r for r in replies if r is not None]

    def _images_per_pass(self, query: Query, queries_per_image: int) -> int:
        """At most --batch-size images, fewer when their key/value caches and logits would not fit in half the free
        GPU memory. Each image holds its prefix cache and its packed suffixes (:mod:`aclbuild.labeling.packing`)."""
        if self.device.type != "cuda":
            return self.batch_size
        import torch

        self._tokenise([query.suffix, *query.answers])
        packed = queries_per_image * (
            len(self._tokens[query.suffix]) + sum(len(self._tokens[a]) for a in query.answers)
        )
        prefix_tokens = self.inputs.length(query.image, query.prefix)
        vocab = self.model.config.text_config.vocab_size
        per_image = self.kv_bytes_per_token * (prefix_tokens + packed) + packed * vocab * 4
        free, _ = torch.cuda.mem_get_info(self.device)
        return max(1, min(self.batch_size, int(0.5 * free // per_image)))

    def _score_group(self, firsts: list[Query], group_queries: list[Query]) -> list[int]:
        """Two passes: the prefix of each image of ``firsts``, then all of their queries' suffixes and candidate
        answers packed one sequence per image (:mod:`aclbuild.labeling.packing`)."""
        import torch

        encoded = self._encode_prefix(firsts)
        if encoded is None:  # images of different sizes: their prefixes differ in length, score them one by one
            return [c for q in group_queries for c in self._score_group([q], [q])]
        prefix_cache, prefix_len = encoded
        keys, pack = self._ready.get("pack", (None, None))
        if keys != _keys(group_queries):
            pack = self._pack(firsts, group_queries)
        tensor = functools.partial(torch.as_tensor, device=self.device)
        visible = tensor(pack.visible)[:, None]  # [images, 1, width, width]: one mask for every head
        sees_prefix = torch.ones(*visible.shape[:3], prefix_len, dtype=torch.bool, device=self.device)
        # a kept prefix cache (-R) must stay the prefix alone: the pass appends to a copy that shares its tensors
        cache = _shallow_copy(prefix_cache) if self.keep_prefixes else prefix_cache
        with torch.inference_mode():
            logits = self.model(
                input_ids=tensor(pack.ids), attention_mask=torch.cat([sees_prefix, visible], dim=-1),
                position_ids=prefix_len + tensor(pack.offsets), past_key_values=cache,
            ).logits  # fmt: skip
            return choose_from_logits(logits, pack).tolist()

    def _pack(self, firsts: list[Query], group_queries: list[Query]) -> SuffixPack:
        row_of = {q.index: row for row, q in enumerate(firsts)}
        self._tokenise([q.suffix for q in group_queries] + [a for q in group_queries for a in q.answers])
        return pack_suffixes(
            [row_of[q.index] for q in group_queries], [self._tokens[q.suffix] for q in group_queries],
            [[self._tokens[a] for a in q.answers] for q in group_queries], len(firsts), self.tokenizer.pad_token_id or 0,
        )  # fmt: skip

    def _encode_prefix(self, firsts: list[Query]):
        """(key/value cache, length) of the images of ``firsts`` with the prompt prefix; None when their sizes differ.

        With ``keep_prefixes`` > 0 (the -R runner, whose rounds of a block are separate calls) the caches of the
        last ``keep_prefixes`` images are kept, so that an image goes through the model once, not once per round.
        """
        import torch

        key = (*(q.index for q in firsts), firsts[0].prefix)
        if key in self._kept:
            self._kept.move_to_end(key)
            return self._kept[key]
        prefix, rows, ready = self._ready.get("prefix", (None, {}, None))
        if prefix == firsts[0].prefix and all(q.index in rows for q in firsts):
            picked = [rows[q.index] for q in firsts]
            whole = picked == list(range(len(rows)))
            inputs = {k: torch.from_numpy(v if whole else v[picked]).to(self.device) for k, v in ready.items()}
        else:
            inputs = self._prefix_inputs([q.image for q in firsts], firsts[0].prefix).to(self.device)
        if len(firsts) > 1 and not bool(inputs["attention_mask"].all()):
            return None
        inputs["pixel_values"] = inputs["pixel_values"].to(self.torch_dtype)
        if self.split_is_exact is None:
            self._check_split(firsts[0], inputs["input_ids"][0].tolist())
        with torch.inference_mode():
            encoded = (self.model(**inputs, use_cache=True).past_key_values, inputs["input_ids"].shape[1])
        self.prefix_passes += len(firsts)
        if self.keep_prefixes >= len(firsts):
            self._kept[key] = encoded
            while sum(len(k) - 1 for k in self._kept) > self.keep_prefixes:
                self._kept.popitem(last=False)
        return encoded

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

    def _check_split(self, query: Query, prefix_ids: list[int]) -> None:
        """Record whether prefix + suffix tokens equal the whole prompt's tokens (logged; not fatal)."""
        whole = self.inputs([query.image], [query.prompt])["input_ids"]
        suffix = self.tokenizer(query.suffix, add_special_tokens=False)["input_ids"]
        self.split_is_exact = whole[0].tolist() == prefix_ids + suffix


def _numpy(inputs) -> dict[str, np.ndarray]:
    return {k: v.numpy() for k, v in inputs.items()}


def _keys(queries: list[Query]) -> tuple:
    return tuple((q.index, q.round_, q.attempt) for q in queries)


def _token_ids(tokenizer, texts: list[str]) -> list[list[int]]:
    """``tokenizer(texts, add_special_tokens=False)["input_ids"]``, without the Python wrapping of every encoding."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return [list(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]
    return [e.ids for e in backend.encode_batch(texts, add_special_tokens=False)]


def _shallow_copy(cache):
    """A cache that holds the same tensors as ``cache``; appending to it leaves ``cache`` as it was."""
    memo = {id(t): t for layer in cache.layers for t in (layer.keys, layer.values)}
    return copy.deepcopy(cache, memo)


def _load(model_id: str, torch_dtype, device):
    """Processor and model, or one clear InputError when the weights are not at hand (offline, wrong path)."""
    from transformers import AutoProcessor, LlavaNextForConditionalGeneration

    try:
        processor = AutoProcessor.from_pretrained(model_id)
        model = LlavaNextForConditionalGeneration.from_pretrained(
            model_id, dtype=torch_dtype, attn_implementation="sdpa"
        )
    except (OSError, ValueError, KeyError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(
            f"cannot load a LLaVA-NeXT model from {model_id!r}: not a model folder, and not in the Hugging Face cache "
            f"(offline or wrong id?) ({first[:200]})"
        ) from None
    return processor, model.to(device).eval()
