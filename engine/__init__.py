"""The engine: an async API over the runtime, the micro-batcher and the galleries, with no HTTP in it.

Layers, each usable without the one above (as infinity's): the HTTP routes (service/) or the offline
CLI (client/) -> `Engine` (engine/engine.py, async, domain errors only) -> `Batcher` (engine/batcher.py,
a bounded queue and an inference thread) -> the runtime (runtime/, an export artifact behind `embed`)
and the galleries (gallery/).
"""

from engine.decisions import Threshold, Verification
from engine.engine import (
    Decoded,
    Engine,
    Frames,
    LocalFile,
    Probe,
    ProbeResult,
    SequenceEmbedding,
    SequenceInput,
    Upload,
    safe_name,
)
from engine.errors import (
    DecodeTimeout,
    EngineError,
    InferenceFailed,
    InferenceTimeout,
    InvalidTrack,
    MethodUnavailable,
    NotCalibrated,
    NotReady,
    NotStarted,
    Overloaded,
    ShuttingDown,
    VideoTooLarge,
)
from engine.settings import STORE_FILE, EngineOptions, EngineSettings
from engine.videos import VideoOptions, VideoTrack

__all__ = [
    "STORE_FILE",
    "DecodeTimeout",
    "Decoded",
    "Engine",
    "EngineError",
    "EngineOptions",
    "EngineSettings",
    "Frames",
    "InferenceFailed",
    "InferenceTimeout",
    "InvalidTrack",
    "LocalFile",
    "MethodUnavailable",
    "NotCalibrated",
    "NotReady",
    "NotStarted",
    "Overloaded",
    "Probe",
    "ProbeResult",
    "SequenceEmbedding",
    "SequenceInput",
    "ShuttingDown",
    "Threshold",
    "Upload",
    "Verification",
    "VideoOptions",
    "VideoTooLarge",
    "VideoTrack",
    "safe_name",
]
