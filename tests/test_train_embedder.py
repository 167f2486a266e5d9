"""`train.embedder`: the checkpoint embedder behind `gaitlu eval --checkpoint`."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch

from gaitlu.embedding import EmbeddingLayout
from gaitlu.errors import DataError, SequenceError
from train.checkpoint import atomic_save, build_checkpoint
from train.embedder import CheckpointEmbedder, load_checkpoint_embedder
from train.model import GaitSSB, ModelConfig

CPU = torch.device("cpu")
CONFIG = ModelConfig(channels=(4, 8, 8, 8), form="finetune")


@pytest.fixture(scope="module")
def model() -> GaitSSB:
    torch.manual_seed(0)
    net = GaitSSB(CONFIG)
    # Non-trivial BN statistics, so eval mode is observable.
    for module in net.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 1.5)
    return net.eval()


def seqs(*lengths: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [((rng.random((t, 64, 44)) < 0.4) * 255).astype(np.uint8) for t in lengths]


def direct(model: GaitSSB, seq: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(seq).float()[None] / 255)[0].numpy()  # (P, C)


def test_embed_equals_the_model_forward(model: GaitSSB) -> None:
    embedder = CheckpointEmbedder(model, "test", CPU)
    batch = seqs(3, 7)
    out = embedder.embed(batch)
    assert out.shape == (2, CONFIG.layout.parts, CONFIG.layout.part_dim) and out.dtype == np.float32
    for row, seq in zip(out, batch, strict=True):
        np.testing.assert_allclose(row, direct(model, seq), atol=1e-5)  # raw, as OpenGait's evaluator sees it


def test_result_does_not_depend_on_batching(model: GaitSSB) -> None:
    batch = seqs(2, 9, 5, 1, 9, 6, 2, seed=1)  # equal lengths share a call
    whole = CheckpointEmbedder(model, "test", CPU).embed(batch)
    one_by_one = np.concatenate([CheckpointEmbedder(model, "test", CPU).embed([s]) for s in batch])
    chunked = CheckpointEmbedder(model, "test", CPU, frame_budget=10).embed(batch)  # splits the batch
    np.testing.assert_allclose(whole, one_by_one, atol=1e-5)
    np.testing.assert_allclose(chunked, one_by_one, atol=1e-5)


def test_long_sequences_keep_their_first_frames(model: GaitSSB) -> None:
    (long_seq,) = seqs(12, seed=2)
    long_seq[:8] = 0  # blank within the limit, random silhouettes past it: they would change the max
    limited = CheckpointEmbedder(model, "test", CPU, max_frames=8)
    full = CheckpointEmbedder(model, "test", CPU)
    np.testing.assert_allclose(limited.embed([long_seq]), full.embed([long_seq[:8]]), atol=1e-6)
    assert not np.allclose(full.embed([long_seq]), full.embed([long_seq[:8]]), atol=1e-3)


@pytest.mark.parametrize(
    "bad",
    [
        np.zeros((3, 64, 64), np.uint8),  # aligned, not cut: needs to_model_frames
        np.zeros((3, 64, 44), np.float32),
        np.zeros((0, 64, 44), np.uint8),
        np.zeros((64, 44), np.uint8),
    ],
)
def test_inputs_that_are_not_model_frames_are_refused(model: GaitSSB, bad: np.ndarray) -> None:
    with pytest.raises(SequenceError, match="sequence 1"):
        CheckpointEmbedder(model, "test", CPU).embed([*seqs(2), bad])


def test_empty_batch(model: GaitSSB) -> None:
    assert CheckpointEmbedder(model, "test", CPU).embed([]).shape == (
        0,
        CONFIG.layout.parts,
        CONFIG.layout.part_dim,
    )


def test_load_checkpoint_embedder_from_a_checkpoint(tmp_path: Path, model: GaitSSB) -> None:
    path = atomic_save(build_checkpoint(model, {}, step=7), tmp_path / "ckpt.pt")
    embedder = load_checkpoint_embedder(path, device="cpu")
    assert embedder.model_hash == hashlib.sha256(path.read_bytes()).hexdigest()
    assert embedder.layout == EmbeddingLayout(parts=31, part_dim=8, normalisation="none")  # finetune: raw
    batch = seqs(4, 3, seed=3)
    np.testing.assert_allclose(embedder.embed(batch)[1], direct(model, batch[1]), atol=1e-5)


def test_load_checkpoint_embedder_refuses_a_missing_or_foreign_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found"):
        load_checkpoint_embedder(tmp_path / "nope.pt")
    foreign = tmp_path / "foreign.pt"
    torch.save({"model": {}}, foreign)
    with pytest.raises(DataError, match="import-opengait"):
        load_checkpoint_embedder(foreign)
