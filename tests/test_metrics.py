"""Metric functions: checked against scikit-learn and against their definitions."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from repair import metrics as M


def test_auroc_equals_sklearn_with_ties():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 500)
    s = np.round(rng.normal(y * 0.7, 1.0), 1)  # rounding creates ties
    assert M.auroc(s, y) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert np.isnan(M.auroc(s, np.zeros(500)))


def test_ece_by_definition_with_15_bins():
    rng = np.random.default_rng(1)
    p = rng.dirichlet(np.ones(4), 300)
    y = rng.integers(0, 4, 300)
    conf, pred = p.max(1), p.argmax(1)
    total = 0.0
    for m in range(15):
        in_bin = (conf > m / 15) & (conf <= (m + 1) / 15)
        if in_bin.any():
            total += in_bin.mean() * abs((pred[in_bin] == y[in_bin]).mean() - conf[in_bin].mean())
    assert M.ece(p, y) == pytest.approx(total, abs=1e-12)


def test_ece_small_for_a_calibrated_model_and_interval_brackets_it():
    rng = np.random.default_rng(2)
    n = 20000
    p1 = rng.uniform(0.5, 1.0, n)
    y = (rng.uniform(size=n) > p1).astype(int)  # class 0 is right with probability p1
    p = np.stack([p1, 1 - p1], 1)
    e, lo, hi = M.ece_bootstrap(p, y, n_boot=200)
    assert e < 0.02
    assert lo <= e <= hi


@pytest.mark.parametrize("kernel", ["numpy", "host C"])
@pytest.mark.parametrize("n", [300, 50_000])  # 50,000: the resamples drawn in two chunks of 40
def test_ece_bootstraps_are_each_models_bootstrap_over_the_seeds_resamples(n, kernel):
    """The per-bin sums of the resamples — from the draw counts (numpy) or draw by draw (the host build's C) — give
    what resampling each model's samples by the seed's draws and recomputing ECE gives, for every model handed in
    together."""
    from repair.program import host
    from repair.resources import host_compiler

    if kernel == "host C" and host_compiler() is None:
        pytest.skip("no C compiler here: the host build is not available")
    rng = np.random.default_rng(4)
    n_boot = 50
    ps = [rng.dirichlet(np.ones(4), n) for _ in range(2)]
    y = rng.integers(0, 4, n)
    chunk = 2_000_000 // n  # as ece_bootstraps draws them
    gen = np.random.default_rng(7)  # what seed 7 draws
    draws = np.concatenate([gen.integers(0, n, size=(min(chunk, n_boot - b), n), dtype=np.int32)
                            for b in range(0, n_boot, chunk)])
    together = M.ece_bootstraps(ps, y, n_boot=n_boot, seed=7,
                                bin_sums=host.resample_bin_sums if kernel == "host C" else None)
    for p, (e, lo, hi) in zip(ps, together):
        boots = [M.ece(p[i], y[i]) for i in draws]
        assert e == pytest.approx(M.ece(p, y), abs=1e-12)
        assert (lo, hi) == pytest.approx(tuple(np.quantile(boots, [0.025, 0.975])), abs=1e-12)
        assert (e, lo, hi) == pytest.approx(M.ece_bootstrap(p, y, n_boot=n_boot, seed=7), abs=1e-15)


def test_host_resample_bin_sums_refuses_indices_out_of_range():
    """The C indexes with the draws and bins unchecked: out-of-range ones are refused before it runs."""
    from repair.program import host

    bins, gaps = np.zeros((1, 4), np.int32), np.ones((1, 4))
    with pytest.raises(ValueError, match="out of range"):
        host.resample_bin_sums(np.array([[0, 1, 2, 4]], np.int32), bins, gaps, 15)
    with pytest.raises(ValueError, match="out of range"):
        host.resample_bin_sums(np.array([[0, 1, 2, 3]], np.int32), bins + 15, gaps, 15)
    assert host.resample_bin_sums(np.array([[0, 0, 2, 3]], np.int32), bins, gaps, 15)[0, 0, 0] == 4.0


def test_ece_works_on_float32_probabilities():
    """A peer silently returns nonsense on float32 input; float64 inside, whatever comes in."""
    rng = np.random.default_rng(3)
    p = rng.dirichlet(np.ones(3), 200)
    y = rng.integers(0, 3, 200)
    assert M.ece(p.astype(np.float32), y) == pytest.approx(M.ece(p, y), abs=1e-6)


def test_nll_and_kl():
    p = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]])
    assert M.nll(p, np.array([0, 2])) == pytest.approx(-(np.log(0.7) + np.log(0.8)) / 2)
    assert M.kl_divergence(p, p) == pytest.approx(0.0, abs=1e-12)
    q = np.array([[0.5, 0.3, 0.2], [0.2, 0.2, 0.6]])
    expect = np.mean([(p[i] * np.log(p[i] / q[i])).sum() for i in range(2)])
    assert M.kl_divergence(p, q) == pytest.approx(expect)


def test_as_probabilities_keeps_distributions_and_softmaxes_logits():
    probs = np.array([[0.25, 0.75], [1.0, 0.0]])
    np.testing.assert_allclose(M.as_probabilities(probs), probs)
    logits = np.array([[2.0, -1.0], [0.0, 0.0]])
    np.testing.assert_allclose(M.as_probabilities(logits).sum(1), 1.0)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(-1e3, 1e3, allow_nan=False), min_size=1, max_size=50),
       st.lists(st.floats(-1e3, 1e3, allow_nan=False), min_size=1, max_size=50))
def test_sqnr_matches_qdq_loss_debug_formula(a, b):
    from onnxruntime.quantization.qdq_loss_debug import (
        compute_signal_to_quantization_noice_ratio,
    )

    n = min(len(a), len(b))
    x, y = np.array(a[:n]), np.array(b[:n])
    ours = M.sqnr_db(float(np.dot(x, x)), float(np.dot(x - y, x - y)))
    assert ours == pytest.approx(compute_signal_to_quantization_noice_ratio(x, y), abs=1e-6)
