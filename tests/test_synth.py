"""The synthetic gait generator: motion basis, rendering, layouts, determinism and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from gaitlu.errors import ConfigError, DataError
from gaitlu.evaluation.crossview import casia_b
from gaitlu.evaluation.embeddings import EmbeddingSet
from gaitlu.evaluation.gei import gei_embed
from gaitlu.preprocess import to_model_frames
from gaitlu.sequence import load_sequence
from synth import (
    generate_gaitlu,
    generate_opengait,
    identity_for,
    load_basis,
    render_raw,
    render_sequence,
    sequence_rng,
)
from synth.derive_motion import derive_motion
from synth.layout import OPENGAIT_SEQUENCES, gaitlu_path, subject_name
from synth.mocap import extract_cycles, parse_bvh
from synth.motion import MOTION_FILE
from synth.render import Capture
from tests.support import shared
from tests.support.cli import run_cli

REPO = Path(__file__).resolve().parents[1]
MOCAP = REPO.parent / "shared" / "data" / "mocap-cmu-walk"  # CI checks it out beside the repo


@pytest.fixture
def mocap() -> Path:
    """The CMU BVH folder: skips without ../shared, fails under GAITLU_REQUIRE_SHARED=1 (CI)."""
    return shared.require_dir(MOCAP, "the CMU BVH folder")


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_motion_basis_is_packaged_and_needs_no_bvh_files():
    assert MOTION_FILE.is_relative_to(REPO / "synth")
    assert MOTION_FILE.stat().st_size < 400_000
    basis = load_basis()
    n_cycles, n_phases, _n_segments, _ = basis.angles.shape
    assert n_cycles >= 20 and n_phases == 64
    assert len({s.split("_")[0] for s in basis.source}) >= 5  # several real CMU people
    assert np.isfinite(basis.angles).all()
    assert ((basis.duration > 0.8) & (basis.duration < 1.6)).all()
    # Real walking: the thigh swings through 40-70 degrees a cycle (up to 90 in CMU 08's long strides).
    thigh_range = np.rad2deg(np.ptp(basis.angles[:, :, 0, 0], axis=1))
    assert ((thigh_range > 35) & (thigh_range < 95)).all()


def test_bvh_parser_and_cycles_on_a_real_cmu_file(mocap: Path):
    bvh = parse_bvh(mocap / "07" / "07_01.bvh")
    assert bvh.motion.shape == (317, 96)
    assert bvh.names[0] == "Hips" and "LeftToeBase_end" in bvh.names
    cycles = extract_cycles(mocap / "07" / "07_01.bvh")
    assert len(cycles) >= 1
    assert all(0.9 < c.duration < 1.3 and 1.5 < c.stride < 2.2 for c in cycles)


def test_packaged_motion_is_what_derive_motion_produces(tmp_path, mocap: Path):
    out = tmp_path / "motion.npz"
    derive_motion(mocap, out)
    with np.load(out) as fresh, np.load(MOTION_FILE) as packaged:
        assert fresh.files == packaged.files
        for key in fresh.files:
            np.testing.assert_array_equal(fresh[key], packaged[key], err_msg=key)


def test_malformed_bvh_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.bvh"
    bad.write_text("HIERARCHY\nROOT Hips\n{\n OFFSET 0 0 0\n CHANNELS 3 Xposition Yposition Zposition\n}\n")
    with pytest.raises(DataError, match="no MOTION"):
        parse_bvh(bad)
    bad.write_text(bad.read_text() + "MOTION\nFrames: 2\nFrame Time: 0.01\n1 2 3\n4 5\n")
    with pytest.raises(DataError, match="malformed"):
        parse_bvh(bad)


def test_render_sequence_shape_and_binary_frames():
    person = identity_for(0, 1)
    seq = render_sequence(person, 90, "nm", 40, sequence_rng(0, 1, 0))
    assert seq.dtype == np.uint8 and seq.shape[1:] == (64, 64)
    assert 35 <= len(seq) <= 40
    assert (seq[:, 0].max(axis=1) > 0).all() and (seq[:, -1].max(axis=1) > 0).all()  # head to feet
    assert (seq > 127).mean() > 0.08  # a body, not specks


@pytest.mark.parametrize("size", [(240, 320), (45, 60), (720, 1280)])
def test_render_raw_any_canvas_size(size):
    raw = render_raw(identity_for(0, 2), 36, "bg", 6, sequence_rng(0, 2, 0), size=size)
    assert raw.shape == (6, *size) and raw.dtype == np.uint8
    assert set(np.unique(raw)) == {0, 255}
    assert not raw[:, [0, -1]].any() and not raw[:, :, [0, -1]].any()  # the walker stays in the frame


def step_period(seq: np.ndarray) -> int:
    """Frames per step (half a gait cycle): the first autocorrelation peak of the silhouette width."""
    width = (to_model_frames(seq) > 127).any(axis=1).sum(axis=1).astype(float)
    width -= width.mean()
    ac = np.correlate(width, width, "full")[len(width) - 1 :]
    first_negative = int(np.argmax(ac < 0))
    return first_negative + int(np.argmax(ac[first_negative : len(width) // 2]))


def test_capture_sets_frame_rate_resolution_and_checks_its_values():
    person = identity_for(0, 4)
    walk = {
        fps: render_sequence(person, 90, "nm", 100, sequence_rng(0, 4, 0), Capture(fps=fps))
        for fps in (25, 12.5)
    }
    assert step_period(walk[12.5]) == pytest.approx(
        step_period(walk[25]) / 2, abs=1
    )  # half the frames per step
    small = render_sequence(person, 90, "nm", 20, sequence_rng(0, 4, 0), Capture(person_px=32))
    assert small.shape[1:] == (64, 64)  # aligned like any other walk, from a 32-px person
    assert Capture(person_px=144).size == (180, 144)
    for bad in ({"fps": 0.0}, {"elevation": (30.0, 10.0)}, {"person_px": 4}):
        with pytest.raises(ConfigError, match="capture needs"):
            Capture(**bad)


def test_views_change_the_silhouette_and_conditions_change_the_body():
    person = identity_for(0, 3)

    def gei(view: int, cond: str) -> np.ndarray:
        return to_model_frames(render_sequence(person, view, cond, 50, sequence_rng(0, 3, 7))).mean(0)

    side, front = gei(90, "nm"), gei(0, "nm")
    assert np.abs(side - front).mean() > 10  # a side view is wider at the legs than a front view
    assert (gei(90, "cl") > 127).sum() > (side > 127).sum()  # a coat covers more


def test_identity_is_stable_across_its_sequences_and_differs_between_people():
    subjects = range(1, 6)
    geis = {
        (s, i): gei_embed(
            [to_model_frames(render_sequence(identity_for(4, s), 90, "nm", 50, sequence_rng(4, s, i)))]
        )[0, 0]
        for s in subjects
        for i in range(2)
    }
    for s in subjects:
        same = np.linalg.norm(geis[s, 0] - geis[s, 1])
        nearest_other = min(np.linalg.norm(geis[s, 0] - geis[o, 1]) for o in subjects if o != s)
        assert same < nearest_other
    assert identity_for(4, 1).body != identity_for(4, 2).body
    assert identity_for(4, 1).body == identity_for(4, 1).body


def test_opengait_layout_paths_and_partition(tmp_path):
    written = generate_opengait(tmp_path, subjects=3, seed=1, sequences_per_subject=4)
    assert written == 12
    assert json.loads((tmp_path / "partition.json").read_text()) == {
        "TRAIN_SET": ["001", "002"],
        "TEST_SET": ["003"],
    }
    files = sorted(tmp_path.rglob("*.pkl"))
    assert len(files) == 12
    conds = {c for c, _ in OPENGAIT_SEQUENCES}
    for f in files:
        subject, cond, view, name = f.relative_to(tmp_path).parts
        assert subject in {"001", "002", "003"} and cond in conds and name == f"{view}.pkl"
        assert int(view) in range(0, 181, 18)
        seq = load_sequence(f)
        assert seq.dtype == np.uint8 and seq.shape[1:] == (64, 64) and 25 <= len(seq) <= 120
    assert subject_name(7, 1000) == "0007" and subject_name(7, 124) == "007"


def test_gaitlu_layout_is_unlabelled_cut_frames(tmp_path):
    assert generate_gaitlu(tmp_path, subjects=2, seed=1, sequences_per_subject=3) == 6
    files = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    assert files == [gaitlu_path(Path(), i) for i in range(6)]
    assert str(gaitlu_path(Path(), 1_234_567)) == "silhouette_cut_pkl/001/234/567/001_234_567.pkl"
    for f in files:
        assert load_sequence(tmp_path / f).shape[1:] == (64, 44)


def test_same_seed_same_bytes_whatever_the_worker_count(tmp_path):
    generate_opengait(tmp_path / "a", subjects=2, seed=5, sequences_per_subject=3, workers=1)
    generate_opengait(tmp_path / "b", subjects=2, seed=5, sequences_per_subject=3, workers=2)
    generate_opengait(tmp_path / "c", subjects=2, seed=6, sequences_per_subject=3, workers=1)
    a, b, c = (tree_bytes(tmp_path / x) for x in "abc")
    assert a == b
    assert a != c
    generate_gaitlu(tmp_path / "d", subjects=3, seed=5, sequences_per_subject=2, workers=1)
    generate_gaitlu(tmp_path / "e", subjects=3, seed=5, sequences_per_subject=2, workers=2)
    assert tree_bytes(tmp_path / "d") == tree_bytes(tmp_path / "e")


def test_cli_end_to_end(tmp_path, capsys):
    code, out, _ = run_cli(
        capsys, "synth", "--out", str(tmp_path / "og"), "--subjects", "2", "--sequences-per-subject", "2"
    )
    assert code == 0 and "wrote 4 sequences (opengait layout)" in out
    assert len(list((tmp_path / "og").rglob("*.pkl"))) == 4
    assert (tmp_path / "og" / "partition.json").is_file()
    args = [
        "--out",
        str(tmp_path / "lu"),
        "--subjects",
        "1",
        "--layout",
        "gaitlu",
        "--workers",
        "2",
        "--seed",
        "3",
    ]
    code, out, _ = run_cli(capsys, "synth", *args)
    assert code == 0 and "wrote 4 sequences (gaitlu layout)" in out
    assert len(list((tmp_path / "lu" / "silhouette_cut_pkl").rglob("*.pkl"))) == 4


def test_cli_rejects_bad_input_with_exit_2(tmp_path, capsys):
    code, _, err = run_cli(capsys, "synth", "--out", str(tmp_path), "--subjects", "0")
    assert code == 2
    assert "error: --subjects must be at least 1" in err
    code, _, err = run_cli(capsys, "synth", "--out", str(tmp_path), "--subjects", "2", "--fps", "-1")
    assert code == 2 and "capture needs fps > 0" in err


def test_cli_capture_options_change_the_files(tmp_path, capsys):
    args = ["--subjects", "2", "--sequences-per-subject", "1", "--seed", "2"]
    run_cli(capsys, "synth", "--out", str(tmp_path / "a"), *args)
    shifted = ["--fps", "15", "--elevation", "20", "30", "--person-px", "40"]
    code, _, _ = run_cli(capsys, "synth", "--out", str(tmp_path / "b"), *args, *shifted)
    a, b = tree_bytes(tmp_path / "a"), tree_bytes(tmp_path / "b")
    assert code == 0 and a.keys() == b.keys() and a != b


@pytest.mark.slow
def test_gei_baseline_is_hard_but_above_chance():
    """CASIA-B protocol on 10 synthetic test subjects (short walks): far from 100, far above chance (10%)."""
    rows = []
    for s in range(1, 11):
        person = identity_for(9, s)
        for i, (cond, view) in enumerate(OPENGAIT_SEQUENCES):
            frames = render_sequence(person, view, cond[:2], 30, sequence_rng(9, s, i))
            rows.append((gei_embed([to_model_frames(frames)])[0], f"{s:03d}", cond, f"{view:03d}"))
    emb, subject, cond, view = zip(*rows, strict=True)
    report = casia_b(EmbeddingSet(np.stack(emb), np.array(subject), np.array(cond), np.array(view)))
    nm, bg, cl = (report.conditions[c] for c in ("NM", "BG", "CL"))
    assert 20 < nm.mean < 80 and np.nanmean(np.diag(nm.rank1)) > 85
    assert 10 < cl.mean < nm.mean and bg.mean < nm.mean
