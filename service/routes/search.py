"""POST /search and POST /verify: a gallery's subjects ranked against probes, and one probe checked
against one subject or sequence.

Probes are sequences or videos (multipart `files`), or base64 .npy sequences or embeddings (JSON). A
search answers every probe in order, each with its own error when it cannot be searched (the others are
answered). A threshold, given as a false accept rate (`max_far`, through the model's calibration) or as
a score, turns the ranking into an answer: the `match`, or `unknown` when nobody in the gallery passes.
"""

from __future__ import annotations

import numpy as np
from fastapi import APIRouter, Request
from starlette.datastructures import FormData

from engine import Engine, Probe, ProbeResult, Threshold, VideoOptions
from gaitlu.schemas import (
    ErrorInfo,
    ProbeResultPublic,
    SearchParams,
    SearchRequest,
    SearchResponse,
    SequenceFilterParams,
    VerifyParams,
    VerifyRequest,
    VerifyResponse,
)
from gallery.filters import SequenceFilter
from service.auditing import AuditorDep, search_entries, verify_entry
from service.context import request_id
from service.deps import EngineDep, ReadAccess, SettingsDep
from service.errors import InvalidRequest, answer
from service.public import hit_public, timings_public, track_public
from service.settings import Settings
from service.uploads import (
    VIDEO_FIELDS,
    check_count,
    form_fields,
    form_json,
    form_required,
    json_uploads,
    multipart_schema,
    probe_files,
    read_body,
    request_body,
    validate_model,
    video_options,
)

router = APIRouter(tags=["search"], dependencies=[ReadAccess])

# The multipart fields: the models' own fields (one source for what is documented and enforced); the
# filter, an object, travels as a JSON text field.
_SEARCH_FIELDS = {
    **form_fields(SearchParams, exclude=["filter"]),
    "filter": {"type": "string", "description": "JSON: a SequenceFilterParams object."},
    **VIDEO_FIELDS,
}
_VERIFY_FIELDS = {**form_fields(VerifyParams), **VIDEO_FIELDS}
_SEARCH_BODY = request_body(
    SearchRequest, multipart_schema("files", _SEARCH_FIELDS, form_required(SearchParams))
)
_VERIFY_BODY = request_body(
    VerifyRequest, multipart_schema("files", _VERIFY_FIELDS, form_required(VerifyParams))
)


def _probes(body: SearchRequest | VerifyRequest, settings: Settings) -> list[Probe]:
    if body.sequences is not None:
        return list(json_uploads(body.sequences, settings))
    return [np.asarray(e, dtype=np.float64) for e in body.embeddings or []]  # checked, then float32


def _fields(form: FormData, names: list[str]) -> dict[str, object]:
    return {key: form[key] for key in names if key in form}


async def _search_form(form: FormData) -> tuple[SearchParams, list[Probe], VideoOptions]:
    fields = _fields(form, [name for name in SearchParams.model_fields if name != "filter"])
    if "filter" in form:
        fields["filter"] = form_json(form, "filter")
    return validate_model(SearchParams, fields), list(await probe_files(form)), video_options(form)


def _search_json(body: SearchRequest, settings: Settings) -> tuple[SearchParams, list[Probe], VideoOptions]:
    return body, _probes(body, settings), VideoOptions()


def parse_filter(params: SequenceFilterParams | None) -> SequenceFilter | None:
    """The wire filter as the galleries' contract (gallery.filters); InvalidInputError if malformed."""
    if params is None:
        return None
    return SequenceFilter.build(
        camera=params.camera,
        site=params.site,
        captured_from=params.captured_from,
        captured_to=params.captured_to,
        tags_all=params.tags_all or (),
        tags_any=params.tags_any,
    )


def _probe_public(
    result: ProbeResult, threshold: Threshold, engine: Engine, audit_id: int
) -> ProbeResultPublic:
    hits = [hit_public(hit, engine.far("subject", hit.score)) for hit in result.hits]
    error = None
    if result.error is not None:
        verdict = answer(result.error)
        error = ErrorInfo(
            code=verdict.code, message=verdict.message, detail=verdict.detail, request_id=request_id.get()
        )
    decided_here = threshold.score is not None and error is None
    return ProbeResultPublic(
        name=result.name,
        match=hits[0] if decided_here and hits else None,
        unknown=not hits if decided_here else None,
        data=hits,
        count=len(hits),
        error=error,
        timings=timings_public([result.embedded] if result.embedded is not None else []),
        track=track_public(result.embedded.video) if result.embedded is not None else None,
        audit_id=audit_id,
    )


@router.post("/search", response_model=SearchResponse, openapi_extra=_SEARCH_BODY)
async def search(
    request: Request, engine: EngineDep, settings: SettingsDep, auditor: AuditorDep
) -> SearchResponse:
    """The top-k subjects of `gallery` for each probe, best first: a subject scores its best sequence (or
    the mean of its best `top_m`) among those the `filter` keeps. With `max_far` or `threshold`, subjects
    below it are left out and each probe's `match` is the best one left, or `unknown` is true."""
    params, probes, options = await read_body(request, settings, SearchRequest, _search_json, _search_form)
    if not probes:
        raise InvalidRequest(
            "missing_file", "no probe: send sequences or videos in the multipart field 'files'"
        )
    check_count(len(probes), settings)
    threshold = engine.threshold("subject", params.threshold, params.max_far)
    sequence_filter = parse_filter(params.filter)
    results = await engine.search_batch(
        params.gallery, probes, params.k, threshold.score, options, params.top_m, sequence_filter
    )
    records = await auditor.record(
        search_entries(request, params.gallery, probes, results, threshold, engine)
    )
    data = [
        _probe_public(result, threshold, engine, record.id)
        for result, record in zip(results, records, strict=True)
    ]
    return SearchResponse(
        gallery=params.gallery,
        model_hash=engine.model_hash,
        k=params.k,
        top_m=params.top_m,
        threshold=threshold.score,
        max_far=threshold.max_far,
        filter=params.filter,
        data=data,
        count=len(data),
        timings=timings_public([r.embedded for r in results if r.embedded is not None]),
    )


async def _verify_form(form: FormData) -> tuple[VerifyParams, list[Probe], VideoOptions]:
    params = validate_model(VerifyParams, _fields(form, list(VerifyParams.model_fields)))
    return params, list(await probe_files(form)), video_options(form)


def _verify_json(body: VerifyRequest, settings: Settings) -> tuple[VerifyParams, list[Probe], VideoOptions]:
    return body, _probes(body, settings), VideoOptions()


@router.post("/verify", response_model=VerifyResponse, openapi_extra=_VERIFY_BODY)
async def verify(
    request: Request, engine: EngineDep, settings: SettingsDep, auditor: AuditorDep
) -> VerifyResponse:
    """Is this probe that person? One probe against a gallery's `subject_id` (scored as /search scores
    subjects) or one stored `sequence_id`, or two probes against each other (no gallery): the score, its
    estimated false accept rate, and `match` at `max_far` or `threshold`."""
    params, probes, options = await read_body(request, settings, VerifyRequest, _verify_json, _verify_form)
    wanted = 1 if params.gallery is not None else 2
    if len(probes) != wanted:
        against = "with a gallery" if wanted == 1 else "without a gallery (one against the other)"
        raise InvalidRequest("probe_count", f"verify takes {wanted} probe(s) {against}, got {len(probes)}")
    checked, embedded = await engine.verify(
        probes[0],
        gallery=params.gallery,
        subject_id=params.subject_id,
        sequence_id=params.sequence_id,
        other=probes[1] if len(probes) == 2 else None,
        top_m=params.top_m,
        threshold=params.threshold,
        max_far=params.max_far,
        options=options,
    )
    [record] = await auditor.record(
        [verify_entry(request, params.gallery, params.subject_id, probes, checked)]
    )
    return VerifyResponse(
        model_hash=engine.model_hash,
        comparison=checked.comparison,
        gallery=params.gallery,
        subject_id=params.subject_id,
        sequence_id=checked.sequence_id,
        score=checked.score,
        far=checked.far,
        threshold=checked.threshold.score,
        max_far=checked.threshold.max_far,
        match=checked.match,
        timings=timings_public(embedded),
        audit_id=record.id,
    )
