"""The HTTP API's bodies: the one contract between the service and its clients (pydantic only).

One model per direction (`*Request` in, `*Public` / `*Response` out): the service validates and answers
with them, and the client (client/api.py) parses answers into them, so a shape is written once.

Embeddings travel as flat float lists, part-major (gaitlu.embedding): `dim` = `parts` x `channels`
floats (the layout's `size`), each part L2-normalised for a per-part-l2 model, so the inner product of
two embeddings divided by `parts` is their mean per-part cosine (the score galleries report).
"""

from __future__ import annotations

import base64
import binascii
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema, model_validator
from pydantic_core import PydanticCustomError


def _strict_base64(value: Any) -> bytes:
    """Standard base64, every character checked (pydantic's own decoder skips invalid ones)."""
    if not isinstance(value, str):
        raise ValueError("expected a base64 string")
    try:
        return base64.b64decode(value, validate=True)
    except binascii.Error as exc:
        raise ValueError(f"invalid base64: {exc}") from None


Base64File = Annotated[
    bytes, BeforeValidator(_strict_base64), WithJsonSchema({"type": "string", "contentEncoding": "base64"})
]


MAX_K = 1000  # the most subjects one search returns (the galleries refuse more too)
MAX_SEQUENCES = 1024  # the most sequences one request carries (the service's GAITLU_MAX_FILES may say fewer)
MAX_EMBEDDING_FLOATS = 65536  # the longest embedding a search takes (models here give 4-16k)


def _at_most(limit: int) -> BeforeValidator:
    """A list's length checked before its items are: pydantic's own `max_length` is checked after
    validating every item, so 400k entries would each cost their validation before being refused."""

    def check(value: Any) -> Any:
        if isinstance(value, list) and len(value) > limit:
            raise PydanticCustomError(
                "too_long",
                "List should have at most {max_length} items, not {actual_length}",
                {"max_length": limit, "actual_length": len(value)},
            )
        return value

    return BeforeValidator(check)


class _In(BaseModel):
    # A misspelt field is an error, not silently ignored; NaN and infinities mean nothing in any field.
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class ErrorInfo(BaseModel):
    code: str = Field(description="Stable machine-readable reason, e.g. `model_mismatch`, `overloaded`.")
    message: str = Field(description="What went wrong and, where there is one, the remedy.")
    detail: Any = None
    request_id: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorInfo


class Timings(BaseModel):
    decode_ms: float = Field(0.0, description="Decoding and preprocessing the upload.")
    queue_ms: float = Field(0.0, description="Waiting for a batch to start.")
    inference_ms: float = Field(0.0, description="The batch's runtime call.")


# ----- videos


class VideoParams(_In):
    """Multipart text fields that say how a video upload becomes a sequence (ignored for sequence files)."""

    method: Literal["bgsub", "onnx"] = Field(
        "bgsub", description="bgsub: fixed camera; onnx: the operator's segmentation model, if configured."
    )
    track: int | None = Field(
        None, ge=0, description="Index into the video's tracks (order of appearance); default: the best."
    )
    strip: bool = Field(False, description="Return a PNG strip of 12 aligned frames of the track.")


class VideoTrackPublic(BaseModel):
    """The person of a video upload that was embedded."""

    index: int = Field(description="In the video's tracks, as the `track` field counts them.")
    track_id: int
    frame_range: list[int] = Field(description="[first, last + 1) video frames with a detection.")
    silhouettes: int = Field(description="Aligned silhouettes extracted (frames the model may see).")
    quality: dict[str, Any] = Field(description="The extractor's per-track quality report.")
    tracks_found: int
    method: str
    video: dict[str, Any] = Field(description="The container's metadata: size, fps, frame count, codec.")
    strip: str | None = Field(None, description="With `strip=true`: a PNG data URI, aligned frames in a row.")


# ----- embedding


class SequenceJSON(_In):
    """One sequence in a JSON body: a base64-encoded .npy file (T x H x W, or one H x W frame)."""

    npy_b64: Base64File
    name: str = Field("sequence", max_length=128)


class EmbedRequest(_In):
    sequences: Annotated[list[SequenceJSON], _at_most(MAX_SEQUENCES)] = Field(
        min_length=1, max_length=MAX_SEQUENCES
    )


class EmbeddingPublic(BaseModel):
    name: str
    embedding: list[float] = Field(description="`dim` floats, part-major, each part L2-normalised.")
    frames: int = Field(description="Model frames used (after dropping empty frames and the length cap).")
    timings: Timings
    track: VideoTrackPublic | None = Field(None, description="For a video: the track embedded.")


class EmbedResponse(BaseModel):
    model_hash: str = Field(description="sha256 of the model that computed the embeddings.")
    parts: int
    channels: int = Field(description="Floats per part.")
    dim: int = Field(description="Floats per embedding: parts x channels.")
    data: list[EmbeddingPublic]
    count: int


# ----- search


class SearchParams(_In):
    gallery: str = Field(max_length=64)
    k: int = Field(5, ge=1, le=MAX_K)
    threshold: float | None = Field(None, ge=-1.0, le=1.0, description="Drop subjects scoring below this.")


class SearchRequest(SearchParams):
    """JSON search: by a precomputed embedding, or by a base64 .npy sequence (exactly one)."""

    embedding: Annotated[list[float], _at_most(MAX_EMBEDDING_FLOATS)] | None = Field(
        None, max_length=MAX_EMBEDDING_FLOATS, description="`dim` floats from this service's model."
    )
    sequence: SequenceJSON | None = None

    @model_validator(mode="after")
    def _one_query(self) -> SearchRequest:
        if (self.embedding is None) == (self.sequence is None):
            raise ValueError("give exactly one of `embedding` and `sequence`")
        return self


class SearchHitPublic(BaseModel):
    subject_id: str
    score: float = Field(description="Mean per-part cosine of the subject's best sequence, in [-1, 1].")
    sequence_id: str = Field(description="The subject's best-matching sequence.")


class SearchResponse(BaseModel):
    gallery: str
    model_hash: str
    k: int
    threshold: float | None
    data: list[SearchHitPublic]
    count: int
    timings: Timings
    track: VideoTrackPublic | None = Field(None, description="For a video query: the track searched with.")


# ----- galleries


class GalleryCreate(_In):
    name: str = Field(
        max_length=64, description="1-64 of A-Z a-z 0-9 . _ -, starting with a letter or digit."
    )
    metadata: dict[str, Any] | None = None


class GalleryPublic(BaseModel):
    name: str
    model_hash: str
    model_matches: bool = Field(description="Whether the running model built this gallery (else 409 on use).")
    dim: int = Field(description="Floats per embedding: parts x channels.")
    parts: int
    metadata: dict[str, Any] | None
    created: datetime
    subject_count: int
    sequence_count: int


class GalleriesPublic(BaseModel):
    data: list[GalleryPublic]
    count: int


class SubjectPublic(BaseModel):
    subject_id: str
    sequence_count: int
    created: datetime


class SubjectsPublic(BaseModel):
    data: list[SubjectPublic]
    count: int = Field(description="All subjects in the gallery, not only this page.")
    offset: int
    limit: int


class SequencePublic(BaseModel):
    sequence_id: str
    subject_id: str
    metadata: dict[str, Any] | None
    gei_png: str | None = Field(
        None, description="The sequence's GEI (mean silhouette) as a PNG data URI, stored at enrolment."
    )
    created: datetime


class SubjectDetail(BaseModel):
    gallery: str
    subject_id: str
    data: list[SequencePublic]
    count: int


class EnrollSequenceJSON(SequenceJSON):
    sequence_id: str | None = Field(
        None, max_length=128, description="Client id: retrying with the same id and data adds nothing."
    )
    metadata: dict[str, Any] | None = None


class EnrollRequest(_In):
    sequences: Annotated[list[EnrollSequenceJSON], _at_most(MAX_SEQUENCES)] = Field(
        min_length=1, max_length=MAX_SEQUENCES
    )


class EnrollResponse(BaseModel):
    gallery: str
    subject_id: str
    data: list[SequencePublic]
    count: int
    timings: Timings
    tracks: list[VideoTrackPublic | None] = Field(
        default_factory=list, description="Per file: the track a video was enrolled from (null: a sequence)."
    )


# ----- probes


class Health(BaseModel):
    status: Literal["ok"] = "ok"


class Readiness(BaseModel):
    status: Literal["ready"] = "ready"
    model_hash: str
