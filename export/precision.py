"""Reduced-precision variants of the fp32 graph: static int8 (QDQ) and fp16.

int8 follows docs/stack.md: static QDQ, per-channel, u8 activations / s8 weights, `quant_pre_process`
with `skip_symbolic_shape=True` (symbolic shape inference crashes on the dynamo graph). Never dynamic
quantisation: Conv becomes ConvInteger, 1.6-6.5x slower on this CPU.

Only the backbone (Conv, its residual Add and Relu) is quantised. Measured on a 2-core CPU with random
weights: quantising Conv alone leaves Q/DQ pairs around every residual Add (1.1x faster than fp32);
Conv + Add + Relu ran 3.3x faster at cosine 0.9999; also quantising the heads' MatMuls (about 1 % of the
FLOPs) dropped the cosine to 0.9993 for no speed.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quant_pre_process,
    quantize_static,
)
from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16

from export.graph import INPUT_NAME

logger = logging.getLogger(__name__)

INT8_OPS = ("Conv", "Add", "Relu")
# The per-part L2 normalisation stays fp32 in the fp16 model: its sum of 512 squares loses digits in fp16.
FP16_KEEP_FP32 = ("ReduceL2", "Div", "Clip", "Expand")


class _SequenceReader(CalibrationDataReader):  # type: ignore[misc]  # onnxruntime is untyped (Any)
    """Feeds each calibration sequence as a batch of one (sequences differ in length)."""

    def __init__(self, sequences: list[np.ndarray]) -> None:
        self._batches = iter([{INPUT_NAME: seq[None].astype(np.float32)} for seq in sequences])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._batches, None)


def quantize_int8(fp32_path: Path, out_path: Path, calibration: list[np.ndarray]) -> None:
    """Write the static-int8 QDQ model calibrated (MinMax) on (T, 64, 44) float32 sequences."""
    with tempfile.TemporaryDirectory(prefix="gaitlu-quant-") as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)
        quantize_static(
            str(prepared),
            str(out_path),
            _SequenceReader(calibration),
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=list(INT8_OPS),
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
        )
    onnx.checker.check_model(str(out_path))
    logger.info("wrote %s (static int8, %d calibration sequences)", out_path, len(calibration))


def convert_fp16(fp32_path: Path, out_path: Path) -> None:
    """Write an fp16 copy whose input and output stay float32 (the runtime contract does not change)."""
    model = convert_float_to_float16(
        onnx.load(str(fp32_path)),
        keep_io_types=True,
        op_block_list=[*DEFAULT_OP_BLOCK_LIST, *FP16_KEEP_FP32],
    )
    # The converter appends its input Casts at the end of the node list; the checker wants topological order.
    graph_ir = ir.from_proto(model)
    graph_ir.graph.sort()
    model = ir.to_proto(graph_ir)
    onnx.checker.check_model(model)
    onnx.save(model, str(out_path))
    logger.info("wrote %s (fp16 weights and activations, float32 I/O)", out_path)
