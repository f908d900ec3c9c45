"""Bit-exact Python twins of the C fixed-point shims in ``c_patches/``.

Every function here computes exactly the integers its C counterpart computes. Arrays
are numpy int64 holding int32 (or narrower) values, so intermediate products that C
forms in int64 never overflow here either; where C relies on two's-complement
wrap-around the defined result is modelled explicitly.

Primitives follow gemmlowp's fixed-point library as used by TensorFlow Lite Micro's
reference kernels and CMSIS-NN (``arm_nnsupportfunctions.h``), which compute the same
integers ("bit-accurate" with TFLM, in CMSIS-NN's words):

* ``sat_rounding_doubling_high_mul(a, b)`` = ⌊a·b / 2^31 + ½⌋ (ties toward +∞),
  saturating the one overflow case a = b = −2^31 (ARM ``VQRDMULH``);
* ``rounding_divide_by_pot(x, e)`` = round(x / 2^e), ties away from zero;
* ``exp_on_negative_values(a)``: e^(a / 2^26) for a ≤ 0 in Q5.26, result in Q0.31;
* ``one_over_one_plus_x_for_x_in_0_1(x)``: 1/(1 + x) by three Newton–Raphson steps.
"""

from __future__ import annotations

import math

import numpy as np

Q31_MAX = (1 << 31) - 1
Q31_MIN = -(1 << 31)
SOFTMAX_INPUT_INTEGER_BITS = 5  # the exp input is Q5.26 (TFLM kScaledDiffIntegerBits)
SOFTMAX_ACCUM_BITS = 12  # sum of exps in Q12.19 (TFLM kAccumulationIntegerBits)


class ParamError(ValueError):
    """A shim parameter outside the range its C form accepts; ``status`` is the ``tmlr_status`` C returns for it
    (1 TMLR_ERR_ARG, 2 TMLR_ERR_RANGE), checked in the same order as the C."""

    def __init__(self, message: str, status: int = 1):
        super().__init__(message)
        self.status = status


def _i64(x) -> np.ndarray:
    return np.asarray(x, dtype=np.int64)


# --------------------------------------------------------------------------- primitives

def sat_rounding_doubling_high_mul(a, b) -> np.ndarray:
    """(a·b + nudge) / 2^31 truncated toward zero, nudge = 2^30 (or 1 − 2^30 when signs differ).

    That is ⌊a·b / 2^31 + ½⌋: ties round toward +∞ (−0.5 → 0, 0.5 → 1), as VQRDMULH.
    Saturates to 2^31 − 1 for a = b = −2^31. C: ``tmlr_mul_sat_q31``.
    """
    a, b = _i64(a), _i64(b)
    prod = a * b
    nudge = np.where((a < 0) ^ (b < 0), 1 - (1 << 30), 1 << 30)
    m = prod + nudge
    res = np.where(m >= 0, m >> 31, -((-m) >> 31))  # C integer division truncates toward zero
    return np.where((a == Q31_MIN) & (b == Q31_MIN), Q31_MAX, res)


def rounding_divide_by_pot(x, exponent) -> np.ndarray:
    """round(x / 2^exponent), ties away from zero; exponent in [0, 62] (for |x| < 2^31 and exponent ≥ 32 the
    result is 0, as the C returns). C: ``tmlr_div_pot_q31``."""
    x, e = _i64(x), _i64(exponent)
    mask = (np.int64(1) << e) - 1
    remainder = x & mask
    result = x >> e
    threshold = (mask >> 1) + (result < 0)
    return result + (remainder > threshold)


def saturating_left_shift(x, exponent) -> np.ndarray:
    """x · 2^exponent saturated to int32 (gemmlowp SaturatingRoundingMultiplyByPOT, exponent ≥ 0)."""
    x, e = _i64(x), _i64(exponent)
    thresh = (np.int64(1) << (31 - e)) - 1
    return np.where(x > thresh, Q31_MAX, np.where(x < -thresh, Q31_MIN, x << e))


def exp_on_negative_values(a) -> np.ndarray:
    """e^(a / 2^26) for a ≤ 0 (Q5.26) as Q0.31 (gemmlowp exp_on_negative_values, 5 integer bits).

    exp(x) on [−1/4, 0) by a 4th-order Taylor polynomial around −1/8, then one multiply by
    e^(−2^k/4) for every set bit k of the remaining multiple of 1/4.
    """
    a = _i64(a)
    shift = 24
    val_mod_minus_quarter = (a & ((1 << shift) - 1)) - (1 << shift)
    remainder = val_mod_minus_quarter - a
    x = (val_mod_minus_quarter << 5) + (1 << 28)
    x2 = sat_rounding_doubling_high_mul(x, x)
    x3 = sat_rounding_doubling_high_mul(x2, x)
    x4_over_4 = rounding_divide_by_pot(sat_rounding_doubling_high_mul(x2, x2), 2)
    poly = rounding_divide_by_pot(sat_rounding_doubling_high_mul(x4_over_4 + x3, 715827883) + x2, 1)
    result = 1895147668 + sat_rounding_doubling_high_mul(1895147668, x + poly)
    for k, mult in enumerate((1672461947, 1302514674, 790015084, 290630308, 39332535, 720401, 242)):
        bit = (remainder & (1 << (shift + k))) != 0
        result = np.where(bit, sat_rounding_doubling_high_mul(result, mult), result)
    return np.where(a == 0, Q31_MAX, result)


def one_over_one_plus_x_for_x_in_0_1(x) -> np.ndarray:
    """1 / (1 + x) for x in [0, 1), both Q0.31: three Newton–Raphson steps on the half denominator (gemmlowp)."""
    x = _i64(x)
    s = x + Q31_MAX
    half_denominator = (s + 1) // 2  # s ≥ 0 here; C: (s + 1) / 2 truncates, equal for s ≥ 0
    r = 1515870810 + sat_rounding_doubling_high_mul(half_denominator, -1010580540)
    one_q29 = 1 << 29
    for _ in range(3):
        r = r + saturating_left_shift(
            sat_rounding_doubling_high_mul(r, one_q29 - sat_rounding_doubling_high_mul(half_denominator, r)), 2)
    return saturating_left_shift(r, 1)


def count_leading_zeros_u32(x) -> np.ndarray:
    """Leading zeros of x as uint32. C: ``__builtin_clz`` / ARM ``CLZ`` (x = 0 gives 32)."""
    x = _i64(x) & 0xFFFFFFFF
    _, bit_length = np.frexp(x.astype(np.float64))  # exact: every uint32 is a float64
    return np.where(x == 0, 32, 32 - bit_length).astype(np.int64)


# --------------------------------------------------------------------------- multipliers

def quantize_multiplier(real: float) -> tuple[int, int]:
    """real ≈ M · 2^(shift − 31) with M in [2^30, 2^31): TFLite ``QuantizeMultiplier``.

    frexp gives real = q · 2^shift, q in [0.5, 1); M = round(q · 2^31) (ties away from
    zero, as TfLiteRound); M = 2^31 is halved with shift + 1. Returns (M, shift);
    (0, 0) for real = 0.
    """
    if real == 0.0:
        return 0, 0
    if not math.isfinite(real) or real < 0:
        raise ValueError(f"multiplier must be finite and non-negative, got {real}")
    q, shift = math.frexp(real)
    q_fixed = int(math.floor(abs(q) * (1 << 31) + 0.5))
    if q_fixed == (1 << 31):
        q_fixed //= 2
        shift += 1
    if shift < -31:
        return 0, 0
    return q_fixed, shift


def requantize(x, multiplier: int, shift: int) -> np.ndarray:
    """x · M · 2^(shift − 31) rounded as CMSIS-NN ``arm_nn_requantize`` (double rounding).

    Left shift max(shift, 0) before the doubling high multiply (saturated to int32, where CMSIS-NN would
    overflow), rounding right shift max(−shift, 0) after. C: ``tmlr_requantize``.
    """
    left, right = max(shift, 0), max(-shift, 0)
    return rounding_divide_by_pot(sat_rounding_doubling_high_mul(saturating_left_shift(x, left), multiplier), right)


# --------------------------------------------------------------------------- softmax

def softmax_params(beta: float, input_scale: float) -> tuple[int, int, int]:
    """(multiplier, left_shift, diff_min) of the int8 softmax, as TFLM's Prepare computes them.

    real = min(β · s_in · 2^26, 2^31 − 1) (the exp input is Q5.26); (M, shift) =
    ``quantize_multiplier(real)`` with shift ≥ 0; diff_min = −floor(31 · 2^26 / 2^shift)
    (TFLM ``CalculateInputRadius``). A temperature T folds in as β' = β / T.
    """
    real = min(beta * input_scale * (1 << (31 - SOFTMAX_INPUT_INTEGER_BITS)), float(Q31_MAX))
    mult, shift = quantize_multiplier(real)
    if shift < 0:
        raise ValueError(f"softmax input multiplier {real:.3g} < 1: β·scale = {beta * input_scale:.3g} is too small "
                         "for the int8 softmax (TFLM rejects it too)")
    radius = ((1 << SOFTMAX_INPUT_INTEGER_BITS) - 1) * (1 << (31 - SOFTMAX_INPUT_INTEGER_BITS)) / (1 << shift)
    return mult, shift, -int(math.floor(radius))


SOFTMAX_MAX_ROW = 4095  # 4095 exp terms of at most 2^19 (Q12.19) fit the int32 sum; 4096 equal inputs overflow


def check_softmax_params(row_size: int, mult: int, shift: int, diff_min: int) -> None:
    """ParamError unless the int8 softmax's parameters are in the ranges its C form accepts (``tmlr.h``):
    mult in [0, 2^31), shift in [0, 30], diff_min ≤ 0 with max(diff_min, −255)·2^shift ≥ −2^31 (every scaled
    difference fits int32), then row_size 1..4095 (status 2 above it). TFLM's own parameters always are."""
    if row_size < 1 or not (0 <= mult <= Q31_MAX and 0 <= shift <= 30 and diff_min <= 0):
        raise ParamError(f"softmax row size {row_size}, multiplier {mult}, shift {shift}, diff_min {diff_min}: "
                         "need row size ≥ 1, multiplier in [0, 2^31), shift in [0, 30], diff_min ≤ 0")
    if max(diff_min, -255) * (1 << shift) < Q31_MIN:
        raise ParamError(f"softmax diff_min {diff_min} with shift {shift}: the scaled difference overflows int32")
    if row_size > SOFTMAX_MAX_ROW:
        raise ParamError(f"softmax row size {row_size} above {SOFTMAX_MAX_ROW}: the int32 sum of exps overflows", 2)


def _softmax_rows(x: np.ndarray, mult: int, shift: int, diff_min: int, out_bits: int) -> np.ndarray:
    x = _i64(x)
    if x.ndim != 2:
        raise ValueError("softmax input must be [rows, classes]")
    check_softmax_params(x.shape[1], mult, shift, diff_min)
    diff = x - x.max(axis=1, keepdims=True)
    ok = diff >= diff_min
    scaled = sat_rounding_doubling_high_mul(np.where(ok, diff, 0) * (1 << shift), mult)
    e = exp_on_negative_values(scaled)
    sum_exp = np.where(ok, rounding_divide_by_pot(e, SOFTMAX_ACCUM_BITS), 0).sum(axis=1, keepdims=True)
    headroom = count_leading_zeros_u32(sum_exp)
    # C: (int32)((uint32)sum << headroom) − INT32_MIN, i.e. the bits below the leading one
    x_shifted = ((sum_exp << headroom) & 0xFFFFFFFF) - (1 << 31)
    scale = one_over_one_plus_x_for_x_in_0_1(x_shifted)
    bits_over_unit = SOFTMAX_ACCUM_BITS - headroom + (31 - out_bits)
    lo, hi = -(1 << (out_bits - 1)), (1 << (out_bits - 1)) - 1
    res = rounding_divide_by_pot(sat_rounding_doubling_high_mul(scale, e), bits_over_unit) + lo
    return np.where(ok, np.clip(res, lo, hi), lo)


def softmax_s8(x, mult: int, shift: int, diff_min: int) -> np.ndarray:
    """int8 logits → int8 probabilities (scale 1/256, zero point −128), TFLM / CMSIS-NN arithmetic.

    C: ``tmlr_softmax_s8``. Same integers as ``arm_softmax_s8`` and TFLM's reference int8 Softmax.
    """
    return _softmax_rows(x, mult, shift, diff_min, 8).astype(np.int8)


def softmax_s8_s16(x, mult: int, shift: int, diff_min: int) -> np.ndarray:
    """int8 logits → int16 probabilities (scale 1/65536, zero point −32768), as ``arm_softmax_s8_s16``.

    For false-accept targets below what 1/256 steps resolve. C: ``tmlr_softmax_s8_s16``.
    """
    return _softmax_rows(x, mult, shift, diff_min, 16).astype(np.int16)


# --------------------------------------------------------------------------- decisions

AFFINE_MAX_SHIFT = 23  # |x − zp| ≤ 255 and 255·2^23 < 2^31: the requantize left shift never saturates
AFFINE_MAX_OFFSET = 1 << 24


def check_affine_params(in_zero_point: int, multipliers, shifts, offsets, out_zero_point: int) -> None:
    """ParamError unless the per-class affine's parameters are in the ranges its C form accepts (``tmlr.h``):
    zero points in [−128, 127], |M| < 2^31, shift in [−31, 23], |offset| ≤ 2^24, one of each per class."""
    k = len(multipliers)
    if k < 1 or len(shifts) != k or len(offsets) != k:
        raise ParamError(f"affine: {len(multipliers)} multipliers, {len(shifts)} shifts, {len(offsets)} offsets")
    if not (-128 <= in_zero_point <= 127 and -128 <= out_zero_point <= 127):
        raise ParamError(f"affine zero points {in_zero_point}, {out_zero_point} outside [-128, 127]")
    for m, s, b in zip(multipliers, shifts, offsets):
        if not (-Q31_MAX <= m <= Q31_MAX and -31 <= s <= AFFINE_MAX_SHIFT and abs(b) <= AFFINE_MAX_OFFSET):
            raise ParamError(f"affine multiplier {m}, shift {s}, offset {b} outside |M| < 2^31, "
                             f"[-31, {AFFINE_MAX_SHIFT}], |offset| ≤ 2^24")


def class_scale_offset_s8(x, in_zero_point: int, multipliers, shifts, offsets, out_zero_point: int) -> np.ndarray:
    """Per-class affine correction of int8 logits: y_k = clamp(requantize(x_k − zp_in, M_k, s_k) + b_k + zp_out).

    The integer form of vector scaling z'_k = a_k z_k + b_k (and of a plain logit offset,
    a_k = 1): M_k, s_k = quantize_multiplier(a_k · s_in / s_out), b_k = round(b_k / s_out).
    Parameters as ``check_affine_params``. C: ``tmlr_class_affine_s8``.
    """
    check_affine_params(in_zero_point, multipliers, shifts, offsets, out_zero_point)
    x = _i64(x) - in_zero_point
    out = np.empty_like(x)
    for k, (m, s, b) in enumerate(zip(multipliers, shifts, offsets)):
        out[:, k] = requantize(x[:, k], int(m), int(s)) + int(b) + out_zero_point
    return np.clip(out, -128, 127).astype(np.int8)


PRE_SHIM_MAX_SHIFT = 5  # |raw + offset| < 2^15 + 2^24 < 2^25 and 2^25·2^5 ≤ 2^30: the left shift never saturates


def input_pre_shim_s8(raw, multipliers, shifts, offsets, zero_point: int) -> np.ndarray:
    """The input pre-shim on integer sensor readings: q_j = clamp(zp + requantize(r_j + o_j, M_j, s_j), −128, 127).

    Integer form of x'_j = x_j·a_j + b_j then the input quantization q = round(x'/s) + zp, for readings r_j with
    x_j = r_j·lsb_j: o_j = round(b_j / (lsb_j·a_j)), (M_j, s_j) = quantize_multiplier(lsb_j·a_j / s)
    (``input_pre_shim_params``). ``raw`` int16 [n, F]; |M| < 2^31, shift in [−31, 5], |offset| ≤ 2^24.
    C: ``tmlr_input_pre_shim_s16``.
    """
    check_pre_shim_params(multipliers, shifts, offsets, zero_point)
    r = _i64(raw)
    if r.ndim != 2 or r.shape[1] != len(multipliers):
        raise ParamError(f"pre-shim: {len(multipliers)} features' parameters for inputs of shape {list(r.shape)}")
    out = np.empty_like(r)
    for j, (m, sh, o) in enumerate(zip(multipliers, shifts, offsets)):
        out[:, j] = requantize(r[:, j] + int(o), int(m), int(sh)) + zero_point
    return np.clip(out, -128, 127).astype(np.int8)


def check_pre_shim_params(multipliers, shifts, offsets, zero_point: int) -> None:
    """ParamError unless the pre-shim's parameters are in the ranges its C form accepts (``tmlr.h``)."""
    if not 1 <= len(multipliers) == len(shifts) == len(offsets):
        raise ParamError(f"pre-shim: {len(multipliers)} multipliers, {len(shifts)} shifts, {len(offsets)} offsets")
    for m, sh, o in zip(multipliers, shifts, offsets):
        if not (-Q31_MAX <= m <= Q31_MAX and -31 <= sh <= PRE_SHIM_MAX_SHIFT and abs(o) <= AFFINE_MAX_OFFSET):
            raise ParamError(f"pre-shim multiplier {m}, shift {sh}, offset {o} outside |M| < 2^31, "
                             f"[-31, {PRE_SHIM_MAX_SHIFT}], |offset| ≤ 2^24")
    if not -128 <= zero_point <= 127:
        raise ParamError(f"pre-shim zero point {zero_point} outside [-128, 127]")


def input_pre_shim_params(a, b, input_scale: float, lsb) -> dict:
    """The pre-shim's integer parameters for x'_j = x_j·a_j + b_j and readings x_j = r_j·lsb_j (lsb 1: the
    readings are the model's units)."""
    a, b = np.asarray(a, np.float64).reshape(-1), np.asarray(b, np.float64).reshape(-1)
    lsb = np.broadcast_to(np.asarray(lsb, np.float64), a.shape)
    pairs = [quantize_multiplier(abs(float(v))) for v in lsb * a / input_scale]
    return {"multipliers": [int(m) * (1 if v >= 0 else -1) for (m, _), v in zip(pairs, a)],
            "shifts": [int(sh) for _, sh in pairs], "offsets": [int(v) for v in np.rint(b / (lsb * a))]}


def threshold_decide(p, thresholds) -> np.ndarray:
    """Class whose score reaches its threshold, the highest score winning (lowest index on ties); −1 if none.

    ``p`` int8 or int16 scores [n, K]; ``thresholds`` integers in the same units.
    C: ``tmlr_threshold_decide_s8``.
    """
    p = _i64(p)
    th = _i64(thresholds)
    passed = p >= th[None, :]
    masked = np.where(passed, p, np.iinfo(np.int64).min)
    best = masked.argmax(axis=1)
    return np.where(passed.any(axis=1), best, -1)


# --------------------------------------------------------------------------- keyword-spotting stream

def recognize_averages(scores, times_ms, window_ms: int, min_count: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The smoothing half of ``recognize_commands``: per step, whether a decision is made (enough results over
    enough time), the top label and its integer average score Σ (s + 128) // count (first label on ties)."""
    s = np.asarray(scores, np.int64) + 128
    t = np.asarray(times_ms, np.int64)
    first = np.searchsorted(t, t - window_ms, side="left")
    count = np.arange(len(t)) - first + 1
    csum = np.vstack([np.zeros((1, s.shape[1]), np.int64), np.cumsum(s, axis=0)])
    avg = (csum[1:] - csum[first]) // count[:, None]
    valid = (count >= min_count) & (t - t[first] >= window_ms // 4)
    label = avg.argmax(axis=1)
    return valid, label, avg[np.arange(len(t)), label]


def recognize_commands(scores, times_ms, window_ms: int, threshold: int, suppression_ms: int, min_count: int,
                       silence_class: int = 0, averages=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """TFLite Micro micro_speech ``RecognizeCommands::ProcessLatestResults``, step by step, in integers.

    Per step t (int8 posteriors ``scores[t]``, increasing ``times_ms[t]``): drop results older than
    t − window_ms; with fewer than ``min_count`` results or a span under window_ms / 4, no decision;
    else avg_k = Σ (score_k + 128) / count (integer division), top = argmax (first on ties, scores > 0);
    a new command fires when avg_top > threshold (0–255 scale) and the label differs from the last
    fired or more than ``suppression_ms`` passed since it (no suppression after ``silence_class``).
    Returns (fired bool[T], label int[T], average top score int[T]; label −1 where no decision).
    ``averages``: ``recognize_averages(scores, times_ms, window_ms, min_count)`` if already computed.
    """
    valid, label, score = averages or recognize_averages(scores, times_ms, window_ms, min_count)
    t = np.asarray(times_ms, np.int64)
    fired = np.zeros(len(t), bool)
    prev_label, prev_time = silence_class, None
    for i in np.flatnonzero(valid & (score > threshold)):  # only these steps can fire (and change state)
        top = label[i]
        since = None if prev_label == silence_class or prev_time is None else t[i] - prev_time
        if top != prev_label or since is None or since > suppression_ms:
            fired[i] = True
            prev_label, prev_time = top, t[i]
    label = np.where(valid, label, -1)
    return fired, label, score
