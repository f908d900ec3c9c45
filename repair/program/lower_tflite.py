"""Lower an int8 .tflite model (as TensorFlow Lite Micro runs it) straight to the integer program.

The flatbuffer is read with TFLite's schema (``models.tflite_file``: the ``tflite-micro`` wheel's, object API);
no TensorFlow, no detour through ONNX. Every supported operator becomes the layer TFLM's reference kernels
compute, with the parameters TFLM's Prepare derives:

* CONV_2D, DEPTHWISE_CONV_2D: per-channel M_c·2^(n_c−31) ≈ s_x·s_w,c / s_y (double, ``QuantizeMultiplier``),
  SAME padding as ``ComputePaddingHeightWidth`` (total = (out−1)·stride + (k−1)·dilation + 1 − in, top = total/2);
* FULLY_CONNECTED: the same, weights (out, in), the input flattened in NHWC order;
* ADD: TFLM's int8 Add (left shift 20, inputs rescaled by s_i / 2·max(s_1, s_2));
* AVERAGE_POOL_2D: raw sum / count rounded half away from zero (input and output share quantization);
  MAX_POOL_2D: the max, clamped; no padded windows;
* SOFTMAX: ``softmax_params(beta, s_in)`` (``PreprocessSoftmaxScaling``, ``CalculateInputRadius``);
* PAD of H and W feeding a VALID CONV_2D / DEPTHWISE_CONV_2D: the convolution's padding (TFLM pads int8 with
  the zero point, which the convolution subtracts: the same sums);
* RESHAPE: the same bytes (in NHWC order); QUANTIZE int8→int8: a requantize; QUANTIZE of a float input and
  DEQUANTIZE of the output: the program's edges;
* fused RELU / RELU6 / RELU_N1_TO_1: ``CalculateActivationRangeQuantized`` (f / scale in float32, rounded half
  away from zero).

Program tensors keep the reference device's layout: a 4-D activation [1, H, W, C] is held as (C, H, W), with a
transpose layer where the model's NHWC order matters (its input, a reshape or a fully connected layer reading
it, its output). Anything else — another operator, uint8 (legacy) quantization, hybrid (float activations,
int8 weights), a float model, a file that is not a .tflite — is a ModelError naming the operator and its index.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from .. import fixedpoint as fp
from ..errors import ModelError
from ..models.tflite_file import (
    ACT_NONE,
    ACT_RELU,
    ACT_RELU6,
    ACT_RELU_N1_TO_1,
    FLOAT32,
    INT8,
    INT32,
    UINT8,
    int8_weight_problem,
    op_name,
    pad_amounts,
    read_tflite,
    same_padding,
    tensor_data,
    tensor_name,
    tensor_quant,
)
from .ir import ADD_LEFT_SHIFT, IntProgram, Layer, QTensor

SUPPORTED = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "ADD", "AVERAGE_POOL_2D", "MAX_POOL_2D", "RESHAPE",
             "SOFTMAX", "QUANTIZE", "DEQUANTIZE", "PAD (of H and W, before a VALID convolution)")


class _Lowering:
    def __init__(self, model, name: str):
        self.m, self.name = model, name
        self.g = model.subgraphs[0]
        self.tensors: dict[str, QTensor] = {}
        self.layers: list[Layer] = []
        self.env: dict[int, str] = {}  # tflite tensor index → program tensor (4-D ones held as C, H, W)
        self.padded: dict[int, tuple[int, int, int, int]] = {}  # PAD output → (top, left, bottom, right)
        self.k = 0

    # ------------------------------------------------------------------ helpers
    def fail(self, what: str):
        raise ModelError(f"{self.name}: operator {self.k} ({self.opname}): {what}")

    def t(self, i: int):
        return self.g.tensors[i]

    def data(self, i: int) -> np.ndarray | None:
        return tensor_data(self.m, self.t(i))

    def quant(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        q = tensor_quant(self.t(i))
        if q is None:
            self.fail(f"tensor {tensor_name(self.t(i), i)!r} is not quantized")
        return q[0], q[1]

    def act_tensor(self, i: int, padded_ok: bool = False) -> QTensor:
        t = self.t(i)
        if i in self.padded and not padded_ok:
            self.fail("reads the output of a PAD: only a VALID CONV_2D / DEPTHWISE_CONV_2D may")
        if t.type == UINT8:
            self.fail("uint8 (legacy) quantization: requantize the model to int8 (the converter's default now)")
        if t.type == FLOAT32:
            self.fail("float activations: a float or hybrid model; give the fully int8 model")
        if t.type != INT8:
            self.fail(f"tensor type {t.type}: only int8 activations are supported")
        if i not in self.env:
            self.fail(f"reads tensor {t.name.decode(errors='replace')!r}, which no supported operator produced")
        return self.tensors[self.env[i]]

    def new(self, i: int, shape, scale: float, zp: int) -> str:
        key = self.t(i).name.decode(errors="replace") or f"t{i}"
        while key in self.tensors:
            key += "'"
        self.tensors[key] = QTensor(key, tuple(int(d) for d in shape), float(scale), int(zp))
        self.env[i] = key
        return key

    def out_params(self, i: int) -> tuple[float, int]:
        s, z = self.quant(i)
        if self.t(i).type != INT8:
            self.fail(f"output tensor type {self.t(i).type}: only int8 activations are supported")
        return float(s[0]), int(z[0])

    def act_range(self, fused: int, scale: float, zp: int) -> tuple[int, int]:
        """TFLM CalculateActivationRangeQuantized: zp + round(f / scale), f / scale in float32."""
        def q(f: float) -> int:
            v = float(np.float32(f) / np.float32(scale))
            return zp + int(math.floor(abs(v) + 0.5)) * (1 if v >= 0 else -1)
        if fused == ACT_NONE:
            return -128, 127
        if fused == ACT_RELU:
            return max(-128, q(0.0)), 127
        if fused == ACT_RELU6:
            return max(-128, q(0.0)), min(127, q(6.0))
        if fused == ACT_RELU_N1_TO_1:
            return max(-128, q(-1.0)), min(127, q(1.0))
        self.fail(f"fused activation {fused} is not supported (NONE, RELU, RELU6, RELU_N1_TO_1)")

    def nchw(self, i: int) -> str:
        """The program tensor of activation i, 4-D ones as (C, H, W)."""
        self.act_tensor(i)
        return self.env[i]

    def nhwc_flat(self, name: str) -> str:
        """A (C, H, W) program tensor in the model's NHWC byte order (a transpose), other ranks as they are."""
        src = self.tensors[name]
        if len(src.shape) != 3:
            return name
        c, h, w = src.shape
        key = name + "@nhwc"
        self.tensors[key] = QTensor(key, (h, w, c), src.scale, src.zero_point)
        self.layers.append(Layer("transpose", [name], key, f"op{self.k}", {"perm": [1, 2, 0]}))
        return key

    def layer(self, op: str, inputs: list[str], out: str, p: dict) -> None:
        self.layers.append(Layer(op, inputs, out, f"{self.k}:{self.opname}", p))

    # ------------------------------------------------------------------ operators
    def run(self) -> IntProgram:
        if len(self.m.subgraphs) != 1:
            raise ModelError(f"{self.name}: {len(self.m.subgraphs)} subgraphs; only single-subgraph models")
        if len(self.g.inputs) != 1 or len(self.g.outputs) != 1:
            raise ModelError(f"{self.name}: {len(self.g.inputs)} inputs and {len(self.g.outputs)} outputs; "
                             "tmlrepair takes single-input, single-output models")
        i0 = int(self.g.inputs[0])
        t0 = self.t(i0)
        input_name = None
        if t0.type == INT8:
            input_name = self._register_input(i0)
        elif t0.type != FLOAT32:
            raise ModelError(f"{self.name}: input type {t0.type}: uint8 (legacy) or another type; give an int8 model")
        self.float_input = i0 if t0.type == FLOAT32 else None
        for self.k, op in enumerate(self.g.operators):
            self.opname = op_name(self.m, op)
            handler = getattr(self, f"op_{self.opname}", None)
            if handler is None:
                self.fail("not supported by the integer program; supported: " + ", ".join(SUPPORTED))
            got = handler(op)
            if got is not None:
                input_name = got
        if input_name is None:
            raise ModelError(f"{self.name}: the input is float and never quantized: a float model, not an int8 one "
                             "(give the int8 .tflite; the float one is the reference)")
        out_i = int(self.g.outputs[0])
        out = self.env.get(out_i)
        if out is None:
            raise ModelError(f"{self.name}: the output is not computed by a supported int8 operator")
        return IntProgram(self.tensors, self.layers, input_name, self.nhwc_flat(out))

    def _register_input(self, i: int) -> str:
        s, z = self.quant(i)
        shape = [int(d) for d in self.t(i).shape][1:]
        name = self.t(i).name.decode(errors="replace") or "input"
        self.tensors[name] = QTensor(name, tuple(shape), float(s[0]), int(z[0]))
        if len(shape) == 3:  # NHWC bytes in, (C, H, W) inside
            h, w, c = shape
            key = name + "@nchw"
            self.tensors[key] = QTensor(key, (c, h, w), float(s[0]), int(z[0]))
            self.layers.append(Layer("transpose", [name], key, "input", {"perm": [2, 0, 1]}))
            self.env[i] = key
        else:
            self.env[i] = name
        return name

    def op_QUANTIZE(self, op):
        i, o = int(op.inputs[0]), int(op.outputs[0])
        scale, zp = self.out_params(o)
        if self.float_input is not None and i == self.float_input:  # the model quantizes its float input
            self.float_input = None
            return self._register_input(o)  # the host quantizes; the program starts at the int8 tensor
        src = self.act_tensor(i)
        m, s = fp.quantize_multiplier(float(np.float64(src.scale) / np.float64(scale)))
        out = self.new(o, src.shape, scale, zp)
        self.layer("requant", [self.env[i]], out, {"in_zp": src.zero_point, "out_zp": zp, "act_min": -128,
                                                    "act_max": 127, "mult": [m], "shift": [s]})
        return None

    def op_DEQUANTIZE(self, op):
        i, o = int(op.inputs[0]), int(op.outputs[0])
        self.act_tensor(i)
        if o != int(self.g.outputs[0]):
            self.fail("DEQUANTIZE inside the model: a hybrid model; give the fully int8 model")
        self.env[o] = self.env[i]

    def op_RESHAPE(self, op):
        i, o = int(op.inputs[0]), int(op.outputs[0])
        flat = self.nhwc_flat(self.nchw(i))
        src = self.tensors[flat]
        shape = [int(d) for d in self.t(o).shape][1:]
        if math.prod(shape) != src.size:
            self.fail(f"reshapes {src.size} values to {shape}")
        out = self.new(o, shape, src.scale, src.zero_point)
        self.layer("reshape", [flat], out, {})
        if len(shape) == 3:  # back to (C, H, W)
            h, w, c = shape
            key = out + "@nchw"
            self.tensors[key] = QTensor(key, (c, h, w), src.scale, src.zero_point)
            self.layer("transpose", [out], key, {"perm": [2, 0, 1]})
            self.env[o] = key

    def _weights(self, i: int, n_out: int, axis: int) -> tuple[np.ndarray, np.ndarray]:
        w = self.data(i)
        problem = "weights must be a constant tensor" if w is None else int8_weight_problem(self.t(i), n_out, axis)
        if problem:
            self.fail(problem)
        return w, np.broadcast_to(self.quant(i)[0], (n_out,))

    def _bias(self, op, n_out: int) -> list[int]:
        if len(op.inputs) < 3 or int(op.inputs[2]) < 0:
            return [0] * n_out
        b = self.data(int(op.inputs[2]))
        if b is None or self.t(int(op.inputs[2])).type != INT32:
            self.fail("bias must be a constant int32 tensor")
        return b.reshape(-1).astype(np.int64).tolist()

    def _multipliers(self, in_scale: float, w_scales: np.ndarray, out_scale: float) -> tuple[list, list]:
        """TFLM PopulateConvolutionQuantizationParams: (double) s_x · s_w,c / s_y → QuantizeMultiplier."""
        pairs = [fp.quantize_multiplier(float(np.float64(in_scale) * np.float64(s) / np.float64(out_scale)))
                 for s in w_scales]
        return [m for m, _ in pairs], [s for _, s in pairs]

    def op_PAD(self, op):
        i, o = int(op.inputs[0]), int(op.outputs[0])
        src = self.act_tensor(i)
        pads = pad_amounts(self.m, op)
        if pads is None:
            self.fail("PAD must pad only H and W of a 4-D tensor, by constant non-negative amounts")
        self.padded[o] = pads
        if self.out_params(o) != (src.scale, src.zero_point):
            self.fail("PAD must keep its input's scale and zero point")
        self.env[o] = self.env[i]

    def _conv(self, op, depthwise: bool):
        i, wi, o = int(op.inputs[0]), int(op.inputs[1]), int(op.outputs[0])
        src = self.act_tensor(i, padded_ok=True)
        opts = op.builtinOptions
        w = self.data(wi)
        if w is None or w.ndim != 4:
            self.fail("weights must be a constant 4-D tensor")
        if depthwise:
            n_out = w.shape[3]
            w4 = np.transpose(w, (3, 0, 1, 2))  # [1, KH, KW, C·M] → (C·M, 1, KH, KW)
            group = src.shape[0]
        else:
            n_out = w.shape[0]
            w4 = np.transpose(w, (0, 3, 1, 2))  # [O, KH, KW, I] → (O, I, KH, KW)
            group = src.shape[0] // w.shape[3]
        _, ws = self._weights(wi, n_out, 3 if depthwise else 0)
        cout, cg, kh, kw = w4.shape
        if src.shape[0] != cg * group or cout % group:
            self.fail(f"input channels {src.shape[0]} do not match weights {list(w.shape)}")
        scale, zp = self.out_params(o)
        _, ih, iw = src.shape
        sh, sw = opts.strideH, opts.strideW
        dh, dw = opts.dilationHFactor or 1, opts.dilationWFactor or 1
        oh, ow = [int(d) for d in self.t(o).shape][1:3]
        pads = list(self.padded.get(i, (0, 0, 0, 0)))
        if opts.padding == 0:  # SAME
            if i in self.padded:
                self.fail("a SAME convolution after a PAD: only VALID ones take an explicit padding")
            pads = list(same_padding((ih, iw), (oh, ow), (kh, kw), (sh, sw), (dh, dw)))
        if (ih + pads[0] + pads[2] - dh * (kh - 1) - 1) // sh + 1 != oh or \
                (iw + pads[1] + pads[3] - dw * (kw - 1) - 1) // sw + 1 != ow:
            self.fail(f"output shape {[oh, ow]} does not follow from the input, kernel and padding")
        mult, shift = self._multipliers(src.scale, ws, scale)
        lo, hi = self.act_range(opts.fusedActivationFunction, scale, zp)
        out = self.new(o, (cout, oh, ow), scale, zp)
        self.layer("conv", [self.env[i]], out, {
            "in_zp": src.zero_point, "out_zp": zp, "act_min": lo, "act_max": hi, "weights": w4.astype(np.int8),
            "bias": self._bias(op, cout), "mult": mult, "shift": shift, "group": group, "strides": (sh, sw),
            "dilations": (dh, dw), "pads": tuple(pads), "in_hw": (ih, iw), "out_hw": (oh, ow)})

    def op_CONV_2D(self, op):
        self._conv(op, depthwise=False)

    def op_DEPTHWISE_CONV_2D(self, op):
        self._conv(op, depthwise=True)

    def op_FULLY_CONNECTED(self, op):
        i, wi, o = int(op.inputs[0]), int(op.inputs[1]), int(op.outputs[0])
        flat = self.nhwc_flat(self.nchw(i))
        src = self.tensors[flat]
        w = self.data(wi)
        if w is None or w.ndim != 2 or w.shape[1] != src.size:
            self.fail(f"weights {None if w is None else list(w.shape)} do not match an input of {src.size} values")
        _, ws = self._weights(wi, w.shape[0], 0)
        scale, zp = self.out_params(o)
        mult, shift = self._multipliers(src.scale, ws, scale)
        lo, hi = self.act_range(op.builtinOptions.fusedActivationFunction, scale, zp)
        out = self.new(o, (w.shape[0],), scale, zp)
        self.layer("fc", [flat], out, {"in_zp": src.zero_point, "out_zp": zp, "act_min": lo, "act_max": hi,
                                       "weights": np.ascontiguousarray(w, np.int8), "bias": self._bias(op, w.shape[0]),
                                       "mult": mult, "shift": shift})

    def op_ADD(self, op):
        a, b, o = int(op.inputs[0]), int(op.inputs[1]), int(op.outputs[0])
        ta, tb = self.act_tensor(a), self.act_tensor(b)
        if ta.shape != tb.shape:
            self.fail("ADD with broadcasting is not supported")
        scale, zp = self.out_params(o)
        twice = 2 * max(np.float64(ta.scale), np.float64(tb.scale))
        m1, s1 = fp.quantize_multiplier(float(np.float64(ta.scale) / twice))
        m2, s2 = fp.quantize_multiplier(float(np.float64(tb.scale) / twice))
        mo, so = fp.quantize_multiplier(float(twice / ((1 << ADD_LEFT_SHIFT) * np.float64(scale))))
        lo, hi = self.act_range(op.builtinOptions.fusedActivationFunction, scale, zp)
        out = self.new(o, ta.shape, scale, zp)
        self.layer("add", [self.env[a], self.env[b]], out, {
            "in_zp": ta.zero_point, "in1_zp": tb.zero_point, "out_zp": zp, "act_min": lo, "act_max": hi,
            "mult1": m1, "shift1": s1, "mult2": m2, "shift2": s2, "mult": [mo], "shift": [so]})

    def _pool(self, op, kind: str):
        i, o = int(op.inputs[0]), int(op.outputs[0])
        src = self.act_tensor(i)
        opts = op.builtinOptions
        scale, zp = self.out_params(o)
        if not (math.isclose(scale, src.scale, rel_tol=1e-6) and zp == src.zero_point):
            self.fail("input and output must share scale and zero point (TFLM's Prepare requires it)")
        kh, kw, sh, sw = opts.filterHeight, opts.filterWidth, opts.strideH, opts.strideW
        _, ih, iw = src.shape
        oh, ow = [int(d) for d in self.t(o).shape][1:3]
        if (ih - kh) // sh + 1 != oh or (iw - kw) // sw + 1 != ow:
            self.fail("pooling windows that reach into padding are not supported")
        lo, hi = self.act_range(opts.fusedActivationFunction, scale, zp)
        m, s = fp.quantize_multiplier(1.0)
        out = self.new(o, (src.shape[0], oh, ow), scale, zp)
        self.layer(kind, [self.env[i]], out, {"in_zp": src.zero_point, "out_zp": zp, "act_min": lo, "act_max": hi,
                                              "kernel": (kh, kw), "strides": (sh, sw), "mult": [m], "shift": [s]})

    def op_AVERAGE_POOL_2D(self, op):
        self._pool(op, "avgpool_tflm")

    def op_MAX_POOL_2D(self, op):
        self._pool(op, "maxpool")

    def op_SOFTMAX(self, op):
        i, o = int(op.inputs[0]), int(op.outputs[0])
        flat = self.nhwc_flat(self.nchw(i))
        src = self.tensors[flat]
        scale, zp = self.out_params(o)
        if not (math.isclose(scale, 1 / 256, rel_tol=1e-6) and zp == -128):
            self.fail(f"int8 Softmax output must be quantized 1/256, -128 (TFLM); it is {scale:.6g}, {zp}")
        mult, shift, diff_min = fp.softmax_params(float(op.builtinOptions.beta), src.scale)
        out = self.new(o, src.shape, scale, zp)
        self.layer("softmax", [flat], out, {"in_zp": src.zero_point, "out_zp": zp, "act_min": -128, "act_max": 127,
                                            "mult": mult, "shift": shift, "diff_min": diff_min})


def lower_tflite(source: str | Path | bytes, name: str | None = None) -> IntProgram:
    """The integer program of an int8 .tflite model (see the module docstring)."""
    name = name or ("the model" if isinstance(source, (bytes, bytearray)) else str(source))
    return _Lowering(read_tflite(source, name), name).run()
