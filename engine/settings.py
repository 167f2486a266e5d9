"""The engine's one settings object: which model and store, and what each piece of work may cost.

`EngineOptions` holds every knob, each with its one default: the bounds of untrusted uploads, which the
service nests as it is (`service.settings.Settings.engine`, from `GAITLU_*` variables). `gaitlu enroll
--offline` builds its own for a local dataset (the dataset limits, as many video workers as enrolment
threads, no decode deadline).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from engine.batcher import BatchSettings
from gaitlu.sequence import SequenceLimits
from gallery.settings import IndexSettings
from gallery.stores import STORE_FILE, MilvusSettings, StoreKind
from runtime import BackendName, Precision
from video import VideoLimits

__all__ = ["STORE_FILE", "EngineOptions", "EngineSettings"]  # STORE_FILE: the local store inside a data dir

MIB = 1024 * 1024


class EngineOptions(BaseModel):
    """How the model runs and what each piece of work may cost; unknown keys and out-of-range values are
    errors. The service reads each from `GAITLU_` + its upper-case name (docs/api.md)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # Runtime (runtime/selection.py): auto = a GPU path on a GPU, OpenVINO bf16 on a bf16 CPU where the
    # artifact records its parity, else onnxruntime; openvino / cpu / cuda / tensorrt / trt-plan force one
    # (trt-engine: trt-plan's older name, still accepted).
    backend: BackendName = "auto"
    precision: Precision = "auto"  # fp32 / fp16 / bf16 / int8; auto: the backend's fastest checked one
    threads: int | None = Field(None, ge=1)  # inference threads (onnxruntime intra-op / OpenVINO; None: all)

    # Micro-batching.
    max_batch: int = Field(8, ge=1, le=1024)  # sequences per runtime call; 1 turns batching off
    max_wait_ms: float = Field(2.0, ge=0, le=1000)  # how long a lone request waits for company
    max_queue: int = Field(128, ge=1)  # sequences waiting; beyond this requests are refused (Overloaded)
    inference_timeout_s: float = Field(120.0, gt=0)  # a request waits at most this long for its result

    # One decoded sequence, in bytes and in pixels: 720 frames of 320 x 240 raw masks or 30 of 1080p
    # (larger raw masks: align them client-side with gaitlu.preprocess, or upload the video).
    max_decoded_bytes: int = Field(64 * MIB, ge=1024)
    max_frames: int = Field(720, ge=1)  # frames per sequence (OpenGait's test-time length)
    decode_workers: int = Field(4, ge=1)  # sequences decoded at once (bounds decode memory and CPU)
    # Sequences waiting for a decode worker: one more, or one whose wait would outlast decode_timeout_s,
    # is refused (Overloaded). As many as the service lets in flight: closed-loop clients wait, not 429.
    decode_queue: int = Field(64, ge=0)
    decode_timeout_s: float | None = Field(30.0, gt=0)  # a sequence's wait + decode (None: no deadline)

    # Videos: silhouettes are extracted from them, seconds of CPU each.
    max_video_bytes: int = Field(32 * MIB, ge=1024)  # one video file
    max_video_frames: int = Field(1500, ge=1)  # decoded frames per video (a minute at 25 fps)
    max_video_seconds: float = Field(60.0, gt=0)  # declared duration, then decoded frames x fps
    max_video_pixels: int = Field(1920 * 1088, ge=64 * 64)  # per frame: 1080p; 4K is refused
    video_timeout_s: float = Field(60.0, gt=0)  # wall clock of one extraction
    video_workers: int = Field(2, ge=1)  # extractions at once; one more is refused (Overloaded)
    segmentation_model: Path | None = None  # person-segmentation ONNX: enables the video method "onnx"

    # How large the local gallery database may grow (None: as its disk allows); beyond, writes fail.
    store_max_bytes: int | None = Field(None, ge=256 * 1024)

    @property
    def batch(self) -> BatchSettings:
        return BatchSettings(self.max_batch, self.max_wait_ms, self.max_queue, self.inference_timeout_s)

    @property
    def sequence_limits(self) -> SequenceLimits:
        """What one sequence may cost to read."""
        return SequenceLimits(
            max_frames=self.max_frames,
            max_bytes=self.max_decoded_bytes,
            max_pixels=self.max_decoded_bytes,  # the frames become uint8: one byte per pixel
            max_zip_uncompressed=self.max_decoded_bytes,
        )

    @property
    def video_limits(self) -> VideoLimits:
        """What one video may cost to decode and extract."""
        return VideoLimits(
            max_bytes=self.max_video_bytes,
            max_frames=self.max_video_frames,
            max_duration_s=self.max_video_seconds,
            max_pixels=self.max_video_pixels,
            max_seconds=self.video_timeout_s,
        )


@dataclass(frozen=True)
class EngineSettings:
    artifact: Path  # export artifact folder (`gaitlu export ... --out DIR`)
    store_path: Path  # the gallery database (DATA_DIR/galleries.db for the service)
    options: EngineOptions = field(default_factory=EngineOptions)
    # What one sequence may cost to read; None: the options' bounds (max_frames, max_decoded_bytes). The
    # offline CLI passes the dataset limits (gaitlu.labelled.DATASET_LIMITS).
    sequence_limits: SequenceLimits | None = None
    index: IndexSettings = field(default_factory=IndexSettings)  # how local galleries are indexed
    store_kind: StoreKind = "local"  # "milvus": the galleries on `milvus` (shared by replicas)
    milvus: MilvusSettings | None = None
    # the master key that encrypts the local store at rest (gallery/crypto.py); None: plaintext
    encryption_key: bytes | None = field(default=None, repr=False)
