"""Any chat VLM (transformers image-text-to-text with a chat template): the same question in the model's own format.

The question is the one ``--labeler llava`` asks (same template, options, rounds, -R, ``--prompt-file``), rendered
without LLaVA's ``[INST]`` wrapper and put into one user turn, the image first, by the processor's chat template.
Templated text is tokenised without special tokens: the template already holds them (Gemma 3's ``<bos>``).

``scoring="generate"``: greedy generation of up to ``max_new_tokens`` tokens, batched with left padding; the reply
is parsed by the project's parser and asked again when it names no option (as llava). ``scoring="likelihood"``:
every option's answer tokens are scored teacher-forced after the prompt, and the option greedy decoding would say
is chosen (:func:`aclbuild.labeling.packing.pick_options`). The prompt's tokens shared by an image's queries
(image and question up to the options) are run once per image into a key/value cache, kept across rounds (-R);
all of the image's queries then cost one more pass, one row per (query, option): its suffix and that answer. The
first time, the cached scores are checked against full passes; where they differ (a model whose cache cannot be
continued so), ``prefix_shared`` is False, the log says so, and every option is scored by a full pass of its own.

A batch goes through three stages, as with :class:`aclbuild.labeling.llava.LlavaBackend`: :meth:`VlmBackend.prepare`
(chat texts, the processor's pixels and ids, answer tokens, the prefix cut: no model), :meth:`VlmBackend.run` (the
forward passes alone) and :meth:`VlmBackend.replies` (decoding, or choosing from the scores: no model, no images).
The likelihood scoring's parts that need no model (an image's rows, the scores read from their logits, the copy of a
kept cache) are in :mod:`aclbuild.labeling.vlm_scoring`. :meth:`VlmBackend.from_pretrained` loads a checkpoint; the
constructor takes a processor and a model already in memory.

Example:
    >>> from aclbuild.labeling.backend import ask
    >>> model_id = "HuggingFaceTB/SmolVLM-256M-Instruct"
    >>> backend = VlmBackend.from_pretrained(model_id, scoring="likelihood")   # doctest: +SKIP
    >>> ask(backend, queries)[0].choice                                        # doctest: +SKIP
    2
"""

from __future__ import annotations

import sys
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from aclbuild.errors import InputError
from aclbuild.extras import needs_extra
from aclbuild.labeling.backend import Query, Reply, first_line, model_revision
from aclbuild.labeling.inputs import to_pil
from aclbuild.labeling.llava import cache_keyword, check_scoring, dtype_name, model_placement, output_cache
from aclbuild.labeling.packing import pick_options
from aclbuild.labeling.prompts import unwrapped_question
from aclbuild.labeling.vlm_scoring import ImagePass, answer_rows, answer_scores, shallow_copy, token_types


@dataclass(frozen=True)
class VlmBatch:
    """A batch as :meth:`VlmBackend.prepare` leaves it: the processor inputs of each --batch-size chunk
    (``generate``), or the image passes and each (query, option)'s answer length, 0 for none (``likelihood``)."""

    chunks: list[dict]
    passes: list[ImagePass]
    lengths: np.ndarray | None = None


class VlmBackend:
    """A chat VLM (Hub id or local folder) behind the staged backend contract of :mod:`aclbuild.labeling.backend`."""

    def __init__(
        self, processor, model, *, scoring: str = "generate", max_new_tokens: int = 30, batch_size: int = 8,
        model_id: str | None = None,
    ) -> None:  # fmt: skip
        """``processor`` (with a chat template and an image processor) and ``model`` of a chat VLM, the model in eval
        mode on the device it runs on (its device and dtype are the labeler's); ``model_id`` names it in the log
        (default: where it was loaded from). :meth:`from_pretrained` loads them."""
        check_scoring(scoring)
        self.model_id = str(model_id or model.name_or_path)
        check_processor(processor, self.model_id)
        self.processor, self.model = processor, model
        self.device, self.torch_dtype, self.dtype_name = model.device, model.dtype, dtype_name(model.dtype)
        self.scoring, self.max_new_tokens, self.batch_size = scoring, max_new_tokens, batch_size
        self.tokenizer = self.processor.tokenizer
        self.tokenizer.padding_side = "left"
        self.revision = model_revision(self.model, self.model_id)
        self.cache_keyword = cache_keyword(self.model)
        self.prefix_shared: bool | None = None  # does a continued prefix cache score as a full pass? (logged)
        self.split_is_exact = None  # llava's notion; the vlm finds its shared prefix in token ids
        self.keep_prefixes = 0  # images whose prefix caches are kept between calls (set by the -R runner)
        self._kept: OrderedDict[tuple, tuple] = OrderedDict()  # ImagePass.key -> _prefix_cache's triple

    @classmethod
    def from_pretrained(
        cls, model_id: str, dtype: str | None = None, scoring: str = "generate", max_new_tokens: int = 30,
        batch_size: int = 8, device=None,
    ) -> VlmBackend:  # fmt: skip
        """The labeler of chat VLM ``model_id`` (Hub id or local folder) loaded in ``dtype`` (default bf16 on a GPU,
        fp32 on the CPU) on ``device`` (default the GPU if there is one); one InputError when it cannot be loaded."""
        check_scoring(scoring)
        torch_device, torch_dtype = model_placement(dtype, device)
        processor, model = load_vlm(str(model_id), torch_dtype, torch_device)
        return cls(processor, model, scoring=scoring, max_new_tokens=max_new_tokens, batch_size=batch_size,
                   model_id=str(model_id))  # fmt: skip

    @property
    def provenance(self) -> dict:
        """The log's entries of this labeler: under likelihood scoring, whether the prefix cache was shared."""
        if self.scoring != "likelihood":
            return {}
        how = {True: "prefix cache shared by an image's queries",
               False: "one full pass per option (cache not reusable)"}  # fmt: skip
        return {"likelihood_passes": how.get(self.prefix_shared)}

    def chat_text(self, query: Query) -> str:
        """The query's question in the model's chat format, ending where the model's reply starts."""
        content = [{"type": "image"}, {"type": "text", "text": unwrapped_question(query.prompt)}]
        messages = [{"role": "user", "content": content}]
        return self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)

    def encode(self, queries: list[Query], texts: list[str] | None = None) -> dict:
        """Processor inputs (torch, CPU) of ``queries``' images with their chat texts (left padded)."""
        texts = texts or [self.chat_text(q) for q in queries]
        return self._encode(texts, [q.image for q in queries])

    def _encode(self, texts: list[str], images: list) -> dict:
        inputs = self.processor(text=texts, images=[[to_pil(np.asarray(im))] for im in images], padding=True,
                                return_tensors="pt", add_special_tokens=False)  # fmt: skip
        return dict(inputs)

    # The three stages: prepare runs in the loader's worker processes (no model), run in the main process (the
    # forward passes alone), replies in the main process (cheap; its queries carry no images).
    def prepare(self, queries: list[Query]) -> VlmBatch:
        """What ``queries`` need from the processor and tokenizer: generation inputs per chunk, or one
        :class:`ImagePass` per image (its queries come in one batch: one prefix pass serves them all)."""
        if self.scoring == "generate":
            chunks = [queries[s : s + self.batch_size] for s in range(0, len(queries), self.batch_size)]
            return VlmBatch([self.encode(chunk) for chunk in chunks], [])
        texts = [self.chat_text(q) for q in queries]
        options = max(len(q.answers) for q in queries)
        lengths = np.zeros((len(queries), options), dtype=np.int64)
        tokens = [self._query_tokens(q, text) for q, text in zip(queries, texts)]  # (head, n, suffix, answers)
        depth = max(len(a) for _, _, _, answers in tokens for a in answers)
        groups: dict[tuple, list[int]] = {}
        for position, (q, (head, n, _, _)) in enumerate(zip(queries, tokens)):
            groups.setdefault((q.index, head, n), []).append(position)
        passes = []
        for key, positions in groups.items():
            first = positions[0]
            passes.append(self._image_pass(key, queries[first], texts[first], positions, tokens, lengths, depth))
        return VlmBatch([], passes, lengths)

    def run(self, batch: VlmBatch):
        """The forward passes: generated token ids per chunk, or each (query, option)'s (greedy?, log-probability)
        as two [queries, options] arrays."""
        if self.scoring == "generate":
            return [self._generate(chunk) for chunk in batch.chunks]
        import torch

        picked = torch.cat([self._image_logits(p) for p in batch.passes])  # the few logits read, of every image
        targets = torch.cat([p.targets for p in batch.passes]).to(self.device)
        scores = [t.cpu().numpy() for t in answer_scores(picked, targets)]  # one wait for the device
        greedy, logprobs = np.zeros(batch.lengths.shape, bool), np.zeros(batch.lengths.shape, np.float64)
        cells = np.concatenate([p.cells for p in batch.passes])
        greedy.flat[cells], logprobs.flat[cells] = scores
        return greedy, logprobs

    def replies(self, queries: list[Query], batch: VlmBatch, raw) -> list[Reply]:
        """The decoded replies (``generate``) or each query's chosen option (``likelihood``)."""
        if self.scoring == "generate":
            texts = [t for ids in raw for t in self.tokenizer.batch_decode(ids, skip_special_tokens=True)]
            return [Reply(text.strip()) for text in texts]
        choices = pick_options(raw[0], batch.lengths, raw[1]).tolist()
        return [Reply(q.answers[c], c) for q, c in zip(queries, choices)]

    def _generate(self, chunk: dict) -> np.ndarray:
        import torch

        inputs = self._on_device(chunk)
        with torch.inference_mode():
            out = self.model.generate(
                **inputs, max_new_tokens=self.max_new_tokens, do_sample=False, pad_token_id=self.tokenizer.pad_token_id
            )  # fmt: skip
        return out[:, inputs["input_ids"].shape[1] :].cpu().numpy()

    def _on_device(self, inputs: dict) -> dict:
        """``inputs`` on the model's device, floating ones (pixels) in its dtype."""
        return {k: v.to(self.device, self.torch_dtype if v.is_floating_point() else None) for k, v in inputs.items()}

    # ---------------------------------------------------------------- likelihood scoring: prepare's side
    def _query_tokens(self, query: Query, text: str) -> tuple[str, int, list[int], list[list[int]]]:
        """The chat text's head no option list changes, how many of its tokens the text shares, the suffix's tokens
        after them (at least one: it predicts the answers' first tokens), and each answer's tokens as they follow the
        chat text (a sentencepiece tokenizer may merge across the seam: then the answer alone)."""
        question = unwrapped_question(query.prompt)
        shared = query.prefix[query.prompt.index(question) :]  # the question's words before the options
        head = text[: text.index(question) + len(shared)]
        # the tokenizer itself, not its backend: the processor leaves the backend padding batches
        encoded = self.tokenizer([text, head, *(text + a for a in query.answers)], add_special_tokens=False)
        whole, head_ids, *with_answers = encoded["input_ids"]
        n = 0
        while n < min(len(whole), len(head_ids)) and whole[n] == head_ids[n]:
            n += 1
        n = min(n, len(whole) - 1)
        answers = []
        for answer, ids in zip(query.answers, with_answers):
            if ids[: len(whole)] == whole and len(ids) > len(whole):
                answers.append(list(ids[len(whole) :]))
            else:
                answers.append(list(self.tokenizer(answer, add_special_tokens=False)["input_ids"]))
        return head, n, list(whole[n:]), answers

    def _image_pass(
        self, key: tuple, query: Query, text: str, positions: list[int], tokens: list, lengths: np.ndarray, depth: int
    ) -> ImagePass:
        """The :class:`ImagePass` of the queries at ``positions`` (``query``'s image, one prefix; ``query`` and
        ``text`` are the first); fills their ``lengths``."""
        import torch

        rows, cells = [], []
        for position in positions:
            _, _, suffix, answers = tokens[position]
            for option, answer in enumerate(answers):
                rows.append((suffix, answer))
                cells.append(position * lengths.shape[1] + option)
                lengths[position, option] = len(answer)
        packed = answer_rows(rows, depth, self.tokenizer.pad_token_id or 0)
        suffix = tokens[positions[0]][2]
        hint = self.prefix_shared and key in self._kept  # a kept cache (-R) makes the pixels unneeded, if still kept
        inputs = None if hint else self._prefix_inputs(text, query.image, suffix)
        kept_image = torch.from_numpy(np.ascontiguousarray(query.image)) if hint else None
        return ImagePass(key, inputs, kept_image, text, len(suffix), torch.from_numpy(packed.ids), packed.row_lens,
                         packed.reads, torch.from_numpy(packed.picks), torch.from_numpy(packed.targets),
                         np.array(cells, dtype=np.int64), len(query.answers))  # fmt: skip

    def _prefix_inputs(self, text: str, image, suffix: list[int]) -> dict:
        """The processor inputs of ``text`` with ``image``, the per-token ones cut before ``suffix`` (the image's
        inputs whole); the processor must tokenise the text after the image as the tokenizer does."""
        inputs = self._encode([text], [image])
        ids = inputs["input_ids"]
        cut = ids.shape[1] - len(suffix)
        if ids[0, cut:].tolist() != suffix:
            raise InputError(
                f"the processor of {self.model_id!r} tokenises the chat text after the image unlike its tokenizer, so "
                "its prompt cannot be split for likelihood scoring: use --scoring generate"
            )
        return {k: (v[:, :cut] if v.shape == ids.shape else v) for k, v in inputs.items()}

    # ---------------------------------------------------------------- likelihood scoring: run's side
    def _image_logits(self, p: ImagePass):
        """The logits of ``p``'s rows that predict answer tokens [rows x depth, vocab]: from its prefix cache, or
        full passes where the cache cannot be continued. The first time, the first query's cached scores are checked
        against full passes."""
        if self.prefix_shared is False:
            return self._full_logits(p, range(len(p.cells)))
        cached = self._cached_logits(p)
        if self.prefix_shared is None:
            self.prefix_shared = self._cache_scores_as_full_pass(p, cached)
            if not self.prefix_shared:
                print(f"{self.model_id}: a continued prefix cache does not score as a full pass; scoring every option "
                      "with a full pass of its own (slower)", file=sys.stderr)  # fmt: skip
                return self._full_logits(p, range(len(p.cells)))
        return cached

    def _cache_scores_as_full_pass(self, p: ImagePass, cached) -> bool:
        """Do the first query's scores from the prefix cache (``cached`` logits) agree with full passes?"""
        targets = p.targets[: p.first_rows].to(self.device)
        full = self._full_logits(p, range(p.first_rows))
        (greedy, logprobs), (greedy_full, logprobs_full) = (
            answer_scores(logits, targets) for logits in (cached[: len(full)], full)
        )  # fmt: skip
        tolerance = 1e-3 if self.dtype_name == "fp32" else 0.25  # 16-bit passes of other shapes round apart
        return bool(  # a cache continued at wrong positions misses by far more
            (greedy == greedy_full).all()
            and np.allclose(logprobs.cpu().numpy(), logprobs_full.cpu().numpy(), atol=tolerance)
        )

    def _cached_logits(self, p: ImagePass):
        """The answer-predicting logits from the image's prefix cache: one pass over every (query, option) row."""
        import torch

        cache, rope_deltas, token_types = self._prefix_cache(p)
        inner = getattr(self.model, "model", None)
        if hasattr(inner, "rope_deltas"):  # Qwen2-VL's M-RoPE: this image's text positions continue from its own
            inner.rope_deltas = rope_deltas
        rows = p.rows_ids.to(self.device)
        continued = shallow_copy(cache) if self.keep_prefixes else cache  # a kept cache must stay the prefix alone
        continued.batch_repeat_interleave(rows.shape[0])
        extra = {k: torch.zeros_like(rows) for k in token_types}  # all text
        with torch.inference_mode():
            logits = self.model(
                input_ids=rows,  # no mask: right padding is never read, and positions then count from the cache
                **{self.cache_keyword: continued}, **extra,
            ).logits  # fmt: skip
        return logits.reshape(-1, logits.shape[-1])[p.picks.to(self.device)]

    def _full_logits(self, p: ImagePass, rows: range):
        """The answer-predicting logits of ``rows`` of ``p`` from one full pass (image included) each: the
        fallback, and the check."""
        import torch

        prefix = self._on_device(self._inputs(p))
        cut = prefix["input_ids"].shape[1]
        picked = []
        for r in rows:
            tail = p.rows_ids[r : r + 1, : p.row_lens[r]].to(self.device)
            full = dict(prefix)
            full["input_ids"] = torch.cat([prefix["input_ids"], tail], dim=1)
            full["attention_mask"] = torch.cat([prefix["attention_mask"], torch.ones_like(tail)], dim=1)
            for k in token_types(prefix):
                full[k] = torch.cat([prefix[k], torch.zeros_like(tail)], dim=1)
            with torch.inference_mode():
                logits = self.model(**full).logits
            picked.append(logits[0, torch.as_tensor(cut + p.reads[r], device=self.device)])
        return torch.cat(picked)

    def _inputs(self, p: ImagePass) -> dict:
        """``p``'s prefix inputs; encoded here when prepare left them out for a kept cache that is gone since."""
        if p.inputs is not None:
            return p.inputs
        return self._prefix_inputs(p.text, p.image.numpy(), p.rows_ids[0, : p.suffix_len].tolist())

    def _prefix_cache(self, p: ImagePass) -> tuple:
        """The key/value cache of ``p``'s image with its prefix, the model's M-RoPE offset after it (Qwen2-VL; else
        None) and the names of its per-token inputs besides ids and mask. The last ``keep_prefixes`` images' are
        kept, so that under -R (whose rounds of a block are separate calls) an image goes through the model once, not
        once per round."""
        import torch

        if p.key in self._kept:
            self._kept.move_to_end(p.key)
            return self._kept[p.key]
        with torch.inference_mode():
            inputs = self._on_device(self._inputs(p))
            cache = output_cache(self.model(**inputs, use_cache=True))
        entry = cache, getattr(getattr(self.model, "model", None), "rope_deltas", None), tuple(token_types(inputs))
        if self.keep_prefixes and self.prefix_shared is not False:
            self._kept[p.key] = entry
            while len(self._kept) > self.keep_prefixes:
                self._kept.popitem(last=False)
        return entry


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
