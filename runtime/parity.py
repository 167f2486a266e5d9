"""Parity of a backend/precision pair against fp32 onnxruntime, on real sequences, into the manifest.

`gaitlu parity ARTIFACT --sequences DIR` embeds up to `limit` sequences of DIR (any files
`gaitlu.sequence` reads: CASIA-B's OpenGait tree, .npy, PNG folders), spread evenly over the folder,
with fp32 onnxruntime on the CPU (the reference) and with each pair asked for, and records per pair the
worst and mean per-sequence cosine (the mean per-part cosine of the model's raw outputs: what ranking
sees) in the manifest's `backend_parity`. The runtime serves a parity-gated pair (runtime/selection.py)
only while its record passes. Only the manifest is rewritten (atomically), so `model_sha256` stays.

With `protocol="casia-b"` DIR is a labelled OpenGait tree (`<subject>/<cond>/<view>/*.pkl`, e.g. the
CASIA-B dev split's test subjects 051-074): every sequence of it is embedded, and the record also holds
the cross-view Rank-1 per probe condition of the reference and of the pair (gaitlu.evaluation, the
manifest's evaluation metric, else Euclidean as `gaitlu eval` scores CASIA-B); the pair passes only if
no condition's Rank-1 moves by more than RANK1_MAX_CHANGE points.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import onnxruntime as ort

from gaitlu.embedding import part_cosines
from gaitlu.errors import ConfigError, DataError, SequenceError
from gaitlu.evaluation.crossview import casia_b
from gaitlu.evaluation.embeddings import EmbeddingSet
from gaitlu.files import sha256_file
from gaitlu.labelled import read_labelled, scan_labelled
from gaitlu.manifest import BackendParity, Manifest, read_manifest, write_manifest
from gaitlu.preprocess import to_model_frames
from gaitlu.sequence import iter_sequence_files, load_sequence
from runtime.embedder import ArtifactEmbedder, open_choice
from runtime.openvino_backend import OpenVINOBackend, cpu_capability
from runtime.selection import PARITY_GATED, PARITY_THRESHOLD, Choice

logger = logging.getLogger(__name__)

DEFAULT_LIMIT = 64  # sequences per check: ~6,000 CASIA-B frames, a few minutes on 2 cores
CHUNK = 8  # sequences per embed call: bounds activation memory
RANK1_MAX_CHANGE = 0.3  # percentage points, per probe condition: below run-to-run noise
PROTOCOLS = ("casia-b",)


@dataclass(frozen=True)
class Labels:
    """Subject / condition / view per sequence, for a protocol's Rank-1."""

    subject: list[str]
    cond: list[str]
    view: list[str]


def load_labelled(folder: Path) -> tuple[list[np.ndarray], Labels]:
    """Every sequence of an OpenGait tree as model frames, with its labels (unreadable ones skipped)."""
    sequences, subject, cond, view = [], [], [], []
    for seq in scan_labelled(folder):
        try:
            frames = to_model_frames(read_labelled(seq))
        except SequenceError as exc:
            logger.warning("parity: skipped %s", exc)
            continue
        if len(frames):
            sequences.append(frames)
            subject.append(seq.subject)
            cond.append(seq.condition)
            view.append(seq.view)
    if not sequences:
        raise DataError(f"no labelled sequences under {folder} (<subject>/<cond>/<view>/*.pkl)")
    return sequences, Labels(subject, cond, view)


def rank1(manifest: Manifest, emb: np.ndarray, labels: Labels) -> dict[str, float]:
    """CASIA-B cross-view Rank-1 (%) per probe condition of (N, P, C) raw outputs."""
    metric = manifest.evaluation.metric if manifest.evaluation is not None else "euc"
    data = EmbeddingSet(emb, np.array(labels.subject), np.array(labels.cond), np.array(labels.view))
    report = casia_b(data, metric)
    return {name: float(value) for name, value in report.headline().items()}


def load_sequences(folder: Path, limit: int = DEFAULT_LIMIT) -> tuple[list[np.ndarray], list[Path]]:
    """Up to `limit` readable sequences of `folder` as (T, 64, 44) uint8 model frames, spread evenly
    over its files in natural order (so a CASIA-B tree gives many subjects, not the first one's walks).
    Unreadable files are skipped with a warning; none readable is a DataError."""
    if not folder.is_dir():
        raise ConfigError(f"sequence folder not found: {folder}")
    paths = list(iter_sequence_files(folder))
    if limit < len(paths):
        paths = [paths[i] for i in np.linspace(0, len(paths) - 1, limit).round().astype(int)]
    sequences, used = [], []
    for path in paths:
        try:
            frames = to_model_frames(load_sequence(path))
        except SequenceError as exc:
            logger.warning("parity: skipped %s", exc)
            continue
        if len(frames):
            sequences.append(frames)
            used.append(path)
    if not sequences:
        raise DataError(f"no readable silhouette sequences under {folder} (.pkl, .npy, .npz, PNG folders)")
    return sequences, used


def embed_all(embedder: ArtifactEmbedder, sequences: list[np.ndarray]) -> np.ndarray:
    """(N, P, C) raw model outputs, CHUNK sequences per call."""
    chunks = [embedder.embed_output(sequences[i : i + CHUNK]) for i in range(0, len(sequences), CHUNK)]
    return np.concatenate(chunks)


def _device(embedder: ArtifactEmbedder) -> str:
    backend = embedder.backend
    if isinstance(backend, OpenVINOBackend):
        props = backend.properties
        return (
            f"{props['device']}; execution devices {props['execution_devices']}, inference precision "
            f"{props['inference_precision']}, {props['inference_num_threads']} threads"
        )
    return f"{cpu_capability().device or 'CPU'}; {backend.name}"


def _versions(embedder: ArtifactEmbedder) -> dict[str, str]:
    versions = {"onnxruntime": ort.__version__}
    if isinstance(embedder.backend, OpenVINOBackend):
        versions["openvino"] = embedder.backend.properties["version"]
    return versions


def measure_pairs(
    artifact: Path,
    manifest: Manifest,
    sequences: list[np.ndarray],
    data: str,
    pairs: Iterable[tuple[str, str]],
    threads: int | None = None,
    threshold: float = PARITY_THRESHOLD,
    labels: Labels | None = None,
) -> dict[str, BackendParity]:
    """Each (backend, precision) pair against fp32 onnxruntime on the CPU on `sequences`; with `labels`,
    their CASIA-B Rank-1 too."""
    _check_threshold(threshold)
    reference_embedder = open_choice(artifact, manifest, Choice("cpu", "fp32", "reference"), threads)
    reference = embed_all(reference_embedder, sequences)  # (N, P, C)
    reference_rank1 = None if labels is None else rank1(manifest, reference, labels)
    records: dict[str, BackendParity] = {}
    for backend, precision in pairs:
        if backend not in PARITY_GATED:
            raise ConfigError(f"parity is recorded for backends {list(PARITY_GATED)}, not {backend!r}")
        embedder = open_choice(artifact, manifest, Choice(backend, precision, "parity check"), threads)
        output = embed_all(embedder, sequences)  # (N, P, C)
        parts = part_cosines(output, reference)  # (N, P)
        per_sequence = parts.mean(axis=1)  # (N,)
        min_cosine = float(per_sequence.min())
        pair_rank1 = change = None
        if labels is not None and reference_rank1 is not None:
            pair_rank1 = rank1(manifest, output, labels)
            change = max(abs(pair_rank1[c] - reference_rank1[c]) for c in reference_rank1)
        passed = min_cosine >= threshold and (change is None or change <= RANK1_MAX_CHANGE)  # NaN fails
        records[f"{backend}/{precision}"] = record = BackendParity(
            backend=backend,
            precision=precision,
            sequences=len(sequences),
            min_cosine=min_cosine,
            mean_cosine=float(per_sequence.mean()),
            min_part_cosine=float(parts.min()),
            threshold=threshold,
            passed=bool(passed),
            protocol=None if labels is None else "casia-b",
            rank1_reference=reference_rank1,
            rank1=pair_rank1,
            rank1_max_change=change,
            data=data,
            device=_device(embedder),
            versions=_versions(embedder),
            measured_at=datetime.now(UTC).isoformat(timespec="seconds"),
        )
        logger.info(
            "parity %s/%s: min cosine %.7f (%s)",
            backend,
            precision,
            min_cosine,
            "passed" if record.passed else "FAILED",
        )
    return records


def _check_threshold(threshold: float) -> None:
    if not threshold >= PARITY_THRESHOLD:
        raise ConfigError(f"the parity threshold may be raised, not lowered below {PARITY_THRESHOLD}")


def default_precisions(manifest: Manifest) -> list[str]:
    """OpenVINO's precisions this host and artifact can run: fp32; bf16 on a CPU with native bf16;
    int8 when the artifact has model.int8.onnx."""
    precisions = ["fp32"]
    if cpu_capability().bf16:
        precisions.append("bf16")
    if "int8" in manifest.variants:
        precisions.append("int8")
    return precisions


def record_parity(
    artifact: Path,
    folder: Path,
    pairs: list[tuple[str, str]] | None = None,
    limit: int = DEFAULT_LIMIT,
    threads: int | None = None,
    threshold: float = PARITY_THRESHOLD,
    protocol: str | None = None,
) -> dict[str, BackendParity]:
    """Measure `pairs` (default: OpenVINO at `default_precisions`) on up to `limit` sequences of
    `folder` (with a protocol: all of its labelled sequences) and write the records into the artifact's
    manifest, replacing older ones of those pairs."""
    _check_threshold(threshold)
    if protocol is not None and protocol not in PROTOCOLS:
        raise ConfigError(f"protocol must be one of {list(PROTOCOLS)}, not {protocol!r}")
    manifest = read_manifest(artifact)
    if pairs is None:
        pairs = [("openvino", precision) for precision in default_precisions(manifest)]
    labels = None
    if protocol is None:
        sequences, _ = load_sequences(folder, limit)
    else:
        if not folder.is_dir():
            raise ConfigError(f"sequence folder not found: {folder}")
        sequences, labels = load_labelled(folder)
    frames = sum(len(s) for s in sequences)
    data = f"{folder.resolve().name} ({len(sequences)} sequences, {frames} frames)"
    records = measure_pairs(artifact, manifest, sequences, data, pairs, threads, threshold, labels)
    updated = manifest.model_copy(update={"backend_parity": {**manifest.backend_parity, **records}})
    model_file = artifact / manifest.variant("fp32").file
    current = read_manifest(artifact)
    if current != manifest or sha256_file(model_file) != manifest.model_sha256:
        raise DataError(f"{artifact} changed while its parity was measured: run gaitlu parity again")
    write_manifest(Manifest.model_validate(updated.model_dump()), artifact)
    return records
