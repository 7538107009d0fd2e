"""The chat-VLM labeler's likelihood scoring, the parts that need no model: an image's rows of (suffix, answer)
tokens and where their answer tokens' predictions are read (:class:`ImagePass`, :func:`answer_rows`), the scores read
from those logits (:func:`answer_scores`), the per-token inputs a continued pass must give (:func:`token_types`) and
the copy of a kept prefix cache that a pass may grow (:func:`shallow_copy`). :mod:`aclbuild.labeling.vlm` runs them.

Example:
    >>> rows = answer_rows([([7, 8], [5]), ([7, 8], [6, 4])], depth=2, pad_id=0)
    >>> rows.ids.tolist(), rows.reads.tolist(), rows.targets.tolist()
    ([[7, 8, 5, 0], [7, 8, 6, 4]], [[1, 0], [1, 2]], [[5, -1], [6, 4]])
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ImagePass:
    """One image's likelihood work as :meth:`aclbuild.labeling.vlm.VlmBackend.prepare` leaves it: its prefix and a
    row per (query, option).

    ``key`` (image index, the chat text's shared head, its token count) names the prefix cache. ``inputs`` are the
    prefix's processor inputs (torch, CPU; per-token ones cut where the options start), or None when a cache kept
    from an earlier call (-R) made them look unneeded; ``image`` is then kept so that the labeler's ``run`` can
    encode it again if that cache has been dropped since. ``text`` is the first query's chat text, whose suffix
    is ``rows_ids[0, :suffix_len]``. Row r holds a query's suffix then one answer (right padded to ``row_lens``);
    ``reads[r, j]`` is the row position whose logits predict ``targets[r, j]``, the answer's token j (``targets``
    is -1 past the answer's end, ``reads`` then 0; as many columns as the batch's longest answer), and ``picks`` are
    the same positions in the pass's flattened [rows x width] logits. ``cells[r]`` is where the row's scores go in
    the batch's [queries, options] arrays. The first query's rows come first: ``first_rows`` of them.
    """

    key: tuple[int, str, int]
    inputs: dict | None
    image: object | None
    text: str
    suffix_len: int
    rows_ids: object
    row_lens: np.ndarray
    reads: np.ndarray
    picks: object
    targets: object
    cells: np.ndarray
    first_rows: int


@dataclass(frozen=True)
class AnswerRows:
    """:func:`answer_rows`' arrays (numpy), as :class:`ImagePass` holds them (``picks`` flattened)."""

    ids: np.ndarray
    row_lens: np.ndarray
    reads: np.ndarray
    picks: np.ndarray
    targets: np.ndarray


def answer_rows(rows: list[tuple[list[int], list[int]]], depth: int, pad_id: int) -> AnswerRows:
    """Token rows of (suffix, answer) pairs, right padded with ``pad_id``, and where each answer token is predicted:
    ``reads`` / ``targets`` have ``depth`` columns (the batch's longest answer), -1 targets past an answer's end."""
    width = max(len(s) + len(a) for s, a in rows)
    ids = np.full((len(rows), width), pad_id, dtype=np.int64)
    reads, targets = np.zeros((len(rows), depth), np.int64), np.full((len(rows), depth), -1, np.int64)
    for r, (suffix, answer) in enumerate(rows):
        ids[r, : len(suffix) + len(answer)] = suffix + answer
        reads[r, : len(answer)] = len(suffix) - 1 + np.arange(len(answer))
        targets[r, : len(answer)] = answer
    row_lens = np.array([len(s) + len(a) for s, a in rows], dtype=np.int64)
    picks = (reads + width * np.arange(len(rows))[:, None]).reshape(-1)
    return AnswerRows(ids, row_lens, reads, picks, targets)


def token_types(inputs: dict) -> list[str]:
    """The per-token inputs besides ids and mask (Gemma 3's ``token_type_ids``, ``mm_token_type_ids``): 0 = text.

    Example:
        >>> import numpy as np
        >>> ids = np.zeros((1, 5))
        >>> token_types({"input_ids": ids, "attention_mask": ids, "token_type_ids": ids, "pixel_values": np.zeros(3)})
        ['token_type_ids']
    """
    shape = inputs["input_ids"].shape
    return [k for k, v in inputs.items() if k not in ("input_ids", "attention_mask") and v.shape == shape]


def answer_scores(picked, targets):
    """Per (query, option) row: are all of its answer's tokens the arg-max, and their summed log-probability
    (tensors on the logits' device). ``picked`` [rows x depth, vocab] holds the logits that predict ``targets``
    [rows, depth] (-1 past the answer's end).

    Example:
        >>> import torch
        >>> picked = torch.log(torch.tensor([[0.5, 0.25, 0.25], [0.25, 0.5, 0.25]]))
        >>> greedy, logprob = answer_scores(picked, torch.tensor([[0, 2]]))
        >>> greedy.tolist(), round(float(logprob[0].exp()), 3)
        ([False], 0.125)
    """
    import torch

    present, target = targets >= 0, targets.clamp(min=0)
    picked = picked.float().view(*targets.shape, picked.shape[-1])
    logprob = picked.log_softmax(dim=-1).gather(2, target[:, :, None])[:, :, 0]
    greedy = ((picked.argmax(dim=-1) == target) | ~present).all(dim=1)
    return greedy, torch.where(present, logprob, 0.0).sum(dim=1)


def shallow_copy(cache):
    """A cache holding the same tensors as ``cache``; growing or repeating it leaves ``cache`` as it was. Dynamic
    layers replace their tensors, never write into them: copies of the layers suffice (a deep copy, which takes
    ~1 ms, only for other kinds)."""
    from transformers.cache_utils import DynamicLayer

    if not all(isinstance(layer, DynamicLayer) for layer in cache.layers):
        memo = {id(t): t for layer in cache.layers for t in (layer.keys, layer.values) if t is not None}
        return copy.deepcopy(cache, memo)
    copied = copy.copy(cache)
    copied.layers = [copy.copy(layer) for layer in cache.layers]
    return copied
