"""A convolution's integer sums Σ (x − o)·w computed by onnxruntime's float32 Conv — exactly.

With int8 inputs less an offset o (|x − o| ≤ X = 128 + |o|) and int8 weights (|w| ≤ 127), every partial sum of a
convolution with T taps per output (input channels per group × kernel height × width) is an integer of magnitude
≤ T·X·127. For T·X·127 < 2^24 float32 holds every such integer exactly, so every addition and multiplication — in
whatever order, blocking or fused multiply-add MLAS chooses — is exact: the float32 result *is* the integer sum.
o = 0 (raw inputs, T ≤ 1031) where the layer has no padding; o = z_x where it has, since Conv pads with 0 and TFLM's
padded taps add nothing to Σ (x − z_x)·w — or, for more taps than that allows, o = 0 on the input padded with z_x
here. The rest of the zero point and the bias are
folded in afterwards (``repair.program.requantize_sums``). onnxruntime's Conv (im2col + SGEMM, or its depthwise
kernel) on two cores is 6-10× the numpy taps-and-GEMM it replaces (digits' five convolutions on 1000 samples:
34 ms against 200 ms, one run).

Sessions are cached by the layer's weights and geometry (an edit that changes only biases or ranges reuses them).
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict

import numpy as np

_CACHE_SIZE = 256
_sessions: OrderedDict = OrderedDict()


def exact_taps(taps: int, offset: int = 0) -> bool:
    """Whether float32 sums of ``taps`` products (x − offset)·w of int8 values are exact (the module docstring)."""
    return taps * (128 + abs(offset)) * 127 < (1 << 24)


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
    sess = ort_session(model, optimize=True)
    _sessions[key] = sess
    if len(_sessions) > _CACHE_SIZE:
        _sessions.popitem(last=False)
    return sess


def conv_sums(p: dict, x: np.ndarray) -> tuple[np.ndarray, int] | None:
    """(Σ (x − o)·w, o) of a conv layer (parameters ``p`` as ``repair.program.ir`` keeps them) over int8 values
    ``x`` [N, C, H, W] or [N, C, L] (float32 holding integers): float32 [N, Cout, Ho, Wo], exact, and the offset o
    taken off the inputs; None when the layer has too many taps for float32 to be exact (the caller then sums in
    float64). A padded layer whose taps are too many for o = z_x is padded here with z_x itself (o = 0)."""
    w = p["weights"]
    taps = int(np.prod(w.shape[1:]))
    pads, zp = tuple(p["pads"]), p["in_zp"]
    if x.ndim == 3:
        x = x[:, :, None, :]
    if any(pads) and exact_taps(taps, zp):
        offset, x = zp, np.subtract(x, zp, dtype=np.float32)
    elif exact_taps(taps):
        offset = 0
        if any(pads):  # TFLM's padded taps add nothing to Σ (x − z_x)·w: pad with z_x, then o = 0 holds everywhere
            pt, pl, pb, pr = pads
            x, pads = np.pad(x, ((0, 0), (0, 0), (pt, pb), (pl, pr)), constant_values=zp), (0, 0, 0, 0)
        x = np.ascontiguousarray(x, np.float32)
    else:
        return None
    sess = _conv_session(w, p["group"], p["strides"], p["dilations"], pads)
    return sess.run(None, {"x": x})[0], offset
