"""The OpenVINO backend: the artifact's ONNX on Intel's CPU runtime in fp32, bf16 or int8.

On a CPU with AMX or AVX512-BF16, OpenVINO runs the fp32 graph with bf16 matmuls and convolutions
(`INFERENCE_PRECISION_HINT=bf16`): about 4.5x onnxruntime fp32 on a paper-width GaitBase on this
project's 2-core AMX CPU. `int8` runs the artifact's calibrated QDQ graph (`model.int8.onnx`), which
OpenVINO turns into int8 kernels (VNNI / AMX-INT8); the rest of that graph stays fp32.
OpenVINO's CPU plugin picks bf16 by itself on such CPUs, so fp32 and int8 ask for f32 explicitly: each
precision means what it says.

The graph keeps its dynamic batch and frame dimensions; OpenVINO compiles shape-agnostic kernels and
caches per-shape work. `openvino` is an optional dependency (`pip install 'gaitlu[openvino]'`): this
module imports it only when the backend is opened, and `openvino_available()` says whether it can be.
"""

from __future__ import annotations

import importlib.util
import logging
import threading
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from gaitlu.errors import ConfigError

logger = logging.getLogger(__name__)

OV_PRECISIONS = ("fp32", "bf16", "int8")
BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")  # /proc/cpuinfo names of native bf16 arithmetic
CPUINFO = Path("/proc/cpuinfo")
NOT_INSTALLED = "backend 'openvino' needs the openvino package (pip install 'gaitlu[openvino]')"


def openvino_available() -> bool:
    """Whether `import openvino` can succeed (without importing it)."""
    try:
        return importlib.util.find_spec("openvino") is not None
    except (ImportError, ValueError):  # a blocked or half-installed package
        return False


def cpu_flags(cpuinfo: Path = CPUINFO) -> frozenset[str]:
    """The first CPU's feature flags from /proc/cpuinfo (empty where there is none, e.g. macOS)."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


@dataclass(frozen=True)
class CpuCapability:
    bf16: bool  # native bf16 arithmetic: AMX-BF16 or AVX512-BF16, and OpenVINO offers BF16
    int8: bool  # OpenVINO's CPU plugin offers INT8 kernels
    flags: tuple[str, ...]  # the bf16 / int8 flags found in /proc/cpuinfo
    capabilities: tuple[str, ...]  # OpenVINO's OPTIMIZATION_CAPABILITIES ((): not importable)
    device: str  # OpenVINO's FULL_DEVICE_NAME, or "" without OpenVINO


@lru_cache(maxsize=1)
def cpu_capability() -> CpuCapability:
    """What this host's CPU offers OpenVINO. bf16 needs both the instruction set (/proc/cpuinfo, where
    readable) and OpenVINO's own BF16 capability: without native bf16 OpenVINO would emulate it slowly."""
    flags = cpu_flags()
    found = tuple(sorted(f for f in flags if f in (*BF16_CPU_FLAGS, "amx_int8", "avx512_vnni", "avx_vnni")))
    capabilities: tuple[str, ...] = ()
    device = ""
    if openvino_available():
        try:
            import openvino as ov

            core = ov.Core()
            capabilities = tuple(core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"))
            device = str(core.get_property("CPU", "FULL_DEVICE_NAME"))
        except Exception as exc:  # an install that cannot open its CPU plugin
            logger.warning("OpenVINO is installed but its CPU plugin does not open: %s", exc)
    native_bf16 = any(f in flags for f in BF16_CPU_FLAGS) or not CPUINFO.exists()
    return CpuCapability(
        bf16="BF16" in capabilities and native_bf16,
        int8="INT8" in capabilities,
        flags=found,
        capabilities=capabilities,
        device=device,
    )


class OpenVINOBackend:
    """One compiled OpenVINO model on the CPU; `run` is serialised by a lock (one infer request).

    threads: INFERENCE_NUM_THREADS (None: OpenVINO's default, every core). One stream and the latency
    hint: the engine's batcher makes one call at a time, so the call gets every thread.
    """

    def __init__(self, model_path: Path, precision: str, threads: int | None = None) -> None:
        if precision not in OV_PRECISIONS:
            raise ConfigError(f"OpenVINO runs precisions {list(OV_PRECISIONS)}, not {precision!r}")
        if not openvino_available():
            raise ConfigError(NOT_INSTALLED)
        import openvino as ov
        import openvino.properties as props
        import openvino.properties.hint as hints

        capability = cpu_capability()
        if precision == "bf16" and not capability.bf16:
            raise ConfigError(
                "precision 'bf16' needs a CPU with AMX-BF16 or AVX512-BF16 (this one has "
                f"{list(capability.flags) or 'neither'}; OpenVINO offers {list(capability.capabilities)}): "
                "use fp32 or int8"
            )
        config: dict[str, Any] = {
            hints.inference_precision: ov.Type.bf16 if precision == "bf16" else ov.Type.f32,
            hints.performance_mode: hints.PerformanceMode.LATENCY,
            props.num_streams: 1,
        }
        if threads:
            config[props.inference_num_threads] = threads
        core = ov.Core()
        model = core.read_model(str(model_path))
        self._compiled = core.compile_model(model, "CPU", config)
        self._request = self._compiled.create_infer_request()
        self._lock = threading.Lock()
        self.precision = precision
        self.properties = {
            "execution_devices": ",".join(self._compiled.get_property(props.execution_devices)),
            "inference_precision": self._compiled.get_property(hints.inference_precision).to_string(),
            "inference_num_threads": str(self._compiled.get_property(props.inference_num_threads)),
            "num_streams": str(self._compiled.get_property(props.num_streams)),
            "device": capability.device,
            "version": ov.get_version(),
        }
        self.name = f"openvino/{self.properties['execution_devices']} {precision}"

    def run(self, sils: np.ndarray) -> np.ndarray:
        sils = np.ascontiguousarray(sils, dtype=np.float32)
        with self._lock:
            self._request.infer([sils])
            out = np.array(self._request.get_output_tensor(0).data, dtype=np.float32)  # (N, D), a copy
        return out
