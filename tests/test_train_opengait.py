"""Importing OpenGait GaitSSB checkpoints: key mapping, shapes, refusals, numerical equivalence, and the
fine-tuned model's export giving OpenGait's raw embedding.

The fabricated checkpoints use OpenGait's key names, shapes and layouts (random weights). The imported
model must reproduce a reference forward written here with plain functional ops on the OpenGait state
dict, so the test does not trust our model classes to define what OpenGait computes.
"""

from __future__ import annotations

import collections
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from export.pipeline import ExportOptions, export_artifact
from gaitlu.errors import DataError
from gaitlu.manifest import read_manifest
from runtime import load_artifact_embedder
from tests.support.cli import run_cli
from train.checkpoint import load_checkpoint
from train.opengait import convert_state_dict, import_opengait

BINS = (16, 8, 4, 2, 1)
PARTS = sum(BINS)
STRIDES = (1, 2, 2, 1)
BB = "Backbone.forward_block."


def _bn(state: dict, prefix: str, n: int, g: torch.Generator) -> None:
    state[prefix + "weight"] = 1 + 0.1 * torch.randn(n, generator=g)
    state[prefix + "bias"] = 0.1 * torch.randn(n, generator=g)
    state[prefix + "running_mean"] = 0.1 * torch.randn(n, generator=g)
    state[prefix + "running_var"] = 0.5 + torch.rand(n, generator=g)
    state[prefix + "num_batches_tracked"] = torch.tensor(1000)


def fabricate(channels: tuple[int, ...], form: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """An OpenGait GaitSSB_Pretrain / GaitSSB_Finetune state dict (keys, shapes, layouts)."""
    g = torch.Generator().manual_seed(seed)
    state: dict[str, torch.Tensor] = {}

    def conv(out_ch: int, in_ch: int, k: int) -> torch.Tensor:
        return torch.randn(out_ch, in_ch, k, k, generator=g) * (2 / (in_ch * k * k)) ** 0.5

    state[BB + "conv1.conv.weight"] = conv(channels[0], 1, 3)
    _bn(state, BB + "bn1.", channels[0], g)
    in_ch = channels[0]
    for i, (out_ch, stride) in enumerate(zip(channels, STRIDES, strict=True), start=1):
        block = f"{BB}layer{i}.0."
        state[block + "conv1.weight"] = conv(out_ch, in_ch, 3)
        _bn(state, block + "bn1.", out_ch, g)
        state[block + "conv2.weight"] = conv(out_ch, out_ch, 3)
        _bn(state, block + "bn2.", out_ch, g)
        if stride != 1 or in_ch != out_ch:
            state[block + "downsample.0.weight"] = conv(out_ch, in_ch, 1)
            _bn(state, block + "downsample.1.", out_ch, g)
        in_ch = out_ch
    c = channels[-1]

    def fc() -> torch.Tensor:
        return torch.randn(PARTS, c, c, generator=g) / c**0.5

    heads = ["projector"] + (["predictor"] if form == "pretrain" else [])
    for head in heads:
        state[f"{head}.0.fc_bin"] = fc()
        _bn(state, f"{head}.1.bn1d.", c * PARTS, g)
        state[f"{head}.3.fc_bin"] = fc()
    _bn(state, "projector.4.bn1d.", c * PARTS, g)
    if form == "finetune":
        state["head0.fc_bin"] = fc()
    return state


def save_opengait(path: Path, state: dict[str, torch.Tensor], iteration: int = 150_000) -> Path:
    """As OpenGait's BaseModel.save_ckpt: model, optimizer, scheduler and iteration in one torch.save."""
    params = [torch.nn.Parameter(torch.zeros(2))]
    optimizer = torch.optim.SGD(params, lr=0.05, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=[80_000, 120_000])
    ckpt = {
        "model": collections.OrderedDict(state),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "iteration": iteration,
    }
    torch.save(ckpt, path)
    return path


# --- the reference: OpenGait's GaitSSB forward in functional ops on the OpenGait state dict -------------


def _ref_bn(x: torch.Tensor, s: dict, prefix: str) -> torch.Tensor:
    return F.batch_norm(
        x,
        s[prefix + "running_mean"],
        s[prefix + "running_var"],
        s[prefix + "weight"],
        s[prefix + "bias"],
        training=False,
        eps=1e-5,
    )


def _ref_backbone(x: torch.Tensor, s: dict) -> torch.Tensor:
    x = F.relu(_ref_bn(F.conv2d(x, s[BB + "conv1.conv.weight"], padding=1), s, BB + "bn1."))
    for i, stride in enumerate(STRIDES, start=1):
        b = f"{BB}layer{i}.0."
        out = F.relu(_ref_bn(F.conv2d(x, s[b + "conv1.weight"], stride=stride, padding=1), s, b + "bn1."))
        out = _ref_bn(F.conv2d(out, s[b + "conv2.weight"], padding=1), s, b + "bn2.")
        if b + "downsample.0.weight" in s:
            x = _ref_bn(F.conv2d(x, s[b + "downsample.0.weight"], stride=stride), s, b + "downsample.1.")
        x = F.relu(out + x)
    return x


def _ref_fc(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """x (n, c, p) @ fc_bin (p, c, out) per part -> (n, out, p)."""
    return torch.stack([x[:, :, p] @ w[p] for p in range(w.shape[0])], dim=-1)


def _ref_bn1d(x: torch.Tensor, s: dict, prefix: str) -> torch.Tensor:
    n, c, p = x.shape
    return _ref_bn(x.reshape(n, c * p), s, prefix).reshape(n, c, p)  # channel-major: c * P + p


def reference_embedding(s: dict, sils: torch.Tensor) -> torch.Tensor:
    """OpenGait's eval-mode `inference_feat['embeddings']` of each sequence (N, T, 64, 44) -> (N, C, P):
    GaitSSB_Finetune's raw head output, GaitSSB_Pretrain's per-part normalised predictor output."""
    feats = []
    for seq in sils:
        frames = _ref_backbone(seq[:, None], s)  # (T, C, h, w)
        pooled = frames.max(dim=0).values  # (C, h, w): temporal max
        strips = []
        for b in BINS:
            z = pooled.reshape(pooled.shape[0], b, -1)
            strips.append(z.mean(-1) + z.max(-1).values)
        feats.append(torch.cat(strips, dim=-1))  # (C, P)
    x = torch.stack(feats)  # (N, C, P)
    x = _ref_fc(
        F.relu(_ref_bn1d(_ref_fc(x, s["projector.0.fc_bin"]), s, "projector.1.bn1d.")),
        s["projector.3.fc_bin"],
    )
    x = _ref_bn1d(x, s, "projector.4.bn1d.")
    if "head0.fc_bin" in s:
        return _ref_fc(F.normalize(x, dim=1), F.normalize(s["head0.fc_bin"], dim=1))
    x = _ref_fc(
        F.relu(_ref_bn1d(_ref_fc(x, s["predictor.0.fc_bin"]), s, "predictor.1.bn1d.")),
        s["predictor.3.fc_bin"],
    )
    return F.normalize(x, dim=1)


def sils(n: int = 2, t: int = 5, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, t, 64, 44, generator=g) > 0.6).float()


# --- tests ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("form", ["pretrain", "finetune"])
def test_imported_model_matches_the_opengait_reference(tmp_path: Path, form: str) -> None:
    state = fabricate((8, 16, 32, 24), form)
    src = save_opengait(tmp_path / "GaitSSB-150000.pt", state)
    import_opengait(src, tmp_path / "imported.pt")
    model, ckpt = load_checkpoint(tmp_path / "imported.pt")
    assert model.config.form == form
    assert model.config.channels == (8, 16, 32, 24)
    assert ckpt["config"]["imported"]["iteration"] == 150_000

    x = sils()
    with torch.no_grad():
        ours = model(x)  # (N, P, C): OpenGait's embedding, raw for the fine-tuned form
    expected = reference_embedding(state, x).transpose(1, 2)
    torch.testing.assert_close(ours, expected, atol=2e-5, rtol=1e-4)


@pytest.mark.slow
def test_paper_width_checkpoint_with_ddp_prefixes(tmp_path: Path) -> None:
    state = fabricate((64, 128, 256, 512), "finetune")
    ddp = {f"module.{k}": v for k, v in state.items()}  # saved from a DDP-wrapped model
    config, converted = convert_state_dict(ddp)
    assert config.channels == (64, 128, 256, 512) and config.form == "finetune"
    assert converted["projector.1.bn.running_mean"].shape == (512 * PARTS,)
    torch.testing.assert_close(
        converted["projector.1.bn.running_mean"], state["projector.1.bn1d.running_mean"]
    )
    torch.testing.assert_close(
        converted["backbone.layers.3.conv2.weight"], state[BB + "layer4.0.conv2.weight"]
    )
    assert "backbone.layers.0.downsample.0.weight" not in converted  # 64 -> 64, stride 1: no shortcut conv

    src = save_opengait(tmp_path / "paper.pt", ddp)
    import_opengait(src, tmp_path / "paper-imported.pt")
    model, _ = load_checkpoint(tmp_path / "paper-imported.pt")
    x = sils(n=1, t=2)
    with torch.no_grad():
        ours = model(x)
    expected = reference_embedding(state, x).transpose(1, 2)
    torch.testing.assert_close(ours, expected, atol=2e-5, rtol=1e-4)


def test_unknown_and_missing_keys_are_listed() -> None:
    state = fabricate((8, 16, 32, 24), "pretrain")
    del state["projector.4.bn1d.running_var"]
    state[BB + "layer2.1.conv1.weight"] = torch.zeros(16, 16, 3, 3)  # a second block: not GaitSSB
    with pytest.raises(DataError) as err:
        convert_state_dict(state)
    message = str(err.value)
    assert "unknown keys: ['Backbone.forward_block.layer2.1.conv1.weight']" in message
    assert "missing keys: ['projector.4.bn1d.running_var']" in message


def test_shape_mismatch_is_listed_with_both_shapes() -> None:
    state = fabricate((8, 16, 32, 24), "finetune")
    state["head0.fc_bin"] = torch.zeros(16, 24, 24)  # 16 parts: another pyramid than 16/8/4/2/1
    with pytest.raises(
        DataError, match=r"head0\.fc_bin: \(16, 24, 24\) in the file, \(31, 24, 24\) expected"
    ):
        convert_state_dict(state)


def test_forced_form_that_does_not_fit_is_refused() -> None:
    state = fabricate((8, 16, 32, 24), "pretrain")
    with pytest.raises(
        DataError, match=r"unknown keys: \[.*'predictor\.0\.fc_bin'.*missing keys: \['head0\.fc_bin'\]"
    ):
        convert_state_dict(state, form="finetune")


def test_cli_import_and_refusal(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = save_opengait(tmp_path / "og.pt", fabricate((8, 16, 32, 24), "finetune"))
    out = tmp_path / "ours.pt"
    code, _, err = run_cli(capsys, "train", "import-opengait", str(src), "--out", str(out))
    assert code == 0, err
    model, _ = load_checkpoint(out)
    assert model.config.form == "finetune"

    broken = fabricate((8, 16, 32, 24), "finetune")
    broken["extra.weight"] = torch.zeros(1)
    bad = save_opengait(tmp_path / "bad.pt", broken)
    code, _, err = run_cli(capsys, "train", "import-opengait", str(bad), "--out", str(tmp_path / "no.pt"))
    assert code == 2 and "extra.weight" in err and "Traceback" not in err
    assert not (tmp_path / "no.pt").exists()
    code, _, err = run_cli(capsys, "train", "import-opengait", str(src), "--out", str(out), "--form", "other")
    assert code == 2 and "form must be one of" in err


def test_a_file_that_needs_unpickling_is_refused_without_running_it(tmp_path: Path) -> None:
    class Payload:
        def __reduce__(self):  # would run on plain unpickling
            return (Path.touch, (tmp_path / "pwned",))

    src = tmp_path / "evil.pt"
    torch.save({"model": Payload()}, src)
    with pytest.raises(DataError, match="weights-only"):
        import_opengait(src, tmp_path / "out.pt")
    assert not (tmp_path / "pwned").exists()


def test_finetuned_export_gives_opengaits_raw_embedding(tmp_path: Path) -> None:
    state = fabricate((8, 16, 32, 24), "finetune")
    import_opengait(save_opengait(tmp_path / "ft.pt", state), tmp_path / "ft-imported.pt")
    options = ExportOptions(max_batch=4, max_frames=32, parity_cases=((2, 5),))
    export_artifact(tmp_path / "ft-imported.pt", tmp_path / "artifact", options)
    manifest = read_manifest(tmp_path / "artifact")
    assert manifest.model.name == "gaitssb" and manifest.model.config["form"] == "finetune"
    assert manifest.output.normalisation == "none" and manifest.indexing.normalisation == "per-part-l2"

    x = sils(n=3, t=6)
    frames = list((x.numpy() * 255).astype(np.uint8))  # binary, so /255 in the runtime gives x back
    embedder = load_artifact_embedder(tmp_path / "artifact", backend="cpu", threads=1)
    out = embedder.embed_output(frames)  # (N, P, C): the artifact's output
    expected = reference_embedding(state, x).transpose(1, 2).numpy()  # OpenGait's raw head0 output
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=2e-5)
    assert not np.allclose(np.linalg.norm(out, axis=-1), 1.0, atol=0.05)
    served = embedder.embed(frames)  # the service's vectors: the recorded per-part L2 step on top
    np.testing.assert_allclose(served, expected / np.linalg.norm(expected, axis=-1, keepdims=True), atol=1e-5)
