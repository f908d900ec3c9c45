"""Repairs where int8 really fails: a glitched calibration sample, calibration at the wrong sensor gain (field
data), raw-unit inputs (the input pre-shim). Small MLPs trained here on scikit-learn's synthetic data, quantized
with onnxruntime's quantize_static as users do, judged on the integer program."""

from __future__ import annotations

import json
import warnings

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

from repair import fixedpoint as fp
from repair.cli import main
from repair.data import CalibrationSet
from repair.data.outliers import discount_outliers
from repair.models import load_pair
from repair.program import lower
from repair.program.runner import ProgramRunner
from repair.repairs.in_model import fit_in_model


def _problem(raw_units: bool, seed: int = 0):
    from sklearn.datasets import make_classification
    from sklearn.neural_network import MLPClassifier

    x, y = make_classification(3000, 12, n_informative=8, n_classes=4, n_clusters_per_class=1, class_sep=1.5,
                               random_state=seed)
    if raw_units:  # feature j in its own unit: ×10^u_j, u_j in [−3, 2]
        x = x * 10.0 ** np.random.default_rng(seed).uniform(-3, 2, x.shape[1])
    x = x.astype(np.float32)
    mu, sd = x[:1500].mean(0), x[:1500].std(0)
    with warnings.catch_warnings():  # a few hundred Adam steps are enough here; not converged is fine
        warnings.simplefilter("ignore")
        clf = MLPClassifier((32,), max_iter=300, random_state=seed).fit((x[:1500] - mu) / sd, y[:1500])
    w0, w1 = clf.coefs_
    b0 = clf.intercepts_[0] - (mu / sd) @ w0  # the scaler folded in: the model takes the data as it comes
    w0 = w0 / sd[:, None]
    inits = [numpy_helper.from_array(v.astype(np.float32), n)
             for n, v in (("w0", w0), ("b0", b0), ("w1", w1), ("b1", clf.intercepts_[1]))]
    g = helper.make_graph([helper.make_node("Gemm", ["x", "w0", "b0"], ["h"], name="fc0"),
                           helper.make_node("Relu", ["h"], ["r"], name="relu0"),
                           helper.make_node("Gemm", ["r", "w1", "b1"], ["logits"], name="fc1")], "mlp",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 12])],
                          [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 4])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m, x, y


def _pair(tmp_path, model, calib_x):
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    f, q = tmp_path / "float.onnx", tmp_path / "int8.onnx"
    onnx.save(model, f)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter(calib_x[i:i + 1] for i in range(len(calib_x)))

        def get_next(self):
            b = next(self.it, None)
            return None if b is None else {"x": b}

    quantize_static(str(f), str(q), Reader(), quant_format=QuantFormat.QDQ, activation_type=QuantType.QInt8,
                    weight_type=QuantType.QInt8, per_channel=False)
    return load_pair(f, q)


def _accuracy(pair, model, x, y) -> float:
    return float((ProgramRunner(pair, lower(model)).output_integers(x).argmax(1) == y).mean())


def test_an_isolated_spike_is_discounted_and_named():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 10)).astype(np.float32)
    clean, rows = discount_outliers(CalibrationSet(x=x))
    assert rows == [] and len(clean) == 300
    x[17] *= 25
    clean, rows = discount_outliers(CalibrationSet(x=x))
    assert [r["sample"] for r in rows] == [17] and len(clean) == 299 and "spike" in rows[0]["why"]
    x[:10] *= 25  # 3 % of the set: that is the distribution, not a glitch
    assert discount_outliers(CalibrationSet(x=x))[1] == []


def test_raw_unit_inputs_get_the_input_pre_shim(tmp_path):
    """Features spanning five decades under one int8 input scale: int8 loses tens of points; the pre-shim gives
    each feature the int8 range and the first layer takes the inverse — the repaired model is near float."""
    model, x, y = _problem(raw_units=True)
    calib, hold, test = slice(1500, 2100), slice(2100, 2500), slice(2500, 3000)
    pair = _pair(tmp_path, model, x[calib])
    r = fit_in_model(pair, CalibrationSet(x=x[calib], y=y[calib]), CalibrationSet(x=x[hold], y=y[hold]))
    assert "input_scaling" in r.kept
    float_acc = float((pair.float.session().run(None, {"x": x[test]})[0].argmax(1) == y[test]).mean())
    naive, repaired = (_accuracy(pair, m, x[test], y[test]) for m in (pair.int8.proto, r.model))
    assert naive < float_acc - 0.1 and repaired >= float_acc - 0.02, (naive, repaired, float_acc)
    # the repaired model carries its pre-shim: onnxruntime runs it, the program applies it as it quantizes
    (tmp_path / "repaired.onnx").write_bytes(r.model.SerializeToString())
    rp = load_pair(tmp_path / "float.onnx", tmp_path / "repaired.onnx")
    assert rp.int8.index.input_affine("x") is not None and lower(r.model).input_affine is not None
    ort = rp.int8.session().run(None, {"x": x[test]})[0].argmax(1)
    assert (ort == ProgramRunner(rp, lower(r.model)).output_integers(x[test]).argmax(1)).mean() > 0.98


def test_no_pre_shim_when_the_features_share_a_range(tmp_path):
    model, x, y = _problem(raw_units=False)
    pair = _pair(tmp_path, model, x[1500:2100])
    r = fit_in_model(pair, CalibrationSet(x=x[1500:2100], y=y[1500:2100]), CalibrationSet(x=x[2100:2500],
                                                                                           y=y[2100:2500]),
                     repairs=("input_scaling",))
    assert r.kept == [] and "share a range" in r.entries[0].details[0]["why"]


def test_a_glitched_calibration_sample_no_longer_sets_the_ranges(tmp_path):
    model, x, y = _problem(raw_units=False, seed=1)
    cx = x[1500:2100].copy()
    cx[5] *= 20  # one sensor spike in the calibration split
    pair = _pair(tmp_path, model, cx)
    r = fit_in_model(pair, CalibrationSet(x=cx, y=y[1500:2100]), CalibrationSet(x=x[2100:2500], y=y[2100:2500]))
    assert [d["sample"] for d in r.holdout["discounted_samples"]] == [5]
    assert "activation_thresholds" in r.kept
    naive, repaired = (_accuracy(pair, m, x[2500:], y[2500:]) for m in (pair.int8.proto, r.model))
    assert repaired > naive


def test_fit_takes_unlabelled_field_data(tmp_path):
    """Calibration captured at half the field's sensor gain: with --field (inputs logged in the field, no labels)
    the ranges come from the field and the repaired model beats the naive one on field data."""
    model, x, y = _problem(raw_units=False, seed=2)
    calib = x[1500:2100] * 0.5
    pair = _pair(tmp_path, model, calib)
    for name, data in (("calib", dict(x=calib, y=y[1500:2100])), ("holdout", dict(x=x[2100:2500] * 0.5,
                                                                                   y=y[2100:2500])),
                       ("field", dict(x=x[2500:2800]))):
        np.savez(tmp_path / f"{name}.npz", **data)
    out = tmp_path / "fit"
    r = CliRunner().invoke(main, ["fit", str(tmp_path / "float.onnx"), str(tmp_path / "int8.onnx"), "--data",
                                  str(tmp_path / "calib.npz"), "--holdout", str(tmp_path / "holdout.npz"), "--field",
                                  str(tmp_path / "field.npz"), "-o", str(out), "--no-progress"])
    assert r.exit_code == 0, r.output
    plan = json.loads((out / "plan.json").read_text())
    assert plan["provenance"]["field"]["n"] == 300 and plan["in_model"]["holdout"]["decided_by"] == "sqnr"
    repaired = onnx.load(out / "repaired_int8.onnx")
    naive, fixed = (_accuracy(pair, m, x[2800:], y[2800:]) for m in (pair.int8.proto, repaired))
    assert fixed >= naive
    r = CliRunner().invoke(main, ["fit", str(tmp_path / "float.onnx"), str(tmp_path / "int8.onnx"), "--data",
                                  str(tmp_path / "calib.npz"), "--holdout", str(tmp_path / "holdout.npz"), "--field",
                                  str(tmp_path / "field.npz"), "--repairs", "temperature", "-o", str(tmp_path / "x")])
    assert r.exit_code == 2 and "--field" in r.stderr


@pytest.mark.parametrize("bad", ["nan", "shape"])
def test_bad_field_data_is_refused_in_one_line(tmp_path, bad):
    model, x, y = _problem(raw_units=False, seed=3)
    _pair(tmp_path, model, x[1500:1800])
    np.savez(tmp_path / "calib.npz", x=x[1500:1800], y=y[1500:1800])
    np.savez(tmp_path / "holdout.npz", x=x[1800:2000], y=y[1800:2000])
    field = x[2000:2100].copy()
    if bad == "nan":
        field[3, 2] = np.nan
    else:
        field = field[:, :5]
    np.savez(tmp_path / "field.npz", x=field)
    r = CliRunner().invoke(main, ["fit", str(tmp_path / "float.onnx"), str(tmp_path / "int8.onnx"), "--data",
                                  str(tmp_path / "calib.npz"), "--holdout", str(tmp_path / "holdout.npz"), "--field",
                                  str(tmp_path / "field.npz"), "-o", str(tmp_path / "out")])
    assert r.exit_code == 2 and len(r.stderr.strip().splitlines()) == 1 and not (tmp_path / "out").exists()


def test_the_pre_shim_reaches_the_plan_and_the_emitted_c(tmp_path):
    """The plan carries the repaired model's pre-shim and its integer form; emit writes PREFIX_pre_shim.c with the
    library's tmlr_input_pre_shim_s16, whose self-test (vectors from the Python twin) passes when compiled."""
    import shutil
    import subprocess

    from repair.codegen.emit import emit
    from repair.plan.fit import fit_plan

    if shutil.which("gcc") is None:
        pytest.skip("gcc not found")
    model, x, y = _problem(raw_units=True)
    pair = _pair(tmp_path, model, x[1500:2100])
    lsb = np.ptp(x[1500:2100], axis=0) / 32768  # a 16-bit reading spans each feature's range
    plan = fit_plan(pair, CalibrationSet(x=x[1500:2100], y=y[1500:2100]), CalibrationSet(x=x[2100:2500],
                                                                                          y=y[2100:2500]),
                    in_model=True, reading_lsb=lsb)
    ps = plan.in_model["input_pre_shim"]
    assert ps["features"] == 12 and ps["features_last"] and len(ps["integer"]["multipliers"]) == 12
    (tmp_path / "plan.json").write_text(plan.to_json())
    from repair.plan import RepairPlan

    assert RepairPlan.from_json(tmp_path / "plan.json").in_model["input_pre_shim"] == ps  # checked as untrusted input
    out = tmp_path / "c"
    names = {str(p) for p in emit(plan, out)}
    assert {"tmlr_model_pre_shim.c", "tmlr_model_pre_shim.h", "tmlr/src/tmlr_input_pre_shim_s16.c"} <= names
    r = subprocess.run(["make", "-s", "-f", "tmlrepair.mk", "tmlr_model_pre_shim_selftest"], cwd=out,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    run = subprocess.run([str(out / "tmlr_model_pre_shim_selftest")], capture_output=True, text=True)
    assert run.returncode == 0 and run.stdout.strip() == "64 passed, 0 failed"
    # the integer form is the float pre-shim + the input quantization on readings r (x = r·lsb), to one step
    r_ = np.rint(x[2500:2600] / lsb).astype(np.int64).clip(-32768, 32767)
    i = ps["integer"]
    c_form = fp.input_pre_shim_s8(r_, i["multipliers"], i["shifts"], i["offsets"], ps["input_zero_point"])
    exact = ProgramRunner(pair, lower(plan.repaired_model)).quantize((r_ * lsb).astype(np.float32))
    assert np.abs(c_form.astype(int) - exact.astype(int)).max() <= 1


def test_a_pre_shim_with_parameters_out_of_range_is_refused_in_the_plan(tmp_path):
    from repair.errors import DataError
    from repair.plan import RepairPlan

    model, x, y = _problem(raw_units=True)
    pair = _pair(tmp_path, model, x[1500:2100])
    from repair.plan.fit import fit_plan

    plan = fit_plan(pair, CalibrationSet(x=x[1500:2100], y=y[1500:2100]), CalibrationSet(x=x[2100:2500],
                                                                                          y=y[2100:2500]),
                    in_model=True, repairs=("input_scaling",), reading_lsb=np.ptp(x[1500:2100], axis=0) / 32768)
    d = json.loads(plan.to_json())
    d["in_model"]["input_pre_shim"]["integer"]["shifts"][0] = 6
    (tmp_path / "plan.json").write_text(json.dumps(d))
    with pytest.raises(DataError, match="pre-shim"):
        RepairPlan.from_json(tmp_path / "plan.json")


@pytest.mark.parametrize("url", ["sim", "qemu"])
def test_calibrate_runs_the_input_pre_shim_in_c_on_the_device(tmp_path, url):
    """Raw-unit inputs through `calibrate` on the reference device: the in-model repairs add the input pre-shim,
    the firmware is rebuilt with it in C (tmlr_input_pre_shim_s16), the device is sent the sensor's int16 readings
    and quantizes them itself; every device output equals the program run on the twin's int8 inputs."""
    import shutil

    from click.testing import CliRunner

    from repair.cli import main

    if url == "qemu" and not (shutil.which("qemu-system-arm") and shutil.which("arm-none-eabi-gcc")):
        pytest.skip("QEMU or the ARM toolchain is not installed (apt install qemu-system-arm gcc-arm-none-eabi)")
    model, x, y = _problem(raw_units=True)
    pair = _pair(tmp_path, model, x[1500:2100])
    n = 600 if url == "sim" else 200
    np.savez(tmp_path / "calib.npz", x=x[1500:1500 + n], y=y[1500:1500 + n])
    np.savez(tmp_path / "holdout.npz", x=x[2100:2100 + n // 2], y=y[2100:2100 + n // 2])
    lsb = np.ptp(x[1500:2100], axis=0) / 32768  # a 16-bit reading spans each feature's range
    r = CliRunner().invoke(main, ["calibrate", str(pair.float.path), str(pair.int8.path), "--data",
                                  str(tmp_path / "calib.npz"), "--holdout", str(tmp_path / "holdout.npz"),
                                  "--serial", url, "-o", str(tmp_path / "out"), "--no-progress",
                                  "--reading-lsb", ",".join(f"{v:.9g}" for v in lsb)])
    assert r.exit_code == 0, r.output
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    model_run = report["model_on_device"]
    assert "input_scaling" in report["in_model"]["kept"]
    assert model_run["input"].startswith("raw int16 readings (12 per sample)")
    assert model_run["bit_exact_vs_python_reference"]["differ"] == 0 and report["bit_exact"]["differ"] == 0
    assert report["metrics"]["device_shims"]["accuracy"] > 0.8  # naive int8 loses tens of points here
