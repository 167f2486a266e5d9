"""Read and write OpenGait's pickled numpy arrays without trusting the pickle.

OpenGait stores every sequence as `pickle.dump(np.ndarray)`. Unpickling runs whatever callables the
file names, so a downloaded `.pkl` could run `os.system`. `loads_array` uses an unpickler that resolves
only the few globals numpy's own array pickles use, and even those resolve to our stand-ins, not to
numpy: the stand-ins accept plain numeric dtypes and raw bytes and build the array with `np.frombuffer`.
Any other global is refused before it is called (`UnsafePickleError`), so nothing from the file runs,
and no attacker-chosen state ever reaches numpy's own `__setstate__` (a dtype state can claim to hold
Python objects, which would make numpy read raw bytes as object pointers).

The globals numpy writes (numpy 1.x and 2.x spell the modules differently):
- protocols 2-4: `numpy(._)core.multiarray._reconstruct(numpy.ndarray, (0,), b"b")` then BUILD with
  `(1, shape, dtype, is_fortran, raw_bytes)`; `numpy.dtype(code, align, copy)` then BUILD with its state;
  at protocol 2 also `_codecs.encode(str, "latin1")` and `bytes()`, because it has no bytes opcode;
- protocol 5: `numpy(._)core.numeric._frombuffer(buffer, dtype, shape, order)`, the buffer in band.
"""

from __future__ import annotations

import io
import math
import pickle
from typing import Any

import numpy as np

from gaitlu.errors import SequenceError, UnsafePickleError

DEFAULT_MAX_BYTES = 256 * 1024 * 1024
PICKLE_PROTOCOL = 4  # readable by every Python 3 and numpy version OpenGait users run
_NUMERIC_KINDS = "biuf"  # bool, signed, unsigned, float: what a silhouette can be


class _NdarrayType:
    """Stands in for `numpy.ndarray`: usable only as `_reconstruct`'s subtype argument.

    Handing out the real class would let a pickle call `ndarray(shape)` and allocate an arbitrarily
    large array that no byte of the input pays for. No slots, so BUILD cannot store attributes on it.
    """

    __slots__ = ()


_NDARRAY = _NdarrayType()


class _DtypeSpec:
    """What `numpy.dtype(code, align, copy)` + BUILD(state) describes, checked before numpy sees it."""

    def __init__(self, code: Any) -> None:
        self.code = code
        self.byteorder = "="

    def __setstate__(self, state: Any) -> None:
        # (version, byteorder, subarray, names, fields, elsize, alignment, flags[, metadata])
        if not (isinstance(state, tuple) and len(state) >= 5 and isinstance(state[1], str)):
            raise UnsafePickleError(f"the pickle gives a dtype the state {state!r}")
        if any(part is not None for part in state[2:5]):
            raise UnsafePickleError("the pickle builds a structured or sub-array dtype, not a plain number")
        self.byteorder = state[1]

    def resolve(self) -> np.dtype:
        if not isinstance(self.code, str):
            raise UnsafePickleError(f"the pickle builds a dtype from {self.code!r}")
        try:
            dtype = np.dtype(self.code)
        except TypeError as exc:
            raise SequenceError(f"the pickle names an unknown dtype {self.code!r}") from exc
        if dtype.hasobject:
            raise UnsafePickleError("the pickle holds an object-dtype array (dtype('O')), which can run code")
        if dtype.kind not in _NUMERIC_KINDS:
            raise SequenceError(f"the pickled array has dtype {dtype}, not bool, int or float")
        if self.byteorder in "<>":
            dtype = dtype.newbyteorder(self.byteorder)
        return dtype


def _dtype(code: Any, *_align_copy: Any) -> _DtypeSpec:
    return _DtypeSpec(code)


def _as_dtype(spec: Any) -> np.dtype:
    if not isinstance(spec, _DtypeSpec):
        raise UnsafePickleError(f"the pickle gives an array the dtype {spec!r}")
    return spec.resolve()


def _array_from_bytes(raw: Any, dtype: np.dtype, shape: Any, fortran: bool) -> np.ndarray:
    if isinstance(raw, str):
        raw = raw.encode("latin1")  # Python 2 pickles carry the raw data as str
    if not isinstance(raw, (bytes, bytearray)):
        raise UnsafePickleError(f"the pickle gives array data of type {type(raw).__name__}, not bytes")
    if not (isinstance(shape, tuple) and all(isinstance(n, int) and n >= 0 for n in shape)):
        raise SequenceError(f"the pickle gives an invalid array shape {shape!r}")
    count = math.prod(shape)
    if count * dtype.itemsize != len(raw):
        raise SequenceError(f"the pickle's array data is {len(raw)} bytes, shape {shape} {dtype} needs more")
    flat = np.frombuffer(raw, dtype=dtype, count=count)
    return flat.reshape(shape, order="F" if fortran else "C")


class _PendingArray:
    """`_reconstruct`'s result: an empty shell that BUILD fills with `(1, shape, dtype, fortran, raw)`."""

    def __init__(self) -> None:
        self.array: np.ndarray | None = None

    def __setstate__(self, state: Any) -> None:
        if not (isinstance(state, tuple) and len(state) == 5):
            raise SequenceError("the pickle gives an array an unexpected state")
        _version, shape, dtype, fortran, raw = state
        self.array = _array_from_bytes(raw, _as_dtype(dtype), shape, bool(fortran))


def _reconstruct(subtype: Any, _shape: Any, _typecode: Any) -> _PendingArray:
    # Only the plain ndarray: subclasses such as np.memmap or np.matrix have their own constructors.
    if subtype is not _NDARRAY:
        raise UnsafePickleError(f"the pickle rebuilds an array of type {subtype!r}, not numpy.ndarray")
    return _PendingArray()


def _frombuffer(buffer: Any, dtype: Any, shape: Any, order: Any) -> np.ndarray:
    if isinstance(buffer, pickle.PickleBuffer):
        buffer = bytes(buffer)
    return _array_from_bytes(buffer, _as_dtype(dtype), shape, order == "F")


def _latin1_encode(text: Any, encoding: Any = "latin1") -> bytes:
    if not isinstance(text, str) or encoding != "latin1":
        raise UnsafePickleError(f"the pickle calls _codecs.encode with encoding {encoding!r}")
    return text.encode("latin1")


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


class _ArrayUnpickler(pickle.Unpickler):
    """Resolves only `_ALLOWED`; everything else (os.system, builtins.eval, ...) is refused unresolved."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f"the pickle refers to {module}.{name}, which a numpy array never needs; refused, nothing ran"
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError("the pickle uses persistent ids, which a plain numpy array never needs")


def loads_array(data: bytes, *, max_bytes: int = DEFAULT_MAX_BYTES, name: str = "<pickle>") -> np.ndarray:
    """Rebuild the numeric ndarray pickled in `data` (protocol 2-5, numpy 1.x or 2.x), executing nothing.

    Raises UnsafePickleError when the pickle names anything but the numpy array machinery or holds an
    object array, and SequenceError when it is over `max_bytes`, corrupt, or not an array of
    bool/int/float. The result is always a writable array that owns its memory.
    """
    if len(data) > max_bytes:
        raise SequenceError(f"{name}: {len(data)} bytes is over the {max_bytes}-byte limit")
    if not data:
        raise SequenceError(f"{name}: empty file, not a pickle")
    try:
        # latin1 lets numpy arrays pickled under Python 2 load (their raw data arrives as str).
        obj = _ArrayUnpickler(io.BytesIO(data), encoding="latin1").load()
    except SequenceError as exc:  # includes UnsafePickleError; keep the class, add the file name
        raise type(exc)(f"{name}: {exc}") from None
    except Exception as exc:  # any malformed pickle: bad opcode, truncation, stack or memo errors
        raise SequenceError(f"{name}: corrupt or unsupported pickle ({type(exc).__name__}: {exc})") from None
    if isinstance(obj, _PendingArray):
        obj = obj.array
    if not isinstance(obj, np.ndarray):
        raise SequenceError(f"{name}: the pickle holds a {type(obj).__name__}, not a numpy array")
    return obj.copy()  # frombuffer views the pickle's bytes: read-only, and would pin the whole input


def dumps_array(arr: np.ndarray) -> bytes:
    """Pickle `arr` the way OpenGait files are written (a plain ndarray, protocol 4)."""
    if not isinstance(arr, np.ndarray):
        raise SequenceError(f"dumps_array takes a numpy array, got {type(arr).__name__}")
    return pickle.dumps(arr, protocol=PICKLE_PROTOCOL)
