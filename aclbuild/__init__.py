"""aclbuild: complementary-label image datasets labeled by vision-language models, from labeling to the Hub.

The Python API beside the CLI (:mod:`aclbuild.api`): ``aclbuild.build``, ``aclbuild.push``, ``aclbuild.verify``,
``aclbuild.export`` and ``aclbuild.load_cl_dataset``, each imported on first use so that ``import aclbuild`` stays
fast and imports neither torch nor datasets. (No module of the package shares a name with them: the builder is
:mod:`aclbuild.builder`, the pickle export :mod:`aclbuild.pickle_export`, the Hub check :mod:`aclbuild.verification`.)
"""

from __future__ import annotations

import importlib

__version__ = "0.2.0"

__all__ = ["build", "push", "verify", "export", "load_cl_dataset", "ClData"]

_API = {"build": "aclbuild.api", "push": "aclbuild.api", "verify": "aclbuild.api", "export": "aclbuild.api",
        "load_cl_dataset": "aclbuild.cl_data", "ClData": "aclbuild.cl_data"}  # fmt: skip


def __getattr__(name: str):
    """The API functions, imported on first use (torch and datasets are slow to import)."""
    if name in _API:
        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'aclbuild' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
