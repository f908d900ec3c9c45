"""Single-operator int8 .tflite models built in the tests (TFLite's schema, object API, packed with flatbuffers):
random shapes, strides, dilations, SAME/VALID padding, per-channel and per-tensor scales, zero points, fused
activations. Each model is one operator between an int8 input and an int8 output, as TFLM runs them."""

from __future__ import annotations

import numpy as np
from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as S

from repair.models.tflite_build import TfliteBuilder

INT8, INT32 = 9, 2
ACTS = (0, 1, 2, 3)  # NONE, RELU, RELU_N1_TO_1, RELU6


class ModelBuilder(TfliteBuilder):
    """Single-operator models (``build``) and short chains (``build_ops``) between an int8 input and output."""

    def build(self, builtin: int, inputs, output: int, options_type: int = 0, options=None) -> bytes:
        return self.build_ops([(builtin, inputs, output, options_type, options)], inputs[0], output)

    def build_ops(self, ops, graph_input: int, graph_output: int) -> bytes:
        """ops: (builtin, inputs, output, options type, options) in execution order."""
        for builtin, inputs, output, options_type, options in ops:
            self.op(builtin, inputs, [output], options_type, options)
        return self.finish(graph_input, graph_output)


def _scale(rng, lo=-9.0, hi=-1.0) -> float:
    return float(np.float32(np.exp2(rng.uniform(lo, hi))))


def _zp(rng) -> int:
    return int(rng.integers(-128, 128))


def random_op_model(kind: str, rng) -> tuple[bytes, tuple[int, ...], str]:
    """(model bytes, input shape with batch, a description) for one random case of ``kind``."""
    b = ModelBuilder()
    act = int(rng.choice(ACTS))
    if kind in ("conv", "depthwise"):
        h, w = int(rng.integers(1, 13)), int(rng.integers(1, 13))
        cin = int(rng.integers(1, 9))
        kh, kw = int(rng.integers(1, 5)), int(rng.integers(1, 5))
        sh, sw = int(rng.integers(1, 4)), int(rng.integers(1, 4))
        dh, dw = (int(rng.integers(1, 3)), int(rng.integers(1, 3))) if rng.random() < 0.3 else (1, 1)
        same = bool(rng.random() < 0.5)
        if same:
            oh, ow = -(-h // sh), -(-w // sw)
        else:
            oh, ow = (h - (kh - 1) * dh - 1) // sh + 1, (w - (kw - 1) * dw - 1) // sw + 1
            if oh < 1 or ow < 1:
                return random_op_model(kind, rng)
        mult = int(rng.integers(1, 4)) if kind == "depthwise" else 1
        cout = cin * mult if kind == "depthwise" else int(rng.integers(1, 9))
        s_in, s_out = _scale(rng), _scale(rng, -7, 1)
        per_channel = bool(rng.random() < 0.7)
        ws = np.float32(np.exp2(rng.uniform(-9, -3, cout if per_channel else 1)))
        wq = rng.integers(-127, 128, (1, kh, kw, cout) if kind == "depthwise" else (cout, kh, kw, cin)).astype(np.int8)
        bias = rng.integers(-2 ** 14, 2 ** 14, cout).astype(np.int32)
        x = b.tensor([1, h, w, cin], scale=s_in, zero_point=_zp(rng))
        wt = b.tensor(wq.shape, scale=ws, zero_point=np.zeros(ws.size, np.int64), data=wq,
                      axis=3 if kind == "depthwise" else 0)
        bt = b.tensor([cout], INT32, scale=np.float32(s_in * ws), zero_point=np.zeros(ws.size, np.int64), data=bias)
        y = b.tensor([1, oh, ow, cout], scale=s_out, zero_point=_zp(rng))
        if kind == "depthwise":
            o = S.DepthwiseConv2DOptionsT()
            o.depthMultiplier = mult
            typ, code = S.BuiltinOptions.DepthwiseConv2DOptions, S.BuiltinOperator.DEPTHWISE_CONV_2D
        else:
            o = S.Conv2DOptionsT()
            typ, code = S.BuiltinOptions.Conv2DOptions, S.BuiltinOperator.CONV_2D
        o.padding = 0 if same else 1
        o.strideH, o.strideW, o.dilationHFactor, o.dilationWFactor = sh, sw, dh, dw
        o.fusedActivationFunction = act
        desc = (f"{kind} {h}x{w}x{cin}->{cout} k{kh}x{kw} s{sh},{sw} d{dh},{dw} {'SAME' if same else 'VALID'} "
                f"act{act} {'per-channel' if per_channel else 'per-tensor'}")
        return b.build(code, [x, wt, bt], y, typ, o), (1, h, w, cin), desc
    if kind == "fc":
        shape = [1, int(rng.integers(1, 65))] if rng.random() < 0.6 else \
            [1, int(rng.integers(1, 5)), int(rng.integers(1, 5)), int(rng.integers(1, 5))]
        n_in = int(np.prod(shape[1:]))
        n_out = int(rng.integers(1, 17))
        s_in, s_out = _scale(rng), _scale(rng, -7, 1)
        per_channel = bool(rng.random() < 0.3)
        ws = np.float32(np.exp2(rng.uniform(-9, -3, n_out if per_channel else 1)))
        x = b.tensor(shape, scale=s_in, zero_point=_zp(rng))
        wt = b.tensor([n_out, n_in], scale=ws, zero_point=np.zeros(ws.size, np.int64),
                      data=rng.integers(-127, 128, (n_out, n_in)).astype(np.int8))
        bt = b.tensor([n_out], INT32, scale=np.float32(s_in * ws), zero_point=np.zeros(ws.size, np.int64),
                      data=rng.integers(-2 ** 14, 2 ** 14, n_out).astype(np.int32))
        y = b.tensor([1, n_out], scale=s_out, zero_point=_zp(rng))
        o = S.FullyConnectedOptionsT()
        o.fusedActivationFunction = act
        return (b.build(S.BuiltinOperator.FULLY_CONNECTED, [x, wt, bt], y, S.BuiltinOptions.FullyConnectedOptions, o),
                tuple(shape), f"fc {shape}->{n_out} act{act} {'per-channel' if per_channel else 'per-tensor'}")
    if kind == "add":  # x + requantize(x): two activations with their own scales and zero points
        shape = [1, int(rng.integers(1, 7)), int(rng.integers(1, 7)), int(rng.integers(1, 7))]
        x = b.tensor(shape, scale=_scale(rng), zero_point=_zp(rng))
        x2 = b.tensor(shape, scale=_scale(rng), zero_point=_zp(rng))
        y = b.tensor(shape, scale=_scale(rng, -7, 0), zero_point=_zp(rng))
        o = S.AddOptionsT()
        o.fusedActivationFunction = act
        ops = [(S.BuiltinOperator.QUANTIZE, [x], x2, 0, None),
               (S.BuiltinOperator.ADD, [x, x2], y, S.BuiltinOptions.AddOptions, o)]
        return b.build_ops(ops, x, y), tuple(shape), f"add {shape} act{act}"
    if kind in ("avgpool", "maxpool"):
        h, w, c = int(rng.integers(1, 13)), int(rng.integers(1, 13)), int(rng.integers(1, 9))
        kh, kw = int(rng.integers(1, h + 1)), int(rng.integers(1, w + 1))
        sh, sw = int(rng.integers(1, 4)), int(rng.integers(1, 4))
        oh, ow = (h - kh) // sh + 1, (w - kw) // sw + 1
        s, z = _scale(rng), _zp(rng)
        x = b.tensor([1, h, w, c], scale=s, zero_point=z)
        y = b.tensor([1, oh, ow, c], scale=s, zero_point=z)
        o = S.Pool2DOptionsT()
        o.padding, o.strideH, o.strideW, o.filterHeight, o.filterWidth = 1, sh, sw, kh, kw
        o.fusedActivationFunction = act
        code = S.BuiltinOperator.AVERAGE_POOL_2D if kind == "avgpool" else S.BuiltinOperator.MAX_POOL_2D
        return (b.build(code, [x], y, S.BuiltinOptions.Pool2DOptions, o), (1, h, w, c),
                f"{kind} {h}x{w}x{c} k{kh}x{kw} s{sh},{sw} act{act}")
    if kind == "softmax":
        k = int(rng.integers(2, 65))
        beta = 1.0 if rng.random() < 0.5 else float(np.float32(rng.uniform(0.2, 3.0)))
        x = b.tensor([1, k], scale=_scale(rng, -6, 0), zero_point=_zp(rng))
        y = b.tensor([1, k], scale=1 / 256, zero_point=-128)
        o = S.SoftmaxOptionsT()
        o.beta = beta
        return (b.build(S.BuiltinOperator.SOFTMAX, [x], y, S.BuiltinOptions.SoftmaxOptions, o), (1, k),
                f"softmax {k} beta {beta:.3g}")
    if kind == "quantize":
        shape = [1, int(rng.integers(1, 40))]
        x = b.tensor(shape, scale=_scale(rng), zero_point=_zp(rng))
        y = b.tensor(shape, scale=_scale(rng), zero_point=_zp(rng))
        return b.build(S.BuiltinOperator.QUANTIZE, [x], y), tuple(shape), f"requantize {shape}"
    raise ValueError(kind)


KINDS = ("conv", "depthwise", "fc", "add", "avgpool", "maxpool", "softmax", "quantize")


def with_softmax(raw: bytes) -> bytes:
    """A classifier .tflite with a SOFTMAX (beta 1) appended to its output, as the converter writes a Keras model
    ending in softmax: int8 probabilities at scale 1/256, zero point −128 (TFLM's), or float ones."""
    import flatbuffers

    from repair.models.tflite_file import read_tflite

    m = read_tflite(raw)
    g = m.subgraphs[0]
    logits = g.tensors[g.outputs[0]]
    t = S.TensorT()
    t.shape, t.type, t.buffer, t.name = list(logits.shape), logits.type, 0, b"probabilities"
    if logits.type == INT8:
        q = S.QuantizationParametersT()
        q.scale, q.zeroPoint = [1 / 256], [-128]
        t.quantization = q
    g.tensors.append(t)
    code = S.OperatorCodeT()
    code.builtinCode = code.deprecatedBuiltinCode = S.BuiltinOperator.SOFTMAX
    code.version = 1
    m.operatorCodes.append(code)
    op = S.OperatorT()
    op.opcodeIndex, op.inputs, op.outputs = len(m.operatorCodes) - 1, [g.outputs[0]], [len(g.tensors) - 1]
    op.builtinOptionsType, op.builtinOptions = S.BuiltinOptions.SoftmaxOptions, S.SoftmaxOptionsT()
    op.builtinOptions.beta = 1.0
    g.operators.append(op)
    g.outputs = [len(g.tensors) - 1]
    b = flatbuffers.Builder(1024)
    b.Finish(m.Pack(b), file_identifier=b"TFL3")
    return bytes(b.Output())


def tflm_run(raw: bytes, x: np.ndarray) -> np.ndarray:
    """TFLite Micro's outputs (its interpreter, reference kernels) for inputs x [N, *input shape], one invoke per
    sample, one flat row each: the oracle of the .tflite tests."""
    from tflite_micro.python.tflite_micro import runtime

    interp = runtime.Interpreter.from_bytes(bytes(raw))
    out = []
    for sample in x:
        interp.set_input(sample[None], 0)
        interp.invoke()
        out.append(interp.get_output(0).copy().reshape(-1))
    return np.array(out)
