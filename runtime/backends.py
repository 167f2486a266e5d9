"""Inference backends behind one call: `run((N, T, 64, 44) float32) -> (N, D) float32`.

onnxruntime with the best execution provider this install offers (TensorRT, CUDA, CPU), a prebuilt
TensorRT plan from the artifact, or OpenVINO on the CPU (runtime/openvino_backend.py; which one runs
is runtime/selection.py's choice). GPU libraries are imported only when chosen, so a CPU host needs
neither CUDA nor TensorRT. No torch here: the service stays torch-free.
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
import onnxruntime as ort

from gaitlu.errors import ConfigError
from gaitlu.manifest import InputSpec

logger = logging.getLogger(__name__)

# "trt-engine" is the documented older name of "trt-plan" (GAITLU_BACKEND values already deployed).
BackendName = Literal["auto", "tensorrt", "cuda", "cpu", "trt-plan", "trt-engine", "openvino"]
BACKENDS: tuple[str, ...] = ("auto", "tensorrt", "cuda", "cpu", "trt-plan", "trt-engine", "openvino")
PROVIDERS = {
    "tensorrt": "TensorrtExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "cpu": "CPUExecutionProvider",
}
OPT_BATCH, OPT_FRAMES = 8, 92  # the TensorRT profile's tuning point: a GaitLU-1M-length batch


class Backend(Protocol):
    name: str

    def run(self, sils: np.ndarray) -> np.ndarray:
        """(N, T, 64, 44) float32 in [0, 1] -> (N, D) float32."""
        ...


def tensorrt_profile(spec: InputSpec, max_batch: int) -> dict[str, str]:
    """The TensorRT provider's shape profile for the graph input `spec`: batch 1..max_batch and frames
    from the graph's `min_frames` (3 for GaitGL: fewer never reach the graph, the runtime tiles them) to
    its `max_frames`, tuned at a GaitLU-1M-length batch."""
    frame = "x".join(str(n) for n in spec.frame_size)
    opt_batch = min(OPT_BATCH, max_batch)
    opt_frames = max(spec.min_frames, min(OPT_FRAMES, spec.max_frames))
    shapes = {
        "min": f"1x{spec.min_frames}x{frame}",
        "opt": f"{opt_batch}x{opt_frames}x{frame}",
        "max": f"{max_batch}x{spec.max_frames}x{frame}",
    }
    return {f"trt_profile_{key}_shapes": f"{spec.name}:{shape}" for key, shape in shapes.items()}


def ort_provider_chain(
    backend: str, spec: InputSpec, max_batch: int, cache_dir: Path
) -> list[str | tuple[str, dict[str, Any]]]:
    """The onnxruntime providers for a backend name: 'auto' takes the best available, a named one must
    be available. CPU is always last as the fallback for ops a GPU provider does not take."""
    available = ort.get_available_providers()
    if backend == "auto":
        wanted = [name for name in ("tensorrt", "cuda") if PROVIDERS[name] in available]
    elif backend in ("tensorrt", "cuda"):
        if PROVIDERS[backend] not in available:
            raise ConfigError(
                f"backend {backend!r} needs onnxruntime's {PROVIDERS[backend]}, but this install only has "
                f"{available} (install onnxruntime-gpu on a CUDA host, or use backend 'cpu')"
            )
        wanted = [backend]
    else:
        wanted = []
    chain: list[str | tuple[str, dict[str, Any]]] = []
    for name in wanted:
        if name == "tensorrt":
            options: dict[str, Any] = {
                "trt_fp16_enable": True,
                "trt_engine_cache_enable": True,  # the first start builds the plan; later starts reuse it
                "trt_engine_cache_path": str(cache_dir),
                **tensorrt_profile(spec, max_batch),
            }
            chain.append((PROVIDERS[name], options))
        else:
            chain.append(PROVIDERS[name])
    chain.append(PROVIDERS["cpu"])
    return chain


class OrtBackend:
    """An onnxruntime session; `threads` / `inter_threads` set its intra-/inter-op thread pools."""

    def __init__(
        self,
        model_path: Path,
        input_name: str,
        providers: list[str | tuple[str, dict[str, Any]]],
        threads: int | None = None,
        inter_threads: int | None = None,
    ) -> None:
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL  # 1.6x over BASIC here
        if threads:
            options.intra_op_num_threads = threads
        if inter_threads:
            options.inter_op_num_threads = inter_threads
        # Idle worker threads spin by default and steal cores from HTTP handling between batches:
        # measured here 11.8 -> 15.0 requests/s at 1 client and 16.2 -> 19.0 at 32 without spinning.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(model_path), options, providers=providers)
        self.input_name = input_name
        self.name = f"onnxruntime/{self.session.get_providers()[0]}"

    def run(self, sils: np.ndarray) -> np.ndarray:
        out: np.ndarray = self.session.run(None, {self.input_name: sils})[0]  # (N, D)
        return out


def trt_plan_usable() -> bool:
    """Whether a prebuilt plan could run here: TensorRT and the CUDA runtime bindings import."""
    return all(importlib.util.find_spec(name) is not None for name in ("tensorrt", "cuda"))


class TensorRTPlanBackend:
    """A TensorRT plan (serialized engine) run through the CUDA runtime bindings (cuda-python), no torch.

    Buffers are allocated per call: simple and correct; a service under load would keep a pool.
    """

    def __init__(self, plan_path: Path, input_name: str, output_name: str) -> None:
        import tensorrt as trt
        from cuda.bindings import runtime as cudart

        self._trt, self._cudart = trt, cudart
        self._cuda_engine = trt.Runtime(trt.Logger(trt.Logger.WARNING)).deserialize_cuda_engine(
            plan_path.read_bytes()
        )
        if self._cuda_engine is None:
            raise ConfigError(f"{plan_path}: TensorRT cannot load this plan (built for another GPU/version?)")
        self._context = self._cuda_engine.create_execution_context()
        self._stream = self._check(cudart.cudaStreamCreate())
        self.input_name, self.output_name = input_name, output_name
        self.name = f"tensorrt/{trt.__version__}"

    def _check(self, result: tuple[Any, ...]) -> Any:
        err, *values = result
        if err != self._cudart.cudaError_t.cudaSuccess:
            raise RuntimeError(f"CUDA error {err}")
        return values[0] if values else None

    def run(self, sils: np.ndarray) -> np.ndarray:
        cudart = self._cudart
        sils = np.ascontiguousarray(sils, dtype=np.float32)
        self._context.set_input_shape(self.input_name, sils.shape)
        out = np.empty(tuple(self._context.get_tensor_shape(self.output_name)), np.float32)  # (N, D)
        d_in = self._check(cudart.cudaMalloc(sils.nbytes))
        d_out = self._check(cudart.cudaMalloc(out.nbytes))
        try:
            h2d, d2h = (
                cudart.cudaMemcpyKind.cudaMemcpyHostToDevice,
                cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost,
            )
            self._check(cudart.cudaMemcpyAsync(d_in, sils.ctypes.data, sils.nbytes, h2d, self._stream))
            self._context.set_tensor_address(self.input_name, int(d_in))
            self._context.set_tensor_address(self.output_name, int(d_out))
            if not self._context.execute_async_v3(self._stream):
                raise RuntimeError("TensorRT execution failed")
            self._check(cudart.cudaMemcpyAsync(out.ctypes.data, d_out, out.nbytes, d2h, self._stream))
            self._check(cudart.cudaStreamSynchronize(self._stream))
        finally:
            cudart.cudaFree(d_in)
            cudart.cudaFree(d_out)
        return out
