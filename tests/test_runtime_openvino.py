"""The OpenVINO backend: same vectors as onnxruntime within parity, parity recorded in the manifest and
enforced, `auto` choosing it on a bf16 CPU and falling back to onnxruntime without it, and the service
and the offline enrolment running on it.

Real runs on the tiny exported artifact (tests/conftest.py); OpenVINO is an optional dependency, so
everything that needs it skips with the reason where it is not installed.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest

from gaitlu.embedding import mean_part_cosine
from gaitlu.errors import ConfigError
from gaitlu.manifest import describe_file, read_manifest, write_manifest
from gaitlu.sequence import save_sequence
from runtime import load_artifact_embedder
from runtime.embedder import open_choice
from runtime.openvino_backend import cpu_capability, cpu_flags, openvino_available
from runtime.parity import load_sequences, record_parity
from runtime.selection import PARITY_THRESHOLD, Choice
from tests.support.cli import run_cli
from tests.support.servers import REPO, ServerProcess, npy_bytes
from tests.support.walkers import walking_sequence

# OpenVINO's native runtime in a process that later forks (a training test's data workers) crashes it:
# `make test` runs these tests in a pytest run of their own.
pytestmark = pytest.mark.openvino

needs_openvino = pytest.mark.skipif(not openvino_available(), reason="openvino is not installed")
needs_bf16 = pytest.mark.skipif(
    not (openvino_available() and cpu_capability().bf16),
    reason="this CPU has no native bf16 (AMX/AVX512-BF16)",
)


def write_walks(folder: Path, count: int = 8) -> Path:
    """`count` walking sequences of 8-36 frames as .npy files: a folder any sequence reader takes."""
    for i in range(count):
        save_sequence(walking_sequence(100 + i, 8 + 4 * i), folder / f"{i:02d}" / "walk.npy")
    return folder


@pytest.fixture(scope="module")
def walks(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_walks(tmp_path_factory.mktemp("walks"))


@pytest.fixture(scope="module")
def checked_artifact(tiny_artifact: Path, walks: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the tiny artifact with an int8 variant and OpenVINO's parity measured by `gaitlu parity`."""
    if not openvino_available():
        pytest.skip("openvino is not installed")
    from export.precision import quantize_int8  # the export stage's own int8 (needs onnx, not torch)

    art = tmp_path_factory.mktemp("checked") / "artifact"
    shutil.copytree(tiny_artifact, art)
    calibration = [seq.astype(np.float32) / 255 for seq in load_sequences(walks)[0]]
    quantize_int8(art / "model.onnx", art / "model.int8.onnx", calibration)
    manifest = read_manifest(art)
    variants = {**manifest.variants, "int8": describe_file(art, "model.int8.onnx", "int8")}
    write_manifest(manifest.model_copy(update={"variants": variants}), art)
    assert run_cli(None, "parity", art, "--sequences", walks, "--threads", "1").code in (
        0,
        1,
    )  # 1: one failed
    return art


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return mean_part_cosine(a, b)  # (N,): per sequence


def test_cpu_flags_are_read_from_cpuinfo(tmp_path: Path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse avx512f avx512_bf16 amx_bf16 amx_int8\n\n")
    assert {"avx512_bf16", "amx_bf16", "amx_int8"} <= cpu_flags(cpuinfo)
    assert cpu_flags(tmp_path / "missing") == frozenset()


@needs_openvino
@pytest.mark.parametrize("precision", ["fp32", "bf16", "int8"])
def test_openvino_matches_onnxruntime_within_parity(checked_artifact: Path, precision: str) -> None:
    """Dynamic batch and frames: several lengths and batch sizes through one compiled model."""
    if precision == "bf16" and not cpu_capability().bf16:
        pytest.skip("this CPU has no native bf16")
    reference_precision = "int8" if precision == "int8" else "fp32"  # int8: the same QDQ graph on both
    ort = load_artifact_embedder(checked_artifact, backend="cpu", precision=reference_precision, threads=1)
    manifest = read_manifest(checked_artifact)
    if manifest.backend_parity[f"openvino/{precision}"].passed:
        ov = load_artifact_embedder(checked_artifact, backend="openvino", precision=precision, threads=1)
    else:  # int8 of random weights may miss 0.9999 against fp32: refused, yet it runs when opened directly
        with pytest.raises(ConfigError, match="failed its parity check"):
            load_artifact_embedder(checked_artifact, backend="openvino", precision=precision)
        ov = open_choice(checked_artifact, manifest, Choice("openvino", precision, "test"), threads=1)
    assert ov.backend.name.startswith("openvino/CPU") and ov.choice.precision == precision
    assert ov.backend.properties["inference_precision"] == ("bf16" if precision == "bf16" else "f32")
    batch = [walking_sequence(s, n) for s, n in ((1, 30), (2, 30), (3, 30), (4, 17), (5, 92), (6, 1))]
    got, want = ov.embed_output(batch), ort.embed_output(batch)  # (6, P, C) each
    floor = PARITY_THRESHOLD if precision != "int8" else 0.995  # int8: two runtimes' int8 kernels (rounding)
    assert cosines(got, want).min() >= floor
    if precision == "fp32":
        np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-4)
    expected_hash = manifest.variant("int8" if precision == "int8" else "fp32").sha256
    assert ov.model_hash == expected_hash  # bf16 computes model.onnx's vectors: galleries keep working


@needs_openvino
def test_parity_is_recorded_per_pair_and_the_model_keeps_its_identity(
    checked_artifact: Path, tiny_artifact: Path
) -> None:
    manifest = read_manifest(checked_artifact)
    assert manifest.model_sha256 == read_manifest(tiny_artifact).model_sha256
    expected = {"openvino/fp32", "openvino/int8"} | ({"openvino/bf16"} if cpu_capability().bf16 else set())
    assert set(manifest.backend_parity) == expected
    for record in manifest.backend_parity.values():
        assert record.sequences == 8 and record.threshold == PARITY_THRESHOLD
        assert record.passed == (record.min_cosine >= PARITY_THRESHOLD)
        assert record.min_part_cosine <= record.min_cosine <= record.mean_cosine <= 1.0 + 1e-9
        assert "openvino" in record.versions and record.device
    assert manifest.backend_parity["openvino/fp32"].min_cosine > 0.99999


@needs_bf16
def test_auto_picks_openvino_bf16_on_a_bf16_cpu(checked_artifact: Path) -> None:
    record = read_manifest(checked_artifact).backend_parity["openvino/bf16"]
    assert record.passed, f"the tiny model's bf16 parity failed ({record.min_cosine}): auto would skip it"
    auto = load_artifact_embedder(checked_artifact, backend="auto", precision="auto")
    assert (auto.choice.backend, auto.choice.precision) == ("openvino", "bf16")
    assert "parity" in auto.choice.reason
    assert auto.model_hash == read_manifest(checked_artifact).model_sha256
    # An explicit fp32 keeps the reference runtime (what gaitlu eval and calibrate load by default).
    assert load_artifact_embedder(checked_artifact).choice.backend == "cpu"


def test_auto_without_a_parity_record_serves_onnxruntime(tiny_artifact: Path) -> None:
    auto = load_artifact_embedder(tiny_artifact, backend="auto", precision="auto")
    assert auto.choice.backend == "cpu" and auto.choice.precision == "fp32"
    assert auto.backend.name == "onnxruntime/CPUExecutionProvider"
    if openvino_available() and cpu_capability().bf16:
        assert "no parity record" in auto.choice.reason


@needs_openvino
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_an_explicit_pair_without_parity_is_refused(tiny_artifact: Path, precision: str) -> None:
    with pytest.raises(ConfigError, match=f"openvino/{precision} has no parity record.*gaitlu parity"):
        load_artifact_embedder(tiny_artifact, backend="openvino", precision=precision)


@needs_bf16
def test_a_failed_parity_is_refused_when_asked_for_and_skipped_by_auto(
    checked_artifact: Path, tmp_path: Path
) -> None:
    art = tmp_path / "artifact"
    shutil.copytree(checked_artifact, art)
    manifest = read_manifest(art)
    failed = manifest.backend_parity["openvino/bf16"].model_copy(
        update={"min_cosine": 0.9991, "passed": False}
    )
    write_manifest(manifest.model_copy(update={"backend_parity": {"openvino/bf16": failed}}), art)
    with pytest.raises(ConfigError, match=r"openvino/bf16 failed its parity check: min cosine 0\.999100"):
        load_artifact_embedder(art, backend="openvino", precision="bf16")
    with pytest.raises(ConfigError, match="failed its parity check"):
        load_artifact_embedder(art, backend="auto", precision="bf16")
    auto = load_artifact_embedder(art, backend="auto", precision="auto")
    assert auto.choice.backend == "cpu" and "failed its parity" in auto.choice.reason


def test_bf16_is_not_an_onnxruntime_precision(tiny_artifact: Path) -> None:
    with pytest.raises(ConfigError, match="precision 'bf16' runs on backend 'openvino'"):
        load_artifact_embedder(tiny_artifact, backend="cpu", precision="bf16")


@needs_openvino
def test_without_openvino_auto_falls_back_to_onnxruntime(checked_artifact: Path) -> None:
    """A child interpreter where `import openvino` fails (as on an install without the extra)."""
    script = (
        "import sys, json; sys.modules['openvino'] = None\n"  # import openvino -> ImportError
        "from runtime import load_artifact_embedder\n"
        "from gaitlu.errors import ConfigError\n"
        f"e = load_artifact_embedder({str(checked_artifact)!r}, backend='auto', precision='auto')\n"
        "try:\n"
        f"    load_artifact_embedder({str(checked_artifact)!r}, backend='openvino', precision='fp32')\n"
        "    refused = ''\n"
        "except ConfigError as exc:\n"
        "    refused = str(exc)\n"
        "print(json.dumps([e.backend.name, e.choice.precision, e.choice.reason, refused]))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr
    name, precision, reason, refused = json.loads(done.stdout.strip().splitlines()[-1])
    assert (name, precision) == ("onnxruntime/CPUExecutionProvider", "fp32")
    assert "OpenVINO is not installed" in reason
    assert "needs the openvino package" in refused


@needs_openvino
def test_parity_refuses_a_lower_threshold_and_an_unreadable_folder(
    checked_artifact: Path, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError, match="may be raised, not lowered"):
        record_parity(checked_artifact, tmp_path, threshold=0.99)
    assert run_cli(None, "parity", checked_artifact, "--sequences", tmp_path / "nothing").code == 2


@needs_openvino
def test_serve_with_backend_openvino_answers_embed_and_reports_it(
    checked_artifact: Path, tmp_path: Path
) -> None:
    precision = "bf16" if cpu_capability().bf16 else "fp32"
    if not read_manifest(checked_artifact).backend_parity[f"openvino/{precision}"].passed:
        pytest.skip(f"openvino/{precision} failed parity on the tiny model")
    server = ServerProcess(
        checked_artifact,
        tmp_path / "data",
        tmp_path / "server.log",
        args=("--backend", "openvino", "--precision", precision, "--threads", "1"),
    ).start()
    try:
        ready = httpx.get(f"{server.url}/readyz", timeout=30).json()
        assert ready["backend"] == f"openvino/CPU {precision}" and ready["precision"] == precision
        model = httpx.get(f"{server.url}/model", timeout=30).json()
        assert model["backend"] == ready["backend"] and "asked for" in model["backend_reason"]
        seq = walking_sequence(7, 24)
        response = httpx.post(f"{server.url}/embed", files={"files": ("a.npy", npy_bytes(seq))}, timeout=60)
        assert response.status_code == 200, response.text
        [item] = response.json()["data"]
        reference = load_artifact_embedder(checked_artifact, backend="cpu", threads=1).embed_flat([seq])[0]
        assert float(np.dot(item["embedding"], reference)) / 31 >= PARITY_THRESHOLD
    finally:
        server.stop()


@needs_openvino
def test_offline_enrolment_runs_on_openvino(checked_artifact: Path, walks: Path, tmp_path: Path) -> None:
    dataset = tmp_path / "people"
    for subject in ("001", "002"):
        save_sequence(walking_sequence(int(subject), 12), dataset / subject / "nm-01" / "090" / "090.pkl")
    result = run_cli(
        None,
        "enroll",
        dataset,
        "--gallery",
        "lab",
        "--create",
        "--offline",
        "--data-dir",
        tmp_path / "data",
        "--artifact",
        checked_artifact,
        "--backend",
        "openvino",
        "--precision",
        "fp32",
        "--json",
    )
    assert result.code == 0
    refused = run_cli(
        None,
        "enroll",
        dataset,
        "--gallery",
        "lab2",
        "--create",
        "--offline",
        "--data-dir",
        tmp_path / "data2",
        "--artifact",
        checked_artifact,
        "--backend",
        "openvino",
        "--precision",
        "fp16",
    )
    assert refused.code == 2


@needs_openvino
def test_parity_on_a_labelled_tree_records_the_rank1_change(tiny_artifact: Path, tmp_path: Path) -> None:
    """--protocol casia-b: every sequence of an OpenGait tree, and Rank-1 per probe condition."""
    tree = tmp_path / "tree"
    conditions = [f"nm-0{i}" for i in range(1, 7)] + ["bg-01", "bg-02", "cl-01", "cl-02"]
    for subject in range(3):
        for c, cond in enumerate(conditions):
            for view in ("000", "090"):
                walk = walking_sequence(subject, 8, walk=c)
                save_sequence(walk, tree / f"{subject:03d}" / cond / view / f"{view}.pkl")
    art = tmp_path / "artifact"
    shutil.copytree(tiny_artifact, art)
    result = run_cli(None, "parity", art, "--sequences", tree, "--protocol", "casia-b", "--precision", "fp32")
    assert result.code == 0
    record = read_manifest(art).backend_parity["openvino/fp32"]
    assert record.protocol == "casia-b" and record.sequences == 60
    assert record.rank1 is not None and record.rank1_reference is not None
    assert set(record.rank1) == {"NM", "BG", "CL"}
    assert record.rank1_max_change is not None and record.rank1_max_change <= 0.3 and record.passed
