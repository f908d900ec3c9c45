"""`tmlrepair check`: the regression gate passes an identical requantization and fails a worse one."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest
from click.testing import CliRunner

from repair.cli import main
from repair.data import load_calibration
from repair.models import load_pair
from repair.plan.fit import fit_plan

from .conftest import quantize_model, task_files


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    """Baseline drift report of the bundled int8 model, and two requantizations of its float model."""
    d = tmp_path_factory.mktemp("check_digits")
    f = task_files("digits")
    x = load_calibration(f["calib"]).x
    quantize_model(f["float"], d / "same.onnx", x, "image")  # identical recipe
    spiked = x.copy()
    spiked[0] *= 4.0  # one glitched calibration sample blows up the MinMax ranges
    quantize_model(f["float"], d / "spike.onnx", spiked, "image")
    r = CliRunner().invoke(main, ["drift", str(f["float"]), str(f["int8"]), "--data", str(f["holdout"]),
                                  "--json", str(d / "base.json")])
    assert r.exit_code == 0, r.output
    return {**f, "dir": d}


def _check(d, new, *extra):
    return CliRunner().invoke(main, ["check", str(d["dir"] / "base.json"), str(new), "--data", str(d["holdout"]),
                                     *map(str, extra)])


def test_identical_requantization_passes(digits):
    r = _check(digits, digits["dir"] / "same.onnx")
    assert r.exit_code == 0, r.output
    assert "PASS" in r.output


def test_worse_calibration_fails_and_names_the_layer_that_lost_most(digits, tmp_path):
    r = _check(digits, digits["dir"] / "spike.onnx", "--junit", tmp_path / "j.xml", "--markdown", tmp_path / "s.md")
    assert r.exit_code == 1, r.output
    layer_lines = [ln for ln in r.output.splitlines() if "FAIL layer" in ln]
    assert layer_lines
    losses = [float(ln.split("lost ")[1].split(" dB")[0]) for ln in layer_lines]
    assert losses[0] == max(losses)  # worst first: the first layer named is the one that lost most
    root = ET.parse(tmp_path / "j.xml").getroot()
    assert root.tag == "testsuite" and int(root.get("failures")) >= 1
    failed = [tc for tc in root.iter("testcase") if tc.find("failure") is not None]
    props = {p.get("name"): p.get("value") for p in failed[0].iter("property")}
    assert float(props["measured"]) != float(props["baseline"])
    assert any(ch.isdigit() for ch in failed[0].find("failure").get("message"))
    assert "## tmlrepair check: FAIL" in (tmp_path / "s.md").read_text()


def test_tolerances_from_pyproject(digits, tmp_path):
    cfg = tmp_path / "pyproject.toml"
    cfg.write_text("[tool.tmlrepair.check]\nmax_sqnr_drop = 500\nmax_accuracy_drop = 100\nmax_agreement_drop = 100\n"
                   "max_nll_increase = 100\nmax_ece_increase = 1\n")
    assert _check(digits, digits["dir"] / "spike.onnx", "--config", cfg).exit_code == 0
    cfg.write_text("[tool.tmlrepair.check]\nmax_sqnr_dorp = 5\n")
    r = _check(digits, digits["dir"] / "same.onnx", "--config", cfg)
    assert r.exit_code == 2 and "max_sqnr_dorp" in r.stderr


def test_other_data_than_the_baseline_is_refused(digits):
    r = CliRunner().invoke(main, ["check", str(digits["dir"] / "base.json"), str(digits["dir"] / "same.onnx"),
                                  "--data", str(digits["calib"])])
    assert r.exit_code == 2 and "other data" in r.stderr


def test_plan_detects_a_boundary_that_no_longer_holds(tmp_path):
    f = task_files("ecg")
    pair = load_pair(f["float"], f["int8"])
    calib, holdout = load_calibration(f["calib"]), load_calibration(f["holdout"])
    plan = fit_plan(pair, calib, holdout, anomaly_boundary="threshold")
    (tmp_path / "plan.json").write_text(plan.to_json())
    spiked = calib.x.copy()
    spiked[0] *= 6.0
    quantize_model(f["float"], tmp_path / "spike.onnx", spiked, "ecg_window")
    r = CliRunner().invoke(main, ["drift", str(f["float"]), str(f["int8"]), "--data", str(f["holdout"]),
                                  "--json", str(tmp_path / "base.json")])
    assert r.exit_code == 0
    (tmp_path / "none.toml").write_text("")
    opts = ["--data", str(f["holdout"]), "--plan", str(tmp_path / "plan.json"), "--max-far-miss", "0.05",
            "--max-sqnr-drop", "100", "--config", str(tmp_path / "none.toml")]
    same = CliRunner().invoke(main, ["check", str(tmp_path / "base.json"), str(f["int8"]), *opts])
    assert same.exit_code == 0, same.output
    worse = CliRunner().invoke(main, ["check", str(tmp_path / "base.json"), str(tmp_path / "spike.onnx"), *opts])
    assert worse.exit_code == 1
    line = next(ln for ln in worse.output.splitlines() if "score_threshold" in ln)
    assert "refit" in line and "misses by" in line
