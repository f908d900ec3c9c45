"""Every kind of bad input gives one line naming the problem and what to do, exit code 2, no traceback."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from repair.cli import main

from .conftest import task_files


def run_cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def assert_clean_error(result, *needles):
    assert result.exit_code == 2, result.output
    err = result.stderr.strip()
    assert "Traceback" not in result.output
    assert len(err.splitlines()) == 1, err
    assert err.startswith("error: ")
    for n in needles:
        assert n in err, err


@pytest.fixture()
def digits():
    return task_files("digits")


def test_missing_file(digits, tmp_path):
    assert_clean_error(run_cli("info", tmp_path / "nope.onnx", digits["int8"]), "no such file", "FLOAT")


def test_corrupt_onnx(digits, tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x07this is not a protobuf \xff\xfe" * 20)
    assert_clean_error(run_cli("info", digits["float"], bad), "INT8", "re-export")


def test_truncated_onnx(digits, tmp_path):
    cut = tmp_path / "cut.onnx"
    raw = digits["int8"].read_bytes()
    cut.write_bytes(raw[: len(raw) // 2])
    assert_clean_error(run_cli("info", digits["float"], cut), "INT8")


def test_float_given_as_int8(digits):
    assert_clean_error(run_cli("info", digits["float"], digits["float"]), "looks like a float model")


def test_int8_given_as_float(digits):
    assert_clean_error(run_cli("info", digits["int8"], digits["float"]), "already quantized")


def test_pair_io_do_not_correspond():
    a, b = task_files("digits"), task_files("motions")
    assert_clean_error(run_cli("info", a["float"], b["int8"]), "not the same network")


def test_data_shape_does_not_fit(digits, tmp_path):
    p = tmp_path / "wrong.npz"
    np.savez(p, x=np.zeros((4, 28, 28), np.float32))
    assert_clean_error(run_cli("drift", digits["float"], digits["int8"], "--data", p), "shape", "reshape")


def test_data_dtype_does_not_fit(digits, tmp_path):
    p = tmp_path / "ints.npz"
    np.savez(p, x=np.zeros((4, 1, 28, 28), np.int8))
    assert_clean_error(run_cli("drift", digits["float"], digits["int8"], "--data", p), "dtype")


def test_nan_in_data(digits, tmp_path):
    x = np.zeros((4, 1, 28, 28), np.float32)
    x[2, 0, 3, 4] = np.nan
    p = tmp_path / "nan.npz"
    np.savez(p, x=x)
    assert_clean_error(run_cli("info", digits["float"], digits["int8"], "--data", p), "NaN/Inf", "(2, 0, 3, 4)")


def test_inf_in_data(digits, tmp_path):
    x = np.zeros((4, 1, 28, 28), np.float32)
    x[0, 0, 0, 0] = np.inf
    p = tmp_path / "inf.npz"
    np.savez(p, x=x)
    assert_clean_error(run_cli("drift", digits["float"], digits["int8"], "--data", p), "NaN/Inf")


def test_labels_out_of_range(digits, tmp_path):
    p = tmp_path / "labels.npz"
    np.savez(p, x=np.zeros((3, 1, 28, 28), np.float32), y=np.array([0, 10, 3]))
    assert_clean_error(run_cli("drift", digits["float"], digits["int8"], "--data", p), "label 10", "0..9")


def test_negative_labels(digits, tmp_path):
    p = tmp_path / "labels.npz"
    np.savez(p, x=np.zeros((3, 1, 28, 28), np.float32), y=np.array([0, -1, 3]))
    assert_clean_error(run_cli("info", digits["float"], digits["int8"], "--data", p), "negative")


def test_empty_set(digits, tmp_path):
    p = tmp_path / "empty.npz"
    np.savez(p, x=np.zeros((0, 1, 28, 28), np.float32))
    assert_clean_error(run_cli("drift", digits["float"], digits["int8"], "--data", p), "empty")


def test_data_without_x(digits, tmp_path):
    p = tmp_path / "nox.npz"
    np.savez(p, inputs=np.zeros((3, 1, 28, 28), np.float32))
    assert_clean_error(run_cli("drift", digits["float"], digits["int8"], "--data", p), "no array 'x'", "inputs")


def test_existing_output_is_kept(digits, tmp_path):
    out = tmp_path / "report.json"
    out.write_text("precious")
    r = run_cli("drift", digits["float"], digits["int8"], "--data", digits["holdout"], "--json", out)
    assert_clean_error(r, "already exists", "--force")
    assert out.read_text() == "precious"


def test_real_process_exit_code_and_no_traceback(tmp_path):
    r = subprocess.run([sys.executable, "-m", "repair", "info", str(tmp_path / "a.onnx"), str(tmp_path / "b.onnx")],
                       capture_output=True, text=True)
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    assert r.stderr.count("\n") == 1


def test_unknown_repair_name_is_refused(digits, tmp_path):
    r = run_cli("fit", digits["float"], digits["int8"], "--data", digits["calib"], "--holdout", digits["holdout"],
                "-o", tmp_path / "o", "--repairs", "temperature,temprature")
    assert_clean_error(r, "temprature", "choose from")
