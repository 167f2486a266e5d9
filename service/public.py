"""Domain records -> the wire models the routes answer with (gaitlu.schemas): one converter each."""

from __future__ import annotations

from collections.abc import Sequence
from typing import overload

from engine import SequenceEmbedding, VideoTrack
from gaitlu.manifest import Calibration
from gaitlu.schemas import (
    CalibrationPublic,
    ComparisonCalibrationPublic,
    GalleryPublic,
    SearchHitPublic,
    SequenceAttributesPublic,
    SequencePublic,
    ThresholdPublic,
    Timings,
    VideoTrackPublic,
)
from gallery.filters import SequenceAttributes
from gallery.previews import split_gei
from gallery.records import GalleryInfo, SequenceInfo
from gallery.search import SearchHit
from service.presentation import strip_png


@overload
def track_public(video: VideoTrack) -> VideoTrackPublic: ...


@overload
def track_public(video: None) -> None: ...


def track_public(video: VideoTrack | None) -> VideoTrackPublic | None:
    return None if video is None else VideoTrackPublic(**video.summary(), strip=strip_png(video))


def timings_public(embedded: Sequence[SequenceEmbedding]) -> Timings:
    """A request's timings: decoding adds up (one after another), waits and batches overlap (the max)."""
    if not embedded:
        return Timings()
    return Timings(
        decode_ms=sum(e.decode_ms for e in embedded),
        queue_ms=max(e.queue_ms for e in embedded),
        inference_ms=max(e.inference_ms for e in embedded),
    )


def gallery_public(info: GalleryInfo, model_hash: str) -> GalleryPublic:
    return GalleryPublic(
        name=info.name,
        model_hash=info.model_hash,
        model_matches=info.model_hash == model_hash,
        dim=info.layout.size,
        parts=info.layout.parts,
        metadata=info.metadata,
        created=info.created,
        subject_count=info.subject_count,
        sequence_count=info.sequence_count,
        retention_days=info.policy.retention_days,
        store_pictures=info.policy.store_pictures,
    )


def sequence_public(info: SequenceInfo) -> SequencePublic:
    metadata, gei = split_gei(info.metadata)
    return SequencePublic(
        sequence_id=info.sequence_id,
        subject_id=info.subject_id,
        metadata=metadata,
        gei_png=gei,
        created=info.created,
    )


def attributes_public(attrs: SequenceAttributes) -> SequenceAttributesPublic:
    return SequenceAttributesPublic(
        camera=attrs.camera, site=attrs.site, captured_at=attrs.captured_at, tags=sorted(attrs.tags)
    )


def hit_public(hit: SearchHit, far: float | None) -> SearchHitPublic:
    return SearchHitPublic(
        subject_id=hit.subject_id,
        score=hit.score,
        far=far,
        sequence_id=hit.sequence_id,
        attributes=attributes_public(hit.attributes),
    )


def calibration_public(calibration: Calibration) -> CalibrationPublic:
    comparisons = [
        ComparisonCalibrationPublic(
            comparison=table.comparison,
            eer=table.eer,
            genuine=table.genuine,
            impostors=table.impostors,
            far_floor=table.far_floor,
            thresholds=[
                ThresholdPublic(far=t.far, score=t.score, tar=t.tar, supported=t.supported)
                for t in table.thresholds
            ],
        )
        for table in (calibration.subject, calibration.sequence)
    ]
    return CalibrationPublic(
        dataset=calibration.dataset,
        subjects=calibration.subjects,
        sequences=calibration.sequences,
        enrolled_per_subject=calibration.enrolled_per_subject,
        centred=calibration.centred,
        calibrated_at=calibration.calibrated_at,
        comparisons=comparisons,
    )
