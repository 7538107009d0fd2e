"""Earlier runs read back: the answers of a label file (``--labeler replay --answers FILE``) and the candidate sets
of an aclbuild run (``--candidates-from labels.parquet``), each aligned with the images being labelled.

FILE is the reference tool's label CSV (file name, then one class name per round) or an aclbuild
``labels.parquet`` (one row per (image, round)). Its rows meet the source's images by position when the names
follow the source's order (so CIFAR-100's duplicated file names stay apart), else by name; a name that is missing,
or repeated on either side when joining by name, is one clear error.

The replay labeler answers each query with FILE's class for that (image, round) when it is among the options shown,
and records ``not_in_candidates`` otherwise: the share of FILE's labels that lay inside their candidates (the
containment, in ``labels.json``) says whether a candidate stream is the one FILE's labels were drawn from.

Example:
    >>> answers = read_answers("aclmin10.csv", get_base("min10"), names)           # doctest: +SKIP
    >>> answers.shape                                                             # doctest: +SKIP
    (5000, 3)
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from aclbuild.errors import SourceError
from aclbuild.registry import Base

NO_LABEL = -1
REPLAY_STATUSES = {"ok": "FILE's label is among the options", "not_in_candidates": "it is not among them",
                   "no_answer": "FILE has no label for this (image, round)"}  # fmt: skip


def align(file_names: Sequence[str], image_names: Sequence[str], what: str) -> list[int]:
    """For each image, the row of ``file_names`` that belongs to it (the file holds one row per image), joined as
    a label CSV is joined with its images (:func:`aclbuild.loaders.label_csv.match_images`).

    Example:
        >>> align(["b.png", "a.png"], ["a.png", "b.png"], "FILE")
        [1, 0]
    """
    from aclbuild.loaders.label_csv import match_images

    rows = [0] * len(image_names)
    for row, image in enumerate(match_images(file_names, image_names, what)):
        rows[image] = row
    return rows


def _read_table(path: Path, base: Base) -> tuple[list[str], np.ndarray, np.ndarray | None]:
    """(names, N x R labels with NO_LABEL for none, N x R x C candidates or None) of a CSV or labels.parquet."""
    if not path.is_file():
        raise SourceError(f"{path} does not exist or is not a file")
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        try:
            table = pq.read_table(path).to_pydict()
        except Exception as exc:  # pyarrow raises several types for a file that is not Parquet
            raise SourceError(f"{path} is not a readable labels.parquet ({exc})") from None
        needed = {"index", "name", "round", "label", "status", "candidates"}
        if not needed <= set(table):
            raise SourceError(f"{path} lacks columns {', '.join(sorted(needed - set(table)))}; is it a labels.parquet?")
        n, rounds = max(table["index"]) + 1, max(table["round"]) + 1
        names, labels = [""] * n, np.full((n, rounds), NO_LABEL, dtype=np.int64)
        width = max(len(c) for c in table["candidates"])
        candidates = np.full((n, rounds, width), NO_LABEL, dtype=np.int64)
        for i, r, name, label, status, shown in zip(
            table["index"], table["round"], table["name"], table["label"], table["status"], table["candidates"]
        ):
            names[i] = name
            labels[i, r] = label if status == "ok" else NO_LABEL
            candidates[i, r, : len(shown)] = shown
        return names, labels, candidates
    from aclbuild.loaders.label_csv import read_label_csv

    rows = read_label_csv(path, base)
    return [name for name, _ in rows], np.array([labels for _, labels in rows], dtype=np.int64), None


def read_answers(
    path: str | Path, base: Base, image_names: Sequence[str], num_rounds: int, labelled: int | None = None
) -> np.ndarray:
    """``labelled`` x R class indices (NO_LABEL: none) that ``path`` holds for the first ``labelled`` of the source's
    images ``image_names`` (all of them by default), rounds 0..R-1."""
    path, labelled = Path(path), len(image_names) if labelled is None else labelled
    names, labels, _ = _read_table(path, base)
    covered = _images_covered(path, names, image_names, labelled)
    if labels.shape[1] < num_rounds:
        raise SourceError(f"--answers {path} holds {labels.shape[1]} rounds; --num-rounds {num_rounds} needs as many")
    return labels[align(names, covered, f"--answers {path}")][:labelled, :num_rounds]


def read_candidate_sets(
    path: str | Path, base: Base, image_names: Sequence[str], num_rounds: int, labelled: int | None = None
) -> np.ndarray:
    """``labelled`` x R x 4 candidate sets (in the order shown) of an aclbuild run's ``labels.parquet``, as
    :func:`read_answers` reads its labels."""
    labelled = len(image_names) if labelled is None else labelled
    path = Path(path)
    if path.suffix != ".parquet":
        raise SourceError(f"--candidates-from takes an aclbuild labels.parquet, not {path.name}")
    names, _, candidates = _read_table(path, base)
    assert candidates is not None
    covered = _images_covered(path, names, image_names, labelled)
    if candidates.shape[1] < num_rounds:
        raise SourceError(
            f"--candidates-from {path} holds {candidates.shape[1]} rounds; --num-rounds {num_rounds} needs as many"
        )
    if candidates.shape[2] != 4 or (candidates[:, :num_rounds] < 0).any():
        raise SourceError(
            f"--candidates-from {path} is not a complete complementary-mode run (4 candidates per query expected)"
        )
    return candidates[align(names, covered, f"--candidates-from {path}")][:labelled, :num_rounds]


def _images_covered(path: Path, names: list[str], image_names: Sequence[str], labelled: int) -> Sequence[str]:
    """The images FILE's rows stand for: the whole source, or the first ``labelled`` of it (a run with --limit)."""
    if len(names) == len(image_names):
        return image_names
    if len(names) == labelled:
        return image_names[:labelled]
    limit = f" (or the {labelled} that --limit labels)" if labelled < len(image_names) else ""
    raise SourceError(
        f"{path} holds {len(names)} images but the source has {len(image_names)}{limit}; is it the file of this "
        "base and source?"
    )


class ReplayLabeler:
    """``--labeler replay`` in the runner's three stages: each query is answered with the file's class for its
    (image, round) when that class is among the options shown; else the reply's status says why not (final: a
    replayed label is never re-asked). No model: ``run`` passes the labels on.

    Example:
        >>> from aclbuild.labeling.backend import Query, ask
        >>> labeler = ReplayLabeler([[2, 7, NO_LABEL]], ["c0", "c1", "c2", "c3", "c4", "c5", "c6", "c7"])
        >>> queries = [Query(0, r, 0, None, [], [], "", "", "", (1, 2, 3, 4)) for r in range(3)]
        >>> [(reply.text, reply.choice, reply.status) for reply in ask(labeler, queries)]
        [('c2', 1, ''), ('c7', None, 'not_in_candidates'), ('', None, 'no_answer')]
    """

    model_id = revision = None

    def __init__(self, answers: Sequence[Sequence[int]], class_names: Sequence[str]) -> None:
        self.answers, self.names = answers, list(class_names)

    def prepare(self, queries: list) -> list[int]:
        return [int(self.answers[q.index][q.round_]) for q in queries]

    def run(self, prepared: list[int]) -> list[int]:
        return prepared

    def replies(self, queries: list, prepared: list[int], labels: list[int]) -> list:
        from aclbuild.labeling.backend import Reply

        replies = []
        for q, label in zip(queries, labels):
            if label == NO_LABEL:
                replies.append(Reply("", status="no_answer"))
            elif label in q.classes:
                replies.append(Reply(self.names[label], q.classes.index(label)))
            else:
                replies.append(Reply(self.names[label], status="not_in_candidates"))
        return replies
