"""Checkpoint model -> ONNX graph: `silhouettes` (N, T, 64, 44) float32 in [0, 1] -> `embedding` (N, P*C).

The graph is the model's own forward, for any registered architecture, plus a part-major flatten:
exactly the model's embedding (OpenGait's evaluator tensor for imported models), raw where it is raw.
Normalisation for the service's index is a separate step the manifest records, never part of the
graph. N and T are dynamic (torch.onnx.export with dynamo=True and explicit `dynamic_shapes`, see
docs/stack.md); T starts at the model's `min_frames` (3 for GaitGL, whose stride-3 temporal
aggregation needs three frames: the runtime tiles shorter sequences as OpenGait's forward does).

Input dtype: float32. uint8 input with /255 inside the graph was measured against it on this 2-core CPU
(onnxruntime 1.32, tiny and paper-size models, batch 1 and 8): equal within 2 %, so the simpler float32
contract was kept; uint8 would only shrink a GPU's host-to-device copy (about 1 MB per 92-frame sequence).
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import onnx
import torch
from torch import nn
from torch.export import Dim

from export.errors import ExportError
from gaitlu.preprocess import FRAME_HEIGHT, MODEL_WIDTH
from train.network import GaitNetwork, NetworkConfig

logger = logging.getLogger(__name__)
# torch's exporter warns once per torchvision op it cannot register; we use none of them.
logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)

INPUT_NAME = "silhouettes"
OUTPUT_NAME = "embedding"
MIN_OPSET = 18  # the dynamo exporter's floor (asking for less silently keeps 18)
INPUT_DTYPE_CHOICE = (
    "float32 in [0, 1]: uint8 with /255 in the graph measured equal within 2 % on onnxruntime CPU "
    "(tiny and paper-size models, batch 1 and 8), so the plain float contract was kept"
)


class EmbeddingGraph(nn.Module):
    """The exported function: the model's forward, then (N, P, C) -> (N, P*C) part-major."""

    def __init__(self, model: GaitNetwork[NetworkConfig]) -> None:
        super().__init__()
        self.model = model

    def forward(self, silhouettes: torch.Tensor) -> torch.Tensor:
        emb = self.model(silhouettes)  # (N, P, C), the model's embedding as it is
        return emb.reshape(emb.shape[0], -1)  # (N, P*C)


def export_onnx(
    model: GaitNetwork[NetworkConfig], path: Path, opset: int, max_batch: int, max_frames: int
) -> None:
    """Write the graph to `path` and check it with onnx.checker (full check, shapes inferred)."""
    if opset < MIN_OPSET:
        raise ExportError(f"--opset {opset} is below {MIN_OPSET}, the lowest the torch exporter writes")
    graph = EmbeddingGraph(model).eval()
    min_frames = model.min_frames
    if max_frames < min_frames:
        raise ExportError(f"--max-frames {max_frames} is below this model's minimum of {min_frames} frames")
    # Batch >= 2 and 7 frames in the example, so no dimension (nor GaitGL's T // 3) is specialised.
    example = torch.zeros(2, max(7, min_frames), FRAME_HEIGHT, MODEL_WIDTH)
    frames = Dim("frames", min=min_frames, max=max(max_frames, example.shape[1]))
    dynamic = {INPUT_NAME: {0: Dim("batch", min=1, max=max_batch), 1: frames}}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the exporter's deprecation chatter is not the user's business
        program = torch.onnx.export(
            graph,
            (example,),
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_shapes=dynamic,
            opset_version=opset,
            dynamo=True,
            verbose=False,
        )
    if program is None:
        raise ExportError("torch.onnx.export returned no program")
    program.save(str(path))
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except onnx.checker.ValidationError as exc:
        raise ExportError(f"the exported graph fails onnx.checker: {exc}") from exc
    logger.info("wrote %s (opset %d)", path, opset)
