"""Embedding throughput and latency: torch eager vs onnxruntime CPU fp32 vs static int8, per architecture.

Models, random weights: GaitSSB tiny (channels 8-64) and paper size (64-512), and every imported OpenGait
architecture at the width of its paper config (our configs' defaults): GaitBase (CASIA-B config),
DeepGaitV2 P3D and 2D (Gait3D config), GaitSet, GaitGL (CASIA-B branch). Each is exported exactly as
`gaitlu export` does (export.graph, export.precision: int8 calibrated on synthetic walks), then one call
per backend is timed, the backends taking turns on the same input, keeping the best of the repeats (other
jobs share this machine's 2 cores: the minimum is the least disturbed figure; ratios come from the same
rounds). int8 quality versus fp32: cosine of the per-part-normalised outputs (what the service ranks by)
over synthetic walks not used for calibration, and in the full run leave-one-out Rank-1 on a labelled
synthetic set (export.checks.variant_quality).

FLOPs are counted by forward hooks on every Conv2d / Conv3d (2 x output elements x in-channels x kernel
volume) and per-part FC (2 x N x P x in x out); BatchNorm, activations, pooling and normalisation are
left out (<1 %). "Per frame" divides the convolutions by the input frames (GaitGL convolves a third of
them after its temporal aggregation).

A GPU section (torch fp32 / fp16 / bf16 autocast, torch.compile with CUDA graphs, onnxruntime CUDA and
TensorRT providers) runs only where CUDA is available.

    python benchmarks/embedding.py --quick   # the five zoo models at batch 1 x 8 frames; about a minute
    python benchmarks/embedding.py           # every model, batch 1/8 x T 30 and batch 1 x T 92; ~30 min

The last line holds the headline figures as name=value pairs: per model, ORT fp32 over torch eager and
int8 over ORT fp32 (speed ratios at the headline case), the int8 cosine, and GFLOP per frame.
"""

from __future__ import annotations

import argparse
import copy
import logging
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from results_md import write_section

from export import calibration, checks, graph, precision
from train.model import ModelConfig, SeparateFC
from train.zoo.deepgaitv2 import DeepGaitV2Config
from train.zoo.gaitbase import GaitBaseConfig
from train.zoo.gaitgl import GaitGLConfig
from train.zoo.gaitset import GaitSetConfig
from train.zoo.registry import build_network

logger = logging.getLogger(__name__)

THREADS = 2
# name -> (architecture, config); the zoo configs' defaults are OpenGait's paper configs.
MODELS: dict[str, tuple[str, Any]] = {
    "gaitssb-tiny": ("gaitssb", ModelConfig(channels=(8, 16, 32, 64))),
    "gaitssb": ("gaitssb", ModelConfig()),
    "gaitbase": ("gaitbase", GaitBaseConfig()),
    "deepgaitv2-p3d": ("deepgaitv2", DeepGaitV2Config()),
    "deepgaitv2-2d": ("deepgaitv2", DeepGaitV2Config(mode="2d")),
    "gaitset": ("gaitset", GaitSetConfig()),
    "gaitgl": ("gaitgl", GaitGLConfig()),
}
QUICK_MODELS = tuple(name for name in MODELS if not name.startswith("gaitssb"))  # the imported zoo
QUICK_CASE = (1, 8)
FULL_GRID = ((1, 30), (8, 30), (1, 92))
TINY_GRID = ((1, 30), (8, 30), (32, 30), (1, 92))
FULL_HEADLINE = (8, 30)


def count_flops(model: nn.Module, frames: int) -> tuple[float, float]:
    """(convolution FLOPs per input frame, FLOPs per sequence of `frames` frames) from one forward of a
    copy on the meta device: shapes only, nothing computed."""
    model = copy.deepcopy(model).to("meta")
    totals = {"conv": 0, "fc": 0}

    def conv_hook(module: nn.Conv2d | nn.Conv3d, _inputs: tuple, out: torch.Tensor) -> None:
        kernel = int(np.prod(module.kernel_size))
        totals["conv"] += 2 * out.numel() * (module.in_channels // module.groups) * kernel

    def fc_hook(module: SeparateFC, inputs: tuple, _out: torch.Tensor) -> None:
        n, _, parts = inputs[0].shape  # (N, in, P)
        totals["fc"] += 2 * n * parts * module.weight.shape[1] * module.weight.shape[2]

    hooks = [
        m.register_forward_hook(fc_hook if isinstance(m, SeparateFC) else conv_hook)
        for m in model.modules()
        if isinstance(m, nn.Conv2d | nn.Conv3d | SeparateFC)
    ]
    with torch.inference_mode():
        model(torch.zeros(1, frames, 64, 44, device="meta"))
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


def int8_cosine(fp32: ort.InferenceSession, int8: ort.InferenceSession, parts: int, frames: int) -> float:
    """Worst per-sequence mean per-part cosine, int8 vs fp32, over two held-out synthetic walks."""
    walks = [calibration.window(seq, frames) for seq in calibration.synthetic_labelled(1).sequences[:2]]
    ref = np.concatenate([checks.run_session(fp32, w[None], parts) for w in walks])
    out = np.concatenate([checks.run_session(int8, w[None], parts) for w in walks])
    return float(checks.part_cosines(out, ref).mean(axis=1).min())


def bench_model(name: str, grid: tuple[tuple[int, int], ...], quick: bool, folder: Path) -> dict:
    torch.manual_seed(0)
    architecture, config = MODELS[name]
    model = build_network(architecture, config).eval()
    parts = model.config.parts
    fp32_path, int8_path = folder / f"{name}.onnx", folder / f"{name}.int8.onnx"
    started = time.perf_counter()
    graph.export_onnx(model, fp32_path, opset=18, max_batch=64, max_frames=720)
    calib = calibration.synthetic_calibration(1 if quick else calibration.CALIBRATION_SEQUENCES)
    if quick:
        calib = [calibration.window(seq, QUICK_CASE[1]) for seq in calib]
    precision.quantize_int8(fp32_path, int8_path, calib)
    export_s = time.perf_counter() - started
    fp32, int8 = session(fp32_path), session(int8_path)
    if quick:
        quality = {"cosine": int8_cosine(fp32, int8, parts, QUICK_CASE[1]), "sequences": 2, "rank1": None}
    else:
        q = checks.variant_quality(fp32, int8, [], calibration.synthetic_labelled(8), parts, note="")
        quality = {"cosine": q.min_cosine, "sequences": q.sequences, "rank1": (q.rank1_fp32, q.rank1)}
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
        heavy = per_frame * batch * frames > 2e11  # a call of more than ~200 GFLOP takes seconds here
        repeats = 1 if heavy else 2 if quick else 3
        rows.append({"batch": batch, "frames": frames, **best_times(runners, repeats)})
        logger.info("%s b%d T%d: %s", name, batch, frames, rows[-1])
    return {
        "rows": rows,
        "quality": quality,
        "export_s": export_s,
        "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
        "embedding": f"{parts} x {model.config.layout.channels}",
        "gflop_per_frame": per_frame / 1e9,
        "gflop_per_seq_92": per_seq_92 / 1e9,
    }


def gpu_section() -> list[str]:
    """torch fp32 / fp16 / bf16 (+ torch.compile with CUDA graphs) and onnxruntime GPU providers."""
    if not torch.cuda.is_available():
        return [
            "No CUDA device here: the GPU section (torch fp32/fp16/bf16, torch.compile with CUDA graphs,",
            "onnxruntime CUDA/TensorRT providers, TensorRT engines per zoo model) was not run.",
        ]
    lines = ["GPU: " + torch.cuda.get_device_name() + ", batch 32 x 92 frames, ms per call:"]
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

    for name in ("gaitssb", *QUICK_MODELS):
        architecture, config = MODELS[name]
        model = build_network(architecture, config).eval().cuda()
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

            lines.append(f"- {name}, {label}: {timed(run):.1f}")
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / f"{name}.onnx"
            graph.export_onnx(model.cpu(), path, opset=18, max_batch=64, max_frames=720)
            feed = {graph.INPUT_NAME: sils.cpu().numpy()}
            for provider in ("CUDAExecutionProvider", "TensorrtExecutionProvider"):
                if provider in ort.get_available_providers():
                    gpu = ort.InferenceSession(str(path), providers=[provider, "CPUExecutionProvider"])
                    ms = timed(lambda gpu=gpu, feed=feed: gpu.run(None, feed))
                    lines.append(f"- {name}, onnxruntime {provider} (host input): {ms:.1f}")
    return lines


def headline_row(result: dict, quick: bool) -> dict:
    wanted = QUICK_CASE if quick else FULL_HEADLINE
    return next(r for r in result["rows"] if (r["batch"], r["frames"]) == wanted)


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
                f"| {name} | {b} | {r['frames']} | {b / r['torch']:.2f} | {b / r['ort_fp32']:.2f} | "
                f"{b / r['ort_int8']:.2f} | {r['torch'] / r['ort_fp32']:.2f}x | "
                f"{r['ort_fp32'] / r['ort_int8']:.2f}x | {r['ort_fp32'] * 1e3:.0f} |"
            )
    lines += [
        "",
        "| model | parameters | embedding (P x C) | conv GFLOP per frame | GFLOP per 92-frame sequence | "
        "int8 min cosine | int8 Rank-1 (fp32 -> int8) | export + int8 s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, res in results.items():
        q = res["quality"]
        rank1 = f"{q['rank1'][0]:.1f} -> {q['rank1'][1]:.1f}" if q["rank1"] else "-"
        lines.append(
            f"| {name} | {res['params_m']:.1f}M | {res['embedding']} | {res['gflop_per_frame']:.3f} | "
            f"{res['gflop_per_seq_92']:.1f} | {q['cosine']:.5f} ({q['sequences']} walks) | {rank1} | "
            f"{res['export_s']:.0f} |"
        )
    lines += ["", *gpu_lines]
    pairs = []
    for name, res in results.items():
        head = headline_row(res, quick)
        key = name.replace("-", "_")
        pairs += [
            f"{key}_ort_vs_torch={head['torch'] / head['ort_fp32']:.2f}",
            f"{key}_int8_speedup={head['ort_fp32'] / head['ort_int8']:.2f}",
            f"{key}_int8_cosine={res['quality']['cosine']:.5f}",
            f"{key}_gflop_per_frame={res['gflop_per_frame']:.3f}",
        ]
    return "\n".join(lines), " ".join(pairs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one small case per model, about a minute")
    parser.add_argument("--models", nargs="+", choices=list(MODELS), help="a subset of the models")
    parser.add_argument("--write-results", action="store_true", help="update benchmarks/RESULTS.md")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("onnx_ir").setLevel(logging.WARNING)
    torch.set_num_threads(THREADS)
    names = args.models or (QUICK_MODELS if args.quick else tuple(MODELS))
    results = {}
    with tempfile.TemporaryDirectory(prefix="gaitlu-bench-") as tmp:
        for name in names:
            grid = (QUICK_CASE,) if args.quick else TINY_GRID if name == "gaitssb-tiny" else FULL_GRID
            results[name] = bench_model(name, grid, args.quick, Path(tmp))
    body, headline = report(results, gpu_section(), args.quick)
    print(body)
    if args.write_results:
        write_section(f"## Embedding\n\n{body}\n")
    print(headline)


if __name__ == "__main__":
    main()
