"""runtime: a torch-free Embedder over an export artifact."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from export.pipeline import ExportOptions, export_artifact
from gaitlu.errors import ConfigError, SequenceError
from gaitlu.manifest import ArtifactError, read_manifest
from runtime import load_artifact_embedder
from tests.support.artifacts import SMALL_PARITY, tiny_model, write_checkpoint
from tests.support.walkers import walking_sequence

MAX_FRAMES = 24


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("runtime")
    ckpt = write_checkpoint(root / "tiny.pt", tiny_model())
    options = ExportOptions(max_batch=8, max_frames=MAX_FRAMES, parity_cases=SMALL_PARITY)
    export_artifact(ckpt, root / "artifact", options)
    return root / "artifact"


@pytest.fixture(scope="module")
def embedder(artifact: Path):
    return load_artifact_embedder(artifact, backend="cpu", threads=1)


def sequences(lengths: list[int], seed: int = 0) -> list[np.ndarray]:
    return [walking_sequence(1000 * seed + i, t) for i, t in enumerate(lengths)]


def torch_embed(seq: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return tiny_model()(torch.from_numpy(seq[None].astype(np.float32) / 255))[0].numpy()  # (P, C)


def test_importing_the_runtime_does_not_import_torch() -> None:
    code = "import sys, runtime; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_embed_matches_torch_for_uint8_and_float(artifact: Path, embedder) -> None:
    batch = sequences([9, 4])
    out = embedder.embed(batch)
    assert out.shape == (2, 31, 64) and out.dtype == np.float32
    for seq, emb in zip(batch, out, strict=True):
        np.testing.assert_allclose(emb, torch_embed(seq), atol=1e-5)
    as_float = embedder.embed([s.astype(np.float32) / 255 for s in batch])
    np.testing.assert_allclose(as_float, out, atol=1e-6)
    assert embedder.model_hash == read_manifest(artifact).model_sha256


def test_flat_inner_product_over_parts_is_mean_part_cosine(embedder) -> None:
    a, b = embedder.embed_flat(sequences([6, 6], seed=3))
    parts = embedder.embed(sequences([6, 6], seed=3))
    mean_part_cosine = (parts[0] * parts[1]).sum(-1).mean()
    assert a @ b / embedder.layout.parts == pytest.approx(mean_part_cosine, abs=1e-6)


def test_split_batches_equal_one_call(artifact: Path, embedder) -> None:
    batch = sequences([5] * 7)
    small = load_artifact_embedder(artifact, backend="cpu", max_batch=2, warmup=False)
    # 2 sequences a call:
    budget = load_artifact_embedder(artifact, backend="cpu", max_call_frames=11, warmup=False)
    np.testing.assert_allclose(small.embed(batch), embedder.embed(batch), atol=1e-6)
    np.testing.assert_allclose(budget.embed(batch), embedder.embed(batch), atol=1e-6)


def test_mixed_lengths_equal_one_by_one(embedder) -> None:
    batch = sequences([3, 8, 3, 1, 8, 5])
    together = embedder.embed(batch)
    alone = np.concatenate([embedder.embed([seq]) for seq in batch])
    np.testing.assert_allclose(together, alone, atol=1e-6)


def test_long_sequences_keep_their_first_max_frames(embedder) -> None:
    (seq,) = sequences([MAX_FRAMES + 6])
    np.testing.assert_allclose(embedder.embed([seq]), embedder.embed([seq[:MAX_FRAMES]]), atol=1e-6)


def test_empty_batch(embedder) -> None:
    assert embedder.embed([]).shape == (0, 31, 64)


@pytest.mark.parametrize(
    ("seq", "message"),
    [
        (np.zeros((4, 64, 64), np.uint8), "model frames"),
        (np.zeros((0, 64, 44), np.uint8), "no frames"),
        (np.full((2, 64, 44), 2.0, np.float32), r"in \[0, 1\]"),
        (np.zeros((2, 64, 44), np.int64), "uint8"),
        ([[0]], "model frames"),
    ],
)
def test_bad_sequences_are_clear_errors(embedder, seq, message: str) -> None:
    with pytest.raises(SequenceError, match=message):
        embedder.embed([seq])


def copy_artifact(artifact: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(artifact, tmp_path / "copy"))


def test_tampered_model_is_refused(artifact: Path, tmp_path: Path) -> None:
    copy = copy_artifact(artifact, tmp_path)
    with open(copy / "model.onnx", "ab") as f:
        f.write(b"\0")
    with pytest.raises(ArtifactError, match="does not match its manifest"):
        load_artifact_embedder(copy, warmup=False)


def test_missing_folder_and_manifest(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="not found"):
        load_artifact_embedder(tmp_path / "nowhere")
    with pytest.raises(ArtifactError, match=r"no manifest\.json"):
        load_artifact_embedder(tmp_path)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda text: "{not json", "not readable JSON"),
        (lambda text: text.replace("gaitlu-artifact/1", "gaitlu-artifact/9"), "format"),
        (lambda text: text.replace('"metric": "ip"', '"metric": "l2"'), "metric"),
        (lambda text: text.replace('"opset"', '"surprise": 1, "opset"'), "surprise"),
    ],
)
def test_bad_manifest_is_a_clear_error(artifact: Path, tmp_path: Path, edit, message: str) -> None:
    copy = copy_artifact(artifact, tmp_path)
    manifest = copy / "manifest.json"
    manifest.write_text(edit(manifest.read_text()))
    with pytest.raises(ArtifactError, match=message):
        load_artifact_embedder(copy, warmup=False)


def test_missing_variant_and_unknown_backend(artifact: Path) -> None:
    with pytest.raises(ArtifactError, match="--int8"):
        load_artifact_embedder(artifact, precision="int8", warmup=False)
    with pytest.raises(ConfigError, match="unknown backend"):
        load_artifact_embedder(artifact, backend="tpu", warmup=False)
    for plan in ("trt-plan", "trt-engine"):  # trt-engine: the backend's older name, still accepted
        with pytest.raises(ConfigError, match="no TensorRT plan"):
            load_artifact_embedder(artifact, backend=plan, warmup=False)


@pytest.mark.skipif("CUDAExecutionProvider" in ort.get_available_providers(), reason="CUDA is available")
def test_asking_for_cuda_without_it_is_a_clear_error(artifact: Path) -> None:
    with pytest.raises(ConfigError, match="CUDAExecutionProvider"):
        load_artifact_embedder(artifact, backend="cuda", warmup=False)


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["cuda", "tensorrt"])
def test_gpu_backends_match_cpu(artifact: Path, embedder, backend: str) -> None:
    provider = {"cuda": "CUDAExecutionProvider", "tensorrt": "TensorrtExecutionProvider"}[backend]
    if provider not in ort.get_available_providers():
        pytest.skip(f"onnxruntime here has no {provider} (needs onnxruntime-gpu on a CUDA host)")
    gpu = load_artifact_embedder(artifact, backend=backend)
    batch = sequences([12, 12, 7])
    cosine = (gpu.embed(batch) * embedder.embed(batch)).sum(-1)  # per part, both normalised
    assert cosine.min() >= (0.999 if backend == "tensorrt" else 0.99999)  # TensorRT runs fp16
