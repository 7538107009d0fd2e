"""The optional parts of the install: which extra brings which module, and one clear line when one is missing.

The core install (``pip install aclbuild``) covers build, validate, stats, export, push and verify. The extras add
the heavy modules: ``[label]`` (torch, transformers, accelerate) to generate with a VLM, ``[bench]`` (torch,
accelerate, transformers for the VLPL strategies) to benchmark, run the quickstart and load a set as a torch
Dataset. A verb that reaches for one of them in a core install stops with :class:`MissingExtraError` naming the
extra, not an ImportError traceback.

Example:
    >>> with needs_extra("bench"):
    ...     import json   # present: nothing happens
    >>> print(missing_extra_message("torch", "label"))
    torch is not installed; generate and its VLM labeler need the label extra: pip install "aclbuild[label]"
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Iterator

from aclbuild.errors import InputError

EXTRAS = {  # extra -> what it is for; pyproject.toml's [project.optional-dependencies] (tests/test_dependencies.py)
    "label": "generate and its VLM labeler",
    "bench": "benchmark, quickstart and load_cl_dataset",
}
OPTIONAL_MODULES = ("torch", "transformers", "accelerate")  # top-level modules that only the extras install


class MissingExtraError(InputError, ImportError):
    """A module of an extra that the core install leaves out. Exit 2; still an ImportError for library callers."""


def missing_extra_message(module: str, extra: str) -> str:
    """One line: what is missing and the pip command that brings it."""
    return f'{module} is not installed; {EXTRAS[extra]} need the {extra} extra: pip install "aclbuild[{extra}]"'


@contextlib.contextmanager
def needs_extra(extra: str) -> Iterator[None]:
    """Turn an ImportError of one of :data:`OPTIONAL_MODULES` raised inside into :class:`MissingExtraError` naming
    ``extra``; any other ImportError (a broken install, a bug) keeps its traceback."""
    if extra not in EXTRAS:
        raise ValueError(f"unknown extra {extra!r}")  # a bug in the caller
    try:
        yield
    except ImportError as exc:
        if isinstance(exc, MissingExtraError):
            raise
        module = (exc.name or "").split(".")[0]
        if module not in OPTIONAL_MODULES:
            raise
        raise MissingExtraError(missing_extra_message(module, extra), name=module) from None


def require_extra(extra: str, *modules: str) -> None:
    """Import ``modules`` now, so that a verb missing one stops before it starts its work.

    Example:
        >>> require_extra("label", "json")   # present: nothing happens
    """
    with needs_extra(extra):
        for module in modules:
            importlib.import_module(module)
