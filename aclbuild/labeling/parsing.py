"""Turning a model's free-text answer into one of the options shown, by the reference tool's rules.

Strip, delete '.', lower-case. "(n) name" is read as its name; "(n)" and a bare "n" mean option n (1-based) in
both modes, as the reference reads them, unless some option is itself a number (the digits base), where a number
is a name. An out-of-range number is unparseable (the reference crashed on it). Otherwise an option matches when
the answer is a substring of it or it of the answer, or when they agree ignoring spaces, commas, a trailing plural
's' or word order. Exactly one matching option is accepted; none or several return None, and the caller asks
again with the options reshuffled.

Example:
    >>> parse_answer(" Truck.", ["cat", "truck", "ship", "frog"])
    1
    >>> parse_answer("(3) automobile", ["airplane", "automobile", "bird"])   # the name wins, as the reference reads it
    1
    >>> parse_answer("(4)", ["cat", "truck", "ship", "frog"])
    3
    >>> parse_answer("cat or dog", ["cat", "dog", "ship", "frog"]) is None
    True
"""

from __future__ import annotations

import functools
import re

_NUMBER = re.compile(r"^\(?\s*(\d+)\s*\)?$")
_NUMBERED_NAME = re.compile(r"^\(\s*\d+\s*\)\s+(.+)$")


def normalise(text: str) -> str:
    """Strip, delete '.', lower-case (the reference's first step)."""
    return text.strip().replace(".", "").lower()


@functools.lru_cache(maxsize=1 << 14)  # class names and common answers recur in every batch
def _loose_forms(text: str) -> frozenset[str]:
    words = [w[:-1] if w.endswith("s") and len(w) > 1 else w for w in re.split(r"[\s,]+", text) if w]
    return frozenset(("".join(words), " ".join(sorted(words))))


@functools.lru_cache(maxsize=1 << 12)
def _normalised_option(option: str) -> str:
    return normalise(option)


def option_matches(answer: str, option: str) -> bool:
    """Whether a normalised, non-empty answer names ``option`` (substring either way, or a loose equality)."""
    option = _normalised_option(option)
    if answer in option or option in answer:
        return True
    return bool(_loose_forms(answer) & _loose_forms(option))


def parse_answer(answer: str, options: list[str]) -> int | None:
    """Index (into ``options``) of the single option the answer names, or None when none or several match."""
    text = normalise(answer)
    named = _NUMBERED_NAME.match(text)
    if named:  # "(3) automobile": the reference keeps the name and drops the number
        text = named.group(1).strip()
    if not text:
        return None
    number = _NUMBER.match(text)
    if number and not any(_NUMBER.match(normalise(option)) for option in options):
        n = int(number.group(1))
        return n - 1 if 1 <= n <= len(options) else None
    hits = [i for i, option in enumerate(options) if option_matches(text, option)]
    return hits[0] if len(hits) == 1 else None
