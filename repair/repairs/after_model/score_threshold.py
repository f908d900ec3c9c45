"""Static anomaly threshold refitted on the int8 model's own scores.

Alarm iff score > θ, with θ the (m+1)-th largest normal calibration score, m =
⌊FAR·n⌋: at most m of the n normal calibration scores alarm. On MLPerf Tiny's ToyCar
scores a threshold fitted on float scores for 10 % false alarms gives 49–59 % on the
full-int8 scores (shared/real/README.md); refitting on int8 scores is the repair.

Integer form: scores quantized to int16 with scale s (fitted: 4× headroom over the
largest calibration score); alarm iff q > θ_q = ⌊θ / s⌋ for q = round(score / s).
Scores that are already integers (a device's reconstruction score, ``score_scale`` given: score = q·s)
are thresholded between two levels, θ = (θ_q + ½)·s, so the float and integer decisions are one.
"""

from __future__ import annotations

import math

import numpy as np

from ...errors import DataError
from .base import Repair, check_finite_array, check_rate, register

INT16_MAX = 32767


def normal_scores(scores, y, what: str = "scores") -> np.ndarray:
    s = check_finite_array(what, scores, ndim=1)
    if y is None:
        return s
    y = np.asarray(y)
    if y.shape != s.shape:
        raise DataError(f"{len(y)} labels for {len(s)} {what}: they must match")
    normal = s[y == 0]
    if normal.size == 0:
        raise DataError(f"no normal samples (label 0) among the {len(s)} {what}: a false-alarm rate needs normal data")
    return normal


def score_scale(scores: np.ndarray) -> float:
    """int16 scale with 4× headroom over the largest calibration magnitude."""
    peak = float(np.abs(scores).max())
    return 4.0 * peak / INT16_MAX if peak > 0 else 1.0


def quantize_scores(scores, scale: float) -> np.ndarray:
    return np.clip(np.rint(np.asarray(scores, np.float64) / scale), -INT16_MAX - 1, INT16_MAX).astype(np.int16)


@register
class ScoreThreshold(Repair):
    name = "score_threshold"
    fitted_attributes = ("threshold_", "scale_")

    def __init__(self, target_far: float = 0.1, score_scale: float | None = None):
        self.target_far = target_far
        self.score_scale = score_scale

    def fit(self, scores, y=None) -> "ScoreThreshold":
        far = check_rate("target false-alarm rate", self.target_far)
        s = np.sort(normal_scores(scores, y))[::-1]
        m = int(math.floor(far * len(s)))
        self.threshold_ = float(s[m]) if m < len(s) else float(s[-1])
        if self.score_scale is None:
            self.scale_ = score_scale(s)
        else:  # integer scores: the threshold halfway to the next level
            self.scale_ = float(self.score_scale)
            self.threshold_ = (float(quantize_scores(self.threshold_, self.scale_)) + 0.5) * self.scale_
        return self

    def apply(self, scores) -> np.ndarray:
        self.check_fitted()
        return np.asarray(scores, np.float64) > self.threshold_

    def integer_params(self) -> dict:
        self.check_fitted()
        return {"score_scale": self.scale_, "threshold_q": int(math.floor(self.threshold_ / self.scale_))}

    def apply_int(self, scores) -> np.ndarray:
        """Alarms from int16-quantized scores, as the C comparison computes them."""
        p = self.integer_params()
        return quantize_scores(scores, p["score_scale"]).astype(np.int64) > p["threshold_q"]
