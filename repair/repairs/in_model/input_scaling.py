"""Input scaling: an input pre-shim that gives every input feature the int8 resolution, its inverse folded into
the first layer.

A model fed raw units (a standard scaler folded into its first layer; features from 1e-3 to 1e3) quantizes its
input with one scale for all features: the widest sets it and the small ones round to a few levels or to
zero — int8 loses tens of points and no choice of range recovers them. Per feature j, from its calibration
range [lo_j, hi_j]: c_j = (lo_j + hi_j)/2 and d_j = (hi_j − lo_j)/2, and the model computes on
x'_j = (x_j − c_j)/d_j ∈ [−1, 1] — the pre-shim x·a + b with a = 1/d, b = −c/d, applied before the input
QuantizeLinear (for a float-input model it is two ops in the model, ``Mul`` and ``Add``; the integer program and
the device's host side apply it as they quantize). The first layer takes the inverse: W x + β = (W·diag(d)) x' +
(β + W c), so the float network is unchanged. A convolution that pads its input keeps c = 0 (zero padding of x'
must stay zero padding of x).

It applies only when the features' ranges spread (max d / min d ≥ ``MIN_SPREAD``) and every reader of the
input is a Gemm, MatMul or ungrouped Conv; the input range is then refitted on x'. Like every in-model repair it
is kept only if cross-validation on the integer program shows a gain beyond its noise. (Input-side cross-layer
equalization: Nagel et al. 2019, §4.1, with the input as the first "layer".)
"""

from __future__ import annotations

import numpy as np
from onnx import helper, numpy_helper

from ...errors import ModelError
from .context import FitContext
from .parts import range_params, weight_denominator
from .qdq import QdqModel

MIN_SPREAD = 4.0


def _readers(qm: QdqModel, key: str) -> list:
    return [lay for lay in qm.layers if qm.input_activation(lay) == key]


def scale_inputs(ctx: FitContext, qm: QdqModel, progress=None) -> list[dict]:
    act = next((a for a in qm.activations.values() if a.model_input), None)
    if act is None or act.int8_input:
        return [{"activation": "(the model's input)", "decision": "kept", "why": "the model's input is int8: a pre-shim would have to sit in the firmware, "
                                            "before the model"}]
    readers = _readers(qm, act.key)
    users = {c.name or c.output[0] for dq in act.dq_nodes for c in qm.consumers.get(dq.output[0], [])}
    if not readers or users != {lay.name for lay in readers}:
        return [{"activation": act.key, "decision": "kept", "why": "the input is read by other nodes than layers: nothing to fold into"}]
    if any(lay.op == "Conv" and lay.group != 1 for lay in readers):
        return [{"activation": act.key, "decision": "kept", "why": "a grouped convolution reads the input"}]
    x = ctx.calib_x.astype(np.float64)
    feat = np.moveaxis(x, 1, 0).reshape(x.shape[1], -1) if x.ndim > 2 else x.T
    lo, hi = feat.min(axis=1), feat.max(axis=1)
    padded = any(lay.op == "Conv" and any(dict((a.name, helper.get_attribute_value(a)) for a in lay.node.attribute)
                                          .get("pads", [0])) for lay in readers)
    if padded:
        c, d = np.zeros_like(lo), np.maximum(np.abs(lo), np.abs(hi))
    else:
        c, d = (lo + hi) / 2, (hi - lo) / 2
    live = d > 1e-12 * max(float(d.max()), 1e-30)
    d = np.where(live, d, 1.0)
    c = np.where(live, c, 0.0)
    spread = float(d[live].max() / d[live].min()) if live.any() else 1.0
    if spread < MIN_SPREAD:
        return [{"activation": act.key, "decision": "kept", "why": f"the input features share a range (spread max/min {spread:.3g} < "
                                             f"{MIN_SPREAD:g}): one int8 scale serves them all"}]
    if qm.input_affine() is not None:
        raise ModelError("the model already has an input pre-shim: input scaling is not fitted twice")
    weights = {lay.name: ctx.float_weights(lay, qm)[:2] for lay in readers}
    denominators = {lay.name: weight_denominator(qm, lay, weights[lay.name][0]) for lay in readers}
    shape = [-1] + [1] * (x.ndim - 2)
    set_input_affine(qm, (1 / d).astype(np.float32).reshape(shape), (-c / d).astype(np.float32).reshape(shape))
    xs = (x - c.reshape(shape)) / d.reshape(shape)
    qm.set_activation(act.key, *range_params(xs.min(), xs.max()))  # the group keeps its key across the restructure
    for lay in _readers(qm, act.key):
        w, bias = weights[lay.name]
        ax = [1] * w.ndim
        ax[lay.in_axis] = -1
        folded_bias = bias + np.tensordot(w, c, axes=([lay.in_axis], [0])).reshape(w.shape[lay.out_axis], -1).sum(1)
        qm.set_weights(lay, w * d.reshape(ax), folded_bias, denominators[lay.name])
    return [{"activation": act.key, "decision": "scaled", "features": int(len(d)), "spread_before": spread,
             "scale_min": float(d.min()), "scale_max": float(d.max()), "offsets": not padded,
             "why": f"feature ranges spread {spread:.3g}× under one input scale; each scaled to [−1, 1] by the "
                    f"input pre-shim, the inverse folded into {', '.join(lay.name for lay in readers)}"}]


def set_input_affine(qm: QdqModel, a: np.ndarray, b: np.ndarray) -> None:
    """x·a + b between the model's float input and its QuantizeLinear: a ``Mul`` and an ``Add`` in front of every
    node reading the input (the model has no pre-shim yet)."""
    model = qm.to_model()
    g = model.graph
    gi = next(i.name for i in g.input if i.name not in qm.inits)
    names = {k: f"{gi}_tmlr_{k}" for k in ("scale", "offset", "scaled", "shifted")}
    g.initializer.extend([numpy_helper.from_array(np.asarray(a, np.float32), names["scale"]),
                          numpy_helper.from_array(np.asarray(b, np.float32), names["offset"])])
    for node in g.node:
        for j, name in enumerate(node.input):
            if name == gi:
                node.input[j] = names["shifted"]
    g.node.insert(0, helper.make_node("Add", [names["scaled"], names["offset"]], [names["shifted"]],
                                      name=f"{gi}_tmlr_pre_shim_add"))
    g.node.insert(0, helper.make_node("Mul", [gi, names["scale"]], [names["scaled"]], name=f"{gi}_tmlr_pre_shim_mul"))
    qm.restructure(model)
