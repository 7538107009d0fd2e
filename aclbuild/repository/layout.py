"""Where a repository folder keeps its shards: ``data/{split}-{index:05d}-of-{count:05d}.parquet``.

Example:
    >>> shard_name("train", 0, 2), SHARD_PATTERN.match("test-00001-of-00002.parquet")["split"]
    ('train-00000-of-00002.parquet', 'test')
"""

from __future__ import annotations

import re
from pathlib import Path

from aclbuild.errors import SourceError

SPLITS = ("train", "test")
DATA_DIR = "data"  # the shards' folder inside a repository
SHARD_PATTERN = re.compile(r"^(?P<split>[a-z]+)-(?P<index>\d{5})-of-(?P<count>\d{5})\.parquet$")


def parse_size(text: str) -> int:
    """Bytes in a size like ``500MB``, ``1.5GB``, ``200KiB`` or ``1000``; raises on anything else.

    Example:
        >>> parse_size("1.5GB"), parse_size("200KiB"), parse_size("1000")
        (1500000000, 204800, 1000)
    """
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([kmgt]?i?b?)\s*", text.lower())
    if not match:
        raise SourceError(f"cannot read size {text!r}; write it like 500MB, 1GB or 200KiB")
    number, unit = float(match.group(1)), match.group(2).rstrip("b")
    factor = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12, "ki": 2**10, "mi": 2**20, "gi": 2**30}
    if unit not in factor:
        raise SourceError(f"cannot read size {text!r}; write it like 500MB, 1GB or 200KiB")
    return int(number * factor[unit])


def data_folder(folder: Path | str) -> Path:
    """The folder of a repository's shards."""
    return Path(folder) / DATA_DIR


def split_files_pattern(split: str) -> str:
    """The card's ``data_files`` path of a split, relative to the folder (what ``load_dataset`` globs).

    Example:
        >>> split_files_pattern("train")
        'data/train-*'
    """
    return f"{DATA_DIR}/{split}-*"


def shard_name(split: str, index: int, count: int) -> str:
    """The file name of shard ``index`` of ``count`` of ``split`` (datasets' own naming)."""
    return f"{split}-{index:05d}-of-{count:05d}.parquet"


def partial_shard_path(folder: Path | str, split: str, index: int) -> Path:
    """Where shard ``index`` is written before the count is known (hidden; renamed by :func:`shard_name` once it is).

    Example:
        >>> partial_shard_path("out", "train", 3).as_posix()
        'out/data/.train-00003.parquet.partial'
    """
    return data_folder(folder) / f".{split}-{index:05d}.parquet.partial"


def split_shards(folder: Path | str) -> dict[str, list[Path]]:
    """The shard files of each split in ``folder/data``, sorted by index."""
    shards: dict[str, list[Path]] = {}
    data = data_folder(folder)
    for path in sorted(data.glob("*.parquet")) if data.is_dir() else []:
        match = SHARD_PATTERN.match(path.name)
        if match:
            shards.setdefault(match["split"], []).append(path)
    return shards


def stray_files(folder: Path | str) -> list[Path]:
    """Entries of ``folder/data`` that are not shards (named otherwise), sorted."""
    data = data_folder(folder)
    return [p for p in sorted(data.iterdir()) if not SHARD_PATTERN.match(p.name)] if data.is_dir() else []


def shards_size(folder: Path | str) -> int:
    """Bytes of all shards of the repository (the card's ``download_size``)."""
    return sum(path.stat().st_size for paths in split_shards(folder).values() for path in paths)
