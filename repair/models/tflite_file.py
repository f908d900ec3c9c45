"""Reading a .tflite flatbuffer: TFLite's schema (``schema_py_generated`` of the ``tflite-micro`` wheel, object
API), the operator names, a tensor's constant data. No TensorFlow."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import ModelError

#: TensorType values of the TFLite schema used here.
FLOAT32, INT32, UINT8, INT16, INT8 = 0, 2, 3, 7, 9
NUMPY_TYPE = {INT8: np.int8, INT32: np.int32, FLOAT32: np.float32, UINT8: np.uint8, INT16: np.int16}
#: Fused activations: NONE, RELU, RELU_N1_TO_1, RELU6.
ACT_NONE, ACT_RELU, ACT_RELU_N1_TO_1, ACT_RELU6 = 0, 1, 2, 3


def schema():
    try:
        from tflite_micro.tensorflow.lite.micro.python import (
            schema_py_generated as generated,
        )
    except ImportError:  # pragma: no cover - tflite-micro is a dependency
        raise ModelError("reading .tflite needs the tflite-micro package: pip install tflite-micro") from None
    return generated


def is_tflite(raw: bytes) -> bool:
    """The flatbuffer file identifier TFLite writes at bytes 4..8."""
    return len(raw) >= 8 and raw[4:8] == b"TFL3"


def read_tflite(source: str | Path | bytes, name: str | None = None):
    """The flatbuffer's ``ModelT`` (object API); ModelError for a file that is not a TFLite model."""
    raw = source if isinstance(source, (bytes, bytearray)) else Path(source).read_bytes()
    name = name or ("the model" if isinstance(source, (bytes, bytearray)) else str(source))
    if not is_tflite(raw):
        raise ModelError(f"{name} is not a TFLite flatbuffer (no TFL3 identifier): give the .tflite the "
                         "converter wrote")
    try:
        return schema().ModelT.InitFromPackedBuf(bytes(raw), 0)
    except Exception as exc:  # a truncated or damaged flatbuffer fails anywhere inside the generated reader
        raise ModelError(f"{name} is a damaged TFLite flatbuffer ({type(exc).__name__}): re-export it") from None


def op_name(model, op) -> str:
    """The builtin operator's name (``CONV_2D``), or ``builtin N`` for one this schema does not name."""
    code = model.operatorCodes[op.opcodeIndex]
    value = max(code.builtinCode, code.deprecatedBuiltinCode)
    names = {v: k for k, v in vars(schema().BuiltinOperator).items() if not k.startswith("_")}
    return names.get(value, f"builtin {value}")


def tensor_data(model, tensor) -> np.ndarray | None:
    """A constant tensor's values in its shape, or None for an activation (empty buffer)."""
    buf = model.buffers[tensor.buffer].data
    if buf is None or len(buf) == 0 or tensor.type not in NUMPY_TYPE:
        return None
    return np.frombuffer(bytes(bytearray(buf)), NUMPY_TYPE[tensor.type]).reshape([int(d) for d in tensor.shape])


def tensor_name(tensor, index: int) -> str:
    return tensor.name.decode(errors="replace") if tensor.name else f"t{index}"


def is_hybrid(model) -> bool:
    """A dynamic-range ("hybrid") model: int8 constant weights, float activations everywhere."""
    g = model.subgraphs[0]
    outs = [g.tensors[int(o)] for op in g.operators for o in op.outputs]
    consts = [t for t in g.tensors if tensor_data(model, t) is not None]
    return bool(outs) and all(t.type == FLOAT32 for t in outs) and any(t.type == INT8 for t in consts)


def pad_amounts(model, op) -> tuple[int, int, int, int] | None:
    """(top, left, bottom, right) of a PAD of an NHWC tensor's H and W (its paddings input: int32 [4, 2]), or None
    when it pads anything else or its amounts are not constant and non-negative."""
    pads = tensor_data(model, model.subgraphs[0].tensors[int(op.inputs[1])]) if len(op.inputs) > 1 else None
    if pads is None or pads.shape != (4, 2) or np.any(pads[0] != 0) or np.any(pads[3] != 0) or np.any(pads < 0):
        return None
    return int(pads[1][0]), int(pads[2][0]), int(pads[1][1]), int(pads[2][1])


def same_padding(in_hw, out_hw, kernel, strides, dilations) -> tuple[int, int, int, int]:
    """(top, left, bottom, right) of TFLite's SAME padding, as TFLM's ``ComputePaddingHeightWidth``: total =
    (out − 1)·stride + (k − 1)·dilation + 1 − in (at least 0), the smaller half first."""
    (ih, iw), (oh, ow), (kh, kw), (sh, sw), (dh, dw) = in_hw, out_hw, kernel, strides, dilations
    th = max((oh - 1) * sh + (kh - 1) * dh + 1 - ih, 0)
    tw = max((ow - 1) * sw + (kw - 1) * dw + 1 - iw, 0)
    return th // 2, tw // 2, th - th // 2, tw - tw // 2


def int8_weight_problem(tensor, n_out: int, axis: int) -> str | None:
    """Why an int8 weight tensor is not what TFLM's int8 kernels take (symmetric, one scale or one per output
    channel along ``axis``), or None when it is."""
    q = tensor.quantization
    scale = np.asarray(q.scale if q is not None and q.scale is not None else [], np.float64)
    zp = np.asarray(q.zeroPoint if q is not None and q.zeroPoint is not None else [], np.int64)
    if tensor.type != INT8:
        return "weights must be a constant int8 tensor (a hybrid or float model?)"
    if scale.size == 0:
        return "the weights are not quantized"
    if np.any(zp != 0):
        return "weights must be symmetric (zero point 0)"
    if scale.size not in (1, n_out):
        return f"{scale.size} weight scales for {n_out} output channels"
    if scale.size > 1 and q.quantizedDimension != axis:
        return f"weights quantized along dimension {q.quantizedDimension}, expected {axis}"
    return None


def tensor_quant(tensor) -> tuple[np.ndarray, np.ndarray, int] | None:
    """(scales float32, zero points int64 — zeros when the file omits them —, quantized dimension), or None for a
    tensor without quantization."""
    q = tensor.quantization
    if q is None or q.scale is None or len(q.scale) == 0:
        return None
    zp = q.zeroPoint if q.zeroPoint is not None and len(q.zeroPoint) else [0] * len(q.scale)
    return np.asarray(q.scale, np.float32), np.asarray(zp, np.int64), int(q.quantizedDimension)
