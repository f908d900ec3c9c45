"""A .tflite model as an equivalent ONNX graph, so that every stage that reads a model reads .tflite too.

The int8 model becomes the QDQ graph TFLite's arithmetic states (the form tf2onnx writes): int8 activations
as QuantizeLinear outputs, int8 weights and int32 biases behind DequantizeLinear (per channel on axis 0),
a fused activation as Relu / Clip before the QuantizeLinear that ends the op, RESHAPE applied to the int8
bytes. The float model becomes the same graph in float. Inside, 4-D activations are NCHW (ONNX's order);
the graph's input and output keep the model's NHWC layout (a Transpose at each edge), and the batch
dimension is symbolic. The integer program lowered from the int8 graph equals ``lower_tflite`` of the file
and TFLM, bit for bit; the float graph run by onnxruntime matches TFLM's float kernels to float rounding
(tests/test_tflite_pairs.py checks both on MLPerf Tiny's models).

Node names tie the graph back to the flatbuffer, so that edited numbers can be written into a copy of the
file (``models.tflite_write``): ``op{k}`` is operator k's compute node, ``op{k}/weight_dq`` and
``op{k}/bias_dq`` its constants, ``t{i}/q`` the QuantizeLinear writing tensor i; a SOFTMAX's ``beta`` other
than 1 is a ``Mul`` by that constant just before it.
"""

from __future__ import annotations

import math

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ..errors import ModelError
from .tflite_file import (
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
    same_padding,
    tensor_data,
    tensor_name,
    tensor_quant,
)

OPSET = 13
SUPPORTED = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "ADD", "AVERAGE_POOL_2D", "MAX_POOL_2D", "RESHAPE",
             "SOFTMAX", "QUANTIZE", "DEQUANTIZE", "PAD (of H and W, before a VALID convolution)")
NCHW_TO_NHWC, NHWC_TO_NCHW = [0, 2, 3, 1], [0, 3, 1, 2]


class _Bridge:
    """One pass over the operators; ``quantized`` says whether activations are int8 (else float)."""

    def __init__(self, model, name: str, role: str):
        self.m, self.name, self.role = model, name, role
        self.g = model.subgraphs[0]
        self.nodes: list = []
        self.inits: list = []
        self.value: dict[int, str] = {}  # tflite tensor → ONNX tensor (4-D held NCHW); int8 or float
        self.dq: dict[int, str] = {}  # tflite int8 tensor → its DequantizeLinear output
        self.padded: dict[int, tuple[int, int, int, int]] = {}  # PAD output → (top, left, bottom, right)
        self.names: set[str] = set()
        self.k = -1
        self.opname = ""

    # ------------------------------------------------------------------ helpers
    def fail(self, what: str):
        raise ModelError(f"{self.role} model {self.name}: operator {self.k} ({self.opname}): {what}")

    def unique(self, base: str) -> str:
        key, n = base, 0
        while key in self.names:
            n += 1
            key = f"{base}#{n}"
        self.names.add(key)
        return key

    def const(self, base: str, value: np.ndarray) -> str:
        name = self.unique(base)
        self.inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def node(self, op: str, inputs: list[str], name: str, out: str | None = None, **attrs) -> str:
        out = out or self.unique(f"{name}:0")
        self.nodes.append(helper.make_node(op, inputs, [out], name=name, **attrs))
        return out

    def t(self, i: int):
        return self.g.tensors[i]

    def rank(self, i: int) -> int:
        return len(self.t(i).shape)

    def quant(self, i: int) -> tuple[np.ndarray, np.ndarray, int]:
        q = tensor_quant(self.t(i))
        if q is None:
            self.fail(f"tensor {tensor_name(self.t(i), i)!r} is not quantized")
        return q

    def act_type(self, i: int) -> None:
        t = self.t(i)
        if t.type == UINT8:
            self.fail("uint8 (legacy) quantization: requantize the model to int8 (the converter's default now)")
        want = INT8 if self.quantized else FLOAT32
        if t.type != want:
            if self.quantized and t.type == FLOAT32:
                self.fail("float activations inside an int8 model: a hybrid model; give the fully int8 model")
            self.fail(f"tensor type {t.type} where {'int8' if self.quantized else 'float32'} activations are expected")

    def source(self, i: int, padded_ok: bool = False) -> str:
        """Activation i as computed (int8 or float; 4-D ones NCHW)."""
        if i in self.padded and not padded_ok:
            self.fail("reads the output of a PAD: only a VALID CONV_2D / DEPTHWISE_CONV_2D may")
        if i not in self.value:
            self.fail(f"reads tensor {tensor_name(self.t(i), i)!r}, which no supported operator produced")
        return self.value[i]

    def read(self, i: int, padded_ok: bool = False) -> str:
        """The float view of activation i: its DequantizeLinear (int8) or the tensor itself (float)."""
        self.source(i, padded_ok)
        if not self.quantized:
            return self.value[i]
        if i not in self.dq:
            s, z, _ = self.quant(i)
            self.dq[i] = self.node("DequantizeLinear", [self.value[i], self.const(f"t{i}/scale", s[0]),
                                                        self.const(f"t{i}/zero_point", np.int8(z[0]))], f"t{i}/dq")
        return self.dq[i]

    def write(self, i: int, real: str, fused: int = ACT_NONE) -> None:
        """Tensor i := the float result ``real`` after the fused activation, quantized when int8."""
        self.act_type(i)
        if fused == ACT_RELU:
            real = self.node("Relu", [real], f"op{self.k}/relu")
        elif fused in (ACT_RELU6, ACT_RELU_N1_TO_1):
            lo, hi = (0.0, 6.0) if fused == ACT_RELU6 else (-1.0, 1.0)
            real = self.node("Clip", [real, self.const(f"op{self.k}/min", np.float32(lo)),
                                      self.const(f"op{self.k}/max", np.float32(hi))], f"op{self.k}/clip")
        elif fused != ACT_NONE:
            self.fail(f"fused activation {fused} is not supported (NONE, RELU, RELU6, RELU_N1_TO_1)")
        if not self.quantized:  # the float result takes the tensor's name
            last = self.nodes[-1]
            if last.output[0] != real:  # pragma: no cover - write() always follows the node computing ``real``
                raise AssertionError(real)
            last.output[0] = self.unique(tensor_name(self.t(i), i))
            self.value[i] = last.output[0]
            return
        s, z, _ = self.quant(i)
        self.value[i] = self.node("QuantizeLinear", [real, self.const(f"t{i}/scale", s[0]),
                                                     self.const(f"t{i}/zero_point", np.int8(z[0]))], f"t{i}/q",
                                  out=self.unique(tensor_name(self.t(i), i)))

    def layout(self, name: str, perm: list[int], what: str) -> str:
        return self.node("Transpose", [name], f"op{self.k}/{what}", perm=perm)

    def weights(self, i: int, onnx_layout: np.ndarray, axis_in_file: int) -> str:
        """Weights in ONNX layout (output channels on axis 0): a DequantizeLinear of int8 values (int8 model)
        or the float values (float model)."""
        t = self.t(i)
        if tensor_data(self.m, t) is None:
            self.fail("weights must be a constant tensor")
        if not self.quantized:  # float weights, or int8 ones of a dynamic-range ("hybrid") float model
            w = onnx_layout.astype(np.float32)
            if t.type == INT8:
                s, z, dim = self.quant(i)
                if s.size > 1 and dim != axis_in_file:
                    self.fail(f"weights quantized along dimension {dim}, expected {axis_in_file}")
                shape = [-1] + [1] * (w.ndim - 1)
                w = ((w - z.reshape(shape).astype(np.float32)) * s.reshape(shape)).astype(np.float32)
            elif t.type != FLOAT32:
                self.fail(f"weights of type {t.type} in the float model")
            return self.const(f"op{self.k}/weight", w)
        n_out = onnx_layout.shape[0]
        problem = int8_weight_problem(t, n_out, axis_in_file)
        if problem:
            self.fail(problem)
        s = self.quant(i)[0]
        per_channel = {"axis": 0} if s.size > 1 else {}  # a per-tensor scale stays one number
        scale = s.astype(np.float32) if s.size > 1 else np.float32(s[0])
        zero = np.zeros(n_out, np.int8) if s.size > 1 else np.int8(0)
        return self.node("DequantizeLinear", [self.const(f"op{self.k}/weight", onnx_layout.astype(np.int8)),
                                              self.const(f"op{self.k}/weight_scale", scale),
                                              self.const(f"op{self.k}/weight_zero_point", zero)],
                         f"op{self.k}/weight_dq", **per_channel)

    def bias(self, op, n_out: int, in_scale: float | None, w_scale: np.ndarray | None) -> list[str]:
        if len(op.inputs) < 3 or int(op.inputs[2]) < 0:
            return []
        t = self.t(int(op.inputs[2]))
        b = tensor_data(self.m, t)
        if b is None:
            self.fail("bias must be a constant tensor")
        b = b.reshape(-1)
        if not self.quantized:
            return [self.const(f"op{self.k}/bias", b.astype(np.float32))]
        if t.type != INT32:
            self.fail("bias must be a constant int32 tensor")
        lsb = (np.float64(in_scale) * np.broadcast_to(w_scale, (n_out,)).astype(np.float64)).astype(np.float32)
        return [self.node("DequantizeLinear", [self.const(f"op{self.k}/bias", b.astype(np.int32)),
                                               self.const(f"op{self.k}/bias_scale", lsb),
                                               self.const(f"op{self.k}/bias_zero_point", np.zeros(n_out, np.int32))],
                          f"op{self.k}/bias_dq", axis=0)]

    def in_scale(self, i: int) -> float | None:
        return float(self.quant(i)[0][0]) if self.quantized else None

    def w_scales(self, i: int) -> np.ndarray | None:
        return self.quant(i)[0] if self.quantized else None

    # ------------------------------------------------------------------ graph
    def run(self) -> onnx.ModelProto:
        if len(self.m.subgraphs) != 1:
            raise ModelError(f"{self.role} model {self.name}: {len(self.m.subgraphs)} subgraphs; only "
                             "single-subgraph models")
        if len(self.g.inputs) != 1 or len(self.g.outputs) != 1:
            raise ModelError(f"{self.role} model {self.name}: {len(self.g.inputs)} inputs and {len(self.g.outputs)} "
                             "outputs; tmlrepair takes single-input, single-output models")
        i0, o0 = int(self.g.inputs[0]), int(self.g.outputs[0])
        t0 = self.t(i0)
        if t0.type == UINT8:
            raise ModelError(f"{self.role} model {self.name}: uint8 (legacy) input quantization; requantize the "
                             "model to int8 (the converter's default now)")
        self.quantized = any(self.t(int(o)).type == INT8 for op in self.g.operators for o in op.outputs)
        graph_in = self.unique(tensor_name(t0, i0))
        elem = {INT8: TensorProto.INT8, FLOAT32: TensorProto.FLOAT}.get(t0.type)
        if elem is None:
            raise ModelError(f"{self.role} model {self.name}: input type {t0.type}; int8 or float32 inputs only")
        shape = [int(d) for d in t0.shape]
        self.value[i0] = self.layout(graph_in, NHWC_TO_NCHW, "input_nchw") if len(shape) == 4 else graph_in
        self.k = -1
        self.float_input = i0 if (self.quantized and t0.type == FLOAT32) else None
        for self.k, op in enumerate(self.g.operators):
            self.opname = op_name(self.m, op)
            handler = getattr(self, f"op_{self.opname}", None)
            if handler is None:
                self.fail("not supported; supported: " + ", ".join(SUPPORTED))
            handler(op)
        if o0 not in self.value:
            raise ModelError(f"{self.role} model {self.name}: the output is not computed by a supported operator")
        out = self.value[o0]
        if self.rank(o0) == 4:
            out = self.layout(out, NCHW_TO_NHWC, "output_nhwc")
        to = self.t(o0)
        out_elem = TensorProto.INT8 if to.type == INT8 else TensorProto.FLOAT
        graph_out = out
        inputs = [helper.make_tensor_value_info(graph_in, elem, ["N", *shape[1:]])]
        outputs = [helper.make_tensor_value_info(graph_out, out_elem, ["N", *[int(d) for d in to.shape][1:]])]
        graph = helper.make_graph(self.nodes, self.name.rsplit("/", 1)[-1], inputs, outputs, self.inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                                  producer_name="tmlrepair (from .tflite)")
        model.ir_version = 8
        return model

    # ------------------------------------------------------------------ operators
    def op_QUANTIZE(self, op):
        i, o = int(op.inputs[0]), int(op.outputs[0])
        if self.float_input is not None and i == self.float_input:  # the model quantizes its float input
            self.float_input = None
            self.write(o, self.value[i])
            return
        if not self.quantized:
            self.fail("QUANTIZE in a float model")
        self.write(o, self.read(i))

    def op_DEQUANTIZE(self, op):
        i, o = int(op.inputs[0]), int(op.outputs[0])
        if o != int(self.g.outputs[0]) or not self.quantized:
            self.fail("DEQUANTIZE inside the model: a hybrid model; give the fully int8 model")
        self.value[o] = self.read(i)

    def op_RESHAPE(self, op):
        i, o = int(op.inputs[0]), int(op.outputs[0])
        src = self.source(i)
        if self.rank(i) == 4:
            src = self.layout(src, NCHW_TO_NHWC, "nhwc")
        shape = [int(d) for d in self.t(o).shape]
        if math.prod(shape[1:]) != math.prod(int(d) for d in self.t(i).shape[1:]):
            self.fail(f"reshapes {list(self.t(i).shape)} to {shape}")
        out = self.node("Reshape", [src, self.const(f"op{self.k}/shape", np.array([-1, *shape[1:]], np.int64))],
                        f"op{self.k}", out=self.unique(tensor_name(self.t(o), o)))
        self.value[o] = self.layout(out, NHWC_TO_NCHW, "nchw") if len(shape) == 4 else out

    def op_PAD(self, op):
        i, o = int(op.inputs[0]), int(op.outputs[0])
        self.source(i)
        pads = pad_amounts(self.m, op)
        if pads is None:
            self.fail("PAD must pad only H and W of a 4-D tensor, by constant non-negative amounts")
        self.padded[o] = pads
        if self.quantized and [q.tolist() for q in self.quant(o)[:2]] != [q.tolist() for q in self.quant(i)[:2]]:
            self.fail("PAD must keep its input's scale and zero point")
        self.value[o] = self.value[i]
        if i in self.dq:
            self.dq[o] = self.dq[i]

    def _conv(self, op, depthwise: bool):
        i, wi, o = int(op.inputs[0]), int(op.inputs[1]), int(op.outputs[0])
        x = self.read(i, padded_ok=True)
        opts = op.builtinOptions
        w = tensor_data(self.m, self.t(wi))
        if w is None or w.ndim != 4 or self.rank(i) != 4:
            self.fail("needs a 4-D input and constant 4-D weights")
        c_in = int(self.t(i).shape[3])
        if depthwise:
            w_onnx, group, axis = np.transpose(w, (3, 0, 1, 2)), c_in, 3  # [1, KH, KW, C·M] → (C·M, 1, KH, KW)
        else:
            w_onnx, axis = np.transpose(w, (0, 3, 1, 2)), 0  # [O, KH, KW, I] → (O, I, KH, KW)
            group = c_in // w.shape[3]
        n_out, _, kh, kw = w_onnx.shape
        ih, iw = [int(d) for d in self.t(i).shape[1:3]]
        oh, ow = [int(d) for d in self.t(o).shape[1:3]]
        sh, sw = opts.strideH, opts.strideW
        dh, dw = opts.dilationHFactor or 1, opts.dilationWFactor or 1
        pads = list(self.padded.get(i, (0, 0, 0, 0)))  # PAD + VALID convolution: its explicit padding
        if opts.padding == 0 and i in self.padded:
            self.fail("a SAME convolution after a PAD: only VALID ones take an explicit padding")
        if opts.padding == 0:  # SAME
            pads = list(same_padding((ih, iw), (oh, ow), (kh, kw), (sh, sw), (dh, dw)))
        ins = [x, self.weights(wi, w_onnx, axis)]
        ins += self.bias(op, n_out, self.in_scale(i), self.w_scales(wi))
        y = self.node("Conv", ins, f"op{self.k}", kernel_shape=[kh, kw], strides=[sh, sw], dilations=[dh, dw],
                      pads=pads, group=group)
        self.write(o, y, opts.fusedActivationFunction)

    def op_CONV_2D(self, op):
        self._conv(op, depthwise=False)

    def op_DEPTHWISE_CONV_2D(self, op):
        self._conv(op, depthwise=True)

    def op_FULLY_CONNECTED(self, op):
        i, wi, o = int(op.inputs[0]), int(op.inputs[1]), int(op.outputs[0])
        w = tensor_data(self.m, self.t(wi))
        n_in = math.prod(int(d) for d in self.t(i).shape[1:])
        if w is None or w.ndim != 2 or w.shape[1] != n_in:
            self.fail(f"weights {None if w is None else list(w.shape)} do not match an input of {n_in} values")
        if self.rank(i) != 2:  # flatten in the model's NHWC order
            src = self.source(i)
            if self.rank(i) == 4:
                src = self.layout(src, NCHW_TO_NHWC, "nhwc")
            flat = self.node("Reshape", [src, self.const(f"op{self.k}/shape", np.array([-1, n_in], np.int64))],
                             f"op{self.k}/flatten")
            x = flat
            if self.quantized:
                s, z, _ = self.quant(i)
                x = self.node("DequantizeLinear", [flat, self.const(f"t{i}/scale", s[0]),
                                                   self.const(f"t{i}/zero_point", np.int8(z[0]))], f"op{self.k}/dq")
        else:
            x = self.read(i)
        ins = [x, self.weights(wi, w, 0)] + self.bias(op, w.shape[0], self.in_scale(i), self.w_scales(wi))
        y = self.node("Gemm", ins, f"op{self.k}", transB=1)
        self.write(o, y, op.builtinOptions.fusedActivationFunction)

    def op_ADD(self, op):
        a, b, o = int(op.inputs[0]), int(op.inputs[1]), int(op.outputs[0])
        if list(self.t(a).shape) != list(self.t(b).shape):
            self.fail("ADD with broadcasting is not supported")
        y = self.node("Add", [self.read(a), self.read(b)], f"op{self.k}")
        self.write(o, y, op.builtinOptions.fusedActivationFunction)

    def _pool(self, op, onnx_op: str):
        i, o = int(op.inputs[0]), int(op.outputs[0])
        opts = op.builtinOptions
        kh, kw, sh, sw = opts.filterHeight, opts.filterWidth, opts.strideH, opts.strideW
        ih, iw = [int(d) for d in self.t(i).shape[1:3]]
        oh, ow = [int(d) for d in self.t(o).shape[1:3]]
        if (ih - kh) // sh + 1 != oh or (iw - kw) // sw + 1 != ow:
            self.fail("pooling windows that reach into padding are not supported")
        y = self.node(onnx_op, [self.read(i)], f"op{self.k}", kernel_shape=[kh, kw], strides=[sh, sw])
        self.write(o, y, opts.fusedActivationFunction)

    def op_AVERAGE_POOL_2D(self, op):
        self._pool(op, "AveragePool")

    def op_MAX_POOL_2D(self, op):
        self._pool(op, "MaxPool")

    def op_SOFTMAX(self, op):
        i, o = int(op.inputs[0]), int(op.outputs[0])
        if self.rank(i) != 2:
            self.fail("SOFTMAX over a tensor of rank other than 2 is not supported")
        beta = float(op.builtinOptions.beta) if op.builtinOptions is not None else 1.0
        x = self.read(i)
        if beta != 1.0:  # softmax(β·x): the integer program reads β from this Mul (TFLM: β · s_in in double)
            x = self.node("Mul", [x, self.const(f"op{self.k}/beta", np.float32(beta))], f"op{self.k}/beta")
        self.write(o, self.node("Softmax", [x], f"op{self.k}", axis=-1))


def tflite_to_onnx(model, name: str, role: str) -> onnx.ModelProto:
    """The ONNX graph of a parsed .tflite (``ModelT``); ``role`` ("FLOAT" / "INT8") names it in messages."""
    return _Bridge(model, name, role).run()
