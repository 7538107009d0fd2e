"""Hostile pickles: the restricted unpickler builds no more than the file holds, refuses fast, and raises only
project errors, fuzzed with hypothesis; legacy labels must be integers."""

from __future__ import annotations

import io
import pickle
import struct
import time
import tracemalloc

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aclbuild.errors import AclbuildError, SourceError, UnsafePickleError
from aclbuild.loaders.legacy_pickle import read_legacy_pickle
from aclbuild.loaders.safe_pickle import ALLOWED, safe_load
from aclbuild.registry import get_base
from tests.conftest import make_legacy_dict, write_pickle
from tests.fakes import cifar10_batches, py2_pickle

try:  # numpy >= 2
    from numpy._core.multiarray import _reconstruct, scalar
    from numpy._core.numeric import _frombuffer
except ImportError:  # numpy 1.x
    from numpy.core.multiarray import _reconstruct, scalar
    from numpy.core.numeric import _frombuffer

GIGA = 10**9
MAX_SECONDS = 1.0
MAX_BYTES = 100 * 2**20
DIGITS = get_base("digits")


class Call:
    """Pickles as ``func(*args)`` (then ``BUILD state`` when given): how a hostile file spells an admitted call."""

    def __init__(self, func, *args, state=None):
        self.func, self.args, self.state = func, args, state

    def __reduce__(self):
        return (self.func, self.args) if self.state is None else (self.func, self.args, self.state)


def _u64(n: int) -> bytes:
    return n.to_bytes(8, "little")


def _dtype_state(dtype: np.dtype, **changes) -> tuple:
    fields = dict(zip(("version", "byteorder", "subarray", "names", "fields", "elsize", "alignment", "flags"),
                      dtype.__reduce__()[2]))  # fmt: skip
    return tuple({**fields, **changes}.values())


BIG_TUPLE = tuple(range(100_000))  # tuples keep no hash: each insertion hashes all of it again
M61 = (1 << 61) - 1  # ints k * M61 all hash to 0: a dict of them takes quadratic time to build
HOSTILE = {
    "bytes(10**9)": pickle.dumps(Call(bytes, GIGA), protocol=2),
    "bytearray(10**9)": pickle.dumps(Call(bytearray, GIGA), protocol=4),
    "array of a huge shape": pickle.dumps(Call(_reconstruct, np.ndarray, (GIGA,), b"b"), protocol=2),
    "huge shape of zero-byte items": pickle.dumps(Call(_reconstruct, np.ndarray, (10**15,), "V0"), protocol=2),
    "object array state, huge shape": pickle.dumps(
        Call(_reconstruct, np.ndarray, (0,), b"b", state=(1, (GIGA,), np.dtype(object), False, [None])), protocol=2
    ),  # the C unpickler segfaults on this one
    "uint8 array state, huge shape": pickle.dumps(
        Call(_reconstruct, np.ndarray, (0,), b"b", state=(1, (GIGA,), np.dtype(np.uint8), False, b"x")), protocol=2
    ),
    "frombuffer, huge shape": pickle.dumps(Call(_frombuffer, b"12345678", np.dtype(np.int64), (GIGA,), "C"), 5),
    "scalar of a huge dtype": pickle.dumps(Call(scalar, np.dtype("V1000000000"), b""), protocol=2),
    "dtype state resized": pickle.dumps(Call(np.dtype, "V8", False, True, state=_dtype_state(np.dtype("V8"),
                                                                                             elsize=GIGA)), 2),
    "dtype state claims objects": pickle.dumps(Call(np.dtype, "u8", False, True, state=_dtype_state(np.dtype("u8"),
                                                                                                    flags=63)), 2),
    "NEWOBJ bytes": b"\x80\x02cbuiltins\nbytes\nJ\x00\xca\x9a;\x85\x81.",
    "BINBYTES8 longer than the file": b"\x80\x04\x8e" + _u64(GIGA) + b".",
    "BYTEARRAY8 longer than the file": b"\x80\x05\x96" + _u64(GIGA) + b".",
    "FRAME longer than the file": b"\x80\x04\x95" + _u64(GIGA) + b"N.",
    "colliding dict keys": pickle.dumps(dict.fromkeys(k * M61 for k in range(1, 20_000)), protocol=4),
    "colliding set items": pickle.dumps({k * M61 for k in range(1, 20_000)}, protocol=2),
    "calling numpy.ndarray": pickle.dumps(Call(np.ndarray, (GIGA,)), protocol=2),
    "a dtype spec numpy parses with ast": pickle.dumps(Call(_reconstruct, np.ndarray, (0,), "(,1)u1"), protocol=2),
    "deeply nested tuple key": b"\x80\x02})" + b"\x85" * 10**4 + b"K\x01s.",  # 10**6 crash hash()'s recursion
    "one big tuple key, many dicts": pickle.dumps([{BIG_TUPLE: i} for i in range(10_000)], protocol=4),
    "tuple key doubling 60 times": b"\x80\x02}K\x01\x85q\x00" + b"h\x00h\x00\x86q\x00" * 60 + b"K\x01s.",
}


def _bounded(func, *args):
    """``func(*args)`` -> (exception or None, CPU seconds, peak traced bytes). CPU time, not wall time: the suite
    shares its cores, and what a hostile file can cost is the work it makes, not the wait for a core."""
    tracemalloc.start()
    start = time.process_time()
    try:
        func(*args)
        error = None
    except Exception as exc:  # noqa: BLE001 - the caller checks the type
        error = exc
    seconds = time.process_time() - start
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return error, seconds, peak


@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_pickle_is_refused_fast_and_small(case):
    error, seconds, peak = _bounded(safe_load, HOSTILE[case], "bad.pkl")
    assert isinstance(error, SourceError), repr(error)
    assert str(error).startswith("bad.pkl") and "\n" not in str(error)
    assert seconds < MAX_SECONDS and peak < MAX_BYTES, (seconds, peak)


@pytest.mark.parametrize("case", ["BINBYTES8 longer than the file", "BYTEARRAY8 longer than the file"])
def test_lengths_past_the_end_of_a_disk_file_are_refused_before_reading(tmp_path, case):
    """A disk file's read(n) allocates n bytes before reading; a pickle may ask for no more than the file holds."""
    path = tmp_path / "bad.pkl"
    path.write_bytes(HOSTILE[case])
    with path.open("rb") as f:
        error, seconds, peak = _bounded(safe_load, f, str(path))
    assert isinstance(error, SourceError) and "asks for 1000000000 bytes, the file has 12" in str(error), repr(error)
    assert peak < MAX_BYTES


def test_the_budget_refusal_says_what_and_how_much():
    with pytest.raises(UnsafePickleError, match=r"refusing bytes\(1000000000\) of 1000000000 bytes: a \d+-byte data "
                       r"pickle builds at most \d+ \(4 x its size \+ 16 MiB\).*re-create it"):  # fmt: skip
        safe_load(HOSTILE["bytes(10**9)"], "bad.pkl")
    assert safe_load(pickle.dumps(Call(bytes, 2**20), protocol=2), "ok.pkl") == bytes(2**20)  # within the allowance


def test_a_huge_memo_index_costs_nothing():
    """LONG_BINPUT 2**27: the C unpickler grows its memo array to 2 GB for these 9 bytes."""
    error, seconds, peak = _bounded(safe_load, b"\x80\x02Nr\x00\x00\x00\x08.", "memo.pkl")
    assert error is None and seconds < MAX_SECONDS and peak < MAX_BYTES


def test_hostile_pickle_through_the_cli(cli, tmp_path):
    data = make_legacy_dict()
    data["names"] = Call(bytes, GIGA)
    src = tmp_path / "bad.pkl"
    src.write_bytes(pickle.dumps(data, protocol=2))
    out = tmp_path / "out"
    start = time.perf_counter()
    result = cli("build", src, "--dataset", "aclcifar10", "-o", out)
    assert time.perf_counter() - start < 5 * MAX_SECONDS
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "bytes(1000000000)" in lines[0], result.stderr
    assert "Traceback" not in result.output and not out.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["bad.pkl"]


# ---------------------------------------------------------------- real files still load


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
@pytest.mark.parametrize("as_arrays", [False, True])
def test_libcll_format_pickles_still_load(tmp_path, protocol, as_arrays):
    data = make_legacy_dict(n=12)
    if as_arrays:  # what libcll writes: label arrays, a list of per-image CL arrays
        data["ord_labels"] = np.asarray(data["ord_labels"], dtype=np.int64)
        data["cl_labels"] = [np.asarray(row, dtype=np.int32) for row in data["cl_labels"]]
    path = tmp_path / "labels.pkl"
    path.write_bytes(pickle.dumps(data, protocol=protocol))
    records = read_legacy_pickle(path, get_base("cifar10"))
    assert [r.name for r in records] == data["names"]
    assert [r.ord_label for r in records] == [int(y) for y in data["ord_labels"]]
    assert [list(r.cl_labels) for r in records] == [[int(c) for c in row] for row in data["cl_labels"]]
    np.testing.assert_array_equal(np.stack([r.image for r in records]), data["images"])


def test_python2_cifar_batches_still_load():
    batch = cifar10_batches()["data_batch_1"]
    out = safe_load(py2_pickle(batch), "data_batch_1")
    np.testing.assert_array_equal(out["data"], batch[b"data"])  # Python 2 str keys decode as latin-1 text
    assert out["labels"] == batch[b"labels"] and out["filenames"] == [f.decode() for f in batch[b"filenames"]]


def test_numpy_dtypes_and_layouts_round_trip():
    values = [
        np.arange(6, dtype=">i4"), np.array(["ab", "cde"]), np.array([None, "x"], dtype=object), np.array(2.5),
        np.asfortranarray(np.arange(6).reshape(2, 3)), np.zeros((0, 3)), np.array(["2020-01-01"], dtype="M8[D]"),
        np.float32(1.5), np.bool_(True), {1: frozenset({2}), (3, 4): {5}}, bytearray(b"ab"), 10**40,
    ]  # fmt: skip
    for protocol in (0, 2, 5):
        out = safe_load(pickle.dumps(values, protocol=protocol), "mem")
        for want, got in zip(values, out):
            if isinstance(want, np.ndarray):
                assert want.shape == got.shape and want.tolist() == got.tolist(), (protocol, want, got)
            else:
                assert type(want) is type(got) and want == got, (protocol, want, got)


def test_structured_dtypes_are_refused():
    """numpy trusts a structured dtype's pickled offsets; no data pickle aclbuild reads has one."""
    with pytest.raises(UnsafePickleError, match="structured or resized dtype"):
        safe_load(pickle.dumps(np.zeros(2, dtype=[("a", "u1"), ("b", "f4")]), protocol=2), "rec.pkl")


# ---------------------------------------------------------------- labels must be integers


@pytest.mark.parametrize(
    "key, value, found",
    [
        ("ord_labels", lambda d: np.asarray(d["ord_labels"]) % 2 == 0, "is a bool array"),
        ("ord_labels", lambda d: np.asarray(d["ord_labels"], dtype=np.float64), "is a float64 array"),
        ("cl_labels", lambda d: np.asarray(d["cl_labels"], dtype=np.float32), "is a float32 array"),
        ("ord_labels", lambda d: [float(y) for y in d["ord_labels"]], r"of image 0 holds \d\.0 \(float\)"),
        ("ord_labels", lambda d: [y > 4 for y in d["ord_labels"]], r"of image 0 holds (True|False) \(bool\)"),
        ("cl_labels", lambda d: [np.asarray(row, dtype=bool) for row in d["cl_labels"]], "of image 0 is a 1-d bool"),
    ],
)
def test_non_integer_labels_are_refused(tmp_path, key, value, found):
    data = make_legacy_dict(n=6)
    data[key] = value(data)
    path = write_pickle(tmp_path / "labels.pkl", data)
    with pytest.raises(SourceError, match=f"{key} {found}.*labels must be integer class indices"):
        read_legacy_pickle(path, get_base("cifar10"))


def test_bool_labels_through_the_cli(cli, tmp_path):
    data = make_legacy_dict()
    data["ord_labels"] = np.asarray(data["ord_labels"]) > 4
    src = write_pickle(tmp_path / "bool.pkl", data)
    out = tmp_path / "out"
    result = cli("build", src, "--dataset", "aclcifar10", "-o", out)
    assert result.exit_code == 2 and result.stderr.count("\n") == 1 and "is a bool array" in result.stderr
    assert not out.exists()


def test_rows_shared_by_reference_cannot_multiply_the_labels(tmp_path):
    """N references to one row of K labels pickle in about 2N + K bytes but make N x K labels."""
    data = make_legacy_dict(n=1)
    row = list(range(10)) * 1_000
    data["names"], data["ord_labels"], data["cl_labels"] = ["a.png"] * 2_000, [1] * 2_000, [row] * 2_000
    data["images"] = [data["images"][0]] * 2_000
    path = write_pickle(tmp_path / "shared.pkl", data)
    error, seconds, peak = _bounded(read_legacy_pickle, path, get_base("cifar20"))
    assert isinstance(error, SourceError) and "cl_labels holds more than" in str(error), repr(error)
    assert seconds < 5 * MAX_SECONDS and peak < MAX_BYTES


@pytest.mark.parametrize(
    "labels",
    [
        lambda n: [[1], [1, 2]] + [1] * (n - 2),  # ragged: numpy raised ValueError
        lambda n: [list(range(10)) * 10_000] * n,  # one row shared n times: numpy built n x 100 000 (160 MB)
        lambda n: [True] * n,
    ],
)
def test_cifar_batch_labels_must_be_one_integer_per_image(labels):
    from aclbuild.loaders.cifar import LAYOUTS, _batch_records

    batch = cifar10_batches(n_per_batch=200)["data_batch_1"]
    batch[b"labels"] = labels(200)
    error, seconds, peak = _bounded(
        _batch_records, pickle.dumps(batch, protocol=2), "data_batch_1", LAYOUTS["cifar10"], get_base("cifar10")
    )
    assert isinstance(error, SourceError) and "labels must be 200 integers, one per image" in str(error), repr(error)
    assert seconds < MAX_SECONDS and peak < MAX_BYTES


# ---------------------------------------------------------------- fuzzing


def _seed_pickles() -> list[bytes]:
    digits = make_legacy_dict(n=3, size=8)
    arrays = {**digits, "ord_labels": np.asarray(digits["ord_labels"]), "cl_labels": np.asarray(digits["cl_labels"])}
    return [pickle.dumps(digits, protocol=p) for p in (2, 4, 5)] + [
        pickle.dumps(arrays, protocol=p) for p in (2, 5)
    ] + [py2_pickle(cifar10_batches(n_per_batch=2)["data_batch_1"])]


SEEDS = _seed_pickles()
OPCODES = sorted({op.code.encode("latin-1") for op in __import__("pickletools").opcodes})
mutation = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, 10**6), st.integers(1, 255)),
    st.tuples(st.just("cut"), st.integers(0, 10**6), st.integers(0, 64)),
    st.tuples(st.just("insert"), st.integers(0, 10**6), st.sampled_from(OPCODES), st.binary(max_size=9)),
    st.tuples(st.just("repeat"), st.integers(0, 10**6), st.integers(1, 64)),
)


def _mutate(data: bytes, mutations: list[tuple]) -> bytes:
    buffer = bytearray(data)
    for kind, where, *args in mutations:
        at = where % (len(buffer) + 1)
        if kind == "flip" and at < len(buffer):
            buffer[at] ^= args[0]
        elif kind == "cut":
            del buffer[at : at + args[0]]
        elif kind == "insert":
            buffer[at:at] = args[0] + args[1]
        elif kind == "repeat":
            buffer[at:at] = buffer[at : at + args[0]]
    return bytes(buffer)


@settings(max_examples=300, deadline=1000, database=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])  # fmt: skip
@given(seed=st.sampled_from(range(len(SEEDS))), mutations=st.lists(mutation, min_size=1, max_size=4))
def test_fuzzed_pickles_raise_only_project_errors(tmp_path_factory, seed, mutations):
    """Byte flips, cuts, inserted opcodes and repeats of real pickles: a result or one project error, fast and small."""
    data = _mutate(SEEDS[seed], mutations)
    path = tmp_path_factory.mktemp("fuzz") / "fuzzed.pkl"
    path.write_bytes(data)
    for load in (lambda: safe_load(io.BytesIO(data), "fuzzed.pkl"), lambda: read_legacy_pickle(path, DIGITS)):
        error, seconds, peak = _bounded(load)
        assert error is None or isinstance(error, AclbuildError), repr(error)
        assert seconds < MAX_SECONDS and peak < MAX_BYTES, (seconds, peak)



def _text(value: str) -> bytes:
    encoded = value.encode()
    return b"X" + struct.pack("<I", len(encoded)) + encoded  # BINUNICODE


CALLABLES = [b"c%s\n%s\n" % (module.encode(), name.encode()) for module, name in sorted(ALLOWED)]  # GLOBAL
LEAVES = st.one_of(
    st.integers(-(2**31), 2**31 - 1).map(lambda i: b"J" + struct.pack("<i", i)),
    st.sampled_from(["u1", "<f8", "O8", "V8", "U3", "S2", "b", "V0", ">", "M8[D]", "latin1", "utf-8", "zlib", "C"]).map(
        _text
    ),
    st.binary(max_size=24).map(lambda b: b"C" + bytes([len(b)]) + b),  # SHORT_BINBYTES
    st.sampled_from([b"N", b"\x88", b"\x89", b")", b"]", b"}", b"\x8f"]),
)


def _containers(children: st.SearchStrategy[bytes]) -> st.SearchStrategy[bytes]:
    """Calls of admitted callables (then maybe a BUILD), tuples, lists and dicts of smaller programs."""
    joined = st.lists(children, max_size=4).map(b"".join)
    state = st.none() | st.lists(children, max_size=9).map(lambda xs: b"(" + b"".join(xs) + b"tb")
    return st.one_of(
        st.tuples(st.sampled_from(CALLABLES), joined, state).map(lambda c: c[0] + b"(" + c[1] + b"tR" + (c[2] or b"")),
        joined.map(lambda xs: b"(" + xs + b"t"),
        joined.map(lambda xs: b"(" + xs + b"l"),
        st.lists(st.tuples(children, children), max_size=3).map(lambda kv: b"}(" + b"".join(map(b"".join, kv)) + b"u"),
    )


@settings(max_examples=300, deadline=1000, database=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])  # fmt: skip
@given(body=st.recursive(LEAVES, _containers, max_leaves=25))
def test_generated_programs_raise_only_project_errors(body):
    """Well-formed opcode programs that call the admitted callables with odd arguments reach every guard."""
    error, seconds, peak = _bounded(safe_load, b"\x80\x04" + body + b".", "generated.pkl")
    assert error is None or isinstance(error, AclbuildError), repr(error)
    assert seconds < MAX_SECONDS and peak < MAX_BYTES, (seconds, peak)
