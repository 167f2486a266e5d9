"""Galleries, their subjects and sequences. Reads need read access, changes need a full API key.

A gallery is bound to the model running when it was created: enrolling into or searching a gallery of
another model is refused (`model_mismatch`, with the remedy: re-embed it, or enrol again into a new
gallery).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Query, Request, Response, status
from starlette.datastructures import FormData

from engine import SequenceEmbedding, Upload, VideoOptions
from gaitlu.pictures import gei_png
from gaitlu.schemas import (
    EnrollRequest,
    EnrollResponse,
    GalleriesPublic,
    GalleryCreate,
    GalleryPublic,
    GalleryUpdate,
    SequenceEmbeddingPublic,
    SequencePublic,
    SubjectDetail,
    SubjectPublic,
    SubjectsPublic,
    VideoTrackPublic,
)
from gallery.protocol import MAX_OFFSET  # SQLite's largest integer: a larger offset cannot be bound
from gallery.records import GalleryPolicy
from service.auditing import AuditorDep, change_entry
from service.deps import EngineDep, ReadAccess, SettingsDep, WriteAccess
from service.errors import InvalidRequest
from service.public import gallery_public, sequence_public, timings_public, track_public
from service.settings import Settings
from service.uploads import (
    JSON,
    VIDEO_FIELDS,
    check_count,
    form_files,
    form_json,
    form_texts,
    json_uploads,
    multipart_schema,
    read_body,
    read_json,
    request_body,
    require_media_type,
    video_options,
)

router = APIRouter(prefix="/galleries", tags=["galleries"])

_ENROLL_FIELDS = {
    "metadata": {
        "type": "string",
        "description": "JSON: one object for every file, or a list, one per file.",
    },
    "sequence_ids": {
        "type": "array",
        "items": {"type": "string"},
        "description": "One client id per file (repeat the field): a retry with the same ids adds nothing.",
    },
    **VIDEO_FIELDS,
}
_ENROLL_BODY = request_body(EnrollRequest, multipart_schema("files", _ENROLL_FIELDS, []))
_CREATE_BODY = request_body(GalleryCreate)
_UPDATE_BODY = request_body(GalleryUpdate)


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=GalleryPublic,
    dependencies=[WriteAccess],
    openapi_extra=_CREATE_BODY,
)
async def create_gallery(request: Request, engine: EngineDep, auditor: AuditorDep) -> GalleryPublic:
    """Create an empty gallery bound to the running model, with what it keeps and for how long
    (`retention_days`, `store_pictures`: docs/privacy.md). The body is read by hand, after the key check
    (FastAPI would parse a body parameter before the dependencies run)."""
    require_media_type(request, JSON)
    body = await read_json(request, GalleryCreate)
    policy = GalleryPolicy(body.retention_days, body.store_pictures)
    info = await engine.create_gallery(body.name, body.metadata, policy)
    await auditor.record([change_entry(request, "create_gallery", body.name)])
    return gallery_public(info, engine.model_hash)


@router.get("", response_model=GalleriesPublic, dependencies=[ReadAccess])
async def list_galleries(engine: EngineDep) -> GalleriesPublic:
    model_hash = engine.model_hash
    data = [gallery_public(info, model_hash) for info in await engine.list_galleries()]
    return GalleriesPublic(data=data, count=len(data))


@router.get("/{name}", response_model=GalleryPublic, dependencies=[ReadAccess])
async def get_gallery(name: str, engine: EngineDep) -> GalleryPublic:
    return gallery_public(await engine.get_gallery(name), engine.model_hash)


@router.patch("/{name}", response_model=GalleryPublic, dependencies=[WriteAccess], openapi_extra=_UPDATE_BODY)
async def update_gallery(
    name: str, request: Request, engine: EngineDep, auditor: AuditorDep
) -> GalleryPublic:
    """Change what a gallery keeps: the fields given change, the others stay. Turning `store_pictures`
    off erases the pictures it holds; a shorter `retention_days` applies at the next sweep."""
    require_media_type(request, JSON)
    body = await read_json(request, GalleryUpdate)
    current = (await engine.get_gallery(name)).policy
    changed = {field: getattr(body, field) for field in body.model_fields_set}
    info = await engine.set_policy(name, replace(current, **changed))
    await auditor.record([change_entry(request, "update_gallery", name)])
    return gallery_public(info, engine.model_hash)


@router.delete("/{name}", status_code=status.HTTP_204_NO_CONTENT, dependencies=[WriteAccess])
async def delete_gallery(name: str, request: Request, engine: EngineDep, auditor: AuditorDep) -> Response:
    await engine.delete_gallery(name)
    await auditor.record([change_entry(request, "delete_gallery", name)])
    return Response(status_code=status.HTTP_204_NO_CONTENT)


def _per_file(metadata: Any, n: int) -> list[dict[str, Any] | None] | None:
    """Metadata for n files: one object (or null) for all, or a list of n."""
    if metadata is None or isinstance(metadata, dict):
        return [metadata] * n
    if (
        isinstance(metadata, list)
        and len(metadata) == n
        and all(m is None or isinstance(m, dict) for m in metadata)
    ):
        return metadata
    raise InvalidRequest(
        "invalid_metadata", f"metadata must be a JSON object, or a list of {n} objects (one per file)"
    )


Enrollment = tuple[
    list[Upload] | np.ndarray,  # sequences to embed, or (n, D) precomputed embeddings
    list[dict[str, Any] | None] | None,
    list[str] | None,
    VideoOptions,
    str | None,  # the model that computed the embeddings
]


def _from_json(body: EnrollRequest, settings: Settings) -> Enrollment:
    items = body.sequences if body.sequences is not None else body.embeddings or []
    given = [s.sequence_id for s in items if s.sequence_id is not None]
    if given and len(given) != len(items):
        raise InvalidRequest("invalid_sequence_ids", "give a sequence_id for every sequence or for none")
    metadata = [s.metadata for s in items]
    if body.embeddings is not None:
        sizes = {len(e.embedding) for e in body.embeddings}
        if len(sizes) != 1:
            raise InvalidRequest("invalid_embeddings", "every embedding must have the same number of floats")
        # float64 as parsed: the store checks the range before its float32 cast (no overflow warning)
        vectors = np.array([e.embedding for e in body.embeddings], dtype=np.float64)  # (n, D)
        return vectors, metadata, given or None, VideoOptions(), body.model_hash
    return json_uploads(body.sequences or [], settings), metadata, given or None, VideoOptions(), None


async def _from_form(form: FormData) -> Enrollment:
    uploads = await form_files(form, "files")
    metadata = _per_file(form_json(form, "metadata"), len(uploads))
    ids = form_texts(form, "sequence_ids")
    if ids is not None and len(ids) != len(uploads):
        raise InvalidRequest(
            "invalid_sequence_ids", f"{len(ids)} sequence_ids for {len(uploads)} files: give one per file"
        )
    return uploads, metadata, ids, video_options(form), None


@router.post(
    "/{name}/subjects/{subject_id}/sequences",
    status_code=status.HTTP_201_CREATED,
    response_model=EnrollResponse,
    dependencies=[WriteAccess],
    openapi_extra=_ENROLL_BODY,
)
async def enroll(
    name: str,
    subject_id: str,
    request: Request,
    engine: EngineDep,
    settings: SettingsDep,
    auditor: AuditorDep,
) -> EnrollResponse:
    """Enrol sequences of one subject, all or none; a video gives one sequence (its best track, or the
    `track` asked for). JSON may carry precomputed `embeddings` instead, with the `model_hash` that
    computed them (409 `model_mismatch` unless it is the gallery's). With client `sequence_ids` a retry
    is idempotent. Metadata keys `camera`, `site`, `captured_at` and `tags` are validated (422)."""
    body = await read_body(request, settings, EnrollRequest, _from_json, _from_form)
    items, metadata, ids, options, model_hash = body
    check_count(len(items), settings)
    embedded: list[SequenceEmbedding]
    tracks: list[VideoTrackPublic | None]
    if isinstance(items, np.ndarray):
        assert model_hash is not None  # the schema pairs them
        infos = await engine.enroll_embeddings(name, subject_id, items, model_hash, metadata, ids)
        embedded, tracks = [], [None] * len(infos)
    else:
        infos, embedded = await engine.enroll(
            name, subject_id, items, metadata, ids, options, picture=gei_png
        )
        tracks = [track_public(e.video) for e in embedded]
    ids_stored = [info.sequence_id for info in infos]
    inputs = list(items)  # each upload's bytes, or each embedding, is digested (never kept)
    entry = change_entry(
        request, "enroll", name, subject_id=subject_id, sequence_ids=ids_stored, inputs=inputs
    )
    await auditor.record([entry])
    data = [sequence_public(info) for info in infos]
    timings = timings_public(embedded)
    return EnrollResponse(
        gallery=name, subject_id=subject_id, data=data, count=len(data), timings=timings, tracks=tracks
    )


@router.get("/{name}/subjects", response_model=SubjectsPublic, dependencies=[ReadAccess])
async def list_subjects(
    name: str,
    engine: EngineDep,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> SubjectsPublic:
    """One page of the gallery's subjects, ordered by subject id; `count` is the total."""
    page = await engine.list_subjects(name, offset, limit)
    data = [
        SubjectPublic(subject_id=s.subject_id, sequence_count=s.sequence_count, created=s.created)
        for s in page.data
    ]
    return SubjectsPublic(data=data, count=page.count, offset=page.offset, limit=page.limit)


@router.get("/{name}/subjects/{subject_id}", response_model=SubjectDetail, dependencies=[ReadAccess])
async def get_subject(name: str, subject_id: str, engine: EngineDep) -> SubjectDetail:
    """A subject's sequences."""
    data = [sequence_public(info) for info in await engine.list_sequences(name, subject_id)]
    return SubjectDetail(gallery=name, subject_id=subject_id, data=data, count=len(data))


@router.delete(
    "/{name}/subjects/{subject_id}", status_code=status.HTTP_204_NO_CONTENT, dependencies=[WriteAccess]
)
async def delete_subject(
    name: str, subject_id: str, request: Request, engine: EngineDep, auditor: AuditorDep
) -> Response:
    await engine.delete_subject(name, subject_id)
    await auditor.record([change_entry(request, "delete_subject", name, subject_id=subject_id)])
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/{name}/sequences/{sequence_id}", response_model=SequencePublic, dependencies=[ReadAccess])
async def get_sequence(name: str, sequence_id: str, engine: EngineDep) -> SequencePublic:
    return sequence_public(await engine.get_sequence(name, sequence_id))


@router.get(
    "/{name}/sequences/{sequence_id}/embedding",
    response_model=SequenceEmbeddingPublic,
    dependencies=[ReadAccess],
)
async def get_sequence_embedding(name: str, sequence_id: str, engine: EngineDep) -> SequenceEmbeddingPublic:
    """A stored sequence's embedding as enrolled (what /embed answered for it): to move it to another
    gallery of the same model, or to compare it elsewhere."""
    info, vector = await engine.get_embedding(name, sequence_id)
    layout = engine.layout
    return SequenceEmbeddingPublic(
        gallery=name,
        sequence_id=info.sequence_id,
        subject_id=info.subject_id,
        model_hash=info.model_hash,
        parts=layout.parts,
        channels=layout.part_dim,
        dim=len(vector),
        embedding=vector.tolist(),
    )


@router.delete(
    "/{name}/sequences/{sequence_id}", status_code=status.HTTP_204_NO_CONTENT, dependencies=[WriteAccess]
)
async def delete_sequence(
    name: str, sequence_id: str, request: Request, engine: EngineDep, auditor: AuditorDep
) -> Response:
    """Remove one sequence; a subject left without sequences is removed too."""
    subject_id = (await engine.get_sequence(name, sequence_id)).subject_id  # for the audit record
    await engine.delete_sequence(name, sequence_id)
    entry = change_entry(request, "delete_sequence", name, subject_id=subject_id, sequence_ids=[sequence_id])
    await auditor.record([entry])
    return Response(status_code=status.HTTP_204_NO_CONTENT)
