"""The safe array unpickler: every numpy array pickle loads; no pickle costs much more memory than its size.

Memory is measured with tracemalloc (numpy reports its array buffers to it) around one `loads_array`,
and once as the peak RSS of a child process; the bound is 2x the input plus a small constant for the
bounded number of small objects an array pickle builds.
"""

from __future__ import annotations

import codecs
import pickle
import pickletools
import re
import struct
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Callable

import numpy as np
import pytest

from gaitlu import safepickle
from gaitlu.errors import SequenceError, UnsafePickleError
from gaitlu.safepickle import loads_array, scan
from tests.support.servers import REPO

MIB = 1024 * 1024
SLACK = 256 * 1024  # small objects (tuples, short strings, the dtype) and one copy chunk
ATTACK_BYTES = 8 * MIB
RECONSTRUCT = np.zeros(1).__reduce__()[0]  # numpy's _reconstruct, wherever this numpy keeps it


class _Reduce:
    """Pickles as `func(*args)` (+ BUILD with `state`): lets a test write any call numpy's pickles make."""

    def __init__(self, func: object, *args: object, state: object = None) -> None:
        self.func, self.args, self.state = func, args, state

    def __reduce__(self) -> tuple[object, ...]:
        return (self.func, self.args) if self.state is None else (self.func, self.args, self.state)


def array_call(shape: object, data: object, dtype: object = np.dtype(np.uint8)) -> _Reduce:
    """What numpy's protocol 2-4 pickle of an array says: _reconstruct, then BUILD with its state."""
    return _Reduce(RECONSTRUCT, np.ndarray, (0,), b"b", state=(1, shape, dtype, False, data))


def peak_of(load: Callable[[], object]) -> tuple[int, object]:
    """(peak bytes traced while running load, its result or the exception it raised)."""
    tracemalloc.start()
    try:
        try:
            result: object = load()
        except Exception as exc:  # the refusal is the result under test
            result = exc
        return tracemalloc.get_traced_memory()[1], result
    finally:
        tracemalloc.stop()


# ----- every legitimate array pickle loads, owning its memory

ARRAYS = {
    "uint8 masks": (np.arange(5 * 64 * 44) % 256).astype(np.uint8).reshape(5, 64, 44),
    "float32 Fortran": np.asfortranarray(np.linspace(0, 1, 3 * 7 * 5, dtype=np.float32).reshape(3, 7, 5)),
    "bool": np.arange(60).reshape(3, 4, 5) % 3 == 0,
    "big-endian int16": np.arange(24, dtype=">i2").reshape(2, 3, 4),
    "float64 2-D": np.linspace(-1, 1, 12).reshape(3, 4),
    "int64": np.arange(10, dtype=np.int64),
    "zero-size": np.zeros((0, 64, 44), np.uint8),
    "0-d": np.array(7, np.uint8),
    "non-contiguous": np.arange(48, dtype=np.uint8).reshape(6, 8)[:, ::2],
}


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
@pytest.mark.parametrize("kind", sorted(ARRAYS))
def test_every_numpy_array_pickle_loads_as_an_owning_writable_copy(kind: str, protocol: int) -> None:
    arr = ARRAYS[kind]
    data = pickle.dumps(arr, protocol=protocol)
    assert scan(data) == protocol
    loaded = loads_array(data)
    np.testing.assert_array_equal(loaded, arr)
    assert loaded.dtype == arr.dtype and loaded.shape == arr.shape
    assert loaded.flags.owndata and loaded.flags.writeable
    if arr.flags.f_contiguous and not arr.flags.c_contiguous:
        assert loaded.flags.f_contiguous


def test_the_walk_allows_every_opcode_numpy_writes_and_reads_them_like_genops() -> None:
    allowed = {*safepickle._FIXED, *safepickle._TEXT, *safepickle._BYTES, *safepickle._BARE, pickle.GLOBAL}
    written = set()
    for arr in ARRAYS.values():
        for protocol in (2, 3, 4, 5):
            data = pickle.dumps(arr, protocol=protocol)
            ops = list(pickletools.genops(data))  # the reference walker
            written |= {op.code.encode("latin-1") for op, _arg, _pos in ops}
            assert ops[-1][0].name == "STOP" and ops[-1][2] == len(data) - 1  # what scan requires
            assert len(ops) <= safepickle.MAX_OPCODES // 4
    assert written <= allowed, sorted(safepickle._OPCODE_NAMES[c] for c in written - allowed)


def test_python2_and_numpy_1x_spellings_load() -> None:
    arr = ARRAYS["uint8 masks"]
    # Python 2 pickled the raw bytes as a str, so they arrive as latin-1 text.
    np.testing.assert_array_equal(
        loads_array(pickle.dumps(array_call(arr.shape, arr.tobytes().decode("latin1")), 2)), arr
    )
    encoded = _Reduce(
        codecs.encode, arr.tobytes().decode("latin1"), "latin1"
    )  # protocol 2 bytes, spelled out
    np.testing.assert_array_equal(loads_array(pickle.dumps(array_call(arr.shape, encoded), 2)), arr)
    old = pickle.dumps(arr, protocol=2).replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    np.testing.assert_array_equal(loads_array(old), arr)


def test_out_of_band_buffers_and_trailing_bytes_are_refused() -> None:
    buffers: list[pickle.PickleBuffer] = []
    out_of_band = pickle.dumps(ARRAYS["uint8 masks"], protocol=5, buffer_callback=buffers.append)
    assert buffers
    with pytest.raises(SequenceError, match=r"NEXT_BUFFER.*out-of-band"):
        loads_array(out_of_band)
    with pytest.raises(UnsafePickleError, match="after its STOP"):
        loads_array(pickle.dumps(ARRAYS["bool"], protocol=4) + b"junk")
    with pytest.raises(SequenceError, match="truncated"):
        loads_array(pickle.dumps(ARRAYS["bool"], protocol=4)[:-1])


# ----- hostile pickles: refused before they cost memory or time


def _dict_bomb() -> bytes:
    """A reported attack: MARK, 8 million EMPTY_DICT, LIST (~400 MB of dicts from 8 MiB)."""
    return pickle.PROTO + b"\x04" + pickle.MARK + pickle.EMPTY_DICT * ATTACK_BYTES + pickle.LIST + pickle.STOP


def _tuple_flood() -> bytes:
    """Only allowed opcodes: 8 million small ints in one tuple."""
    return (
        pickle.PROTO
        + b"\x02"
        + pickle.MARK
        + (pickle.BININT1 + b"\x07") * (ATTACK_BYTES // 2)
        + pickle.TUPLE
        + pickle.STOP
    )


def _deep_marks() -> bytes:
    return pickle.PROTO + b"\x02" + pickle.MARK * 1000 + pickle.NONE + pickle.TUPLE * 1000 + pickle.STOP


def _huge_memo() -> bytes:
    """A memo slot of 2**31 would make the unpickler size its memo table for 2**32 entries."""
    return pickle.PROTO + b"\x02" + pickle.NONE + pickle.LONG_BINPUT + struct.pack("<I", 2**31) + pickle.STOP


def _wide_string() -> bytes:
    """8 MiB of UTF-8 with one astral character: a 32 MiB str (4 bytes per character)."""
    text = ("a" * (ATTACK_BYTES - 4) + "\U00010000").encode()
    return pickle.PROTO + b"\x02" + pickle.BINUNICODE + struct.pack("<I", len(text)) + text + pickle.STOP


def _repeated_latin1_copies() -> bytes:
    """One 2 MiB data string, encoded and built into an array 4 times (the stand-ins used to copy each)."""
    text = "A" * (2 * MIB)
    arrays = tuple(array_call((2 * MIB,), _Reduce(codecs.encode, text, "latin1")) for _ in range(4))
    return pickle.dumps(arrays, protocol=2)


def _huge_shape_tiny_data() -> bytes:
    return pickle.dumps(array_call((10**6, 10**6, 10**6), b"0123456789"), protocol=4)


def _many_small_arrays() -> bytes:
    return pickle.dumps(tuple(np.zeros(4, np.uint8) for _ in range(200)), protocol=4)


ATTACKS: dict[str, tuple[Callable[[], bytes], type[Exception], str]] = {
    "dict bomb": (_dict_bomb, SequenceError, "EMPTY_DICT.*builds a dict"),
    "tuple flood": (_tuple_flood, UnsafePickleError, "over 512 opcodes"),
    "deep marks": (_deep_marks, UnsafePickleError, "nests MARKs"),
    "huge memo": (_huge_memo, UnsafePickleError, "memo slot 2147483648"),
    "wide string": (_wide_string, UnsafePickleError, "above U\\+00FF"),
    "repeated latin-1 copies": (_repeated_latin1_copies, UnsafePickleError, "more bytes than it carries"),
    "huge shape, tiny data": (_huge_shape_tiny_data, SequenceError, "10 bytes, its shape and dtype need"),
    "many small arrays": (_many_small_arrays, UnsafePickleError, "over 512 opcodes"),
}


@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_hostile_pickles_are_refused_within_twice_their_size(attack: str) -> None:
    build, error, match = ATTACKS[attack]
    data = build()
    started = time.process_time()  # CPU spent, whatever else loads the machine
    peak, result = peak_of(lambda: loads_array(data, name="attack.pkl"))
    assert isinstance(result, error), result
    assert re.search(match, str(result)), str(result)
    assert str(result).startswith("attack.pkl: ")
    assert peak <= 2 * len(data) + SLACK, f"{attack}: peak {peak} bytes for a {len(data)}-byte pickle"
    assert time.process_time() - started < 2.0, f"{attack}: refused only after seconds of CPU work"


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
@pytest.mark.parametrize("fill", [0x41, 0xFF])  # protocol 2 text: 1 UTF-8 byte per data byte, or 2
def test_big_legitimate_pickles_load_within_twice_their_size(protocol: int, fill: int) -> None:
    arr = np.full((64, 512, 256), fill, np.uint8)  # 8 MiB
    data = pickle.dumps(arr, protocol=protocol)
    peak, loaded = peak_of(lambda: loads_array(data))
    assert isinstance(loaded, np.ndarray) and np.array_equal(loaded, arr)
    assert peak <= 2 * len(data) + SLACK, f"peak {peak} bytes for a {len(data)}-byte pickle"


CHILD = """
import sys
from gaitlu.safepickle import loads_array
from tests.test_safepickle import ATTACKS

def peak_rss():  # VmHWM: the high-water mark since the last reset
    return next(int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith("VmHWM"))

data = ATTACKS["dict bomb"][0]()
open("/proc/self/clear_refs", "w").write("5")  # reset the high-water mark to the current RSS
before = peak_rss()
try:
    loads_array(data)
except Exception:
    pass
print(len(data), peak_rss() - before)
"""


def test_the_dict_bomb_leaves_a_childs_peak_rss_alone() -> None:
    out = subprocess.run(
        [sys.executable, "-c", CHILD], cwd=REPO, capture_output=True, text=True, timeout=60, check=True
    ).stdout.split()
    size, grown = int(out[0]), int(out[1])
    assert grown <= 2 * size, f"peak RSS grew {grown} bytes for a {size}-byte pickle"
