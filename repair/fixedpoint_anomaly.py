"""Bit-exact Python twins of the C anomaly stages: the reconstruction score and the sliding-window boundary.

An autoencoder's anomaly score on the device is the mean squared reconstruction error of its int8 input
(q_in, scale s_in, zero point z_in) by its int8 output (q_out, s_out, z_out), in units of the score scale s:

    score = Σ_i (s_in·e_i − s_out·f_i)² / (n·s),   e = q_in − z_in, f = q_out − z_out,
          = a·E − b·C + c·F,  E = Σe², C = Σe·f, F = Σf²,  a = s_in²/(n·s), b = 2·s_in·s_out/(n·s), c = s_out²/(n·s).

E, C and F are exact integer sums; a, b, c become multipliers m_a, m_b, m_c over a common 2^shift, so the C
computes only integers (``tmlr_recon_score_s16``): score_q = min(round(max(m_a·E − m_b·C + m_c·F, 0) / 2^shift),
32767), rounding half up. With |e|, |f| ≤ 255 and n ≤ 32768, E, |C|, F < 2^31; with
every multiplier ≤ 2^30 each product is at most 2^30·(2^31 − 1) < 2^61 and the sum of the three magnitudes at
most 2^30·3·32768·255² < 2^63: int64 never overflows.
"""

from __future__ import annotations

import math

import numpy as np

from .fixedpoint import ParamError

MAX_ALPHA2_Q = 4095  # window boundary: A < 2^12 keeps A·(N·Q − S²) < 2^62
MAX_WINDOW = 1024
RECON_MAX_SIZE = 32768  # n·255² < 2^31
RECON_MAX_MULT = 1 << 30
RECON_MAX_SHIFT = 62
INT16_MAX = 32767


def recon_score_params(input_scale: float, input_zero_point: int, output_scale: float, output_zero_point: int,
                       size: int, score_scale: float) -> dict:
    """Integer parameters of the reconstruction score (module docstring): the largest shift ≤ 62 that keeps the
    largest multiplier ≤ 2^30. ParamError when even shift 0 cannot hold it (a score scale finer than the inputs'
    resolution allows) or when every multiplier rounds to 0."""
    n, s = int(size), float(score_scale)
    if not (1 <= n <= RECON_MAX_SIZE and s > 0 and input_scale > 0 and output_scale > 0):
        raise ParamError(f"reconstruction score: size {n} must be 1..{RECON_MAX_SIZE}, scales positive")
    a, b, c = (input_scale ** 2 / (n * s), 2 * input_scale * output_scale / (n * s), output_scale ** 2 / (n * s))
    top = max(a, b, c)
    shift = min(RECON_MAX_SHIFT, math.floor(math.log2(RECON_MAX_MULT / top)))
    while shift >= 0 and round(top * 2 ** shift) > RECON_MAX_MULT:
        shift -= 1
    if shift < 0:
        raise ParamError(f"score scale {s:g} is finer than the inputs' resolution allows (a = {top:g} > 2^30)")
    mults = [int(round(v * 2 ** shift)) for v in (a, b, c)]
    if not any(mults):
        raise ParamError(f"score scale {s:g} is so coarse that every score is 0")
    return {"input_zero_point": int(input_zero_point), "output_zero_point": int(output_zero_point), "size": n,
            "mult_ee": mults[0], "mult_ef": mults[1], "mult_ff": mults[2], "shift": int(shift), "score_scale": s}


def check_recon_score_params(p: dict) -> None:
    """ParamError (status 1, TMLR_ERR_ARG) for parameters the C refuses, in the C's order."""
    if not (1 <= p["size"] <= RECON_MAX_SIZE and -128 <= p["input_zero_point"] <= 127
            and -128 <= p["output_zero_point"] <= 127
            and all(0 <= p[k] <= RECON_MAX_MULT for k in ("mult_ee", "mult_ef", "mult_ff"))
            and 0 <= p["shift"] <= RECON_MAX_SHIFT):
        raise ParamError("reconstruction score parameters outside size 1..32768, zero points −128..127, "
                         "multipliers 0..2^30, shift 0..62")


def recon_score_s16(q_in, q_out, p: dict) -> np.ndarray:
    """int16 anomaly scores, one per row of ``q_in`` / ``q_out`` (int8, n values per row), as the C computes them.
    C: ``tmlr_recon_score_s16``."""
    check_recon_score_params(p)
    n = p["size"]
    e = np.asarray(q_in, np.int64).reshape(-1, n) - p["input_zero_point"]
    f = np.asarray(q_out, np.int64).reshape(-1, n) - p["output_zero_point"]
    acc = ((e * e).sum(axis=1) * p["mult_ee"] - (e * f).sum(axis=1) * p["mult_ef"]
           + (f * f).sum(axis=1) * p["mult_ff"])
    acc = np.maximum(acc, 0)
    sh = p["shift"]
    if sh > 0:
        acc = ((acc >> (sh - 1)) + 1) >> 1  # round half up, without the + 2^(shift−1) that could overflow
    return np.minimum(acc, INT16_MAX)


def window_boundary_alarms(x, window: int, alpha2_q: int, alpha2_frac_bits: int) -> np.ndarray:
    """Sliding-window boundary: alarm at t ≥ N iff |x_t − mean| > α·std over x_{t−N..t−1}.

    Exactly, without division or square root, with S = Σx and Q = Σx² over the window:
    (N·x_t − S)² · 2^F > A · (N·Q − S²), where α² = A / 2^F. For |x| ≤ 2^15, N ≤ 1024,
    F ≤ 8 and A ≤ 4095 both sides stay below 2^62 in int64. Returns an int8 array, 1 = alarm; the first N samples are 0
    (no full window yet). C: ``tmlr_window_boundary_s16`` (ring buffer, running sums).
    """
    x = np.asarray(x, np.int64)
    n = int(window)
    if not (0 <= alpha2_q <= MAX_ALPHA2_Q and 0 <= alpha2_frac_bits <= 8 and 2 <= n):
        raise ParamError(f"window {n}, A {alpha2_q}, F {alpha2_frac_bits} outside 2..1024, 0..4095, 0..8")
    if n > MAX_WINDOW:
        raise ParamError(f"window {n} above {MAX_WINDOW}", 2)
    alarms = np.zeros(len(x), dtype=np.int8)
    if len(x) <= n:
        return alarms
    c1 = np.concatenate([[0], np.cumsum(x)])
    c2 = np.concatenate([[0], np.cumsum(x * x)])
    t = np.arange(n, len(x))
    s = c1[t] - c1[t - n]
    q = c2[t] - c2[t - n]
    dev = n * x[t] - s
    lhs = (dev * dev) << alpha2_frac_bits  # <= 2^60
    rhs = alpha2_q * (n * q - s * s)  # < 2^12 · 2^50 = 2^62
    alarms[n:] = lhs > rhs
    return alarms


