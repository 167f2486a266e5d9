"""gaitlu.files: atomic writes (all or nothing, readable mode, no temp files left) and file hashes."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import pytest

from gaitlu.files import atomic_write, sha256_file, write_atomic


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
