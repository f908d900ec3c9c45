"""The integer program compiled into onnxruntime graphs: the same integers, one session run per batch.

Runs of consecutive layers become one ONNX graph of float ops that are exact on these integers, so onnxruntime
runs a whole network per batch where numpy would make a dozen passes per layer (issue 21: the program at
onnxruntime's speed). Per layer:

- conv, fc: the accumulators a = Σ (x − o)·w + B by float32 Conv / MatMul, exact when every partial sum is an
  integer below 2^24 (``repair.program.sums``); then, in float64,

      y = clamp(⌊a·m + (½ + z_y) + sign(a)·δ⌋, act_min, act_max),  m = M·2^(l−31−r),  δ = 2^(−1−r) (0 for r = 0)

  the one-rounding form of TFLM's requantization (``repair.program.requantize``; l = max(shift, 0),
  r = max(−shift, 0), M > 0, no saturation: A·2^l < 2^31): ⌊(a·M·2^l + 2^30 + (2^(r−1) − [a < 0])·2^31) / 2^(31+r)⌋
  with −[a < 0]·2^31 = sign(a)·2^30 − 2^30 (a = 0 gives ⌊½ + 2^(−1−r)⌋ = 0 either way). Every partial sum is an
  integer over D = 2^(31+r) whose numerator stays below A·M·2^l + 2^(30+r) + 2^30 + 128·D; below 2^53 float64
  holds each exactly, so the floor is exact. ½ + z_y + sign(a)·δ is formed in float32 (exact for r ≤ 15) and
  added in float64. Channels whose output is constant (``constant_channels``) get m = δ = 0 and ½ + z_y replaced
  by their value.
- requant, maxpool's requantization, add: the layer's table of every output (``ir._table``) read by Gather;
- avgpool: Σ (x − z_x) over the window by a depthwise Conv of ones, requantized as above;
- avgpool_tflm: q = sign(v)·⌊|v| / n⌋, v = Σx + sign(Σx)·⌊n/2⌋ (C's truncating division, ties away from 0;
  |v| < 2^30, so the float64 quotient never rounds across an integer);
- transpose, reshape: the same.

The conditions depend on the parameters, which fitting edits; they are checked on every ``plan`` and a layer
that fails them (or softmax) runs in numpy (``ir``). Sessions are cached by the serialized graph (weights,
geometry, which tensors go in and out): biases, multipliers, zero points, ranges and tables are inputs, fed on
every run, so fitting's edits reuse them. This is the program's path where no C compiler exists (``host``).
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from .requantize import _per_channel
from .sums import EXACT_FLOAT32, layer_constants

COMPILED = ("conv", "fc", "requant", "maxpool", "add", "avgpool", "avgpool_tflm", "transpose", "reshape")
EXACT_FLOAT64 = 2.0 ** 53
_CACHE_SIZE = 64
_sessions: OrderedDict = OrderedDict()


def requant_constants(p: dict, bound: np.ndarray, constant: np.ndarray | None = None, values=None):
    """(m, k, δ) per output channel (float64) for ``y = clamp(⌊a·m + k + sign(a)·δ⌋)`` of layer ``p`` with
    accumulators bounded by ``bound`` (per channel), or None when that is not exact (the module docstring)."""
    c = len(bound)
    mult = _per_channel(np.asarray(p["mult"], np.int64), c).astype(np.float64)
    shift = _per_channel(np.asarray(p["shift"], np.int64), c)
    live = np.ones(c, bool) if constant is None else ~constant
    left, right = np.maximum(shift, 0), np.maximum(-shift, 0)
    if np.any(right > 62) or np.any((mult <= 0)[live]) or np.any((bound * np.exp2(left) >= 2.0 ** 31)[live]):
        return None
    d = np.exp2(31.0 + right)
    numerator = bound * mult * np.exp2(left) + np.exp2(30.0 + right) + 2.0 ** 30 + 128 * d
    if np.any((numerator >= EXACT_FLOAT64)[live]):
        return None
    if np.any((right > 15)[live]):  # ½ + z_y + δ no longer exact in float32
        return None
    m = mult * np.exp2(left - 31.0 - right)
    k = np.full(c, 0.5 + p["out_zp"])
    delta = np.where(right >= 1, np.exp2(-1.0 - right), 0.0)
    if constant is not None and constant.any():
        m, k, delta = np.where(constant, 0.0, m), np.where(constant, values, k), np.where(constant, 0.0, delta)
    return m, k, delta


class _Graph:
    """ONNX nodes, constant initializers and fed inputs of one segment, built layer by layer."""

    def __init__(self):
        from onnx import TensorProto, helper, numpy_helper

        self.helper, self.numpy_helper, self.tp = helper, numpy_helper, TensorProto
        self.nodes, self.inits, self.fed, self.feeds = [], [], [], {}
        self.count = 0

    def name(self, hint: str) -> str:
        self.count += 1
        return f"{hint}_{self.count}"

    def const(self, value, dtype) -> str:
        name = self.name("c")
        self.inits.append(self.numpy_helper.from_array(np.asarray(value, dtype), name))
        return name

    def feed(self, value, dtype) -> str:
        """A graph input whose value changes with the parameters (fed on every run)."""
        value = np.array(value, dtype)  # a copy, contiguous, 0-d for a scalar
        name = self.name("f")
        elem = {np.float32: self.tp.FLOAT, np.float64: self.tp.DOUBLE}[np.dtype(dtype).type]
        self.fed.append(self.helper.make_tensor_value_info(name, elem, list(value.shape)))
        self.feeds[name] = value
        return name

    def op(self, op_type: str, inputs: list[str], **attrs) -> str:
        out = self.name(op_type.lower())
        self.nodes.append(self.helper.make_node(op_type, inputs, [out], **attrs))
        return out

    def reshape(self, x: str, shape) -> str:
        return self.op("Reshape", [x, self.const([-1, *shape], np.int64)])

    def per_channel(self, values: np.ndarray, shape: tuple, dtype) -> str:
        """A per-channel vector fed as a whole sample's tensor (``shape``: (1, C, ...)): onnxruntime's broadcasting
        then runs one long span per sample, not one of H·W values per channel (3× faster on digits' 7×7 layers)."""
        v = np.asarray(values).reshape((1, -1) + (1,) * (len(shape) - 2))
        return self.feed(np.broadcast_to(v, shape), dtype)

    def requantize(self, acc: str, constants, shape: tuple, act_min, act_max) -> str:
        """float32 accumulators (one sample: ``shape``) → float32 outputs, by the exact float64 form (the module
        docstring): the product and the floor in float64; k + sign(a)·δ in float32, where it is exact
        (``requant_constants``), sign(a) as clip(a, −1, 1) (integers; onnxruntime's Sign is a scalar loop)."""
        m, k, delta = constants
        m, k, delta = (self.per_channel(m, shape, np.float64), self.per_channel(k, shape, np.float32),
                       self.per_channel(delta, shape, np.float32))
        sign = self.op("Clip", [acc, self.const(-1.0, np.float32), self.const(1.0, np.float32)])
        offset = self.op("Cast", [self.op("Add", [self.op("Mul", [sign, delta]), k])], to=self.tp.DOUBLE)
        t = self.op("Add", [self.op("Mul", [self.op("Cast", [acc], to=self.tp.DOUBLE), m]), offset])
        y = self.op("Cast", [self.op("Floor", [t])], to=self.tp.FLOAT)
        return self.op("Clip", [y, self.feed(act_min, np.float32), self.feed(act_max, np.float32)])

    def table(self, x: str, table: np.ndarray) -> str:
        index = self.op("Cast", [self.op("Add", [x, self.const(128.0, np.float32)])], to=self.tp.INT64)
        return self.op("Gather", [self.feed(table, np.float32), index], axis=0)


def _image_shape(shape: tuple) -> tuple:
    """A conv or pooling output's per-sample shape as the 2-D kernels see it: (1, C, H, W), 1-D as (1, C, 1, L)."""
    return (1, shape[0], 1, shape[1]) if len(shape) == 2 else (1, *shape)


def _as_image(g: _Graph, x: str, shape: tuple) -> str:
    """(N, C, L) → (N, C, 1, L): 1-D layers run as 2-D, as the kernels do."""
    return g.reshape(x, (shape[0], 1, shape[1])) if len(shape) == 2 else x


def _lower_conv(g, layer, x, tensors):
    p = layer.p
    offset = p["in_zp"] if any(p["pads"]) else 0
    folded, bound, constant, values = layer_constants(p, offset)
    if bound[~constant].max(initial=0) >= EXACT_FLOAT32:
        return None
    constants = requant_constants(p, bound, constant, values)
    if constants is None:
        return None
    x = _as_image(g, x, tensors[layer.inputs[0]].shape)
    if offset:
        x = g.op("Sub", [x, g.feed(offset, np.float32)])
    w = g.const(p["weights"], np.float32)
    sums = g.op("Conv", [x, w], group=p["group"], strides=list(p["strides"]), dilations=list(p["dilations"]),
                pads=list(p["pads"]))  # no bias input: onnxruntime's NCHWc kernels need a constant one
    shape = _image_shape(tensors[layer.output].shape)
    acc = g.op("Add", [sums, g.per_channel(np.where(constant, 0, folded), shape, np.float32)])
    return g.requantize(acc, constants, shape, p["act_min"], p["act_max"])


def _lower_fc(g, layer, x, tensors):
    p = layer.p
    folded, bound, constant, values = layer_constants(p, 0)
    constants = requant_constants(p, bound, constant, values)
    if bound[~constant].max(initial=0) >= EXACT_FLOAT32 or constants is None:
        return None
    x = g.op("Flatten", [x], axis=1)
    acc = g.op("Add", [g.op("MatMul", [x, g.const(p["weights"].T, np.float32)]),
                       g.per_channel(np.where(constant, 0, folded), (1, len(folded)), np.float32)])
    return g.requantize(acc, constants, (1, len(folded)), p["act_min"], p["act_max"])


def _window_sum(g, x, p, channels: int) -> str:
    (kh, kw), (sh, sw) = p["kernel"], p["strides"]
    ones = g.const(np.ones((channels, 1, kh, kw)), np.float32)
    return g.op("Conv", [x, ones], group=channels, strides=[sh, sw])


def _lower_avgpool(g, layer, x, tensors):
    p = layer.p
    shape = tensors[layer.inputs[0]].shape
    bound = np.array([255.0 * p["kernel"][0] * p["kernel"][1]])
    constants = requant_constants(p, bound)
    if constants is None:
        return None
    x = g.op("Sub", [_as_image(g, x, shape), g.feed(p["in_zp"], np.float32)])
    return g.requantize(_window_sum(g, x, p, shape[0]), constants, _image_shape(tensors[layer.output].shape),
                        p["act_min"], p["act_max"])


def _lower_avgpool_tflm(g, layer, x, tensors):
    p = layer.p
    shape = tensors[layer.inputs[0]].shape
    n = p["kernel"][0] * p["kernel"][1]
    acc = g.op("Cast", [_window_sum(g, _as_image(g, x, shape), p, shape[0])], to=g.tp.DOUBLE)
    v = g.op("Add", [acc, g.op("Mul", [g.op("Sign", [acc]), g.const(float(n // 2), np.float64)])])
    q = g.op("Mul", [g.op("Sign", [v]), g.op("Floor", [g.op("Div", [g.op("Abs", [v]), g.const(float(n), np.float64)])])])
    q = g.op("Clip", [q, g.feed(p["act_min"], np.float64), g.feed(p["act_max"], np.float64)])
    return g.op("Cast", [q], to=g.tp.FLOAT)


def _lower_maxpool(g, layer, x, tensors):
    from .ir import _table, _table_key

    p = layer.p
    x = _as_image(g, x, tensors[layer.inputs[0]].shape)
    m = g.op("MaxPool", [x], kernel_shape=list(p["kernel"]), strides=list(p["strides"]))
    return g.table(m, _table("requant", _table_key(p)))


def _lower_requant(g, layer, x, tensors):
    from .ir import _table, _table_key

    return g.table(x, _table("requant", _table_key(layer.p)))


def _lower_add(g, layer, x, tensors, y):
    from .ir import _table, _table_key

    if tensors[layer.inputs[0]].shape != tensors[layer.inputs[1]].shape:
        return None
    i = g.op("Add", [g.op("Mul", [x, g.const(256.0, np.float32)]), y])
    i = g.op("Cast", [g.op("Add", [i, g.const(128.0 * 257, np.float32)])], to=g.tp.INT64)
    return g.op("Gather", [g.feed(_table("add", _table_key(layer.p)), np.float32), i], axis=0)


def _lower_transpose(g, layer, x, tensors):
    return g.op("Transpose", [x], perm=[0] + [1 + i for i in layer.p["perm"]])


def _lower_reshape(g, layer, x, tensors):
    return g.op("Identity", [x])


_LOWER = {"conv": _lower_conv, "fc": _lower_fc, "requant": _lower_requant, "maxpool": _lower_maxpool,
          "add": _lower_add, "avgpool": _lower_avgpool, "avgpool_tflm": _lower_avgpool_tflm,
          "transpose": _lower_transpose, "reshape": _lower_reshape}


@dataclass
class Segment:
    """Consecutive layers run as one onnxruntime session: ``inputs`` in, ``outputs`` out, ``feeds`` the
    parameters of this run."""
    session: object
    inputs: list[str]
    outputs: list[str]
    feeds: dict

    def run(self, values: dict) -> dict:
        feed = dict(self.feeds)
        for k, name in enumerate(self.inputs):
            feed[f"in_{k}"] = values[name]
        return dict(zip(self.outputs, self.session.run(None, feed)))


def build_segment(program, start: int, names, stop: int) -> tuple[Segment | None, int]:
    """(the segment of the program's layers from ``start``, the index after it): as many consecutive layers before
    ``stop`` as are in ``COMPILED`` and exact with their present parameters (the module docstring); its outputs are
    the tensors it produces that ``names`` or a later layer (before ``stop``) read. (None, start) when the first
    layer is not such a layer."""
    from ..models.pair import ort_session

    g = _Graph()
    produced = {}
    inputs: list[str] = []
    end = start
    for layer in program.layers[start:stop]:
        if layer.op not in COMPILED:
            break
        mark = (len(g.nodes), len(g.inits), len(g.fed), dict(g.feeds), len(inputs))
        args = []
        for name in layer.inputs:
            if name not in produced and name not in inputs:
                inputs.append(name)
            args.append(produced.get(name, f"in_{inputs.index(name)}" if name in inputs else None))
        out = _LOWER[layer.op](g, layer, *args[:1], program.tensors, *args[1:])
        if out is None:  # drop what it added
            g.nodes, g.inits, g.fed = g.nodes[:mark[0]], g.inits[:mark[1]], g.fed[:mark[2]]
            g.feeds = mark[3]
            inputs = inputs[:mark[4]]
            break
        shape = program.tensors[layer.output].shape
        image = layer.op in ("conv", "avgpool", "avgpool_tflm", "maxpool")
        if layer.op == "reshape" or (image and len(shape) != 3) or (layer.op == "fc" and len(shape) != 1):
            out = g.reshape(out, shape)
        produced[layer.output] = out
        end += 1
    if end == start:
        return None, start
    later = set(names) | _read(program.layers[end:stop])
    outputs = [layer.output for layer in program.layers[start:end] if layer.output in later]
    h = g.helper
    graph_inputs = [h.make_tensor_value_info(f"in_{k}", g.tp.FLOAT, None) for k in range(len(inputs))]
    graph = h.make_graph(g.nodes, "program", graph_inputs + g.fed,
                         [h.make_tensor_value_info(produced[n], g.tp.FLOAT, None) for n in outputs], g.inits)
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 13)])
    model.ir_version = 8
    key = hashlib.sha1(model.SerializeToString()).hexdigest()  # what is not fed: weights, geometry, wiring
    session = _sessions.get(key)
    if session is None:
        session = ort_session(model, optimize=True)
        _sessions[key] = session
        if len(_sessions) > _CACHE_SIZE:
            _sessions.popitem(last=False)
    else:
        _sessions.move_to_end(key)
    return Segment(session, inputs, outputs, g.feeds), end


def _read(layers) -> set:
    return {name for layer in layers for name in layer.inputs}
