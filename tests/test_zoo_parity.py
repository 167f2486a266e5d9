"""OpenGait's own embeddings, reproduced: every zoo fixture imports, and both our torch forward and the
exported ONNX artifact (onnxruntime, through the service runtime) match what OpenGait computed.

The references come from OpenGait's code at the commit the fixtures name, one sequence per forward
call. We embed the three 20-frame sequences as one batch (batching along the batch axis must be exact,
even for the models that convolve over time) and, through the runtime, mixed with a 7-frame sequence
(its rule: equal lengths share a call, nothing is padded or packed along time).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from export.pipeline import ExportOptions, export_artifact
from gaitlu.cli import main as gaitlu_main
from gaitlu.files import sha256_file
from gaitlu.manifest import read_manifest
from runtime import load_artifact_embedder
from tests.support.zoo import STEMS, cases, meta, parity, paths
from train.checkpoint import load_checkpoint
from train.zoo.registry import architecture_of

ARCHITECTURES = {
    "gaitbase_casiab_narrow": "gaitbase",
    "deepgaitv2_p3d_gait3d_narrow": "deepgaitv2",
    "deepgaitv2_2d_gait3d_narrow": "deepgaitv2",
    "gaitset_casiab_narrow": "gaitset",
    "gaitgl_casiab_narrow": "gaitgl",
}
# OpenGait keys the embedding never reads: the BNNecks' classifier and BatchNorm, GaitGL's Head1.
TRAINING_ONLY = {
    "gaitbase_casiab_narrow": 6,
    "deepgaitv2_p3d_gait3d_narrow": 6,
    "deepgaitv2_2d_gait3d_narrow": 6,
    "gaitset_casiab_narrow": 0,
    "gaitgl_casiab_narrow": 1,
}


def import_fixture(stem: str, out: Path) -> Path:
    """`gaitlu train import-opengait CKPT --config YAML --out OUT`, the real entry point."""
    checkpoint, config = paths(stem)
    try:
        gaitlu_main(["train", "import-opengait", str(checkpoint), "--config", str(config), "--out", str(out)])
    except SystemExit as exc:
        assert exc.code in (0, None), f"import-opengait exited with {exc.code}"
    return out


@pytest.fixture(scope="module", params=STEMS)
def imported(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    stem = request.param
    return stem, import_fixture(stem, tmp_path_factory.mktemp(stem) / "imported.pt")


def test_torch_forward_matches_opengait(imported: tuple[str, Path]) -> None:
    stem, path = imported
    torch.set_num_threads(1)  # as OpenGait computed the references
    model, ckpt = load_checkpoint(path)
    assert architecture_of(model).name == ARCHITECTURES[stem]
    for _, sils, ref in cases(stem):
        with torch.inference_mode():
            ours = model(torch.from_numpy(sils)).numpy()  # (N, P, C): all N sequences in one call
        parity(ours, ref)

    record = ckpt["config"]["imported"]
    source = meta()["models"][stem]
    assert record["model"] == source["model_class"]
    assert record["sha256"] == meta()["files"][f"{stem}.pt"]["sha256"]
    assert record["config_sha256"] == meta()["files"][f"{stem}_model_cfg.yaml"]["sha256"]
    assert record["model_cfg"] == source["model_cfg"]
    assert len(record["dropped_keys"]) == TRAINING_ONLY[stem]
    assert ckpt["config"]["evaluation"]["metric"] == source["evaluator"]["metric"] == "euc"


def test_onnx_artifact_matches_opengait_in_mixed_length_batches(
    imported: tuple[str, Path], tmp_path: Path
) -> None:
    stem, path = imported
    artifact = tmp_path / "artifact"
    export_artifact(path, artifact, ExportOptions(max_batch=4, max_frames=64, parity_cases=((2, 5),)))
    manifest = read_manifest(artifact)
    assert manifest.model.name == ARCHITECTURES[stem]
    assert manifest.output.normalisation == "none" and manifest.indexing.normalisation == "per-part-l2"
    assert manifest.evaluation is not None and manifest.evaluation.metric == "euc"
    assert manifest.source.sha256 == sha256_file(path)

    (_, n3, ref3), (_, n1, ref1) = cases(stem)
    embedder = load_artifact_embedder(artifact, backend="cpu", threads=1)
    batch = [n3[0], n1[0], n3[1], n3[2]]  # lengths 20, 7, 20, 20: two calls
    out = embedder.embed_output(batch)  # (4, P, C), the artifact's own output
    parity(out[[0, 2, 3]], ref3)
    parity(out[[1]], ref1)

    served = embedder.embed(batch)  # the recorded indexing step: per-part L2 of the same vectors
    np.testing.assert_allclose(np.linalg.norm(served, axis=-1), 1.0, atol=1e-5)
    np.testing.assert_allclose(
        served * np.linalg.norm(out, axis=-1, keepdims=True), out, rtol=1e-5, atol=1e-5
    )
