"""A typed, synchronous client for the gaitlu HTTP API (what `gaitlu enroll/search/galleries` use).

Answers are parsed into the API's own models (gaitlu.schemas), the ones the service answers with.

Transient failures are retried with exponential backoff and full jitter: 429 and 503 (after the
server's Retry-After), other 5xx, and connection failures. Any of them may come after the request was
applied (a proxy's 503 for an answer it lost, a dropped connection), so every request is idempotent by
construction: an enrolment always carries sequence ids (the caller's, or fresh ones made here once per
call), so a repeat is recognised by the server and adds nothing; a repeated gallery creation answers
409 `gallery_exists`, a repeated delete 404.

Every failure is a `ClientError` (a GaitluError, so the CLI prints one line): `ApiError` carries the
server's `{"error": {"code", "message", "detail"}}`; `UnreachableError` means no answer after the retries.
"""

from __future__ import annotations

import io
import json
import logging
import random
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import httpx
import numpy as np
from pydantic import BaseModel

from gaitlu.errors import GaitluError
from gaitlu.schemas import (
    EmbedResponse,
    EnrollResponse,
    ErasurePublic,
    ErasuresPublic,
    GalleriesPublic,
    GalleryPublic,
    ModelPublic,
    SearchResponse,
    SequenceEmbeddingPublic,
    SequencePublic,
    SubjectDetail,
    SubjectPublic,
    SubjectsPublic,
    VerifyResponse,
)
from gaitlu.sequence import load_sequence
from video.decode import VIDEO_SUFFIXES

logger = logging.getLogger(__name__)

M = TypeVar("M", bound=BaseModel)

DEFAULT_SERVER = "http://127.0.0.1:8000"
API_KEY_HEADER = "X-API-Key"
RETRY_AFTER_STATUSES = frozenset({429, 503})  # the server says when to come back
PAGE_SIZE = 1000  # the server's largest subjects page

# (file name, bytes): a file field of a multipart upload. The name's extension tells the server the format.
FileUpload = tuple[str, bytes]


class ClientError(GaitluError):
    """A request to the gaitlu service failed."""


class ApiError(ClientError):
    """The server answered with an error; `code` is its stable machine-readable reason."""

    def __init__(self, status: int, code: str, message: str, detail: Any = None) -> None:
        super().__init__(f"server answered {status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.detail = detail


class UnreachableError(ClientError):
    """No answer from the server after every retry (refused, reset, timed out)."""


@dataclass(frozen=True)
class RetryPolicy:
    """How transient failures are retried: attempt n waits a random time in [0, min(max_delay,
    base_delay * 2**n)] (full jitter: clients that failed together do not retry together); a 429 or 503
    with Retry-After waits that long (at most max_retry_after) plus up to base_delay of jitter."""

    attempts: int = 6  # tries in all, the first included
    base_delay: float = 0.5
    max_delay: float = 30.0
    max_retry_after: float = 120.0

    def backoff(self, attempt: int, rng: random.Random) -> float:
        return rng.uniform(0.0, min(self.max_delay, self.base_delay * 2**attempt))

    def after(self, retry_after: float, rng: random.Random) -> float:
        return min(retry_after, self.max_retry_after) + rng.uniform(0.0, self.base_delay)


def _retry_after(response: httpx.Response) -> float | None:
    """Retry-After in seconds (delta-seconds or an HTTP date), None when absent or unreadable."""
    value = response.headers.get("Retry-After")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def _api_error(response: httpx.Response) -> ApiError:
    """The server's one error shape, or a generic one for a proxy's non-JSON error page."""
    try:
        error = response.json()["error"]
        return ApiError(response.status_code, str(error["code"]), str(error["message"]), error.get("detail"))
    except (ValueError, KeyError, TypeError):
        text = response.text.strip().replace("\n", " ")[:200] or response.reason_phrase
        return ApiError(response.status_code, "http_error", text)


def sequence_npz(frames: np.ndarray) -> bytes:
    """A (T, H, W) uint8 sequence as a compressed .npz: binary masks shrink ~20x on the wire."""
    buffer = io.BytesIO()
    np.savez_compressed(buffer, silhouettes=frames)
    return buffer.getvalue()


def file_upload(path: str | Path, name: str | None = None) -> FileUpload:
    """Any sequence the loader reads (a file, or a folder of PNG frames), checked here and sent as .npz,
    so a bad file is reported before it costs a request; a video is sent as it is (the server extracts
    its walking person, as for `gaitlu enroll`)."""
    path = Path(path)
    if path.suffix.lower() in VIDEO_SUFFIXES and path.is_file():
        return name or path.name, path.read_bytes()
    frames = load_sequence(path)  # (T, H, W) uint8
    return f"{name or path.stem}.npz", sequence_npz(frames)


class GaitluClient:
    """One server, one API key, one connection pool; safe to share between threads."""

    def __init__(
        self,
        server: str = DEFAULT_SERVER,
        api_key: str | None = None,
        *,
        timeout: float = 120.0,  # inference on a busy CPU server can take a while
        retry: RetryPolicy | None = None,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
    ) -> None:
        if not server.startswith(("http://", "https://")):
            raise ClientError(f"server URL must start with http:// or https://, got {server!r}")
        headers = {API_KEY_HEADER: api_key} if api_key else {}
        self.server = server.rstrip("/")
        self.retry = retry or RetryPolicy()
        self._http = httpx.Client(
            base_url=self.server,
            headers=headers,
            timeout=httpx.Timeout(timeout, connect=10.0),
            transport=transport,
        )
        self._sleep = sleep
        self._rng = rng or random.Random()

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> GaitluClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ----- transport

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """Send with retries (see the module docstring); a final error status raises ApiError."""
        policy = self.retry
        for attempt in range(policy.attempts):
            last = attempt == policy.attempts - 1
            try:
                response = self._http.request(method, path, **kwargs)
            except httpx.TransportError as exc:
                if last:
                    raise UnreachableError(
                        f"no answer from {self.server} ({type(exc).__name__}: {exc or 'no details'}) "
                        f"after {attempt + 1} attempt(s)"
                    ) from exc
                delay = policy.backoff(attempt, self._rng)
                logger.info("%s %s: %s; retrying in %.1f s", method, path, type(exc).__name__, delay)
                self._sleep(delay)
                continue
            status = response.status_code
            if not (status == 429 or status >= 500) or last:
                if status >= 400:
                    raise _api_error(response)
                return response
            retry_after = _retry_after(response) if status in RETRY_AFTER_STATUSES else None
            delay = (
                policy.backoff(attempt, self._rng)
                if retry_after is None
                else policy.after(retry_after, self._rng)
            )
            logger.info("%s %s: HTTP %d; retrying in %.1f s", method, path, status, delay)
            self._sleep(delay)
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _parsed(self, model: type[M], method: str, path: str, **kwargs: Any) -> M:
        return model.model_validate_json(self._request(method, path, **kwargs).content)

    # ----- probes

    def ready(self) -> bool:
        """Whether the server is ready to serve (GET /readyz is 200); no retries."""
        try:
            return self._http.get("/readyz").status_code == 200
        except httpx.TransportError:
            return False

    # ----- embedding and search

    def embed(self, files: Sequence[FileUpload]) -> EmbedResponse:
        return self._parsed(EmbedResponse, "POST", "/embed", files=[("files", f) for f in files])

    def search(
        self,
        gallery: str,
        queries: FileUpload | Sequence[FileUpload] | np.ndarray,
        k: int = 5,
        threshold: float | None = None,
        *,
        max_far: float | None = None,
        top_m: int = 1,
        filter: dict[str, Any] | None = None,
    ) -> SearchResponse:
        """Rank the gallery's subjects against sequence files (one, or several in one call) or embeddings
        ((D,) or (n, D)), best first; one result per probe, in order."""
        options: dict[str, Any] = {"gallery": gallery, "k": k, "top_m": top_m}
        extra = {"threshold": threshold, "max_far": max_far, "filter": filter}
        options |= {key: value for key, value in extra.items() if value is not None}
        if isinstance(queries, np.ndarray):
            payload = {**options, "embeddings": np.atleast_2d(queries).tolist()}
            return self._parsed(SearchResponse, "POST", "/search", json=payload)
        files = [queries] if isinstance(queries, tuple) else list(queries)
        form = {key: json.dumps(value) if key == "filter" else str(value) for key, value in options.items()}
        return self._parsed(SearchResponse, "POST", "/search", data=form, files=[("files", f) for f in files])

    def verify(
        self,
        probes: FileUpload | Sequence[FileUpload] | np.ndarray,
        *,
        gallery: str | None = None,
        subject_id: str | None = None,
        sequence_id: str | None = None,
        max_far: float | None = None,
        threshold: float | None = None,
        top_m: int = 1,
    ) -> VerifyResponse:
        """A probe against a gallery's subject or sequence, or two probes (no gallery) against each other."""
        fields = {"gallery": gallery, "subject_id": subject_id, "sequence_id": sequence_id,
                  "max_far": max_far, "threshold": threshold, "top_m": top_m}  # fmt: skip
        options = {key: value for key, value in fields.items() if value is not None}
        if isinstance(probes, np.ndarray):
            payload = {**options, "embeddings": np.atleast_2d(probes).tolist()}
            return self._parsed(VerifyResponse, "POST", "/verify", json=payload)
        files = [probes] if isinstance(probes, tuple) else list(probes)
        form = {key: str(value) for key, value in options.items()}
        return self._parsed(VerifyResponse, "POST", "/verify", data=form, files=[("files", f) for f in files])

    def model(self) -> ModelPublic:
        """The running model: its hash, layout and score calibration (None: scores have no FAR)."""
        return self._parsed(ModelPublic, "GET", "/model")

    # ----- galleries

    def create_gallery(
        self,
        name: str,
        metadata: dict[str, Any] | None = None,
        retention_days: int | None = None,
        store_pictures: bool = True,
    ) -> GalleryPublic:
        body = {
            "name": name,
            "metadata": metadata,
            "retention_days": retention_days,
            "store_pictures": store_pictures,
        }
        return self._parsed(GalleryPublic, "POST", "/galleries", json=body)

    def update_gallery(self, name: str, changes: dict[str, Any]) -> GalleryPublic:
        """PATCH the gallery's `retention_days` and/or `store_pictures` (the keys given)."""
        return self._parsed(GalleryPublic, "PATCH", f"/galleries/{_seg(name)}", json=changes)

    def erasures(self, gallery: str | None = None, since: datetime | None = None) -> list[ErasurePublic]:
        """The service's erasure log, oldest first (a full key)."""
        params = {"gallery": gallery, "since": since.isoformat() if since else None}
        query = {key: value for key, value in params.items() if value is not None}
        return self._parsed(ErasuresPublic, "GET", "/erasures", params=query).data

    def list_galleries(self) -> list[GalleryPublic]:
        return self._parsed(GalleriesPublic, "GET", "/galleries").data

    def get_gallery(self, name: str) -> GalleryPublic:
        return self._parsed(GalleryPublic, "GET", f"/galleries/{_seg(name)}")

    def delete_gallery(self, name: str) -> None:
        self._request("DELETE", f"/galleries/{_seg(name)}")

    # ----- subjects and sequences

    def enroll(
        self,
        gallery: str,
        subject_id: str,
        files: Sequence[FileUpload],
        metadata: Sequence[dict[str, Any] | None] | None = None,
        sequence_ids: Sequence[str] | None = None,
    ) -> EnrollResponse:
        """Enrol sequences of one subject, all or none. Without `sequence_ids` (one per file) each file
        gets a fresh random one, the same on every retry of this call, so a retry never enrols twice."""
        ids = list(sequence_ids) if sequence_ids is not None else [uuid.uuid4().hex for _ in files]
        form: dict[str, Any] = {"sequence_ids": ids}
        if metadata is not None:
            form["metadata"] = json.dumps(list(metadata))
        return self._parsed(
            EnrollResponse,
            "POST",
            f"/galleries/{_seg(gallery)}/subjects/{_seg(subject_id)}/sequences",
            data=form,
            files=[("files", f) for f in files],
        )

    def enroll_embeddings(
        self,
        gallery: str,
        subject_id: str,
        embeddings: np.ndarray,
        model_hash: str,
        metadata: Sequence[dict[str, Any] | None] | None = None,
        sequence_ids: Sequence[str] | None = None,
    ) -> EnrollResponse:
        """Enrol precomputed embeddings (n, D) of one subject, computed by `model_hash` (the gallery's)."""
        rows = np.atleast_2d(embeddings)
        items: list[dict[str, Any]] = [{"embedding": row.tolist()} for row in rows]
        for i, item in enumerate(items):
            if metadata is not None:
                item["metadata"] = metadata[i]
            if sequence_ids is not None:
                item["sequence_id"] = sequence_ids[i]
        return self._parsed(
            EnrollResponse,
            "POST",
            f"/galleries/{_seg(gallery)}/subjects/{_seg(subject_id)}/sequences",
            json={"model_hash": model_hash, "embeddings": items},
            idempotent=sequence_ids is not None,
        )

    def sequence_embedding(self, gallery: str, sequence_id: str) -> SequenceEmbeddingPublic:
        path = f"/galleries/{_seg(gallery)}/sequences/{_seg(sequence_id)}/embedding"
        return self._parsed(SequenceEmbeddingPublic, "GET", path)

    def list_subjects(self, gallery: str, offset: int = 0, limit: int = 100) -> SubjectsPublic:
        page = {"offset": offset, "limit": limit}
        return self._parsed(SubjectsPublic, "GET", f"/galleries/{_seg(gallery)}/subjects", params=page)

    def iter_subjects(self, gallery: str, page_size: int = PAGE_SIZE) -> Iterator[SubjectPublic]:
        """Every subject, page by page (ordered by id, so a page boundary never repeats or skips one
        unless subjects are added or removed meanwhile)."""
        offset = 0
        while True:
            page = self.list_subjects(gallery, offset, page_size)
            yield from page.data
            offset += len(page.data)
            if not page.data or offset >= page.count:
                return

    def subject_sequences(self, gallery: str, subject_id: str) -> list[SequencePublic]:
        path = f"/galleries/{_seg(gallery)}/subjects/{_seg(subject_id)}"
        return self._parsed(SubjectDetail, "GET", path).data

    def delete_subject(self, gallery: str, subject_id: str) -> None:
        self._request("DELETE", f"/galleries/{_seg(gallery)}/subjects/{_seg(subject_id)}")

    def delete_sequence(self, gallery: str, sequence_id: str) -> None:
        self._request("DELETE", f"/galleries/{_seg(gallery)}/sequences/{_seg(sequence_id)}")


def _seg(value: str) -> str:
    """One URL path segment: a name holding '/' or '?' stays one segment (the server then rejects it)."""
    return quote(value, safe="")
