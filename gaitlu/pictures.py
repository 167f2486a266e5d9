"""Arrays as pictures for people: the PNG and JPEG data URIs of the API's bodies.

The engine and the galleries deal in arrays (model frames, a video track's strip and thumbnails); the
faces turn them into pictures: the service for its responses (service/presentation.py), and both the
service and `gaitlu enroll --offline` for the GEI picture an enrolment stores (`gei_png`), which must be
the same bytes whichever face enrolled. So the encoding lives here, beside the API's bodies
(gaitlu/schemas.py), where both faces can reach it.
"""

from __future__ import annotations

import base64

import cv2
import numpy as np

from gaitlu.evaluation.gei import gait_energy_image

PNG_PREFIX = "data:image/png;base64,"
JPEG_PREFIX = "data:image/jpeg;base64,"
JPEG_QUALITY = 80


def png_data_uri(image: np.ndarray) -> str:
    """(H, W) uint8 -> `data:image/png;base64,...`."""
    ok, encoded = cv2.imencode(".png", image)
    if not ok:  # cv2 only fails on unsupported arrays, which model frames never are
        raise ValueError(f"cannot encode an image of shape {image.shape} and dtype {image.dtype} as PNG")
    return PNG_PREFIX + base64.b64encode(encoded.tobytes()).decode("ascii")


def jpeg_data_uri(image: np.ndarray) -> str:
    """(H, W, 3) BGR uint8 -> `data:image/jpeg;base64,...` at JPEG_QUALITY."""
    ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:  # only for arrays cv2 cannot encode, which decoded frames never are
        raise ValueError(f"cannot encode an image of shape {image.shape} as JPEG")
    return JPEG_PREFIX + base64.b64encode(encoded.tobytes()).decode("ascii")


def gei_png(frames: np.ndarray) -> str:
    """(T, 64, 44) uint8 model frames -> their GEI (the mean frame) as a grey PNG data URI."""
    gei = np.round(gait_energy_image(frames) * 255).astype(np.uint8)  # (64, 44) in [0, 255]
    return png_data_uri(gei)
