"""Training speed on this CPU: fp32 against bf16 autocast, per architecture, side by side in one run.

    python benchmarks/training.py --quick      # <= 60 s: 4 clips x 8 frames per step
    nice -n 10 python benchmarks/training.py --write-results

One training step as `gaitlu train supervised` takes it (forward, triplet + BNNeck cross-entropy, backward,
SGD) on a batch of random silhouettes, for the network of each configs/supervised_*.yaml and of the
default's recipe (configs/casiab_default.yaml), in fp32 and under bf16 autocast, with and without
channels_last. Torch uses 2 threads. Each figure is the median of the measured steps after one warm-up
step. The last line holds steps/s per architecture and precision, and the bf16 speed-ups.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from results_md import write_section

from train.config import load_config
from train.losses import batch_all_triplet, part_cross_entropy
from train.run import cpu_has_bf16, to_channels_last
from train.supervised import BNNeck, SupervisedConfig, initial_network

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
MODELS = {
    "default (tiny GaitSSB)": "casiab_default.yaml",
    "GaitBase": "supervised_gaitbase.yaml",
    "DeepGaitV2 (P3D)": "supervised_deepgaitv2.yaml",
    "GaitSet": "supervised_gaitset.yaml",
    "GaitGL": "supervised_gaitgl.yaml",
    "GaitSSB": "supervised_gaitssb.yaml",
}
MODES = {"fp32": (False, False), "bf16": (True, False), "bf16 + channels_last": (True, True)}


def step_seconds(
    config: SupervisedConfig, clips: int, frames: int, bf16: bool, channels_last: bool, steps: int
) -> float:
    """Median seconds of one training step (after a warm-up step)."""
    torch.manual_seed(0)
    model = initial_network(config, None).train()
    if channels_last:
        model = to_channels_last(model)
    layout = model.config.layout
    head = BNNeck(layout.parts, layout.part_dim, 8, config.loss.cosine)
    params = list(model.parameters()) + list(head.parameters())
    optimizer = torch.optim.SGD(params, lr=0.01, momentum=0.9)
    sils = (torch.rand(clips, frames, 64, 44) > 0.5).float()
    labels = torch.arange(clips) % 2  # two labels, each equally often
    times = []
    for i in range(steps + 1):
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            emb = model(sils).transpose(1, 2)  # (N, C, P)
            logits = head(emb)
        loss = batch_all_triplet(emb, labels, 0.2)[0] + part_cross_entropy(logits, labels % 8)[0]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if i:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="4 clips x 8 frames, one measured step, <= 60 s")
    parser.add_argument("--write-results", action="store_true", help="update RESULTS.md")
    args = parser.parse_args()
    torch.set_num_threads(2)
    if not cpu_has_bf16():
        print("this CPU has no native bf16 (AVX512-BF16 / AMX): bf16 would be emulated", file=sys.stderr)
    clips, frames, steps = (4, 8, 1) if args.quick else (16, 16, 3)
    rows, headline = [], []
    for label, name in MODELS.items():
        config = load_config(CONFIGS / name, SupervisedConfig)
        seconds = {mode: step_seconds(config, clips, frames, *flags, steps) for mode, flags in MODES.items()}
        fps = {mode: clips * frames / s for mode, s in seconds.items()}
        speedup = seconds["fp32"] / seconds["bf16"]
        rows.append(
            f"| {label} | "
            + " | ".join(f"{1 / s:.2f} ({fps[m]:.0f})" for m, s in seconds.items())
            + f" | {speedup:.1f}x | {seconds['fp32'] / seconds['bf16 + channels_last']:.1f}x |"
        )
        key = name.removesuffix(".yaml").removeprefix("supervised_")
        headline += [f"{key}_fp32_steps_s={1 / seconds['fp32']:.3f}", f"{key}_bf16_speedup={speedup:.2f}"]
        print(rows[-1], flush=True)
    table = (
        f"Steps/s (frames/s) of one training step of {clips} clips x {frames} frames, 2 threads:\n\n"
        "| network | fp32 | bf16 | bf16 + channels_last | bf16 speed-up | bf16 + channels_last speed-up |\n"
        "|---|---|---|---|---|---|\n" + "\n".join(rows)
    )
    print(table)
    if args.write_results and not args.quick:
        write_section(
            "## Training speed on the CPU: fp32 and bf16\n\n" + table + "\n\n" + " ".join(headline) + "\n"
        )
    print(" ".join(headline))


if __name__ == "__main__":
    main()
