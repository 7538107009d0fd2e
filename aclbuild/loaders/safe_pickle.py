"""A restricted, bounded unpickler: numpy arrays and builtin containers only, so a hostile pickle runs nothing and
builds no more than its own bytes could hold.

**What may be named.** Every callable a pickle wants is looked up through ``find_class``; ours answers from
:data:`ALLOWED` and raises :class:`UnsafePickleError` before anything else is imported. It holds what CIFAR batches
(Python 2, protocol 2) and the legacy CL pickles (protocols 2 to 5) need: numpy's ``_reconstruct``, ``ndarray`` and
``dtype`` (an array, protocols 2 to 4), ``_frombuffer`` (protocol 5), ``scalar`` (``np.int64(3)`` in a list), both
numpy 1 (``numpy.core``) and 2 (``numpy._core``) spellings; ``_codecs.encode`` with latin-1/ascii/utf-8 (how
protocol 2 spells ``bytes``); ``bytes``, ``bytearray``, ``set`` and ``frozenset``. Dicts, lists, tuples, str, int,
float, bool and None need no global.

**What may be built.** ``bytes(10**9)`` is a 26-byte pickle. So every call (REDUCE) and state (BUILD) goes through
a guard that checks the arguments *before* anything is allocated, and what the guards make (arrays, byte strings,
scalars) is charged to a budget of ``BUDGET_FACTOR`` (4) times the file's size plus ``BUDGET_ALLOWANCE`` (16 MiB):
a real data pickle carries its arrays' bytes (at most twice: a protocol-2 byte string, then the array copied from
it), so it stays far below. Zero-byte items count one byte each. Also refused: NEWOBJ/OBJ/INST (numpy and builtins
never pickle that way); BUILD on anything but a fresh array or dtype, once; structured dtypes, dtype strings other
than plain type codes, and dtype states that change a size, alignment or flags (numpy trusts them); reads longer
than the file; and dict keys or set items that make building quadratic or crash it (see
:mod:`aclbuild.loaders.pickle_keys`). Plain opcodes then build about a hundred bytes of
Python objects per byte of the file at most, in time linear in its size.

This is the pure-Python unpickler (about 0.4 s more than the C one on a 150 MB, 50 000-image pickle): the C one
cannot be bounded (a 9-byte pickle with ``LONG_BINPUT 2**27`` makes it allocate 2 GB for its memo).

Example:
    >>> import pickle, numpy as np
    >>> safe_load(pickle.dumps({b"data": np.zeros(3, np.uint8)}, protocol=2), "example")[b"data"].tolist()
    [0, 0, 0]
"""

from __future__ import annotations

import _codecs
import io
import math
import os
import pickle
import re
import struct
import zlib
from collections.abc import Callable, Iterable
from functools import partial
from typing import IO, Any

import numpy as np

from aclbuild.errors import SourceError, UnsafePickleError
from aclbuild.loaders.pickle_keys import KeyCheck, short_repr

try:  # numpy >= 2
    from numpy._core.multiarray import _reconstruct, scalar
    from numpy._core.numeric import _frombuffer
except ImportError:  # numpy 1.x
    from numpy.core.multiarray import _reconstruct, scalar  # type: ignore[no-redef]
    from numpy.core.numeric import _frombuffer  # type: ignore[no-redef]

BUDGET_FACTOR = 4
BUDGET_ALLOWANCE = 16 * 2**20
# A plain type code ("u1", "<f8", "U10", "M8[D]", "?"): no commas (structured) or parentheses (numpy hands those
# to its own parser, which raises SyntaxError and nests without limit).
_DTYPE_SPEC = re.compile(r"[<>|=]?[A-Za-z?]\w{0,15}(\[\w{1,8}\])?")
_MAX_NDIM = 64  # numpy's own limit

_SAFE_ENCODINGS = frozenset(
    {"latin1", "latin-1", "latin_1", "iso-8859-1", "iso8859-1", "l1", "ascii", "utf-8", "utf8", "utf_8"}
)
_UTF8 = frozenset({"utf-8", "utf8", "utf_8"})
_HOW_TO_FIX = "it is corrupt or crafted, not a plain data pickle; re-create it from the original data"

# Both numpy spellings: files written by numpy 1.x (and Python 2) say numpy.core, numpy 2.x says numpy._core.
ALLOWED: dict[tuple[str, str], Any] = {
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): _codecs.encode,
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
    pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, LookupError, struct.error,
    UnicodeDecodeError, OverflowError, zlib.error, MemoryError, RuntimeError,  # numpy: "may be corrupted?"
)  # fmt: skip


def _pickle_size(file: IO[bytes]) -> int | None:
    """Bytes left in ``file``: in memory or a disk file; None for others (a pipe, a gzip stream, an archive member)."""
    if isinstance(file, io.BytesIO):
        return file.getbuffer().nbytes - file.tell()
    if isinstance(file, (io.BufferedReader, io.FileIO)) and os.path.isfile(getattr(file, "name", "")):
        return os.fstat(file.fileno()).st_size - file.tell()
    return None


def _shape_size(shape: Any) -> int:
    """Element count of a pickled shape, checked: a short tuple of non-negative ints (no allocation yet)."""
    if type(shape) is not tuple or len(shape) > _MAX_NDIM or not all(type(d) is int and d >= 0 for d in shape):
        raise TypeError(f"a shape is a tuple of at most {_MAX_NDIM} non-negative ints, not {short_repr(shape)}")
    return math.prod(shape)


class _BoundedUnpickler(pickle._Unpickler):  # the pure-Python unpickler: its opcodes can be replaced one by one
    """Unpickles with the allow-list, the argument guards and the byte budget described in the module docstring."""

    dispatch = pickle._Unpickler.dispatch.copy()

    def __init__(self, file: IO[bytes], size: int, what: str, encoding: str):
        super().__init__(file, encoding=encoding)
        self._what, self._size = what, size
        self._limit = self._left = BUDGET_FACTOR * size + BUDGET_ALLOWANCE
        if not isinstance(file, io.BytesIO):  # BytesIO.read(n) returns what it has; file reads allocate n first
            self._file_read = lambda n, read=self._file_read: read(self._check_length(n))
        self._fresh: dict[int, Any] = {}  # id -> array or dtype that may still get its one BUILD (kept alive)
        self._keys = KeyCheck(self._limit, self._refuse)
        self._guards: dict[Any, Callable[[tuple], Any]] = {
            _reconstruct: self._reconstruct, np.dtype: self._dtype, scalar: self._scalar,
            _frombuffer: self._frombuffer, _codecs.encode: self._encode, bytes: partial(self._bytes, bytes),
            bytearray: partial(self._bytes, bytearray), set: partial(self._set, set),
            frozenset: partial(self._set, frozenset),
        }  # fmt: skip

    # ------------------------------------------------------------------ refusals and the budget

    def _refuse(self, detail: str) -> UnsafePickleError:
        return UnsafePickleError(f"{self._what}: refusing {detail}; {_HOW_TO_FIX}")

    def _charge(self, nbytes: int, thing: str) -> None:
        """Take ``nbytes`` from the budget, or refuse before anything of that size exists."""
        if nbytes > self._left:
            raise self._refuse(
                f"{thing} of {nbytes} bytes: a {self._size}-byte data pickle builds at most {self._limit} "
                f"({BUDGET_FACTOR} x its size + {BUDGET_ALLOWANCE // 2**20} MiB)"
            )
        self._left -= max(nbytes, 0)

    def _check_length(self, n: int) -> int:
        """``n``, a length the pickle gives, unless it is more bytes than the file has."""
        if n > self._size:
            raise SourceError(
                f"{self._what} is not a readable pickle (it asks for {n} bytes, the file has {self._size}); "
                "re-download or re-create it"
            )
        return n

    # ------------------------------------------------------------------ names and calls

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

    def load_reduce(self) -> None:
        args, func = self.stack.pop(), self.stack[-1]
        guard = next((g for f, g in self._guards.items() if f is func), None)
        if guard is None:
            raise self._refuse(f"to call {getattr(func, '__name__', type(func).__name__)}")
        if type(args) is not tuple:
            raise TypeError("REDUCE arguments must be a tuple")
        self.stack[-1] = guard(args)

    def load_instance(self) -> None:  # NEWOBJ, NEWOBJ_EX, OBJ, INST
        raise self._refuse("an object instance (NEWOBJ/OBJ/INST opcode)")

    def load_build(self) -> None:
        state = self.stack.pop()
        target = self.stack[-1]
        if self._fresh.pop(id(target), None) is not target:
            raise self._refuse(f"to set the state of a {type(target).__name__} (only a new array or dtype, once)")
        if isinstance(target, np.ndarray):
            self._set_array_state(target, state)
        else:
            self._set_dtype_state(target, state)

    def load_bytearray8(self) -> None:
        buffer = bytearray(self._check_length(struct.unpack("<Q", self.read(8))[0]))  # zeroed before the read
        self.readinto(buffer)
        self.append(buffer)

    def load_frame(self) -> None:
        n = self._check_length(struct.unpack("<Q", self.read(8))[0])
        self._unframer.load_frame(n)
        if len(self._unframer.current_frame.getbuffer()) != n:  # BytesIO hands back a short frame without a word
            raise pickle.UnpicklingError(f"a frame of {n} bytes is cut short")

    # ------------------------------------------------------------------ dicts and sets (hash flooding)

    def _dict_target(self) -> dict:
        target = self.stack[-1]
        if type(target) is not dict:
            raise self._refuse(f"to set items on a {type(target).__name__} (only dicts)")
        return target

    def _pairs(self, items: list[Any]) -> Iterable[tuple[Any, Any]]:
        """Key-value pairs of a flat SETITEM(S) / DICT item list, keys checked."""
        if len(items) % 2:
            raise pickle.UnpicklingError("a dict's items come in pairs; the pickle has an odd number")
        self._keys.check(items[::2])
        return zip(items[::2], items[1::2])

    def load_setitem(self) -> None:
        value, key = self.stack.pop(), self.stack.pop()
        self._dict_target().update(self._pairs([key, value]))

    def load_setitems(self) -> None:
        items = self.pop_mark()
        self._dict_target().update(self._pairs(items))

    def load_dict(self) -> None:
        items = self.pop_mark()  # first: it rebinds self.append to the enclosing stack
        self.append(dict(self._pairs(items)))

    def load_additems(self) -> None:
        items = self.pop_mark()
        if type(self.stack[-1]) is not set:
            raise self._refuse(f"to add items to a {type(self.stack[-1]).__name__} (only sets)")
        self._keys.check(items)
        self.stack[-1].update(items)

    def load_frozenset(self) -> None:
        items = self.pop_mark()
        self._keys.check(items)
        self.append(frozenset(items))

    # ------------------------------------------------------------------ the admitted callables, guarded

    def _as_dtype(self, spec: Any) -> np.dtype:
        if isinstance(spec, np.dtype):
            self._fresh.pop(id(spec), None)  # in use now: its state may no longer change
            dtype = spec
        elif isinstance(spec, (str, bytes)):
            dtype = np.dtype(self._type_code(spec))
        else:
            raise TypeError(f"not a dtype: {short_repr(spec)}")
        if dtype.fields is not None or dtype.subdtype is not None:  # e.g. "u1,u2": no data pickle needs one
            raise self._refuse(f"the structured dtype {dtype}")
        return dtype

    def _type_code(self, spec: str | bytes) -> str:
        text = spec.decode("latin-1") if isinstance(spec, bytes) else spec
        if not _DTYPE_SPEC.fullmatch(text):
            raise self._refuse(f"the dtype spec {short_repr(text)} (data pickles name plain types such as u1 or <f8)")
        return text

    def _fresh_result(self, obj: Any) -> Any:
        self._fresh[id(obj)] = obj
        return obj

    def _reconstruct(self, args: tuple) -> np.ndarray:
        subtype, shape, spec = args
        if subtype is not np.ndarray:
            raise self._refuse(f"an array of type {short_repr(subtype)}")
        dtype = self._as_dtype(spec)
        self._charge(_shape_size(shape) * max(dtype.itemsize, 1), "an array")
        return self._fresh_result(_reconstruct(np.ndarray, shape, dtype))

    def _set_array_state(self, array: np.ndarray, state: Any) -> None:
        if type(state) is not tuple or len(state) not in (4, 5):
            raise TypeError("an array state is a 4- or 5-tuple")
        shape, spec, _fortran, raw = state[-4:]
        dtype = self._as_dtype(spec)
        count = _shape_size(shape)
        if dtype.hasobject:
            if type(raw) is not list or len(raw) != count:
                raise TypeError(f"an object array of {count} elements needs a list of {count}")
        elif not isinstance(raw, (bytes, bytearray, str)) or len(raw) != count * dtype.itemsize:
            raise TypeError(f"an array of {count} x {dtype.itemsize} bytes needs that many bytes of data")
        self._charge(count * max(dtype.itemsize, 1), "an array")
        array.__setstate__(state)

    def _dtype(self, args: tuple) -> np.dtype:
        if not 1 <= len(args) <= 3 or not all(type(flag) is bool for flag in args[1:]):
            raise TypeError("numpy.dtype takes a spec and two flags")
        if not isinstance(args[0], (str, bytes)):
            raise TypeError(f"a dtype spec is a string, not {short_repr(args[0])}")
        dtype = np.dtype(self._type_code(args[0]), len(args) > 1 and args[1], True)  # a copy: numpy's own stays
        return self._fresh_result(self._as_dtype(dtype))

    def _set_dtype_state(self, dtype: np.dtype, state: Any) -> None:
        """Admit only what plain dtypes need (byte order); numpy does not check sizes, offsets or flags it is given."""
        if type(state) is not tuple or not 8 <= len(state) <= 9:
            raise TypeError("a dtype state is an 8- or 9-tuple")
        byteorder, subarray, names, fields, elsize, alignment, flags = state[1:8]
        if not all(type(n) is int for n in (elsize, alignment, flags)) or type(byteorder) is not str:
            raise TypeError("a dtype state holds a byte order and ints")
        swappable = dtype.kind in "biufcmMU" and dtype.itemsize > 1 and byteorder in ("<", ">", "=")
        if (
            subarray is not None or names is not None or fields is not None or dtype.names is not None
            or elsize not in (-1, dtype.itemsize) or alignment not in (-1, dtype.alignment) or flags != dtype.flags
            or not (byteorder == dtype.byteorder or swappable)
        ):  # fmt: skip
            raise self._refuse(f"a structured or resized dtype ({dtype}, state {short_repr(state)})")
        dtype.__setstate__(state)

    def _scalar(self, args: tuple) -> Any:
        spec, *value = args
        dtype = self._as_dtype(spec)
        if not dtype.hasobject:
            if len(value) != 1 or not isinstance(value[0], (bytes, str)) or len(value[0]) != dtype.itemsize:
                raise TypeError(f"a {dtype} scalar needs {dtype.itemsize} bytes")
            self._charge(dtype.itemsize, "a scalar")
        return scalar(dtype, *value)

    def _frombuffer(self, args: tuple) -> np.ndarray:
        buffer, spec, shape, order = args
        dtype = self._as_dtype(spec)
        if not isinstance(buffer, (bytes, bytearray, pickle.PickleBuffer)) or dtype.hasobject or not dtype.itemsize:
            raise TypeError("_frombuffer takes bytes and a plain dtype")
        nbytes = _shape_size(shape) * dtype.itemsize
        if nbytes != memoryview(buffer).nbytes or order not in ("C", "F", "A", "K"):
            raise TypeError(f"a buffer of {memoryview(buffer).nbytes} bytes does not hold shape {shape} of {dtype}")
        self._charge(nbytes, "an array")
        return _frombuffer(buffer, dtype, shape, order)

    def _check_encoding(self, encoding: Any) -> None:
        if not isinstance(encoding, str) or encoding.lower() not in _SAFE_ENCODINGS:
            raise self._refuse(f"encoding {short_repr(encoding)}; only latin-1/ascii/utf-8 appear in data pickles")

    def _encode(self, args: tuple) -> bytes:
        text, encoding, *errors = args if len(args) > 1 else (*args, "utf-8")
        self._check_encoding(encoding)
        if not isinstance(text, str):
            raise TypeError("_codecs.encode takes a str")
        self._charge(len(text) * (4 if encoding.lower() in _UTF8 else 1), "bytes")  # utf-8: up to 4 bytes a char
        return _codecs.encode(text, encoding, *errors)

    def _bytes(self, kind: type[bytes] | type[bytearray], args: tuple) -> bytes | bytearray:
        if not args:
            return kind()
        source = args[0]
        if type(source) is int and len(args) == 1:
            self._charge(source, f"{kind.__name__}({source})")
        elif isinstance(source, (bytes, bytearray, list, tuple)) and len(args) == 1:
            self._charge(len(source), kind.__name__)
        elif isinstance(source, str) and len(args) in (2, 3):
            self._check_encoding(args[1])
            self._charge(4 * len(source), kind.__name__)
        else:
            raise TypeError(f"{kind.__name__} takes an int, bytes, a list of ints or a str and its encoding")
        return kind(*args)

    def _set(self, kind: type[set] | type[frozenset], args: tuple) -> set | frozenset:
        if len(args) > 1 or (args and not isinstance(args[0], (list, tuple, set, frozenset))):
            raise TypeError(f"{kind.__name__} takes one list")
        self._keys.check(args[0] if args else ())
        return kind(*args)


for _opcode in (pickle.NEWOBJ, pickle.NEWOBJ_EX, pickle.OBJ, pickle.INST):
    _BoundedUnpickler.dispatch[_opcode[0]] = _BoundedUnpickler.load_instance
for _name in ("REDUCE", "BUILD", "BYTEARRAY8", "FRAME", "SETITEM", "SETITEMS", "DICT", "ADDITEMS", "FROZENSET"):
    _BoundedUnpickler.dispatch[getattr(pickle, _name)[0]] = getattr(_BoundedUnpickler, f"load_{_name.lower()}")


def safe_load(
    fileobj_or_bytes: IO[bytes] | bytes | bytearray | memoryview, what: str, encoding: str = "latin1"
) -> Any:
    """Unpickle trusted-format data (numpy arrays, builtin containers) from a binary file or bytes, bounded.

    ``what`` names the source in error messages (a path, ``archive.tar.gz:member``). ``encoding`` decodes Python 2
    ``str`` objects; ``latin1`` is the one that round-trips numpy arrays written by Python 2 (as CIFAR's are).
    What a file may build is bounded by its size (see the module docstring); a file object that cannot tell its
    size (a pipe) is read into memory first.

    Raises :class:`UnsafePickleError` naming the refused global or allocation, or :class:`SourceError` for a
    truncated or corrupt pickle.

    Example:
        >>> import pickle
        >>> safe_load(pickle.dumps([1, "a"]), "demo")
        [1, 'a']
        >>> safe_load(b"\\x80\\x02cbuiltins\\nbytes\\nJ\\x00\\xca\\x9a;\\x85R.", "bomb.pkl")  # bytes(10**9)
        Traceback (most recent call last):
        aclbuild.errors.UnsafePickleError: bomb.pkl: refusing bytes(1000000000) of 1000000000 bytes: ...
    """
    is_bytes = isinstance(fileobj_or_bytes, (bytes, bytearray, memoryview))
    file = io.BytesIO(fileobj_or_bytes) if is_bytes else fileobj_or_bytes
    size = _pickle_size(file)
    if size is None:
        file = io.BytesIO(file.read())
        size = len(file.getbuffer())
    try:
        return _BoundedUnpickler(file, size, what, encoding).load()
    except SourceError:
        raise
    except _CORRUPT as exc:
        detail = str(exc) or type(exc).__name__
        raise SourceError(
            f"{what} is not a readable pickle (truncated or corrupt: {detail:.300}); re-download or re-create it"
        ) from None
