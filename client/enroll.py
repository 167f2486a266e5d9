"""Enroll a dataset folder into a gallery: through the service, or in this process with the service's
own engine (`--offline`).

Items: an OpenGait tree `<subject>/<condition>/<view>/*.pkl` (one sequence per leaf folder, read like the
evaluation reads it) or a flat folder `<subject>/...` whose files (.pkl, .npy, .npz, .zip), folders of
PNG frames and videos (.mp4, .avi, .mkv, .mov, .webm) are one sequence each. The subject id is the top
folder's name. A video is uploaded as it is and the server extracts its best track; offline, the same
engine extracts it here. A video without a usable person is a failed item.

Every sequence gets a deterministic id, the sha1 of its path relative to the dataset root, so a re-run
on the same root is resumable: what the gallery already holds is listed first and skipped, and a
retried upload that the server had applied is recognised by its id. An id the gallery holds with other
content (the file at that path changed after another run enrolled it) is a conflict, reported as one
and left as it is in the gallery. Bad files are reported and skipped;
only a failure that dooms every remaining item (server unreachable, wrong API key, missing gallery,
another model's gallery) stops the run, and is returned as `EnrollSummary.fatal`.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import logging
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from client.api import ApiError, ClientError, GaitluClient, sequence_npz
from gaitlu.errors import ConfigError, DataError, GaitluError
from gaitlu.labelled import DATASET_LIMITS, LabelledSequence, read_labelled, scan_labelled
from gaitlu.pictures import gei_png
from gaitlu.sequence import iter_sequence_files, load_sequence, natural_key
from gallery import validate
from gallery.errors import (
    GalleryExistsError,
    GalleryNotFoundError,
    ModelMismatchError,
    NotFoundError,
    SequenceIdConflictError,
)
from video.decode import VIDEO_SUFFIXES

if TYPE_CHECKING:
    from anyio.from_thread import BlockingPortal

    from engine import Engine, SequenceInput

logger = logging.getLogger(__name__)

# Server answers that doom every remaining upload, not just one file.
FATAL_STATUSES = frozenset({401, 403, 404, 415})
FATAL_CODES = frozenset({"model_mismatch"})
WINDOW = 4  # items submitted ahead per worker


class Layout(StrEnum):
    opengait = "opengait"
    flat = "flat"


class Outcome(StrEnum):
    enrolled = "enrolled"
    skipped = "skipped"  # the gallery already held it
    conflict = "conflict"  # the gallery holds its id with other content
    failed = "failed"


@dataclass(frozen=True)
class DatasetItem:
    """One sequence (or video) of the dataset: where it is and what the gallery will call it."""

    subject_id: str
    path: Path  # a file, a folder of PNG frames, or an OpenGait sequence folder
    relpath: str  # relative to the dataset root, '/'-separated
    metadata: dict[str, Any]
    layout: Layout

    @property
    def sequence_id(self) -> str:
        return hashlib.sha1(self.relpath.encode("utf-8")).hexdigest()

    @property
    def is_video(self) -> bool:
        return self.layout is Layout.flat and self.path.suffix.lower() in VIDEO_SUFFIXES

    def read(self) -> bytes:
        """The file's bytes (a video, uploaded as it is); DataError when it cannot be read."""
        try:
            return self.path.read_bytes()
        except OSError as exc:
            raise DataError(f"{self.relpath}: cannot read ({exc.strerror or exc})") from None

    def load(self) -> np.ndarray:
        """The raw (T, H, W) uint8 frames; SequenceError for a bad file."""
        if self.layout is Layout.opengait:
            condition, view = self.metadata["condition"], self.metadata["view"]
            return read_labelled(LabelledSequence(self.path, self.subject_id, condition, view))
        return load_sequence(self.path, limits=DATASET_LIMITS)


@dataclass
class EnrollSummary:
    enrolled: int = 0
    skipped: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)  # (relpath, reason)
    conflicts: list[tuple[str, str]] = field(default_factory=list)  # (relpath, the server's message)
    fatal: GaitluError | None = None  # what stopped the run early
    not_done: int = 0  # items the run did not finish because a fatal failure stopped it

    @property
    def exit_code(self) -> int:
        """0 all done, 1 some items failed or conflict, 2 the run could not go on."""
        return 2 if self.fatal is not None else 1 if self.failed or self.conflicts else 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "enrolled": self.enrolled,
            "skipped": self.skipped,
            "conflicts": [{"path": path, "reason": reason} for path, reason in self.conflicts],
            "failed": [{"path": path, "reason": reason} for path, reason in self.failed],
            "not_done": self.not_done,
            "fatal": None if self.fatal is None else str(self.fatal),
        }


def scan_dataset(root: str | Path, layout: Layout) -> list[DatasetItem]:
    """The dataset's sequences in a deterministic order (by subject, then path)."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"dataset folder not found: {root}")
    items = []
    if layout is Layout.opengait:
        for seq in scan_labelled(root):
            relpath = seq.path.relative_to(root).as_posix()
            metadata = {"path": relpath, "condition": seq.condition, "view": seq.view}
            items.append(DatasetItem(seq.subject, seq.path, relpath, metadata, layout))
        return items
    for subject_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for path in [*iter_sequence_files(subject_dir), *_videos(subject_dir)]:
            relpath = path.relative_to(root).as_posix()
            items.append(DatasetItem(subject_dir.name, path, relpath, {"path": relpath}, layout))
    return items


def _videos(folder: Path) -> list[Path]:
    """The video files under `folder` (hidden ones and those in hidden folders skipped), by path."""
    found = [
        path
        for path in folder.rglob("*")
        if path.suffix.lower() in VIDEO_SUFFIXES
        and not any(part.startswith(".") for part in path.relative_to(folder).parts)
        and path.is_file()
    ]
    return sorted(found, key=lambda path: natural_key(path.relative_to(folder).as_posix()))


class Target(Protocol):
    """Where sequences go: the service (`RemoteTarget`) or a local store (`LocalTarget`)."""

    def prepare(self, create: bool) -> None:
        """Check the gallery exists (creating it when asked); raise a GaitluError if unusable."""
        ...

    def held(self, items: Sequence[DatasetItem]) -> set[str]:
        """The sequence ids among `items` that the gallery already holds."""
        ...

    def enroll(self, item: DatasetItem, frames: np.ndarray) -> Outcome:
        """Enroll one loaded sequence; a `Conflict` when its id is held with other content."""
        ...

    def enroll_video(self, item: DatasetItem) -> Outcome:
        """Enroll the best track of a video file, as `enroll` does a sequence."""
        ...

    def is_fatal(self, exc: GaitluError) -> bool:
        """Whether this failure dooms every remaining item."""
        ...


class RemoteTarget:
    """A gallery on a running service, through `GaitluClient`."""

    def __init__(self, client: GaitluClient, gallery: str, concurrency: int = 4) -> None:
        self.client = client
        self.gallery = gallery
        self.concurrency = concurrency

    def prepare(self, create: bool) -> None:
        try:
            info = self.client.get_gallery(self.gallery)
        except ApiError as exc:
            if exc.status != 404 or not create:
                raise
            try:
                info = self.client.create_gallery(self.gallery)
                logger.info("created gallery '%s'", self.gallery)
            except ApiError as again:  # created meanwhile by another run, or by a retried request
                if again.code != "gallery_exists":
                    raise
                info = self.client.get_gallery(self.gallery)
        if not info.model_matches:
            raise ClientError(
                f"gallery '{self.gallery}' holds embeddings of model {info.model_hash[:12]}..., not of the "
                "server's running model: enrol into a new gallery, or serve the gallery's model"
            )

    def held(self, items: Sequence[DatasetItem]) -> set[str]:
        wanted = {item.subject_id for item in items}
        present = [s.subject_id for s in self.client.iter_subjects(self.gallery) if s.subject_id in wanted]
        with ThreadPoolExecutor(self.concurrency) as pool:
            listings = pool.map(lambda subject: self.client.subject_sequences(self.gallery, subject), present)
            return {seq.sequence_id for listing in listings for seq in listing}

    def enroll(self, item: DatasetItem, frames: np.ndarray) -> Outcome:
        return self._send(item, (f"{item.sequence_id}.npz", sequence_npz(frames)))

    def enroll_video(self, item: DatasetItem) -> Outcome:
        """Upload the video itself: the server extracts the silhouettes (the same engine as offline)."""
        return self._send(item, (f"{item.sequence_id}{item.path.suffix.lower()}", item.read()))

    def _send(self, item: DatasetItem, upload: tuple[str, bytes]) -> Outcome:
        try:
            self.client.enroll(
                self.gallery,
                item.subject_id,
                [upload],
                metadata=[item.metadata],
                sequence_ids=[item.sequence_id],
            )
        except ApiError as exc:
            # The id is derived from the path, which names the subject, and a repeat of the same content
            # is idempotent (the server allows batching noise): a conflict is other content at this path.
            if exc.code == "sequence_id_conflict":
                raise Conflict(exc.message) from None
            raise
        return Outcome.enrolled

    def is_fatal(self, exc: GaitluError) -> bool:
        if isinstance(exc, ApiError):
            return exc.status in FATAL_STATUSES or exc.code in FATAL_CODES
        return isinstance(exc, ClientError)  # unreachable after retries


class LocalTarget:
    """A gallery in a local store (`--offline`): the service's own engine, run in this process through an
    anyio portal (an event loop in a thread), so the same code decodes, extracts videos, batches, draws
    GEIs and writes the store as behind the HTTP API."""

    def __init__(self, engine: Engine, portal: BlockingPortal, gallery: str) -> None:
        self.engine = engine
        self.portal = portal
        self.gallery = gallery

    def prepare(self, create: bool) -> None:
        engine, portal = self.engine, self.portal
        try:
            info = portal.call(engine.get_gallery, self.gallery)
        except NotFoundError:
            if not create:
                raise
            try:
                info = portal.call(engine.create_gallery, self.gallery, None)
            except GalleryExistsError:
                info = portal.call(engine.get_gallery, self.gallery)
        if info.model_hash != engine.model_hash:
            raise ModelMismatchError(self.gallery, info.model_hash, engine.model_hash)

    def held(self, items: Sequence[DatasetItem]) -> set[str]:
        held: set[str] = set()
        for subject in {item.subject_id for item in items}:
            try:
                listed = self.portal.call(self.engine.list_sequences, self.gallery, subject)
            except NotFoundError:
                continue
            held.update(seq.sequence_id for seq in listed)
        return held

    def enroll(self, item: DatasetItem, frames: np.ndarray) -> Outcome:
        from engine import Frames

        return self._send(item, Frames(item.relpath, frames))

    def enroll_video(self, item: DatasetItem) -> Outcome:
        """The engine extracts the video's best track from the file, as the service does from an upload."""
        from engine import LocalFile

        return self._send(item, LocalFile(item.relpath, item.path))

    def _send(self, item: DatasetItem, sequence: SequenceInput) -> Outcome:
        enroll = functools.partial(self.engine.enroll, picture=gei_png)  # the picture the service stores
        try:
            self.portal.call(
                enroll, self.gallery, item.subject_id, [sequence], [item.metadata], [item.sequence_id]
            )
        except SequenceIdConflictError as exc:
            raise Conflict(str(exc)) from None
        return Outcome.enrolled

    def is_fatal(self, exc: GaitluError) -> bool:
        return isinstance(exc, ModelMismatchError | GalleryNotFoundError)


class Conflict(GaitluError):
    """The gallery holds the item's sequence id with other content: it is left as it is."""


def _attempt(target: Target, item: DatasetItem) -> Outcome:
    validate.item_id(item.subject_id, "subject id")  # a bad folder name fails here, not after reading
    if item.is_video:
        return target.enroll_video(item)
    return target.enroll(item, item.load())


def enroll_items(
    items: Sequence[DatasetItem],
    target: Target,
    *,
    create: bool = True,
    concurrency: int = 4,
    progress: Callable[[Outcome], None] | None = None,
    on_plan: Callable[[int], None] | None = None,
) -> EnrollSummary:
    """Enroll every item not yet held, `concurrency` at a time. `on_plan(n)` is told how many will be
    attempted, `progress(outcome)` each result. Never raises for per-item or fatal failures: they are
    in the summary (after a fatal one, items not yet submitted are left alone, counted in `not_done`)."""
    summary = EnrollSummary()
    try:
        target.prepare(create)
        held = target.held(items)
    except GaitluError as exc:
        summary.fatal, summary.not_done = exc, len(items)
        return summary
    todo = [item for item in items if item.sequence_id not in held]
    summary.skipped = len(items) - len(todo)
    if on_plan is not None:
        on_plan(len(todo))
    queue = iter(todo)
    with ThreadPoolExecutor(max(1, concurrency)) as pool:
        # A bounded window of submitted items: a million-sequence dataset never becomes a million futures.
        pending = {pool.submit(_attempt, target, i): i for i in itertools.islice(queue, WINDOW * concurrency)}
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                item = pending.pop(future)
                try:
                    outcome = future.result()
                except Conflict as exc:
                    logger.info("%s: %s", item.relpath, exc)
                    summary.conflicts.append((item.relpath, str(exc)))
                    outcome = Outcome.conflict
                except GaitluError as exc:
                    if target.is_fatal(exc):
                        summary.fatal = summary.fatal or exc
                        summary.not_done += 1
                        continue
                    logger.info("%s: %s", item.relpath, exc)
                    summary.failed.append((item.relpath, str(exc)))
                    outcome = Outcome.failed
                summary.enrolled += outcome is Outcome.enrolled
                summary.skipped += outcome is Outcome.skipped
                if progress is not None:
                    progress(outcome)
                if summary.fatal is None:
                    pending.update((pool.submit(_attempt, target, i), i) for i in itertools.islice(queue, 1))
    summary.not_done += sum(1 for _ in queue)
    summary.failed.sort()
    summary.conflicts.sort()
    return summary


@contextmanager
def local_target(
    data_dir: str | Path,
    artifact: str | Path,
    gallery: str,
    concurrency: int,
    backend: str = "auto",
    precision: str = "auto",
    threads: int | None = None,
) -> Iterator[LocalTarget]:
    """A LocalTarget on the store the service would open for `data_dir`, its engine started and, on
    exit, stopped. Dataset limits apply (a local dataset is trusted more than an upload), and there are
    as many decode and video workers as enrollment threads, so no item waits for a slot. backend /
    precision / threads: the runtime's, as for the service (runtime/selection.py)."""
    from anyio.from_thread import start_blocking_portal

    # imported here: `gaitlu search` needs no runtime
    from engine import STORE_FILE, Engine, EngineOptions, EngineSettings
    from gallery.crypto import master_key_from_env
    from runtime import BACKENDS, PRECISIONS
    from video import VideoLimits

    if backend not in BACKENDS or precision not in PRECISIONS:
        raise ConfigError(
            f"--backend must be one of {list(BACKENDS)} and --precision one of {list(PRECISIONS)}, "
            f"not {backend!r} / {precision!r}"
        )
    videos = VideoLimits()  # a local dataset's videos: the video stage's own bounds, not an upload's
    options = EngineOptions(
        backend=backend,  # type: ignore[arg-type]  # checked above
        precision=precision,  # type: ignore[arg-type]
        threads=threads,
        decode_workers=concurrency,
        decode_timeout_s=None,  # a local file waits for its turn, however long
        max_video_bytes=videos.max_bytes,
        max_video_frames=videos.max_frames,
        max_video_seconds=videos.max_duration_s,
        max_video_pixels=videos.max_pixels,
        video_timeout_s=videos.max_seconds,
        video_workers=concurrency,
    )
    settings = EngineSettings(
        artifact=Path(artifact),
        store_path=Path(data_dir) / STORE_FILE,
        options=options,
        sequence_limits=DATASET_LIMITS,
        encryption_key=master_key_from_env(),  # the same key variables as the service
    )
    engine = Engine(settings)
    with start_blocking_portal() as portal:
        portal.call(engine.start)
        try:
            yield LocalTarget(engine, portal, gallery)
        finally:
            portal.call(engine.stop)
