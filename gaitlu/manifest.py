"""The export artifact's manifest: what `gaitlu export` writes beside model.onnx and the service trusts.

An artifact is a folder: `manifest.json` plus the model files it lists (`model.onnx`, optionally
`model.int8.onnx`, `model.fp16.onnx`, a TensorRT plan). The manifest says how to feed the model
(input spec and preprocessing), what its output is (the model's own embedding, raw or normalised by the
model), what the service does to it before indexing (`indexing`, a separate recorded step), how to
compare the indexed vectors (metric), how OpenGait evaluates the model (`evaluation`, for imported
models) and which model it is: the sha256 of
`model.onnx` is the model's identity for the service and the galleries, and every file's hash is checked
before it is loaded, so a swapped or truncated file is refused rather than silently serving other vectors.

Core module (numpy-free, torch-free): the export stage writes it, the service reads it.
"""

from __future__ import annotations

import base64
import binascii
import bisect
import json
import math
import os
from pathlib import Path
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from gaitlu.embedding import EmbeddingLayout, Normalisation
from gaitlu.errors import DataError
from gaitlu.files import sha256_file, write_atomic

FORMAT: Final = "gaitlu-artifact/1"
MANIFEST_NAME = "manifest.json"
VariantPrecision = Literal["fp32", "fp16", "int8"]  # the numbers of one model file of an artifact


class ArtifactError(DataError):
    """An artifact folder is missing, its manifest is malformed, or a file does not match its hash."""


class _Strict(BaseModel):
    # Unknown keys are errors: a typo or a newer format must not be read as if it were this one.
    model_config = ConfigDict(extra="forbid", frozen=True)


def _renamed(data: Any, key: str, older: tuple[str, ...]) -> Any:
    """A manifest section with `key` under the first of its `older` names it holds, read as `key`."""
    if not isinstance(data, dict) or key in data:
        return data
    found = next((name for name in older if name in data), None)
    return data if found is None else {(key if k == found else k): v for k, v in data.items()}


class ModelInfo(_Strict):
    name: str  # the architecture ("gaitssb", "gaitbase", "deepgaitv2", "gaitset", "gaitgl")
    config: dict[str, Any]  # its config fields (e.g. GaitSSB's channels, strides, bins, form)


class InputSpec(_Strict):
    """The graph input and how raw masks become it."""

    name: str
    dtype: Literal["float32", "uint8"]
    shape: list[str | int]  # ["batch", "frames", 64, 44]
    value_range: tuple[float, float]  # (0, 1) for float32 input
    max_batch: int  # largest batch the export (and a TensorRT profile) was set up for
    max_frames: int  # longest sequence the export (and a TensorRT profile) was set up for
    preprocessing: str  # the function that turns any mask sequence into model frames
    dtype_choice: str  # why this input dtype (measured at export design time)
    # The graph needs at least this many frames; a shorter sequence is tiled whole ceil(min_frames / T)
    # times before the call (OpenGait's rule for GaitGL, whose forward does the same in torch).
    min_frames: int = 1

    @property
    def frame_size(self) -> tuple[int, int]:
        return int(self.shape[2]), int(self.shape[3])


class OutputSpec(_Strict):
    name: str
    parts: int
    part_dim: int  # floats per part
    layout: Literal["part-major"]  # (N, P, C) flattened to (N, P*C)
    normalisation: Normalisation  # what the model computes; "none" = raw features (e.g. before a BNNeck)

    @model_validator(mode="before")
    @classmethod
    def _older_names(cls, data: Any) -> Any:
        """Artifacts exported before called `part_dim` `channels`, and before that `dim`."""
        return _renamed(data, "part_dim", ("channels", "dim"))

    @property
    def embedding_layout(self) -> EmbeddingLayout:
        return EmbeddingLayout(self.parts, self.part_dim, self.normalisation)


class Quality(_Strict):
    """A reduced-precision variant measured against the fp32 model on the same sequences."""

    sequences: int
    min_cosine: float  # per sequence: mean per-part cosine (what ranking sees); the worst sequence
    mean_cosine: float
    min_part_cosine: float
    rank1_fp32: float  # leave-one-out Rank-1 (%) on a labelled synthetic set
    rank1: float
    rank1_drop: float  # percentage points
    note: str  # what the sets were


class ModelFile(_Strict):
    file: str  # name inside the artifact folder
    sha256: str
    bytes: int
    precision: VariantPrecision
    quality: Quality | None = None  # for fp16/int8: versus fp32


class ParityCase(_Strict):
    batch: int
    frames: int
    min_cosine: float  # worst per-part cosine versus PyTorch
    max_abs_diff: float


class Parity(_Strict):
    """fp32 ONNX Runtime versus PyTorch eager on the export machine."""

    mode: Literal["quick", "full"]
    threshold: float
    min_cosine: float
    max_abs_diff: float
    cases: list[ParityCase]


class BackendParity(_Strict):
    """One runtime backend at one precision against fp32 onnxruntime (CPU) on the same sequences
    (`gaitlu parity`). The runtime serves a pair only while its record passes: refused when asked for,
    skipped by `auto`, when it failed or is missing."""

    backend: str  # "openvino"
    precision: str  # "fp32", "bf16", "int8"
    sequences: int
    min_cosine: float  # per sequence: mean per-part cosine of the raw outputs; the worst sequence
    mean_cosine: float
    min_part_cosine: float  # the worst single part of any sequence
    threshold: float  # min_cosine must reach it
    passed: bool  # the cosine threshold met and, where measured, the Rank-1 change within its bound
    # With a protocol (`gaitlu parity --protocol casia-b`): Rank-1 (%) per probe condition on the labelled
    # set, of the fp32 onnxruntime reference and of this pair, and the largest change (percentage points).
    protocol: str | None = None
    rank1_reference: dict[str, float] | None = None
    rank1: dict[str, float] | None = None
    rank1_max_change: float | None = None
    data: str  # what the sequences were (a folder's name and how many frames each kept)
    device: str  # where it was measured (CPU name and the backend's execution properties)
    versions: dict[str, str]
    measured_at: str  # ISO 8601, UTC


class TensorRTInfo(_Strict):
    file: str
    sha256: str
    bytes: int
    precision: Literal["fp16"]
    tensorrt_version: str
    gpu: str
    compute_capability: str
    max_batch: int
    max_frames: int
    min_cosine_vs_onnx: float


class Centring(_Strict):
    """A reference mean subtracted from every per-part-normalised embedding before it is normalised again:
    it removes the direction all embeddings of a model share, so scores spread over more of [-1, 1]."""

    mean_b64: str  # (parts, part_dim) float32, little-endian, part-major, base64
    parts: int
    part_dim: int
    reference: str  # what the mean was computed on (a data set's name)
    sequences: int  # how many sequences it averages

    @model_validator(mode="before")
    @classmethod
    def _older_name(cls, data: Any) -> Any:
        """Artifacts calibrated before called `part_dim` `channels`."""
        return _renamed(data, "part_dim", ("channels",))

    @model_validator(mode="after")
    def _size(self) -> Centring:
        try:
            size = len(base64.b64decode(self.mean_b64, validate=True))
        except binascii.Error as exc:
            raise ValueError(f"centring.mean_b64 is not base64: {exc}") from None
        if size != 4 * self.parts * self.part_dim:
            raise ValueError(f"centring.mean_b64 holds {size} bytes, not 4 x {self.parts} x {self.part_dim}")
        return self


class Indexing(_Strict):
    """What the service does to the model's output before /embed answers, enrolment and search.

    A step after the model, recorded here rather than folded into the graph: the artifact's output
    stays exactly the model's embedding (what `gaitlu eval --artifact` scores, as OpenGait would).
    Per-part L2 makes inner product / parts the mean per-part cosine, which galleries index; with
    `centring` (written by `gaitlu calibrate` when it helps), the reference mean is subtracted from the
    normalised parts and they are normalised again.
    """

    normalisation: Literal["per-part-l2"] = "per-part-l2"
    centring: Centring | None = None


Comparison = Literal["sequence", "subject"]


class Threshold(_Strict):
    """Accept a comparison when its score is >= `score`: at most `far` of impostor comparisons pass."""

    far: float  # the nominal false accept rate asked for
    score: float
    observed_far: float  # share of the calibration set's impostor comparisons at or above `score`
    tar: float  # share of its genuine comparisons at or above `score`
    supported: bool  # >= 10 impostor comparisons lie above it; false: extrapolated from too few


class FarTable(_Strict):
    """Estimated FAR of a score of one comparison: the share of impostor comparisons (two different
    people) of the calibration set that score at least as high; log-linear between the points."""

    comparison: Comparison
    genuine: int  # genuine comparisons measured
    impostors: int  # impostor comparisons measured: FARs below 1 / impostors are not resolved
    eer: float  # equal error rate, %
    scores: list[float]  # ascending
    fars: list[float]  # at each score; non-increasing
    thresholds: list[Threshold]

    @model_validator(mode="after")
    def _monotone(self) -> FarTable:
        if not self.scores or len(self.scores) != len(self.fars):
            raise ValueError("a FAR table needs as many FARs as scores, and at least one")
        if any(b <= a for a, b in zip(self.scores, self.scores[1:], strict=False)):
            raise ValueError("FAR table scores must be strictly ascending")
        if any(b > a for a, b in zip(self.fars, self.fars[1:], strict=False)) or not all(
            0 < f <= 1 for f in self.fars
        ):
            raise ValueError("FAR table FARs must lie in (0, 1] and not increase with the score")
        return self

    @property
    def far_floor(self) -> float:
        """The smallest FAR this table resolves: one impostor comparison in all of them."""
        return 1.0 / self.impostors

    def far(self, score: float) -> float:
        """The estimated FAR of `score`; at the ends, the first point's FAR or the floor (an upper bound:
        no impostor comparison of the calibration set scored that high)."""
        i = bisect.bisect_right(self.scores, score)
        if i == 0:
            return self.fars[0]
        if i == len(self.scores):
            return self.fars[-1] if score == self.scores[-1] else self.far_floor
        s0, s1, f0, f1 = self.scores[i - 1], self.scores[i], self.fars[i - 1], self.fars[i]
        w = (score - s0) / (s1 - s0)
        return 10 ** ((1 - w) * math.log10(f0) + w * math.log10(f1))

    def threshold(self, max_far: float) -> float:
        """The score at which the estimated FAR falls to `max_far` (accept: score >= it): a calibrated
        threshold where one was measured at `max_far`, else interpolated in the table."""
        for entry in self.thresholds:
            if math.isclose(entry.far, max_far, rel_tol=1e-9):
                return entry.score
        if max_far >= self.fars[0]:
            return self.scores[0]
        if max_far < self.fars[-1]:
            return math.nextafter(self.scores[-1], math.inf)  # beyond every impostor measured
        i = next(j for j, f in enumerate(self.fars) if f <= max_far)  # the first point at or below
        if self.fars[i] == max_far:
            return self.scores[i]
        s0, s1, f0, f1 = self.scores[i - 1], self.scores[i], self.fars[i - 1], self.fars[i]
        w = (math.log10(max_far) - math.log10(f0)) / (math.log10(f1) - math.log10(f0))
        return s0 + w * (s1 - s0)


class Calibration(_Strict):
    """Score -> FAR tables of the service's scores, measured on a labelled data set (`gaitlu calibrate`).

    `sequence`: one sequence against another. `subject`: a probe against one enrolled subject of about
    `enrolled_per_subject` sequences, scored by its best one: the per-subject score /search reports.
    A FAR is per comparison; in a gallery of N people the chance that any one impostor passes is about
    N x FAR.
    """

    dataset: str  # the data set's name
    subjects: int
    sequences: int
    enrolled_per_subject: int
    centred: bool  # scores measured after the indexing step's centring
    calibrated_at: str  # ISO 8601, UTC
    sequence: FarTable
    subject: FarTable

    @model_validator(mode="after")
    def _kinds(self) -> Calibration:
        if self.sequence.comparison != "sequence" or self.subject.comparison != "subject":
            raise ValueError("calibration.sequence and .subject must be tables of those comparisons")
        return self

    def table(self, comparison: Comparison) -> FarTable:
        return self.sequence if comparison == "sequence" else self.subject


class Evaluation(_Strict):
    """How OpenGait's evaluator scores this model (from the imported config's evaluator_cfg)."""

    metric: Literal["euc", "cos"]  # per-part distance, averaged over parts, on the raw output
    frames_limit: int | None  # sampler.frames_all_limit: first frames kept per sequence; None = all
    sample_type: str  # sampler.sample_type ("all_ordered": whole sequences in natural order)
    eval_func: str  # OpenGait's evaluation function (protocol family)
    dataset: str | None  # data_cfg.test_dataset_name (or dataset_name)
    enable_float16: bool  # OpenGait autocasts its test forward to fp16 on a GPU when true
    cross_view_gallery: bool
    source: str  # where these values came from


class Source(_Strict):
    checkpoint: str
    sha256: str
    step: int | None
    config: dict[str, Any]  # the resolved training config saved in the checkpoint


class Manifest(_Strict):
    format: Literal["gaitlu-artifact/1"]
    model: ModelInfo
    input: InputSpec
    output: OutputSpec
    metric: Literal["ip"]  # of the indexed vectors: inner product / parts = mean per-part cosine
    model_sha256: str  # sha256 of model.onnx: the model's identity
    variants: dict[VariantPrecision, ModelFile]
    tensorrt: TensorRTInfo | None = None
    opset: int
    parity: Parity
    source: Source
    exported_at: str  # ISO 8601, UTC
    versions: dict[str, str]
    indexing: Indexing = Indexing()
    evaluation: Evaluation | None = None  # imported OpenGait models; None: the protocols' defaults
    calibration: Calibration | None = None  # `gaitlu calibrate`: score -> FAR; None: scores only
    # `gaitlu parity`: other backends against fp32 onnxruntime, keyed "backend/precision" ("openvino/bf16")
    backend_parity: dict[str, BackendParity] = {}

    @model_validator(mode="after")
    def _consistent(self) -> Manifest:
        fp32 = self.variants.get("fp32")
        if fp32 is None or fp32.sha256 != self.model_sha256:
            raise ValueError("variants.fp32 must exist and its sha256 must equal model_sha256")
        for key, entry in self.variants.items():
            if entry.precision != key:
                raise ValueError(f"variants.{key} has precision {entry.precision!r}")
            if Path(entry.file).name != entry.file:
                raise ValueError(f"variants.{key}.file must be a plain file name, got {entry.file!r}")
        centring = self.indexing.centring
        if centring is not None and (centring.parts, centring.part_dim) != (
            self.output.parts,
            self.output.part_dim,
        ):
            raise ValueError("indexing.centring does not have the output's parts x part_dim")
        if self.calibration is not None and self.calibration.centred != (centring is not None):
            raise ValueError("calibration.centred must say whether indexing.centring is set")
        for pair, record in self.backend_parity.items():
            if pair != f"{record.backend}/{record.precision}":
                raise ValueError(f"backend_parity.{pair} records {record.backend}/{record.precision}")
        return self

    def variant(self, precision: str) -> ModelFile:
        """The model file of one precision; a clear error names the ones this artifact has."""
        if precision not in self.variants:
            raise ArtifactError(
                f"this artifact has no {precision!r} model; it has {sorted(self.variants)} "
                f"(re-export with --{precision} to add it)"
            )
        return self.variants[precision]


def describe_file(artifact_dir: str | os.PathLike[str], name: str, precision: VariantPrecision) -> ModelFile:
    """The manifest entry for a model file already written into the artifact folder."""
    path = Path(artifact_dir) / name
    return ModelFile(file=name, sha256=sha256_file(path), bytes=path.stat().st_size, precision=precision)


def read_manifest(artifact_dir: str | os.PathLike[str]) -> Manifest:
    """Read and validate `<artifact_dir>/manifest.json`; every problem is an ArtifactError."""
    folder = Path(artifact_dir)
    if not folder.is_dir():
        raise ArtifactError(f"artifact folder not found: {folder} (create one with `gaitlu export`)")
    path = folder / MANIFEST_NAME
    if not path.is_file():
        raise ArtifactError(f"{folder} is not an export artifact: it has no {MANIFEST_NAME}")
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"{path}: not readable JSON ({exc})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        found = data.get("format") if isinstance(data, dict) else None
        raise ArtifactError(
            f"{path}: format {found!r} is not {FORMAT!r} (re-export with this gaitlu version)"
        )
    try:
        return Manifest.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'manifest'}: {e['msg']}" for e in exc.errors()
        )
        raise ArtifactError(f"{path}: invalid manifest: {problems}") from None


def write_manifest(manifest: Manifest, artifact_dir: str | os.PathLike[str]) -> Path:
    """Write the manifest atomically (gaitlu.files: a reader never sees half of one)."""
    return write_atomic(Path(artifact_dir) / MANIFEST_NAME, manifest.model_dump_json(indent=2) + "\n")


def verified_path(artifact_dir: str | os.PathLike[str], file: str, sha256: str) -> Path:
    """The path of an artifact file whose content matches the manifest's hash; otherwise ArtifactError."""
    path = Path(artifact_dir) / file
    if not path.is_file():
        raise ArtifactError(f"{path} is listed in the manifest but missing")
    actual = sha256_file(path)
    if actual != sha256:
        raise ArtifactError(
            f"{path} does not match its manifest (sha256 {actual[:12]}... != {sha256[:12]}...): "
            "the file was changed or replaced after export; refusing to load it"
        )
    return path
