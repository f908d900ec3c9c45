"""Adaptive anomaly boundary on a sliding window: alarm iff |x_t − mean| > α·std.

mean and std (population) are over the N previous values x_{t−N..t−1}. α is fitted as
the empirical (1 − FAR) quantile of the windowed z-scores |x_t − mean|/std on normal
calibration data, not as a Gaussian z value: real signals are autocorrelated and
heavy-tailed, so a Gaussian α misses its false-alarm target.

Integer form, no division, no square root (``repair.fixedpoint.window_boundary_alarms``):
values quantized to int16, exact int64 window sums S = Σx and Q = Σx², and
(N·x − S)² · 2^F > A·(N·Q − S²) with α² = A / 2^F, A ≤ 4095 and the largest F ≤ 8 that
allows it (α up to 4 at 1/256 resolution in α², up to 64 coarser). For int16 and N ≤ 1024
every term stays below 2^62: no overflow, and no 64-bit division on the MCU.
"""

from __future__ import annotations

import math

import numpy as np

from ... import fixedpoint_anomaly as fpa
from ...errors import DataError
from .base import Repair, check_finite_array, check_rate, register
from .score_threshold import quantize_scores, score_scale

MAX_WINDOW = 1024


def window_zscores(x: np.ndarray, n: int) -> np.ndarray:
    """|x_t − mean(x_{t−n..t−1})| / std(...) for t ≥ n; inf where std = 0 and x_t ≠ mean."""
    x = np.asarray(x, np.float64)
    c1 = np.concatenate([[0.0], np.cumsum(x)])
    c2 = np.concatenate([[0.0], np.cumsum(x * x)])
    t = np.arange(n, len(x))
    mean = (c1[t] - c1[t - n]) / n
    var = np.maximum((c2[t] - c2[t - n]) / n - mean * mean, 0.0)
    dev = np.abs(x[t] - mean)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(var > 0, dev / np.sqrt(var), np.where(dev > 0, np.inf, 0.0))
    return z


@register
class WindowBoundary(Repair):
    name = "window_boundary"
    fitted_attributes = ("alpha_", "scale_")

    def __init__(self, window: int = 32, target_far: float = 0.1, alpha_frac_bits: int = 8,
                 score_scale: float | None = None):
        self.window = window
        self.target_far = target_far
        self.alpha_frac_bits = alpha_frac_bits
        self.score_scale = score_scale  # the int16 scale integer scores come in (a device's), or None: fitted

    def _check_window(self) -> int:
        n = int(self.window)
        if not 2 <= n <= MAX_WINDOW:
            raise DataError(f"window {self.window} must be between 2 and {MAX_WINDOW} samples (int64 sums)")
        return n

    def fit(self, stream, labels=None) -> "WindowBoundary":
        far = check_rate("target false-alarm rate", self.target_far)
        n = self._check_window()
        x = check_finite_array("stream", stream, ndim=1)
        if len(x) <= n:
            raise DataError(f"the calibration stream has {len(x)} samples but the window is {n}: "
                            f"give a stream longer than the window, or a shorter --window")
        z = window_zscores(x, n)
        if labels is not None:
            lab = np.asarray(labels)
            if lab.shape != x.shape:
                raise DataError(f"{len(lab)} labels for a stream of {len(x)} samples: they must match")
            clean = np.convolve(lab != 0, np.ones(n + 1), mode="valid") == 0  # window and current sample normal
            z = z[clean]
            if z.size == 0:
                raise DataError("no normal stretch as long as the window in the calibration stream: "
                                "a false-alarm rate needs normal data")
        self.alpha_ = float(np.quantile(z, 1.0 - far, method="higher"))
        if not math.isfinite(self.alpha_):
            raise DataError("the calibration stream is constant over whole windows: no spread to set a boundary on")
        self.scale_ = score_scale(x) if self.score_scale is None else float(self.score_scale)
        return self

    def apply(self, stream) -> np.ndarray:
        """Alarms (float reference); the first N samples never alarm."""
        self.check_fitted()
        n = self._check_window()
        x = np.asarray(stream, np.float64)
        out = np.zeros(len(x), dtype=bool)
        if len(x) > n:
            out[n:] = window_zscores(x, n) > self.alpha_
        return out

    def integer_params(self) -> dict:
        """α² = A / 2^F with the largest F ≤ ``alpha_frac_bits`` that keeps A ≤ 4095 (int64-safe)."""
        self.check_fitted()
        f = int(self.alpha_frac_bits)
        while f > 0 and round(self.alpha_ ** 2 * (1 << f)) > fpa.MAX_ALPHA2_Q:
            f -= 1
        a = int(round(self.alpha_ ** 2 * (1 << f)))
        if a > fpa.MAX_ALPHA2_Q:
            raise DataError(f"alpha {self.alpha_:.1f} is beyond the integer boundary's range (alpha² ≤ 4095)")
        return {"window": int(self.window), "alpha2_q": a, "alpha2_frac_bits": f, "value_scale": self.scale_}

    def apply_int(self, stream) -> np.ndarray:
        p = self.integer_params()
        q = quantize_scores(stream, p["value_scale"])
        return fpa.window_boundary_alarms(q, p["window"], p["alpha2_q"], p["alpha2_frac_bits"]).astype(bool)
