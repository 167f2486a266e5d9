"""The inference runtime (torch-free): an export artifact behind `embed` (onnxruntime, TensorRT, OpenVINO).

Its own stage between export and its users: the engine (and through it the service and `gaitlu enroll
--offline`) and `gaitlu eval --artifact` all load artifacts with `load_artifact_embedder`.
"""

from runtime.backends import BACKENDS, BackendName
from runtime.embedder import ArtifactEmbedder, load_artifact_embedder
from runtime.selection import PRECISIONS, Choice, Precision

__all__ = [
    "BACKENDS",
    "PRECISIONS",
    "ArtifactEmbedder",
    "BackendName",
    "Choice",
    "Precision",
    "load_artifact_embedder",
]
