"""The onnxruntime provider chain and the TensorRT provider's shape profile, computed from the manifest.

The profile is plain data, so it is checked here on the CPU; running it needs a GPU
(tests/test_runtime_embedder.py::test_gpu_backends_match_cpu, marked gpu).
"""

from __future__ import annotations

from pathlib import Path

import onnxruntime as ort
import pytest

from gaitlu.errors import ConfigError
from gaitlu.manifest import InputSpec
from runtime.backends import PROVIDERS, ort_provider_chain, tensorrt_profile


def input_spec(min_frames: int, max_frames: int = 300, max_batch: int = 32) -> InputSpec:
    return InputSpec(
        name="frames_in",
        dtype="float32",
        shape=["batch", "frames", 64, 44],
        value_range=(0.0, 1.0),
        max_batch=max_batch,
        max_frames=max_frames,
        preprocessing="gaitlu.preprocess.to_model_frames, then uint8 / 255",
        dtype_choice="float32",
        min_frames=min_frames,
    )


def test_the_profile_starts_at_the_graphs_minimum_frames() -> None:
    """GaitGL's graph takes no fewer than 3 frames: a profile from 1 would not build."""
    assert tensorrt_profile(input_spec(min_frames=3), max_batch=32) == {
        "trt_profile_min_shapes": "frames_in:1x3x64x44",
        "trt_profile_opt_shapes": "frames_in:8x92x64x44",
        "trt_profile_max_shapes": "frames_in:32x300x64x44",
    }


def test_the_tuning_point_stays_inside_the_profile() -> None:
    profile = tensorrt_profile(input_spec(min_frames=1, max_frames=20), max_batch=4)
    assert profile["trt_profile_min_shapes"] == "frames_in:1x1x64x44"
    assert profile["trt_profile_opt_shapes"] == "frames_in:4x20x64x44"
    assert profile["trt_profile_max_shapes"] == "frames_in:4x20x64x44"


def test_the_tensorrt_provider_gets_the_profile_and_cpu_stays_last(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    offered = [PROVIDERS["tensorrt"], PROVIDERS["cuda"], PROVIDERS["cpu"]]
    monkeypatch.setattr(ort, "get_available_providers", lambda: offered)
    chain = ort_provider_chain("auto", input_spec(min_frames=3), 16, tmp_path)
    (trt_name, options), cuda, cpu = chain
    assert (trt_name, cuda, cpu) == tuple(offered)
    assert options["trt_profile_min_shapes"] == "frames_in:1x3x64x44"
    assert options["trt_profile_max_shapes"] == "frames_in:16x300x64x44"
    assert options["trt_engine_cache_path"] == str(tmp_path)


def test_a_named_gpu_backend_this_install_lacks_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(ort, "get_available_providers", lambda: [PROVIDERS["cpu"]])  # a CPU-only install
    with pytest.raises(ConfigError, match="TensorrtExecutionProvider"):
        ort_provider_chain("tensorrt", input_spec(min_frames=1), 8, tmp_path)
    assert ort_provider_chain("auto", input_spec(min_frames=1), 8, tmp_path) == [PROVIDERS["cpu"]]
