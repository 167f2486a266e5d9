"""The labelled-dataset reader on small trees written here: layout, gaps, stray files, partitions."""

from __future__ import annotations

import json
import logging
import pickle
from pathlib import Path

import numpy as np
import pytest

from gaitlu.errors import ConfigError, DataError, SequenceError
from gaitlu.labelled import LabelledSequence, load_partition, read_labelled, scan_labelled


def write_pkl(path: Path, arr: np.ndarray) -> None:
    """An OpenGait-style sequence file: a plain pickled uint8 array."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(arr, protocol=4))


def frames(value: int, t: int = 3) -> np.ndarray:
    return np.full((t, 64, 64), value, dtype=np.uint8)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """Two subjects; 002 lacks view 000 of nm-01 (like CASIA-B 005), plus stray files at every level."""
    root = tmp_path / "data"
    for subject in ("001", "002"):
        for cond in ("nm-01", "bg-01"):
            for view in ("000", "090"):
                if (subject, cond, view) != ("002", "nm-01", "000"):
                    write_pkl(root / subject / cond / view / f"{view}.pkl", frames(int(subject)))
    (root / "partition.json").write_text('{"TRAIN_SET": [], "TEST_SET": ["001", "002"]}')
    (root / "001" / "notes.txt").write_text("stray")
    (root / "001" / "nm-01" / "Thumbs.db").write_bytes(b"stray")
    (root / "001" / "nm-01" / "000" / "readme.md").write_text("stray")
    (root / "002" / "cl-01" / "000").mkdir(parents=True)  # an empty sequence folder
    (root / ".cache" / "x" / "y").mkdir(parents=True)  # hidden folders are not subjects
    return root


def test_scan_lists_sequences_sorted_and_skips_gaps_and_strays(tree: Path, caplog) -> None:
    with caplog.at_level(logging.WARNING):
        found = scan_labelled(tree)
    keys = [s.key for s in found]
    assert keys == [
        "001-bg-01-000",
        "001-bg-01-090",
        "001-nm-01-000",
        "001-nm-01-090",
        "002-bg-01-000",
        "002-bg-01-090",
        "002-nm-01-090",
    ]
    assert found[0] == LabelledSequence(tree / "001" / "bg-01" / "000", "001", "bg-01", "000")
    assert "002-cl-01-000" in caplog.text  # the empty folder is reported


def test_scan_restricts_to_subjects_and_warns_about_absent_ones(tree: Path, caplog) -> None:
    with caplog.at_level(logging.WARNING):
        found = scan_labelled(tree, {"002", "099"})
    assert {s.subject for s in found} == {"002"}
    assert "099" in caplog.text


def test_a_long_list_of_absent_subjects_is_cut_after_ten(tree: Path, caplog) -> None:
    absent = {f"{i:03d}" for i in range(100, 112)}
    with caplog.at_level(logging.WARNING):
        scan_labelled(tree, {"002", *absent})
    assert "12 subject(s)" in caplog.text
    assert "100, 101, 102, 103, 104, 105, 106, 107, 108, 109 ..." in caplog.text and "110" not in caplog.text


def test_scan_of_missing_root_is_a_data_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found"):
        scan_labelled(tmp_path / "nope")


def test_read_takes_the_first_sorted_file_that_loads(tmp_path: Path) -> None:
    folder = tmp_path / "001" / "nm-01" / "000"
    folder.mkdir(parents=True)
    (folder / "a-broken.pkl").write_bytes(b"not a pickle")
    write_pkl(folder / "b-sils.pkl", frames(7))
    write_pkl(folder / "c-other.pkl", frames(9))
    seq = scan_labelled(tmp_path)[0]
    assert read_labelled(seq)[0, 0, 0] == 7


def test_read_reports_every_failure_when_nothing_loads(tmp_path: Path) -> None:
    folder = tmp_path / "001" / "nm-01" / "000"
    folder.mkdir(parents=True)
    (folder / "x.pkl").write_bytes(b"junk")
    with pytest.raises(SequenceError, match=r"001-nm-01-000.*x\.pkl"):
        read_labelled(scan_labelled(tmp_path)[0])


def test_partition_round_trip_with_gait3d_probe_set(tmp_path: Path) -> None:
    path = tmp_path / "p.json"
    path.write_text(json.dumps({"TRAIN_SET": ["001"], "TEST_SET": ["002", "003"], "PROBE_SET": ["002-a-b"]}))
    part = load_partition(path)
    assert part.train == ("001",) and part.test == ("002", "003") and part.probe == ("002-a-b",)
    path.write_text(json.dumps({"TRAIN_SET": [], "TEST_SET": ["002"]}))
    assert load_partition(path).probe is None


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "JSON object"),
        ('{"TRAIN_SET": []}', "lacks TEST_SET"),
        ('{"TRAIN_SET": [], "TEST_SET": [75, 76]}', "string ids"),
        ('{"TRAIN_SET": [], "TEST_SET": "075"}', "must be a list"),
    ],
)
def test_bad_partitions_give_clear_config_errors(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "p.json"
    path.write_text(content)
    with pytest.raises(ConfigError, match=message):
        load_partition(path)


def test_missing_partition_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_partition(tmp_path / "absent.json")
