"""Which backend and precision run an artifact: what was asked for, what this host offers, what passed.

`choose` turns a (backend, precision) request into one concrete pair and says why. `auto` takes the
fastest pair that is checked for this artifact: a prebuilt TensorRT plan or onnxruntime's GPU
providers on a GPU host; on a CPU with native bf16 (AMX or AVX512-BF16) OpenVINO in bf16 when the
artifact's manifest records that pair's parity as passed (`gaitlu parity`); onnxruntime otherwise.
OpenVINO pairs are parity-gated: one whose record is missing or failed is refused when asked for and
skipped by `auto`. onnxruntime fp32 is the reference the records are measured against; its int8 and
fp16 files carry their export-time quality records (manifest `variants`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import onnxruntime as ort

from gaitlu.errors import ConfigError
from gaitlu.manifest import Manifest
from runtime.backends import BACKENDS, PROVIDERS, trt_plan_usable
from runtime.openvino_backend import NOT_INSTALLED, OV_PRECISIONS, cpu_capability, openvino_available

Precision = Literal["auto", "fp32", "fp16", "bf16", "int8"]
PRECISIONS: tuple[str, ...] = ("auto", "fp32", "fp16", "bf16", "int8")
PARITY_THRESHOLD = 0.9999  # min per-sequence cosine against fp32 onnxruntime that a gated pair must reach
PARITY_GATED = ("openvino",)  # backends served only with a passing parity record


@dataclass(frozen=True)
class Choice:
    backend: str  # from BACKENDS; "auto" only as onnxruntime's GPU provider chain (TensorRT, CUDA, CPU)
    precision: str  # fp32 / fp16 / bf16 / int8
    reason: str  # why, in words (logged at load, reported by /model)


def parity_problem(manifest: Manifest, backend: str, precision: str) -> str | None:
    """None when the manifest records a passing parity check of this pair, else what is wrong."""
    key = f"{backend}/{precision}"
    record = manifest.backend_parity.get(key)
    if record is None:
        recorded = sorted(manifest.backend_parity) or "none"
        return (
            f"{key} has no parity record in this artifact's manifest (recorded: {recorded}); measure it "
            f"with `gaitlu parity ARTIFACT --sequences DIR --backend {backend} --precision {precision}`"
        )
    if not (record.passed and record.min_cosine >= PARITY_THRESHOLD):
        return (
            f"{key} failed its parity check: min cosine {record.min_cosine:.6f} against fp32 onnxruntime "
            f"(needs >= {PARITY_THRESHOLD}) on {record.sequences} sequences of {record.data}"
        )
    return None


def _gpu_providers() -> list[str]:
    available = ort.get_available_providers()
    return [name for name in ("tensorrt", "cuda") if PROVIDERS[name] in available]


def _openvino(manifest: Manifest, precision: str) -> Choice:
    """backend 'openvino' asked for by name: its precision must be runnable here and parity-checked."""
    if not openvino_available():
        raise ConfigError(NOT_INSTALLED)
    if precision == "auto":
        candidates = ["bf16", "fp32"] if cpu_capability().bf16 else ["fp32"]
        for candidate in candidates:
            if parity_problem(manifest, "openvino", candidate) is None:
                return Choice("openvino", candidate, f"openvino, precision auto: {candidate} passed parity")
        problems = "; ".join(str(parity_problem(manifest, "openvino", c)) for c in candidates)
        raise ConfigError(f"backend 'openvino' has no parity-checked precision for this host: {problems}")
    if precision not in OV_PRECISIONS:
        raise ConfigError(f"backend 'openvino' runs precisions {list(OV_PRECISIONS)}, not {precision!r}")
    if precision == "bf16" and not cpu_capability().bf16:
        raise ConfigError("precision 'bf16' needs a CPU with AMX-BF16 or AVX512-BF16; this one has neither")
    problem = parity_problem(manifest, "openvino", precision)
    if problem is not None:
        raise ConfigError(f"refusing backend 'openvino' at precision {precision!r}: {problem}")
    return Choice("openvino", precision, f"openvino {precision} asked for; parity passed")


def _auto_cpu(manifest: Manifest, precision: str) -> Choice:
    """backend 'auto' on a host without a GPU path."""
    if precision not in ("auto", "bf16"):
        return Choice("cpu", precision, f"auto with precision {precision}: onnxruntime CPU")
    why_not: str | None
    capability = cpu_capability()
    if not openvino_available():
        why_not = "OpenVINO is not installed"
    elif not capability.bf16:
        why_not = f"the CPU has no native bf16 (flags: {list(capability.flags) or 'none'})"
    else:
        why_not = parity_problem(manifest, "openvino", "bf16")
    if why_not is None:
        record = manifest.backend_parity["openvino/bf16"]
        return Choice(
            "openvino",
            "bf16",
            f"auto: OpenVINO bf16 on {capability.device or 'this CPU'} ({', '.join(capability.flags)}); "
            f"parity min cosine {record.min_cosine:.6f} on {record.sequences} sequences",
        )
    if precision == "bf16":
        raise ConfigError(f"precision 'bf16' runs on OpenVINO only, and here: {why_not}")
    return Choice("cpu", "fp32", f"auto: onnxruntime CPU fp32 (not OpenVINO bf16: {why_not})")


def choose(manifest: Manifest, backend: str, precision: str) -> Choice:
    """The concrete (backend, precision) for a request; ConfigError with the reason when it cannot run."""
    if backend not in BACKENDS:
        raise ConfigError(f"unknown backend {backend!r}; choose one of {list(BACKENDS)}")
    if precision not in PRECISIONS:
        raise ConfigError(f"unknown precision {precision!r}; choose one of {list(PRECISIONS)}")
    if backend == "openvino":
        return _openvino(manifest, precision)
    has_plan = manifest.tensorrt is not None and trt_plan_usable()
    if backend in ("trt-plan", "trt-engine") or (backend == "auto" and has_plan):
        return Choice("trt-plan", "fp16", "the artifact's prebuilt TensorRT plan (fp16)")
    if precision == "bf16" and backend != "auto":
        raise ConfigError(f"precision 'bf16' runs on backend 'openvino' (or 'auto'), not {backend!r}")
    if backend == "auto":
        gpu = _gpu_providers()
        if gpu and precision != "bf16":
            chosen = "fp32" if precision == "auto" else precision
            return Choice("auto", chosen, f"auto: onnxruntime with {gpu[0]} first on a GPU host, {chosen}")
        return _auto_cpu(manifest, precision)
    return Choice(backend, "fp32" if precision == "auto" else precision, f"onnxruntime {backend} asked for")
