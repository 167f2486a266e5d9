"""`gaitlu export`: the artifact's files and manifest, parity with PyTorch, int8/fp16, CLI."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from export.calibration import load_calibration, synthetic_calibration
from export.checks import check_parity, cpu_session, run_session
from export.errors import ExportError, ParityError
from export.pipeline import ExportOptions, export_artifact
from export.tensorrt import tensorrt_unavailable_reason
from gaitlu.embedding import EmbeddingLayout, part_cosines
from gaitlu.files import sha256_file
from gaitlu.manifest import read_manifest
from gaitlu.sequence import save_sequence
from tests.support.artifacts import SMALL_PARITY, tiny_model, write_checkpoint
from tests.support.cli import run_cli
from tests.support.walkers import walking_sequence


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.pt", tiny_model())


@pytest.fixture(scope="module")
def calibration_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("calibration")
    for i in range(8):
        save_sequence(walking_sequence(i, 12), folder / f"{i:03d}.pkl")
    return folder


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory, checkpoint: Path, calibration_dir: Path) -> Path:
    out = tmp_path_factory.mktemp("artifacts") / "tiny"
    options = ExportOptions(
        int8=True, fp16=True, calibration=calibration_dir, parity_cases=SMALL_PARITY, quality_subjects=2
    )
    export_artifact(checkpoint, out, options)
    return out


def test_artifact_files_and_manifest(artifact: Path, checkpoint: Path) -> None:
    manifest = read_manifest(artifact)
    assert manifest.model_sha256 == sha256_file(artifact / "model.onnx")
    assert manifest.model.config["channels"] == [8, 16, 32, 64]
    assert manifest.output.embedding_layout == EmbeddingLayout(parts=31, part_dim=64)
    assert manifest.input.shape == ["batch", "frames", 64, 44]
    assert manifest.metric == "ip"
    assert manifest.source.sha256 == sha256_file(checkpoint)
    assert manifest.source.step == 7
    assert manifest.source.config["trainer"] == {"seed": 0}
    assert [(c.batch, c.frames) for c in manifest.parity.cases] == list(SMALL_PARITY)
    assert manifest.parity.min_cosine >= 0.99999
    assert manifest.parity.max_abs_diff < 1e-4
    assert {"torch", "onnxruntime", "onnx"} <= set(manifest.versions)
    for name in ("int8", "fp16"):
        entry = manifest.variant(name)
        assert entry.sha256 == sha256_file(artifact / entry.file)
    # No staging folder is left beside the artifact.
    assert [p.name for p in artifact.parent.iterdir()] == ["tiny"]


def test_graph_is_valid_with_dynamic_batch_and_frames(artifact: Path) -> None:
    graph = onnx.load(str(artifact / "model.onnx"))
    onnx.checker.check_model(graph, full_check=True)
    (inp,) = graph.graph.input
    dims = inp.type.tensor_type.shape.dim
    assert inp.name == "silhouettes" and inp.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert [d.dim_param or d.dim_value for d in dims][2:] == [64, 44]
    assert dims[0].dim_param and dims[1].dim_param  # symbolic, not baked in
    assert [o.name for o in graph.graph.output] == ["embedding"]


@pytest.mark.parametrize(("batch", "frames"), [(1, 1), (3, 7), (5, 2)])
def test_onnx_matches_torch_at_any_batch_and_length(artifact: Path, batch: int, frames: int) -> None:
    seeds = range(batch * 100 + frames, batch * 101 + frames)
    sils = np.stack([walking_sequence(seed, frames) for seed in seeds]).astype(np.float32) / 255
    with torch.inference_mode():
        expected = tiny_model()(torch.from_numpy(sils)).numpy()  # (N, P, C)
    flat = cpu_session(artifact / "model.onnx").run(None, {"silhouettes": sils})[0]
    assert flat.shape == (batch, 31 * 64)
    np.testing.assert_allclose(flat.reshape(batch, 31, 64), expected, atol=1e-5)


def test_parity_check_fails_clearly_for_a_different_model(artifact: Path) -> None:
    other = tiny_model(seed=1)  # same architecture, other weights: what a wrong graph looks like
    with pytest.raises(ParityError, match="differs from PyTorch"):
        check_parity(other, cpu_session(artifact / "model.onnx"), "quick", cases=((1, 2),))


def test_failed_parity_writes_nothing(tmp_path: Path, checkpoint: Path) -> None:
    out = tmp_path / "exports" / "never"
    options = ExportOptions(parity_threshold=1.5, parity_cases=((1, 2),))  # no cosine reaches 1.5
    with pytest.raises(ParityError, match="nothing was written"):
        export_artifact(checkpoint, out, options)
    assert list((tmp_path / "exports").iterdir()) == []


def test_int8_is_static_qdq_and_close_to_fp32(artifact: Path, calibration_dir: Path) -> None:
    manifest = read_manifest(artifact)
    quality = manifest.variant("int8").quality
    assert quality is not None and quality.min_cosine >= 0.99
    ops = {node.op_type for node in onnx.load(str(artifact / "model.int8.onnx")).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    assert "ConvInteger" not in ops  # dynamic quantisation would be 1.6-6.5x slower on CPU
    # Re-measure independently on a fresh sequence.
    seq = walking_sequence(9, 16)[None].astype(np.float32) / 255
    fp32 = run_session(cpu_session(artifact / "model.onnx"), seq, 31)
    int8 = run_session(cpu_session(artifact / "model.int8.onnx"), seq, 31)
    assert part_cosines(int8, fp32).mean() >= 0.99


def test_fp16_keeps_float32_io_and_is_close(artifact: Path) -> None:
    quality = read_manifest(artifact).variant("fp16").quality
    assert quality is not None and quality.min_cosine >= 0.999
    graph = onnx.load(str(artifact / "model.fp16.onnx")).graph
    assert graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert any(t.data_type == onnx.TensorProto.FLOAT16 for t in graph.initializer)


def test_quality_records_rank1_on_synthetic_people(artifact: Path) -> None:
    quality = read_manifest(artifact).variant("int8").quality
    assert quality is not None
    assert quality.sequences == 4 + 2 * 4  # held-out real halves + 2 people x 4 walks
    assert 0 <= quality.rank1 <= 100 and quality.rank1_drop == quality.rank1_fp32 - quality.rank1


def test_calibration_sources(tmp_path: Path, calibration_dir: Path) -> None:
    real = load_calibration(calibration_dir)
    assert len(real) == 8 and all(s.dtype == np.float32 and s.shape == (12, 64, 44) for s in real)
    synthetic = synthetic_calibration(2)
    assert [s.shape for s in synthetic] == [(30, 64, 44)] * 2
    assert all(0 < s.mean() < 0.5 and s.max() == 1.0 for s in synthetic)  # a person, not an empty frame
    with pytest.raises(ExportError, match="no readable"):
        load_calibration(tmp_path)


def test_missing_checkpoint_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(capsys, "export", tmp_path / "missing.pt", "--out", tmp_path / "out")
    assert code == 2 and "checkpoint not found" in err


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="TensorRT is installed here")
def test_cli_end_to_end_with_trt_but_no_tensorrt(
    tmp_path: Path, checkpoint: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "cli-artifact"
    code, out_text, err = run_cli(capsys, "export", checkpoint, "--out", out, "--trt", "--max-frames", "300")
    assert code == 0 and "TensorRT is not installed" in err
    manifest = read_manifest(out)
    assert manifest.tensorrt is None and manifest.input.max_frames == 300
    assert f"sha256={manifest.model_sha256}" in out_text
    assert json.loads((out / "manifest.json").read_text())["parity"]["mode"] == "quick"


@pytest.mark.gpu
def test_trt_plan_export_and_runtime(tmp_path: Path, checkpoint: Path) -> None:
    reason = tensorrt_unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    from runtime import load_artifact_embedder

    out = tmp_path / "trt"
    options = ExportOptions(trt=True, max_batch=4, max_frames=64, parity_cases=SMALL_PARITY)
    info = export_artifact(checkpoint, out, options).manifest.tensorrt
    assert info is not None and info.min_cosine_vs_onnx >= 0.999
    plan = load_artifact_embedder(out, backend="trt-plan")
    cpu = load_artifact_embedder(out, backend="cpu")
    batch = [walking_sequence(i, 20) for i in range(3)]
    assert plan.model_hash == info.sha256 and info.file == "model.fp16.plan"
    assert (plan.embed(batch) * cpu.embed(batch)).sum(-1).min() >= 0.999
