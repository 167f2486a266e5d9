"""gaitlu.files: atomic writes (all or nothing, readable mode or a secret's, no temp files left) and file
hashes."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import pytest

from gaitlu.files import SECRET_MODE, atomic_write, sha256_file, write_atomic


def test_a_write_replaces_the_file_whole_with_a_readable_mode(tmp_path: Path) -> None:
    target = tmp_path / "deep" / "folder" / "report.json"
    write_atomic(target, "first\n")
    write_atomic(target, b"second\n")
    assert target.read_bytes() == b"second\n"
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    assert sorted(p.name for p in target.parent.iterdir()) == ["report.json"]


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "index.faiss"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="disk on fire"), atomic_write(target) as f:
        f.write(b"half of the new content")
        raise RuntimeError("disk on fire")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["index.faiss"]


def test_a_secret_is_never_readable_by_others_not_even_while_it_is_written(tmp_path: Path) -> None:
    """Created with its final mode (no chmod after the bytes are in): under a umask of 0 the temporary file
    is owner-only before its first byte, and a crash before the rename leaves no key file at all."""
    old = os.umask(0)  # a umask that narrows nothing: the mode must come from the write itself
    try:
        key = tmp_path / "api-key"
        with (
            pytest.raises(RuntimeError, match="killed"),
            atomic_write(key, "w", permissions=SECRET_MODE) as f,
        ):
            [temporary] = tmp_path.iterdir()
            assert stat.S_IMODE(temporary.stat().st_mode) == SECRET_MODE  # before any byte
            f.write("half-a-ke")
            raise RuntimeError("killed before the rename")
        assert not key.exists() and list(tmp_path.iterdir()) == []
        write_atomic(key, "the-key", permissions=SECRET_MODE)
        assert key.read_text() == "the-key" and stat.S_IMODE(key.stat().st_mode) == SECRET_MODE
    finally:
        os.umask(old)


def test_an_exclusive_write_never_replaces_what_is_there(tmp_path: Path) -> None:
    key = tmp_path / "api-key"
    write_atomic(key, "first", permissions=SECRET_MODE, exclusive=True)
    with pytest.raises(FileExistsError):
        write_atomic(key, "second", permissions=SECRET_MODE, exclusive=True)
    assert key.read_text() == "first" and [p.name for p in tmp_path.iterdir()] == ["api-key"]


def test_text_mode_and_read_modes(tmp_path: Path) -> None:
    with atomic_write(tmp_path / "a.csv", "w", newline="") as f:
        f.write("a,b\r\n")
    assert (tmp_path / "a.csv").read_bytes() == b"a,b\r\n"
    with pytest.raises(ValueError, match="write mode"), atomic_write(tmp_path / "b", "rb"):
        pass


def test_sha256_file_matches_hashlib(tmp_path: Path) -> None:
    data = bytes(range(256)) * 5000  # over one read block
    (tmp_path / "blob").write_bytes(data)
    assert sha256_file(tmp_path / "blob") == hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize(("durable", "fsyncs"), [(True, 2), (False, 0)])
def test_durable_writes_fsync_the_file_and_its_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, durable: bool, fsyncs: int
) -> None:
    calls: list[int] = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (calls.append(fd), real_fsync(fd))[1])
    write_atomic(tmp_path / "seq.pkl", b"frames", durable=durable)
    assert (tmp_path / "seq.pkl").read_bytes() == b"frames"
    assert len(calls) == fsyncs
