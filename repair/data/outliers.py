"""Isolated outlier samples in a calibration set: the sensor spike that blows up every MinMax range.

A sample's score is its largest robust z-score over the input features,
s_i = max_j |x_ij − med_j| / (1.4826 · MAD_j), features with MAD 0 left out (constant or sparse ones). Scores of
ordinary samples pile up (their 99th percentile is a few units); a glitch stands far apart. A sample is
discounted when s_i > ``RATIO`` × the 99th percentile of all scores — at most 1 % of the set (an outlier that
common is the distribution, not a glitch). The rule looks at inputs only, so it needs no labels and runs on
field data too. (Robust z-scores: Iglewicz & Hoaglin 1993; 1.4826 makes the MAD a consistent σ for normal data.)
"""

from __future__ import annotations

import numpy as np

from .calibration import CalibrationSet

RATIO = 4.0
MAX_SHARE = 0.01


def outlier_scores(x: np.ndarray) -> np.ndarray:
    """s_i for every sample of ``x`` (batch first; any feature shape)."""
    flat = np.asarray(x, np.float64).reshape(len(x), -1)
    med = np.median(flat, axis=0)
    mad = 1.4826 * np.median(np.abs(flat - med), axis=0)
    live = mad > 1e-12 * max(1.0, float(np.abs(med).max(initial=0.0)))
    if not live.any():
        return np.zeros(len(x))
    return (np.abs(flat[:, live] - med[live]) / mad[live]).max(axis=1)


def discount_outliers(data: CalibrationSet) -> tuple[CalibrationSet, list[dict]]:
    """``data`` without its isolated outlier samples, and one row per sample left out (index, score, why)."""
    if len(data) < 20:
        return data, []
    s = outlier_scores(data.x)
    bound = RATIO * float(np.percentile(s, 99))
    out = np.flatnonzero(s > bound)
    if len(out) == 0 or len(out) > MAX_SHARE * len(data):
        return data, []
    keep = np.setdiff1d(np.arange(len(data)), out)
    rows = [{"sample": int(i), "score": float(s[i]),
             "why": f"robust z-score {s[i]:.1f}, over {RATIO:g}× the set's 99th percentile ({bound / RATIO:.1f}): "
                    "an isolated spike, left out of every range and fit"} for i in out]
    return data.subset(keep, f"{data.split} without {len(out)} outlier sample(s)"), rows
