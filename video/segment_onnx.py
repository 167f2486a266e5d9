"""Person segmentation with a user-supplied ONNX model, for moving cameras and crowds.

Contract (docs/video.md), checked when the model is loaded:
- input: the model's first input, float32, shape (1, 3, H, W): RGB, values in [0, 1]. A fixed H and W
  means frames are resized to it; symbolic (dynamic) H and W get the working frame as it is;
- output: the model's first output, (1, 1, H', W') or (1, H', W'), a per-pixel person probability in
  [0, 1], or logits. Metadata property `gaitlu.output` = `probability` | `logits` says which; without
  it, a map with values outside [0, 1] is read as logits. The map is resized to the frame and thresholded
  at probability 0.5 (logit 0); connected components then become person instances.
Nothing is downloaded: the model is a local file. An ONNX Runtime session is thread-safe, so one
`OnnxSegmenter` can serve many extractions at once.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

import cv2
import numpy as np

from gaitlu.errors import ConfigError
from video.errors import VideoError

logger = logging.getLogger(__name__)

OUTPUT_KINDS = ("probability", "logits")
_METADATA_KEY = "gaitlu.output"


def _fixed(dim: object) -> int | None:
    return dim if isinstance(dim, int) and dim > 0 else None


class OnnxSegmenter:
    """A loaded person-segmentation model: `masks(frames)` -> 0/255 person masks, one per frame."""

    def __init__(self, model: str | os.PathLike[str], *, threads: int = 0) -> None:
        try:
            import onnxruntime as ort
        except ModuleNotFoundError as exc:
            raise ConfigError(
                "--method onnx needs the onnxruntime package (pip install onnxruntime)"
            ) from exc
        path = Path(model)
        if not path.is_file():
            raise ConfigError(f"segmentation model {path} does not exist")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own untyped errors for any unreadable model
            raise ConfigError(f"segmentation model {path}: cannot load ({exc})") from None
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        if len(inp.shape) != 4 or _fixed(inp.shape[1]) not in (None, 3):
            raise ConfigError(f"segmentation model {path}: input must be (1, 3, H, W), got {inp.shape}")
        if inp.type != "tensor(float)":
            raise ConfigError(f"segmentation model {path}: input must be float32, got {inp.type}")
        self.input_size = (_fixed(inp.shape[2]), _fixed(inp.shape[3]))  # (H, W), None where dynamic
        out = self.session.get_outputs()[0]
        if len(out.shape) not in (3, 4):
            raise ConfigError(
                f"segmentation model {path}: output must be (1, 1, H, W) or (1, H, W), got {out.shape}"
            )
        declared = self.session.get_modelmeta().custom_metadata_map.get(_METADATA_KEY)
        if declared is not None and declared not in OUTPUT_KINDS:
            raise ConfigError(f"segmentation model {path}: {_METADATA_KEY} must be one of {OUTPUT_KINDS}")
        self.output_kind = declared  # None: decided per frame from the value range
        self.name = str(path)

    def _input(self, frame: np.ndarray) -> np.ndarray:
        height, width = self.input_size
        if height is not None or width is not None:
            size = (width or frame.shape[1], height or frame.shape[0])
            frame = cv2.resize(frame, size, interpolation=cv2.INTER_AREA)
        rgb = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
        return np.ascontiguousarray(rgb.transpose(2, 0, 1)[None], dtype=np.float32) / np.float32(
            255
        )  # (1, 3, H, W)

    def person_probability(self, frame: np.ndarray) -> np.ndarray:
        """(H, W, 3) uint8 BGR -> (H, W) float32 person probability at the frame's size."""
        out = self.session.run(None, {self.input_name: self._input(frame)})[0]
        if out.ndim not in (3, 4) or out.shape[0] != 1 or (out.ndim == 4 and out.shape[1] != 1):
            raise VideoError(
                f"segmentation model {self.name}: produced shape {out.shape}, expected (1, 1, H, W)"
            )
        scores: np.ndarray = out.reshape(out.shape[-2:]).astype(np.float32)  # (1, 1, H', W') -> (H', W')
        kind = self.output_kind or ("logits" if scores.min() < 0 or scores.max() > 1 else "probability")
        if kind == "logits":
            scores = 1.0 / (1.0 + np.exp(-np.clip(scores, -50, 50)))
        if scores.shape != frame.shape[:2]:
            scores = cv2.resize(scores, frame.shape[1::-1], interpolation=cv2.INTER_LINEAR)
        return scores

    def masks(self, frames: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        """(H, W, 3) uint8 BGR frames -> (H, W) uint8 masks, 255 = person (probability above 0.5)."""
        for frame in frames:
            yield (self.person_probability(frame) > 0.5).astype(np.uint8) * np.uint8(255)
