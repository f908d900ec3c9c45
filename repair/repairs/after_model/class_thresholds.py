"""Per-class decision thresholds at a target false-accept rate.

Decision: the class with the highest probability among those whose probability
reaches their own threshold θ_k; no decision (−1) if none does. θ_k is fitted on the
calibration split so that at most ⌊FAR·n_k⁻⌋ of the n_k⁻ samples of other classes
reach it: θ_k is just above the (m+1)-th largest p_k among them. This replaces one
hand-tuned global threshold (TFLM micro_speech's 200/255, MLPerf Tiny's 0.95) with one
per class, fitted.

Integer form: on int8 probabilities q (p = (q + 128)/256), θ_q = ⌈256·θ⌉ − 128, so
p ≥ θ ⇔ q ≥ θ_q for every representable p; on int16 (p = (q + 32768)/65536) the same
with 65536. ``repair.fixedpoint.threshold_decide`` is the C shim's twin.
"""

from __future__ import annotations

import math

import numpy as np

from ... import fixedpoint as fp
from .base import Repair, check_rate, register
from .temperature import check_logits_and_labels


@register
class ClassThresholds(Repair):
    name = "class_thresholds"
    fitted_attributes = ("thresholds_",)

    def __init__(self, target_far: float = 0.01):
        self.target_far = target_far

    def fit(self, probs, y) -> "ClassThresholds":
        far = check_rate("target false-accept rate", self.target_far)
        p, y = check_logits_and_labels(probs, y)
        th = []
        for k in range(p.shape[1]):
            neg = np.sort(p[y != k, k])[::-1]
            m = int(math.floor(far * len(neg)))
            th.append(float(np.nextafter(neg[m], np.inf)) if m < len(neg) else 0.0)
        self.thresholds_ = th
        return self

    def apply(self, probs) -> np.ndarray:
        """Decisions: class id, or −1 where no class reaches its threshold (float reference)."""
        self.check_fitted()
        p = np.asarray(probs, np.float64)
        th = np.asarray(self.thresholds_)
        passed = p >= th
        best = np.where(passed, p, -np.inf).argmax(axis=1)
        return np.where(passed.any(axis=1), best, -1)

    def integer_params(self, bits: int = 8) -> dict:
        self.check_fitted()
        full, zp = 1 << bits, -(1 << (bits - 1))
        th = [min(max(int(math.ceil(t * full)) + zp, zp), full + zp - 1) for t in self.thresholds_]
        return {"thresholds_q": th, "bits": bits}

    def apply_int(self, q_probs, bits: int = 8) -> np.ndarray:
        return fp.threshold_decide(q_probs, self.integer_params(bits)["thresholds_q"])
