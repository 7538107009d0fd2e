"""What the runner asks a labeler and what it gets back: the contract every backend (LLaVA-NeXT, scripted) meets.

Example:
    >>> q = Query(index=0, round_=0, attempt=0, image=None, options=["cat", "dog"], answers=["cat", "dog"],
    ...           prompt="[INST] <image>\\n... [/INST]", prefix="[INST] <image>\\n...", suffix="[cat, dog] [/INST]")
    >>> Reply("cat", choice=0).choice
    0
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np


@dataclass(frozen=True)
class Query:
    """One question about one image: the class names shown, in order, and the prompt that shows them.

    ``answers`` are the replies that would name each option exactly (the name in complementary mode, the number in
    ordinary mode): what likelihood scoring compares. ``prefix`` + " " + ``suffix`` == ``prompt``; the prefix is
    the same for every round and retry of the image.
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

    def __reduce__(self):
        # plain constructor arguments: unpickled in half the time of a dataclass's default (the worker's batches)
        return Query, (self.index, self.round_, self.attempt, self.image, self.options, self.answers, self.prompt,
                       self.prefix, self.suffix)  # fmt: skip


@dataclass(frozen=True)
class Reply:
    """The model's raw text, and the option index when the backend chose one itself (likelihood scoring)."""

    text: str
    choice: int | None = None


class Backend(Protocol):
    """A labeler that answers queries; ``model_id`` and ``revision`` go to the log."""

    model_id: str
    revision: str

    def answer(self, queries: list[Query]) -> list[Reply]: ...


@runtime_checkable
class StagedBackend(Backend, Protocol):
    """A backend whose model work stands apart: ``answer(queries)`` is ``replies(queries, p, run(p))`` with
    ``p = prepare(queries)``. Only ``run`` needs the model; the runner calls the other two in a worker process, so
    ``prepare``'s value and ``run``'s must pickle (numpy arrays go through shared memory)."""

    def prepare(self, queries: list[Query]) -> Any: ...

    def run(self, prepared: Any) -> Any: ...

    def replies(self, queries: list[Query], prepared: Any, raw: Any) -> list[Reply]: ...


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
