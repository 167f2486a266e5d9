"""Checkpoint model -> ONNX graph: `silhouettes` (N, T, 64, 44) float32 in [0, 1] -> `embedding` (N, P*C).

The graph is the model's own forward (per-part L2 normalisation included) plus a part-major flatten, so
an inner product of two embeddings divided by P is the paper's mean per-part cosine. N and T are dynamic
(torch.onnx.export with dynamo=True and explicit `dynamic_shapes`, see docs/stack.md).

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
from train.model import GaitSSB

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
    """The exported function: GaitSSB forward, then (N, P, C) -> (N, P*C) part-major."""

    def __init__(self, model: GaitSSB) -> None:
        super().__init__()
        self.model = model

    def forward(self, silhouettes: torch.Tensor) -> torch.Tensor:
        emb = self.model(silhouettes)  # (N, P, C), each part L2-normalised
        return emb.reshape(emb.shape[0], -1)  # (N, P*C)


def export_onnx(model: GaitSSB, path: Path, opset: int, max_batch: int, max_frames: int) -> None:
    """Write the graph to `path` and check it with onnx.checker (full check, shapes inferred)."""
    if opset < MIN_OPSET:
        raise ExportError(f"--opset {opset} is below {MIN_OPSET}, the lowest the torch exporter writes")
    graph = EmbeddingGraph(model).eval()
    # Batch >= 2 and frames >= 2 in the example, so neither dimension is specialised to a constant.
    example = torch.zeros(2, 3, FRAME_HEIGHT, MODEL_WIDTH)
    dynamic = {INPUT_NAME: {0: Dim("batch", min=1, max=max_batch), 1: Dim("frames", min=1, max=max_frames)}}
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
