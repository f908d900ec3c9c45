"""The activation thresholds' error curve by the host build (c_patches/host/tmlr_quant_mse_host.c) equals the numpy
form (``thresholds._quant_mse``) for every fraction — values exactly half a step apart (a tie: either rounding leaves
the same squared error), values far outside the range (clamped at either end: a clamp dropped fails here), a range
not containing 0 (widened to it), a zero point at a limit — so the search picks the same clip."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from repair.program import host
from repair.repairs.in_model import thresholds
from repair.resources import host_compiler

pytestmark = pytest.mark.skipif(host_compiler() is None, reason="no C compiler here: the host build is not available")


def _numpy_curve(m, lo, hi):
    return np.array([thresholds._quant_mse(m, lo * f, hi * f) for f in thresholds.MSE_FRACTIONS])


@settings(max_examples=120, deadline=None)
@given(seed=st.integers(0, 2 ** 32 - 1), n=st.integers(1, 3000),
       kind=st.sampled_from(["normal", "relu", "heavy", "ties", "shifted", "constant"]),
       scale=st.sampled_from([2.0 ** -10, 1.0, 2.0 ** 5]))  # powers of two: the ties stay exact
def test_host_curve_equals_numpy(seed, n, kind, scale):
    rng = np.random.default_rng(seed)
    if kind == "normal":
        v = rng.normal(0, 1, n)
    elif kind == "relu":
        v = np.maximum(rng.normal(0, 1, n), 0)  # lo = 0: the zero point at -128
    elif kind == "heavy":
        v = rng.standard_t(1.5, n)  # outliers far beyond every clipped range
    elif kind == "shifted":
        v = rng.uniform(2, 5, n)  # a range not containing 0: widened to [0, hi]
    elif kind == "constant":
        v = np.full(n, 0.5)
    else:  # halves on the grid of the full range [-128, 127] (step 1): v / s lands exactly on .5 at fraction 1
        v = np.concatenate([[-128.0, 127.0], rng.integers(-256, 255, n) / 2.0])
    v = np.asarray(v * scale, np.float64)
    lo, hi = float(v.min()), float(v.max())
    got = thresholds._mse_curve(v, lo, hi)
    want = _numpy_curve(v, lo, hi)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-300)
    assert int(np.argmin(got)) == int(np.argmin(want))


def test_the_curve_takes_the_host_build_and_its_numpy_form_without_it(monkeypatch):
    """Both paths run: the C where the library exists (a call counted), numpy where it does not."""
    v = np.random.default_rng(1).normal(0, 1, 2000)
    calls = []
    lib = host.library()
    real = lib.tmlr_host_quant_sse

    class Counting:
        def __getattr__(self, name):
            return getattr(lib, name)

        def tmlr_host_quant_sse(self, *a):
            calls.append(a)
            return real(*a)

    monkeypatch.setattr(host, "library", lambda: Counting())
    with_c = thresholds._mse_curve(v, float(v.min()), float(v.max()))
    monkeypatch.setattr(host, "library", lambda: None)
    without = thresholds._mse_curve(v, float(v.min()), float(v.max()))
    assert len(calls) == 1
    np.testing.assert_allclose(with_c, without, rtol=1e-12)
