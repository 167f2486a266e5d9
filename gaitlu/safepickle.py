"""Read and write OpenGait's pickled numpy arrays without trusting the pickle.

OpenGait stores every sequence as `pickle.dump(np.ndarray)`. Unpickling runs whatever callables the
file names, so a downloaded `.pkl` could run `os.system`; and even with every callable refused, the
unpickler's own opcodes can make a small file cost a lot of memory (8 MiB of `EMPTY_DICT` is 8 million
dicts, ~50x its size; a memo index of 2**31 makes the unpickler size its memo table for it). So a pickle
is read in two passes:

1. `scan`: walk the opcode stream without building anything. Only the opcodes numpy's array pickles use
   (protocols 2-5, as numpy 1.x/2.x and OpenGait write them) are allowed, with bounded counts (opcodes,
   memo slots, MARK nesting), every string argument must decode to latin-1 characters (so each string
   object costs at most its encoded bytes, never 2-4x as a UTF-8 string holding one wide character
   would), and the stream must end at STOP. `pickletools.genops` is the reference walker (the tests
   check ours against it) but it decodes every argument as it goes, which is the cost we are bounding.
2. `loads_array`: unpickle with a loader that resolves only the few globals numpy writes, and even
   those to our stand-ins, not to numpy: they accept plain numeric dtypes and raw bytes and build the
   array themselves. Every byte the stand-ins allocate is charged to a budget of the input's size; the
   protocol-2 data string is copied into the array in chunks, never whole. Any other global is refused
   before it is called (`UnsafePickleError`), so nothing from the file runs, and no attacker-chosen state
   reaches numpy's own `__setstate__` (a dtype state can claim to hold Python objects).

Peak extra memory is then at most about twice the input (the unpickler's copy of the data argument, and
the array built from it) plus a constant for the bounded number of small objects.

The globals numpy writes (numpy 1.x and 2.x spell the modules differently):
- protocols 2-4: `numpy(._)core.multiarray._reconstruct(numpy.ndarray, (0,), b"b")` then BUILD with
  `(1, shape, dtype, is_fortran, raw_bytes)`; `numpy.dtype(code, align, copy)` then BUILD with its state;
  at protocol 2 also `_codecs.encode(str, "latin1")` and `bytes()`, because it has no bytes opcode;
- protocol 5: `numpy(._)core.numeric._frombuffer(buffer, dtype, shape, order)`, the buffer in band
  (out-of-band buffers, which only a caller passing `buffer_callback` produces, are refused).
"""

from __future__ import annotations

import functools
import math
import pickle
import pickletools
import re
import struct
from typing import Any, Literal

import numpy as np

from gaitlu.errors import SequenceError, UnsafePickleError

DEFAULT_MAX_BYTES = 256 * 1024 * 1024
PICKLE_PROTOCOL = 4  # readable by every Python 3 and numpy version OpenGait users run
_NUMERIC_KINDS = "biuf"  # bool, signed, unsigned, float: what a silhouette can be

# Bounds of the scan. A 3-D array pickle has about 60 opcodes, 20 memo slots and MARKs nested 2 deep;
# numpy's 64-dimension maximum adds 64 opcodes.
MAX_OPCODES = 512
MAX_MEMO = 256
MAX_MARK_DEPTH = 4
MAX_NAME_BYTES = 128  # a GLOBAL's module or name line, a dtype code
_CHUNK = 64 * 1024  # the protocol-2 data string is copied into the array this many bytes at a time

# Argument formats, by opcode: None (no argument), a struct format (fixed size), "counted"
# (a length in the given struct format, then that many bytes) or "lines" (GLOBAL: two text lines).
_FIXED = {
    pickle.PROTO: "<B",
    pickle.FRAME: "<Q",
    pickle.BININT: "<i",
    pickle.BININT1: "<B",
    pickle.BININT2: "<H",
    pickle.BINPUT: "<B",
    pickle.LONG_BINPUT: "<I",
    pickle.BINGET: "<B",
    pickle.LONG_BINGET: "<I",
}
_TEXT = {  # string arguments: decoded by the unpickler as UTF-8 (unicode) or latin-1 (Python 2 str)
    pickle.SHORT_BINUNICODE: "<B",
    pickle.BINUNICODE: "<I",
    pickle.SHORT_BINSTRING: "<B",
    pickle.BINSTRING: "<i",
}
_BYTES = {  # LONG1 is a shape entry written by Python 2 as a long: at most 255 bytes
    pickle.SHORT_BINBYTES: "<B",
    pickle.BINBYTES: "<I",
    pickle.BYTEARRAY8: "<Q",
    pickle.LONG1: "<B",
}
_BARE = {
    pickle.STOP,
    pickle.MARK,
    pickle.TUPLE,
    pickle.TUPLE1,
    pickle.TUPLE2,
    pickle.TUPLE3,
    pickle.EMPTY_TUPLE,
    pickle.REDUCE,
    pickle.BUILD,
    pickle.NONE,
    pickle.NEWTRUE,
    pickle.NEWFALSE,
    pickle.STACK_GLOBAL,
    pickle.MEMOIZE,
}
_OPCODE_NAMES = {op.code.encode("latin-1"): op.name for op in pickletools.opcodes}
_WIDE_UTF8 = re.compile(rb"[\xc4-\xff]")  # a UTF-8 lead byte of a character above U+00FF
_MEMO_PUTS = {pickle.BINPUT, pickle.LONG_BINPUT}
_MEMO_GETS = {pickle.BINGET, pickle.LONG_BINGET}
_UTF8 = {pickle.SHORT_BINUNICODE, pickle.BINUNICODE}


class _NdarrayType:
    """Stands in for `numpy.ndarray`: usable only as `_reconstruct`'s subtype argument.

    Handing out the real class would let a pickle call `ndarray(shape)` and allocate an arbitrarily
    large array that no byte of the input pays for. No slots, so BUILD cannot store attributes on it.
    """

    __slots__ = ()


_NDARRAY = _NdarrayType()


def _check_global(module: Any, name: Any) -> None:
    if (module, name) not in _ALLOWED:
        raise UnsafePickleError(
            f"the pickle refers to {module}.{name}, which a numpy array never needs; refused, nothing ran"
        )


def scan(data: bytes | bytearray | memoryview) -> int:
    """Check that `data` is a pickle the array loader may run; return its protocol. Builds nothing.

    Raises UnsafePickleError for a global other than numpy's array machinery and for what only a
    hostile file holds (a wide string, more opcodes, memo slots or nesting than any array needs), and
    SequenceError for an opcode that builds another kind of object (a dict, a list, a float) or a
    stream that is truncated or does not end at its STOP. A disallowed global is reported before a
    disallowed opcode: it says most about what the file is.
    """
    walk = _Walk(memoryview(data).cast("B"))
    walk.run()
    if walk.bad_opcode is not None:  # another kind of object: wrong input, not an attack as such
        raise SequenceError(
            f"the pickle is not a plain numeric numpy array: it uses opcode {walk.bad_opcode}; "
            "refused, nothing ran"
        )
    if not walk.stopped:
        raise SequenceError("corrupt or truncated pickle (no STOP opcode)")
    if walk.pos != len(walk.view):
        raise UnsafePickleError(f"the pickle has {len(walk.view) - walk.pos} bytes after its STOP opcode")
    return walk.protocol


class _Walk:
    """One pass over the opcodes: arguments are measured and bounded, never decoded beyond short names."""

    def __init__(self, view: memoryview) -> None:
        self.view = view
        self.pos = 0
        self.protocol = -1
        self.depth = 0
        self.memo: dict[int, str | None] = {}  # slot -> short string, to name STACK_GLOBAL's targets
        self.recent: list[str | None] = []  # the last two values pushed, as far as STACK_GLOBAL needs
        self.bad_opcode: str | None = None
        self.stopped = False

    def take(self, n: int) -> int:
        """Advance over n argument bytes; return where they start."""
        if n < 0 or self.pos + n > len(self.view):
            raise SequenceError("corrupt or truncated pickle (an argument runs past the end)")
        start = self.pos
        self.pos += n
        return start

    def number(self, fmt: str) -> int:
        (value,) = struct.unpack_from(fmt, self.view, self.take(struct.calcsize(fmt)))
        return int(value)

    def push(self, value: str | None = None) -> None:
        self.recent = [*self.recent[-1:], value]

    def run(self) -> None:
        view = self.view
        for count in range(1, MAX_OPCODES + 2):
            if self.pos >= len(view) or self.stopped:
                return
            if count > MAX_OPCODES and self.bad_opcode is not None:
                return  # the refused opcode is the better message
            if count > MAX_OPCODES:
                raise UnsafePickleError(f"the pickle has over {MAX_OPCODES} opcodes; a numpy array needs ~60")
            code = bytes(view[self.pos : self.pos + 1])
            self.pos += 1
            if count == 1:
                self.header(code)
            elif code in _FIXED:
                self.fixed(code, self.number(_FIXED[code]))
            elif code in _TEXT:
                self.text(code, self.number(_TEXT[code]))
            elif code in _BYTES:
                self.take(self.number(_BYTES[code]))
                self.push()
            elif code == pickle.GLOBAL:
                _check_global(self.line(), self.line())
                self.push()
            elif code in _BARE:
                self.bare(code)
            elif not self.refused(code):
                return

    def header(self, code: bytes) -> None:
        if code != pickle.PROTO:
            raise UnsafePickleError("the pickle has no protocol header (protocols 2-5 are read)")
        self.protocol = self.number("<B")
        if not 2 <= self.protocol <= 5:
            raise UnsafePickleError(f"pickle protocol {self.protocol} is not read (protocols 2-5 are)")

    def fixed(self, code: bytes, value: int) -> None:
        if code == pickle.FRAME:
            if value > len(self.view) - self.pos:
                raise SequenceError("corrupt or truncated pickle (a frame runs past the end)")
        elif code in _MEMO_PUTS or code in _MEMO_GETS:
            if value >= MAX_MEMO:
                raise UnsafePickleError(f"the pickle uses memo slot {value}; at most {MAX_MEMO} are read")
            if code in _MEMO_PUTS:
                self.memo[value] = self.recent[-1] if self.recent else None
            else:
                self.push(self.memo.get(value))
        else:
            self.push()

    def text(self, code: bytes, length: int) -> None:
        start = self.take(length)
        if code in _UTF8 and _WIDE_UTF8.search(self.view, start, self.pos):
            raise UnsafePickleError(
                "the pickle holds a string with characters above U+00FF; no array pickle does"
            )
        self.push(bytes(self.view[start : self.pos]).decode("latin-1") if length <= MAX_NAME_BYTES else None)

    def bare(self, code: bytes) -> None:
        if code == pickle.STOP:
            self.stopped = True
        elif code == pickle.MARK:
            self.depth += 1
            if self.depth > MAX_MARK_DEPTH:
                raise UnsafePickleError(f"the pickle nests MARKs over {MAX_MARK_DEPTH} deep")
        elif code == pickle.MEMOIZE:  # the unpickler stores at slot len(memo)
            if len(self.memo) >= MAX_MEMO:
                raise UnsafePickleError(f"the pickle uses over {MAX_MEMO} memo slots")
            self.memo[len(self.memo)] = self.recent[-1] if self.recent else None
        elif code == pickle.STACK_GLOBAL:
            module, name = [None, None, *self.recent][-2:]
            if module is not None and name is not None:
                _check_global(module, name)  # else find_class checks it when it is resolved
            self.recent = []
            self.push()
        else:
            if code == pickle.TUPLE:
                self.depth -= 1
            self.push()

    def refused(self, code: bytes) -> bool:
        """Note a refused opcode; step over its argument when its size is known (to find globals after it)."""
        known = code in _ARGS
        arg = _ARGS.get(code)
        if self.bad_opcode is None:
            opname = _OPCODE_NAMES.get(code, f"0x{code.hex()}")
            builds = next((what for part, what in _BUILDS.items() if part in opname), "an object")
            self.bad_opcode = f"{opname} (at byte {self.pos - 1}), which builds {builds}"
        if known and arg is None:
            self.push()
            return True
        if arg is None or arg.n == pickletools.UP_TO_NEWLINE:
            return False  # an unknown byte, or a text argument of protocol 0: the rest cannot be walked
        if arg.n >= 0:
            self.take(min(arg.n, len(self.view) - self.pos))
        else:
            size, signed = _COUNTED[arg.n]
            if self.pos + size > len(self.view):
                return False
            length = int.from_bytes(self.view[self.pos : self.pos + size], "little", signed=signed)
            self.take(min(size + max(length, 0), len(self.view) - self.pos))
        self.push()
        return True

    def line(self) -> str:
        """One newline-terminated ASCII name of a GLOBAL opcode, bounded in length."""
        window = bytes(self.view[self.pos : self.pos + MAX_NAME_BYTES + 1])
        stop = window.find(b"\n")
        if stop < 0:
            raise UnsafePickleError(f"the pickle names a global longer than {MAX_NAME_BYTES} bytes")
        self.take(stop + 1)
        if not window[:stop].isascii():
            raise UnsafePickleError("the pickle names a global that is not ASCII")
        return window[:stop].decode("ascii")


_BUILDS = {  # what a refused opcode builds, by a part of its name, for the message
    "DICT": "a dict",
    "SETITEM": "a dict",
    "LIST": "a list",
    "APPEND": "a list",
    "SET": "a set",
    "BUFFER": "an out-of-band buffer",
    "INST": "a class instance",
    "OBJ": "a class instance",
    "FLOAT": "a float",
}
_ARGS = {op.code.encode("latin-1"): op.arg for op in pickletools.opcodes}
_COUNTED = {  # pickletools' variable-length argument kinds: (length prefix bytes, signed)
    pickletools.TAKEN_FROM_ARGUMENT1: (1, False),
    pickletools.TAKEN_FROM_ARGUMENT4: (4, True),
    pickletools.TAKEN_FROM_ARGUMENT4U: (4, False),
    pickletools.TAKEN_FROM_ARGUMENT8U: (8, False),
}


class _Budget:
    """Bytes the stand-ins may still allocate: together at most what the input carries."""

    def __init__(self, limit: int) -> None:
        self.left = limit

    def charge(self, nbytes: int) -> None:
        if nbytes > self.left:
            raise UnsafePickleError(
                f"the pickle builds arrays of more bytes than it carries ({nbytes} more, {self.left} left): "
                "a numpy array pickle holds its data once"
            )
        self.left -= nbytes


class _Latin1Text:
    """What `_codecs.encode(text, "latin1")` stands for: the text, encoded only when copied into an array."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text

    def __len__(self) -> int:
        return len(self.text)


ByteOrder = Literal["<", ">", "="]
# numpy's byte-order characters: "=" native, "|" not applicable (one-byte types), as native.
_BYTE_ORDERS: dict[str, ByteOrder] = {"<": "<", ">": ">", "=": "=", "|": "="}


class _DtypeSpec:
    """What `numpy.dtype(code, align, copy)` + BUILD(state) describes, checked before numpy sees it."""

    def __init__(self, code: Any) -> None:
        self.code = code
        self.byteorder: ByteOrder = "="

    def __setstate__(self, state: Any) -> None:
        # (version, byteorder, subarray, names, fields, elsize, alignment, flags[, metadata])
        if not (isinstance(state, tuple) and len(state) >= 5 and isinstance(state[1], str)):
            raise UnsafePickleError(f"the pickle gives a dtype a state of type {type(state).__name__}")
        if any(part is not None for part in state[2:5]):
            raise UnsafePickleError("the pickle builds a structured or sub-array dtype, not a plain number")
        order = _BYTE_ORDERS.get(state[1])
        if order is None:
            raise SequenceError(f"the pickle gives a dtype the unknown byte order {state[1]!r}")
        self.byteorder = order

    def resolve(self) -> np.dtype:
        if not isinstance(self.code, str) or len(self.code) > MAX_NAME_BYTES:
            raise UnsafePickleError(f"the pickle builds a dtype from a {type(self.code).__name__}")
        try:
            dtype = np.dtype(self.code)
        except TypeError as exc:
            raise SequenceError(f"the pickle names an unknown dtype {self.code!r}") from exc
        if dtype.hasobject:
            raise UnsafePickleError("the pickle holds an object-dtype array (dtype('O')), which can run code")
        if dtype.kind not in _NUMERIC_KINDS:
            raise SequenceError(f"the pickled array has dtype {dtype}, not bool, int or float")
        if self.byteorder != "=":
            dtype = dtype.newbyteorder(self.byteorder)
        return dtype


def _dtype(code: Any, *_align_copy: Any) -> _DtypeSpec:
    return _DtypeSpec(code)


def _as_dtype(spec: Any) -> np.dtype:
    if not isinstance(spec, _DtypeSpec):
        raise UnsafePickleError(f"the pickle gives an array a dtype of type {type(spec).__name__}")
    return spec.resolve()


def _build_array(budget: _Budget, raw: Any, dtype: np.dtype, shape: Any, fortran: bool) -> np.ndarray:
    """A new array owning its memory, filled from `raw` (bytes, bytearray or latin-1 text): one copy."""
    if isinstance(raw, str):
        raw = _Latin1Text(raw)  # Python 2 pickles carry the raw data as str
    if not isinstance(raw, (bytes, bytearray, _Latin1Text)):
        raise UnsafePickleError(f"the pickle gives array data of type {type(raw).__name__}, not bytes")
    if not (isinstance(shape, tuple) and all(isinstance(n, int) and n >= 0 for n in shape)):
        raise SequenceError(f"the pickle gives an invalid array shape of type {type(shape).__name__}")
    nbytes = math.prod(shape) * dtype.itemsize
    if nbytes != len(raw):
        raise SequenceError(f"the pickle's array data is {len(raw)} bytes, its shape and dtype need {nbytes}")
    budget.charge(nbytes)
    order: Literal["C", "F"] = "F" if fortran else "C"
    out = np.empty(shape, dtype=dtype, order=order)
    flat = out.reshape(-1, order=order).view(np.uint8)  # (nbytes,) view of out's memory
    if isinstance(raw, _Latin1Text):
        for start in range(0, nbytes, _CHUNK):
            flat[start : start + _CHUNK] = np.frombuffer(
                raw.text[start : start + _CHUNK].encode("latin1"), np.uint8
            )
    else:
        flat[:] = np.frombuffer(raw, np.uint8)
    return out


class _PendingArray:
    """`_reconstruct`'s result: an empty shell that BUILD fills with `(1, shape, dtype, fortran, raw)`."""

    def __init__(self, budget: _Budget) -> None:
        self.budget = budget
        self.array: np.ndarray | None = None

    def __setstate__(self, state: Any) -> None:
        if not (isinstance(state, tuple) and len(state) == 5) or self.array is not None:
            raise SequenceError("the pickle gives an array an unexpected state")
        _version, shape, dtype, fortran, raw = state
        self.array = _build_array(self.budget, raw, _as_dtype(dtype), shape, bool(fortran))


def _reconstruct(budget: _Budget, subtype: Any, _shape: Any, _typecode: Any) -> _PendingArray:
    # Only the plain ndarray: subclasses such as np.memmap or np.matrix have their own constructors.
    if subtype is not _NDARRAY:
        raise UnsafePickleError(f"the pickle rebuilds an array of type {type(subtype).__name__}, not ndarray")
    return _PendingArray(budget)


def _frombuffer(budget: _Budget, buffer: Any, dtype: Any, shape: Any, order: Any) -> np.ndarray:
    return _build_array(budget, buffer, _as_dtype(dtype), shape, order == "F")


def _latin1_encode(text: Any, encoding: Any = "latin1") -> _Latin1Text:
    if not isinstance(text, str) or encoding != "latin1":
        raise UnsafePickleError("the pickle calls _codecs.encode on something other than latin-1 text")
    return _Latin1Text(text)


def _empty_bytes(*args: Any) -> bytes:
    # Protocol 2 writes b"" (the data of a zero-size array) as a call to bytes().
    if args:
        raise UnsafePickleError("the pickle calls bytes() with arguments")
    return b""


_ALLOWED: dict[tuple[str, str], Any] = {
    ("numpy", "ndarray"): _NDARRAY,
    ("numpy", "dtype"): _dtype,
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy.core.numeric", "_frombuffer"): _frombuffer,
    ("numpy._core.numeric", "_frombuffer"): _frombuffer,
    ("_codecs", "encode"): _latin1_encode,
    ("__builtin__", "bytes"): _empty_bytes,  # Python 3 writes builtins as __builtin__ at protocol 2
    ("builtins", "bytes"): _empty_bytes,
}
_BUDGETED = {_reconstruct, _frombuffer}  # stand-ins that allocate: bound to the load's budget


class _Reader:
    """A read-only file over the input whose reads are views, not copies (the C unpickler takes any buffer).

    `io.BytesIO.read` copies what it returns, so a data argument would briefly exist twice.
    """

    def __init__(self, data: bytes) -> None:
        self.data, self.view, self.pos = data, memoryview(data), 0

    def read(self, n: int = -1) -> memoryview:
        end = len(self.view) if n < 0 else min(len(self.view), self.pos + n)
        start, self.pos = self.pos, end
        return self.view[start:end]

    def readinto(self, buffer: Any) -> int:
        target = memoryview(buffer).cast("B")
        chunk = self.read(len(target))
        target[: len(chunk)] = chunk
        return len(chunk)

    def readline(self) -> memoryview:
        stop = self.data.find(b"\n", self.pos)
        return self.read(-1 if stop < 0 else stop + 1 - self.pos)


class _ArrayUnpickler(pickle.Unpickler):
    """Resolves only `_ALLOWED`; everything else (os.system, builtins.eval, ...) is refused unresolved."""

    def __init__(self, file: _Reader, budget: _Budget) -> None:
        # The C unpickler takes any buffer from read(); typeshed says bytes. Views avoid a copy (_Reader).
        super().__init__(file, encoding="latin1")  # type: ignore[arg-type]  # Python 2 pickles: latin-1 str
        self.budget = budget

    def find_class(self, module: str, name: str) -> Any:
        _check_global(module, name)
        found = _ALLOWED[(module, name)]
        return functools.partial(found, self.budget) if found in _BUDGETED else found

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError("the pickle uses persistent ids, which a plain numpy array never needs")


def loads_array(data: bytes, *, max_bytes: int = DEFAULT_MAX_BYTES, name: str = "<pickle>") -> np.ndarray:
    """Rebuild the numeric ndarray pickled in `data` (protocol 2-5, numpy 1.x or 2.x), executing nothing.

    Raises UnsafePickleError when the pickle holds anything but the numpy array machinery (a global, an
    opcode, more objects or bytes than an array needs) or an object array, and SequenceError when it is
    over `max_bytes`, corrupt, or not an array of bool/int/float. The result is always a writable array
    that owns its memory; at most about 2x `len(data)` is allocated on the way.
    """
    if len(data) > max_bytes:
        raise SequenceError(f"{name}: {len(data)} bytes is over the {max_bytes}-byte limit")
    if not data:
        raise SequenceError(f"{name}: empty file, not a pickle")
    try:
        scan(data)
        obj = _ArrayUnpickler(_Reader(bytes(data)), _Budget(len(data))).load()
    except SequenceError as exc:  # includes UnsafePickleError; keep the class, add the file name
        raise type(exc)(f"{name}: {exc}") from None
    except Exception as exc:  # any malformed pickle: bad opcode, truncation, stack or memo errors
        raise SequenceError(f"{name}: corrupt or unsupported pickle ({type(exc).__name__}: {exc})") from None
    if isinstance(obj, _PendingArray):
        obj = obj.array
    if not isinstance(obj, np.ndarray):
        raise SequenceError(f"{name}: the pickle holds a {type(obj).__name__}, not a numpy array")
    return obj


def dumps_array(arr: np.ndarray) -> bytes:
    """Pickle `arr` the way OpenGait files are written (a plain ndarray, protocol 4)."""
    if not isinstance(arr, np.ndarray):
        raise SequenceError(f"dumps_array takes a numpy array, got {type(arr).__name__}")
    return pickle.dumps(arr, protocol=PICKLE_PROTOCOL)
