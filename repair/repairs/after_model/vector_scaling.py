"""Vector scaling (Guo et al. 2017, §4.2): z'_k = a_k·z_k + b_k, per-class scale and offset.

Corrects class-bias drift that one temperature cannot (an int8 model that favours one
class). Fitted by L-BFGS on mean NLL + λ·(Σ(a_k − 1)² + Σb_k²); the ridge keeps it near
the identity on small calibration sets (matrix scaling overfits: Guo et al. report
25.49 % ECE on CIFAR-100). Kept by the caller only if holdout NLL improves.

Integer form (``repair.fixedpoint.class_scale_offset_s8``): int8 logits of scale s_in
are requantized per class with M_k, shift_k = quantize_multiplier(a_k·s_in/s_out) and
an int32 offset round(b_k/s_out), to int8 logits of scale s_out = s_in·max(1, max a_k);
the int8 softmax then runs with s_out.
"""

from __future__ import annotations

import numpy as np

from ... import fixedpoint as fp
from .base import Repair, register
from .temperature import check_logits_and_labels


@register
class VectorScaling(Repair):
    name = "vector_scaling"
    fitted_attributes = ("scale_", "offset_")

    def __init__(self, l2: float = 1e-3):
        self.l2 = l2

    def fit(self, logits, y) -> "VectorScaling":
        # imported here: scipy.optimize and .special take 0.3–0.5 s to import; commands that only apply a plan never fit
        from scipy.optimize import minimize
        from scipy.special import log_softmax

        z, y = check_logits_and_labels(logits, y)
        n, k = z.shape
        onehot = np.eye(k)[y]

        def loss(theta):
            a, b = theta[:k], theta[k:]
            logp = log_softmax(z * a + b, axis=1)
            p = np.exp(logp)
            nll = -(logp[np.arange(n), y]).mean()
            g = (p - onehot) / n  # d mean NLL / d z'
            reg = self.l2 * (((a - 1.0) ** 2).sum() + (b ** 2).sum())
            grad = np.concatenate([(g * z).sum(0) + 2 * self.l2 * (a - 1.0), g.sum(0) + 2 * self.l2 * b])
            return nll + reg, grad

        res = minimize(loss, np.concatenate([np.ones(k), np.zeros(k)]), jac=True, method="L-BFGS-B")
        self.scale_ = res.x[:k].tolist()
        self.offset_ = res.x[k:].tolist()
        return self

    def apply(self, logits) -> np.ndarray:
        self.check_fitted()
        return np.asarray(logits, np.float64) * np.asarray(self.scale_) + np.asarray(self.offset_)

    def integer_params(self, input_scale: float, input_zero_point: int) -> dict:
        self.check_fitted()
        a = np.asarray(self.scale_)
        out_scale = float(input_scale * max(1.0, float(np.abs(a).max())))
        mults, shifts = zip(*(fp.quantize_multiplier(abs(float(ak)) * input_scale / out_scale) for ak in a))
        signs = np.sign(a)
        mults = [int(m * s) for m, s in zip(mults, signs)]
        offsets = [int(np.clip(np.round(b / out_scale), -fp.AFFINE_MAX_OFFSET, fp.AFFINE_MAX_OFFSET)) for b in self.offset_]
        sm, ss, sd = fp.softmax_params(1.0, out_scale)
        return {"multipliers": mults, "shifts": list(shifts), "offsets": offsets, "input_zero_point": input_zero_point,
                "output_scale": out_scale, "output_zero_point": input_zero_point,
                "softmax_multiplier": sm, "softmax_shift": ss, "softmax_diff_min": sd}

    def apply_int(self, q_logits, input_scale: float, input_zero_point: int) -> np.ndarray:
        """Corrected int8 logits, then int8 probabilities, as the C shims compute them."""
        p = self.integer_params(input_scale, input_zero_point)
        corrected = fp.class_scale_offset_s8(q_logits, input_zero_point, p["multipliers"], p["shifts"], p["offsets"],
                                             p["output_zero_point"])
        return fp.softmax_s8(corrected, p["softmax_multiplier"], p["softmax_shift"], p["softmax_diff_min"])
