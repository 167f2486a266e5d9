"""Loading silhouette sequences: every format round-trips; bad or hostile input is a clear SequenceError."""

from __future__ import annotations

import builtins
import io
import os
import pickle
import struct
import subprocess
import tracemalloc
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest

from gaitlu.errors import SequenceError, UnsafePickleError
from gaitlu.safepickle import dumps_array, loads_array
from gaitlu.sequence import (
    SequenceLimits,
    iter_sequence_files,
    load_sequence,
    save_sequence,
    validate_sequence,
)

MIB = 1024 * 1024


def make_frames(t: int = 5, h: int = 48, w: int = 32) -> np.ndarray:
    """A (T, H, W) uint8 mask sequence whose frames all differ, so order mistakes show."""
    frames = np.zeros((t, h, w), np.uint8)
    for i in range(t):
        frames[i, 4 + i : h - 4, 8 : w - 8 + (i % 3)] = 255
    return frames


def png_bytes(frame: np.ndarray) -> bytes:
    ok, encoded = cv2.imencode(".png", frame)
    assert ok
    return encoded.tobytes()


def zip_bytes(members: dict[str, bytes], compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as zf:
        for member, data in members.items():
            zf.writestr(zipfile.ZipInfo(member), data, compress_type=compression)
    return buffer.getvalue()


def npz_bytes(**arrays: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    return buffer.getvalue()


def npy_bytes(arr: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, arr)
    return buffer.getvalue()


# ---------------------------------------------------------------------------------------------------
# Round trips


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_opengait_pickle_round_trips_from_file_and_bytes(tmp_path: Path, protocol: int) -> None:
    frames = make_frames()
    path = tmp_path / "seq.pkl"
    path.write_bytes(pickle.dumps(frames, protocol=protocol))  # exactly how OpenGait writes its files
    for source in (path, str(path), path.read_bytes()):
        loaded = load_sequence(source)
        assert loaded.dtype == np.uint8
        np.testing.assert_array_equal(loaded, frames)


def test_pickle_of_fortran_and_big_endian_arrays_keeps_values() -> None:
    frames = make_frames().astype(">i2")
    for arr in (frames, np.asfortranarray(frames)):
        for protocol in (2, 5):
            np.testing.assert_array_equal(load_sequence(pickle.dumps(arr, protocol=protocol)), frames)


def test_numpy_1x_module_paths_are_accepted() -> None:
    # numpy 1.x wrote numpy.core.*; numpy 2.x writes numpy._core.*.
    frames = make_frames()
    old_style = pickle.dumps(frames, protocol=2).replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    np.testing.assert_array_equal(loads_array(old_style), frames)
    # Protocol 5 writes names length-prefixed (0x8c, length) inside a FRAME whose byte count follows it.
    new_name, old_name = b"numpy._core.numeric", b"numpy.core.numeric"
    patched = bytearray(
        pickle.dumps(frames, protocol=5).replace(
            bytes([0x8C, len(new_name)]) + new_name, bytes([0x8C, len(old_name)]) + old_name
        )
    )
    assert patched[2] == pickle.FRAME[0] and old_name in patched
    struct.pack_into("<Q", patched, 3, struct.unpack_from("<Q", patched, 3)[0] - 1)
    np.testing.assert_array_equal(loads_array(bytes(patched)), frames)


class _Reduce:
    """Pickles as a call to `func(*args)` (+ BUILD with `state`): how any pickle rebuilds an object."""

    def __init__(self, func: object, *args: object, state: object = None) -> None:
        self.func, self.args, self.state = func, args, state

    def __reduce__(self) -> tuple[object, ...]:
        return (self.func, self.args) if self.state is None else (self.func, self.args, self.state)


def test_python2_pickles_with_str_array_data_load() -> None:
    # Python 2 pickled the raw bytes as a str; unpickled as latin1 they arrive as a Python 3 str.
    frames = make_frames()
    py2_like = _Reduce(
        frames.__reduce__()[0],  # numpy's _reconstruct, wherever this numpy version keeps it
        np.ndarray,
        (0,),
        b"b",
        state=(1, frames.shape, frames.dtype, False, frames.tobytes().decode("latin1")),
    )
    np.testing.assert_array_equal(loads_array(pickle.dumps(py2_like, protocol=2)), frames)


def test_dumps_array_is_readable_by_plain_pickle_and_loads_array() -> None:
    frames = make_frames()
    data = dumps_array(frames)
    np.testing.assert_array_equal(pickle.loads(data), frames)
    np.testing.assert_array_equal(loads_array(data), frames)


def test_npy_round_trip(tmp_path: Path) -> None:
    frames = make_frames()
    np.save(tmp_path / "seq.npy", frames)
    np.testing.assert_array_equal(load_sequence(tmp_path / "seq.npy"), frames)


def test_npz_single_array_or_named_key(tmp_path: Path) -> None:
    frames = make_frames()
    np.testing.assert_array_equal(load_sequence(npz_bytes(anything=frames), filename="a.npz"), frames)
    labelled = npz_bytes(labels=np.arange(3), silhouettes=frames)
    np.testing.assert_array_equal(load_sequence(labelled, filename="b.npz"), frames)
    np.savez(tmp_path / "c.npz", seq=frames, fps=np.array(25))
    np.testing.assert_array_equal(load_sequence(tmp_path / "c.npz"), frames)


def test_npz_with_several_unnamed_arrays_is_ambiguous() -> None:
    with pytest.raises(SequenceError, match="expected exactly one"):
        load_sequence(npz_bytes(a=make_frames(), b=make_frames()), filename="two.npz")


def test_png_folder_is_read_in_natural_order(tmp_path: Path) -> None:
    frames = make_frames(t=12)
    for i, frame in enumerate(frames):
        (tmp_path / f"frame{i + 1}.png").write_bytes(
            png_bytes(frame)
        )  # frame1 .. frame12: lexical order differs
    (tmp_path / ".DS_Store").write_bytes(b"junk")
    np.testing.assert_array_equal(load_sequence(tmp_path), frames)


def test_png_zip_round_trip_with_subfolder_and_mac_junk() -> None:
    frames = make_frames(t=11)
    members = {f"walk/{i:d}.png": png_bytes(f) for i, f in enumerate(frames)}
    members["__MACOSX/walk/._0.png"] = b"resource fork"
    data = zip_bytes(members)
    np.testing.assert_array_equal(load_sequence(data), frames)  # detected by magic bytes
    np.testing.assert_array_equal(load_sequence(data, filename="upload.zip"), frames)


def test_zip_of_npy_members_reads_as_npz() -> None:
    frames = make_frames()
    np.testing.assert_array_equal(load_sequence(npz_bytes(seq=frames)), frames)


def test_single_png_is_one_frame() -> None:
    frame = make_frames(t=1)[0]
    loaded = load_sequence(png_bytes(frame))
    assert loaded.shape == (1, *frame.shape)
    np.testing.assert_array_equal(loaded[0], frame)


def test_colour_png_becomes_grey() -> None:
    frame = make_frames(t=1)[0]
    colour = cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)
    np.testing.assert_array_equal(load_sequence(png_bytes(colour), filename="c.png")[0], frame)


def test_filename_extension_picks_the_format_over_magic_bytes() -> None:
    # A .npy payload named .pkl is parsed as a pickle, and that fails clearly rather than guessing.
    with pytest.raises(SequenceError, match=r"upload\.pkl"):
        load_sequence(npy_bytes(make_frames()), filename="upload.pkl")


@pytest.mark.parametrize("suffix", [".pkl", ".npy"])
def test_save_sequence_is_atomic_and_round_trips(tmp_path: Path, suffix: str) -> None:
    frames = make_frames()
    path = save_sequence(frames, tmp_path / "out" / f"seq{suffix}")
    np.testing.assert_array_equal(load_sequence(path), frames)
    save_sequence(frames[:2], path)  # overwrite in place
    assert load_sequence(path).shape[0] == 2
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]  # no temp file left behind


def test_save_sequence_refuses_other_extensions_and_bad_arrays(tmp_path: Path) -> None:
    with pytest.raises(SequenceError, match=r"\.pkl or \.npy"):
        save_sequence(make_frames(), tmp_path / "seq.png")
    with pytest.raises(SequenceError, match=r"0\.\.255"):
        save_sequence(np.full((2, 16, 16), 300, np.int16), tmp_path / "seq.pkl")
    assert not list(tmp_path.iterdir())


def test_iter_sequence_files_finds_files_and_png_folders(tmp_path: Path) -> None:
    save_sequence(make_frames(), tmp_path / "000" / "2.pkl")
    save_sequence(make_frames(), tmp_path / "000" / "10.pkl")
    (tmp_path / "000" / "notes.txt").write_text("not a sequence")
    (tmp_path / "frames").mkdir()
    (tmp_path / "frames" / "1.png").write_bytes(png_bytes(make_frames(t=1)[0]))
    found = [p.relative_to(tmp_path).as_posix() for p in iter_sequence_files(tmp_path)]
    assert found == ["000/2.pkl", "000/10.pkl", "frames"]


def test_iter_sequence_files_follows_linked_folders_once_and_ends_on_a_link_loop(tmp_path: Path) -> None:
    data, tree = tmp_path / "data", tmp_path / "tree"
    save_sequence(make_frames(), data / "001" / "nm-01" / "090.pkl")
    tree.mkdir()
    (tree / "001").symlink_to(data / "001")  # a data set assembled from links
    (data / "001" / "nm-01" / "back").symlink_to(data / "001")  # and a loop
    found = [p.relative_to(tree).as_posix() for p in iter_sequence_files(tree)]
    assert found == ["001/nm-01/090.pkl"]


# ---------------------------------------------------------------------------------------------------
# Value conversion


def test_bool_becomes_0_255() -> None:
    mask = make_frames() > 0
    np.testing.assert_array_equal(load_sequence(pickle.dumps(mask)), make_frames())


def frame_of(values: list, dtype: object = None) -> np.ndarray:
    """A (1, 16, 16) sequence (the smallest frame allowed) tiled with `values`, in `dtype`."""
    return np.resize(np.array(values, dtype), (1, 16, 16))


def test_float_in_unit_range_is_rounded_to_uint8() -> None:
    arr = frame_of([0.0, 0.5, 1.0, 0.002, 0.998], np.float32)
    np.testing.assert_array_equal(validate_sequence(arr), frame_of([0, 128, 255, 1, 254], np.uint8))


def test_integer_0_1_masks_become_0_255_and_other_ints_keep_values() -> None:
    np.testing.assert_array_equal(validate_sequence(make_frames() // 255), make_frames())
    values = frame_of([0, 7, 200, 255], np.int16)
    np.testing.assert_array_equal(validate_sequence(values), values)


def test_a_sequence_is_three_dimensional_and_only_a_png_is_one_frame() -> None:
    frame = make_frames(t=1)[0]
    assert load_sequence(png_bytes(frame)).shape == (1, *frame.shape)
    for data in (npy_bytes(frame), pickle.dumps(np.linspace(0, 1, 320).reshape(10, 32))):
        with pytest.raises(SequenceError, match=r"shaped \(T, H, W\).*2-D.*give it shape \(1, H, W\)"):
            load_sequence(data)


def test_validate_returns_contiguous_uint8_for_strided_views() -> None:
    view = make_frames(t=6)[::2, :, ::2]
    out = validate_sequence(view)
    assert out.flags.c_contiguous
    np.testing.assert_array_equal(out, view)


# ---------------------------------------------------------------------------------------------------
# Hostile pickles: nothing runs


@pytest.mark.parametrize("protocol", [2, 5])
@pytest.mark.parametrize("attack", ["os.system", "builtins.eval", "subprocess.call", "inside_a_list"])
def test_malicious_pickle_is_refused_and_nothing_runs(tmp_path: Path, protocol: int, attack: str) -> None:
    marker = tmp_path / "pwned"
    payload = {
        "os.system": _Reduce(os.system, f"touch {marker}"),
        "builtins.eval": _Reduce(builtins.eval, f"open({str(marker)!r}, 'w')"),
        "subprocess.call": _Reduce(subprocess.call, ["touch", str(marker)]),
        "inside_a_list": [make_frames(), _Reduce(os.system, f"touch {marker}")],
    }[attack]
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps(payload, protocol=protocol))
    with pytest.raises(UnsafePickleError, match=r"evil\.pkl.*(system|eval|call).*refused"):
        load_sequence(path)
    assert not marker.exists()


def test_object_array_pickle_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    arr = np.array([1, _Reduce(os.system, f"touch {marker}")], dtype=object)
    with pytest.raises(UnsafePickleError):
        loads_array(pickle.dumps(arr, protocol=2))
    with pytest.raises(SequenceError, match=r"EMPTY_LIST.*builds a list"):  # its items are a list
        loads_array(pickle.dumps(np.array([1, 2], dtype=object), protocol=4))
    # Raw bytes declared as an object array would make numpy read them as pointers.
    reconstruct = np.zeros(1).__reduce__()[0]  # numpy's _reconstruct, wherever this numpy keeps it
    pointers = _Reduce(
        reconstruct, np.ndarray, (0,), b"b", state=(1, (2,), np.dtype(object), False, bytes(16))
    )
    with pytest.raises(UnsafePickleError, match=r"dtype\('O'\)"):
        loads_array(pickle.dumps(pointers, protocol=4))
    assert not marker.exists()


@pytest.mark.parametrize(
    ("obj", "error", "match"),
    [
        ({"frames": [1, 2]}, SequenceError, "EMPTY_DICT.*builds a dict"),
        (np.zeros(3, dtype=[("a", "u1"), ("b", "f4")]), SequenceError, "builds a dict"),  # its fields
        (3.5, SequenceError, "BINFLOAT"),
        ((1, 2), SequenceError, "holds a tuple"),
        (np.ma.masked_array([1, 2]), UnsafePickleError, "numpy.ma"),
        (np.array(["a", "b"]), SequenceError, "dtype"),
    ],
)
def test_pickles_of_non_silhouette_objects_are_refused(obj: object, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        loads_array(pickle.dumps(obj, protocol=4), name="x.pkl")


def test_oversized_pickle_is_refused_before_parsing() -> None:
    with pytest.raises(SequenceError, match="over the 1000-byte limit"):
        loads_array(dumps_array(np.zeros((10, 10, 10), np.uint8)), max_bytes=1000)


# ---------------------------------------------------------------------------------------------------
# Hostile zips


def test_zip_bomb_is_refused_quickly_without_the_memory() -> None:
    bomb = zip_bytes({"0.png": bytes(64 * MIB)})  # ~64 KiB compressed
    limits = SequenceLimits(max_bytes=4 * MIB, max_zip_uncompressed=4 * MIB)
    tracemalloc.start()
    try:
        with pytest.raises(SequenceError, match="expands to"):
            load_sequence(bomb, filename="bomb.zip", limits=limits)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 * MIB


def _patch_declared_size(data: bytes, size: int) -> bytes:
    """Make a one-entry zip lie: both headers declare `size` uncompressed bytes."""
    patched = bytearray(data)
    local = patched.index(b"PK\x03\x04")
    central = patched.index(b"PK\x01\x02")
    struct.pack_into("<L", patched, local + 22, size)
    struct.pack_into("<L", patched, central + 24, size)
    return bytes(patched)


def test_an_npz_member_streams_into_its_array() -> None:
    frames = np.zeros((400, 240, 320), np.uint8)  # 30 MiB decoded from a ~30 KB upload
    frames[:, 40:200, 130:190] = 255
    data = npz_bytes(silhouettes=frames)
    tracemalloc.start()
    try:
        loaded = load_sequence(data, filename="walk.npz")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    np.testing.assert_array_equal(loaded, frames)
    assert peak < frames.nbytes + 4 * MIB  # the array and a read chunk, never the member's bytes too


def test_zip_entry_lying_about_its_size_is_refused_without_the_memory() -> None:
    liar = _patch_declared_size(zip_bytes({"0.png": bytes(64 * MIB)}), 1000)
    tracemalloc.start()
    try:
        with pytest.raises(SequenceError, match=r"liar\.zip"):
            load_sequence(liar, filename="liar.zip")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 * MIB


@pytest.mark.parametrize(
    "member", ["../../evil.png", "/abs.png", "frames/../../x.png", "C:/win.png", "..\\y.png"]
)
def test_zip_path_traversal_names_are_refused(member: str) -> None:
    data = zip_bytes({"0.png": png_bytes(make_frames(t=1)[0]), member: png_bytes(make_frames(t=1)[0])})
    with pytest.raises(SequenceError, match="unsafe entry name"):
        load_sequence(data, filename="t.zip")


def test_too_many_zip_members_is_refused() -> None:
    data = zip_bytes({f"{i}.png": b"" for i in range(10)})
    with pytest.raises(SequenceError, match="too many entries"):
        load_sequence(data, filename="many.zip", limits=SequenceLimits(max_zip_members=8))


def test_zip_with_non_png_member_is_refused() -> None:
    data = zip_bytes({"0.png": png_bytes(make_frames(t=1)[0]), "1.jpg": b"\xff\xd8"})
    with pytest.raises(SequenceError, match=r"'1\.jpg' is not a PNG"):
        load_sequence(data, filename="mixed.zip")


def test_png_declaring_a_huge_frame_is_refused_before_decoding() -> None:
    data = bytearray(png_bytes(make_frames(t=1)[0]))
    struct.pack_into(">II", data, 16, 100_000, 100_000)  # IHDR width, height
    with pytest.raises(SequenceError, match="100000x100000"):
        load_sequence(bytes(data), filename="huge.png")


def test_npy_declaring_a_huge_shape_is_refused_before_allocating() -> None:
    header = npy_bytes(np.zeros((1, 1, 1), np.uint8))
    lying = header.replace(b"(1, 1, 1)", b"(9999999, 99999, 9)")
    with pytest.raises(SequenceError, match="declares"):
        load_sequence(lying, filename="lie.npy")


# ---------------------------------------------------------------------------------------------------
# Corrupt, truncated and invalid input


def _png_dir(folder: Path, sizes: list[tuple[int, int]]) -> Path:
    folder.mkdir()
    for i, (h, w) in enumerate(sizes):
        (folder / f"{i}.png").write_bytes(png_bytes(np.full((h, w), 255, np.uint8)))
    return folder


def _truncated(data: bytes) -> bytes:
    return data[: len(data) // 2]


CORRUPT_INPUTS = {
    "truncated.pkl": _truncated(pickle.dumps(make_frames(), protocol=4)),
    "truncated5.pkl": _truncated(pickle.dumps(make_frames(), protocol=5)),
    "garbage.pkl": b"\x80\x04this is not a pickle",
    "truncated.npy": _truncated(npy_bytes(make_frames())),
    "garbage.npy": b"\x93NUMPY\x01\x00garbage",
    "truncated.npz": _truncated(npz_bytes(seq=make_frames())),
    "truncated.zip": _truncated(zip_bytes({f"{i}.png": png_bytes(f) for i, f in enumerate(make_frames())})),
    "badpng.zip": zip_bytes({"0.png": _truncated(png_bytes(make_frames(t=1)[0]))}),
    "truncated.png": _truncated(png_bytes(make_frames(t=1)[0])),
    "notpng.png": b"GIF89a....",
    "empty.pkl": b"",
    "empty.zip": zip_bytes({}),
}


@pytest.mark.parametrize("filename", sorted(CORRUPT_INPUTS))
def test_corrupt_input_is_a_sequence_error_naming_the_file(filename: str) -> None:
    with pytest.raises(SequenceError, match=filename.replace(".", r"\.")):
        load_sequence(CORRUPT_INPUTS[filename], filename=filename)


def test_unknown_bytes_without_a_name_say_which_formats_are_known() -> None:
    with pytest.raises(SequenceError, match=r"<bytes>: unknown sequence format.*\.pkl"):
        load_sequence(b"hello world")


def test_missing_file_and_empty_folder(tmp_path: Path) -> None:
    with pytest.raises(SequenceError, match="cannot read"):
        load_sequence(tmp_path / "missing.pkl")
    with pytest.raises(SequenceError, match="no PNG frames"):
        load_sequence(tmp_path)


def test_folder_with_mixed_frame_sizes_or_other_files(tmp_path: Path) -> None:
    mixed = _png_dir(tmp_path / "mixed", [(30, 20), (30, 21)])
    with pytest.raises(SequenceError, match="first frame is 30x20"):
        load_sequence(mixed)
    other = _png_dir(tmp_path / "other", [(30, 20)])
    (other / "meta.json").write_text("{}")
    with pytest.raises(SequenceError, match=r"'meta\.json' is not a PNG"):
        load_sequence(other)


def test_folder_with_more_pngs_than_max_frames_is_refused_before_decoding(tmp_path: Path) -> None:
    for i in range(5):
        (tmp_path / f"{i}.png").write_bytes(b"never decoded")
    with pytest.raises(SequenceError, match="5 frames is over the limit of 4"):
        load_sequence(tmp_path, limits=SequenceLimits(max_frames=4))


@pytest.mark.parametrize(
    ("arr", "match"),
    [
        (np.zeros((0, 64, 44), np.uint8), "no frames"),
        (np.zeros((11, 8, 8), np.uint8), "11 frames is over the limit of 10"),
        (np.zeros((2, 3, 8, 8), np.uint8), r"shaped \(T, H, W\).*4-D"),
        (np.zeros(8, np.uint8), r"shaped \(T, H, W\).*1-D"),
        (np.zeros((2, 0, 8), np.uint8), "empty"),
        (frame_of([0.5, np.nan]), "NaN"),
        (frame_of([0.5, np.inf], np.float32), "NaN or infinity"),
        (frame_of([0.0, 1.5]), r"\[0, 1\], found 0\.\.1\.5"),
        (frame_of([0.0, 255.0]), "divide 0..255 data by 255"),
        (frame_of([0, 300], np.int16), "0..255, found 0..300"),
        (frame_of([-1, 3], np.int8), "found -1..3"),
        (frame_of([1 + 1j]), "unsupported dtype"),
        (np.zeros((1, 16, 20), np.uint8), "16-pixel side limit"),
        (np.zeros((1, 7, 10), np.uint8), "under the 8-pixel side minimum"),
        (np.zeros((1, 8, 16), np.uint8), "more than 1.5 times longer than wide"),
        (np.zeros((2, 16, 16), np.uint8), "is 512 pixels, over the 300 limit"),
    ],
)
def test_invalid_arrays_are_refused_by_load_and_validate(arr: np.ndarray, match: str) -> None:
    limits = SequenceLimits(
        max_frames=10, max_frame_side=16, min_frame_side=8, max_frame_aspect=1.5, max_pixels=300
    )
    with pytest.raises(SequenceError, match=match):
        validate_sequence(arr, limits, name="given")
    with pytest.raises(SequenceError, match=r"arr\.npy"):
        load_sequence(npy_bytes(arr), filename="arr.npy", limits=limits)


def test_min_frames_and_byte_limits() -> None:
    with pytest.raises(SequenceError, match="at least 3"):
        validate_sequence(make_frames(t=2), SequenceLimits(min_frames=3))
    with pytest.raises(SequenceError, match="over the 100 limit"):
        validate_sequence(make_frames(t=2), SequenceLimits(max_bytes=100))
    with pytest.raises(SequenceError, match="over the 100-byte limit"):
        load_sequence(npy_bytes(make_frames()), limits=SequenceLimits(max_bytes=100))


def test_validate_refuses_non_arrays() -> None:
    with pytest.raises(SequenceError, match="expected a numpy array, got list"):
        validate_sequence([[[0, 1]]])  # type: ignore[arg-type]
