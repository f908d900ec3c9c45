"""Write a float ONNX model and its int8 QDQ model (onnxruntime's ``quantize_static``) as the .tflite pair a TFLite
converter would give: NHWC, int8 input and output, int8 weights (per tensor or per channel, as in the ONNX model),
int32 biases. No TensorFlow.

    python scripts/onnx_to_tflite.py datasets/digits/float.onnx datasets/digits/int8.onnx -o /tmp/digits

Covers what the bundled image task uses: Conv (regular and depthwise, 2-D) [+ Relu], GlobalAveragePool,
Flatten, Gemm. ONNX padding that TFLite's SAME does not give (k3 s2 p1 pads 1 on top, SAME 0) becomes a PAD
before a VALID convolution, as the converter writes it. A GlobalAveragePool whose int8 output has other
parameters than its input becomes AVERAGE_POOL_2D (TFLite requires equal ones) followed by a QUANTIZE.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

from repair.models.tflite_build import TfliteBuilder
from repair.models.tflite_file import FLOAT32, INT8, INT32

ACT_RELU = 1


class _Converter:
    def __init__(self, model: onnx.ModelProto, quantized: bool, relu_after: frozenset = frozenset()):
        self.g = model.graph
        self.relu_after = relu_after  # nodes the float model follows with a Relu (quantize_static drops it)
        self.quantized = quantized
        self.b = TfliteBuilder()
        self.S = self.b.S
        self.inits = {i.name: numpy_helper.to_array(i) for i in self.g.initializer}
        self.producer = {o: n for n in self.g.node for o in n.output}
        self.consumers: dict[str, list] = {}
        for n in self.g.node:
            for i in n.input:
                self.consumers.setdefault(i, []).append(n)
        self.env: dict[str, int] = {}  # ONNX tensor (float view) → tflite tensor
        self.shape: dict[int, list[int]] = {}

    # ---------------------------------------------------------------- helpers
    def const_dq(self, name: str):
        """(integers, scale, zero point) of DequantizeLinear(initializer), or (float values, None, None)."""
        p = self.producer.get(name)
        if p is not None and p.op_type == "DequantizeLinear" and p.input[0] in self.inits:
            zp = self.inits[p.input[2]] if len(p.input) > 2 else np.zeros(1, np.int64)
            return self.inits[p.input[0]], self.inits[p.input[1]].reshape(-1), zp.reshape(-1)
        return self.inits[name], None, None

    def out_q(self, name: str):
        """The QuantizeLinear after ``name`` (through a Relu): (final float name, relu?, (scale, zp))."""
        relu = False
        cs = self.consumers.get(name, [])
        if len(cs) == 1 and cs[0].op_type == "Relu":
            relu, name = True, cs[0].output[0]
            cs = self.consumers.get(name, [])
        if not self.quantized:
            return name, relu, None
        relu = relu or self.producer[name].name in self.relu_after
        q = next(c for c in cs if c.op_type == "QuantizeLinear")
        return q.output[0], relu, (float(self.inits[q.input[1]]), int(self.inits[q.input[2]]))

    def activation(self, shape, quant, name: str) -> int:
        if quant is None:
            t = self.b.tensor(shape, FLOAT32, name=name)
        else:
            t = self.b.tensor(shape, INT8, scale=np.float32(quant[0]), zero_point=quant[1], name=name)
        self.shape[t] = list(shape)
        return t

    def quant_of(self, t: int):
        q = self.b.tensors[t].quantization
        return None if q is None else (q.scale[0], q.zeroPoint[0])

    def src(self, name: str) -> int:
        """The tflite tensor behind a compute node's float input (its DequantizeLinear's int8 tensor)."""
        p = self.producer.get(name)
        if self.quantized and p is not None and p.op_type == "DequantizeLinear":
            name = p.input[0]
        return self.env[name]

    # ---------------------------------------------------------------- graph
    def run(self) -> bytes:
        gi = self.g.input[0]
        dims = [d.dim_value for d in gi.type.tensor_type.shape.dim][1:]
        c, h, w = dims
        if self.quantized:
            q = next(n for n in self.consumers[gi.name] if n.op_type == "QuantizeLinear")
            quant = (float(self.inits[q.input[1]]), int(self.inits[q.input[2]]))
            x = self.activation([1, h, w, c], quant, gi.name)
            self.env[q.output[0]] = x
        else:
            x = self.activation([1, h, w, c], None, gi.name)
            self.env[gi.name] = x
        out = x
        for node in self.g.node:
            handler = getattr(self, f"op_{node.op_type}", None)
            if handler is not None:
                out = handler(node) or out
        return self.b.finish(x, out, "converted from ONNX by tmlrepair scripts/onnx_to_tflite.py")

    def op_Conv(self, node):
        x = self.src(node.input[0])
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        w, ws, _ = self.const_dq(node.input[1])
        b, bs, _ = self.const_dq(node.input[2]) if len(node.input) > 2 else (np.zeros(w.shape[0]), None, None)
        _, ih, iw, cin = self.shape[x]
        cout, _, kh, kw = w.shape
        sh, sw = attrs.get("strides", [1, 1])
        pt, pl, pb, pr = attrs.get("pads", [0, 0, 0, 0])
        oh, ow = (ih + pt + pb - kh) // sh + 1, (iw + pl + pr - kw) // sw + 1
        th, tw = max((oh - 1) * sh + kh - ih, 0), max((ow - 1) * sw + kw - iw, 0)
        same = [th // 2, tw // 2, th - th // 2, tw - tw // 2] == [pt, pl, pb, pr]
        padding = 0 if same and (th or tw) else 1  # SAME / VALID
        if padding == 1 and any((pt, pl, pb, pr)):  # an explicit padding TFLite's SAME does not give
            pads = self.b.tensor([4, 2], INT32, data=np.array([[0, 0], [pt, pb], [pl, pr], [0, 0]], np.int32))
            padded = self.activation([1, ih + pt + pb, iw + pl + pr, cin], self.quant_of(x), f"{node.name}/pad")
            self.b.op(self.S.BuiltinOperator.PAD, [x, pads], [padded], self.S.BuiltinOptions.PadOptions,
                      self.S.PadOptionsT())
            x = padded
        group = int(attrs.get("group", 1))
        depthwise = group > 1
        if depthwise and group != cin:
            raise SystemExit(f"{node.name}: grouped convolution other than depthwise")
        w_file = np.transpose(w, (1, 2, 3, 0)) if depthwise else np.transpose(w, (0, 2, 3, 1))
        out_name, relu, quant = self.out_q(node.output[0])
        y = self.activation([1, oh, ow, cout], quant, out_name)
        wt, bt = self.weights(w_file, ws, 3 if depthwise else 0), self.bias(b, bs, node.name)
        if depthwise:
            o = self.S.DepthwiseConv2DOptionsT()
            o.depthMultiplier = cout // cin
            code, typ = self.S.BuiltinOperator.DEPTHWISE_CONV_2D, self.S.BuiltinOptions.DepthwiseConv2DOptions
        else:
            o = self.S.Conv2DOptionsT()
            code, typ = self.S.BuiltinOperator.CONV_2D, self.S.BuiltinOptions.Conv2DOptions
        o.padding, o.strideH, o.strideW = padding, sh, sw
        o.dilationHFactor = o.dilationWFactor = 1
        o.fusedActivationFunction = ACT_RELU if relu else 0
        self.b.op(code, [x, wt, bt], [y], typ, o)
        self.env[out_name] = y
        return y

    def weights(self, w, ws, axis: int) -> int:
        if ws is None:
            return self.b.tensor(w.shape, FLOAT32, data=w.astype(np.float32))
        ws = ws.astype(np.float32)  # per tensor (one scale) or per channel, as the ONNX model has it
        return self.b.tensor(w.shape, INT8, scale=ws, zero_point=np.zeros(ws.size, np.int64), data=w.astype(np.int8),
                             axis=axis)

    def bias(self, b, bs, name: str) -> int:
        if bs is None:
            return self.b.tensor([b.size], FLOAT32, data=b.astype(np.float32), name=f"{name}/bias")
        return self.b.tensor([b.size], INT32, scale=np.broadcast_to(bs, (b.size,)).astype(np.float32),
                             zero_point=np.zeros(b.size, np.int64), data=b.astype(np.int32), name=f"{name}/bias")

    def op_GlobalAveragePool(self, node):
        x = self.src(node.input[0])
        _, ih, iw, c = self.shape[x]
        out_name, _, quant = self.out_q(node.output[0])
        y = self.activation([1, 1, 1, c], self.quant_of(x), f"{node.name}/avg")
        o = self.S.Pool2DOptionsT()
        o.padding, o.strideH, o.strideW, o.filterHeight, o.filterWidth = 1, 1, 1, ih, iw
        self.b.op(self.S.BuiltinOperator.AVERAGE_POOL_2D, [x], [y], self.S.BuiltinOptions.Pool2DOptions, o)
        if quant is not None and tuple(quant) != tuple(self.quant_of(x)):  # TFLite pools keep their input's range
            z = self.activation([1, 1, 1, c], quant, out_name)
            self.b.op(self.S.BuiltinOperator.QUANTIZE, [y], [z])
            y = z
        self.env[out_name] = y
        return y

    def op_Flatten(self, node):
        x = self.src(node.input[0])
        n = int(np.prod(self.shape[x][1:]))
        if self.shape[x][1:3] != [1, 1]:
            raise SystemExit(f"{node.name}: Flatten of a tensor with H, W > 1 (NCHW and NHWC orders differ)")
        out_name, _, quant = self.out_q(node.output[0])
        y = self.activation([1, n], self.quant_of(x) if quant is not None else None, out_name)
        shape = self.b.tensor([2], INT32, data=np.array([1, n], np.int32))
        o = self.S.ReshapeOptionsT()
        o.newShape = [1, n]
        self.b.op(self.S.BuiltinOperator.RESHAPE, [x, shape], [y], self.S.BuiltinOptions.ReshapeOptions, o)
        self.env[out_name] = y
        return y

    def op_Gemm(self, node):
        x = self.src(node.input[0])
        w, ws, _ = self.const_dq(node.input[1])
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if not attrs.get("transB", 0):
            w = w.T
        b, bs, _ = self.const_dq(node.input[2])
        out_name, relu, quant = self.out_q(node.output[0])
        y = self.activation([1, w.shape[0]], quant, out_name)
        o = self.S.FullyConnectedOptionsT()
        o.fusedActivationFunction = ACT_RELU if relu else 0
        self.b.op(self.S.BuiltinOperator.FULLY_CONNECTED, [x, self.weights(w, ws, 0), self.bias(b, bs, node.name)],
                  [y], self.S.BuiltinOptions.FullyConnectedOptions, o)
        self.env[out_name] = y
        return y


def onnx_to_tflite(path: str | Path, float_path: str | Path | None = None) -> bytes:
    """The .tflite of a float ONNX model, or of an int8 QDQ one (int8 input and output). ``quantize_static`` drops
    a Relu after a Conv or Gemm (the int8 range clamps instead), TFLite's converter fuses it: give the float model
    (``float_path``) to fuse RELU where it has one after the node of the same name."""
    model = onnx.load(str(path))
    quantized = any(n.op_type == "QuantizeLinear" for n in model.graph.node)
    relu_after = frozenset()
    if float_path is not None:
        g = onnx.load(str(float_path)).graph
        producer = {o: n for n in g.node for o in n.output}
        relu_after = frozenset(producer[n.input[0]].name for n in g.node if n.op_type == "Relu" and n.input[0] in producer)
    return _Converter(model, quantized, relu_after).run()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("float_onnx")
    ap.add_argument("int8_onnx")
    ap.add_argument("-o", "--out", required=True, help="folder for float.tflite and int8.tflite")
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    for src, name in ((a.float_onnx, "float.tflite"), (a.int8_onnx, "int8.tflite")):
        (out / name).write_bytes(onnx_to_tflite(src, a.float_onnx))
        print(f"wrote {out / name}", file=sys.stderr)


if __name__ == "__main__":
    main()
