"""`gaitlu export` end to end: checkpoint -> checked ONNX graph (+ int8 / fp16 / TensorRT) -> manifest.

Everything is built in a staging folder beside the destination and moved in only after every check
passed, manifest last: a failed export leaves the destination as it was, and a reader never finds a
manifest that points at files from another export.
"""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import logging
import os
import platform
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from export import calibration, checks, graph, precision, tensorrt
from export.errors import ExportError
from gaitlu.files import sha256_file
from gaitlu.manifest import (
    FORMAT,
    MANIFEST_NAME,
    Evaluation,
    InputSpec,
    Manifest,
    ModelFile,
    ModelInfo,
    OutputSpec,
    Parity,
    Source,
    TensorRTInfo,
    VariantPrecision,
    describe_file,
    write_manifest,
)
from gaitlu.preprocess import FRAME_HEIGHT, MODEL_WIDTH
from train.checkpoint import load_checkpoint
from train.config import config_to_dict
from train.network import GaitNetwork, NetworkConfig
from train.zoo.registry import architecture_of

logger = logging.getLogger(__name__)

FP32_FILE, INT8_FILE, FP16_FILE = "model.onnx", "model.int8.onnx", "model.fp16.onnx"


@dataclass(frozen=True)
class ExportOptions:
    """What `gaitlu export` was asked for (its CLI options)."""

    opset: int = 18
    fp16: bool = False
    int8: bool = False
    trt: bool = False
    max_batch: int = 32  # TensorRT profile and export bound; the runtime splits bigger batches
    max_frames: int = 720  # OpenGait's test-time limit; longer sequences keep their first max_frames
    calibration: Path | None = None
    parity: checks.ParityMode = "quick"
    parity_threshold: float = checks.PARITY_THRESHOLD
    parity_cases: tuple[tuple[int, int], ...] | None = None  # overrides the mode's grid (tests)
    quality_subjects: int = 8  # synthetic people for the int8/fp16 Rank-1 check (4 walks each)

    def __post_init__(self) -> None:
        if self.max_batch < 1 or self.max_frames < 1:
            raise ExportError("--max-batch and --max-frames must be at least 1")
        if self.quality_subjects < 2:
            raise ExportError("the Rank-1 check needs at least 2 synthetic subjects")


@dataclass
class ExportResult:
    manifest: Manifest
    notes: list[str] = field(default_factory=list)  # things the user should know (e.g. no TensorRT)


def library_versions() -> dict[str, str]:
    names = ("gaitlu", "torch", "onnx", "onnxscript", "onnxruntime", "numpy")
    found = {"python": platform.python_version()}
    for name in names:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return found


def _reduced_precision(
    options: ExportOptions, staging: Path, fp32: ort.InferenceSession, parts: int
) -> dict[VariantPrecision, ModelFile]:
    """The requested int8/fp16 variants, each measured against fp32 (cosine, and Rank-1 on synthetic
    people); int8 is calibrated on --calibration's even-indexed sequences, or on synthetic walks."""
    if not (options.int8 or options.fp16):
        return {}
    held_out: list[np.ndarray] = []
    if options.calibration is not None:
        real = calibration.load_calibration(options.calibration)
        calibrate, held_out = real[::2], real[1::2]
        source = f"{len(calibrate)} sequences from {options.calibration}"
    else:
        calibrate = calibration.synthetic_calibration()
        source = f"{len(calibrate)} synthetic walks"
    labelled = calibration.synthetic_labelled(options.quality_subjects)
    note = (
        f"calibrated on {source}; cosine over {len(held_out)} held-out real and {len(labelled.subjects)} "
        f"synthetic sequences; Rank-1 (leave-one-out, cosine) over the synthetic ones "
        f"({options.quality_subjects} people x {calibration.WALKS_PER_SUBJECT} walks)"
    )
    variants: dict[VariantPrecision, ModelFile] = {}
    if options.int8:
        precision.quantize_int8(staging / FP32_FILE, staging / INT8_FILE, calibrate)
        variants["int8"] = describe_file(staging, INT8_FILE, "int8")
    if options.fp16:
        precision.convert_fp16(staging / FP32_FILE, staging / FP16_FILE)
        variants["fp16"] = describe_file(staging, FP16_FILE, "fp16")
    for name, entry in variants.items():
        session = checks.cpu_session(staging / entry.file)
        quality = checks.variant_quality(fp32, session, held_out, labelled, parts, note)
        logger.info(
            "%s vs fp32: min cosine %.6f, Rank-1 drop %.2f", name, quality.min_cosine, quality.rank1_drop
        )
        variants[name] = entry.model_copy(update={"quality": quality})
    return variants


def _publish(staging: Path, out: Path) -> None:
    """Move the staged files into `out`, manifest last."""
    out.mkdir(parents=True, exist_ok=True)
    names = sorted(p.name for p in staging.iterdir() if p.name != MANIFEST_NAME)
    for name in [*names, MANIFEST_NAME]:
        os.replace(staging / name, out / name)


def build_manifest(
    model: GaitNetwork[NetworkConfig],
    ckpt_path: Path,
    ckpt: dict[str, Any],
    options: ExportOptions,
    variants: dict[VariantPrecision, ModelFile],
    parity: Parity,
    trt_info: TensorRTInfo | None,
) -> Manifest:
    config = model.config
    recorded = (ckpt.get("config") or {}).get("evaluation")
    return Manifest(
        format=FORMAT,
        model=ModelInfo(name=architecture_of(model).name, config=config_to_dict(config)),
        input=InputSpec(
            name=graph.INPUT_NAME,
            dtype="float32",
            shape=["batch", "frames", FRAME_HEIGHT, MODEL_WIDTH],
            value_range=(0.0, 1.0),
            max_batch=options.max_batch,
            max_frames=options.max_frames,
            preprocessing="gaitlu.preprocess.to_model_frames, then uint8 / 255",
            dtype_choice=graph.INPUT_DTYPE_CHOICE,
            min_frames=model.min_frames,
        ),
        output=OutputSpec(
            name=graph.OUTPUT_NAME,
            parts=config.layout.parts,
            part_dim=config.layout.part_dim,
            layout="part-major",
            normalisation=config.layout.normalisation,
        ),
        metric="ip",
        model_sha256=variants["fp32"].sha256,
        variants=variants,
        tensorrt=trt_info,
        opset=options.opset,
        parity=parity,
        source=Source(
            checkpoint=str(ckpt_path.resolve()),
            sha256=sha256_file(ckpt_path),
            step=ckpt.get("step"),
            config=ckpt.get("config") or {},
        ),
        exported_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        versions=library_versions(),
        evaluation=Evaluation.model_validate(recorded) if recorded else None,
    )


def export_artifact(checkpoint: Path, out: Path, options: ExportOptions) -> ExportResult:
    """Export `checkpoint` into the artifact folder `out`; ExportError (nothing written) on failure."""
    model, ckpt = load_checkpoint(checkpoint)
    parts = model.config.layout.parts
    notes: list[str] = []
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.staging-", dir=out.parent))
    try:
        graph.export_onnx(model, staging / FP32_FILE, options.opset, options.max_batch, options.max_frames)
        fp32 = checks.cpu_session(staging / FP32_FILE)
        parity = checks.check_parity(
            model, fp32, options.parity, options.parity_threshold, options.parity_cases
        )
        variants: dict[VariantPrecision, ModelFile] = {"fp32": describe_file(staging, FP32_FILE, "fp32")}
        variants.update(_reduced_precision(options, staging, fp32, parts))
        trt_info = None
        if options.trt:
            reason = tensorrt.tensorrt_unavailable_reason()
            if reason is None:
                trt_info = tensorrt.build_plan(
                    staging / FP32_FILE,
                    staging,
                    options.max_batch,
                    options.max_frames,
                    fp32,
                    parts,
                    model.min_frames,
                )
            else:
                notes.append(reason)
        manifest = build_manifest(model, checkpoint, ckpt, options, variants, parity, trt_info)
        write_manifest(manifest, staging)
        _publish(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return ExportResult(manifest, notes)
