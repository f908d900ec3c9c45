"""A convolution's integer sums computed by onnxruntime's float32 Conv — exactly.

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

The sums Σ (x − o)·w alone (bounded by S_c = (128 + |o|)·Σ|w_c|, exact when every S_c < 2^24) are what the host
build's requantization takes (``host``: it adds B_c in int32); the numpy path adds B_c in float32, exact when
A_c = S_c + |B_c| < 2^24 as well. The Conv has no bias input, so onnxruntime's NCHWc kernels run it (its layout
optimisation needs a constant bias or none: measured per layer, kws_dscnn's 3×3 depthwise layers 4× faster, vww's
and ic_resnet8's 3×3 layers 1.3-2.5×; it is left off for 1×1 kernels, which its layout reorders make slower). Sessions are cached by the layer's weights and geometry, so
edits of biases or ranges reuse them; o is taken off in numpy (onnxruntime's Sub of a fed scalar took 23 ms where
the 1×1 Conv it fed took 6, on sww's 1000 × 128 × 24 inputs).
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass

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

    node = helper.make_node("Conv", ["x", "w"], ["y"], group=group, strides=list(strides),
                            dilations=list(dilations), pads=list(pads))
    graph = helper.make_graph([node], "sums", [helper.make_tensor_value_info("x", TensorProto.FLOAT, None)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(w.astype(np.float32), "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    sess = ort_session(model, optimize=w.shape[2] * w.shape[3] > 1)  # NCHWc: see the module docstring
    _sessions[key] = sess
    if len(_sessions) > _CACHE_SIZE:
        _sessions.popitem(last=False)
    return sess


_constants_cache: OrderedDict = OrderedDict()
_PARAMS = ("weights", "bias", "mult", "shift")


class _Constants(tuple):
    """``layer_constants``' (folded, bound, constant, values), with what follows from them kept beside: ``exact``,
    whether float32 holds the sums (every live channel's S = A − |B| < 2^24), and a fully connected layer's
    weights as float32 (``weights32``)."""

    exact: bool
    weights32: np.ndarray | None = None


def layer_constants(p: dict, offset: int) -> _Constants:
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
    value = _Constants((folded, bound, *constant_channels(p, folded, bound)))
    value.exact = bool((bound - np.abs(folded))[~value[2]].max(initial=0) < EXACT_FLOAT32)
    if np.ndim(p["weights"]) == 2:  # a fully connected layer's, for BLAS
        value.weights32 = np.asarray(p["weights"], np.float32)
    _constants_cache[key] = (tuple(p[k] for k in _PARAMS), value)
    if len(_constants_cache) > _CACHE_SIZE:
        _constants_cache.popitem(last=False)
    return value


@dataclass
class LayerSums:
    """A conv or fc layer's sums over a batch and what makes them its accumulators a = sums + B (per channel)."""
    sums: np.ndarray  #: Σ (x − o)·w, float32 holding exact integers, channels on axis 1
    folded: np.ndarray  #: B (int64): the bias with the rest of the zero point folded in (``folded_bias``)
    bound: np.ndarray  #: A ≥ |a| (float64)
    constant: np.ndarray  #: channels whose output is one value whatever the input (``constant_channels``)
    values: np.ndarray  #: those values

    def accumulators(self) -> np.ndarray | None:
        """sums + B in float32, exact where every live A < 2^24 (constant channels take no bias: their outputs are
        replaced, and a bias of 10^9 would only break the bound); None where float32 cannot hold them."""
        if self.bound[~self.constant].max(initial=0) >= EXACT_FLOAT32:
            return None
        shape = (1, -1) + (1,) * (self.sums.ndim - 2)
        return self.sums + np.where(self.constant, 0, self.folded).astype(np.float32).reshape(shape)


def conv_sums(p: dict, x: np.ndarray) -> LayerSums | None:
    """A conv layer's sums (parameters ``p`` as ``repair.program.ir`` keeps them) over int8 values ``x``
    [N, C, H, W] or [N, C, L] (float32 holding integers), float32 [N, Cout, Ho, Wo]; None when float32 cannot
    hold them exactly (the module docstring)."""
    w = p["weights"]
    pads, zp = tuple(p["pads"]), p["in_zp"]
    if x.ndim == 3:
        x = x[:, :, None, :]
    offset = zp if any(pads) else 0
    constants = layer_constants(p, offset)
    if any(pads) and not constants.exact:  # o = z_x breaks the bound: pad with z_x here
        offset, constants = 0, layer_constants(p, 0)
        pt, pl, pb, pr = pads
        x, pads = np.pad(x, ((0, 0), (0, 0), (pt, pb), (pl, pr)), constant_values=zp), (0, 0, 0, 0)
    if not constants.exact:
        return None
    sess = _conv_session(w, p["group"], p["strides"], p["dilations"], pads)
    x = np.subtract(x, offset, dtype=np.float32) if offset else np.ascontiguousarray(x, np.float32)
    sums = sess.run(None, {"x": x})[0]
    return LayerSums(sums, *constants)


def fc_sums(p: dict, x: np.ndarray) -> LayerSums | None:
    """``conv_sums`` of a fully connected layer over int8 values ``x`` [N, inputs]: Σ x·w by a float32 matrix
    product (the same bound makes it exact)."""
    constants = layer_constants(p, 0)
    if not constants.exact:
        return None
    sums = constants.weights32 @ np.asarray(x, np.float32).T
    return LayerSums(sums.T, *constants)  # [N, C], channel-major in memory (``host``)
