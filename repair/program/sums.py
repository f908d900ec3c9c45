"""A convolution's integer accumulators computed by onnxruntime's float32 Conv — exactly.

The accumulator of output channel c is a = Σ (x − o)·w + B_c with B_c = b_c − (z_x − o)·Σw_c (the bias and the
rest of the zero point folded into one constant, ``requantize.folded_bias``), over int8 inputs less an offset o:
o = 0 (raw inputs) where the layer has no padding; o = z_x where it has, since Conv pads with 0 and TFLM's padded
taps add nothing to Σ (x − z_x)·w — or, when o = z_x would break the bound below, o = 0 on the input padded with
z_x here. Every partial sum (with or without B_c, in whatever order the kernel adds) is an integer of magnitude at
most A_c = (128 + |o|)·Σ|w_c| + |B_c|; when every A_c < 2^24, float32 holds each of them exactly, so every
addition and multiplication — whatever blocking or fused multiply-add MLAS chooses — is exact: the float32 result
*is* the integer accumulator. Where the bound fails the caller sums in float64 itself. Measured once on
digits' five convolutions, 1000 samples: onnxruntime's Conv (im2col + SGEMM, or its depthwise kernel, two cores)
gave the sums in 34 ms, where the numpy path took 200 ms for its sums and float64 requantization together.

Sessions are cached by the layer's weights and geometry; B is an input, so edits of biases or ranges reuse them.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict

import numpy as np

_CACHE_SIZE = 256
_sessions: OrderedDict = OrderedDict()


EXACT_FLOAT32 = float(1 << 24)


def _conv_session(w: np.ndarray, group: int, strides, dilations, pads):
    key = (hashlib.sha1(w.tobytes()).hexdigest(), w.shape, group, tuple(strides), tuple(dilations), tuple(pads))
    sess = _sessions.get(key)
    if sess is not None:
        _sessions.move_to_end(key)
        return sess
    from onnx import TensorProto, helper, numpy_helper

    from ..models.pair import ort_session

    node = helper.make_node("Conv", ["x", "w", "b"], ["y"], group=group, strides=list(strides),
                            dilations=list(dilations), pads=list(pads))
    graph = helper.make_graph([node], "sums", [helper.make_tensor_value_info("x", TensorProto.FLOAT, None),
                                               helper.make_tensor_value_info("b", TensorProto.FLOAT, [w.shape[0]])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(w.astype(np.float32), "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    sess = ort_session(model, optimize=True)
    _sessions[key] = sess
    if len(_sessions) > _CACHE_SIZE:
        _sessions.popitem(last=False)
    return sess


_constants_cache: OrderedDict = OrderedDict()
_PARAMS = ("weights", "bias", "mult", "shift")


def layer_constants(p: dict, offset: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``folded_bias`` and ``constant_channels`` of layer ``p`` for ``offset``, computed once per layer and reused
    for every batch (a layer's parameters are not changed after lowering; the cache holds them and checks that it
    is handed the same objects)."""
    from .requantize import constant_channels, folded_bias

    key = (*(id(p[k]) for k in _PARAMS), offset, p["in_zp"], p["out_zp"], p["act_min"], p["act_max"])
    hit = _constants_cache.get(key)
    if hit is not None and all(a is p[k] for a, k in zip(hit[0], _PARAMS)):
        _constants_cache.move_to_end(key)
        return hit[1]
    folded, bound = folded_bias(p, offset)
    value = (folded, bound, *constant_channels(p, folded, bound))
    _constants_cache[key] = (tuple(p[k] for k in _PARAMS), value)
    if len(_constants_cache) > _CACHE_SIZE:
        _constants_cache.popitem(last=False)
    return value


def conv_accumulators(p: dict, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, tuple] | None:
    """(a, A, (constant, values)): a conv layer's accumulators (parameters ``p`` as ``repair.program.ir`` keeps
    them) over int8 values ``x`` [N, C, H, W] or [N, C, L] (float32 holding integers) — float32 [N, Cout, Ho, Wo],
    exact — their per-channel bound, and the channels whose output is one value whatever the input
    (``requantize.constant_channels``: their accumulators are computed without the bias, and their outputs are
    those values); None when float32 cannot hold the others exactly (the module docstring)."""
    w = p["weights"]
    pads, zp = tuple(p["pads"]), p["in_zp"]
    if x.ndim == 3:
        x = x[:, :, None, :]
    offset = zp if any(pads) else 0
    folded, bound, constant, values = layer_constants(p, offset)
    if any(pads) and bound[~constant].max(initial=0) >= EXACT_FLOAT32:  # o = z_x breaks the bound: pad with z_x here
        offset = 0
        folded, bound, constant, values = layer_constants(p, 0)
        pt, pl, pb, pr = pads
        x, pads = np.pad(x, ((0, 0), (0, 0), (pt, pb), (pl, pr)), constant_values=zp), (0, 0, 0, 0)
    if bound[~constant].max(initial=0) >= EXACT_FLOAT32:
        return None
    folded = np.where(constant, 0, folded)  # their outputs are replaced: the bias only breaks the bound
    x = np.subtract(x, offset, dtype=np.float32) if offset else np.ascontiguousarray(x, np.float32)
    sess = _conv_session(w, p["group"], p["strides"], p["dilations"], pads)
    return sess.run(None, {"x": x, "b": folded.astype(np.float32)})[0], bound, (constant, values)


def fc_accumulators(p: dict, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, tuple] | None:
    """``conv_accumulators`` of a fully connected layer over int8 values ``x`` [N, inputs]: Σ x·w by a float32
    matrix product (the same bound makes it exact), then the folded bias."""
    folded, bound, constant, values = layer_constants(p, 0)
    if bound[~constant].max(initial=0) >= EXACT_FLOAT32:
        return None
    acc = np.asarray(x, np.float32) @ np.asarray(p["weights"], np.float32).T
    acc += np.where(constant, 0, folded).astype(np.float32)
    return acc, bound, (constant, values)
