"""The engine's one settings object: which model and store, and what each piece of work may cost.

The service builds it from its environment-driven settings (`service.settings.Settings.engine_settings`)
with the tight bounds of untrusted uploads; `gaitlu enroll --offline` builds it for a local dataset (the
dataset limits, as many video workers as enrolment threads).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from engine.batcher import BatchSettings
from gaitlu.sequence import DEFAULT_LIMITS, SequenceLimits
from gallery.backends import STORE_FILE, Backend, MilvusSettings
from gallery.settings import IndexSettings
from runtime import BackendName, Precision
from video import VideoLimits

__all__ = ["STORE_FILE", "EngineSettings"]  # STORE_FILE: the local store inside a data dir


@dataclass(frozen=True)
class EngineSettings:
    artifact: Path  # export artifact folder (`gaitlu export ... --out DIR`)
    store_path: Path  # the gallery database (DATA_DIR/galleries.db for the service)
    backend: BackendName = "auto"  # runtime backend (runtime/selection.py chooses for "auto")
    precision: Precision = "auto"  # fp32 / fp16 / bf16 / int8; auto: the backend's fastest checked one
    threads: int | None = None  # inference threads: onnxruntime intra-op, OpenVINO's (None: their default)
    batch: BatchSettings = field(default_factory=BatchSettings)
    decode_workers: int = 4  # sequence uploads decoded at once (bounds decode memory and CPU)
    # Uploads waiting for a decode worker, at most; one more, or one whose wait would outlast its deadline,
    # is refused (Overloaded). 64: as many as the service lets in flight (max_requests_in_flight).
    decode_queue: int = 64
    decode_timeout_s: float | None = None  # from asking to decoded, waiting included (None: no deadline)
    sequence_limits: SequenceLimits = DEFAULT_LIMITS  # what one sequence may cost to read
    video_workers: int = 2  # video extractions at once; one more is refused (Overloaded)
    video_limits: VideoLimits = field(default_factory=VideoLimits)
    segmentation_model: Path | None = None  # person-segmentation ONNX: enables the video method "onnx"
    index: IndexSettings = field(default_factory=IndexSettings)  # how local galleries are indexed
    gallery_backend: Backend = "local"  # "milvus": the galleries on `milvus` (shared by replicas)
    milvus: MilvusSettings | None = None
    store_max_bytes: int | None = None  # how large the local gallery database may grow (None: the disk)
    # the master key that encrypts the local store at rest (gallery/crypto.py); None: plaintext
    encryption_key: bytes | None = field(default=None, repr=False)
