"""Load, check and save silhouette sequences: every format a user or dataset hands us becomes (T, H, W) uint8.

Formats (chosen by file name extension, else by the first bytes):
- `.pkl`: OpenGait's `pickle.dump(np.ndarray)`, read with `gaitlu.safepickle` (never plain pickle);
- `.npy` (no pickled objects) and `.npz` (one array, or the array named `silhouettes` or `seq`);
- `.png`: a single mask frame; a folder of `.png` masks; a `.zip` of `.png` masks. Frames are ordered
  naturally by name (`2.png` before `10.png`) and must all have the same size.

In a folder or zip of frames, hidden files (`.DS_Store`) and `__MACOSX/` are ignored; any other
non-PNG entry is an error, because a zip of e.g. JPEG frames would otherwise load as a partial or empty
sequence without anyone noticing. A zip whose entries are all `.npy` is read as an `.npz`.

Every read is bounded (`SequenceLimits`): encoded size, decoded size, frame count, frame side, zip
entries and decompressed bytes are checked before the memory is spent, so a hostile upload gets a
`SequenceError` rather than exhausting the service.
"""

from __future__ import annotations

import io
import logging
import math
import os
import re
import struct
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Literal, cast

import cv2
import numpy as np

from gaitlu.errors import ConfigError, SequenceError
from gaitlu.files import write_atomic
from gaitlu.safepickle import dumps_array, loads_array

logger = logging.getLogger(__name__)

MIB = 1024 * 1024
_NPY_CHUNK = MIB  # .npy data is read this many bytes at a time (a zip member: twice, decompressed)


@dataclass(frozen=True)
class SequenceLimits:
    """Bounds on what one sequence may cost to read; the service passes tighter ones for uploads.

    Frame sizes follow what real silhouettes are: 64 x 44 model frames (GaitLU-1M's cut), 64 x 64
    OpenGait-aligned frames, and raw masks from 120 x 160 up to 4K video; anything far outside that
    (a 1 x 4096 strip, a 16 x 4096 band) is refused before any pixel is aligned.
    """

    max_frames: int = 1000  # GaitLU-1M averages ~92 frames; OpenGait evaluates whole sequences of <= 720
    min_frames: int = 1
    max_bytes: int = 256 * MIB  # both the encoded input and the decoded array's nbytes
    max_zip_members: int = 4096  # entries in a zip (and, x1 KiB, the size of its central directory)
    max_zip_uncompressed: int = 512 * MIB  # bytes all entries of one zip declare (and may expand to)
    max_frame_side: int = 4096  # masks from 4K video (3840 x 2160) still load
    min_frame_side: int = 16  # model frames are 64 x 44; a frame under 16 px cannot hold a usable person
    max_frame_aspect: float = 8.0  # longer side / shorter side: video is <= 3.6 (32:9), cut frames 1.45
    max_pixels: int = 256 * MIB  # T x H x W: what alignment reads (~1 Gpx/s) and the uint8 frames' bytes

    def __post_init__(self) -> None:
        for field in fields(self):
            if getattr(self, field.name) < 1:
                raise ConfigError(f"SequenceLimits.{field.name} must be at least 1")
        if self.min_frames > self.max_frames:
            raise ConfigError("SequenceLimits.min_frames is above max_frames")
        if self.min_frame_side > self.max_frame_side:
            raise ConfigError("SequenceLimits.min_frame_side is above max_frame_side")


DEFAULT_LIMITS = SequenceLimits()

_SUFFIX_FORMATS = {
    ".pkl": "pkl",
    ".pickle": "pkl",
    ".npy": "npy",
    ".npz": "npz",
    ".zip": "zip",
    ".png": "png",
}
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_MAGIC_FORMATS = (
    (b"\x93NUMPY", "npy"),
    (b"PK\x03\x04", "zip"),
    (b"PK\x05\x06", "zip"),  # an empty archive
    (_PNG_SIGNATURE, "png"),
)
_NPZ_KEYS = ("silhouettes", "seq")
_FORMATS_HELP = ".pkl, .npy, .npz, .png, a .zip of PNG frames or a folder of PNG frames"
_DIGITS = re.compile(r"(\d+)", re.ASCII)


def natural_key(name: str) -> tuple[tuple[int | str, ...], str]:
    """Sort key putting `frame2.png` before `frame10.png` (ties broken by the raw name)."""
    # re.split with a capturing group alternates text (even index) and digit runs (odd index).
    parts = tuple(int(p) if i % 2 else p.casefold() for i, p in enumerate(_DIGITS.split(name)))
    return parts, name


# ---------------------------------------------------------------------------------------------------
# Checking arrays


def validate_sequence(
    arr: np.ndarray, limits: SequenceLimits = DEFAULT_LIMITS, *, name: str = "sequence"
) -> np.ndarray:
    """Check `arr` is a silhouette sequence and return it as C-contiguous (T, H, W) uint8 in 0..255.

    A sequence is 3-D: a 2-D array is refused (one frame is (1, H, W); only the single-frame formats,
    a `.png`, are read as one frame). Frame sides lie in `min_frame_side..max_frame_side` with at
    most `max_frame_aspect` between them. Values convert as: bool -> 0/255; float in [0, 1] -> round(x * 255)
    (NaN, inf or values outside [0, 1] are errors: 0..255 data stored as float is ambiguous); integers
    must lie in 0..255, and an integer sequence holding only 0 and 1 is a label-style mask and becomes
    0/255 like bool, since at 0/1 every frame would look empty to the alignment. May return `arr` itself
    when it already is contiguous uint8 that needs no change.
    """
    if not isinstance(arr, np.ndarray):
        raise SequenceError(f"{name}: expected a numpy array, got {type(arr).__name__}")
    if arr.ndim != 3:
        one_frame = " (for one frame, give it shape (1, H, W))" if arr.ndim == 2 else ""
        raise SequenceError(
            f"{name}: expected a sequence shaped (T, H, W): frames x height x width, "
            f"got a {arr.ndim}-D array of shape {arr.shape}{one_frame}"
        )
    t, h, w = arr.shape
    if h == 0 or w == 0:
        raise SequenceError(f"{name}: frames of size {h}x{w} are empty")
    if t == 0:
        raise SequenceError(f"{name}: the sequence has no frames")
    if t < limits.min_frames:
        raise SequenceError(f"{name}: {t} frames, at least {limits.min_frames} are needed")
    if t > limits.max_frames:
        raise SequenceError(f"{name}: {t} frames is over the limit of {limits.max_frames}")
    if max(h, w) > limits.max_frame_side:
        raise SequenceError(f"{name}: frames of {h}x{w} exceed the {limits.max_frame_side}-pixel side limit")
    if min(h, w) < limits.min_frame_side:
        raise SequenceError(
            f"{name}: frames of {h}x{w} are under the {limits.min_frame_side}-pixel side minimum "
            "(silhouette frames are 64x44, 64x64 or raw masks of a video's size)"
        )
    if max(h, w) > limits.max_frame_aspect * min(h, w):
        raise SequenceError(
            f"{name}: frames of {h}x{w} are more than {limits.max_frame_aspect:g} times longer than wide "
            "(silhouette frames are 64x44, 64x64 or raw masks of a video's size)"
        )
    if arr.size > limits.max_pixels:
        raise SequenceError(f"{name}: {t}x{h}x{w} is {arr.size} pixels, over the {limits.max_pixels} limit")
    if arr.nbytes > limits.max_bytes:
        raise SequenceError(f"{name}: the array takes {arr.nbytes} bytes, over the {limits.max_bytes} limit")
    return _to_uint8(arr, name)


def _to_uint8(arr: np.ndarray, name: str) -> np.ndarray:
    kind = arr.dtype.kind
    if kind == "b":
        return arr.astype(np.uint8) * np.uint8(255)
    if kind == "f":
        if not np.isfinite(arr).all():
            raise SequenceError(f"{name}: float frames contain NaN or infinity")
        lo, hi = float(arr.min()), float(arr.max())
        if lo < 0.0 or hi > 1.0:
            raise SequenceError(
                f"{name}: float frames must lie in [0, 1], found {lo:g}..{hi:g} "
                "(divide 0..255 data by 255, or store it as uint8)"
            )
        frames: np.ndarray = np.rint(arr * 255).astype(np.uint8)
        return frames
    if kind in "iu":
        lo, hi = int(arr.min()), int(arr.max())
        if lo < 0 or hi > 255:
            raise SequenceError(f"{name}: {arr.dtype} frames must lie in 0..255, found {lo}..{hi}")
        out = np.ascontiguousarray(arr, dtype=np.uint8)
        return out * np.uint8(255) if hi == 1 else out
    raise SequenceError(f"{name}: unsupported dtype {arr.dtype} (expected bool, integer or float)")


# ---------------------------------------------------------------------------------------------------
# Loading


def load_sequence(
    source: str | os.PathLike[str] | bytes,
    *,
    filename: str | None = None,
    limits: SequenceLimits = DEFAULT_LIMITS,
) -> np.ndarray:
    """Read a sequence from a path (file or folder of PNGs) or from raw bytes; return (T, H, W) uint8.

    The frames come back raw (any size, values 0..255): pass them to `gaitlu.preprocess.to_model_frames`
    for model input. `filename` names the data in messages and, when given, its extension picks the
    format (useful for uploads); otherwise the path's extension does, else the leading magic bytes.
    Every problem (unknown format, corrupt or truncated data, limits, rank, dtype, NaN) raises
    SequenceError naming the file; a pickle that is not a plain array raises UnsafePickleError.
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        name = filename or "<bytes>"
        if len(data) > limits.max_bytes:
            raise SequenceError(f"{name}: {len(data)} bytes is over the {limits.max_bytes}-byte limit")
        arr = _decode(data, _detect_format(filename, data, name), name, limits)
    else:
        path = Path(source)
        name = filename or str(path)
        if path.is_dir():
            arr = _load_png_dir(path, name, limits)
        else:
            data = _read_file(path, name, limits.max_bytes)
            arr = _decode(data, _detect_format(filename or path.name, data, name), name, limits)
    return validate_sequence(arr, limits, name=name)


def _detect_format(filename: str | None, data: bytes, name: str) -> str:
    if filename:
        suffix = Path(filename).suffix.lower()
        if suffix in _SUFFIX_FORMATS:
            return _SUFFIX_FORMATS[suffix]
    if not data:
        raise SequenceError(f"{name}: the file is empty")
    for magic, fmt in _MAGIC_FORMATS:
        if data.startswith(magic):
            return fmt
    if len(data) >= 2 and data[0] == 0x80 and 2 <= data[1] <= 5:  # PROTO opcode + protocol number
        return "pkl"
    raise SequenceError(f"{name}: unknown sequence format (expected {_FORMATS_HELP})")


def _decode(data: bytes, fmt: str, name: str, limits: SequenceLimits) -> np.ndarray:
    if fmt == "pkl":
        return loads_array(data, max_bytes=limits.max_bytes, name=name)
    if fmt == "npy":
        return _load_npy(data, name, limits)
    if fmt == "png":
        return _decode_png(data, name, limits)[None]  # one frame: (H, W) -> (1, H, W)
    return _load_zip(data, name, limits, npz=fmt == "npz")


def _read_file(path: Path, name: str, max_bytes: int) -> bytes:
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size > max_bytes:
                raise SequenceError(f"{name}: {size} bytes is over the {max_bytes}-byte limit")
            data = f.read(max_bytes + 1)  # the file may grow between fstat and read
    except OSError as exc:
        raise SequenceError(f"{name}: cannot read ({exc.strerror or exc})") from None
    if len(data) > max_bytes:
        raise SequenceError(f"{name}: over the {max_bytes}-byte limit")
    return data


def _load_npy(data: bytes, name: str, limits: SequenceLimits) -> np.ndarray:
    return _read_npy(io.BytesIO(data), name, limits)


def _read_npy(stream: io.BufferedIOBase, name: str, limits: SequenceLimits) -> np.ndarray:
    """One .npy from `stream` (a file or a zip member), read straight into the array.

    The header is checked first, so a tiny file cannot declare a huge shape and make numpy allocate it;
    the data then streams in chunks, so a zip member is never held as bytes beside its array.
    """
    fmt = np.lib.format
    try:
        version = fmt.read_magic(stream)
        if version == (1, 0):
            shape, fortran, dtype = fmt.read_array_header_1_0(stream)
        elif version == (2, 0):
            shape, fortran, dtype = fmt.read_array_header_2_0(stream)
        else:
            raise SequenceError(f"{name}: unsupported .npy format version {version}")
    except (ValueError, EOFError, OSError, zlib.error) as exc:
        raise SequenceError(f"{name}: corrupt .npy header ({exc})") from None
    if dtype.hasobject:
        raise SequenceError(f"{name}: the .npy holds Python objects, not silhouettes")
    pixels = math.prod(shape)
    if pixels * dtype.itemsize > limits.max_bytes:
        raise SequenceError(
            f"{name}: the .npy declares {pixels * dtype.itemsize} bytes, over the {limits.max_bytes} limit"
        )
    if pixels > limits.max_pixels:
        raise SequenceError(f"{name}: the .npy declares {pixels} pixels, over the {limits.max_pixels} limit")
    order: Literal["C", "F"] = "F" if fortran else "C"
    arr = np.empty(shape, dtype=dtype, order=order)
    flat = arr.reshape(-1, order=order).view(np.uint8)  # (nbytes,) view of arr's memory
    filled = 0
    try:
        while filled < len(flat):
            got = stream.readinto(flat[filled : filled + _NPY_CHUNK].data)
            if not got:
                raise SequenceError(f"{name}: truncated .npy ({filled} of {len(flat)} data bytes)")
            filled += got
    except (ValueError, OSError, EOFError, zlib.error, zipfile.BadZipFile) as exc:
        raise SequenceError(f"{name}: corrupt or truncated .npy ({exc})") from None
    return arr


def _decode_png(data: bytes, name: str, limits: SequenceLimits) -> np.ndarray:
    """One mask frame -> (H, W); the size is read from the header before any pixel is decompressed."""
    # Signature (8) + IHDR length (4) + b"IHDR" (4) + width (4) + height (4).
    if len(data) < 24 or not data.startswith(_PNG_SIGNATURE) or data[12:16] != b"IHDR":
        raise SequenceError(f"{name}: not a PNG file")
    if b"IEND" not in data[-64:]:  # caught here, a truncated file gets our message, not a libpng warning
        raise SequenceError(f"{name}: truncated PNG (no end chunk)")
    width, height = struct.unpack(">II", data[16:24])
    if width == 0 or height == 0 or max(width, height) > limits.max_frame_side:
        raise SequenceError(f"{name}: PNG of {height}x{width} is outside 1..{limits.max_frame_side} pixels")
    try:
        frame = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    except cv2.error as exc:
        raise SequenceError(f"{name}: corrupt PNG ({exc})") from None
    if frame is None or frame.shape[:2] != (height, width):
        raise SequenceError(f"{name}: corrupt or truncated PNG")
    if frame.ndim == 3:  # colour masks: luminance (alpha, if any, is ignored)
        code = cv2.COLOR_BGRA2GRAY if frame.shape[2] == 4 else cv2.COLOR_BGR2GRAY
        frame = cv2.cvtColor(frame, code)
    return frame


def _is_ignored(member: str) -> bool:
    return member.startswith("__MACOSX/") or member.rsplit("/", 1)[-1].startswith(".")


def _stack_frames(
    names: list[str], read: Callable[[str], bytes], name: str, limits: SequenceLimits
) -> np.ndarray:
    """Decode PNG frames `names` (already sorted) into (T, H, W); `read` fetches one member's bytes."""
    if not names:
        raise SequenceError(f"{name}: no PNG frames found")
    if len(names) > limits.max_frames:
        raise SequenceError(f"{name}: {len(names)} frames is over the limit of {limits.max_frames}")
    frames: list[np.ndarray] = []
    for member in names:
        frame = _decode_png(read(member), f"{name}:{member}", limits)
        if frames and frame.shape != frames[0].shape:
            raise SequenceError(
                f"{name}: frame {member} is {frame.shape[0]}x{frame.shape[1]}, "
                f"the first frame is {frames[0].shape[0]}x{frames[0].shape[1]}"
            )
        if not frames and len(names) * frame.nbytes > limits.max_bytes:
            raise SequenceError(
                f"{name}: {len(names)} frames of {frame.shape} exceed {limits.max_bytes} bytes"
            )
        frames.append(frame)
    return np.stack(frames)  # T x (H, W) -> (T, H, W)


def _load_png_dir(path: Path, name: str, limits: SequenceLimits) -> np.ndarray:
    try:
        entries = sorted(os.scandir(path), key=lambda e: natural_key(e.name))
    except OSError as exc:
        raise SequenceError(f"{name}: cannot list the folder ({exc.strerror or exc})") from None
    names = []
    for entry in entries:
        if _is_ignored(entry.name):
            continue
        if not entry.name.lower().endswith(".png") or entry.is_dir():
            raise SequenceError(f"{name}: '{entry.name}' is not a PNG frame (a frame folder holds only .png)")
        names.append(entry.name)

    def read(member: str) -> bytes:
        return _read_file(path / member, f"{name}/{member}", limits.max_bytes)

    return _stack_frames(names, read, name, limits)


# Zip archives (PNG frames or .npz) --------------------------------------------------------------------

# End of central directory: signature, disk numbers and entry counts (4), directory size and offset, comment.
_EOCD = struct.Struct("<4s4H2LH")
_MAX_CD_BYTES_PER_MEMBER = 1024  # 46 fixed bytes + name + extra fields; frame names are far shorter


def _check_zip_directory(data: bytes, name: str, limits: SequenceLimits) -> None:
    """Bound the central directory before zipfile parses it into one object per entry.

    zipfile reads as many entries as the directory's declared byte size holds (the entry count is not
    trusted), so the byte size is what has to be bounded. Zip64 archives are refused: they exist for
    more than 65535 entries or 4 GiB, far beyond one sequence.
    """
    tail = data[-(_EOCD.size + 0xFFFF) :]
    pos = len(tail) - _EOCD.size
    if not (pos >= 0 and tail[pos:].startswith(b"PK\x05\x06") and tail[-2:] == b"\0\0"):
        pos = tail.rfind(b"PK\x05\x06")  # the record is followed by a comment
    if pos < 0 or pos + _EOCD.size > len(tail):
        raise SequenceError(f"{name}: corrupt zip (no end-of-archive record)")
    _sig, _disk, _cd_disk, _disk_entries, entries, cd_size, _cd_offset, _comment = _EOCD.unpack_from(
        tail, pos
    )
    if entries == 0xFFFF or cd_size == 0xFFFFFFFF:
        raise SequenceError(f"{name}: zip64 archives are not supported (too large for one sequence)")
    if entries > limits.max_zip_members or cd_size > limits.max_zip_members * _MAX_CD_BYTES_PER_MEMBER:
        raise SequenceError(f"{name}: the zip has too many entries (limit {limits.max_zip_members})")


def _check_member_name(member: str, name: str) -> None:
    parts = member.replace("\\", "/").split("/")
    if member.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", member) or ".." in parts:
        raise SequenceError(f"{name}: unsafe entry name '{member}' (absolute or climbing out with '..')")


def _load_zip(data: bytes, name: str, limits: SequenceLimits, *, npz: bool) -> np.ndarray:
    _check_zip_directory(data, name, limits)
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            infos = zf.infolist()
            if len(infos) > limits.max_zip_members:
                raise SequenceError(
                    f"{name}: {len(infos)} zip entries, over the limit of {limits.max_zip_members}"
                )
            for info in infos:
                _check_member_name(info.filename, name)
            files = {i.filename: i for i in infos if not i.is_dir() and not _is_ignored(i.filename)}
            declared = sum(i.file_size for i in files.values())
            if declared > limits.max_zip_uncompressed:
                raise SequenceError(
                    f"{name}: the zip expands to {declared} bytes, "
                    f"over the limit of {limits.max_zip_uncompressed}"
                )

            def read(member: str) -> bytes:
                return _read_member(zf, files[member], f"{name}:{member}", limits)

            if npz or (files and all(m.lower().endswith(".npy") for m in files)):
                member = _npz_member(sorted(files), name)
                with _open_member(zf, files[member], f"{name}:{member}", limits) as stream:
                    return _read_npy(stream, f"{name}:{member.removesuffix('.npy')}", limits)
            for member in files:
                if not member.lower().endswith(".png"):
                    raise SequenceError(
                        f"{name}: '{member}' is not a PNG frame (a frame zip holds only .png)"
                    )
            return _stack_frames(sorted(files, key=natural_key), read, name, limits)
    except SequenceError:
        raise
    except (
        zipfile.BadZipFile,
        zipfile.LargeZipFile,
        zlib.error,
        struct.error,
        ValueError,
        EOFError,
        OSError,
    ) as exc:
        raise SequenceError(f"{name}: corrupt zip ({exc})") from None
    except (NotImplementedError, RuntimeError) as exc:  # unknown compression method; encrypted entry
        raise SequenceError(f"{name}: unsupported zip ({exc})") from None


def _read_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, name: str, limits: SequenceLimits) -> bytes:
    """Read one entry, never more than its declared size (already checked against the limits) + 1 byte."""
    with _open_member(zf, info, name, limits) as f:
        data = f.read(info.file_size + 1)  # zipfile also stops at the declared size and then checks the CRC
    if len(data) != info.file_size:
        raise SequenceError(f"{name}: entry decompresses to a size other than its declared {info.file_size}")
    return data


def _open_member(
    zf: zipfile.ZipFile, info: zipfile.ZipInfo, name: str, limits: SequenceLimits
) -> zipfile.ZipExtFile:
    if info.file_size > limits.max_bytes:
        raise SequenceError(f"{name}: entry of {info.file_size} bytes is over the {limits.max_bytes} limit")
    return cast(zipfile.ZipExtFile, zf.open(info))  # what open() returns for reading (typeshed: IO[bytes])


def _npz_member(members: list[str], name: str) -> str:
    """The .npz member holding the sequence: the only array, or the one named `silhouettes` or `seq`."""
    arrays = [m for m in members if m.endswith(".npy")]
    keys = [m.removesuffix(".npy") for m in arrays]
    chosen = next((k for k in _NPZ_KEYS if k in keys), None)
    if chosen is None and len(keys) == 1:
        chosen = keys[0]
    if chosen is None:
        raise SequenceError(
            f"{name}: the .npz holds arrays {keys}; expected exactly one, or one named 'silhouettes' or 'seq'"
        )
    return f"{chosen}.npy"


# ---------------------------------------------------------------------------------------------------
# Saving and finding


def save_sequence(
    arr: np.ndarray, path: str | os.PathLike[str], *, limits: SequenceLimits = DEFAULT_LIMITS
) -> Path:
    """Validate `arr` and write it as `.pkl` (OpenGait's format) or `.npy`, chosen by the extension.

    The write is atomic (`gaitlu.files.write_atomic`, without fsync: sequences are written by the
    thousand and can be made again), so a reader never sees half a file; parent folders are created.
    What is written is exactly what `load_sequence` will return.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".pkl", ".npy"):
        raise SequenceError(f"{path}: can only save .pkl or .npy sequences")
    seq = validate_sequence(arr, limits, name=str(path))
    if suffix == ".pkl":
        payload = dumps_array(seq)
    else:
        buffer = io.BytesIO()
        np.save(buffer, seq, allow_pickle=False)
        payload = buffer.getvalue()
    try:
        write_atomic(path, payload, durable=False)  # bulk, regenerable output: see gaitlu.files
    except OSError as exc:
        raise SequenceError(f"{path}: cannot write ({exc.strerror or exc})") from None
    return path


def iter_sequence_files(root: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield every sequence under `root` in natural order: sequence files, and folders holding PNG frames.

    Hidden files and folders are skipped. A folder is yielded after its own files. Symlinked folders are
    followed (data sets are often assembled from links), each real folder once, so a link loop ends.
    """
    seen: set[tuple[int, int]] = set()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        status = os.stat(dirpath)
        if (status.st_dev, status.st_ino) in seen:
            dirnames[:] = []
            continue
        seen.add((status.st_dev, status.st_ino))
        dirnames[:] = sorted((d for d in dirnames if not d.startswith(".")), key=natural_key)
        has_png = False
        for filename in sorted(filenames, key=natural_key):
            fmt = _SUFFIX_FORMATS.get(Path(filename).suffix.lower())
            if filename.startswith(".") or fmt is None:
                continue
            if fmt == "png":
                has_png = True
            else:
                yield Path(dirpath, filename)
        if has_png:
            yield Path(dirpath)
