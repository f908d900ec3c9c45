"""The parts of an int8 QDQ graph the in-model repairs edit: a layer (Conv / Gemm / MatMul and the initializers
holding its numbers), an activation (the Q and DQ nodes of one tensor, a same-range group), and the rule that
turns a float range into an int8 scale and zero point."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Layer:
    """One Conv / Gemm / MatMul of the int8 graph and the initializers that hold its numbers."""

    name: str  # node name (or first output when unnamed)
    op: str
    node: object  # the onnx NodeProto (of the edited copy)
    input_dq: object  # DequantizeLinear giving the float view of the layer's input
    weight_dq: object  # DequantizeLinear of the int8 weight initializer
    bias_dq: object | None  # DequantizeLinear of the int32 bias initializer, or None
    bias_add: object | None  # the Add after a MatMul that carries its bias
    preact: str  # float pre-activation tensor: the layer's output (or its bias Add's output)
    group: int = 1
    trans_b: bool = False

    @property
    def out_axis(self) -> int:
        """Axis of output channels in the weight tensor."""
        if self.op == "Conv" or (self.op == "Gemm" and self.trans_b):
            return 0
        return 1

    @property
    def in_axis(self) -> int:
        """Axis of input channels in the weight tensor (per group for a grouped Conv)."""
        return 1 - self.out_axis if self.op != "Conv" else 1

    @property
    def preact_axis(self) -> int:
        """Channel axis of the pre-activation tensor (batch first)."""
        return -1 if self.op == "MatMul" else 1


@dataclass
class Activation:
    """One quantized activation: the Q nodes writing it and the DQ nodes reading it (a same-range group)."""

    key: str  # the first Q output of the group
    q_nodes: list = field(default_factory=list)
    dq_nodes: list = field(default_factory=list)
    interface: str = ""  # why the group is a model input/output that must not change, if it is one
    model_input: bool = False  # the model's input quantization: inside a float-input model, or an int8 input's
    int8_input: bool = False  # an int8 input: firmware quantizes with these parameters (TFLM reads them from the model)




def range_params(rmin: float, rmax: float, qmin: int = -128, qmax: int = 127) -> tuple[float, int]:
    """Scale and zero point of an asymmetric int8 range, as ``onnxruntime.quantization`` computes them:
    the range is widened to contain 0, scale = (rmax − rmin) / (qmax − qmin), zp = round(qmin − rmin / scale)."""
    rmin, rmax = min(rmin, 0.0), max(rmax, 0.0)
    if rmax == rmin:
        return 1.0, 0
    scale = (rmax - rmin) / (qmax - qmin)
    zp = int(np.clip(np.rint(qmin - rmin / scale), qmin, qmax))
    return float(scale), zp


def weight_denominator(qm, layer: Layer, w_float: np.ndarray) -> float:
    """max|w| / scale of the model's own quantization of ``w_float`` (127 for TFLite, 127.5 for ORT), read
    from the channels whose int8 weights reach at least half the int8 range (dead, pruned channels —
    half of some MobileNet layers — carry no information about it)."""
    axes = tuple(i for i in range(w_float.ndim) if i != layer.out_axis)
    if qm.per_channel(layer):
        absmax, qmax = np.abs(w_float).max(axis=axes), np.abs(qm.weight_q(layer).astype(np.int64)).max(axis=axes)
    else:
        absmax, qmax = np.array([np.abs(w_float).max()]), np.array([np.abs(qm.weight_q(layer)).max()])
    s = qm.weight_scale(layer)[: absmax.size]
    ok = (qmax >= 64) & (s > 0)
    return float(np.median(absmax[ok] / s[ok])) if ok.any() else 127.0
