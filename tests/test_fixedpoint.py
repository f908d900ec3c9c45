"""repair.fixedpoint: the integer references, checked against golden data and against their definitions."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from repair import fixedpoint as fp
from repair import fixedpoint_anomaly as fpa

int32s = st.integers(min_value=fp.Q31_MIN, max_value=fp.Q31_MAX)


def _round_half_away(fr: Fraction) -> int:
    n = math.floor(abs(fr) + Fraction(1, 2))
    return n if fr >= 0 else -n


def test_softmax_s8_matches_cmsis_nn_golden_vector():
    """CMSIS-NN unit-test data (generated with TFLite): mult 1077952576, shift 23, diff_min −248."""
    out = fp.softmax_s8(np.array([[-80, -48, 16, 0, -96]]), 1077952576, 23, -248)
    assert out.tolist() == [[-128, -125, 56, -60, -128]]


def test_softmax_params_reproduce_the_golden_parameters():
    assert fp.softmax_params(1.0, 16 / 255) == (1077952576, 23, -248)


@settings(max_examples=2000, deadline=None)
@given(int32s, int32s)
def test_doubling_high_mul_is_rounded_product(a, b):
    """⌊a·b/2^31 + ½⌋: ties go toward +∞ (gemmlowp's nudge), not away from zero."""
    got = int(fp.sat_rounding_doubling_high_mul(a, b))
    if a == b == fp.Q31_MIN:
        assert got == fp.Q31_MAX
    else:
        assert got == math.floor(Fraction(a * b, 1 << 31) + Fraction(1, 2))


def test_doubling_high_mul_ties():
    assert fp.sat_rounding_doubling_high_mul([1, 1, 3], [-(1 << 30), 1 << 30, -(1 << 30)]).tolist() == [0, 1, -1]


@settings(max_examples=2000, deadline=None)
@given(int32s, st.integers(0, 31))
def test_rounding_divide_by_pot_is_round_half_away(x, e):
    assert int(fp.rounding_divide_by_pot(x, e)) == _round_half_away(Fraction(x, 1 << e))


def test_exp_on_negative_values_is_close_to_exp():
    a = -np.arange(0, 31 << 26, 1 << 18, dtype=np.int64)
    got = fp.exp_on_negative_values(a) / 2.0 ** 31
    want = np.exp(a / 2.0 ** 26)
    assert np.abs(got - want).max() < 5e-7  # measured 2.2e-7


def test_one_over_one_plus_x_is_close():
    x = np.arange(0, 1 << 31, 1 << 20, dtype=np.int64)
    got = fp.one_over_one_plus_x_for_x_in_0_1(x) / 2.0 ** 31
    assert np.abs(got - 1.0 / (1.0 + x / 2.0 ** 31)).max() < 1e-8


@pytest.mark.parametrize("v", [1, 2, 3, 255, 256, (1 << 31) - 1, 1 << 31, (1 << 32) - 1, (1 << 24) + 1])
def test_count_leading_zeros(v):
    assert int(fp.count_leading_zeros_u32(np.array([v]))[0]) == 32 - v.bit_length()


@pytest.mark.parametrize("real,expect", [(0.5, (1 << 30, 0)), (1.0, (1 << 30, 1)), (0.75, (3 << 29, 0)),
                                         (1 - 1e-12, (1 << 30, 1)), (0.0, (0, 0))])
def test_quantize_multiplier(real, expect):
    assert fp.quantize_multiplier(real) == expect


@pytest.mark.parametrize("scale", [0.02, 0.0625, 0.1, 0.3])
def test_softmax_s8_within_one_step_of_exact_softmax(scale):
    rng = np.random.default_rng(0)
    x = rng.integers(-128, 128, (4000, 12))
    x[:5] = [[127] * 12, [-128] * 12, [127] + [-128] * 11, [0] * 12, list(range(-128, 128, 22))[:12]]
    m, s, d = fp.softmax_params(1.0, scale)
    q = fp.softmax_s8(x, m, s, d).astype(int)
    z = scale * x
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    assert np.abs(q - np.clip(np.round(p * 256) - 128, -128, 127)).max() <= 1
    q16 = fp.softmax_s8_s16(x, m, s, d).astype(int)
    assert np.abs(q16 - np.clip(np.round(p * 65536) - 32768, -32768, 32767)).max() <= 2


def test_temperature_fold_flattens_or_sharpens():
    x = np.random.default_rng(1).integers(-128, 128, (500, 5))
    tops = []
    for t in (0.5, 1.0, 2.0, 4.0):
        m, s, d = fp.softmax_params(1.0 / t, 0.1)
        tops.append(fp.softmax_s8(x, m, s, d).max(axis=1).astype(int))
    for hot, cool in zip(tops, tops[1:]):
        assert (hot >= cool).all()


def test_threshold_decide_ties_and_none():
    p = np.array([[10, 10, -128], [-100, -100, -100], [5, 20, 30]])
    assert fp.threshold_decide(p, [0, 0, 100]).tolist() == [0, -1, 1]


def test_class_scale_offset_identity_and_saturation():
    x = np.arange(-128, 128).reshape(-1, 1)
    ident = fp.class_scale_offset_s8(x, 3, [1 << 30], [1], [0], 3)
    assert (ident == x).all()
    doubled = fp.class_scale_offset_s8(x, 0, [1 << 30], [2], [0], 0)
    assert doubled.min() == -128 and doubled.max() == 127


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(-32768, 32767), min_size=3, max_size=60), st.integers(2, 8), st.integers(1, 3000))
def test_window_boundary_is_the_exact_rational_test(xs, n, a2):
    """(N·x − S)²·2^F > A·(N·Q − S²) is |x − mean| > α·std with α² = A/2^F, in exact arithmetic."""
    got = fpa.window_boundary_alarms(np.array(xs), n, a2, 8)
    alpha2 = Fraction(a2, 256)
    for t in range(len(xs)):
        if t < n:
            assert got[t] == 0
            continue
        w = xs[t - n:t]
        mean = Fraction(sum(w), n)
        var = Fraction(sum(v * v for v in w), n) - mean * mean
        assert bool(got[t]) == ((xs[t] - mean) ** 2 > alpha2 * var)


def test_batched_requantize_paths_equal_the_twin():
    from repair.program.requantize import requantize_array, requantize_float

    """requantize_array (int64, per-channel broadcast) and requantize_float (float64 where exact) give the same
    integers as requantize, the C twin, over the whole int32 input range and every shift."""
    rng = np.random.default_rng(11)
    for trial in range(60):
        x = rng.integers(fp.Q31_MIN, fp.Q31_MAX, 20000, endpoint=True)
        x[:5] = [fp.Q31_MIN, fp.Q31_MAX, 0, 1, -1]
        m = int(rng.integers(fp.Q31_MIN, fp.Q31_MAX, endpoint=True)) if trial % 4 else fp.Q31_MIN
        s = int(rng.integers(-31, 31))
        want = fp.requantize(x, m, s)
        np.testing.assert_array_equal(requantize_array(x, m, s), want)
        small = x >> int(rng.integers(10, 31))  # inside the float path's exact range (|x·2^s| < 2^22)
        got = requantize_float(small.astype(np.float64), m, min(s, 0))
        np.testing.assert_array_equal(got, fp.requantize(small, m, min(s, 0)))
    assert requantize_float(np.array([float(1 << 22)]), 1 << 30, 0) is None  # refuses where it would round
    # ties of both roundings (multipliers with few bits make x·M land on exact halves), per channel on the leading
    # axis as the program applies them, with and without a stated bound
    x = np.arange(-5000, 5001, dtype=np.int64)
    for m in (1 << 30, 1 << 29, 3 << 28, -(1 << 30), fp.Q31_MAX, fp.Q31_MIN):
        shifts = np.arange(-12, 1)
        want = np.stack([fp.requantize(x, m, int(s)) for s in shifts])
        xs = np.broadcast_to(x.astype(np.float64), (len(shifts), len(x)))
        for bound in (None, 5000.0):
            got = requantize_float(xs, np.full((len(shifts), 1), m), shifts[:, None], bound)
            np.testing.assert_array_equal(got, want)


def test_fast_requantization_equals_the_twin_next_to_every_rounding_boundary(monkeypatch):
    """requantize_fast (float32 or float64 arithmetic, the elements next to a rounding boundary recomputed in int64)
    gives clamp(z + requantize(acc)) exactly: int32 accumulators (float32: below 2^24, where they are exact) up to
    its stated bound in both float types, multipliers with ties (powers of two: acc·M lands on exact halves of both
    roundings) and random ones, right shifts 0..31 (both ways of taking the sign term) and left shifts without
    saturation, per tensor and per channel, outputs far beyond the int8 range (clamped); the boundary elements are
    really taken (a t just below an integer is the case float32 gets wrong)."""
    from repair.program import requantize as rq

    recomputed = []
    exact = rq.requantize_array
    monkeypatch.setattr(rq, "requantize_array", lambda a, m, s: recomputed.append(len(a)) or exact(a, m, s))
    rng = np.random.default_rng(21)
    taken = 0
    for trial in range(200):
        dtype = (np.float32, np.float64)[trial % 2]
        c = 1 if trial % 3 == 0 else 7
        s = rng.integers(-31, 1, c) if trial % 5 else rng.integers(0, 3, c)
        # accumulators whose outputs reach a few times the int8 range (as a layer's do), or (every fourth trial)
        # hundreds of times it, where the error bound's cap at |a·S| = 512 matters: int32 (the device's), and for
        # float32 below 2^24 (exact sums)
        reach = 16 if trial % 4 == 1 else 10
        top = 1 << int(min(-s.min() + reach, 22 if dtype is np.float32 else 29))
        acc = rng.integers(-top, top, (50, c, 30)).astype(np.int64)
        acc[0, :, :5] = [[0, 1, -1, top - 1, -top]] * c
        m = rng.choice([1 << 30, 1 << 29, 3 << 28, fp.Q31_MAX, *rng.integers(1 << 28, fp.Q31_MAX, 4)], c)
        folded = rng.integers(-top, top, c) if c > 1 else None
        a = acc + (0 if folded is None else folded[None, :, None])  # below 2^23 (float32), 2^30 (float64)
        bound = float(np.abs(a).max())
        p = {"mult": m, "shift": s, "out_zp": int(rng.integers(-128, 128)), "act_min": -128, "act_max": 127}
        if trial % 7 == 0:
            p["act_min"], p["act_max"] = p["out_zp"], 127  # a fused ReLU
        got = rq.requantize_fast(a.astype(dtype), p, bound)
        if got is None:  # only where float32's error bound is too wide (accumulators ≫ output step)
            assert dtype is np.float32 and trial % 5
            continue
        taken += 1
        want = np.stack([fp.requantize(a[:, k], int(m[k]), int(s[k])) for k in range(c)], axis=1) + p["out_zp"]
        np.testing.assert_array_equal(got, np.clip(want, p["act_min"], p["act_max"]))
    assert taken > 120 and sum(recomputed) > 1000  # the boundary elements were recomputed, and equal


def test_add_input_rescale_equals_the_twin_on_every_int8_value():
    """The float path of TFLM Add's input rescale, requantize((x − z)·2^20, M, s), equals the integer twin on
    every int8 x, zero points at the ends, multipliers with ties (powers of two) and random ones, every s ≤ 0."""
    from repair.program.ir import ADD_LEFT_SHIFT, _add_input

    x = np.arange(-128, 128)
    rng = np.random.default_rng(5)
    for m in [1 << 30, 1 << 29, 3 << 28, fp.Q31_MAX, *rng.integers(1 << 29, fp.Q31_MAX, 40)]:
        for s in range(-25, 2):
            for z in (-128, 0, 4, 127):
                want = fp.requantize((x - z) * (1 << ADD_LEFT_SHIFT), int(m), s)
                np.testing.assert_array_equal(_add_input(x.astype(np.float32), z, int(m), s), want)


def test_recon_score_is_the_mean_squared_error_in_score_units():
    """The integer score equals round(Σ(s_in·e − s_out·f)² / (n·s)) (computed exactly with fractions of the
    float64 scales) to within one unit (the multipliers are rounded to 30 bits), for realistic scales."""
    from fractions import Fraction

    rng = np.random.default_rng(3)
    for trial in range(200):
        n = int(rng.integers(1, 700))
        s_in, s_out = (float(v) for v in rng.uniform(0.002, 0.2, 2))
        z_in, z_out = (int(v) for v in rng.integers(-128, 128, 2))
        q_in = rng.integers(-128, 128, n)
        q_out = np.clip(q_in + rng.integers(-20, 21, n), -128, 127)
        mse = float(np.mean((s_in * (q_in - z_in) - s_out * (q_out - z_out)) ** 2))
        s = max(mse, 1e-9) * float(rng.uniform(1, 400)) / 32767
        p = fpa.recon_score_params(s_in, z_in, s_out, z_out, n, s)
        got = int(fpa.recon_score_s16(q_in, q_out, p)[0])
        exact = sum((Fraction(s_in) * int(e) - Fraction(s_out) * int(f)) ** 2
                    for e, f in zip(q_in - z_in, q_out - z_out)) / (n * Fraction(s))
        want = min(int(exact + Fraction(1, 2)), 32767)
        assert abs(got - want) <= 1, (trial, got, want)
