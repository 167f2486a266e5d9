"""The inference runtime (torch-free): an export artifact behind `embed`, on onnxruntime or TensorRT.

Its own stage between export and its users: the engine (and through it the service and `gaitlu enroll
--offline`) and `gaitlu eval --artifact` all load artifacts with `load_artifact_embedder`.
"""

from runtime.backends import BACKENDS, BackendName
from runtime.embedder import ArtifactEmbedder, load_artifact_embedder

__all__ = ["BACKENDS", "ArtifactEmbedder", "BackendName", "load_artifact_embedder"]
