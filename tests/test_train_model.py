"""The GaitSSB network: paper size, output contract, variable-length batches, both forms."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from train.model import GaitSSB, ModelConfig, count_parameters, temporal_max
from train.pretrain import load_pretrain_config

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
TINY = ModelConfig(channels=(8, 16, 32, 64))


def silhouettes(n: int, t: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, t, 64, 44, generator=g) > 0.6).float()  # (N, T, 64, 44) in {0, 1}


def trained_like(config: ModelConfig) -> GaitSSB:
    """A model in eval mode whose BN statistics are not the identity, so padding mistakes would show."""
    torch.manual_seed(0)
    model = GaitSSB(config)
    with torch.no_grad():
        model(silhouettes(4, 6, seed=1))  # train-mode pass updates the running statistics
    return model.eval()


def test_paper_config_has_the_paper_parameter_count() -> None:
    model = GaitSSB(load_pretrain_config(CONFIGS / "gaitssb_pretrain.yaml").model)
    total, backbone = count_parameters(model), count_parameters(model.backbone)
    print(f"GaitSSB paper config: {total:,} parameters ({backbone:,} in the backbone)")
    assert 37.0e6 < total < 38.0e6
    assert 4.8e6 < backbone < 5.0e6


def test_embedding_shape_and_per_part_unit_norm() -> None:
    model = trained_like(TINY)
    with torch.no_grad():
        out = model(silhouettes(3, 7))
    assert out.shape == (3, TINY.layout.parts, TINY.layout.part_dim) == (3, 31, 64)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out.norm(dim=-1), torch.ones(3, 31))


def test_padded_batch_with_lengths_equals_one_by_one() -> None:
    model = trained_like(TINY)
    lengths = [5, 9, 3]
    seqs = [silhouettes(1, t, seed=10 + i)[0] for i, t in enumerate(lengths)]
    padded = torch.ones(len(seqs), max(lengths), 64, 44)  # padding is bright on purpose: it must not count
    for i, seq in enumerate(seqs):
        padded[i, : len(seq)] = seq
    with torch.no_grad():
        batched = model(padded, torch.tensor(lengths))
        alone = torch.cat([model(seq[None]) for seq in seqs])
    torch.testing.assert_close(batched, alone, atol=1e-5, rtol=1e-5)


def test_temporal_max_ignores_frames_beyond_each_length() -> None:
    frames = torch.zeros(2, 4, 3, 2, 2)  # (N, T, C, H, W)
    frames[0, 3] = 100.0  # padding of sequence 0 (length 2) is the largest value
    frames[1, 2] = 7.0  # a valid frame of sequence 1 (length 4)
    pooled = temporal_max(frames, torch.tensor([2, 4]))
    assert pooled[0].max() == 0.0
    assert pooled[1].min() == 7.0
    assert temporal_max(frames, None)[0].max() == 100.0


def test_finetune_form_embeds_the_raw_output_of_a_normalised_head() -> None:
    model = GaitSSB(ModelConfig(channels=TINY.channels, form="finetune")).eval()
    assert model.predictor is None and model.head is not None
    assert GaitSSB(TINY).head is None
    assert (model.config.layout.normalisation, TINY.layout.normalisation) == ("none", "per-part-l2")
    x = silhouettes(2, 4)
    with torch.no_grad():
        out = model(x)
        z = F.normalize(model.projector(model.encode(x)), dim=1)  # (N, C, P)
        expected = model.head(z).transpose(1, 2)  # OpenGait's GaitSSB_Finetune embedding: not normalised
    torch.testing.assert_close(out, expected)
    assert not torch.allclose(out.norm(dim=-1), torch.ones(2, TINY.layout.parts), atol=1e-3)
    model.head.weight.data.mul_(5.0)  # the head normalises its weights: scaling them changes nothing
    with torch.no_grad():
        torch.testing.assert_close(model(x), out)


def test_rejects_input_without_a_time_axis() -> None:
    with pytest.raises(ValueError, match=r"\(N, T, H, W\)"):
        GaitSSB(TINY)(torch.zeros(2, 64, 44))
