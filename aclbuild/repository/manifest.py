"""The build's manifest, ``aclbuild.json``: the dataset variant, the repo id, and each split's sizes and content hash.

Every reader and writer of the manifest goes through here: the builder writes it, validate and stats compare it
with the shards, verify parses the repo's copy, push reads the dataset name and repo id, export and report the
dataset name.

Example:
    >>> text = manifest_json(Manifest("aclcifar10", None, {"train": SplitInfo("train", 2, 100, 1, "ab")}))
    >>> parse_manifest(text).splits["train"].num_examples
    2
    >>> parse_manifest('{"splits": []}')   # doctest: +ELLIPSIS
    Traceback (most recent call last):
    aclbuild.errors.SourceError: aclbuild.json is malformed: 'splits' is not an object of splits; rebuild the folder ...
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from aclbuild.errors import SourceError

MANIFEST = "aclbuild.json"
_REBUILD = "rebuild the folder with `aclbuild build`"


@dataclass(frozen=True)
class SplitInfo:
    """What was written for one split: sizes for the card, the content hash for `verify --against`."""

    name: str
    num_examples: int
    num_bytes: int
    num_shards: int
    sha256: str


@dataclass(frozen=True)
class Manifest:
    """The manifest's content. ``dataset`` is the variant name (None in a manifest that names none)."""

    dataset: str | None
    repo_id: str | None
    splits: dict[str, SplitInfo]
    provenance: dict = field(default_factory=dict)
    built_with: str = ""

    @property
    def hashes(self) -> dict[str, str]:
        """Each split's content hash (:mod:`aclbuild.repository.hashing`)."""
        return {name: info.sha256 for name, info in self.splits.items()}


def manifest_json(manifest: Manifest) -> str:
    """The manifest as the file holds it (indented JSON, keys in a fixed order)."""
    value = {
        "dataset": manifest.dataset,
        "built_with": manifest.built_with,
        "repo_id": manifest.repo_id,
        "splits": {name: asdict(info) for name, info in manifest.splits.items()},
        "provenance": manifest.provenance,
    }
    return json.dumps(value, indent=2) + "\n"


def write_manifest(folder: Path | str, manifest: Manifest) -> Path:
    """Write ``folder/aclbuild.json`` (the folder is a staged one: the whole repository appears at once)."""
    path = Path(folder) / MANIFEST
    path.write_text(manifest_json(manifest), encoding="utf-8")
    return path


def read_manifest(folder: Path | str, where: str | None = None) -> Manifest:
    """The manifest of a repository folder; raises SourceError when it is missing, does not parse or is malformed.

    ``where`` names the file in messages (default: its path).
    """
    path = Path(folder) / MANIFEST
    where = where or str(path)
    try:
        text = path.read_text(encoding="utf-8") if path.is_file() else None
    except (OSError, UnicodeDecodeError) as exc:
        raise SourceError(f"{where} cannot be read ({exc}); {_REBUILD}") from None
    return parse_manifest(text, where)


def parse_manifest(text: str | None, where: str = MANIFEST, fix: str = _REBUILD) -> Manifest:
    """The manifest in ``text`` (None: the file is missing), e.g. verify's downloaded copy; raises SourceError when
    it is missing, does not parse or is malformed, its message naming the file as ``where`` and ending in ``fix``."""
    if text is None:
        raise SourceError(f"{where} (the build's content hashes) is missing; {fix}")
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise SourceError(f"{where} does not parse ({exc}); {fix}") from None
    if not isinstance(value, dict):
        raise SourceError(f"{where} is malformed: not a JSON object; {fix}")
    splits = value.get("splits")
    if not isinstance(splits, dict):
        raise SourceError(f"{where} is malformed: 'splits' is not an object of splits; {fix}")
    for key, expected in (("dataset", str), ("repo_id", str), ("built_with", str), ("provenance", dict)):
        if value.get(key) is not None and not isinstance(value[key], expected):
            raise SourceError(f"{where} is malformed: '{key}' is not a {expected.__name__}; {fix}")
    return Manifest(
        dataset=value.get("dataset") or None,
        repo_id=value.get("repo_id"),
        splits={name: _split_info(name, entry, where, fix) for name, entry in splits.items()},
        provenance=value.get("provenance") or {},
        built_with=value.get("built_with") or "",
    )


def _split_info(name: str, entry: object, where: str, fix: str) -> SplitInfo:
    """One entry of ``splits``: its counts must be non-negative integers and its hash a string."""
    problem = None
    if not isinstance(entry, dict):
        problem = "is not an object"
    else:
        counts = [key for key in ("num_examples", "num_bytes", "num_shards") if not _count(entry.get(key))]
        if counts:
            problem = f"lacks a count {counts[0]}"
        elif not isinstance(entry.get("sha256"), str):
            problem = "lacks its content hash sha256"
    if problem:
        raise SourceError(f"{where} is malformed: split '{name}' {problem}; {fix}")
    return SplitInfo(name, entry["num_examples"], entry["num_bytes"], entry["num_shards"], entry["sha256"])


def _count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0
