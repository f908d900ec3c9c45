"""After-model repairs: properties of each estimator, bad input, the ToyCar scores."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from repair import metrics as M
from repair.errors import DataError
from repair.repairs import (
    ClassThresholds,
    ScoreThreshold,
    TemperatureScaling,
    VectorScaling,
    WindowBoundary,
    from_dict,
)

from .conftest import REAL


def _synthetic_logits(t_true=2.5, n=4000, k=5, seed=0):
    """Labels drawn from softmax(z / T): the NLL-optimal temperature is T."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 3, (n, k))
    p = M.softmax(z / t_true)
    y = (p.cumsum(1) > rng.uniform(size=(n, 1))).argmax(1)
    return z, y


def test_temperature_recovers_the_true_temperature_and_keeps_argmax():
    z, y = _synthetic_logits()
    ts = TemperatureScaling().fit(z, y)
    assert ts.temperature_ == pytest.approx(2.5, rel=0.08)
    assert (ts.apply(z).argmax(1) == z.argmax(1)).all()


@pytest.mark.parametrize("t_true", [0.2, 2.5, 40.0])
def test_temperature_is_the_likelihood_optimum_or_the_bound_it_points_to(t_true):
    """No neighbour (±1e-6 relative) has a lower NLL; a true temperature past the bounds (0.05, 20) gives the bound."""
    from repair.repairs.after_model.temperature import nll_of_logits

    z, y = _synthetic_logits(t_true=t_true)
    t = TemperatureScaling().fit(z, y).temperature_
    if t_true > 20:
        assert t == 20.0
    for f in (1 - 1e-6, 1 + 1e-6):
        if 0.05 <= t * f <= 20:
            assert nll_of_logits(z / t, y) <= nll_of_logits(z / (t * f), y)


def test_temperature_fits_the_same_on_float32_input():
    """netcal fits T = 1 on float32 input (its issue #61); float64 inside, whatever comes in."""
    z, y = _synthetic_logits()
    t64 = TemperatureScaling().fit(z, y).temperature_
    t32 = TemperatureScaling().fit(z.astype(np.float32), y).temperature_
    assert t32 == pytest.approx(t64, rel=1e-4)
    assert abs(t32 - 1.0) > 0.5


def test_vector_scaling_undoes_a_class_bias():
    z, y = _synthetic_logits(t_true=1.0)
    biased = z + np.array([2.0, 0, 0, 0, 0])
    vs = VectorScaling().fit(biased, y)
    assert M.nll(M.softmax(vs.apply(biased)), y) < M.nll(M.softmax(biased), y) - 0.1


@pytest.mark.parametrize("seed", range(4))
def test_vector_scaling_reaches_the_penalised_nll_minimum(seed):
    """Newton's optimum: a zero gradient (its analytic form checked against central differences of the loss), no
    ±1e-5 neighbour along any coordinate with a lower loss, and no higher loss than scipy's L-BFGS-B on it."""
    from scipy.optimize import minimize

    from repair.repairs.after_model.vector_scaling import _loss_gradient_hessian

    rng = np.random.default_rng(seed)
    n, k = int(rng.integers(40, 800)), int(rng.integers(2, 12))
    z = rng.normal(size=(n, k)) * rng.uniform(0.5, 6)
    y = rng.integers(0, k, n)
    z[np.arange(n), y] += rng.uniform(0, 3)
    z[:, 0] += rng.uniform(-2, 2)  # a class bias
    vs = VectorScaling().fit(z, y)
    theta = np.array(vs.scale_ + vs.offset_)
    loss = lambda t: _loss_gradient_hessian(z, y, vs.l2, t)[0]  # noqa: E731
    _, grad, hess = _loss_gradient_hessian(z, y, vs.l2, theta)
    eye = np.eye(2 * k)
    numeric = np.array([(loss(theta + 1e-6 * e) - loss(theta - 1e-6 * e)) / 2e-6 for e in eye])
    assert np.abs(numeric - grad).max() < 1e-7
    numeric_hess = np.array([(_loss_gradient_hessian(z, y, vs.l2, theta + 1e-6 * e)[1]
                              - _loss_gradient_hessian(z, y, vs.l2, theta - 1e-6 * e)[1]) / 2e-6 for e in eye])
    assert np.abs(numeric_hess - hess).max() < 1e-6
    assert np.abs(grad).max() < 1e-7
    assert all(loss(theta + d * e) >= loss(theta) for e in eye for d in (1e-5, -1e-5))
    ref = minimize(lambda t: _loss_gradient_hessian(z, y, vs.l2, t)[:2], np.r_[np.ones(k), np.zeros(k)], jac=True,
                   method="L-BFGS-B")
    assert loss(theta) <= ref.fun + 1e-12


def test_class_thresholds_hold_their_false_accept_rate_on_the_fit_data():
    z, y = _synthetic_logits(t_true=1.0)
    p = M.softmax(z)
    ct = ClassThresholds(0.05).fit(p, y)
    rates = M.accept_reject_rates(ct.apply(p), y, 5)
    assert max(rates["far_per_class"]) <= 0.05


def test_repairs_round_trip_through_their_dict_form():
    z, y = _synthetic_logits()
    for rep in (TemperatureScaling().fit(z, y), VectorScaling().fit(z, y), ClassThresholds(0.1).fit(M.softmax(z), y)):
        again = from_dict(rep.to_dict())
        np.testing.assert_array_equal(again.apply(z if rep.name != "class_thresholds" else M.softmax(z)),
                                      rep.apply(z if rep.name != "class_thresholds" else M.softmax(z)))


def test_score_threshold_and_window_boundary_hit_their_rate_on_fit_data():
    rng = np.random.default_rng(0)
    s = rng.gamma(2.0, 1.0, 5000)
    st = ScoreThreshold(0.1).fit(s)
    assert st.apply(s).mean() == pytest.approx(0.1, abs=0.001)
    wb = WindowBoundary(32, 0.1).fit(s)
    assert wb.apply(s)[32:].mean() == pytest.approx(0.1, abs=0.002)
    assert (wb.apply(s) == wb.apply_int(s)).mean() >= 0.995


@pytest.mark.parametrize("bad,match", [
    (lambda: ScoreThreshold(1.5).fit(np.ones(10)), "strictly between 0 and 1"),
    (lambda: ScoreThreshold(0.0).fit(np.ones(10)), "strictly between 0 and 1"),
    (lambda: ScoreThreshold(0.1).fit(np.array([1.0, np.nan, 2.0])), "NaN/Inf"),
    (lambda: ScoreThreshold(0.1).fit(np.ones(4), np.ones(4)), "no normal samples"),
    (lambda: WindowBoundary(32, 0.1).fit(np.arange(20.0)), "longer than the window"),
    (lambda: WindowBoundary(4, 0.1).fit(np.arange(20.0), np.ones(20)), "no normal stretch"),
    (lambda: TemperatureScaling().fit(np.zeros((3, 2)), None), "labels are needed"),
    (lambda: TemperatureScaling().fit(np.zeros((3, 2)), np.array([0, 1, 2])), "class ids 0..1"),
])
def test_bad_input_is_a_clear_error(bad, match):
    with pytest.raises(DataError, match=match):
        bad()


def _toycar(kind: str, mid: str):
    path = REAL / "data" / "ad_scores_toycar" / f"{kind}anomaly_score_ToyCar_id_{mid}.csv"
    if not path.is_file():
        pytest.skip(f"ToyCar scores not found at {path.parent} (../shared/real is outside the project)")
    rows = list(csv.reader(path.open()))
    return np.array([float(r[1]) for r in rows]), np.array([r[0].startswith("anomaly") for r in rows], np.int64)


@pytest.mark.real
@pytest.mark.parametrize("mid", ["01", "02", "03", "04"])
def test_toycar_float_threshold_misfires_on_int8_and_refit_is_unbiased(mid):
    fs, fy = _toycar("", mid)  # Keras float scores
    qs, qy = _toycar("tflite_quant_fullint_", mid)
    far_float_fit = M.alarm_rates(ScoreThreshold(0.1).fit(fs, fy).apply(qs), qy)["false_alarm_rate"]
    assert far_float_fit > 0.4  # the drift: measured 0.49–0.59
    normal = np.flatnonzero(qy == 0)
    rng = np.random.default_rng(0)
    fars = []
    for _ in range(300):
        perm = rng.permutation(normal)
        fit_half, judge_half = perm[: len(perm) // 2], perm[len(perm) // 2:]
        fars.append(ScoreThreshold(0.1).fit(qs[fit_half]).apply(qs[judge_half]).mean())
    assert np.mean(fars) == pytest.approx(0.10, abs=0.01)
