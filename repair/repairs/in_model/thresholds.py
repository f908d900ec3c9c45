"""Activation clipping thresholds: per quantized activation, the range that leaves the least error downstream.

An int8 activation with range [a, b] has step (b − a)/255: a wide range (min/max over calibration, the
``quantize_static`` default) spends levels on rare outliers and rounds everything else coarsely; clipping
trades outlier error for finer steps. Candidates per activation, from its float values on calibration:

- ``minmax``: [min, max];
- ``p99``, ``p99.9``, ``p99.99``: the upper (and, for signed tensors, lower) percentile;
- ``mse``: the clip minimising E[(x − Q(x))²] (on ≤ 2·MSE_SAMPLE of the values) over 48 fractions of
  [min, max] (the MSE-optimal search of Banner et al. 2019 / ``onnxruntime``'s Entropy and Percentile
  calibrators' simpler cousin).

The model's float input (float I/O: its quantization is inside the model) is one of these activations: a range
blown up by one glitched calibration sample is refitted like any other. The choice is greedy in graph order (each activation decided with those before it already set) by the
error it leaves at the model's output — mean squared difference from the float model's output on the
calibration split, scaled by the float output's variance — not by the error at the tensor itself: a
clip that looks good locally can cost more downstream. The model's current range competes too and wins
ties, so an activation changes only when a candidate is strictly better.
"""

from __future__ import annotations

import numpy as np

from ...program import host
from .context import VALUE_SAMPLE, FitContext
from .edits import edited_outputs
from .parts import range_params
from .qdq import QdqModel

PERCENTILES = (99.0, 99.9, 99.99)
MSE_FRACTIONS = np.linspace(0.06, 1.0, 48)
#: Values the MSE search scores each fraction on (a random subset of the activation's sample).
MSE_SAMPLE = 50_000
#: Calibration samples used to score candidates (each candidate is one run of the whole model on them): a proxy
#: for the search only; whether the thresholds are kept is decided by cross-validation on the integer program.
SEARCH_SAMPLES = 128


def _quant_mse(v: np.ndarray, lo: float, hi: float, scratch: np.ndarray | None = None) -> float:
    """E[(v − Q(v))²] for the int8 quantizer of range [lo, hi]: Q(v) = (clamp(rint(v/s) + z) − z)·s, clamped
    as clamp(rint(v/s), −128 − z, 127 − z) (the same integers), in ``scratch`` (v's shape) if given."""
    scale, zp = range_params(lo, hi)
    q = np.divide(v, scale, out=scratch)
    np.rint(q, out=q)
    np.clip(q, -128 - zp, 127 - zp, out=q)
    q *= scale
    np.subtract(v, q, out=q)
    return float(np.dot(q, q)) / q.size


def _mse_curve(m: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """``_quant_mse`` of ``m`` for the range [f·lo, f·hi] of every fraction f of ``MSE_FRACTIONS``. float64 values
    (a ``FitContext``'s) in one call of the host build where it exists (``repair.program.host``: the same Q(v)
    element for element, only the order of the sum differs), else in numpy, in one buffer for the 48 (fresh ones
    cost page faults) of the dtype v / scale has."""
    ranges = [range_params(lo * f, hi * f) for f in MSE_FRACTIONS]
    lib = host.library()
    if lib is not None and m.dtype == np.float64:
        m = np.ascontiguousarray(m)
        scales = np.array([s for s, _ in ranges])
        zps = np.array([z for _, z in ranges], np.int32)
        sse = np.empty(len(ranges))
        lib.tmlr_host_quant_sse(m.ctypes.data, m.size, scales.ctypes.data, zps.ctypes.data, len(ranges),
                                sse.ctypes.data)
        return sse / m.size
    scratch = np.empty(m.shape, np.divide(m[:1], ranges[0][0]).dtype)
    return np.array([_quant_mse(m, lo * f, hi * f, scratch) for f in MSE_FRACTIONS])


def candidates(v: np.ndarray) -> dict[str, tuple[float, float]]:
    """Candidate (min, max) ranges from a sample of float activation values."""
    lo, hi = float(v.min()), float(v.max())
    signed = lo < 0
    out = {"minmax": (lo, hi)}
    # one partition for all of them: np.percentile's values for each q are those of separate calls
    q = np.percentile(v, [*(100 - p for p in PERCENTILES), *PERCENTILES]) if signed else \
        np.percentile(v, list(PERCENTILES))
    uppers = q[len(PERCENTILES):] if signed else q
    for k, p in enumerate(PERCENTILES):
        out[f"p{p:g}"] = (float(q[k]) if signed else lo, float(uppers[k]))
    # the error curve from every k-th value (v is a random draw, so a random subset of it)
    errs = _mse_curve(v[:: max(1, v.size // MSE_SAMPLE)], lo, hi)
    f = float(MSE_FRACTIONS[int(np.argmin(errs))])
    out["mse"] = (lo * f, hi * f)
    return out


def _relative_error(out: np.ndarray, ref: np.ndarray) -> float:
    """Mean squared difference from the float model's output, over the float output's variance."""
    return float(np.mean((out - ref) ** 2) / max(float(np.var(ref)), 1e-30))


def _float_name(ctx: FitContext, act, key: str) -> str | None:
    """The float tensor an activation's range is taken from; a float input's quantization: the input itself."""
    return ctx.float_input if act.model_input else ctx.float_tensor(key)


def _input_values(ctx: FitContext, qm: QdqModel) -> np.ndarray:
    """A seeded sample of the values the model's input quantization sees: the input after its pre-shim."""
    affine = qm.input_affine()
    v = (affine.apply(ctx.calib_x) if affine is not None else np.asarray(ctx.calib_x, np.float32)).reshape(-1)
    keep = v if v.size <= VALUE_SAMPLE else np.random.default_rng(0).choice(v, VALUE_SAMPLE, replace=False)
    return np.concatenate([keep, [v.min(), v.max()]]).astype(np.float64)


def fit_thresholds(ctx: FitContext, qm: QdqModel, progress=None) -> list[dict]:
    """Choose every editable activation's range in graph order; write the winners; one row per activation."""
    x = ctx.calib_x[:SEARCH_SAMPLES]
    ref = ctx.outputs(ctx.pair.float.proto, x, int8=False)
    keys = list(qm.activations)
    rows, editable = [], []
    for key in keys:
        act = qm.activations[key]
        if act.interface:
            rows.append({"activation": key, "decision": "kept", "why": f"interface: {act.interface}"})
        elif _float_name(ctx, act, key) is None:
            rows.append({"activation": key, "decision": "kept",
                         "why": f"no float counterpart to take ranges from ({ctx.tensor_unpaired.get(key, '')})"})
        else:
            editable.append(key)
    ctx.float_values_of([(ctx.float_tensor(key), qm.equalized.get(key)) for key in editable
                         if not qm.activations[key].model_input])  # every activation's values in one float pass
    best_err = _relative_error(ctx.outputs(qm.to_model(), x, int8=True), ref)
    start_err = best_err
    for k, key in enumerate(editable):
        act = qm.activations[key]
        v = _input_values(ctx, qm) if act.model_input else ctx.float_values(ctx.float_tensor(key), qm.equalized.get(key))
        current = qm.activation_params(key)
        tried = {}
        for name, (lo, hi) in candidates(v).items():
            scale, zero_point = range_params(lo, hi)
            params = (float(np.float32(scale)), zero_point)  # as the model stores it: float32
            if params != current and params not in tried.values():
                tried[name] = params
        trials = []
        for params in tried.values():
            trials.append(qm.copy())
            trials[-1].set_activation(key, *params)
        best_name, best_params = "current", current
        for name, out in zip(tried, edited_outputs(ctx, qm, trials, x)):  # in candidate order: ties keep the first
            err = _relative_error(out, ref)
            if err < best_err:
                best_err, best_name, best_params = err, name, tried[name]
        if best_name != "current":
            qm.set_activation(key, *best_params)
        rows.append({"activation": key, "float_tensor": _float_name(ctx, qm.activations[key], key),
                     "decision": best_name if best_name != "current" else "kept",
                     "scale_before": current[0], "zero_point_before": current[1],
                     "scale_after": best_params[0], "zero_point_after": best_params[1],
                     "candidates": sorted(tried), "output_error_after": best_err,
                     "why": ("lowest output error on calibration" if best_name != "current"
                             else "no candidate lowers the output error on calibration")})
        if progress:
            progress(k + 1, len(editable))
    rows.append({"activation": "(model output)", "decision": "summary",
                 "why": f"relative output MSE on calibration {start_err:.4g} → {best_err:.4g}"})
    return rows
