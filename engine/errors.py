"""What the engine refuses or fails at, as domain errors: no HTTP here.

Each names one situation and carries what a caller needs to act on it (how long to wait, which limit);
the service turns them into statuses in its one table (service/errors.py), the CLI prints them. Errors
about the input itself come from the stages that read it (`gaitlu.errors.SequenceError`, the `video`
errors) and about galleries from `gallery.errors`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from gaitlu.errors import GaitluError, SequenceError
from video import VideoLimitError

if TYPE_CHECKING:
    from video import ExtractionResult


class EngineError(GaitluError):
    """Base class of the engine's own failures."""


class Overloaded(EngineError):
    """Refused at once because the work would queue beyond a bound; nothing was done. Retry later."""

    def __init__(self, retry_after_s: int, reason: str = "the inference queue is full") -> None:
        super().__init__(f"{reason}; retry later")
        self.retry_after_s = retry_after_s


class NotStarted(EngineError):
    """The engine was used before `start` (or after `stop`)."""

    def __init__(self) -> None:
        super().__init__("the engine is not started (call Engine.start first)")


class ShuttingDown(EngineError):
    """The engine stopped while the work was queued, or refuses new work because it is stopping."""

    def __init__(self) -> None:
        super().__init__("the service is shutting down")


class NotReady(EngineError):
    """The engine cannot serve now: its model does not answer the readiness check as it did at start, or
    every decode worker is stuck; `Engine.check_ready` says which."""

    def __init__(self, reason: str = "the model does not answer the readiness check (see the logs)") -> None:
        super().__init__(reason)


class InferenceFailed(EngineError):
    """The runtime raised on a batch: not the caller's fault; the engine is not ready until a
    readiness check succeeds again."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__("inference failed on this batch; retry shortly")
        self.cause = type(cause).__name__


class InferenceTimeout(EngineError):
    """The result did not come within the inference timeout (the batch may still finish)."""

    def __init__(self) -> None:
        super().__init__("inference took too long; retry later")


class DecodeTimeout(EngineError):
    """An upload was not decoded within the decode deadline (waiting for a worker included): the server
    is too busy now. Nothing was done with it; retry later."""

    def __init__(self, timeout_s: float, retry_after_s: int = 1) -> None:
        super().__init__(f"the upload was not decoded within {timeout_s:g} s; retry later")
        self.retry_after_s = retry_after_s


class VideoTooLarge(VideoLimitError):
    """A video upload is over the engine's byte limit (checked before anything is decoded)."""

    def __init__(self, name: str, size: int, limit_bytes: int) -> None:
        super().__init__(f"{name}: {size} bytes is over the {limit_bytes}-byte video limit")
        self.limit_bytes = limit_bytes


class MethodUnavailable(SequenceError):
    """The video extraction method asked for needs something this engine was not given."""


class InvalidTrack(SequenceError):
    """The track index asked for is not one of the video's tracks; `result` lists those found."""

    def __init__(self, message: str, result: ExtractionResult) -> None:
        super().__init__(message)
        self.result = result


class NotCalibrated(EngineError):
    """A decision at a false accept rate was asked of a model without a calibration in its manifest."""

    REMEDY = (
        "calibrate the model on labelled people it was not trained on: "
        "`gaitlu calibrate --artifact DIR --dataset LABELLED_DIR`, then restart the service"
    )

    def __init__(self) -> None:
        super().__init__(f"this model is not calibrated, so there is no threshold for a FAR; {self.REMEDY}")
