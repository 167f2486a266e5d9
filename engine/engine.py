"""The async engine: decode -> micro-batched inference -> galleries. What the HTTP service serves and
`gaitlu enroll --offline` runs in-process; it knows nothing of HTTP and raises only domain errors
(engine/errors.py, gallery.errors, the input stages' errors).

    engine = Engine(EngineSettings(artifact=Path("art"), store_path=Path("data/galleries.db")))
    await engine.start()
    [result] = await engine.embed([Upload("walk.pkl", data)])
    await engine.stop()

Blocking work never runs on the event loop, and each kind runs in slots of its own (engine/slots.py:
bounded threads, a bounded wait, a deadline, a Retry-After estimate): decoding and preprocessing in
decode slots (at most `decode_workers` at once, which bounds their memory; a short wait list, then
`Overloaded`; a deadline, then `DecodeTimeout`), inference in the batcher's one slot, gallery reads
(SQLite reads, FAISS searches) in up to `STORE_READERS` threads, writes in `STORE_WRITERS`: they queue
on one store lock, and threads parked there would leave none for reads. Video uploads
(engine/videos.py) are extracted in video slots, at most `video_workers` at once; one more is refused
(`Overloaded`) rather than queued, since each costs seconds of CPU. What runs once (loading the model,
opening the store) runs in asyncio's default thread pool.

Readiness: `start` warms the runtime and records a reference embedding of a fixed check sequence.
`check_ready()` embeds it again through the batcher, ahead of its queue (a busy server is not a broken one),
and asks the galleries to answer (`check`: a Milvus server must be reachable, a local store that found
its disk full must take a trial write); the engine is ready while the answer matches, the galleries
answer and some decode worker is free of overdue work. A failed batch makes the engine not ready until a
check succeeds again.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any, TypeGuard, TypeVar

import numpy as np

from engine.batcher import Batcher, Embedded
from engine.decisions import Threshold, Verification, far_of, resolve_threshold, scores, subject_score
from engine.errors import DecodeTimeout, MethodUnavailable, NotStarted, VideoTooLarge
from engine.metrics import EngineMetrics
from engine.settings import EngineSettings
from engine.slots import Slots
from engine.videos import VideoOptions, VideoTrack, extract_video, is_video
from gaitlu.embedding import Embedder, EmbeddingLayout, mean_part_cosine
from gaitlu.errors import ConfigError, GaitluError, SequenceError
from gaitlu.evaluation.calibration import decode_centre
from gaitlu.manifest import Calibration, Comparison
from gaitlu.preprocess import drop_empty_frames, to_model_frames
from gaitlu.sequence import SequenceLimits, load_sequence, validate_sequence
from gallery import validate
from gallery.errors import GalleryError, InvalidInputError, StoreFullError
from gallery.filters import SequenceFilter
from gallery.previews import Draw, check_reserved, with_geis
from gallery.protocol import Store
from gallery.records import Erasure, GalleryInfo, GalleryPolicy, SequenceInfo, SubjectPage
from gallery.search import SearchHit
from gallery.stores import open_gallery_store
from runtime import ArtifactEmbedder, load_artifact_embedder
from video import OnnxSegmenter

logger = logging.getLogger(__name__)

T = TypeVar("T")
CHECK_FRAMES = 4
CHECK_MIN_COSINE = 0.999  # a check in another batch may differ by float rounding, never by more
CHECK_TIMEOUT_S = 10.0
MAX_NAME = 128
STORE_WRITERS = 2  # threads for gallery writes: one commits, one waits for the store lock
STORE_READERS = 40  # threads for gallery reads (as many as anyio's default pool lent them before)
VIDEO_MEAN_S = 1.0  # a video extraction's time, until one is measured (for Retry-After)


@dataclass(frozen=True)
class Upload:
    """One uploaded sequence or video: its client-side name (format hint and messages), raw bytes, and
    the content type the client declared (a `video/*` type marks a video whatever the name)."""

    name: str
    data: bytes
    content_type: str = ""


@dataclass(frozen=True)
class Frames:
    """One sequence the caller has read already (a dataset's files, `gaitlu enroll --offline`): raw
    (T, H, W) masks as `gaitlu.sequence.load_sequence` returns them. Checked against the sequence limits
    and aligned like an upload."""

    name: str
    frames: np.ndarray


@dataclass(frozen=True)
class LocalFile:
    """A sequence file, a folder of PNG frames or a video on this machine, named by a trusted caller (the
    offline CLI reads its own dataset this way); never built from a request."""

    name: str
    path: Path


SequenceInput = Upload | Frames | LocalFile


@dataclass(frozen=True)
class Decoded:
    name: str
    frames: np.ndarray  # (T, 64, 44) uint8 model frames
    decode_ms: float
    video: VideoTrack | None = None  # for a video upload: the track the frames come from


@dataclass(frozen=True)
class SequenceEmbedding:
    name: str
    vector: np.ndarray  # (P*C,) float32, part-major, each part unit-norm
    frames: int  # frames the model saw
    decode_ms: float
    queue_ms: float
    inference_ms: float
    video: VideoTrack | None = None


Probe = Upload | np.ndarray  # a sequence or video to embed, or a (P*C,) embedding of the running model


@dataclass(frozen=True)
class ProbeResult:
    """One probe of a search: its hits, or the error that made it unsearchable (the others go on)."""

    name: str
    hits: list[SearchHit]
    embedded: SequenceEmbedding | None = None  # for a sequence or video probe
    error: GaitluError | None = None


PROBE_ERRORS = (SequenceError, InvalidInputError)  # a bad probe fails alone; anything else, the request


def _probe_name(query: Probe, index: int) -> str:
    return query.name if isinstance(query, Upload) else f"embedding-{index}"


def safe_name(name: str | None, index: int) -> str:
    """A client file name reduced to its last component: it only names the data and hints its format."""
    base = Path((name or "").replace("\\", "/")).name[:MAX_NAME]
    return base or f"sequence-{index}"


def check_sequence() -> np.ndarray:
    """A fixed, person-like (CHECK_FRAMES, 64, 44) uint8 silhouette: an upright ellipse that sways."""
    rows, cols = np.mgrid[0:64, 0:44]  # (64, 44) each
    frames = []
    for t in range(CHECK_FRAMES):
        centre = 22 + 2 * np.sin(t)
        inside = ((rows - 32) / 30) ** 2 + ((cols - centre) / 9) ** 2 <= 1
        frames.append(inside.astype(np.uint8) * 255)
    return np.stack(frames)  # (T, 64, 44)


def _is_video(item: SequenceInput) -> TypeGuard[Upload | LocalFile]:
    if isinstance(item, Upload):
        return is_video(item.name, item.content_type)
    return isinstance(item, LocalFile) and is_video(item.path.name)


def _decode(item: SequenceInput, limits: SequenceLimits) -> Decoded:
    started = time.perf_counter()
    if isinstance(item, Frames):
        raw = validate_sequence(item.frames, limits, name=item.name)  # (T, H, W) uint8
    elif isinstance(item, LocalFile):
        raw = load_sequence(item.path, limits=limits)
    else:
        raw = load_sequence(item.data, filename=item.name, limits=limits)  # (T, H, W) uint8
    try:
        frames = to_model_frames(raw)  # (T', 64, 44) uint8
        frames = drop_empty_frames(frames, limits.min_frames)  # (T'', 64, 44): what the model sees
    except SequenceError as exc:
        raise SequenceError(f"{item.name}: {exc}") from None
    if not frames.flags.writeable:
        frames = frames.copy()
    return Decoded(item.name, frames, (time.perf_counter() - started) * 1000)


def open_store(settings: EngineSettings, centres: dict[str, np.ndarray] | None = None) -> Store:
    """The galleries the engine serves: the one place that says which store (the local SQLite + FAISS
    one, or the Milvus server that replicas share). `centres`: the running model's calibrated centring,
    by model hash (its galleries index centred)."""
    return open_gallery_store(
        settings.store_kind,
        store_path=settings.store_path,
        index=settings.index,
        milvus=settings.milvus,
        centres=centres,
        max_bytes=settings.options.store_max_bytes,
        encryption_key=settings.encryption_key,
    )


@dataclass(frozen=True)
class RuntimeInfo:
    backend: str  # what runs the model, e.g. "openvino/CPU bf16", "onnxruntime/CPUExecutionProvider"
    precision: str  # fp32 / fp16 / bf16 / int8
    reason: str  # why this one (runtime/selection.py)


def _manifest_parts(embedder: Embedder) -> tuple[Calibration | None, np.ndarray | None]:
    """An artifact's calibration and centring (a given embedder of another kind has neither)."""
    if not isinstance(embedder, ArtifactEmbedder):
        return None, None
    centring = embedder.manifest.indexing.centring
    return embedder.manifest.calibration, None if centring is None else decode_centre(centring)


class Engine:
    """Runtime + batcher + gallery store behind async methods. `start`/`stop` are idempotent."""

    def __init__(
        self,
        settings: EngineSettings,
        *,
        embedder: Embedder | None = None,
        metrics: EngineMetrics | None = None,
    ):
        """`embedder` replaces the artifact's runtime (tests, embedding in other apps); `metrics` is where
        the engine records (the service passes its own, which adds HTTP metrics to the same registry)."""
        self.settings = settings
        self.metrics = metrics or EngineMetrics()
        self._given_embedder = embedder
        self._embedder: Embedder | None = None
        self._batcher: Batcher | None = None
        self._store: Store | None = None
        options = settings.options
        self._limits = settings.sequence_limits or options.sequence_limits
        self._decodes = Slots(
            "decode",
            options.decode_workers,
            options.decode_queue,
            options.decode_timeout_s,
            callers="uploads",
            late=DecodeTimeout,
        )
        self.metrics.decodes_running.set_function(lambda: self._decodes.busy)
        self.metrics.decodes_waiting.set_function(lambda: self._decodes.waiting)
        self._videos = Slots("video", options.video_workers, 0, callers="videos", mean_s=VIDEO_MEAN_S)
        # The service's admission bounds how many requests wait for the store: no wait list of their own.
        self._store_reads = Slots("gallery-read", STORE_READERS, None)
        self._store_writes = Slots("gallery-write", STORE_WRITERS, None)
        self._video_limits = options.video_limits
        self._segmenter: OnnxSegmenter | None = None
        self._check_sequence = check_sequence()
        self._reference: np.ndarray | None = None  # (P, C) check embedding at start
        self._calibration: Calibration | None = None
        self._centre: np.ndarray | None = None  # (P, C): the model's centring, applied by the index
        self._ready = False
        self._checking: asyncio.Task[str | None] | None = None
        self._lifecycle = asyncio.Lock()

    # ----- lifecycle

    async def start(self) -> None:
        """Load and warm the runtime, open the galleries, start the batcher."""
        async with self._lifecycle:
            if self._batcher is not None:
                return
            s = self.settings
            embedder = self._given_embedder
            if embedder is None:
                embedder = await asyncio.to_thread(
                    functools.partial(
                        load_artifact_embedder,
                        s.artifact,
                        backend=s.options.backend,
                        precision=s.options.precision,
                        threads=s.options.threads,
                    )
                )
            reference = await asyncio.to_thread(embedder.embed, [self._check_sequence])  # (1, P, C): warm-up
            if not np.isfinite(reference).all():
                raise ConfigError(f"{s.artifact}: the model returns non-finite values for the check sequence")
            if s.options.segmentation_model is not None:
                self._segmenter = await asyncio.to_thread(OnnxSegmenter, s.options.segmentation_model)
            calibration, centre = _manifest_parts(embedder)
            centres = None if centre is None else {embedder.model_hash: centre}
            store = await asyncio.to_thread(open_store, s, centres)
            batcher = Batcher(
                embedder.embed, s.options.batch, self.metrics, on_failure=self._inference_failed
            )
            await batcher.start()
            self._embedder, self._store, self._batcher = embedder, store, batcher
            self._calibration, self._centre = calibration, centre
            self._reference = reference[0]
            self._ready = True
            self.metrics.watch_galleries(store.stats)
            where = s.milvus.uri if s.store_kind == "milvus" and s.milvus else s.store_path
            runtime = self.runtime
            logger.info(
                "engine started: model %s on %s %s (%s), %s galleries at %s",
                embedder.model_hash[:12],
                runtime.backend,
                runtime.precision,
                runtime.reason,
                s.store_kind,
                where,
            )

    async def stop(self) -> None:
        """Stop the batcher (queued work fails: ShuttingDown), then close the store. Safe to call twice."""
        async with self._lifecycle:
            self._ready = False
            if self._batcher is not None:
                await self._batcher.stop()
                self._batcher = None
            if self._store is not None:
                self.metrics.watch_galleries(None)
                await asyncio.to_thread(self._store.close)
                self._store = None
            for slots in (self._decodes, self._videos, self._store_reads, self._store_writes):
                slots.close()
            self._embedder = None

    @property
    def started(self) -> bool:
        return self._batcher is not None

    def _parts(self) -> tuple[Embedder, Batcher, Store]:
        if self._embedder is None or self._batcher is None or self._store is None:
            raise NotStarted()
        return self._embedder, self._batcher, self._store

    @property
    def model_hash(self) -> str:
        """The running model's identity (sha256 of its file): galleries are bound to it."""
        return self._parts()[0].model_hash

    @property
    def layout(self) -> EmbeddingLayout:
        """The running model's embedding layout."""
        return self._parts()[0].layout

    @property
    def runtime(self) -> RuntimeInfo:
        """Which backend and precision run the model and why (a given embedder: its class name)."""
        embedder = self._parts()[0]
        if isinstance(embedder, ArtifactEmbedder):
            return RuntimeInfo(embedder.backend.name, embedder.choice.precision, embedder.choice.reason)
        return RuntimeInfo(type(embedder).__name__, "unknown", "an embedder given to the engine")

    @property
    def store(self) -> Store:
        return self._parts()[2]

    @property
    def calibration(self) -> Calibration | None:
        """The running model's score calibration (`gaitlu calibrate`); None: scores have no FAR."""
        self._parts()
        return self._calibration

    def threshold(self, comparison: Comparison, threshold: float | None, max_far: float | None) -> Threshold:
        """The score threshold of a request (from a score or a FAR); NotCalibrated for a FAR without one."""
        return resolve_threshold(self.calibration, comparison, threshold, max_far)

    def far(self, comparison: Comparison, score: float) -> float | None:
        """The estimated FAR of a score (None: an uncalibrated model)."""
        return far_of(self.calibration, comparison, score)

    # ----- readiness

    @property
    def ready(self) -> bool:
        return self._ready and self.started

    def _inference_failed(self, exc: BaseException) -> None:
        self._ready = False

    def _matches_reference(self, vector: np.ndarray) -> bool:
        if self._reference is None or not np.isfinite(vector).all():
            return False
        return float(mean_part_cosine(self._reference, vector)) >= CHECK_MIN_COSINE  # (P, C) each

    async def check_ready(self) -> str | None:
        """Why the engine cannot serve now, or None when it can: the check sequence, embedded ahead of the
        batch queue, must answer as at start, the galleries must answer (and take writes), and not every
        decode worker may be stuck past its deadline. Concurrent callers share one check."""
        if not self.started:
            return "the engine is not started"
        if self._decodes.stuck:
            logger.warning("readiness: every decode worker is busy past the decode deadline")
            return (
                f"all {self._decodes.workers} decode workers have been busy past the "
                f"{self._decodes.deadline_s:g} s decode deadline"
            )
        if self._checking is None or self._checking.done():
            self._checking = asyncio.create_task(self._run_check())
        return await asyncio.shield(self._checking)

    async def _run_check(self) -> str | None:
        _, batcher, store = self._parts()
        try:
            async with asyncio.timeout(CHECK_TIMEOUT_S):
                [result] = await batcher.submit([self._check_sequence], priority=True)
                self._ready = self._matches_reference(result.vector)
                # the galleries answer too (a Milvus server, a full disk)
                await self._store_reads.run(store.check)
        except StoreFullError as exc:  # the model answered; the gallery store takes no writes
            logger.warning("readiness: the gallery store is full: %s", exc.cause)
            return (
                f"the gallery store is not writable ({exc.cause}): free space on the disk holding it "
                "(or raise its size limit)"
            )
        except GalleryError as exc:  # the model answered; the galleries did not
            logger.warning("readiness: the galleries cannot serve: %s", exc)
            return f"the galleries cannot serve: {exc}"
        except Exception as exc:  # any failure means "not ready"; the reason goes to the log
            logger.warning("readiness check failed: %s", exc)
            self._ready = False
        return None if self._ready else "the model does not answer the readiness check (see the logs)"

    # ----- embedding

    async def decode(
        self, uploads: Sequence[SequenceInput], options: VideoOptions = VideoOptions()
    ) -> list[Decoded]:
        """Raw uploads (or sequences read already) -> model frames, in worker threads; the first bad one
        fails the call. A video becomes the frames of one of its tracks (`options`)."""
        # sequential per request: the slots spread work across requests
        return [await self._decode_one(upload, options) for upload in uploads]

    async def _decode_one(self, upload: SequenceInput, options: VideoOptions) -> Decoded:
        if _is_video(upload):
            item = await self._extract(upload, options)
        else:
            item = await self._decodes.run(_decode, upload, self._limits)
        self.metrics.decode.observe(item.decode_ms / 1000)
        return item

    @property
    def videos_busy(self) -> int:
        """Video extractions running now."""
        return self._videos.busy

    async def _extract(self, upload: Upload | LocalFile, options: VideoOptions) -> Decoded:
        """One video -> its track's model frames, in a video worker; Overloaded when all of them are busy."""
        limits = self._video_limits
        source = upload.data if isinstance(upload, Upload) else upload.path
        size = len(source) if isinstance(source, bytes) else source.stat().st_size
        if size > limits.max_bytes:
            raise VideoTooLarge(upload.name, size, limits.max_bytes)
        if options.method == "onnx" and self._segmenter is None:
            raise MethodUnavailable(
                "method 'onnx' needs a person-segmentation model, and this server has none "
                "(the operator sets GAITLU_SEGMENTATION_MODEL); use method 'bgsub'"
            )
        model = self._segmenter if options.method == "onnx" else None
        extract = functools.partial(extract_video, model=model)
        started = time.perf_counter()
        # A caller that leaves does not free the slot: that happens when the thread is done.
        video = await self._videos.run(extract, source, upload.name, limits, options)
        return Decoded(upload.name, video.frames, (time.perf_counter() - started) * 1000, video)

    async def embed_frames(self, sequences: list[np.ndarray]) -> list[Embedded]:
        """(T_i, 64, 44) uint8 sequences -> their embeddings, through the shared batcher."""
        _, batcher, _ = self._parts()
        return await batcher.submit(sequences)

    async def embed(
        self, uploads: Sequence[SequenceInput], options: VideoOptions = VideoOptions()
    ) -> list[SequenceEmbedding]:
        self._parts()
        return await self._embed_decoded(await self.decode(uploads, options))

    async def _embed_decoded(self, decoded: list[Decoded]) -> list[SequenceEmbedding]:
        results = await self.embed_frames([d.frames for d in decoded])
        max_frames = self._parts()[0].max_frames
        return [
            SequenceEmbedding(
                d.name,
                r.vector.reshape(-1),
                len(d.frames) if max_frames is None else min(len(d.frames), max_frames),
                d.decode_ms,
                r.queue_ms,
                r.inference_ms,
                d.video,
            )
            for d, r in zip(decoded, results, strict=True)
        ]

    # ----- galleries

    async def _in_store(self, call: Callable[[Store], T], *, write: bool = False) -> T:
        """`call(store)` in a worker thread: store calls block (SQLite commits, FAISS searches). Writes
        take one of the few writer threads, so writes stalled on the store lock never hold up reads."""
        store = self.store
        return await (self._store_writes if write else self._store_reads).run(call, store)

    async def search(
        self,
        gallery: str,
        query: Upload | np.ndarray,
        k: int,
        threshold: float | None,
        options: VideoOptions = VideoOptions(),
        top_m: int = 1,
        sequence_filter: SequenceFilter | None = None,
    ) -> tuple[list[SearchHit], SequenceEmbedding | None]:
        """Rank a gallery's subjects against a sequence or video (embedded first) or a given embedding."""
        [result] = await self.search_batch(gallery, [query], k, threshold, options, top_m, sequence_filter)
        if result.error is not None:
            raise result.error
        return result.hits, result.embedded

    async def search_batch(
        self,
        gallery: str,
        queries: Sequence[Probe],
        k: int,
        threshold: float | None,
        options: VideoOptions = VideoOptions(),
        top_m: int = 1,
        sequence_filter: SequenceFilter | None = None,
    ) -> list[ProbeResult]:
        """Rank a gallery's subjects against several probes, answered in order: sequences and videos are
        decoded one by one and embedded together (one batcher submission), then every searchable probe
        goes to the gallery in one batched index search. A probe that cannot be read or is not an
        embedding of this model gets its error in its result; the others are answered."""
        await self._check_model(gallery)
        layout = self.layout
        outcomes: list[Decoded | np.ndarray | GaitluError] = []
        for i, query in enumerate(queries):
            try:
                if isinstance(query, Upload):
                    outcomes.append(await self._decode_one(query, options))
                else:
                    outcomes.append(validate.embeddings(query, layout)[0])  # (D,)
            except PROBE_ERRORS as exc:
                outcomes.append(exc)
            if isinstance(outcomes[-1], GaitluError):
                logger.info("search probe %d refused: %s", i, outcomes[-1])
        decoded = [o for o in outcomes if isinstance(o, Decoded)]
        embedded = iter(await self._embed_decoded(decoded) if decoded else [])
        vectors: list[np.ndarray] = []
        results: list[ProbeResult] = []
        for i, outcome in enumerate(outcomes):
            if isinstance(outcome, GaitluError):
                results.append(ProbeResult(_probe_name(queries[i], i), [], error=outcome))
                continue
            if isinstance(outcome, Decoded):
                item = next(embedded)
                vectors.append(item.vector)
                results.append(ProbeResult(_probe_name(queries[i], i), [], item))
            else:
                vectors.append(outcome)
                results.append(ProbeResult(_probe_name(queries[i], i), [], None))
        if vectors:
            model_hash, stacked = self.model_hash, np.stack(vectors)  # (q, D)
            found = iter(
                await self._in_store(
                    lambda store: store.search_batch(
                        gallery, stacked, model_hash, k, threshold, top_m, sequence_filter
                    )
                )
            )
            results = [r if r.error is not None else replace(r, hits=next(found)) for r in results]
        return results

    async def verify(
        self,
        probe: Probe,
        *,
        gallery: str | None = None,
        subject_id: str | None = None,
        sequence_id: str | None = None,
        other: Probe | None = None,
        top_m: int = 1,
        threshold: float | None = None,
        max_far: float | None = None,
        options: VideoOptions = VideoOptions(),
    ) -> tuple[Verification, list[SequenceEmbedding]]:
        """One probe against a gallery's subject (its best `top_m` sequences, as /search scores it), one
        stored sequence, or a second probe: the score, its FAR and the decision at the threshold."""
        targets = [subject_id is not None, sequence_id is not None, other is not None]
        if sum(targets) != 1 or (gallery is None) != (other is not None):
            raise InvalidInputError(
                "verify a probe against a gallery's subject_id or sequence_id, or against a second probe"
            )
        comparison: Comparison = "subject" if subject_id is not None else "sequence"
        chosen = self.threshold(comparison, threshold, max_far)  # before any work: a bad max_far costs none
        if gallery is not None:
            await self._check_model(gallery)
        uploads = [p for p in (probe, other) if isinstance(p, Upload)]
        embedded = await self.embed(uploads, options) if uploads else []
        vectors = iter(e.vector for e in embedded)
        layout = self.layout

        def vector_of(given: Probe) -> np.ndarray:
            return validate.embeddings(given, layout)[0] if isinstance(given, np.ndarray) else next(vectors)

        query = vector_of(probe)
        second = None if other is None else vector_of(other)
        best_id: str | None = None
        if gallery is not None and subject_id is not None:
            ids, stored = await self._in_store(lambda store: store.subject_embeddings(gallery, subject_id))
            score, best = subject_score(scores(query, stored, layout, self._centre), top_m)
            best_id = ids[best]
        elif gallery is not None and sequence_id is not None:
            stored = await self._in_store(lambda store: store.get_embedding(gallery, sequence_id))
            score, best_id = float(scores(query, stored[None], layout, self._centre)[0]), sequence_id
        else:
            assert second is not None  # checked above: exactly one target
            score = float(scores(query, second[None], layout, self._centre)[0])
        result = Verification(comparison, score, self.far(comparison, score), chosen, best_id)
        return result, embedded

    async def _check_model(self, gallery: str) -> str:
        """The running model's hash, after checking the gallery exists and was built with that model
        (a cheap read, so a mismatch is refused before any decoding or inference)."""
        model_hash = self.model_hash
        await self._in_store(lambda store: store.check_model(gallery, model_hash))
        return model_hash

    async def create_gallery(
        self, name: str, metadata: dict[str, Any] | None, policy: GalleryPolicy = GalleryPolicy()
    ) -> GalleryInfo:
        model_hash, layout = self.model_hash, self.layout
        return await self._in_store(
            lambda store: store.create_gallery(name, model_hash, layout, metadata, policy), write=True
        )

    async def set_policy(self, name: str, policy: GalleryPolicy) -> GalleryInfo:
        return await self._in_store(lambda store: store.set_policy(name, policy), write=True)

    async def sweep_expired(self, now: datetime) -> list[Erasure]:
        """Erase what is past its gallery's retention at `now` (the service's retention sweep)."""
        return await self._in_store(lambda store: store.sweep_expired(now), write=True)

    async def erasures(self, gallery: str | None, since: datetime | None) -> list[Erasure]:
        return await self._in_store(lambda store: store.erasures(gallery, since))

    async def list_galleries(self) -> list[GalleryInfo]:
        return await self._in_store(lambda store: store.list_galleries())

    async def get_gallery(self, name: str) -> GalleryInfo:
        return await self._in_store(lambda store: store.get_gallery(name))

    async def delete_gallery(self, name: str) -> None:
        await self._in_store(lambda store: store.delete_gallery(name), write=True)

    async def enroll(
        self,
        gallery: str,
        subject_id: str,
        uploads: Sequence[SequenceInput],
        metadata: Sequence[dict[str, Any] | None] | None = None,
        sequence_ids: Sequence[str] | None = None,
        options: VideoOptions = VideoOptions(),
        *,
        picture: Draw | None = None,
    ) -> tuple[list[SequenceInfo], list[SequenceEmbedding]]:
        """Embed and enrol sequences of one subject (a video: one of its tracks), all or none; returns
        the stored sequences (input order) and their embeddings. The gallery's model is checked first: a
        mismatch costs no inference. `picture` draws each sequence's model frames for people (the faces
        pass gaitlu.pictures.gei_png), kept in its metadata unless the caller opted out (None: no
        pictures)."""
        check_reserved(metadata)
        model_hash = await self._check_model(gallery)
        # A retry is recognised by an equal vector: with client ids, compute it batch-independently.
        decoded = await self.decode(uploads, options)
        embedded = await self._embed_decoded(decoded)
        vectors = np.stack([e.vector for e in embedded])  # n x (P*C,) -> (n, P*C)
        frames = [d.frames for d in decoded]

        def write(store: Store) -> list[SequenceInfo]:  # pictures drawn in the writer's thread
            stored = metadata if picture is None else with_geis(metadata, frames, picture)
            return store.enroll(gallery, subject_id, vectors, model_hash, stored, sequence_ids)

        return await self._in_store(write, write=True), embedded

    async def enroll_embeddings(
        self,
        gallery: str,
        subject_id: str,
        vectors: np.ndarray,
        model_hash: str,
        metadata: Sequence[dict[str, Any] | None] | None = None,
        sequence_ids: Sequence[str] | None = None,
    ) -> list[SequenceInfo]:
        """Enrol precomputed embeddings (n, D) of one subject, all or none. `model_hash` says which model
        computed them: unless it is the gallery's (and the running model's), ModelMismatchError."""
        check_reserved(metadata)
        await self._check_model(gallery)
        return await self._in_store(
            lambda store: store.enroll(gallery, subject_id, vectors, model_hash, metadata, sequence_ids),
            write=True,
        )

    async def get_embedding(self, gallery: str, sequence_id: str) -> tuple[SequenceInfo, np.ndarray]:
        """A stored sequence and its embedding (D,), as enrolled (uncentred)."""
        info = await self.get_sequence(gallery, sequence_id)
        return info, await self._in_store(lambda store: store.get_embedding(gallery, sequence_id))

    async def list_subjects(self, gallery: str, offset: int, limit: int) -> SubjectPage:
        return await self._in_store(lambda store: store.list_subjects(gallery, offset, limit))

    async def list_sequences(self, gallery: str, subject_id: str) -> list[SequenceInfo]:
        return await self._in_store(lambda store: store.list_sequences(gallery, subject_id))

    async def get_sequence(self, gallery: str, sequence_id: str) -> SequenceInfo:
        return await self._in_store(lambda store: store.get_sequence(gallery, sequence_id))

    async def delete_subject(self, gallery: str, subject_id: str) -> None:
        await self._in_store(lambda store: store.delete_subject(gallery, subject_id), write=True)

    async def delete_sequence(self, gallery: str, sequence_id: str) -> None:
        await self._in_store(lambda store: store.delete_sequence(gallery, sequence_id), write=True)
