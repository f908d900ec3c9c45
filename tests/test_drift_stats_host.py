"""Drift's error statistics folded by the host build (c_patches/host/tmlr_error_stats_host.c) equal the numpy fold
(repair/drift/stats.py) — the same q and d element for element, sums up to their order and precision — over every
layout a paired tensor comes in: channel axis 1 of a conv tensor, a fully connected layer's [N, C], no channel axis,
equalization factors, int8 and uint8 integers or the integer program's float32 arrays of them, a zero point at a limit
(not counted as saturation), non-contiguous arrays; rows longer than the C's chunk of widened int8 (2,048: a sample of
3 × 37 × 29 is one chunk and part of another)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from repair.drift.stats import TensorStats
from repair.models import QuantParams
from repair.resources import host_compiler

# skipped only without a compiler: where there is one, a source that no longer compiles fails here instead of
# leaving every caller on the slower numpy path unnoticed
pytestmark = pytest.mark.skipif(host_compiler() is None, reason="no C compiler here: the host build is not available")


def _folded(quant, axis, factors, batches, use_c: bool) -> TensorStats:
    st = TensorStats(quant, axis, factors)
    if not use_c:
        st._update_in_c = lambda f, k: False  # the numpy fold
    for f, k in batches:
        st.update(f, k)
    return st


@settings(max_examples=150, deadline=None)
@given(seed=st.integers(0, 2 ** 32 - 1), shape=st.sampled_from([(4, 3, 5, 5), (7, 10), (3, 2, 9), (5, 1, 28, 28),
                                                                (2, 16, 1, 1), (2, 3, 37, 29)]),
       axis=st.sampled_from([1, None]), dtype=st.sampled_from(["int8", "uint8"]), zp_at=st.sampled_from(
           ["inside", "qmin", "qmax"]), with_factors=st.booleans(), transposed=st.booleans(),
       batches=st.integers(1, 3), codes=st.booleans())
def test_host_fold_equals_the_numpy_fold(seed, shape, axis, dtype, zp_at, with_factors, transposed, batches, codes):
    rng = np.random.default_rng(seed)
    info = np.iinfo(dtype)
    zp = {"inside": int(rng.integers(info.min + 1, info.max)), "qmin": info.min, "qmax": info.max}[zp_at]
    quant = QuantParams(float(rng.uniform(0.001, 0.3)), zp, dtype)
    factors = rng.uniform(0.25, 4.0, shape[1]).astype(np.float32) if with_factors else None
    data = []
    for _ in range(batches):
        k = rng.integers(info.min, info.max + 1, shape).astype(dtype)
        k.reshape(-1)[: k.size // 7] = info.max  # saturated values to count
        f = (quant.scale * (k.astype(np.float64) - zp) + rng.normal(0, quant.scale, shape)).astype(np.float32)
        if transposed and len(shape) == 4:  # the program may hand back non-contiguous arrays
            k = np.ascontiguousarray(k.transpose(1, 0, 2, 3)).transpose(1, 0, 2, 3)
        data.append((f, k))
    as_given = [(f, k.astype(np.float32) if codes else k) for f, k in data]  # codes: what the program hands drift
    assert TensorStats(quant, axis, factors)._update_in_c(*as_given[0])  # the C takes every one of these
    c, py = _folded(quant, axis, factors, as_given, True), _folded(quant, axis, factors, data, False)
    assert c.n == py.n and c.saturated == py.saturated and c.ch_count == py.ch_count
    assert (c.max_abs, c.f_min, c.f_max) == (py.max_abs, py.f_min, py.f_max)  # no rounding in these: equal
    for name in ("ff", "fq", "dd", "qq", "abs_sum"):
        assert getattr(c, name) == pytest.approx(getattr(py, name), rel=1e-5, abs=1e-9), name
    if axis is None:
        assert c.ch_sum is None and py.ch_sum is None
    else:
        scale = np.abs(py.ch_sum).max() + py.ch_count * quant.scale
        np.testing.assert_allclose(c.ch_sum, py.ch_sum, rtol=0, atol=1e-5 * scale)


def test_an_int16_tensor_takes_the_numpy_fold():
    """The host fold reads int8 and uint8 only: other integer arrays are folded by numpy, with the same results."""
    rng = np.random.default_rng(1)
    quant = QuantParams(0.1, 0, "int8")
    k = rng.integers(-128, 128, (3, 4, 5)).astype(np.int16)
    f = rng.normal(size=k.shape).astype(np.float32)
    a, b = TensorStats(quant, 1), TensorStats(quant, 1)
    a.update(f, k)
    b.update(f, k.astype(np.int8))
    assert a.sqnr_db == pytest.approx(b.sqnr_db, rel=1e-5) and a.saturated == b.saturated


def test_a_batch_with_nan_takes_the_numpy_fold():
    """A NaN in a batch: the sums are NaN whichever fold runs, and the rest must not depend on which did (the C's
    min/max would skip the NaN where numpy's reductions carry it)."""
    rng = np.random.default_rng(2)
    quant = QuantParams(0.1, 0, "int8")
    k = rng.integers(-128, 128, (3, 4, 5)).astype(np.int8)
    f = rng.normal(size=k.shape).astype(np.float32)
    f[1, 2, 3] = np.nan
    c, py = _folded(quant, 1, None, [(f, k)], True), _folded(quant, 1, None, [(f, k)], False)
    assert np.isnan(c.ff) and np.isnan(py.ff) and c.n == py.n
    assert (c.f_min, c.f_max, c.max_abs, c.saturated) == (py.f_min, py.f_max, py.max_abs, py.saturated)
