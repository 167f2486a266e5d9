"""Background subtraction for fixed cameras: OpenCV MOG2 or KNN, started from a known background.

A subtractor that learns from scratch shows the person as background for its first frames and leaves a
ghost where they stood. So the model is primed before the first frame is segmented: with the median of
the first `init_frames` frames (a walker crossing the view covers each pixel in few of them), or with a
background image the user gives. Priming feeds those frames with the person's pixels replaced by the
background, so the model learns the camera's real noise, not a noiseless still.

Per frame: global gain compensation (lighting drift and flicker scale the whole image; dividing by the
median frame/background ratio undoes it), the subtractor at a slow fixed learning rate (a person who
pauses is not absorbed within seconds), then shadows (marked 127 by OpenCV) are dropped.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import cv2
import numpy as np

from gaitlu.errors import ConfigError

logger = logging.getLogger(__name__)

ALGORITHMS = ("mog2", "knn")
FOREGROUND = 255  # OpenCV's subtractors mark shadows 127 and foreground 255
_PERSON_DIFF = 20  # grey-level difference above which a priming pixel is taken for the person
_SPREAD = 20  # frames of the buffered head used for the median and for priming
_GAIN_STEP = 8  # gain is estimated on every 8th row and column


@dataclass(frozen=True)
class BgSubConfig:
    algorithm: str = "mog2"
    init_frames: int = 60  # buffered for the median background (and for priming)
    learning_rate: float = 0.003  # after priming: about 300 frames (12 s at 25 fps) to absorb a change
    var_threshold: float = 16.0  # MOG2: squared Mahalanobis distance to call a pixel foreground
    dist2_threshold: float = 400.0  # KNN: squared distance to call a pixel foreground
    compensate_gain: bool = True

    def __post_init__(self) -> None:
        if self.algorithm not in ALGORITHMS:
            raise ConfigError(
                f"background subtraction algorithm must be one of {ALGORITHMS}, got {self.algorithm!r}"
            )
        if self.init_frames < 1 or not 0 < self.learning_rate < 1:
            raise ConfigError("init_frames must be >= 1 and learning_rate in (0, 1)")


class BackgroundSubtractor:
    """Frames in, foreground masks out, for one video (the model is state: make one per video)."""

    def __init__(self, config: BgSubConfig = BgSubConfig(), background: np.ndarray | None = None) -> None:
        self.config = config
        self.background = background  # (H, W, 3) uint8 BGR; resized to the frames if needed

    def _subtractor(self) -> cv2.BackgroundSubtractor:
        cfg = self.config
        if cfg.algorithm == "mog2":
            return cv2.createBackgroundSubtractorMOG2(
                history=500, varThreshold=cfg.var_threshold, detectShadows=True
            )
        return cv2.createBackgroundSubtractorKNN(
            history=500, dist2Threshold=cfg.dist2_threshold, detectShadows=True
        )

    def _initial_background(self, head: list[np.ndarray]) -> np.ndarray:
        height, width = head[0].shape[:2]
        if self.background is not None:
            if self.background.shape[:2] != (height, width):
                return cv2.resize(self.background, (width, height), interpolation=cv2.INTER_AREA)
            return self.background
        median: np.ndarray = np.median(np.stack(_spread(head)), axis=0)  # (N, H, W, 3) -> (H, W, 3)
        return median.astype(np.uint8)

    def masks(self, frames: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        """(H, W, 3) uint8 BGR frames -> (H, W) uint8 masks, 255 = moving foreground, shadows removed."""
        stream = iter(frames)
        head = list(itertools.islice(stream, self.config.init_frames))
        if not head:
            return
        background = self._initial_background(head)
        reference = _gain_sample(background)
        subtractor = self._subtractor()
        for i, frame in enumerate(head):  # prime: learn the scene and its noise, without the person
            frame = self._normalised(frame, reference)
            diff = cv2.cvtColor(cv2.absdiff(frame, background), cv2.COLOR_BGR2GRAY)  # (H, W)
            clean = frame.copy()
            # OpenCV takes a scalar as compare's src2; its generated stubs only say MatLike.
            person = cv2.compare(diff, _PERSON_DIFF, cv2.CMP_GT)  # type: ignore[call-overload]
            cv2.copyTo(background, person, clean)  # person -> scene
            subtractor.apply(clean, learningRate=1.0 / (i + 1))
        for frame in itertools.chain(head, stream):
            fg = subtractor.apply(self._normalised(frame, reference), learningRate=self.config.learning_rate)
            yield cv2.compare(fg, FOREGROUND, cv2.CMP_EQ)  # type: ignore[call-overload]  # scalar src2, as above

    def _normalised(self, frame: np.ndarray, reference: np.ndarray) -> np.ndarray:
        """The frame with the global gain (lighting drift, flicker) relative to the background undone."""
        if not self.config.compensate_gain:
            return frame
        gain = float(np.median(_gain_sample(frame) / reference))
        return frame if abs(gain - 1.0) < 0.005 else cv2.convertScaleAbs(frame, alpha=1.0 / gain)


def _spread(frames: list[np.ndarray]) -> list[np.ndarray]:
    """At most _SPREAD frames spread evenly over `frames`: as robust a median, for a fraction of the cost."""
    picks = np.unique(np.linspace(0, len(frames) - 1, _SPREAD).round().astype(int))
    return [frames[i] for i in picks]


def _gain_sample(frame: np.ndarray) -> np.ndarray:
    """A sparse grid of brightness values (about 1/64 of the pixels), floored to avoid dividing by 0."""
    sample: np.ndarray = frame[::_GAIN_STEP, ::_GAIN_STEP].sum(axis=2, dtype=np.float32) + 3.0  # (H/8, W/8)
    return sample
