"""The export artifact's manifest: what `gaitlu export` writes beside model.onnx and the service trusts.

An artifact is a folder: `manifest.json` plus the model files it lists (`model.onnx`, optionally
`model.int8.onnx`, `model.fp16.onnx`, a TensorRT engine). The manifest says how to feed the model
(input spec and preprocessing), what its output is (the model's own embedding, raw or normalised by the
model), what the service does to it before indexing (`indexing`, a separate recorded step), how to
compare the indexed vectors (metric), how OpenGait evaluates the model (`evaluation`, for imported
models) and which model it is: the sha256 of
`model.onnx` is the model's identity for the service and the galleries, and every file's hash is checked
before it is loaded, so a swapped or truncated file is refused rather than silently serving other vectors.

Core module (numpy-free, torch-free): the export stage writes it, the service reads it.
"""

from __future__ import annotations

import json
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
    channels: int  # floats per part
    layout: Literal["part-major"]  # (N, P, C) flattened to (N, P*C)
    normalisation: Normalisation  # what the model computes; "none" = raw features (e.g. before a BNNeck)

    @model_validator(mode="before")
    @classmethod
    def _dim_was_channels(cls, data: Any) -> Any:
        """Artifacts exported before the embedding vocabulary (gaitlu.embedding) called channels `dim`."""
        if isinstance(data, dict) and "dim" in data and "channels" not in data:
            data = {("channels" if key == "dim" else key): value for key, value in data.items()}
        return data

    @property
    def embedding_layout(self) -> EmbeddingLayout:
        return EmbeddingLayout(self.parts, self.channels, self.normalisation)


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


class Indexing(_Strict):
    """What the service does to the model's output before /embed answers, enrolment and search.

    A step after the model, recorded here rather than folded into the graph: the artifact's output
    stays exactly the model's embedding (what `gaitlu eval --artifact` scores, as OpenGait would).
    Per-part L2 makes inner product / parts the mean per-part cosine, which galleries index.
    """

    normalisation: Literal["per-part-l2"] = "per-part-l2"


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
