"""Likelihood scoring in one pass: every query of an image, and every candidate answer, packed after its prefix.

An image's prompt prefix (the image and the question up to the options) is encoded once into a key/value cache.
Its queries (one per round, or per retry) differ only in their suffix: the options in the order shown. One
sequence per image then holds, one after the other, each query's suffix and, for each candidate answer of several
tokens, all of its tokens but the last. An attention mask lets each suffix see the prefix and itself, and each
answer see the prefix, its query's suffix and itself; positions continue from the end of what each token sees. So
one forward pass over short sequences yields every logit that predicts an answer token, and the prefix cache is
read once per image instead of once per query and candidate.

:func:`pack_suffixes` builds the sequences from token ids alone (numpy, no model: the runner's worker process does
it ahead); :func:`answer_scores` reads the answer tokens' scores from the pass's logits (the model's side), and
:func:`choose` picks each query's option from them (:func:`pick_options`, numpy again).

Example:
    >>> pack = pack_suffixes([0, 0], [[7, 8], [9]], [[[5], [6, 4]], [[5], [6, 4]]], images=1)
    >>> pack.ids.tolist(), pack.offsets.tolist()
    ([[7, 8, 6, 9, 6]], [[0, 1, 2, 0, 1]])
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SuffixPack:
    """The packed suffix pass of some images' queries, and where to read each answer token's prediction.

    ``ids``, ``offsets`` (position after the prefix) and ``visible`` (token t may attend to token u of the same
    row; the prefix is visible to all) are [images, width] and [images, width, width]. ``reads[q, c, j]`` indexes
    ``predictors`` (flat positions image * width + t) for the logits that predict token j of query q's candidate c,
    which is ``tokens[q, c, j]``; both are -1 past the end of a candidate. ``rows[q]`` is query q's image.
    """

    ids: np.ndarray
    offsets: np.ndarray
    visible: np.ndarray
    predictors: np.ndarray
    reads: np.ndarray
    tokens: np.ndarray
    rows: np.ndarray

    @property
    def present(self) -> np.ndarray:
        return self.reads >= 0

    def take(self, start: int, stop: int) -> tuple[SuffixPack, np.ndarray]:
        """The pack of images ``start:stop`` alone (a pass that must hold fewer images), and which of this pack's
        queries it holds, in order."""
        queries = np.flatnonzero((self.rows >= start) & (self.rows < stop))
        reads = self.reads[queries]
        used = np.unique(reads[reads >= 0])  # this pack's predictors that those queries read, in order
        predictors = self.predictors[used] - start * self.ids.shape[1]
        reads = np.where(reads >= 0, np.searchsorted(used, reads), -1)
        part = SuffixPack(
            self.ids[start:stop], self.offsets[start:stop], self.visible[start:stop], predictors, reads,
            self.tokens[queries], self.rows[queries] - start,
        )  # fmt: skip
        return part, queries


def pack_suffixes(
    rows: list[int], suffixes: list[list[int]], answers: list[list[list[int]]], images: int, pad: int = 0
) -> SuffixPack:
    """Pack query q (suffix token ids ``suffixes[q]``, candidate answers ``answers[q]``) into the sequence of image
    ``rows[q]`` of ``images``. Padding tokens (``pad``) see only the prefix and themselves, and are never read."""
    cursor = [0] * images
    layout = []  # per query: where its suffix starts, and where each longer answer's tokens start
    for q, row in enumerate(rows):
        start = cursor[row]
        cursor[row] += len(suffixes[q])
        longer = []
        for c, answer in enumerate(answers[q]):
            if len(answer) > 1:
                longer.append((c, cursor[row]))
                cursor[row] += len(answer) - 1
        layout.append((start, longer))
    width = max(cursor)
    ids = np.full((images, width), pad, dtype=np.int64)
    offsets = np.zeros((images, width), dtype=np.int64)
    visible = np.zeros((images, width, width), dtype=bool)
    visible[:, np.arange(width), np.arange(width)] = True  # a padding row attends to something: no empty softmax
    depth = max(len(a) for per in answers for a in per)
    reads = np.full((len(rows), max(len(per) for per in answers), depth), -1, dtype=np.int64)
    tokens = np.full(reads.shape, -1, dtype=np.int64)
    predictors: list[int] = []
    for q, (row, (start, longer)) in enumerate(zip(rows, layout)):
        n = len(suffixes[q])
        ids[row, start : start + n] = suffixes[q]
        offsets[row, start : start + n] = np.arange(n)
        visible[row, start : start + n, start : start + n] = _causal(n)
        predictors.append(row * width + start + n - 1)  # the suffix's last token predicts every first answer token
        for c, answer in enumerate(answers[q]):
            tokens[q, c, : len(answer)] = answer
            reads[q, c, 0] = len(predictors) - 1
        for c, at in longer:
            fed = answers[q][c][:-1]
            m = len(fed)
            ids[row, at : at + m] = fed
            offsets[row, at : at + m] = n + np.arange(m)
            visible[row, at : at + m, start : start + n] = True
            visible[row, at : at + m, at : at + m] = _causal(m)
            reads[q, c, 1 : m + 1] = len(predictors) + np.arange(m)
            predictors.extend(row * width + at + np.arange(m))
    return SuffixPack(
        ids, offsets, visible, np.asarray(predictors, dtype=np.int64), reads, tokens, np.asarray(rows, dtype=np.int64)
    )


@functools.lru_cache(maxsize=64)
def _causal(n: int) -> np.ndarray:
    return np.tril(np.ones((n, n), dtype=bool))


def answer_scores(logits, pack: SuffixPack) -> tuple[np.ndarray, np.ndarray]:
    """The model's side of the choice: (log-probability, is-the-arg-max) of every answer token [queries, candidates,
    tokens], from the packed pass's logits [images, width, vocab]. Only the rows that predict answer tokens are
    reduced, on the logits' device; entries past the end of a candidate are meaningless (see ``pack.present``)."""
    import torch

    device, vocab = logits.device, logits.shape[-1]
    picked = logits.reshape(-1, vocab)[torch.as_tensor(pack.predictors, device=device)].float()
    present = pack.present
    reads, tokens = np.where(present, pack.reads, 0), np.where(present, pack.tokens, 0)
    # few large ops: each costs about as much as its launch on the tiny test model
    logprobs = picked.log_softmax(dim=-1).view(-1)[torch.as_tensor(reads * vocab + tokens, device=device)]
    is_argmax = picked.argmax(dim=-1)[torch.as_tensor(reads, device=device)] == torch.as_tensor(tokens, device=device)
    return logprobs.cpu().numpy(), is_argmax.cpu().numpy()


def choose(pack: SuffixPack, logprobs: np.ndarray, is_argmax: np.ndarray) -> np.ndarray:
    """Each query's winning candidate (:func:`pick_options`) from :func:`answer_scores` (numpy, no model)."""
    present = pack.present
    greedy = (is_argmax | ~present).all(axis=2)
    return pick_options(greedy, present.sum(axis=2), np.where(present, logprobs, 0.0).sum(axis=2))


def pick_options(greedy: np.ndarray, lengths: np.ndarray, logprobs: np.ndarray) -> np.ndarray:
    """Index of each query's winning candidate: a full greedy path first (the longest if several), else the most
    likely; ties go to the earlier candidate.

    All three are [queries, candidates] arrays: ``greedy[q, c]`` says every token of candidate c is the arg-max
    given the prefix and its earlier tokens, ``lengths`` counts its tokens (0 for a missing candidate) and
    ``logprobs`` sums their log-probabilities.

    Example:
        >>> pick_options(np.array([[True, False]]), np.array([[2, 1]]), np.array([[-2.3, -0.8]])).tolist()
        [0]
    """
    greedy = greedy & (lengths > 0)
    longest = np.where(greedy, lengths, -1).max(axis=1, keepdims=True)
    contenders = np.where(greedy.any(axis=1, keepdims=True), greedy & (lengths == longest), lengths > 0)
    return np.where(contenders, logprobs, -np.inf).argmax(axis=1)  # argmax: the first of equal maxima
