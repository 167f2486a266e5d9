"""`gaitlu data index`: each file recorded once, bad files reported (not fatal, not executed), resumable."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from corpus.index import index_tree
from corpus.manifest import read_manifest
from gaitlu.errors import DataError
from gaitlu.safepickle import dumps_array
from tests.support.cli import run_cli
from tests.support.corpus import make_tree


class _RunsShell:
    """A pickle that would create `marker` if anything unpickled it with plain pickle."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture
def tree_with_bad_files(tmp_path: Path) -> tuple[Path, Path, dict[str, np.ndarray]]:
    seqs = make_tree(tmp_path, 12)
    bad = tmp_path / "silhouette_cut_pkl" / "999" / "000" / "000"
    bad.mkdir(parents=True)
    marker = tmp_path / "PWNED"
    (bad / "empty.pkl").write_bytes(b"")
    (bad / "zero_frames.pkl").write_bytes(dumps_array(np.zeros((0, 64, 44), np.uint8)))
    (bad / "short.pkl").write_bytes(dumps_array(np.zeros((3, 64, 44), np.uint8)))
    (bad / "evil.pkl").write_bytes(pickle.dumps(_RunsShell(marker)))
    (bad / "wrong_size.pkl").write_bytes(dumps_array(np.zeros((30, 128, 88), np.uint8)))
    (bad / "garbage.pkl").write_bytes(b"\x80\x04not really a pickle")
    (bad / "dangling.pkl").symlink_to(tmp_path / "nowhere.pkl")
    return tmp_path, marker, seqs


def _by_path(records: list[dict]) -> dict[str, dict]:
    return {r["path"]: r for r in records}


def test_index_records_good_files_and_reports_bad_ones(tree_with_bad_files, tmp_path):
    root, marker, seqs = tree_with_bad_files
    summary = index_tree(root, tmp_path / "m.jsonl", min_frames=10)

    assert not marker.exists(), "the malicious pickle must not run"
    records = list(read_manifest(tmp_path / "m.jsonl")[1])
    by_path = _by_path(records)
    statuses = {p.rsplit("/", 1)[-1]: r["status"] for p, r in by_path.items() if p.startswith("999/")}
    assert statuses == {
        "empty.pkl": "empty",
        "zero_frames.pkl": "empty",
        "short.pkl": "too_short",
        "evil.pkl": "malicious",
        "wrong_size.pkl": "invalid",
        "garbage.pkl": "invalid",
        "dangling.pkl": "unreadable",
    }
    assert all(by_path[p]["reason"] for p in by_path if p.startswith("999/"))
    good = {r["id"]: r for r in records if r["status"] == "ok"}
    assert set(good) == set(seqs)
    for seq_id, seq in seqs.items():
        assert (good[seq_id]["frames"], good[seq_id]["height"], good[seq_id]["width"]) == seq.shape
    assert summary.counts["ok"] == len(seqs) and len(summary.bad) == 7
    assert summary.frames == sum(len(s) for s in seqs.values())


def test_interrupted_index_resumes_where_it_stopped(tmp_path):
    seqs = make_tree(tmp_path, 20)
    full = tmp_path / "full.jsonl"
    index_tree(tmp_path, full, min_frames=5)
    lines = full.read_text().splitlines(keepends=True)
    partial = tmp_path / "partial.jsonl"
    # Header + 7 committed records + half of the 8th, as a crash mid-append leaves it.
    partial.write_text("".join(lines[:8]) + lines[8][: len(lines[8]) // 2])

    summary = index_tree(tmp_path, partial, min_frames=5, workers=2)

    assert summary.new == len(seqs) - 7
    resumed, reference = (list(read_manifest(path)[1]) for path in (partial, full))
    assert len(resumed) == len(seqs)
    assert sorted(resumed, key=lambda r: r["path"]) == sorted(reference, key=lambda r: r["path"])
    again = index_tree(tmp_path, partial, min_frames=5)
    assert again.new == 0 and again.files == len(seqs)


def test_resume_with_another_min_frames_is_refused(tmp_path):
    make_tree(tmp_path, 3)
    index_tree(tmp_path, tmp_path / "m.jsonl", min_frames=5)
    with pytest.raises(DataError, match="min-frames"):
        index_tree(tmp_path, tmp_path / "m.jsonl", min_frames=8)


def test_index_cli_reports_and_exits_zero(tree_with_bad_files, tmp_path, capsys):
    root, marker, _ = tree_with_bad_files
    args = ["data", "index", str(root), "--out", str(tmp_path / "m.jsonl"), "-j", "1", "--no-progress"]
    assert run_cli(None, *args).code == 0
    out = capsys.readouterr().out
    assert "malicious 1" in out and "ok 12" in out and "evil.pkl" in out
    assert not marker.exists()
    header = json.loads((tmp_path / "m.jsonl").read_text().splitlines()[0])
    assert header["root"] == str((root / "silhouette_cut_pkl").resolve())


def test_index_cli_missing_root_exits_2(tmp_path, capsys):
    args = ["data", "index", str(tmp_path / "absent"), "--out", str(tmp_path / "m.jsonl"), "--no-progress"]
    assert run_cli(None, *args).code == 2
    assert "not a directory" in capsys.readouterr().err
