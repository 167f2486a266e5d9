"""Portable galleries: one gallery of either store as one file, streamed in and out in bounded memory.

The format (`gaitlu-gallery`, version 1) is an uncompressed POSIX tar whose members come in this order:

    manifest.json          {"format": "gaitlu-gallery", "version": 1, "gallery", "model_hash", "parts",
                            "channels" (the part_dim), "normalisation": "per-part-l2", "dtype": "<f4",
                            "metadata", "created" (ISO 8601), "sequences" (the count when the export
                            started)}
    chunks/000000.jsonl    one JSON object per sequence: sequence_id, subject_id, metadata, created
    chunks/000000.f32      the same sequences' embeddings, row by row: n x (parts * part_dim) float32,
                           little-endian, part-major, each part unit-norm
    ...                    (at most EXPORT_CHUNK sequences per chunk)
    end.json               {"sequences": n, "chunks": c, "sha256": hex digest of every chunk member's bytes
                            in order}: a file cut short has no end, or a wrong digest

Embeddings do not compress, so there is no compression; `tar tvf` lists a file and any tar reader (or
numpy.frombuffer) reads it. Export reads the gallery chunk by chunk (`Store.iter_records`) into a
temporary file renamed over the target at the end; import reads the file twice, first to check it whole
(structure, digest, shapes), then to enrol it subject group by subject group with the exported sequence
ids, so an import that stops can be run again with `resume` and adds only what is missing. Sequence and
subject ids, metadata and embeddings survive the trip exactly; creation times are recorded in the file
but the importing gallery stamps its own.

An export is a copy of biometric data that later erasures must reach too: `erase_export` rewrites one
without given subjects or sequences, or without what a store's erasure log (`Store.erasures`)
says was erased from its gallery after the sequences were enrolled (their `created`), so a person
erased today is also erased from last month's export (docs/privacy.md).
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import itertools
import json
import tarfile
from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, Any

import numpy as np

from gaitlu.embedding import EmbeddingLayout
from gaitlu.files import atomic_write
from gallery import validate
from gallery.errors import GalleryError, GalleryExistsError, InvalidInputError, ModelMismatchError
from gallery.protocol import EXPORT_CHUNK, SequenceRecord, Store
from gallery.records import Erasure, SequenceInfo

FORMAT, VERSION = "gaitlu-gallery", 1
MAX_MEMBER_BYTES = 1 << 30  # a chunk of 1024 full-size embeddings is 65 MB: anything near this is not ours
Progress = Callable[[int], None]  # told how many sequences were just written or read


class PortableFormatError(GalleryError):
    """The file is not a complete gaitlu gallery export of a version this release reads."""


@dataclass(frozen=True)
class Manifest:
    gallery: str
    model_hash: str
    layout: EmbeddingLayout
    metadata: dict[str, Any] | None
    created: str
    sequences: int

    def as_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": VERSION,
            "gallery": self.gallery,
            "model_hash": self.model_hash,
            "parts": self.layout.parts,
            "channels": self.layout.part_dim,
            "normalisation": "per-part-l2",
            "dtype": "<f4",
            "metadata": self.metadata,
            "created": self.created,
            "sequences": self.sequences,
        }

    @classmethod
    def parse(cls, raw: bytes) -> Manifest:
        try:
            doc = json.loads(raw)
            if doc.get("format") != FORMAT:
                raise PortableFormatError(f"not a gaitlu gallery export (format {doc.get('format')!r})")
            if doc.get("version") != VERSION:
                raise PortableFormatError(
                    f"gallery export version {doc.get('version')!r}; this release reads version {VERSION}"
                )
            layout = EmbeddingLayout(int(doc["parts"]), int(doc["channels"]))
            if doc["dtype"] != "<f4" or doc["normalisation"] != "per-part-l2":
                raise PortableFormatError("embeddings must be little-endian float32, unit-norm per part")
            return cls(
                validate.gallery_name(doc["gallery"]),
                validate.model_hash(doc["model_hash"]),
                layout,
                doc["metadata"],
                str(doc["created"]),
                int(doc["sequences"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise PortableFormatError(f"malformed manifest.json: {exc}") from None


@dataclass(frozen=True)
class Transfer:
    """What an export, an import or an erasure moved (wrote)."""

    gallery: str
    sequences: int
    chunks: int


def _add(archive: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), 0o644, 0
    archive.addfile(info, io.BytesIO(data))


def export_gallery(
    store: Store,
    name: str,
    out: str | Path,
    *,
    chunk: int = EXPORT_CHUNK,
    progress: Progress | None = None,
) -> Transfer:
    """Write gallery `name` to `out` (atomically: the file appears complete or not at all)."""
    info = store.get_gallery(name)
    manifest = Manifest(
        info.name, info.model_hash, info.layout, info.metadata, info.created.isoformat(), info.sequence_count
    )
    return _write(out, manifest, store.iter_records(name, chunk), progress)


def _write(
    out: str | Path, manifest: Manifest, chunked: Iterable[list[SequenceRecord]], progress: Progress | None
) -> Transfer:
    """Write an export file (atomically) of `manifest` and the records, one chunk per non-empty list."""
    digest, count, chunks = hashlib.sha256(), 0, 0
    with atomic_write(out, "wb") as f, tarfile.open(fileobj=f, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        _add(tar, "manifest.json", json.dumps(manifest.as_json(), indent=1).encode())
        for records in chunked:
            if not records:
                continue
            rows = _rows_bytes(records)
            vectors = np.stack([r.embedding for r in records]).astype("<f4").tobytes()  # (n, D)
            for member, data in ((f"chunks/{chunks:06d}.jsonl", rows), (f"chunks/{chunks:06d}.f32", vectors)):
                digest.update(data)
                _add(tar, member, data)
            count, chunks = count + len(records), chunks + 1
            if progress is not None:
                progress(len(records))
        _add(
            tar,
            "end.json",
            json.dumps({"sequences": count, "chunks": chunks, "sha256": digest.hexdigest()}).encode(),
        )
    return Transfer(manifest.gallery, count, chunks)


@dataclass(frozen=True)
class _Chunk:
    records: list[SequenceRecord]
    raw: tuple[bytes, bytes]  # the members' bytes, for the digest


def _members(f: IO[bytes]) -> Iterator[Manifest | _Chunk | dict[str, Any]]:
    """The manifest, then each chunk, then end.json's content, checking the structure as it goes."""
    try:
        with tarfile.open(fileobj=f, mode="r|") as tar:
            members = iter(tar)

            def take(expected: str) -> tuple[str, bytes]:
                member = next(members, None)
                if member is None:
                    raise PortableFormatError(f"the file ends before {expected}: it was cut short")
                if not member.isfile() or member.size > MAX_MEMBER_BYTES:
                    raise PortableFormatError(f"unexpected member {member.name!r}")
                return member.name, tar.extractfile(member).read()  # type: ignore[union-attr]

            name, data = take("manifest.json")
            if name != "manifest.json":
                raise PortableFormatError(f"the file starts with {name!r}, not manifest.json")
            manifest = Manifest.parse(data)
            yield manifest
            for index in itertools.count():
                rows_name = f"chunks/{index:06d}.jsonl"
                name, rows = take(f"{rows_name} or end.json")
                if name == "end.json":
                    yield json.loads(rows)
                    if next(members, None) is not None:
                        raise PortableFormatError("the file goes on after end.json")
                    return
                vectors_name = f"chunks/{index:06d}.f32"
                if name != rows_name:
                    raise PortableFormatError(f"expected {rows_name}, found {name!r}")
                name, vectors = take(vectors_name)
                if name != vectors_name:
                    raise PortableFormatError(f"expected {vectors_name}, found {name!r}")
                yield _Chunk(_records(manifest, rows, vectors, index), (rows, vectors))
    except (tarfile.TarError, json.JSONDecodeError) as exc:
        raise PortableFormatError(f"not a readable gallery export: {exc}") from None


def _records(manifest: Manifest, rows_raw: bytes, vectors_raw: bytes, index: int) -> list[SequenceRecord]:
    size = manifest.layout.size
    try:
        rows = [json.loads(line) for line in rows_raw.splitlines()]
        if len(vectors_raw) != len(rows) * size * 4:
            raise PortableFormatError(
                f"chunk {index}: {len(rows)} sequences but {len(vectors_raw)} bytes of embeddings "
                f"(expected {len(rows) * size * 4})"
            )
        vectors = np.frombuffer(vectors_raw, dtype="<f4").reshape(len(rows), size)
        return [
            SequenceRecord(
                SequenceInfo(
                    row["sequence_id"],
                    manifest.gallery,
                    row["subject_id"],
                    manifest.model_hash,
                    row["metadata"],
                    datetime.fromisoformat(row["created"]),
                ),
                vector,
            )
            for row, vector in zip(rows, vectors, strict=True)
        ]
    except (KeyError, TypeError, ValueError) as exc:
        raise PortableFormatError(f"chunk {index}: malformed rows: {exc}") from None


def check_file(path: str | Path, progress: Progress | None = None) -> Manifest:
    """Read the whole file once: structure, shapes and digest; the manifest if it is complete."""
    digest, count, chunks = hashlib.sha256(), 0, 0
    manifest: Manifest | None = None
    with open(path, "rb") as f:
        for item in _members(f):
            if isinstance(item, Manifest):
                manifest = item
            elif isinstance(item, _Chunk):
                for raw in item.raw:
                    digest.update(raw)
                count, chunks = count + len(item.records), chunks + 1
                if progress is not None:
                    progress(len(item.records))
            elif item != {"sequences": count, "chunks": chunks, "sha256": digest.hexdigest()}:
                raise PortableFormatError(f"end.json does not match the file's content ({item})")
    assert manifest is not None  # _members yields it first or raises
    return manifest


def _rows_bytes(records: list[SequenceRecord]) -> bytes:
    return b"".join(
        json.dumps(
            {
                "sequence_id": r.info.sequence_id,
                "subject_id": r.info.subject_id,
                "metadata": r.info.metadata,
                "created": r.info.created.isoformat(),
            },
            separators=(",", ":"),
        ).encode()
        + b"\n"
        for r in records
    )


def import_gallery(
    store: Store,
    path: str | Path,
    *,
    name: str | None = None,
    resume: bool = False,
    progress: Progress | None = None,
    manifest: Manifest | None = None,
) -> Transfer:
    """Check `path` whole (unless `manifest` says check_file did already), then create gallery `name`
    (default: the exported name) and enrol its sequences with their ids. An existing gallery is refused
    unless `resume` (then it must hold the same model and layout, and what it holds already is skipped
    as idempotent retries)."""
    manifest = manifest or check_file(path)
    target = validate.gallery_name(name or manifest.gallery)
    try:
        store.create_gallery(target, manifest.model_hash, manifest.layout, manifest.metadata)
    except GalleryExistsError:
        if not resume:
            raise GalleryExistsError(
                f"gallery '{target}' already exists: import --as ANOTHER_NAME, delete it first, or --resume "
                "an import into it that stopped"
            ) from None
        info = store.get_gallery(target)
        if info.model_hash != manifest.model_hash:
            raise ModelMismatchError(target, info.model_hash, manifest.model_hash) from None
        if info.layout != manifest.layout:
            raise InvalidInputError(
                f"gallery '{target}' has layout {info.layout}, the file {manifest.layout}"
            ) from None
    count, chunks = 0, 0
    with open(path, "rb") as f:
        for item in _members(f):
            if not isinstance(item, _Chunk):
                continue
            by_subject: dict[str, list[SequenceRecord]] = {}
            for record in item.records:
                by_subject.setdefault(record.info.subject_id, []).append(record)
            for subject, records in by_subject.items():
                store.enroll(
                    target,
                    subject,
                    np.stack([r.embedding for r in records]),
                    manifest.model_hash,
                    [r.info.metadata for r in records],
                    [r.info.sequence_id for r in records],
                )
            count, chunks = count + len(item.records), chunks + 1
            if progress is not None:
                progress(len(item.records))
    return Transfer(target, count, chunks)


def erase_export(
    path: str | Path,
    out: str | Path,
    *,
    subjects: Collection[str] = (),
    sequences: Collection[str] = (),
    erasures: Iterable[Erasure] = (),
) -> tuple[Transfer, int]:
    """Rewrite the export at `path` to `out` (which may be `path`: it is replaced atomically) without
    the sequences of `subjects`, the `sequences`, and those the erasure log says were erased from its
    gallery: a logged erasure removes the sequences it names (a gallery's deletion: all) that were
    enrolled before it. Returns what was written and how many sequences were removed."""
    manifest = check_file(path)
    erased_at: dict[str, datetime] = {}  # sequence id -> its latest logged erasure
    gallery_erased: datetime | None = None  # the gallery's latest deletion
    for e in erasures:
        if e.gallery != manifest.gallery:
            continue
        if e.action == "delete_gallery":
            gallery_erased = max(e.time, gallery_erased or e.time)
        for sequence_id in e.sequence_ids:
            erased_at[sequence_id] = max(e.time, erased_at.get(sequence_id, e.time))

    def erased(info: SequenceInfo) -> bool:
        logged = erased_at.get(info.sequence_id, gallery_erased)
        if gallery_erased is not None and logged is not None:
            logged = max(logged, gallery_erased)
        return (
            info.subject_id in subjects
            or info.sequence_id in sequences
            or (logged is not None and info.created <= logged)
        )

    def chunks() -> Iterator[_Chunk]:
        with open(path, "rb") as f:
            yield from (item for item in _members(f) if isinstance(item, _Chunk))

    total = remaining = 0
    for item in chunks():
        total += len(item.records)
        remaining += sum(not erased(r.info) for r in item.records)
    kept = ([r for r in item.records if not erased(r.info)] for item in chunks())
    written = _write(out, dataclasses.replace(manifest, sequences=remaining), kept, None)
    return written, total - remaining
