"""Embedding throughput and latency: torch eager vs onnxruntime CPU fp32 vs static int8.

For the tiny (channels 8-64) and the paper-size (64-512) GaitSSB with random weights, the benchmark
exports the graph exactly as `gaitlu export` does (export.graph, export.precision: int8 calibrated on
synthetic walks), then times one call per backend, the backends taking turns on the same input, and
keeps the best of the repeats (other jobs share this machine's 2 cores: the minimum is the least
disturbed figure; ratios come from the same rounds). int8 quality versus fp32: cosine over, and
leave-one-out Rank-1 on, a labelled synthetic set (export.checks.variant_quality).

FLOPs are counted by forward hooks on every Conv2d (2 x output elements x in-channels x kernel area)
and per-part FC (2 x N x P x in x out); BatchNorm, ReLU, pooling and normalisation are left out (<1 %).

A GPU section (torch fp32 / fp16 / bf16 autocast, torch.compile with CUDA graphs, onnxruntime CUDA and
TensorRT providers) runs only where CUDA is available.

    python benchmarks/embedding.py --quick   # tiny at T=30, paper-size batch 1/8 at T=30; <= 60 s
    python benchmarks/embedding.py           # batch 1/8/32 x T 30/92 for both models; minutes

The last line holds the headline figures as name=value pairs (paper-size model, batch 8, T=30).
"""

from __future__ import annotations

import argparse
import logging
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from results_md import write_section

from export import calibration, checks, graph, precision
from train.model import GaitSSB, ModelConfig, SeparateFC

logger = logging.getLogger(__name__)

THREADS = 2
MODELS = {"tiny": ModelConfig(channels=(8, 16, 32, 64)), "paper": ModelConfig()}
FULL_GRID = tuple((b, t) for t in (30, 92) for b in (1, 8, 32))
QUICK_GRID = {"tiny": ((1, 30), (8, 30), (32, 30)), "paper": ((1, 30), (8, 30))}
HEADLINE = ("paper", 8, 30)


def count_flops(model: GaitSSB, frames: int) -> tuple[float, float]:
    """(backbone FLOPs per frame, FLOPs per sequence of `frames` frames) from one traced forward."""
    totals = {"conv": 0, "fc": 0}

    def conv_hook(module: nn.Conv2d, _inputs: tuple, out: torch.Tensor) -> None:
        kh, kw = module.kernel_size
        totals["conv"] += 2 * out.numel() * (module.in_channels // module.groups) * kh * kw

    def fc_hook(module: SeparateFC, inputs: tuple, _out: torch.Tensor) -> None:
        n, _, parts = inputs[0].shape  # (N, in, P)
        totals["fc"] += 2 * n * parts * module.weight.shape[1] * module.weight.shape[2]

    hooks = [
        m.register_forward_hook(conv_hook if isinstance(m, nn.Conv2d) else fc_hook)
        for m in model.modules()
        if isinstance(m, nn.Conv2d | SeparateFC)
    ]
    with torch.inference_mode():
        model(torch.zeros(1, frames, 64, 44))
    for hook in hooks:
        hook.remove()
    return totals["conv"] / frames, float(totals["conv"] + totals["fc"])


def session(path: Path) -> ort.InferenceSession:
    return checks.cpu_session(path, threads=THREADS)


def best_times(runners: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Seconds per call, best of `repeats`, the runners taking turns (after one warm-up call each)."""
    for run in runners.values():
        run()
    times: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(repeats):
        for name, run in runners.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    return {name: min(values) for name, values in times.items()}


def bench_model(name: str, grid: tuple[tuple[int, int], ...], quick: bool, folder: Path) -> dict:
    torch.manual_seed(0)
    model = GaitSSB(MODELS[name]).eval()
    fp32_path, int8_path = folder / f"{name}.onnx", folder / f"{name}.int8.onnx"
    started = time.perf_counter()
    graph.export_onnx(model, fp32_path, opset=18, max_batch=64, max_frames=720)
    calib = calibration.synthetic_calibration(4 if quick else calibration.CALIBRATION_SEQUENCES)
    precision.quantize_int8(fp32_path, int8_path, calib)
    export_s = time.perf_counter() - started
    fp32, int8 = session(fp32_path), session(int8_path)
    labelled = calibration.synthetic_labelled(3 if quick else 8)
    quality = checks.variant_quality(fp32, int8, [], labelled, model.config.parts, note="")
    per_frame, per_seq_92 = count_flops(model, 92)

    rows = []
    rng = np.random.default_rng(0)
    for batch, frames in grid:
        sils = checks.noise_silhouettes(rng, batch, frames)  # speed does not depend on content
        tensor = torch.from_numpy(sils)

        def torch_eager(tensor: torch.Tensor = tensor) -> object:
            with torch.inference_mode():
                return model(tensor)

        runners = {
            "torch": torch_eager,
            "ort_fp32": lambda sils=sils: fp32.run(None, {graph.INPUT_NAME: sils}),
            "ort_int8": lambda sils=sils: int8.run(None, {graph.INPUT_NAME: sils}),
        }
        repeats = (1 if quick else 2) if name == "paper" else 5  # a paper-size b8 torch call is ~10 s here
        rows.append({"batch": batch, "frames": frames, **best_times(runners, repeats)})
        logger.info("%s b%d T%d: %s", name, batch, frames, rows[-1])
    return {
        "rows": rows,
        "quality": quality,
        "export_s": export_s,
        "gflop_per_frame": per_frame / 1e9,
        "gflop_per_seq_92": per_seq_92 / 1e9,
    }


def gpu_section() -> list[str]:
    """torch fp32 / fp16 / bf16 (+ torch.compile with CUDA graphs) and onnxruntime GPU providers."""
    if not torch.cuda.is_available():
        return [
            "No CUDA device here: the GPU section (torch fp32/fp16/bf16, torch.compile with CUDA graphs,",
            "onnxruntime CUDA/TensorRT providers) was not run.",
        ]
    lines = [f"GPU: {torch.cuda.get_device_name()}, paper-size model, batch 32 x 92 frames, ms per call:"]
    model = GaitSSB(ModelConfig()).eval().cuda()
    sils = torch.rand(32, 92, 64, 44, device="cuda").round()

    def timed(run: Callable[[], object]) -> float:
        for _ in range(3):
            run()
        torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(10):
            run()
        torch.cuda.synchronize()
        return (time.perf_counter() - start) / 10 * 1e3

    compiled = torch.compile(model, mode="reduce-overhead")  # CUDA graphs
    for label, dtype, net in (
        ("torch fp32", None, model),
        ("torch fp16 autocast", torch.float16, model),
        ("torch bf16 autocast", torch.bfloat16, model),
        ("torch.compile fp16 + CUDA graphs", torch.float16, compiled),
    ):

        def run(net: nn.Module = net, dtype: torch.dtype | None = dtype) -> object:
            autocast = torch.autocast("cuda", dtype=dtype or torch.float32, enabled=dtype is not None)
            with torch.inference_mode(), autocast:
                return net(sils)

        lines.append(f"- {label}: {timed(run):.1f}")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "paper.onnx"
        graph.export_onnx(model.cpu(), path, opset=18, max_batch=64, max_frames=720)
        host = sils.cpu().numpy()
        for provider in ("CUDAExecutionProvider", "TensorrtExecutionProvider"):
            if provider in ort.get_available_providers():
                gpu = ort.InferenceSession(str(path), providers=[provider, "CPUExecutionProvider"])
                ms = timed(lambda gpu=gpu: gpu.run(None, {graph.INPUT_NAME: host}))
                lines.append(f"- onnxruntime {provider} (host input): {ms:.1f}")
    return lines


def report(results: dict[str, dict], gpu_lines: list[str], quick: bool) -> tuple[str, str]:
    """(markdown section body, headline name=value line)."""
    lines = [
        f"`python benchmarks/embedding.py{' --quick' if quick else ''}` on a {THREADS}-core x86-64 CPU "
        f"({platform.machine()}), no GPU (best of repeats, backends taking turns). "
        f"torch {torch.__version__}, onnxruntime {ort.__version__}, {THREADS} threads each; random weights.",
        "",
        "| model | batch | frames | torch eager seq/s | ORT fp32 seq/s | ORT int8 seq/s | fp32 vs torch | "
        "int8 vs fp32 | ORT fp32 latency ms |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, res in results.items():
        for r in res["rows"]:
            b = r["batch"]
            lines.append(
                f"| {name} | {b} | {r['frames']} | {b / r['torch']:.1f} | {b / r['ort_fp32']:.1f} | "
                f"{b / r['ort_int8']:.1f} | {r['torch'] / r['ort_fp32']:.2f}x | "
                f"{r['ort_fp32'] / r['ort_int8']:.2f}x | {r['ort_fp32'] * 1e3:.0f} |"
            )
    lines.append("")
    for name, res in results.items():
        q = res["quality"]
        lines.append(
            f"- {name}: backbone {res['gflop_per_frame']:.3f} GFLOP per 64x44 frame, "
            f"{res['gflop_per_seq_92']:.1f} GFLOP per 92-frame sequence (heads included); "
            f"int8 vs fp32 over {q.sequences} synthetic walks: min cosine {q.min_cosine:.5f} "
            f"(worst part {q.min_part_cosine:.4f}), Rank-1 {q.rank1_fp32:.1f} -> {q.rank1:.1f} "
            f"(drop {q.rank1_drop:.1f} points); export + int8 quantisation {res['export_s']:.0f} s."
        )
    lines += ["", *gpu_lines]
    name, batch, frames = HEADLINE
    head = next(r for r in results[name]["rows"] if (r["batch"], r["frames"]) == (batch, frames))
    q = results[name]["quality"]
    headline = (
        f"ort_vs_torch_b8={head['torch'] / head['ort_fp32']:.2f} "
        f"int8_speedup={head['ort_fp32'] / head['ort_int8']:.2f} "
        f"int8_cosine={q.min_cosine:.5f} int8_rank1_drop={q.rank1_drop:.1f} "
        f"ort_fp32_seq_per_s_b8={batch / head['ort_fp32']:.2f} "
        f"gflop_per_frame={results[name]['gflop_per_frame']:.3f} "
        f"gflop_per_seq_92={results[name]['gflop_per_seq_92']:.1f}"
    )
    return "\n".join(lines), headline


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a subset that runs in about a minute")
    parser.add_argument("--write-results", action="store_true", help="update benchmarks/RESULTS.md")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("onnx_ir").setLevel(logging.WARNING)
    torch.set_num_threads(THREADS)
    results = {}
    with tempfile.TemporaryDirectory(prefix="gaitlu-bench-") as tmp:
        for name in MODELS:
            grid = QUICK_GRID[name] if args.quick else FULL_GRID
            results[name] = bench_model(name, grid, args.quick, Path(tmp))
    body, headline = report(results, gpu_section(), args.quick)
    print(body)
    if args.write_results:
        write_section(f"## Embedding\n\n{body}\n")
    print(headline)


if __name__ == "__main__":
    main()
