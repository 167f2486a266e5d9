"""Embedding throughput against the hardware: torch eager, onnxruntime fp32 / int8, OpenVINO fp32 / bf16 /
int8, per architecture, each as a share of this machine's measured matmul rate.

Models: the default model (models/default: its own model.onnx, trained weights; models/synthetic, the
synthetic-only model, until the default is built, and said so) and, random weights,
GaitSSB tiny (channels 8-64) and paper size (64-512), and every imported OpenGait architecture at the
width of its paper config (our configs' defaults): GaitBase (CASIA-B config), DeepGaitV2 P3D and 2D
(Gait3D config), GaitSet, GaitGL (CASIA-B branch). Each is exported exactly as `gaitlu export` does
(export.graph, export.precision: int8 calibrated on synthetic walks), then one call per backend is
timed, the backends taking turns on the same input, keeping the best of the repeats (other jobs share
this machine's 2 cores: the minimum is the least disturbed figure; ratios come from the same rounds).
int8 quality versus fp32: cosine of the per-part-normalised outputs (what the service ranks by) over
synthetic walks not used for calibration, and in the full run leave-one-out Rank-1 on a labelled
synthetic set (export.checks.variant_quality). OpenVINO (where installed; runtime/openvino_backend.py,
as the service runs it: one stream, the latency hint, THREADS threads) runs the same ONNX files; bf16
only on a CPU with AMX-BF16 or AVX512-BF16; the execution devices and inference precision it reports
are printed per model.

The hardware rate: in the same run, the best of several 2048^3 matmuls on THREADS threads in torch, fp32
and bf16 (oneDNN: AMX / AVX512-BF16 where present) and int8 (torch._int_mm, int32 accumulation). Every
backend's achieved rate (convolution + FC FLOPs per call / seconds) is given as a share of the matmul
rate of its own precision (fp32 rows of the fp32 rate, bf16 of bf16, int8 of int8): how much of what
the cores can do the backend gets.

FLOPs are counted by forward hooks on every Conv2d / Conv3d (2 x output elements x in-channels x kernel
volume) and per-part FC (2 x N x P x in x out); BatchNorm, activations, pooling and normalisation are
left out (<1 %). "Per frame" divides the convolutions by the input frames (GaitGL convolves a third of
them after its temporal aggregation).

A GPU section (torch fp32 / fp16 / bf16 autocast, torch.compile with CUDA graphs, onnxruntime CUDA and
TensorRT providers) runs only where CUDA is available.

    python benchmarks/embedding.py --quick   # default + GaitBase at batch 1 x 8 frames; under a minute
    python benchmarks/embedding.py           # every model, batch 1/8/32 x T 30 and 1 x T 92; ~1 h

The last line holds the headline figures as name=value pairs: per model, ORT fp32 over torch eager and
int8 over ORT fp32, OpenVINO bf16 / int8 over ORT fp32 (speed ratios at the headline case) and bf16's
share of the bf16 matmul rate, the int8 cosine, and GFLOP per frame; and the matmul rates.
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
import onnx
import onnxruntime as ort
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from results_md import write_section

from export import calibration, checks, graph, precision
from gaitlu.manifest import read_manifest
from runtime.openvino_backend import OpenVINOBackend, cpu_capability, openvino_available
from train.model import ModelConfig, SeparateFC
from train.zoo.deepgaitv2 import DeepGaitV2Config
from train.zoo.gaitbase import GaitBaseConfig
from train.zoo.gaitgl import GaitGLConfig
from train.zoo.gaitset import GaitSetConfig
from train.zoo.registry import build_network

logger = logging.getLogger(__name__)

THREADS = 2
MODELS_DIR = Path(__file__).resolve().parents[1] / "models"


def default_artifact() -> Path:
    """models/default once it is built, else the synthetic-only model shipped beside it."""
    built = MODELS_DIR / "default" / "manifest.json"
    return built.parent if built.is_file() else MODELS_DIR / "synthetic"


# name -> (architecture, config); the zoo configs' defaults are OpenGait's paper configs. "default": the
# committed default model's own ONNX (its architecture and config from its manifest).
MODELS: dict[str, tuple[str, Any]] = {
    "default": ("default", None),
    "gaitssb-tiny": ("gaitssb", ModelConfig(channels=(8, 16, 32, 64))),
    "gaitssb": ("gaitssb", ModelConfig()),
    "gaitbase": ("gaitbase", GaitBaseConfig()),
    "deepgaitv2-p3d": ("deepgaitv2", DeepGaitV2Config()),
    "deepgaitv2-2d": ("deepgaitv2", DeepGaitV2Config(mode="2d")),
    "gaitset": ("gaitset", GaitSetConfig()),
    "gaitgl": ("gaitgl", GaitGLConfig()),
}
ZOO = tuple(name for name in MODELS if name not in ("default", "gaitssb-tiny", "gaitssb"))
QUICK_MODELS = ("default", "gaitbase")
QUICK_CASE = (1, 8)
FULL_GRID = ((1, 30), (8, 30), (32, 30), (1, 92))
FULL_HEADLINE = (8, 30)
MATMUL_N = 2048  # the microbenchmark's square matmul: 17 GFLOP, large enough for the peak rate
# backend -> the precision whose matmul rate it is measured against
PRECISION_OF = {"torch": "fp32", "ort_fp32": "fp32", "ort_int8": "int8", "ov_fp32": "fp32", "ov_bf16": "bf16"}
PRECISION_OF["ov_int8"] = "int8"


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


def matmul_rates(quick: bool) -> dict[str, float]:
    """This machine's FLOP/s (OP/s for int8) of a MATMUL_N^3 matmul on THREADS threads, best of repeats:
    fp32 and bf16 (torch.matmul: oneDNN, AMX / AVX512-BF16 where the CPU has them) and int8, the faster of
    torch._int_mm and OpenVINO running a QDQ MatMul (its int8 kernels: AMX-INT8 / VNNI where present;
    torch's CPU int8 matmul reached half of it here). Keys: fp32, bf16, int8, int8_torch, int8_openvino."""
    n, repeats = MATMUL_N, 3 if quick else 10
    rates = {}
    for name, make, run in (
        ("fp32", lambda: torch.randn(n, n), torch.matmul),
        ("bf16", lambda: torch.randn(n, n, dtype=torch.bfloat16), torch.matmul),
        ("int8_torch", lambda: torch.randint(-128, 128, (n, n), dtype=torch.int8), torch._int_mm),
    ):
        a, b = make(), make()
        seconds = best_times({name: lambda a=a, b=b, run=run: run(a, b)}, repeats)[name]
        rates[name] = 2 * n**3 / seconds
    if openvino_available():
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "matmul.int8.onnx"
            onnx.save(qdq_matmul(n), str(path))
            backend = OpenVINOBackend(path, "int8", THREADS)
            x = np.random.default_rng(0).random((n, n), np.float32)
            seconds = best_times({"ov": lambda: backend.run(x)}, repeats)["ov"]
        rates["int8_openvino"] = 2 * n**3 / seconds
    rates["int8"] = max(rates.get("int8_openvino", 0.0), rates["int8_torch"])
    for name, rate in rates.items():
        logger.info("matmul %s: %.0f G(FL)OP/s", name, rate / 1e9)
    return rates


def qdq_matmul(n: int) -> onnx.ModelProto:
    """An (n, n) x (n, n) MatMul between QuantizeLinear / DequantizeLinear pairs (u8 activations, s8
    weights), as export.precision writes the models' int8 graphs."""
    from onnx import TensorProto, helper, numpy_helper

    weights = np.random.default_rng(1).standard_normal((n, n)).astype(np.float32)
    constants = {
        "w": weights,
        "xs": np.array(1 / 255, np.float32),
        "xz": np.array(0, np.uint8),
        "ws": np.array(0.03, np.float32),
        "wz": np.array(0, np.int8),
    }
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "xs", "xz"], ["xq"]),
        helper.make_node("DequantizeLinear", ["xq", "xs", "xz"], ["xd"]),
        helper.make_node("QuantizeLinear", ["w", "ws", "wz"], ["wq"]),
        helper.make_node("DequantizeLinear", ["wq", "ws", "wz"], ["wd"]),
        helper.make_node("MatMul", ["xd", "wd"], ["y"]),
    ]
    graph_proto = helper.make_graph(
        nodes,
        "qdq_matmul",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [n, n])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [n, n])],
        [numpy_helper.from_array(value, name) for name, value in constants.items()],
    )
    return helper.make_model(graph_proto, opset_imports=[helper.make_opsetid("", 18)])


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


def ov_precisions() -> tuple[str, ...]:
    """The OpenVINO precisions this host runs (none without the openvino package)."""
    if not openvino_available():
        return ()
    return ("fp32", "bf16", "int8") if cpu_capability().bf16 else ("fp32", "int8")


def network(name: str) -> nn.Module:
    """The torch network of a benchmark model (for eager timing and FLOP counting)."""
    torch.manual_seed(0)
    architecture, config = MODELS[name]
    if architecture == "default":
        model = read_manifest(default_artifact()).model
        architecture, config = model.name, model.config
    return build_network(architecture, config).eval()


def bench_model(name: str, grid: tuple[tuple[int, int], ...], quick: bool, folder: Path) -> dict:
    model = network(name)
    parts = model.config.parts
    fp32_path, int8_path = folder / f"{name}.onnx", folder / f"{name}.int8.onnx"
    started = time.perf_counter()
    if name == "default":  # its own graph (trained weights), as the service runs it
        artifact = default_artifact()
        fp32_path = artifact / read_manifest(artifact).variant("fp32").file
        logger.info("default model: %s", artifact)
    else:
        graph.export_onnx(model, fp32_path, opset=18, max_batch=64, max_frames=720)
    calib = calibration.synthetic_calibration(1 if quick else calibration.CALIBRATION_SEQUENCES)
    if quick:
        calib = [calibration.window(seq, QUICK_CASE[1]) for seq in calib]
    precision.quantize_int8(fp32_path, int8_path, calib)
    export_s = time.perf_counter() - started
    fp32, int8 = session(fp32_path), session(int8_path)
    ov = {p: OpenVINOBackend(int8_path if p == "int8" else fp32_path, p, THREADS) for p in ov_precisions()}
    if quick:
        quality = {"cosine": int8_cosine(fp32, int8, parts, QUICK_CASE[1]), "sequences": 2, "rank1": None}
    else:
        q = checks.variant_quality(fp32, int8, [], calibration.synthetic_labelled(8), parts, note="")
        quality = {"cosine": q.min_cosine, "sequences": q.sequences, "rank1": (q.rank1_fp32, q.rank1)}
    per_frame, _ = count_flops(model, 92)

    rows = []
    rng = np.random.default_rng(0)
    for batch, frames in grid:
        sils = checks.noise_silhouettes(rng, batch, frames)  # speed does not depend on content
        tensor = torch.from_numpy(sils)

        def torch_eager(tensor: torch.Tensor = tensor) -> object:
            with torch.inference_mode():
                return model(tensor)

        runners: dict[str, Callable[[], object]] = {
            "torch": torch_eager,
            "ort_fp32": lambda sils=sils: fp32.run(None, {graph.INPUT_NAME: sils}),
            "ort_int8": lambda sils=sils: int8.run(None, {graph.INPUT_NAME: sils}),
        }
        for p, backend in ov.items():
            runners[f"ov_{p}"] = lambda sils=sils, backend=backend: backend.run(sils)
        heavy = per_frame * batch * frames > 2e11  # a call of more than ~200 GFLOP takes seconds here
        repeats = 1 if heavy else 2 if quick else 3
        flop = count_flops(model, frames)[1] * batch  # conv + FC of this call
        rows.append({"batch": batch, "frames": frames, "flop": flop, **best_times(runners, repeats)})
        logger.info("%s b%d T%d: %s", name, batch, frames, rows[-1])
    return {
        "rows": rows,
        "quality": quality,
        "export_s": export_s,
        "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
        "embedding": f"{parts} x {model.config.layout.part_dim}",
        "gflop_per_frame": per_frame / 1e9,
        "gflop_per_seq_92": count_flops(model, 92)[1] / 1e9,
        "openvino": {p: backend.properties for p, backend in ov.items()},
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

    for name in ("gaitssb", *ZOO):
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


def shown(name: str) -> str:
    """A model's name in the tables: the default says which artifact it was."""
    return f"default ({default_artifact().relative_to(MODELS_DIR.parent)})" if name == "default" else name


def share(row: dict, backend: str, rates: dict[str, float]) -> float:
    """The backend's achieved FLOP/s on this call as a share of the matmul rate of its precision."""
    return row["flop"] / row[backend] / rates[PRECISION_OF[backend]]


def report(
    results: dict[str, dict], rates: dict[str, float], gpu_lines: list[str], quick: bool
) -> tuple[str, str]:
    """(markdown section body, headline name=value line)."""
    backends = ["torch", "ort_fp32", "ort_int8", *(f"ov_{p}" for p in ov_precisions())]
    label = {"torch": "torch eager", "ort_fp32": "ORT fp32", "ort_int8": "ORT int8"}
    label |= {f"ov_{p}": f"OpenVINO {p}" for p in ("fp32", "bf16", "int8")}
    ov_version = next((r["openvino"][p]["version"] for r in results.values() for p in r["openvino"]), None)
    lines = [
        f"`python benchmarks/embedding.py{' --quick' if quick else ''}` on a {THREADS}-thread x86-64 CPU "
        f"({platform.machine()}, {cpu_capability().device or platform.processor()}; flags "
        f"{', '.join(cpu_capability().flags) or 'none'}), no GPU (best of repeats, backends taking turns). "
        f"torch {torch.__version__}, onnxruntime {ort.__version__}, "
        f"OpenVINO {ov_version or 'not installed'}, {THREADS} threads each.",
        "",
        f"Hardware rate, {MATMUL_N}^3 matmul on {THREADS} threads, same run: "
        + ", ".join(f"{p} {rates[p] / 1e12:.2f} T{'OP' if 'int8' in p else 'FLOP'}/s" for p in rates)
        + " (int8: the faster of torch._int_mm and OpenVINO's QDQ MatMul). Each cell: sequences/s, and in "
        "brackets the achieved rate as a share of the matmul rate of its precision (int8 rows: of the int8 "
        "rate; bf16: of bf16; fp32 and torch: of fp32).",
        "",
        "| model | batch | frames | "
        + " | ".join(f"{label[b]} seq/s" for b in backends)
        + " | OV bf16 vs ORT fp32 | OV int8 vs ORT fp32 |",
        "|---|---|---|" + "---|" * (len(backends) + 2),
    ]
    for name, res in results.items():
        for r in res["rows"]:
            b = r["batch"]
            cells = [f"{b / r[k]:.2f} ({share(r, k, rates):.0%})" for k in backends]
            ratios = [f"{r['ort_fp32'] / r[k]:.2f}x" if k in r else "-" for k in ("ov_bf16", "ov_int8")]
            lines.append(f"| {shown(name)} | {b} | {r['frames']} | " + " | ".join(cells + ratios) + " |")
    lines += [
        "",
        "| model | parameters | embedding (P x C) | conv GFLOP per frame | GFLOP per 92-frame sequence | "
        "int8 min cosine | int8 Rank-1 (fp32 -> int8) | export + int8 s | OpenVINO ran on |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, res in results.items():
        q = res["quality"]
        rank1 = f"{q['rank1'][0]:.1f} -> {q['rank1'][1]:.1f}" if q["rank1"] else "-"
        ran = "; ".join(
            f"{p}: {props['execution_devices']} {props['inference_precision']}, "
            f"{props['inference_num_threads']} threads"
            for p, props in res["openvino"].items()
        )
        lines.append(
            f"| {shown(name)} | {res['params_m']:.1f}M | {res['embedding']} | {res['gflop_per_frame']:.3f} | "
            f"{res['gflop_per_seq_92']:.1f} | {q['cosine']:.5f} ({q['sequences']} walks) | {rank1} | "
            f"{res['export_s']:.0f} | {ran or '-'} |"
        )
    lines += ["", *gpu_lines]
    pairs = [f"matmul_{p}_tops={rates[p] / 1e12:.3f}" for p in rates]
    for name, res in results.items():
        head = headline_row(res, quick)
        key = name.replace("-", "_")
        pairs += [
            f"{key}_ort_vs_torch={head['torch'] / head['ort_fp32']:.2f}",
            f"{key}_int8_speedup={head['ort_fp32'] / head['ort_int8']:.2f}",
        ]
        for p in ("bf16", "int8"):
            if f"ov_{p}" in head:
                pairs.append(f"{key}_ov_{p}_vs_ort_fp32={head['ort_fp32'] / head[f'ov_{p}']:.2f}")
        if "ov_bf16" in head:
            pairs.append(f"{key}_ov_bf16_share_of_matmul={share(head, 'ov_bf16', rates):.3f}")
        pairs += [
            f"{key}_int8_cosine={res['quality']['cosine']:.5f}",
            f"{key}_gflop_per_frame={res['gflop_per_frame']:.3f}",
        ]
    return "\n".join(lines), " ".join(pairs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="default + GaitBase at 1 x 8 frames, < 1 min")
    parser.add_argument("--models", nargs="+", choices=list(MODELS), help="a subset of the models")
    parser.add_argument("--write-results", action="store_true", help="update benchmarks/RESULTS.md")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("onnx_ir").setLevel(logging.WARNING)
    torch.set_num_threads(THREADS)
    names = args.models or (QUICK_MODELS if args.quick else tuple(MODELS))
    rates = matmul_rates(args.quick)
    results = {}
    with tempfile.TemporaryDirectory(prefix="gaitlu-bench-") as tmp:
        for name in names:
            grid = (QUICK_CASE,) if args.quick else FULL_GRID
            results[name] = bench_model(name, grid, args.quick, Path(tmp))
    body, headline = report(results, rates, gpu_section(), args.quick)
    print(body)
    if args.write_results:
        write_section(f"## Embedding\n\n{body}\n")
    print(headline)


if __name__ == "__main__":
    main()
