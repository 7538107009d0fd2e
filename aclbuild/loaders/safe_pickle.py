"""A restricted unpickler: numpy arrays and builtin containers only, so a malicious pickle runs nothing.

A pickle names every callable it wants by ``module.name`` (GLOBAL / STACK_GLOBAL opcodes) and the unpickler looks
each one up through ``find_class``. Ours answers from a fixed allow-list and raises :class:`UnsafePickleError`
*before* anything outside it is imported or called. The list covers what CIFAR batches (Python 2, protocol 2) and
the legacy CL pickles (protocols 2 to 5) need:

- ``numpy.core.multiarray._reconstruct`` / ``numpy._core.multiarray._reconstruct``, ``numpy.ndarray``,
  ``numpy.dtype``: an ndarray (protocols 2 to 4);
- ``numpy._core.numeric._frombuffer``: an ndarray in protocol 5;
- ``numpy._core.multiarray.scalar``: a numpy scalar such as ``np.int64(3)`` inside a list;
- ``_codecs.encode`` (latin-1/ascii/utf-8 only): how protocol 2 spells ``bytes`` written by Python 3;
- ``builtins.bytes``, ``bytearray``, ``set``, ``frozenset``: the builtin containers that need a global.

Dicts, lists, tuples, str, int, float, bool and None need no global and always load.

Example:
    >>> import pickle, numpy as np
    >>> safe_load(pickle.dumps({b"data": np.zeros(3, np.uint8)}, protocol=2), "example")[b"data"].tolist()
    [0, 0, 0]
"""

from __future__ import annotations

import _codecs
import io
import pickle
import struct
import zlib
from typing import IO, Any

import numpy as np

from aclbuild.errors import SourceError, UnsafePickleError

try:  # numpy >= 2
    from numpy._core.multiarray import _reconstruct, scalar
    from numpy._core.numeric import _frombuffer
except ImportError:  # numpy 1.x
    from numpy.core.multiarray import _reconstruct, scalar  # type: ignore[no-redef]
    from numpy.core.numeric import _frombuffer  # type: ignore[no-redef]

_SAFE_ENCODINGS = frozenset(
    {"latin1", "latin-1", "latin_1", "iso-8859-1", "iso8859-1", "l1", "ascii", "utf-8", "utf8", "utf_8"}
)


def _codecs_encode(obj: Any, encoding: str = "utf-8", errors: str = "strict") -> bytes:
    """``_codecs.encode`` limited to plain text codecs: other codecs (zlib, bz2, ...) have no place in a data file."""
    if not isinstance(obj, str) or not isinstance(encoding, str) or encoding.lower() not in _SAFE_ENCODINGS:
        raise UnsafePickleError(
            f"refusing _codecs.encode with encoding {encoding!r}; only latin-1/ascii/utf-8 appear in data pickles"
        )
    return _codecs.encode(obj, encoding, errors)


# Both numpy spellings: files written by numpy 1.x (and Python 2) say numpy.core, numpy 2.x says numpy._core.
ALLOWED: dict[tuple[str, str], Any] = {
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): _codecs_encode,
    ("builtins", "bytes"): bytes,
    ("builtins", "bytearray"): bytearray,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
}
for _core in ("numpy.core", "numpy._core"):
    ALLOWED[(f"{_core}.multiarray", "_reconstruct")] = _reconstruct
    ALLOWED[(f"{_core}.multiarray", "scalar")] = scalar
    ALLOWED[(f"{_core}.numeric", "_frombuffer")] = _frombuffer

# Python 2 module names (and protocol-2 pickles from Python 3, which write them): we see them raw because our
# find_class replaces the one that applies fix_imports.
_PY2_MODULES = {"__builtin__": "builtins", "copy_reg": "copyreg"}

# What a truncated or garbled pickle raises, depending on where the damage is.
_CORRUPT = (
    pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError,
    struct.error, UnicodeDecodeError, OverflowError, zlib.error, MemoryError, RecursionError,
)  # fmt: skip


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file: IO[bytes], what: str, encoding: str):
        super().__init__(file, encoding=encoding)
        self._what = what

    def find_class(self, module: str, name: str) -> Any:
        module = _PY2_MODULES.get(module, module)
        try:
            return ALLOWED[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f"{self._what}: refusing to load {module}.{name} from the pickle; only numpy arrays and builtin "
                "containers are admitted, so this file is not a plain data pickle (it could run code) - do not "
                "open it with plain pickle.load"
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError(f"{self._what}: refusing a persistent id in the pickle; data pickles have none")


def safe_load(
    fileobj_or_bytes: IO[bytes] | bytes | bytearray | memoryview, what: str, encoding: str = "latin1"
) -> Any:
    """Unpickle trusted-format data (numpy arrays, builtin containers) from a binary file or bytes.

    ``what`` names the source in error messages (a path, ``archive.tar.gz:member``). ``encoding`` decodes Python 2
    ``str`` objects; ``latin1`` is the one that round-trips numpy arrays written by Python 2 (as CIFAR's are).

    Raises :class:`UnsafePickleError` naming the refused global, or :class:`SourceError` for a truncated or
    corrupt pickle.

    Example:
        >>> import pickle
        >>> safe_load(pickle.dumps([1, "a"]), "demo")
        [1, 'a']
    """
    is_bytes = isinstance(fileobj_or_bytes, (bytes, bytearray, memoryview))
    file = io.BytesIO(fileobj_or_bytes) if is_bytes else fileobj_or_bytes
    try:
        return _RestrictedUnpickler(file, what, encoding).load()
    except SourceError:
        raise
    except _CORRUPT as exc:
        detail = str(exc) or type(exc).__name__
        raise SourceError(
            f"{what} is not a readable pickle (truncated or corrupt: {detail}); re-download or re-create it"
        ) from None
