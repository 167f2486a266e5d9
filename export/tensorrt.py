"""Optional TensorRT fp16 plan (a serialized engine) for the GPU host, built from the fp32 ONNX graph.

TensorRT is not on the reachable package registry (docs/stack.md): GPU images start from NVIDIA's base
images. Without it the export still succeeds and says so; the service's onnxruntime TensorRT provider can
build (and cache) its own plan at start-up on the GPU host instead. A plan is specific to the GPU model
and TensorRT version that built it, which the manifest records.
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import torch

from export.checks import noise_silhouettes, run_session
from export.errors import ExportError
from export.graph import INPUT_NAME, OUTPUT_NAME
from gaitlu.embedding import part_cosines
from gaitlu.files import sha256_file, write_atomic
from gaitlu.manifest import TensorRTInfo
from gaitlu.preprocess import FRAME_HEIGHT, MODEL_WIDTH

logger = logging.getLogger(__name__)

PLAN_NAME = "model.fp16.plan"  # artifacts exported before name theirs model.fp16.engine (the manifest says)
PLAN_MIN_COSINE = 0.999  # fp16 plan versus fp32 ONNX
NO_TENSORRT = (
    "--trt: TensorRT is not installed here (it is not on PyPI for this platform; use NVIDIA's TensorRT "
    "image on the GPU host), so no plan was built. The service can still use TensorRT: its onnxruntime "
    "TensorRT provider builds and caches a plan from model.onnx at start-up on the GPU host."
)


def tensorrt_unavailable_reason() -> str | None:
    """None when a plan can be built here, else why not (a message for the user)."""
    if importlib.util.find_spec("tensorrt") is None:
        return NO_TENSORRT
    if not torch.cuda.is_available():
        return "--trt: TensorRT is installed but no CUDA GPU is visible, so no plan was built"
    return None


def build_plan(
    onnx_path: Path,
    out_dir: Path,
    max_batch: int,
    max_frames: int,
    session: ort.InferenceSession,
    parts: int,
    min_frames: int = 1,
) -> TensorRTInfo:
    """Build an fp16 plan with one profile (batch 1..max_batch, frames min_frames..max_frames), check it
    against the ONNX session, and describe it. Call only when `tensorrt_unavailable_reason()` is None."""
    import tensorrt as trt

    trt_logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(trt_logger)
    network = builder.create_network(0)  # explicit batch (the only mode in TensorRT 10)
    parser = trt.OnnxParser(network, trt_logger)
    if not parser.parse(onnx_path.read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ExportError(f"TensorRT cannot parse {onnx_path.name}: {errors}")
    config = builder.create_builder_config()
    config.set_flag(trt.BuilderFlag.FP16)
    profile = builder.create_optimization_profile()
    frame = (FRAME_HEIGHT, MODEL_WIDTH)
    profile.set_shape(
        INPUT_NAME,
        (1, min_frames, *frame),
        (min(8, max_batch), max(min_frames, min(92, max_frames)), *frame),
        (max_batch, max_frames, *frame),
    )
    config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ExportError("TensorRT failed to build the plan (see its log above)")
    cuda_engine = trt.Runtime(trt_logger).deserialize_cuda_engine(bytes(serialized))
    sils = noise_silhouettes(
        np.random.default_rng(1), min(4, max_batch), max(min_frames, min(30, max_frames))
    )
    cosine = float(part_cosines(_run_plan(cuda_engine, sils, parts), run_session(session, sils, parts)).min())
    if cosine < PLAN_MIN_COSINE:
        raise ExportError(f"the TensorRT plan disagrees with ONNX: min per-part cosine {cosine:.6f}")
    path = write_atomic(out_dir / PLAN_NAME, bytes(serialized))  # only a verified plan gets its name
    major, minor = torch.cuda.get_device_capability()
    return TensorRTInfo(
        file=PLAN_NAME,
        sha256=sha256_file(path),
        bytes=path.stat().st_size,
        precision="fp16",
        tensorrt_version=trt.__version__,
        gpu=torch.cuda.get_device_name(),
        compute_capability=f"{major}.{minor}",
        max_batch=max_batch,
        max_frames=max_frames,
        min_cosine_vs_onnx=cosine,
    )


def _run_plan(cuda_engine: Any, sils: np.ndarray, parts: int) -> np.ndarray:  # a tensorrt.ICudaEngine
    """(N, T, 64, 44) float32 -> (N, P, C) through the plan, with torch CUDA tensors as buffers."""
    context = cuda_engine.create_execution_context()
    inputs = torch.from_numpy(sils).cuda()
    context.set_input_shape(INPUT_NAME, tuple(inputs.shape))
    output = torch.empty(tuple(context.get_tensor_shape(OUTPUT_NAME)), device="cuda")
    context.set_tensor_address(INPUT_NAME, inputs.data_ptr())
    context.set_tensor_address(OUTPUT_NAME, output.data_ptr())
    stream = torch.cuda.current_stream()
    if not context.execute_async_v3(stream.cuda_stream):
        raise ExportError("TensorRT plan execution failed")
    stream.synchronize()
    return output.cpu().numpy().reshape(len(sils), parts, -1)  # (N, P*C) -> (N, P, C)
