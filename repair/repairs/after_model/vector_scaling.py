"""Vector scaling (Guo et al. 2017, §4.2): z'_k = a_k·z_k + b_k, per-class scale and offset.

Corrects class-bias drift that one temperature cannot (an int8 model that favours one
class). Fitted on L(a, b) = mean NLL + λ·(Σ(a_k − 1)² + Σb_k²); the ridge keeps it near
the identity on small calibration sets (matrix scaling overfits: Guo et al. report
25.49 % ECE on CIFAR-100). Kept by the caller only if holdout NLL improves.

L is convex (the NLL of logits affine in θ = (a, b)) and, with the ridge, strictly so: damped Newton
(``_newton``) reaches its minimum to machine precision in a handful of steps, without scipy.optimize
(0.3 s to import, more than the fit).

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
        z, y = check_logits_and_labels(logits, y)
        theta = _newton(z, y, self.l2)
        k = z.shape[1]
        self.scale_ = theta[:k].tolist()
        self.offset_ = theta[k:].tolist()
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


def _loss_gradient_hessian(z: np.ndarray, y: np.ndarray, l2: float, theta: np.ndarray):
    """L(θ), ∇L and ∇²L at θ = (a, b) for z' = a·z + b, p = softmax(z').

    With g = (p − onehot(y)) / n: ∂L/∂a_k = Σ_i g_ik z_ik + 2λ(a_k − 1), ∂L/∂b_k = Σ_i g_ik + 2λ b_k. The NLL's
    Hessian in z' is diag(p) − ppᵀ per sample, and ∂z'_k/∂a_k = z_k, ∂z'_k/∂b_k = 1, so with u = p·z:
    H_aa = diag(mean p z²) − mean uuᵀ, H_ab = diag(mean p z) − mean u pᵀ, H_bb = diag(mean p) − mean ppᵀ, + 2λI.
    """
    n, k = z.shape
    a, b = theta[:k], theta[k:]
    s = z * a + b
    s -= s.max(axis=1, keepdims=True)
    e = np.exp(s)
    total = e.sum(axis=1, keepdims=True)
    p = e / total
    rows = np.arange(n)
    nll = float(np.mean(np.log(total[:, 0]) - s[rows, y]))
    loss = nll + l2 * float(((a - 1.0) ** 2).sum() + (b ** 2).sum())
    g = p.copy()
    g[rows, y] -= 1.0
    g /= n
    grad = np.concatenate([(g * z).sum(0) + 2 * l2 * (a - 1.0), g.sum(0) + 2 * l2 * b])
    u = p * z
    h_aa = np.diag((u * z).mean(0)) - u.T @ u / n
    h_ab = np.diag(u.mean(0)) - u.T @ p / n
    h_bb = np.diag(p.mean(0)) - p.T @ p / n
    hess = np.block([[h_aa, h_ab], [h_ab.T, h_bb]]) + 2 * l2 * np.eye(2 * k)
    return loss, grad, hess


def _newton(z: np.ndarray, y: np.ndarray, l2: float, max_steps: int = 100) -> np.ndarray:
    """argmin L from θ = (1, 0) (the identity): Newton steps halved until L does not rise (Armijo with c = 0,
    L convex), until the step changes θ by ≤ 1e-12 (max |θ| ∨ 1) or the decrease predicted by the step,
    ½ gᵀH⁻¹g, is below 1e-15 (machine precision of L)."""
    k = z.shape[1]
    theta = np.concatenate([np.ones(k), np.zeros(k)])
    loss, grad, hess = _loss_gradient_hessian(z, y, l2, theta)
    for _ in range(max_steps):
        step = np.linalg.solve(hess, grad)
        if 0.5 * float(grad @ step) <= 1e-15 * max(1.0, abs(loss)):
            break
        t = 1.0
        while True:
            trial = theta - t * step
            new = _loss_gradient_hessian(z, y, l2, trial)
            if new[0] <= loss or t < 1e-10:
                break
            t *= 0.5
        done = float(np.abs(trial - theta).max()) <= 1e-12 * max(1.0, float(np.abs(theta).max()))
        theta, (loss, grad, hess) = trial, new
        if done:
            break
    return theta
