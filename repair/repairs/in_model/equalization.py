"""Cross-layer equalization (Nagel et al. 2019, *Data-Free Quantization Through Weight Equalization and
Bias Correction*, §4.1), depthwise-separable pairs included.

For two layers with a positively homogeneous activation between them (ReLU: relu(x/s) = relu(x)/s for
s > 0) and channel c leaving the first and entering the second,

    W1[c] ← W1[c] / s_c,  b1[c] ← b1[c] / s_c,  W2[:, c] ← W2[:, c] · s_c,    s_c = sqrt(r1_c / r2_c)

leaves the float function unchanged and gives both channels the range sqrt(r1_c · r2_c), where r1_c is
the range of output channel c of W1 and r2_c the range of the weights W2 applies to input channel c.
For a grouped (depthwise) second layer, input channel c is read by the output channels of its group
only; a depthwise first layer's channel c is its filter c. Chains (conv → dw → pw → …) are swept until
the scales settle, as the paper does.

The weights come from the float model where it holds them in the same layout (no double rounding), and
are quantized back with the model's own scheme (per tensor or per channel, symmetric, its denominator).
The activation between the two layers changes range by 1/s_c per channel; it is re-calibrated from the
float activations on the calibration split with the min/max rule of ``quantize_static``.
"""

from __future__ import annotations

import numpy as np

from .context import FitContext
from .parts import Layer, range_params, weight_denominator
from .qdq import SAME_RANGE_OPS, QdqModel

#: Activations that commute with a positive per-channel scale.
HOMOGENEOUS = frozenset({"Relu", "LeakyRelu", "PRelu"})
#: Ops between the two layers that act per channel and commute with a positive scale.
PER_CHANNEL_POOLS = frozenset({"MaxPool", "AveragePool", "GlobalAveragePool"})
SWEEPS = 50
TOL = 1e-4
#: Bound on one sweep's per-channel factor: a channel with (nearly) no weights must not blow the other up.
MAX_STEP = 16.0


def _in_multiplier(qm: QdqModel, layer: Layer, s: np.ndarray) -> np.ndarray:
    """Array of ``layer``'s weight shape: the factor each weight gets when its input channel c is scaled by s_c."""
    w = qm.weight_q(layer)
    if layer.op != "Conv":
        shape = [1, 1]
        shape[layer.in_axis] = -1
        return np.broadcast_to(s.reshape(shape), w.shape)
    cout, cin_g = w.shape[0], w.shape[1]
    cout_g = cout // layer.group
    chan = (np.arange(cout)[:, None] // cout_g) * cin_g + np.arange(cin_g)[None, :]  # input channel of [o, j]
    return np.broadcast_to(s[chan].reshape(cout, cin_g, *([1] * (w.ndim - 2))), w.shape)


def _in_ranges(qm: QdqModel, layer: Layer, w: np.ndarray, n_in: int) -> np.ndarray:
    """max |w| over the weights that read input channel c, for each c."""
    if layer.op != "Conv":
        axes = tuple(i for i in range(w.ndim) if i != layer.in_axis)
        return np.abs(w).max(axis=axes)
    cout, cin_g = w.shape[0], w.shape[1]
    cout_g = cout // layer.group
    a = np.abs(w).reshape(cout, cin_g, -1).max(axis=2)
    chan = (np.arange(cout)[:, None] // cout_g) * cin_g + np.arange(cin_g)[None, :]
    ranges = np.zeros(n_in)
    np.maximum.at(ranges, chan.reshape(-1), a.reshape(-1))
    return ranges


def _out_ranges(layer: Layer, w: np.ndarray) -> np.ndarray:
    axes = tuple(i for i in range(w.ndim) if i != layer.out_axis)
    return np.abs(w).max(axis=axes)


def _scale_out(layer: Layer, w: np.ndarray, s: np.ndarray) -> np.ndarray:
    shape = [1] * w.ndim
    shape[layer.out_axis] = -1
    return w / s.reshape(shape)


def find_pairs(ctx: FitContext, qm: QdqModel) -> tuple[list[dict], list[dict]]:
    """Consecutive layers CLE can rescale, with the activations between them; and the rows of layers not paired.

    A pair needs: the first layer's pre-activation flows only to the second (through a homogeneous activation,
    Q/DQ, per-channel pooling, or a Flatten after global pooling), and every activation on the way is an
    editable group with a float counterpart.
    """
    pairs, rows = [], []
    by_input: dict[str, list[Layer]] = {}
    for lay in qm.layers:
        by_input.setdefault(qm.input_activation(lay), []).append(lay)
    for first in qm.layers:
        found, why = _follow(ctx, qm, first, by_input)
        if found:
            pairs.append(found)
        else:
            rows.append({"layer": first.name, "decision": "not a first layer of a pair", "why": why})
    return pairs, rows


def _follow(ctx: FitContext, qm: QdqModel, first: Layer, by_input) -> tuple[dict | None, str]:
    name, acts = first.preact, []
    while True:
        cs = qm.consumers.get(name, [])
        if len(cs) != 1:
            return None, f"its output has {len(cs)} consumers (a branch: rescaling would change the other path)"
        node = cs[0]
        if node.op_type in HOMOGENEOUS:
            name = node.output[0]
            continue
        if node.op_type == "Clip":
            return None, "followed by Clip (a max bound does not commute with rescaling)"
        if node.op_type != "QuantizeLinear":
            return None, f"followed by {node.op_type}, which does not commute with a per-channel scale"
        key = qm.group_of.get(node.output[0])
        act = qm.activations.get(key)
        if act is None or act.interface:
            return None, f"the activation after it {act.interface if act else 'is not a quantized group'}"
        if ctx.float_tensor(key) is None:
            return None, f"the activation after it has no float counterpart ({ctx.tensor_unpaired.get(key, '')})"
        if not acts:
            why = _float_path_homogeneous(ctx, first, ctx.float_tensor(key))
            if why:
                return None, why
        acts.append(key)
        readers = [c for dq in act.dq_nodes for c in qm.consumers.get(dq.output[0], [])
                   if c.op_type not in SAME_RANGE_OPS or c.output[0] not in {q.input[0] for q in act.q_nodes}]
        layers = by_input.get(key, [])
        if len(layers) == 1 and len(readers) == 1:
            second = layers[0]
            n_in = _n_in(qm, second)
            if n_in != qm.n_out(first):
                return None, (f"{second.name!r} reads {n_in} input channels where {first.name!r} writes "
                              f"{qm.n_out(first)} (a Flatten mixes channels and positions)")
            return {"first": first.name, "second": second.name, "activations": acts,
                    "second_depthwise": second.group > 1}, ""
        if len(readers) == 1 and readers[0].op_type in PER_CHANNEL_POOLS:
            name = readers[0].output[0]
            continue
        return None, (f"the activation after it is read by {len(readers)} node(s) "
                      f"({', '.join(sorted({r.op_type for r in readers}))}), not by one layer")


def _float_path_homogeneous(ctx: FitContext, first: Layer, target: str) -> str:
    """Why the float model's path from ``first`` to ``target`` does not commute with a per-channel scale ('' if
    it does). A converter folds ReLU6 into the int8 range, so only the float graph shows the Clip."""
    ix = ctx.pair.float.index
    name = ctx.float_preact(first)
    while name is not None and name != target:
        cs = ix.consumers.get(name, [])
        if len(cs) != 1:
            return "in the float model its output branches"
        if cs[0].op_type not in HOMOGENEOUS:
            return (f"in the float model it is followed by {cs[0].op_type}"
                    f"{' (ReLU6: its max bound does not commute with rescaling)' if cs[0].op_type == 'Clip' else ''}")
        name = cs[0].output[0]
    return "" if name == target else "no float layer pairs with it"


def _n_in(qm: QdqModel, layer: Layer) -> int:
    w = qm.weight_q(layer)
    if layer.op == "Conv":
        return int(w.shape[1] * layer.group)
    return int(w.shape[layer.in_axis])


def equalize(ctx: FitContext, qm: QdqModel, progress=None) -> list[dict]:
    """Equalize every pair found, sweeping chains until the scales settle; write weights, biases, ranges (about 60
    lines: the sweep and the write-back share the per-pair scales, which a split would pass around)."""
    pairs, rows = find_pairs(ctx, qm)
    if not pairs:
        return rows
    names = {p["first"] for p in pairs} | {p["second"] for p in pairs}
    w, b, source = {}, {}, {}
    for name in names:
        lay = qm.layer(name)
        w[name], b[name], source[name] = ctx.float_weights(lay, qm)
    denominators = {name: weight_denominator(qm, qm.layer(name), w[name]) for name in names}
    before = {p["first"]: float(_spread(_out_ranges(qm.layer(p["first"]), w[p["first"]]))) for p in pairs}
    # the float model's weights are unscaled; the int8 model's carry any earlier equalization
    total = {p["first"]: (np.ones(qm.n_out(qm.layer(p["first"]))) if source[p["first"]] == "float model" else
                          qm.channel_divisor(p["first"], qm.n_out(qm.layer(p["first"]))).copy()) for p in pairs}
    for sweep in range(SWEEPS):
        moved = 0.0
        for p in pairs:
            l1, l2 = qm.layer(p["first"]), qm.layer(p["second"])
            r1 = _out_ranges(l1, w[l1.name])
            r2 = _in_ranges(qm, l2, w[l2.name], qm.n_out(l1))
            live = (r1 > 1e-12 * r1.max()) & (r2 > 1e-12 * r2.max())
            s = np.where(live, np.sqrt(r1 / np.where(live, r2, 1.0)), 1.0).clip(1 / MAX_STEP, MAX_STEP)
            w[l1.name] = _scale_out(l1, w[l1.name], s)
            b[l1.name] = b[l1.name] / s
            w[l2.name] = w[l2.name] * _in_multiplier(qm, l2, s)
            total[l1.name] *= s
            moved = max(moved, float(np.abs(np.log(s)).max()))
        if progress:
            progress(sweep + 1, SWEEPS)
        if moved < TOL:
            break
    # the activations between each pair: their float range divided by the channel's scale
    for p in pairs:
        s = total[p["first"]]
        for key in p["activations"]:
            f_name = ctx.float_tensor(key)
            lo, hi = ctx.float_channel_ranges([f_name])[f_name]
            if lo.size != s.size:
                lo, hi = np.full(s.size, lo.min()), np.full(s.size, hi.max())
            scale, zp = range_params(float((lo / s).min()), float((hi / s).max()))
            qm.set_activation(key, scale, zp)
            qm.equalized[key] = s.copy()
        qm.equalized[p["first"]] = s.copy()
    saturated = {}
    for name in sorted(names, key=lambda n: [lay.name for lay in qm.layers].index(n)):
        saturated[name] = int(qm.set_weights(qm.layer(name), w[name], b[name], denominators[name]).sum())
    for p in pairs:
        l1 = qm.layer(p["first"])
        rows.append({"layer": p["first"], "next": p["second"], "decision": "equalized",
                     "why": (f"channel weight range spread (max/min) {before[p['first']]:.3g} → "
                             f"{_spread(_out_ranges(l1, w[l1.name])):.3g}; "
                             f"{'depthwise ' if p['second_depthwise'] else ''}{p['second']} takes the inverse scale; "
                             f"weights from the {source[p['first']]}"),
                     "scale_min": float(total[p["first"]].min()), "scale_max": float(total[p["first"]].max()),
                     "activations": p["activations"]})
    for name, n in saturated.items():
        if n:
            rows.append({"layer": name, "decision": "bias saturated",
                         "why": f"{n} channel(s) of its bias exceed int32 in the new bias units and were clamped"})
    return rows


def _spread(r: np.ndarray) -> float:
    r = r[r > 0]
    return float(r.max() / r.min()) if r.size else 1.0
