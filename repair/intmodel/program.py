"""The integer program the reference device runs, and its Python twin (bit-exact with c_patches/src/tmlr_model_s8.c).

An int8 model lowered from ONNX QDQ (``lower.py``) is a list of layers over int8 tensors (batch dimension
dropped, ONNX layouts kept: NCHW, or NCL for 1-D). Arithmetic is TFLite Micro's / CMSIS-NN's:

    conv, fc:  acc = b_c + Σ (x − z_x) · w           (int32; weights symmetric, zero point 0; padding adds 0)
               y = clamp(z_y + requantize(acc, M_c, n_c), act_min, act_max),  M_c · 2^(n_c − 31) ≈ s_x s_w,c / s_y
    avgpool:   acc = Σ_window (x − z_x);  y = clamp(z_y + requantize(acc, M, n)), M·2^(n−31) ≈ s_x / (s_y · count)
               (input and output quantized differently, as onnxruntime's quantizer leaves a pooling layer)
    avgpool_tflm: TFLM's AVERAGE_POOL_2D, input and output sharing scale and zero point: acc = Σ_window x (raw,
               zero point not subtracted), y = clamp((acc ± count/2) / count) with C truncation (half away from 0)
    maxpool:   m = max_window x;  y = clamp(z_y + requantize(m − z_x, M, n)),  M·2^(n−31) ≈ s_x / s_y
    requant:   y = clamp(z_y + requantize(x − z_x, M, n))  (a change of scale, or a standalone ReLU/Clip)
    add:       TFLM's int8 Add: both inputs (x − z)·2^20 rescaled by s_i / (2 max(s_1, s_2)), summed, rescaled by
               2 max(s_1, s_2) / (2^20 s_y)
    softmax:   TFLM's int8 Softmax (output scale 1/256, zero point −128)
    transpose: a permutation;  reshape: the same bytes

``requantize`` is ``repair.fixedpoint.requantize`` (CMSIS-NN arm_nn_requantize: doubling high multiply with
round-half-up, then rounding right shift, ties away from zero). ReLU/Clip are folded into act_min/act_max.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .. import fixedpoint as fp

OPS = ("conv", "fc", "avgpool", "maxpool", "requant", "add", "softmax", "transpose", "reshape",
       "avgpool_tflm")  # tmlr_layer_op 1..10
ADD_LEFT_SHIFT = 20


@dataclass(frozen=True)
class QTensor:
    name: str
    shape: tuple[int, ...]  # without the batch dimension
    scale: float
    zero_point: int

    @property
    def size(self) -> int:
        return int(math.prod(self.shape))


@dataclass
class Layer:
    op: str
    inputs: list[str]
    output: str
    node: str  # the ONNX node it came from (for messages)
    p: dict = field(default_factory=dict)  # integer parameters (see the module docstring)


@dataclass
class IntProgram:
    tensors: dict[str, QTensor]
    layers: list[Layer]
    input: str
    output: str

    def run(self, x: np.ndarray) -> np.ndarray:
        """int8 input [N, *input shape] → int8 output [N, *output shape], exactly as the C kernels compute."""
        x = np.asarray(x)
        n = len(x)
        values = {self.input: x.reshape(n, *self.tensors[self.input].shape).astype(np.int64)}
        for layer in self.layers:
            args = [values[i] for i in layer.inputs]
            out = _KERNELS[layer.op](layer, args, self.tensors)
            values[layer.output] = out.reshape(n, *self.tensors[layer.output].shape)
        return values[self.output].astype(np.int8)

    def macs(self) -> int:
        """Multiply-accumulates of one inference (conv and fc)."""
        total = 0
        for layer in self.layers:
            if layer.op in ("conv", "fc"):
                total += int(layer.p["weights"][0].size) * self.tensors[layer.output].size  # taps x outputs
        return total


def requantize_channels(acc: np.ndarray, mult: np.ndarray, shift: np.ndarray, axis: int) -> np.ndarray:
    """requantize with one (M, n) per index along ``axis`` of acc."""
    out = np.empty_like(acc, dtype=np.int64)
    acc = np.moveaxis(acc, axis, 0)
    view = np.moveaxis(out, axis, 0)
    for c in range(acc.shape[0]):
        view[c] = fp.requantize(acc[c], int(mult[c]), int(shift[c]))
    return out


def _finish(acc, p, axis=1) -> np.ndarray:
    """z_y + requantize(acc), clamped to [act_min, act_max]."""
    mult, shift = np.asarray(p["mult"]), np.asarray(p["shift"])
    if mult.size == 1:
        y = fp.requantize(acc, int(mult[0]), int(shift[0]))
    else:
        y = requantize_channels(acc, mult, shift, axis)
    return np.clip(y + p["out_zp"], p["act_min"], p["act_max"])


def _conv(layer, args, tensors):
    p = layer.p
    x = args[0] - p["in_zp"]
    n = len(x)
    if x.ndim == 3:  # 1-D: (N, C, L) as (N, C, 1, L)
        x = x[:, :, None, :]
    w = p["weights"].astype(np.int64)  # (Cout, Cin/g, kh, kw)
    cout, cg, kh, kw = w.shape
    g = p["group"]
    (sh, sw), (dh, dw), (pt, pl, pb, pr) = p["strides"], p["dilations"], p["pads"]
    xp = np.pad(x, ((0, 0), (0, 0), (pt, pb), (pl, pr)))
    ho = (xp.shape[2] - dh * (kh - 1) - 1) // sh + 1
    wo = (xp.shape[3] - dw * (kw - 1) - 1) // sw + 1
    xg = xp.reshape(n, g, cg, xp.shape[2], xp.shape[3])
    wg = w.reshape(g, cout // g, cg, kh, kw)
    acc = np.zeros((n, g, cout // g, ho, wo), np.int64)
    for ky in range(kh):
        for kx in range(kw):
            patch = xg[:, :, :, ky * dh: ky * dh + sh * (ho - 1) + 1: sh, kx * dw: kx * dw + sw * (wo - 1) + 1: sw]
            acc += np.einsum("ngchw,goc->ngohw", patch, wg[:, :, :, ky, kx])
    acc = acc.reshape(n, cout, ho, wo) + np.asarray(p["bias"], np.int64)[None, :, None, None]
    return _finish(acc, p, axis=1)


def _fc(layer, args, tensors):
    p = layer.p
    x = args[0].reshape(len(args[0]), -1) - p["in_zp"]
    acc = x @ p["weights"].astype(np.int64).T + np.asarray(p["bias"], np.int64)
    return _finish(acc, p, axis=1)


def _windows(x, p, reduce):
    """Apply ``reduce`` over pooling windows of (N, C, H, W) (or (N, C, L)); no padding."""
    if x.ndim == 3:
        x = x[:, :, None, :]
    (kh, kw), (sh, sw) = p["kernel"], p["strides"]
    ho, wo = (x.shape[2] - kh) // sh + 1, (x.shape[3] - kw) // sw + 1
    cols = np.stack([x[:, :, ky: ky + sh * (ho - 1) + 1: sh, kx: kx + sw * (wo - 1) + 1: sw]
                     for ky in range(kh) for kx in range(kw)], axis=-1)
    return reduce(cols, axis=-1)


def _avgpool(layer, args, tensors):
    p = layer.p
    return _finish(_windows(args[0] - p["in_zp"], p, np.sum), p)


def _avgpool_tflm(layer, args, tensors):
    """TFLM reference_integer_ops::AveragePool / CMSIS-NN arm_avgpool_s8 (see the module docstring)."""
    p = layer.p
    n = p["kernel"][0] * p["kernel"][1]
    acc = _windows(args[0], p, np.sum)
    q = np.where(acc > 0, (acc + n // 2) // n, -((n // 2 - acc) // n))
    return np.clip(q, p["act_min"], p["act_max"])


def _maxpool(layer, args, tensors):
    p = layer.p
    return _finish(_windows(args[0], p, np.max) - p["in_zp"], p)


def _requant(layer, args, tensors):
    return _finish(args[0] - layer.p["in_zp"], layer.p)


def _add(layer, args, tensors):
    p = layer.p
    a = fp.requantize((args[0] - p["in_zp"]) * (1 << ADD_LEFT_SHIFT), p["mult1"], p["shift1"])
    b = fp.requantize((args[1] - p["in1_zp"]) * (1 << ADD_LEFT_SHIFT), p["mult2"], p["shift2"])
    return _finish(a + b, p)


def _softmax(layer, args, tensors):
    p = layer.p
    x = args[0]
    return fp.softmax_s8(x.reshape(-1, x.shape[-1]), p["mult"], p["shift"], p["diff_min"]).astype(np.int64).reshape(
        x.shape)


def _transpose(layer, args, tensors):
    perm = layer.p["perm"]
    return np.transpose(args[0], [0] + [1 + i for i in perm])


def _reshape(layer, args, tensors):
    return args[0]


_KERNELS = {"conv": _conv, "fc": _fc, "avgpool": _avgpool, "maxpool": _maxpool, "requant": _requant, "add": _add,
            "softmax": _softmax, "transpose": _transpose, "reshape": _reshape, "avgpool_tflm": _avgpool_tflm}
