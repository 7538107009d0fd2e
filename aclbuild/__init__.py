"""aclbuild: complementary-label image datasets labeled by vision-language models, from labeling to the Hub.

The Python API beside the CLI (:mod:`aclbuild.api`): ``aclbuild.build``, ``aclbuild.push``, ``aclbuild.verify``,
``aclbuild.export`` and ``aclbuild.load_cl_dataset``, each imported on first use so that ``import aclbuild`` stays
fast and imports neither torch nor datasets.

Three of these names are also modules of the package (``aclbuild.build``, ``aclbuild.export``,
``aclbuild.verify``), and Python binds a submodule to its package's attribute whenever it is imported. So those
attributes stay the modules (``from aclbuild.build import build_from_source`` and patching keep working), and each
module, when called, runs the API function of its name: ``aclbuild.build(...)`` is ``aclbuild.api.build(...)``.
"""

from __future__ import annotations

import importlib
import sys
import types

__version__ = "0.1.0"

__all__ = ["build", "push", "verify", "export", "load_cl_dataset", "ClData"]

_API = {"build": "aclbuild.api", "push": "aclbuild.api", "verify": "aclbuild.api", "export": "aclbuild.api",
        "load_cl_dataset": "aclbuild.cl_data", "ClData": "aclbuild.cl_data"}  # fmt: skip
_CALLABLE_MODULES = ("build", "export", "verify")  # submodules that share their name with an API function


class _CallableModule(types.ModuleType):
    """A submodule that, when called, runs the API function of its name (see the package docstring)."""

    def __call__(self, *args, **kwargs):
        return getattr(importlib.import_module("aclbuild.api"), self.__name__.rpartition(".")[2])(*args, **kwargs)

    @property
    def __wrapped__(self):  # inspect.signature(aclbuild.build) shows the API function's signature
        return getattr(importlib.import_module("aclbuild.api"), self.__name__.rpartition(".")[2])


class _Package(types.ModuleType):
    """The package module: makes the submodules of :data:`_CALLABLE_MODULES` callable as they are bound to it."""

    def __setattr__(self, name: str, value) -> None:
        if name in _CALLABLE_MODULES and type(value) is types.ModuleType:
            value.__class__ = _CallableModule
        super().__setattr__(name, value)


def __getattr__(name: str):
    """The API functions, imported on first use (torch and datasets are slow to import)."""
    if name in _CALLABLE_MODULES:
        return importlib.import_module(f"aclbuild.{name}")  # binding it to the package makes it callable
    if name in _API:
        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'aclbuild' has no attribute {name!r}")


sys.modules[__name__].__class__ = _Package
