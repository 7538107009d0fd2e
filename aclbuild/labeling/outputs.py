"""What `aclbuild generate` writes: part files while it runs, then the table and the JSON log.

While running, every finished batch becomes one JSON part file under ``DIR/parts``, written to a temporary name,
then renamed, so a run killed at any moment loses only the batches in flight and ``--resume`` finds the rest. JSON,
not Arrow: the rows are a few kilobytes, and pyarrow's first conversion of Python lists imports pandas (0.3 s),
which the labeling worker process would otherwise pay while the model waits.
At the end the main process merges the parts into:

- ``labels.parquet``: one row per (image, round): the candidates in the order shown, the raw answer, the parsed
  label (-1 for a failed query, which `aclbuild build` refuses unless given ``--drop-failed``), the retries and the
  status (``ok``, ``failed``; the replay labeler also ``not_in_candidates`` and ``no_answer``). Its Parquet schema
  metadata holds the run's ``provenance`` (JSON under the key ``aclbuild``, see
  :mod:`aclbuild.loaders.labels_table`), so `aclbuild build` takes the table alone, its images from ``--source``;
- ``labels.json``: for people: statistics (noise rate, retry rate, failed queries, transition matrix, CLs per
  class, accuracy in ordinary mode, the replay's containment), speed, the command, and the same ``provenance``.
  No reader looks for it.

The legacy pickle is no longer written here: ``aclbuild export`` makes libcll's from the built repository.

Example:
    >>> write_part([{"index": 0, "round": 0, ...}], Path("out/parts"))   # doctest: +SKIP
"""

from __future__ import annotations

import json
import uuid
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from aclbuild.atomic import atomic_write_bytes
from aclbuild.paths import staged_output, write_errors
from aclbuild.stats import normalise_rows, transition_counts

TABLE = "labels.parquet"
LOG = "labels.json"
PARTS = "parts"
PART_SUFFIX = ".json"
FAILED = -1

ROW_SCHEMA = pa.schema(
    [
        ("index", pa.int64()), ("name", pa.string()), ("round", pa.int32()), ("ord_label", pa.int32()),
        ("candidates", pa.list_(pa.int32())), ("candidate_names", pa.list_(pa.string())), ("answer", pa.string()),
        ("label", pa.int32()), ("retries", pa.int32()), ("status", pa.string()),
    ]
)  # fmt: skip
ROW_NAMES = tuple(ROW_SCHEMA.names)  # (pyarrow builds the list anew on every access)


def write_part(rows: list[dict], parts: Path) -> Path | None:
    """Write finished rows as one part file, atomically (:mod:`aclbuild.atomic`: a killed run leaves a temporary
    that the next run's :func:`aclbuild.atomic.remove_leftovers` removes; a full disk is one line)."""
    if not rows:
        return None
    first = min(r["index"] for r in rows)
    final = parts / f"part-{first:08d}-{uuid.uuid4().hex[:12]}{PART_SUFFIX}"
    data = json.dumps([{name: r[name] for name in ROW_NAMES} for r in rows]).encode("utf-8")
    with write_errors(parts, needed=len(data)):
        parts.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(final, data)
    return final


class PartStore:
    """The rows of every finished part file; :meth:`refresh` reads only files not seen before."""

    def __init__(self, parts: Path) -> None:
        self.parts = parts
        self.rows: dict[tuple[int, int], dict] = {}
        self._seen: set[str] = set()

    def refresh(self) -> None:
        merged = self.parts.parent / TABLE  # a finished run: --resume then has nothing left to do
        found = sorted(self.parts.glob(f"part-*{PART_SUFFIX}")) if self.parts.is_dir() else []
        for path in ([merged] if merged.is_file() else []) + found:
            if path.name in self._seen:
                continue
            self._seen.add(path.name)
            found_rows = pq.read_table(path).to_pylist() if path == merged else json.loads(path.read_text("utf-8"))
            for row in found_rows:
                self.rows.setdefault((row["index"], row["round"]), row)

    def seen(self, path: Path) -> None:
        """A part file whose rows are already in :attr:`rows` (written by this process): not to be read again."""
        self._seen.add(path.name)

    def done(self, index: int, round_: int) -> bool:
        return (index, round_) in self.rows


def summarise(rows: list[dict], num_classes: int, mode: str, num_rounds: int) -> dict:
    """The statistics of the log, from the merged rows (sorted by image, then round)."""
    ok = [r for r in rows if r["status"] == "ok"]
    failed = [r for r in rows if r["status"] == "failed"]
    attempts = sum(r["retries"] + 1 for r in rows)
    stats: dict = {
        "queries": len(rows),
        "failed_queries": len(failed),
        "failed": [{"index": r["index"], "name": r["name"], "round": r["round"]} for r in failed],
        "retries": sum(r["retries"] for r in rows),
        "retry_rate": sum(r["retries"] for r in rows) / attempts if attempts else 0.0,
    }
    counts = transition_counts(
        np.array([r["ord_label"] for r in ok], dtype=np.int64),
        np.array([r["label"] for r in ok], dtype=np.int64).reshape(-1, 1),
        num_classes,
    )
    matrix = normalise_rows(counts)
    if mode == "cl":
        stats["noise_rate"] = float(np.trace(counts) / counts.sum()) if counts.sum() else 0.0
        stats["cls_per_class"] = counts.sum(axis=0).tolist()
        stats["transition_matrix"] = matrix.round(6).tolist()
        return stats
    per_round = []
    for rnd in range(num_rounds):
        answered = [r for r in rows if r["round"] == rnd]
        per_round.append(sum(r["label"] == r["ord_label"] for r in answered) / len(answered) if answered else 0.0)
    votes: dict[int, list[int]] = {}
    truth: dict[int, int] = {}
    for r in rows:
        truth[r["index"]] = r["ord_label"]
        if r["status"] == "ok":
            votes.setdefault(r["index"], []).append(r["label"])
    majority = [majority_vote(v) == truth[i] if v else False for i, v in votes.items()]
    stats["accuracy_per_round"] = per_round
    stats["majority_vote_accuracy"] = sum(majority) / len(truth) if truth else 0.0
    stats["confusion_matrix"] = matrix.round(6).tolist()
    return stats


def majority_vote(labels: list[int]) -> int:
    """The most frequent label; a tie goes to the smallest class index, as the reference's ``torch.mode``.

    Example:
        >>> majority_vote([7, 2, 5]), majority_vote([7, 5, 5])
        (2, 5)
    """
    counts = Counter(labels)
    top = max(counts.values())
    return min(label for label, count in counts.items() if count == top)


def containment(rows: list[dict]) -> dict:
    """The replay's check of a candidate stream: of the (image, round) queries the file has a label for, how many
    showed that label among their options (1.0 for the stream the file was drawn from, about 4/K for another)."""
    inside = sum(r["status"] == "ok" for r in rows)
    labelled = inside + sum(r["status"] == "not_in_candidates" for r in rows)
    return {"inside": inside, "labels": labelled, "rate": inside / labelled if labelled else 0.0,
            "no_answer": sum(r["status"] == "no_answer" for r in rows)}  # fmt: skip


def write_outputs(output_dir: Path, rows: list[dict], log: dict) -> None:
    """The table, its metadata (the log's base, image count and provenance) written into its footer, then the log;
    each written once, atomically."""
    from aclbuild.loaders.labels_table import encode_metadata

    metadata = encode_metadata({"base": log["base"], "images": log["images"], "provenance": log["provenance"]})
    schema = ROW_SCHEMA.with_metadata(metadata)
    table = pa.Table.from_pydict({name: [r[name] for r in rows] for name in ROW_SCHEMA.names}, schema=schema)
    with staged_output(output_dir / TABLE, overwrite=True, is_dir=False, needed=table.nbytes) as staged:
        pq.write_table(table, staged)
    text = json.dumps(log, indent=2) + "\n"
    with staged_output(output_dir / LOG, overwrite=True, is_dir=False, needed=len(text.encode())) as staged:
        staged.write_text(text, encoding="utf-8")
