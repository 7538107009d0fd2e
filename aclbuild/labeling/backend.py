"""What the runner asks a labeler and what it gets back: the contract every labeler (LLaVA-NeXT, a chat VLM, CLIP,
synthetic, replay, and the tests' scripted ones) meets, in three stages.

``prepare`` turns a batch of queries into model inputs without the model (pixels, token ids, packed suffixes); the
runner calls it in a DataLoader worker process (:mod:`aclbuild.labeling.loop`). ``run`` is the model alone, in the
main process. ``replies`` turns what ``run`` returned into one :class:`Reply` per query, in the main process too,
and cheaply: it gets the queries without their images.

Example:
    >>> q = Query(index=0, round_=0, attempt=0, image=None, options=["cat", "dog"], answers=["cat", "dog"],
    ...           prompt="[INST] <image>\\n... [/INST]", prefix="[INST] <image>\\n...", suffix="[cat, dog] [/INST]",
    ...           classes=(3, 5))
    >>> class Echo:  # answers every query with its first option
    ...     model_id, revision = "echo", "test"
    ...     def prepare(self, queries): return len(queries)
    ...     def run(self, prepared): return prepared
    ...     def replies(self, queries, prepared, raw): return [Reply(q.options[0], choice=0) for q in queries]
    >>> ask(Echo(), [q])
    [Reply(text='cat', choice=0, status='')]
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

SHARED_BYTES = 1 << 18  # tensors from this size on go through shared memory (see shareable)


@dataclass(frozen=True)
class Query:
    """One question about one image: the class names shown, in order, and the prompt that shows them.

    ``answers`` are the replies that would name each option exactly (the name in complementary mode, the number in
    ordinary mode): what likelihood scoring compares. ``prefix`` + " " + ``suffix`` == ``prompt``; the prefix is
    the same for every round and retry of the image. ``classes`` are the options' class indices.
    """

    index: int
    round_: int
    attempt: int
    image: np.ndarray | None
    options: list[str]
    answers: list[str]
    prompt: str
    prefix: str
    suffix: str
    classes: tuple[int, ...] = ()

    def __reduce__(self):
        # plain constructor arguments: unpickled in half the time of a dataclass's default (worker -> main process)
        return Query, (self.index, self.round_, self.attempt, self.image, self.options, self.answers, self.prompt,
                       self.prefix, self.suffix, self.classes)  # fmt: skip

    def without_image(self) -> Query:
        """The query as ``replies`` gets it: the image stays in the worker."""
        return dataclasses.replace(self, image=None)


@dataclass(frozen=True)
class Reply:
    """The labeler's raw text, and the option index when the labeler chose one itself (likelihood scoring, CLIP,
    synthetic, replay). ``status``, when set, is final: the query is recorded so, unanswered, and never re-asked
    (the replay labeler's ``no_answer`` and ``not_in_candidates``)."""

    text: str
    choice: int | None = None
    status: str = ""


class Backend(Protocol):
    """A labeler in three stages; ``model_id`` and ``revision`` go to the log (None without a model).

    ``prepare`` runs in a forked worker process, on the backend as it was when the batch's pass began: it must not
    touch the model or the GPU, and its value must pickle (large arrays as torch tensors: they travel through
    shared memory). ``run`` and ``replies`` run in the main process.
    """

    model_id: str | None
    revision: str | None

    def prepare(self, queries: list[Query]) -> Any: ...

    def run(self, prepared: Any) -> Any: ...

    def replies(self, queries: list[Query], prepared: Any, raw: Any) -> list[Reply]: ...


def ask(backend: Backend, queries: list[Query]) -> list[Reply]:
    """The three stages in turn, in this process: the replies to ``queries`` (tests, benchmarks, scripts)."""
    prepared = backend.prepare(queries)
    return backend.replies([q.without_image() for q in queries], prepared, backend.run(prepared))


def shareable(tensors: dict) -> dict:
    """Model inputs as a worker hands them over: tensors of 256 KiB or more stay tensors (the DataLoader passes them
    through shared memory: one file descriptor each, about 0.4 ms to receive), smaller ones become numpy arrays
    (copied through the pipe inside the pickle: about 1.3 ms per MB received, measured on 2 cores).
    :func:`on_device` takes either back.

    Example:
        >>> import torch
        >>> {k: type(v).__name__ for k, v in shareable({"pixel_values": torch.zeros(6, 3, 224, 224),
        ...                                             "input_ids": torch.zeros(4, 50, dtype=torch.long)}).items()}
        {'pixel_values': 'Tensor', 'input_ids': 'ndarray'}
    """
    return {k: v if v.nelement() * v.element_size() >= SHARED_BYTES else v.numpy() for k, v in tensors.items()}


def on_device(arrays: dict, device) -> dict:
    """:func:`shareable`'s arrays as torch tensors on ``device``."""
    import torch

    return {k: torch.as_tensor(v).to(device) for k, v in arrays.items()}


def model_revision(model, model_id: str) -> str:
    """The checkpoint's Hub commit, for the log: ``local`` for a folder, ``unknown`` when neither is known.

    Example:
        >>> class Config: _commit_hash = "0b2714"
        >>> class Model: config = Config()
        >>> model_revision(Model(), "llava-hf/llava-v1.6-mistral-7b-hf")
        '0b2714'
    """
    return getattr(model.config, "_commit_hash", None) or ("local" if Path(model_id).is_dir() else "unknown")


def first_line(exc: BaseException) -> str:
    """The first line of a library's error (at most 200 characters), for a one-line message.

    Example:
        >>> first_line(OSError("no file named config.json\\nmore detail"))
        'no file named config.json'
    """
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:200]
