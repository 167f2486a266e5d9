"""The HTTP API's bodies: the one contract between the service and its clients (pydantic only).

One model per direction (`*Request` in, `*Public` / `*Response` out): the service validates and answers
with them, and the client (client/api.py) parses answers into them, so a shape is written once.

Embeddings travel as flat float lists, part-major (gaitlu.embedding): `dim` = `parts` x `channels`
floats (the layout's `size`; `channels` is the wire's name for the layout's `part_dim`), each part
L2-normalised for a per-part-l2 model, so the inner product of two embeddings divided by `parts` is their
mean per-part cosine (the score galleries report).
"""

from __future__ import annotations

import base64
import binascii
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    WithJsonSchema,
    model_validator,
)
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
MAX_TOP_M = 64  # the most sequences a subject's score may average
MAX_FAR = 0.5  # a larger false accept rate decides nothing


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


# An embedding on the wire: its length checked before its floats are.
Embedding = Annotated[list[float], _at_most(MAX_EMBEDDING_FLOATS), Field(max_length=MAX_EMBEDDING_FLOATS)]


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


# ----- search and verification


def _one_or_many(value: Any) -> Any:
    """A filter set given as one string means a set of one (equality)."""
    return [value] if isinstance(value, str) else value


Value = Annotated[str, Field(min_length=1, max_length=64)]
ValueSet = Annotated[list[Value], BeforeValidator(_one_or_many), Field(min_length=1, max_length=256)]


class SequenceFilterParams(_In):
    """Which enrolled sequences a search may return: every condition given must hold. The attributes are
    the reserved metadata keys set at enrolment (`camera`, `site`, `captured_at`, `tags`); a sequence
    without an attribute never matches a condition on it."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"camera": ["gate-1", "gate-2"], "captured_from": "2026-05-01T00:00:00Z", "tags_any": ["day"]}
            ]
        },
    )

    camera: ValueSet | None = Field(None, description="One camera (equality) or a list (any of them).")
    site: ValueSet | None = Field(None, description="One site or a list.")
    captured_from: AwareDatetime | None = Field(None, description="Captured at or after (with a UTC offset).")
    captured_to: AwareDatetime | None = Field(None, description="Captured before (exclusive).")
    tags_all: ValueSet | None = Field(None, description="Tags that must all be present.")
    tags_any: ValueSet | None = Field(None, description="Tags of which at least one must be present.")


class ThresholdParams(_In):
    """A decision threshold, as a score or (for a calibrated model) as a false accept rate."""

    threshold: float | None = Field(
        None, ge=-1.0, le=1.0, description="Accept scores >= this (a mean per-part cosine)."
    )
    max_far: float | None = Field(
        None,
        gt=0.0,
        le=MAX_FAR,
        description="Accept scores whose false accept rate is at most this (e.g. 0.001), through the "
        "model's calibration; an uncalibrated model answers 409 `not_calibrated`.",
    )

    @model_validator(mode="after")
    def _one_threshold(self) -> ThresholdParams:
        if self.threshold is not None and self.max_far is not None:
            raise ValueError("give `threshold` or `max_far`, not both")
        return self


class SearchParams(ThresholdParams):
    gallery: str = Field(max_length=64)
    k: int = Field(5, ge=1, le=MAX_K)
    top_m: int = Field(
        1, ge=1, le=MAX_TOP_M, description="A subject scores the mean of its best top_m sequences."
    )
    filter: SequenceFilterParams | None = None


class SearchRequest(SearchParams):
    """JSON search: precomputed embeddings or base64 .npy sequences (exactly one of the two), each a probe
    answered in order."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"gallery": "lab", "k": 5, "max_far": 0.001, "embeddings": [[0.0123, -0.0456, 0.0789]]},
                {"gallery": "lab", "k": 3, "top_m": 2, "filter": {"camera": "gate-2"},
                 "sequences": [{"name": "walk", "npy_b64": "k05VTVBZAQB2AHsnZGVzY3InOi..."}]},
            ]
        },
    )  # fmt: skip

    embeddings: Annotated[list[Embedding], _at_most(MAX_SEQUENCES)] | None = Field(
        None,
        min_length=1,
        max_length=MAX_SEQUENCES,
        description="`dim` floats each, from this service's model.",
    )
    sequences: Annotated[list[SequenceJSON], _at_most(MAX_SEQUENCES)] | None = Field(
        None, min_length=1, max_length=MAX_SEQUENCES
    )

    @model_validator(mode="after")
    def _one_kind(self) -> SearchRequest:
        if (self.embeddings is None) == (self.sequences is None):
            raise ValueError("give exactly one of `embeddings` and `sequences`")
        return self


class SequenceAttributesPublic(BaseModel):
    """A sequence's filterable attributes (the reserved metadata keys), as the filters see them."""

    camera: str | None = None
    site: str | None = None
    captured_at: datetime | None = Field(None, description="In UTC.")
    tags: list[str] = Field(default_factory=list)


class SearchHitPublic(BaseModel):
    subject_id: str
    score: float = Field(
        description="Mean per-part cosine of the subject's best top_m sequences, in [-1, 1]."
    )
    far: float | None = Field(
        description="Estimated false accept rate of this score: the share of comparisons of a probe with a "
        "subject who is not that person that score at least this high (the model's calibration; at its "
        "floor, no such comparison scored as high). Null: the model is not calibrated."
    )
    sequence_id: str = Field(description="The subject's best-matching sequence.")
    attributes: SequenceAttributesPublic = Field(description="That sequence's filterable attributes.")


class ProbeResultPublic(BaseModel):
    """One probe's answer: its hits best first, and whether someone in the gallery passes the threshold."""

    name: str = Field(description="The probe's file name, or `embedding-N` for the Nth embedding.")
    match: SearchHitPublic | None = Field(
        description="The best subject passing the threshold (`max_far` or `threshold`); null when none "
        "passes or none was given."
    )
    unknown: bool | None = Field(
        description="True: a threshold was given and no gallery subject passes it (the person is not "
        "known); null: no threshold was given."
    )
    data: list[SearchHitPublic] = Field(description="Up to k subjects passing the threshold, best first.")
    count: int
    error: ErrorInfo | None = Field(None, description="Why this probe was not searched (the others were).")
    timings: Timings
    track: VideoTrackPublic | None = Field(None, description="For a video probe: the track searched with.")
    audit_id: int | None = Field(
        None,
        description="Its audit record (GET /audit/{id}); a match is reviewed at POST /audit/{id}/review.",
    )


class SearchResponse(BaseModel):
    gallery: str
    model_hash: str
    k: int
    top_m: int
    threshold: float | None = Field(description="The score threshold applied (from `max_far` if given).")
    max_far: float | None
    filter: SequenceFilterParams | None
    data: list[ProbeResultPublic] = Field(description="One result per probe, in the order given.")
    count: int
    timings: Timings = Field(description="The whole request's.")


class VerifyParams(ThresholdParams):
    """A probe against a gallery's `subject_id` (scored like /search: its best top_m sequences) or one
    stored `sequence_id`; without a gallery, against a second probe."""

    gallery: str | None = Field(None, max_length=64)
    subject_id: str | None = Field(None, max_length=128)
    sequence_id: str | None = Field(None, max_length=128)
    top_m: int = Field(1, ge=1, le=MAX_TOP_M)


class VerifyRequest(VerifyParams):
    """JSON verification: one probe (two without a gallery), as embeddings or base64 .npy sequences."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "gallery": "lab",
                    "subject_id": "alice",
                    "max_far": 0.001,
                    "embeddings": [[0.0123, -0.0456, 0.0789]],
                },
                {"max_far": 0.01, "embeddings": [[0.0123, -0.0456, 0.0789], [0.0456, 0.0211, -0.0032]]},
            ]
        },
    )

    embeddings: Annotated[list[Embedding], _at_most(2)] | None = Field(None, min_length=1, max_length=2)
    sequences: Annotated[list[SequenceJSON], _at_most(2)] | None = Field(None, min_length=1, max_length=2)

    @model_validator(mode="after")
    def _one_kind(self) -> VerifyRequest:
        if (self.embeddings is None) == (self.sequences is None):
            raise ValueError("give exactly one of `embeddings` and `sequences`")
        return self


class VerifyResponse(BaseModel):
    model_hash: str
    comparison: Literal["subject", "sequence"] = Field(
        description="subject: a probe against an enrolled subject; sequence: against one sequence."
    )
    gallery: str | None
    subject_id: str | None
    sequence_id: str | None = Field(description="The stored sequence compared (a subject's best).")
    score: float = Field(description="Mean per-part cosine, in [-1, 1].")
    far: float | None = Field(description="Estimated false accept rate of the score (null: uncalibrated).")
    threshold: float | None = Field(description="The score threshold applied (from `max_far` if given).")
    max_far: float | None
    match: bool | None = Field(description="score >= threshold; null when no threshold was given.")
    timings: Timings
    audit_id: int | None = Field(
        None,
        description="Its audit record (GET /audit/{id}); a match is reviewed at POST /audit/{id}/review.",
    )


class ThresholdPublic(BaseModel):
    far: float
    score: float = Field(description="Accept scores >= this.")
    tar: float = Field(description="Share of the calibration set's genuine comparisons accepted.")
    supported: bool = Field(description="False: too few impostor comparisons lie above; extrapolated.")


class ComparisonCalibrationPublic(BaseModel):
    comparison: Literal["subject", "sequence"]
    eer: float = Field(description="Equal error rate on the calibration set, %.")
    genuine: int
    impostors: int = Field(description="Impostor comparisons measured.")
    far_floor: float = Field(description="The smallest FAR resolved: 1 / impostors.")
    thresholds: list[ThresholdPublic]


class CalibrationPublic(BaseModel):
    dataset: str
    subjects: int
    sequences: int
    enrolled_per_subject: int = Field(description="Sequences per subject the subject FARs assume.")
    centred: bool
    calibrated_at: str
    comparisons: list[ComparisonCalibrationPublic]


class ModelPublic(BaseModel):
    model_hash: str
    parts: int
    channels: int
    dim: int
    backend: str = Field(description="What runs the model, e.g. 'openvino/CPU bf16'.")
    precision: str = Field(description="fp32, fp16, bf16 or int8.")
    backend_reason: str = Field(description="Why this backend and precision (GAITLU_BACKEND=auto decides).")
    calibration: CalibrationPublic | None = Field(
        description="Null: scores have no FAR (`gaitlu calibrate`)."
    )


# ----- galleries


MAX_RETENTION_DAYS = 36_500  # a hundred years: beyond it, null (keep) says what is meant
RetentionDays = Annotated[
    int | None,
    Field(
        ge=1,
        le=MAX_RETENTION_DAYS,
        strict=True,
        description="Sequences older than this many days are erased by the retention sweep; null: kept "
        "until deleted.",
    ),
]
StorePictures = Annotated[
    bool,
    Field(strict=True, description="Keep each sequence's GEI picture in its metadata (false: none is kept)."),
]


class GalleryCreate(_In):
    name: str = Field(
        max_length=64, description="1-64 of A-Z a-z 0-9 . _ -, starting with a letter or digit."
    )
    metadata: dict[str, Any] | None = None
    retention_days: RetentionDays = None
    store_pictures: StorePictures = True


class GalleryUpdate(_In):
    """PATCH /galleries/{name}: the fields given change, the others stay (docs/privacy.md). Turning
    pictures off erases those the gallery holds."""

    retention_days: RetentionDays = None
    store_pictures: StorePictures = True


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
    retention_days: int | None = Field(description="Sequences are erased after this many days; null: kept.")
    store_pictures: bool = Field(description="Whether GEI pictures are kept in sequence metadata.")


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


class SequenceEmbeddingPublic(BaseModel):
    gallery: str
    sequence_id: str
    subject_id: str
    model_hash: str
    parts: int
    channels: int
    dim: int
    embedding: list[float] = Field(description="`dim` floats as enrolled: part-major, each part unit-norm.")


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


class EnrollEmbeddingJSON(_In):
    embedding: Embedding = Field(description="`dim` floats, as /embed answers them.")
    sequence_id: str | None = Field(
        None, max_length=128, description="Client id: retrying with the same id and data adds nothing."
    )
    metadata: dict[str, Any] | None = None


class EnrollRequest(_In):
    """Sequences to embed, or embeddings computed already (by `model_hash`, which must be the gallery's)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"sequences": [{"npy_b64": "k05VTVBZAQB2AHsnZGVzY3InOi...", "sequence_id": "alice-a",
                                "metadata": {"camera": "gate-2", "captured_at": "2026-05-01T12:00:00Z"}}]},
                {"model_hash": "c3d2e4...", "embeddings": [{"embedding": [0.0123, -0.0456, 0.0789],
                                                            "sequence_id": "alice-b"}]},
            ]
        },
    )  # fmt: skip

    sequences: Annotated[list[EnrollSequenceJSON], _at_most(MAX_SEQUENCES)] | None = Field(
        None, min_length=1, max_length=MAX_SEQUENCES
    )
    embeddings: Annotated[list[EnrollEmbeddingJSON], _at_most(MAX_SEQUENCES)] | None = Field(
        None, min_length=1, max_length=MAX_SEQUENCES
    )
    model_hash: str | None = Field(
        None, max_length=64, description="With `embeddings`: sha256 of the model that computed them."
    )

    @model_validator(mode="after")
    def _one_kind(self) -> EnrollRequest:
        if (self.embeddings is None) == (self.sequences is None):
            raise ValueError("give exactly one of `sequences` and `embeddings`")
        if (self.embeddings is None) != (self.model_hash is None):
            raise ValueError("`model_hash` goes with `embeddings` (the model that computed them), and only")
        return self


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
    backend: str = Field(description="What runs the model, e.g. 'openvino/CPU bf16'.")
    precision: str = Field(description="fp32, fp16, bf16 or int8.")


ErasureAction = Literal["delete_subject", "delete_sequence", "delete_gallery", "expire"]


class ErasurePublic(BaseModel):
    """One entry of the erasure log: the sequences erased from a gallery, when and why (`expire`: the
    retention sweep); a gallery's deletion lists none (all it held). `gaitlu galleries erase` applies
    these to exports made before."""

    gallery: str
    action: ErasureAction
    time: datetime
    subject_id: str | None
    sequence_ids: list[str]


class ErasuresPublic(BaseModel):
    data: list[ErasurePublic]
    count: int


# ----- the audit trail (audit/, docs/privacy.md)

AuditAction = Literal[
    "search",
    "verify",
    "enroll",
    "delete_subject",
    "delete_sequence",
    "create_gallery",
    "delete_gallery",
    "update_gallery",
    "expire",
    "review",
    "retention",
]
AuditDecision = Literal["match", "unknown", "verified", "rejected", "error"]


class AuditHitPublic(BaseModel):
    subject_id: str | None = Field(description="Null for a verify of two probes or against a sequence id.")
    sequence_id: str | None
    score: float
    far: float | None


class ReviewStatePublic(BaseModel):
    """A match's reviews: `confirmed` once `required` distinct keys confirmed it and none rejected it,
    `rejected` as soon as one key rejects it, `pending` until then."""

    state: Literal["pending", "confirmed", "rejected"]
    required: int = Field(description="Distinct keys that must confirm (AI Act Article 14(5): two people).")
    confirmed_by: list[str | None] = Field(description="Key ids that confirmed, in order.")
    rejected_by: list[str | None]


class AuditRecordPublic(BaseModel):
    """One audit record: who (`key_id`, a hash of the API key, never the key), when, on which gallery,
    digests of the inputs (never their data), what came back and what was decided; `hash` chains it
    to the record before (`prev_hash`)."""

    id: int
    time: datetime
    action: AuditAction
    key_id: str | None = Field(description="`key-` + 16 hex digits of sha256(key); null without API keys.")
    request_id: str | None
    gallery: str | None
    subject_id: str | None
    sequence_ids: list[str]
    input_sha256: list[str] = Field(description="sha256 of each uploaded file, or of a float32 embedding.")
    hits: list[AuditHitPublic] = Field(description="What was returned: with a threshold, the hits above it.")
    threshold: float | None
    max_far: float | None
    decision: AuditDecision | None
    error: str | None = Field(description="The error code of a probe that could not be searched.")
    target: int | None = Field(description="A review: the record reviewed.")
    verdict: Literal["confirm", "reject"] | None
    note: str | None
    retention: dict[str, Any] | None = Field(description="A retention record: what was removed, the anchor.")
    prev_hash: str
    hash: str
    review: ReviewStatePublic | None = Field(None, description="For a match: its reviews so far.")


class AuditRecordsPublic(BaseModel):
    data: list[AuditRecordPublic]
    count: int = Field(description="Records that match the filters (data holds one page).")
    offset: int
    limit: int


class ReviewRequest(_In):
    verdict: Literal["confirm", "reject"] = Field(
        description="confirm: the match is right; reject: it is not."
    )
    note: str | None = Field(None, max_length=500, description="Why, in the reviewer's words (optional).")


class ReviewResponse(BaseModel):
    record: AuditRecordPublic = Field(description="The review, itself an audit record.")
    review: ReviewStatePublic = Field(description="The reviewed match's state after it.")
