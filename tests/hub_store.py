"""The test Hub's storage: files as blobs (plain or LFS), repositories as commits and branches.

Example:
    >>> Blob(b"hello", lfs=False).entry("a.txt")["oid"] == git_sha1(b"hello")
    True
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

LFS_POINTER_SIZE = 134


def git_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass(frozen=True)
class Blob:
    data: bytes
    lfs: bool

    def etag(self) -> str:
        return hashlib.sha256(self.data).hexdigest() if self.lfs else git_sha1(self.data)

    def entry(self, path: str) -> dict:
        """The tree / paths-info JSON of this file, as the Hub writes it."""
        info = {"type": "file", "path": path, "size": len(self.data), "oid": git_sha1(self.data)}
        if self.lfs:
            sha = hashlib.sha256(self.data).hexdigest()
            info["lfs"] = {"oid": sha, "size": len(self.data), "pointerSize": LFS_POINTER_SIZE}
            info["oid"] = git_sha1(f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha}\n".encode())
        return info


@dataclass
class Repo:
    repo_id: str
    private: bool
    commits: dict[str, dict[str, Blob]] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)

    def resolve(self, rev: str) -> str | None:
        if rev in self.branches:
            return self.branches[rev]
        return rev if rev in self.commits else None


def is_utf8(sample: bytes) -> bool:
    """Whether a 512-byte sample is text (a multi-byte character may be cut at its end)."""
    for cut in range(4):
        try:
            sample[: len(sample) - cut].decode("utf-8")
            return True
        except UnicodeDecodeError:
            continue
    return False
