"""One chain from fit to the device and to CI: calibrate carries the in-model repairs to the (reference) device,
the plan names the model its shims were fitted on, and validate and check use it."""

from __future__ import annotations

import json
import re
import subprocess
import sys

from click.testing import CliRunner

from repair.cli import main

from .conftest import ROOT, task_files


def _run(*args):
    return subprocess.run([sys.executable, "-m", "repair", *args], capture_output=True, text=True, cwd=ROOT)


def test_calibrate_repairs_the_model_on_the_device_then_validate_and_check(tmp_path):
    f = task_files("digits")
    out = tmp_path / "run"
    r = _run("calibrate", "--serial", "sim", "-o", str(out), "--no-progress")
    assert r.returncode == 0, r.stderr
    report = json.loads((out / "report.json").read_text())
    m = report["metrics"]
    assert m["device_shims"]["accuracy"] >= 0.94 and m["int8_as_given"]["accuracy"] < 0.91
    assert report["in_model"]["kept"] and report["bit_exact"]["differ"] == 0
    assert report["model_on_device"]["bit_exact_vs_python_reference"]["differ"] == 0
    plan = json.loads((out / "plan.json").read_text())
    int8 = plan["provenance"]["models"]["int8"]
    assert int8["path"] == "repaired_int8.onnx" and int8["repaired_from"]["path"].endswith("digits/int8.onnx")
    # validate: the plan's own (repaired) model, found beside plan.json
    r = _run("validate", "--serial", "sim", "--plan", str(out / "plan.json"), "--data", str(f["holdout"]))
    assert r.returncode == 0 and "bit-exact: 1000/1000" in r.stdout, r.stdout + r.stderr
    shims = re.search(r"with device shims (\d+\.\d)%", r.stdout)
    assert shims and float(shims.group(1)) >= 94.0, r.stdout  # the repaired model's accuracy, on the device
    # check: the repaired model passes against its own baseline; the naive requantization fails it
    base = tmp_path / "base.json"
    r = CliRunner().invoke(main, ["drift", str(f["float"]), str(out / "repaired_int8.onnx"), "--data",
                                  str(f["holdout"]), "--json", str(base), "--no-progress"])
    assert r.exit_code == 0, r.output
    args = ["check", str(base), "--data", str(f["holdout"])]
    assert CliRunner().invoke(main, args[:2] + [str(out / "repaired_int8.onnx")] + args[2:]).exit_code == 0
    worse = CliRunner().invoke(main, args[:2] + [str(f["int8"])] + args[2:])
    assert worse.exit_code == 1 and "FAIL accuracy" in worse.output


def test_in_model_repairs_on_a_board_ask_for_a_reflash(tmp_path):
    r = _run("calibrate", "--serial", "loop://", "--in-model", "-o", str(tmp_path / "run"))
    assert r.returncode == 2 and "reflash" in r.stderr and not (tmp_path / "run").exists()


def test_firmware_with_the_wrong_input_zero_point_stops_before_any_sample(tmp_path):
    """The I/O glue check: firmware whose input quantization is off by 128 (uint8 glue on an int8 model) is named
    in one line, exit 2 at the CLI, before a single sample is sent."""
    from dataclasses import replace

    import pytest

    from repair import load_calibration, load_pair
    from repair.device.calibrate import run_calibrate
    from repair.device.targets import model_source, open_link
    from repair.errors import DeviceError
    from repair.program import lower

    f = task_files("digits")
    pair = load_pair(f["float"], f["int8"])
    prog = lower(pair.int8.proto)
    t = prog.tensors[prog.input]
    prog.tensors[prog.input] = replace(t, zero_point=t.zero_point + 128 if t.zero_point < 0 else t.zero_point - 128)
    calib, holdout = load_calibration(f["calib"]), load_calibration(f["holdout"])
    with open_link("sim", model_c=model_source(prog, "wrong zero point")) as link:
        with pytest.raises(DeviceError, match=r"firmware quantizes its input with zero point .*the model expects .*uint8"):
            run_calibrate(link, pair, calib, holdout, tmp_path)
        assert link.stats.requests == 1  # hello only: no sample spent
