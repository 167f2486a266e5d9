"""An export artifact behind `embed(list of sequences) -> (N, P, C)`, torch-free.

`load_artifact_embedder(artifact_dir)` reads the manifest, checks the model file against its sha256 (a
swapped file is refused), opens the best backend (runtime/backends.py) and warms it up. `embed` takes
`gaitlu.preprocess.to_model_frames` output, (T, 64, 44) uint8 (or float32 in [0, 1]), of any lengths.

Sequences of different lengths are never padded: the graph's temporal max has no mask, and zero frames
still produce backbone activations (BatchNorm shifts make them non-zero), so padding would change the
embedding. Instead equal lengths are grouped into one call and groups run separately; a group larger
than `max_batch` sequences or `max_call_frames` frames is split (results are identical: each row depends
only on its own sequence). That is also what models that convolve over time need (DeepGaitV2-P3D,
GaitGL): each sequence whole and alone on its batch row, never packed with another along time.

Raw outputs (manifest `output.normalisation` "none", e.g. GaitBase's pre-BNNeck features) are what
`embed_output` returns and what `gaitlu eval --artifact` scores. `embed` / `embed_flat`, which the
service and the galleries use, apply the manifest's recorded `indexing` step first (per-part L2), so
inner product / parts stays the mean per-part cosine whatever the model emits.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from pathlib import Path

import numpy as np

from gaitlu.embedding import EmbeddingLayout, normalise_parts
from gaitlu.errors import ConfigError, SequenceError
from gaitlu.manifest import Evaluation, Manifest, read_manifest, verified_path
from gaitlu.preprocess import to_float
from runtime.backends import (
    Backend,
    OrtBackend,
    TensorRTPlanBackend,
    ort_provider_chain,
    trt_plan_usable,
)
from runtime.openvino_backend import OpenVINOBackend
from runtime.selection import Choice, choose

logger = logging.getLogger(__name__)

MAX_CALL_FRAMES = 1024  # frames per backend call: bounds activation memory (about 3 GB for the paper model)
WARMUP_FRAMES = 30


class ArtifactEmbedder:
    """An artifact's model on one backend (a `gaitlu.embedding.Embedder`); see the module docstring for
    batching rules. `output_layout` is the model's own (the manifest's: its normalisation may be "none");
    `layout` is that of what `embed` returns, every part unit-norm."""

    def __init__(
        self,
        manifest: Manifest,
        backend: Backend,
        model_hash: str,
        max_batch: int,
        max_call_frames: int = MAX_CALL_FRAMES,
        choice: Choice | None = None,
    ) -> None:
        if max_batch < 1 or max_call_frames < 1:
            raise ConfigError("max_batch and max_call_frames must be at least 1")
        self.manifest = manifest
        self.backend = backend
        # Which backend and precision run it and why (runtime/selection.py); reported by /readyz and /model.
        self.choice = choice or Choice(backend.name, "fp32", "given")
        self.model_hash = model_hash
        self.output_layout = manifest.output.embedding_layout
        self.layout = EmbeddingLayout(self.output_layout.parts, self.output_layout.part_dim, "per-part-l2")
        self.max_batch = max_batch
        self.max_call_frames = max_call_frames
        self.max_frames = manifest.input.max_frames
        self.min_frames = manifest.input.min_frames
        self.frame_size = manifest.input.frame_size
        self.evaluation: Evaluation | None = manifest.evaluation

    def _prepare(self, seq: np.ndarray, i: int) -> np.ndarray:
        """One sequence as (T, 64, 44) float32 in [0, 1], cut to its first `max_frames` frames (as the
        torch evaluator and OpenGait do)."""
        if not isinstance(seq, np.ndarray) or seq.ndim != 3 or seq.shape[1:] != self.frame_size:
            raise SequenceError(
                f"sequence {i}: expected (T, {self.frame_size[0]}, {self.frame_size[1]}) model frames, got "
                f"shape {getattr(seq, 'shape', type(seq).__name__)} (prepare with "
                "gaitlu.preprocess.to_model_frames)"
            )
        if len(seq) == 0:
            raise SequenceError(f"sequence {i} has no frames")
        seq = seq[: self.max_frames]
        if len(seq) < self.min_frames:  # the manifest's rule: tile the whole sequence, as OpenGait does
            seq = np.tile(seq, (-(-self.min_frames // len(seq)), 1, 1))
        if seq.dtype == np.uint8:
            return to_float(seq)
        if seq.dtype == np.float32:
            if not (np.isfinite(seq).all() and seq.min() >= 0.0 and seq.max() <= 1.0):
                raise SequenceError(f"sequence {i}: float32 frames must be finite and in [0, 1]")
            return seq
        raise SequenceError(
            f"sequence {i}: frames must be uint8 (0..255) or float32 in [0, 1], not {seq.dtype}"
        )

    def _calls(self, lengths: list[int]) -> list[list[int]]:
        """Indices per backend call: equal lengths together, split at max_batch / max_call_frames."""
        groups: dict[int, list[int]] = defaultdict(list)
        for i, length in enumerate(lengths):
            groups[length].append(i)
        calls = []
        for length, rows in groups.items():
            size = max(1, min(self.max_batch, self.max_call_frames // length))
            calls += [rows[start : start + size] for start in range(0, len(rows), size)]
        return calls

    def embed_output(self, batch: list[np.ndarray]) -> np.ndarray:
        """The model's own output, (N, P, C): raw where the manifest says it is raw."""
        seqs = [self._prepare(seq, i) for i, seq in enumerate(batch)]
        out = np.empty((len(seqs), self.layout.size), np.float32)  # (N, P*C)
        for rows in self._calls([len(s) for s in seqs]):
            out[rows] = self.backend.run(np.stack([seqs[i] for i in rows]))  # (n, T, 64, 44) -> (n, P*C)
        return self.layout.unflatten(out)  # (N, P, C)

    def embed(self, batch: list[np.ndarray]) -> np.ndarray:
        """(T_i, 64, 44) uint8 (or float32 in [0, 1]) sequences -> (N, P, C) float32, each part unit-norm:
        the manifest's indexing step (per-part L2, the only one), idempotent on already unit parts."""
        return normalise_parts(self.embed_output(batch))

    def embed_flat(self, batch: list[np.ndarray]) -> np.ndarray:
        """The same as (N, P*C), part-major: inner product / P = mean per-part cosine."""
        return self.layout.flatten(self.embed(batch))  # (N, P, C) -> (N, P*C)

    def warmup(self) -> None:
        """One small call, so the first request does not pay for kernel selection (or a TensorRT build)."""
        frames = min(WARMUP_FRAMES, self.max_frames)
        self.backend.run(np.zeros((1, frames, *self.frame_size), np.float32))


def load_artifact_embedder(
    artifact_dir: str | Path,
    backend: str = "auto",
    precision: str = "fp32",
    threads: int | None = None,
    inter_threads: int | None = None,
    max_batch: int | None = None,
    max_call_frames: int = MAX_CALL_FRAMES,
    warmup: bool = True,
    cache_dir: str | Path | None = None,
) -> ArtifactEmbedder:
    """Open an export artifact for inference.

    backend: 'auto' (a prebuilt TensorRT plan when the artifact has one and TensorRT + cuda-python
    import, else onnxruntime's GPU providers on a GPU host, else OpenVINO bf16 when precision is 'auto'
    or 'bf16', the CPU has native bf16 and the manifest records that pair's parity as passed, else
    onnxruntime on the CPU), 'tensorrt' / 'cuda' / 'cpu' (that onnxruntime provider; an error if
    missing), 'trt-plan' (older name 'trt-engine') or 'openvino' (parity-gated: a pair without a
    passing `gaitlu parity` record is refused). precision: 'fp32' (model.onnx), 'int8'
    (model.int8.onnx), 'fp16' (model.fp16.onnx), 'bf16' (model.onnx in bf16 arithmetic, OpenVINO only)
    or 'auto' (the backend's fastest checked one: the service's default); the plan is fp16 whatever it
    says. runtime/selection.py decides.
    threads: onnxruntime's intra-op pool or OpenVINO's INFERENCE_NUM_THREADS; inter_threads:
    onnxruntime's inter-op pool. max_batch defaults to the export's. cache_dir holds TensorRT-provider
    plans (default: <artifact>/trt-cache).
    """
    folder = Path(artifact_dir)
    manifest = read_manifest(folder)
    choice = choose(manifest, backend, precision)
    return open_choice(
        folder, manifest, choice, threads, inter_threads, max_batch, max_call_frames, warmup, cache_dir
    )


def open_choice(
    folder: Path,
    manifest: Manifest,
    choice: Choice,
    threads: int | None = None,
    inter_threads: int | None = None,
    max_batch: int | None = None,
    max_call_frames: int = MAX_CALL_FRAMES,
    warmup: bool = True,
    cache_dir: str | Path | None = None,
) -> ArtifactEmbedder:
    """An artifact on a pair already chosen, gates passed or not: `load_artifact_embedder` after
    `choose`, and `gaitlu parity`, which measures the pairs the gate would refuse."""
    plan = manifest.tensorrt
    chosen: Backend
    if choice.backend == "trt-plan":
        if plan is None:
            raise ConfigError(
                f"backend 'trt-plan': {folder} has no TensorRT plan (export with --trt on a GPU)"
            )
        if not trt_plan_usable():
            raise ConfigError("backend 'trt-plan' needs the tensorrt and cuda-python packages")
        model_hash = plan.sha256
        chosen = TensorRTPlanBackend(
            verified_path(folder, plan.file, plan.sha256), manifest.input.name, manifest.output.name
        )
    elif choice.backend == "openvino":
        entry = manifest.variant("fp32" if choice.precision == "bf16" else choice.precision)
        model_hash = entry.sha256  # bf16 computes model.onnx's vectors (parity-checked): its identity
        chosen = OpenVINOBackend(verified_path(folder, entry.file, entry.sha256), choice.precision, threads)
    else:
        entry = manifest.variant(choice.precision)
        model_hash = entry.sha256
        batch_bound = max_batch or manifest.input.max_batch
        providers = ort_provider_chain(
            choice.backend, manifest.input, batch_bound, Path(cache_dir or folder / "trt-cache")
        )
        chosen = OrtBackend(
            verified_path(folder, entry.file, entry.sha256),
            manifest.input.name,
            providers,
            threads,
            inter_threads,
        )
    embedder = ArtifactEmbedder(
        manifest, chosen, model_hash, max_batch or manifest.input.max_batch, max_call_frames, choice
    )
    if warmup:
        embedder.warmup()
    logger.info(
        "loaded %s (%s, %s) on %s: %s",
        folder,
        manifest.model.name,
        choice.precision,
        chosen.name,
        choice.reason,
    )
    return embedder
