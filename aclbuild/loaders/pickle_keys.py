"""Dict keys and set items from an untrusted pickle, checked before Python hashes them (used by ``safe_pickle``).

Building a dict or set hashes each key. Three kinds of crafted key turn that into a denial of service that no byte
budget sees: ints built to share one hash (``k * (2**61 - 1)``: quadratic insertion, 4 s for a 260 KB pickle), a
tuple nested a million deep (``hash`` recurses until the interpreter crashes) and one big tuple used as key many
times (tuples keep no hash, so each insertion hashes it whole again). str and bytes hashes are salted per process,
so those keys pass unchecked.

Example:
    >>> keys = KeyCheck(limit=1_000, refuse=ValueError)
    >>> keys.check([1, (2, 3), "a"])
    >>> keys.check([k * (2**61 - 1) for k in range(1, 20)])
    Traceback (most recent call last):
    ValueError: 9 distinct dict keys or set items with one hash (20752587082923245559)
"""

from __future__ import annotations

import reprlib
from collections.abc import Callable, Iterable
from typing import Any

MAX_KEY_DEPTH = 100  # tuples in tuples, in one key
MAX_SAME_HASH = 8  # distinct keys with one hash value; real data has none beyond chance (hash(-1) == hash(-2))


class KeyCheck:
    """Checks the keys one unpickling inserts; ``refuse(message)`` makes the exception to raise."""

    def __init__(self, limit: int, refuse: Callable[[str], Exception]):
        self._hash_steps = self._limit = limit  # element hashes that tuple keys may take in all
        self._refuse = refuse
        self._hashes: dict[int, list[Any]] = {}  # hash -> distinct non-string keys seen with it
        self._tuple_costs: dict[int, tuple[tuple, int, int]] = {}  # id -> (tuple kept alive, hash steps, depth)

    def check(self, keys: Iterable[Any]) -> None:
        """Refuse keys that would make building quadratic or crash ``hash``; unhashable keys raise TypeError."""
        for key in keys:
            if type(key) is str or type(key) is bytes:
                continue
            if type(key) is tuple:
                self._hash_steps -= self._tuple_cost(key)
                if self._hash_steps < 0:
                    raise self._refuse(f"tuple keys that take more than {self._limit} steps to hash")
            same = self._hashes.setdefault(hash(key), [])
            if not any(seen is key or seen == key for seen in same):
                same.append(key)
                if len(same) > MAX_SAME_HASH:
                    raise self._refuse(f"{len(same)} distinct dict keys or set items with one hash ({short_repr(key)})")

    def _tuple_cost(self, key: tuple) -> int:
        """Steps ``hash(key)`` takes (elements through nested tuples, shared ones each time), worked out once per
        tuple; refuses nesting deeper than ``MAX_KEY_DEPTH``."""
        known, pending = self._tuple_costs, [key]
        while pending:
            item = pending[-1]
            inner = [c for c in item if type(c) is tuple and id(c) not in known] if id(item) not in known else []
            if inner:
                pending.extend(inner)
                continue
            pending.pop()
            if id(item) not in known:
                parts = [known[id(c)] for c in item if type(c) is tuple]
                depth = 1 + max((d for _, _, d in parts), default=0)
                if depth > MAX_KEY_DEPTH:
                    raise self._refuse(f"a dict key or set item of tuples nested {depth} deep")
                known[id(item)] = (item, 1 + len(item) + sum(c for _, c, _ in parts), depth)
        return known[id(key)][1]


def short_repr(value: Any) -> str:
    """A bounded repr for messages: a crafted value may be huge or deeply nested."""
    try:
        return reprlib.repr(value)
    except ValueError:  # an int too long to print
        return f"a {type(value).__name__}"
