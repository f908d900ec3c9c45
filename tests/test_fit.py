"""`tmlrepair fit` and `fit-scores`: repairs fitted on calibration, judged on holdout, integer = float."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from repair.cli import main
from repair.data import load_calibration
from repair.models import load_pair
from repair.plan.fit import fit_plan
from repair.plan.plan import RepairPlan

from .conftest import TASKS, task_files


def _plan(task, **kw):
    f = task_files(task)
    return fit_plan(load_pair(f["float"], f["int8"]), load_calibration(f["calib"]), load_calibration(f["holdout"]), **kw)


def test_temperature_improves_holdout_nll_and_keeps_accuracy():
    plan = _plan("digits")
    t = next(r for r in plan.repairs if r.repair == "temperature")
    m = t.holdout["metrics"]
    assert t.kept and m["nll_after"] < m["nll_before"]
    assert m["accuracy_after"] == m["accuracy_before"]


@pytest.mark.parametrize("task", TASKS)
def test_integer_references_decide_like_float_on_99_5_percent(task):
    plan = _plan(task)
    for r in plan.repairs:
        if r.int_agreement is not None:
            assert r.int_agreement["share"] >= 0.995, r.repair
            assert r.int_agreement["differ"] == 0 or r.int_agreement["why"]


def test_ecg_adaptive_boundary_hits_its_false_alarm_target_on_holdout():
    plan = _plan("ecg", anomaly_boundary="window", window=16)
    rates = plan.repairs[0].holdout["rates"]
    assert abs(rates["false_alarm_rate"] - 0.10) <= 0.03
    assert 0 < rates["detection_rate"] <= 1


def test_plan_json_is_stable_and_loads(tmp_path):
    f = task_files("digits")
    out = tmp_path / "out"
    args = ["fit", str(f["float"]), str(f["int8"]), "--data", str(f["calib"]), "--holdout", str(f["holdout"]),
            "-o", str(out)]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
    first = (out / "plan.json").read_text()
    assert CliRunner().invoke(main, [*args, "--force"]).exit_code == 0
    assert (out / "plan.json").read_text() == first  # deterministic
    plan = RepairPlan.from_json(out / "plan.json")
    assert [r.repair for r in plan.repairs] == ["temperature", "vector_scaling", "class_thresholds"]
    assert "NaN" not in first
    assert CliRunner().invoke(main, args).exit_code == 2  # exists, no --force


def test_fit_needs_holdout_labels(tmp_path):
    f = task_files("digits")
    np.savez(tmp_path / "h.npz", x=load_calibration(f["holdout"]).x[:10])
    r = CliRunner().invoke(main, ["fit", str(f["float"]), str(f["int8"]), "--data", str(f["calib"]),
                                  "--holdout", str(tmp_path / "h.npz"), "-o", str(tmp_path / "o")])
    assert r.exit_code == 2 and "no labels" in r.stderr


def test_fit_scores_csv_with_prefix_labels_and_holdout(tmp_path):
    rng = np.random.default_rng(0)
    rows = [f"normal_{i},{v}" for i, v in enumerate(rng.gamma(2, 1, 400))]
    (tmp_path / "fit.csv").write_text("\n".join(rows[:200]) + "\n")
    judge = rows[200:] + [f"anomaly_{i},{v}" for i, v in enumerate(rng.gamma(2, 1, 100) + 4)]
    (tmp_path / "judge.csv").write_text("id,score\n" + "\n".join(judge) + "\n")
    r = CliRunner().invoke(main, ["fit-scores", str(tmp_path / "fit.csv"), "--target-far", "0.1", "-o",
                                  str(tmp_path / "plan.json"), "--holdout", str(tmp_path / "judge.csv"),
                                  "--anomaly-prefix", "anomaly"])
    assert r.exit_code == 0, r.output
    plan = json.loads((tmp_path / "plan.json").read_text())
    h = plan["repairs"][0]["holdout"]["holdout"]
    assert abs(h["false_alarm_rate"] - 0.1) < 0.05 and h["detection_rate"] > 0.8


@pytest.mark.parametrize("content,extra,match", [
    ("a,1.0\nb,nan\n", [], "NaN/Inf"),
    ("a,1.0\nb,2.0\n", ["--target-far", "1.5"], "strictly between 0 and 1"),
    ("a,1.0,1\nb,2.0,1\n", [], "no normal samples"),
    ("a,1.0\nb,2.0\nc,3.0\n", ["--method", "window", "--window", "8"], "longer than the window"),
    ("a,x\n", [], "no score rows"),
])
def test_fit_scores_bad_input(tmp_path, content, extra, match):
    (tmp_path / "s.csv").write_text(content)
    args = ["fit-scores", str(tmp_path / "s.csv"), "-o", str(tmp_path / "p.json")]
    if "--target-far" not in extra:
        args += ["--target-far", "0.1"]
    r = CliRunner().invoke(main, args + extra)
    assert r.exit_code == 2, r.output
    assert match in r.stderr and "Traceback" not in r.output
    assert not (tmp_path / "p.json").exists()


def test_svg_bars_draw_what_matplotlib_would_refuse():
    """The fit report's inline SVG bars: a value with no number (NaN, inf) draws as a 0 bar whose tooltip says so;
    labels are escaped."""
    from repair.drift.svg import svg_bars

    svg = svg_bars(["<float>", "int8"], [float("nan"), 0.5], ylabel="a & b")
    assert svg.startswith("<svg") and svg.endswith("</svg>") and "&lt;float&gt;: nan" in svg and "a &amp; b" in svg
    assert "<svg" in svg_bars(["x"], [float("inf")], log=True, ylim=(0.0, 2.0))
