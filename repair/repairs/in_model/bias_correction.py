"""Sequential empirical bias correction, and the last-layer logit offset.

For output channel c of a layer, over the calibration split (Nagel et al. 2019, *Data-Free Quantization
Through Weight Equalization and Bias Correction*, §4.2, empirical variant; Finkelstein et al. 2019):

    shift_c = E[y_float,c] − E[y_int8,c]                 (pre-activations, mean over samples and positions)
    b_c    ← sat_int32(b_c + round(shift_c / (s_in · s_w,c)))

``y_int8`` is the dequantized pre-activation of the int8 model as the device computes it (the layer's int32
accumulators on the integer program, times s_in·s_w,c), measured with every upstream correction
already written (*sequential*): correcting all layers from one measurement counts each upstream error
twice, once where it arises and again where it propagates. Layers are taken in graph order; every layer
gets a row saying what was measured and what was decided — nothing is skipped silently.

``relative_shift`` is reported for comparison with NNCF's FastBiasCorrection, which skips a layer when
max_c |shift_c| / max_c |b_c| ≥ 2 (its default threshold); tmlrepair never skips on it.

The logit offset is the same correction applied to the last layer alone: one measurement, no re-runs.
"""

from __future__ import annotations

import numpy as np

from ...errors import ModelError
from ...program import lower
from ...program.runner import ProgramRunner
from ...program.sums import conv_sums, fc_sums
from .context import FitContext, channel_view
from .qdq import INT32_MAX, Layer, QdqModel

#: NNCF's FastBiasCorrection default: layers with a larger relative shift are skipped there.
NNCF_THRESHOLD = 2.0


def _int8_channel_means(ctx: FitContext, qm: QdqModel, layer: Layer, on_program: "ProgramMeans") -> np.ndarray:
    """Per sample, per channel mean of the layer's pre-activation in the int8 model as it stands: as the device
    computes it (``ProgramMeans``), else onnxruntime's float simulation of QDQ."""
    means = on_program(qm, layer)
    if means is not None:
        return means
    parts = [channel_view(b[layer.preact], layer.preact_axis).mean(axis=2)
             for b in ctx.run(qm.to_model(), [layer.preact], ctx.calib_x, int8=True)]
    return np.concatenate(parts)


class ProgramMeans:
    """s_x·s_w,c · mean(acc_c) per sample: a layer's int32 accumulators (bias included) on the integer program of
    the model as it stands — its input as the device's upstream layers leave it — dequantized as the QDQ graph's
    pre-activation is (Σ DQ(x)·DQ(w) + DQ(b) = s_x·s_w,c·acc). None when the program cannot express the model or
    float32 cannot hold the layer's sums exactly (``sums``); the caller then asks onnxruntime.

    Asked layer after layer in graph order, as sequential correction does, it keeps the tensors computed over the
    calibration split: correcting a layer changes only that layer's bias, so the layers before it need not run
    again (those after it, and it, do). Tensors no later layer reads are dropped."""

    def __init__(self, ctx: FitContext):
        self.ctx = ctx
        self.values: dict[str, np.ndarray] = {}
        self.done = 0  # program layers whose outputs in ``values`` are current

    def __call__(self, qm: QdqModel, layer: Layer) -> np.ndarray | None:
        try:
            program = lower(qm.to_model())
        except ModelError:
            return None
        j = next((i for i, p in enumerate(program.layers) if p.node == layer.name and p.op in ("conv", "fc")), None)
        if j is None:
            return None
        if not self.values or j < self.done:  # the first request, or not in graph order: from the input
            n = len(self.ctx.calib_x)
            q = ProgramRunner(self.ctx.pair, program).quantize(self.ctx.calib_x)
            self.values = {program.input: q.reshape(n, *program.tensors[program.input].shape).astype(np.float32)}
            self.done = 0
        program.advance(self.values, program.layers[self.done:j])
        self.done = j
        needed = {name for step in program.layers[j:] for name in step.inputs}
        self.values = {k: v for k, v in self.values.items() if k in needed}
        target = program.layers[j]
        x = self.values[target.inputs[0]]
        sums = conv_sums(target.p, x) if target.op == "conv" else fc_sums(target.p, x.reshape(len(x), -1))
        if sums is None:
            return None
        s = sums.sums.reshape(len(x), sums.sums.shape[1], -1)
        # mean(sums + B) = Σ sums / positions + B: integers below 2^24 summed in float64, exactly
        return (s.sum(axis=2, dtype=np.float64) / s.shape[2] + sums.folded[None, :]) * qm.bias_lsb(layer)


def correct_layer(ctx: FitContext, qm: QdqModel, layer: Layer, on_program: ProgramMeans | None = None) -> dict:
    """Measure one layer's shift on calib (with the model as it stands) and write the correction; ``on_program``:
    the measurement kept from the layers corrected before (sequential correction's)."""
    row = {"layer": layer.name, "op": layer.op, "channels": qm.n_out(layer), "group": layer.group}
    f_name = ctx.float_preact(layer)
    if f_name is None:
        why = ctx.node_unpaired.get(layer.name, "no float layer pairs with it")
        return {**row, "decision": "not corrected", "why": f"no float pre-activation to compare with: {why}"}
    if layer.op == "MatMul" and layer.bias_dq is None:
        return {**row, "decision": "not corrected",
                "why": "MatMul without a bias Add: adding one would add an op to the graph"}
    f_means = ctx.float_channel_means([f_name], {f_name: layer.preact_axis})[f_name]
    q_means = _int8_channel_means(ctx, qm, layer, on_program or ProgramMeans(ctx))
    if f_means.shape == q_means.shape:  # after equalization the int8 layer computes float / s per channel
        f_means = f_means / qm.channel_divisor(layer.name, f_means.shape[1])
    else:
        return {**row, "decision": "not corrected",
                "why": f"float pre-activation {f_name!r} has {f_means.shape[1]} channels, int8 {q_means.shape[1]}"}
    diff = f_means - q_means  # per sample, per channel
    shift = diff.mean(axis=0)
    stderr = diff.std(axis=0, ddof=1) / np.sqrt(len(diff)) if len(diff) > 1 else np.full_like(shift, np.inf)
    lsb = qm.bias_lsb(layer)
    units = np.rint(shift / lsb)
    bias = qm.bias(layer)
    old = qm.bias_int(layer)
    row.update({
        "float_tensor": f_name,
        "shift_max_abs": float(np.abs(shift).max()),
        "shift_rms": float(np.sqrt((shift ** 2).mean())),
        "shift_over_stderr_median": float(np.median(np.abs(shift) / np.maximum(stderr, 1e-30))),
        "relative_shift": float(np.abs(shift).max() / max(np.abs(bias).max(), 1e-30)),
        "units_max_abs": int(np.abs(units).max()),
        "channels_changed": int((units != 0).sum()),
    })
    nncf = "NNCF would skip it" if row["relative_shift"] >= NNCF_THRESHOLD else "NNCF would correct it too"
    if not units.any():
        return {**row, "decision": "no change",
                "why": f"every channel's shift is under half a bias unit ({lsb.min():.3g}); {nncf}"}
    added = layer.bias_dq is None
    saturated = qm.set_bias_int(layer, old + units)
    row["decision"] = "corrected"
    why = [f"{row['channels_changed']}/{row['channels']} channels moved, up to {row['units_max_abs']} bias units",
           nncf]
    if added:
        why.insert(0, "the layer had no bias: one was added (int32, scale input·weight)")
    if saturated.any():
        row["decision"] = "corrected, saturated"
        row["saturated_channels"] = [int(c) for c in np.flatnonzero(saturated)]
        why.append(f"{int(saturated.sum())} channel(s) saturated at ±{INT32_MAX}: the correction asked for more "
                   "than int32 holds, so it was clamped; the layer's bias scale is too fine for this shift")
    row["why"] = "; ".join(why)
    return row


def bias_correction(ctx: FitContext, qm: QdqModel, progress=None) -> list[dict]:
    """Correct every layer in graph order, each measured after the corrections upstream of it."""
    rows, on_program = [], ProgramMeans(ctx)
    # every layer's float means in one float pass (the float model does not change as the int8 one is corrected)
    preacts = {name: layer.preact_axis for layer in qm.layers if (name := ctx.float_preact(layer)) is not None}
    ctx.float_channel_means(list(preacts), preacts)
    for k, layer in enumerate(qm.layers):
        rows.append(correct_layer(ctx, qm, layer, on_program))
        if progress:
            progress(k + 1, len(qm.layers))
    rows += [{"layer": name, "decision": "not corrected", "why": why} for name, why in qm.skipped.items()]
    return rows


def logit_offset(ctx: FitContext, qm: QdqModel, progress=None) -> list[dict]:
    """Per-class offset of the last layer's output (its pre-activation), folded into its bias."""
    row = correct_layer(ctx, qm, qm.layers[-1])
    if progress:
        progress(1, 1)
    return [row]
