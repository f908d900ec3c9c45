"""Temperature scaling (Guo et al. 2017, "On Calibration of Modern Neural Networks", §4.2).

p = softmax(z / T), one scalar T > 0 fitted by minimising the negative log-likelihood
on a calibration split. It never changes the argmax. On the device it costs nothing:
TFLite Micro and CMSIS-NN compute the int8 softmax from β·s_in, so T folds into the
softmax input multiplier as β' = β / T (``repair.fixedpoint.softmax_params``) — a TFLM
user changes one multiplier (or the Softmax op's beta).

Fitted in float64 from logits whatever their dtype: netcal's TemperatureScaling
silently fits T = 1 on float32 input (its issue #61); we do not take that path.
"""

from __future__ import annotations

import numpy as np

from ... import fixedpoint as fp
from ...errors import DataError
from .base import Repair, check_finite_array, register


def nll_of_logits(z: np.ndarray, y: np.ndarray) -> float:
    """Mean −log softmax(z)_y, computed stably: log Σ_k e^{z_k} = m + log Σ_k e^{z_k − m}, m = max_k z_k."""
    z = np.asarray(z, np.float64)
    m = z.max(axis=1)
    lse = m + np.log(np.exp(z - m[:, None]).sum(axis=1))
    return float((lse - z[np.arange(len(y)), y]).mean())


def _inverse_temperature(z: np.ndarray, y: np.ndarray, lo: float, hi: float) -> float:
    """argmin over β ∈ [lo, hi] of L(β) = mean(logsumexp(β z) − β z_y), the NLL at T = 1/β: safeguarded Newton.

    L is convex in β, L'(β) = mean(E_p[z] − z_y) and L''(β) = mean(Var_p[z]) ≥ 0 with p = softmax(β z), so L' is
    non-decreasing: the minimum is where L' changes sign, or at the end of the interval L' points to. Newton steps
    stay inside a bracket [a, b] with L'(a) < 0 < L'(b), bisecting where a step would leave it; to |step| ≤ 1e-12 β.
    Exact where scipy's bounded Brent search (xatol 1e-6 in log T) stopped early: on motions at T = 0.084, the
    likelihood still falling to the bound 0.05.
    """
    zy = z[np.arange(len(y)), y]

    def slope_and_curvature(beta: float) -> tuple[float, float]:
        s = beta * z
        s -= s.max(axis=1, keepdims=True)
        p = np.exp(s)
        p /= p.sum(axis=1, keepdims=True)
        mean = (p * z).sum(axis=1)
        var = (p * z * z).sum(axis=1) - mean * mean
        return float((mean - zy).mean()), float(max(var.mean(), 0.0))

    a, b = lo, hi
    if slope_and_curvature(a)[0] >= 0:
        return a
    if slope_and_curvature(b)[0] <= 0:
        return b
    beta = min(max(1.0, a), b)
    for _ in range(200):
        g, h = slope_and_curvature(beta)
        if g == 0:
            return beta
        a, b = (beta, b) if g < 0 else (a, beta)
        step = g / h if h > 0 else np.inf
        new = beta - step
        if not a < new < b:
            new = 0.5 * (a + b)
        if abs(new - beta) <= 1e-12 * beta:
            return new
        beta = new
    return beta


def check_logits_and_labels(logits, y) -> tuple[np.ndarray, np.ndarray]:
    z = check_finite_array("logits", logits, ndim=2)
    if y is None:
        raise DataError("labels are needed to fit a calibration repair: give y in the calibration set")
    y = np.asarray(y)
    if y.shape != (len(z),):
        raise DataError(f"{len(y)} labels for {len(z)} logit rows: they must match")
    if y.min() < 0 or y.max() >= z.shape[1]:
        raise DataError(f"labels must be class ids 0..{z.shape[1] - 1}; found {int(y.min())}..{int(y.max())}")
    return z, y.astype(np.int64)


@register
class TemperatureScaling(Repair):
    """Divide logits by T = argmin NLL over [bounds]; integer form folds 1/T into the int8 softmax."""

    name = "temperature"
    fitted_attributes = ("temperature_",)

    def __init__(self, bounds: tuple[float, float] = (0.05, 20.0)):
        self.bounds = bounds

    def fit(self, logits, y) -> "TemperatureScaling":
        z, y = check_logits_and_labels(logits, y)
        beta = _inverse_temperature(z, y, 1.0 / self.bounds[1], 1.0 / self.bounds[0])
        self.temperature_ = float(1.0 / beta)
        return self

    def apply(self, logits) -> np.ndarray:
        """Calibrated logits z / T (float reference)."""
        self.check_fitted()
        return np.asarray(logits, np.float64) / self.temperature_

    def integer_params(self, input_scale: float, beta: float = 1.0) -> dict:
        """int8 softmax parameters with β' = β / T, for int8 logits of scale ``input_scale``."""
        self.check_fitted()
        mult, shift, diff_min = fp.softmax_params(beta / self.temperature_, input_scale)
        return {"softmax_multiplier": mult, "softmax_shift": shift, "softmax_diff_min": diff_min,
                "beta": beta / self.temperature_, "input_scale": input_scale}

    def apply_int(self, q_logits, input_scale: float, beta: float = 1.0) -> np.ndarray:
        """int8 probabilities (scale 1/256, zero point −128) exactly as the C shim computes them."""
        p = self.integer_params(input_scale, beta)
        return fp.softmax_s8(q_logits, p["softmax_multiplier"], p["softmax_shift"], p["softmax_diff_min"])
