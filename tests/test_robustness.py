"""What a first outside trial broke (issue 14), each pinned: files the command did not write are never touched,
device errors are named, one weight rule everywhere, exact exit codes, Ctrl-C and --resume, POSIX-free imports."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from click.testing import CliRunner

from repair import fit_plan, load_calibration, load_pair
from repair.cli import main
from repair.device import protocol as P
from repair.device.link import Timeouts
from repair.device.targets import open_link
from repair.errors import DeviceError

from .conftest import ROOT, real_model, task_files

FAST = Timeouts(inter_byte=0.04, reply=0.1, overall=5.0)


@pytest.fixture(scope="module")
def digits_plan_json(tmp_path_factory) -> str:
    f = task_files("digits")
    plan = fit_plan(load_pair(f["float"], f["int8"]), load_calibration(f["calib"]), load_calibration(f["holdout"]))
    return plan.to_json()


def _tree(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


# ------------------------------------------------------------------------------------------- 1. --force
def test_emit_force_into_a_firmware_folder_touches_only_its_own_files(digits_plan_json, tmp_path, monkeypatch):
    fw = tmp_path / "firmware"
    fw.mkdir()
    (fw / "firmware_main.c").write_text("int main(void) { return 0; }\n")
    (fw / "Makefile").write_text("all:\n")
    (fw / "plan.json").write_text(digits_plan_json)
    monkeypatch.chdir(fw)
    for args in (["emit", "plan.json", "-o", "."], ["emit", "plan.json", "-o", ".", "--force"]):
        r = CliRunner().invoke(main, args)
        assert r.exit_code == 0, r.output
    assert (fw / "firmware_main.c").read_text().startswith("int main")
    assert (fw / "Makefile").read_text() == "all:\n" and (fw / "plan.json").read_text() == digits_plan_json
    assert (fw / "tmlr_model_params.h").is_file()


def test_emit_force_into_the_fit_folder_keeps_the_plan_and_model(digits_plan_json, tmp_path):
    fit = tmp_path / "fit"
    fit.mkdir()
    mine = {"plan.json": digits_plan_json.encode(), "repaired_int8.onnx": b"model", "report.md": b"r",
            "report.json": b"{}", "report.html": b"<html>"}
    for name, raw in mine.items():
        (fit / name).write_bytes(raw)
    r = CliRunner().invoke(main, ["emit", str(fit / "plan.json"), "-o", str(fit), "--force"])
    assert r.exit_code == 0, r.output
    after = _tree(fit)
    assert all(after[name] == raw for name, raw in mine.items())


def test_emit_force_removes_only_its_own_unchanged_stale_files(digits_plan_json, tmp_path):
    plan = tmp_path / "plan.json"
    plan.write_text(digits_plan_json)
    out = tmp_path / "c"
    assert CliRunner().invoke(main, ["emit", str(plan), "-o", str(out), "--prefix", "old"]).exit_code == 0
    (out / "old_shim.h").write_text("/* I edited this */\n")
    r = CliRunner().invoke(main, ["emit", str(plan), "-o", str(out), "--prefix", "new", "--force"])
    assert r.exit_code == 0, r.output
    assert not (out / "old_params.h").exists()  # ours, unchanged: replaced by new_params.h
    assert (out / "old_shim.h").read_text() == "/* I edited this */\n"  # edited since: the user's now
    assert (out / "new_params.h").is_file()


def test_emit_copies_only_the_library_files_the_shims_use(digits_plan_json, tmp_path):
    plan = tmp_path / "plan.json"
    plan.write_text(digits_plan_json)
    r = CliRunner().invoke(main, ["emit", str(plan), "-o", str(tmp_path / "c")])
    assert r.exit_code == 0
    lib = sorted(p.name for p in (tmp_path / "c" / "tmlr").rglob("*") if p.is_file())
    assert "tmlr_model_s8.c" not in lib and "tmlr_model.h" not in lib and "tmlr_softmax_s8.c" in lib
    assert "wildcard" not in (tmp_path / "c" / "tmlrepair.mk").read_text()


def test_calibrate_force_keeps_the_users_files(tmp_path):
    out = tmp_path / "run"
    (out / "c").mkdir(parents=True)
    (out / "c" / "my_port.c").write_text("/* mine */\n")
    (out / "notes.txt").write_text("mine\n")
    for extra in ([], ["--force"]):
        r = subprocess.run([sys.executable, "-m", "repair", "calibrate", "--serial", "sim", "--shim-only", "-o",
                            str(out), *extra], capture_output=True, text=True, cwd=ROOT)
        assert r.returncode == 0, r.stderr
    assert (out / "c" / "my_port.c").read_text() == "/* mine */\n" and (out / "notes.txt").read_text() == "mine\n"


# ------------------------------------------------------------------------------------ 3. device errors
def test_a_request_over_the_devices_max_payload_is_named_not_a_timeout():
    with open_link("sim", timeouts=FAST) as link:
        link.hello()
        with pytest.raises(DeviceError, match=r"3072 B but .* at most 2048 B .*max payload"):
            link.request(P.INFER, bytes(3072))
        link.max_payload = None  # as before hello: the device itself answers "frame too long"
        with pytest.raises(DeviceError, match=r"answered infer with 'frame too long' .*TMLR_DEV_MAX_PAYLOAD"):
            link.request(P.INFER, bytes(3072))


# -------------------------------------------------------------------------- 4. one network, everywhere
@pytest.mark.real
def test_calibrate_refuses_a_pair_that_is_not_one_network(tmp_path):
    f, q = real_model("kws_dscnn")
    rng = np.random.default_rng(0)
    x = rng.normal(0, 1, (8, 49, 10, 1)).astype(np.float32)
    np.savez(tmp_path / "d.npz", x=x, y=rng.integers(0, 12, 8))
    out = tmp_path / "run"
    r = subprocess.run([sys.executable, "-m", "repair", "calibrate", str(f), str(q), "--data", str(tmp_path / "d.npz"),
                        "--holdout", str(tmp_path / "d.npz"), "--serial", "sim", "--shim-only", "-o", str(out)],
                       capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 2 and "different weights" in r.stderr and "--ignore-weights" in r.stderr, r.stderr
    assert not out.exists()


@pytest.mark.real
def test_check_takes_ignore_weights(tmp_path):
    f, q = real_model("kws_dscnn")
    x = np.random.default_rng(0).normal(0, 1, (16, 49, 10, 1)).astype(np.float32)
    np.savez(tmp_path / "d.npz", x=x)
    r = CliRunner().invoke(main, ["drift", str(f), str(q), "--data", str(tmp_path / "d.npz"), "--json",
                                  str(tmp_path / "b.json"), "--ignore-weights", "--no-progress"])
    assert r.exit_code == 0, r.output
    args = ["check", str(tmp_path / "b.json"), str(q), "--data", str(tmp_path / "d.npz")]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 2 and "different weights" in r.stderr
    r = CliRunner().invoke(main, args + ["--ignore-weights"])
    assert r.exit_code == 0, r.output


# ------------------------------------------------------------------------------------------- 9. prefix
def test_prefix_in_the_printed_command_is_the_file_names(digits_plan_json, tmp_path):
    plan = tmp_path / "plan.json"
    plan.write_text(digits_plan_json)
    r = CliRunner().invoke(main, ["emit", str(plan), "-o", str(tmp_path / "c"), "--prefix", "MyModel"])
    assert r.exit_code == 0 and "make -f" in r.output and "mymodel_selftest && ./mymodel_selftest" in r.output
    assert (tmp_path / "c" / "mymodel_params.h").is_file()
    r = CliRunner().invoke(main, ["emit", str(plan), "-o", str(tmp_path / "d"), "--prefix", "_"])
    assert r.exit_code == 2 and not (tmp_path / "d").exists()


# ------------------------------------------------------------------------------------ 10. exit codes
def test_an_internal_error_exits_3_with_the_traceback_saved(monkeypatch, tmp_path):
    import repair.cli.info

    def broken(*a, **k):
        raise ZeroDivisionError("boom")

    monkeypatch.setattr(repair.cli.info, "describe", broken)
    f = task_files("digits")
    r = CliRunner().invoke(main, ["info", str(f["float"]), str(f["int8"])])
    assert r.exit_code == 3 and "internal error: ZeroDivisionError: boom" in r.stderr
    assert "Traceback" not in r.output and len(r.stderr.strip().splitlines()) == 1
    saved = r.stderr.split("traceback saved to ")[1].split(" ")[0]
    assert "ZeroDivisionError" in open(saved).read()
    os.unlink(saved)


def test_a_missing_model_is_bad_input_exit_2(tmp_path):
    f = task_files("digits")
    r = CliRunner().invoke(main, ["drift", str(f["float"]), str(tmp_path / "missing.onnx"), "--data", str(f["holdout"])])
    assert r.exit_code == 2


# ---------------------------------------------------------------------- 11. no leftovers on failure
def test_a_failed_calibrate_leaves_no_folder(tmp_path):
    out = tmp_path / "run"
    r = subprocess.run([sys.executable, "-m", "repair", "calibrate", "--serial", "loop://", "--timeout", "0.3", "-o",
                        str(out)], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 2 and "no answer" in r.stderr and not out.exists()


# ---------------------------------------------------------------------------- 12. Ctrl-C and --resume
def test_ctrl_c_says_what_is_journaled_and_how_to_resume(monkeypatch, tmp_path):
    import repair.device.calibrate as C

    def interrupted(link, pair, calib, holdout, out_dir, **kw):
        (out_dir / ".journal-calib-raw.jsonl").write_text('{"journal": 1}\n' + '{"i": 0}\n{"i": 1}\n{"i": 2}\n')
        raise KeyboardInterrupt

    monkeypatch.setattr(C, "run_calibrate", interrupted)
    out = tmp_path / "run"
    r = CliRunner().invoke(main, ["calibrate", "--serial", "sim", "--shim-only", "-o", str(out)])
    assert r.exit_code == 130
    assert "3 sample(s) journaled" in r.stderr and "--resume" in r.stderr and "Aborted" not in r.output


def test_resume_on_a_finished_run_reports_it_and_rewrites_nothing(tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "repair", "calibrate", "--serial", "sim", "--shim-only", "-o", str(out)]
    assert subprocess.run(cmd, capture_output=True, cwd=ROOT).returncode == 0
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    r = subprocess.run(cmd + ["--resume"], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0 and "already finished" in r.stdout and "bit-exact" in r.stdout, r.stderr
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == before


# ---------------------------------------------------------------------------- 13. progress in a log
def test_progress_prints_lines_when_not_a_terminal(monkeypatch):
    import io

    import repair.progress as prog

    monkeypatch.setattr(prog, "LINE_INTERVAL_S", 0.0)
    stream = io.StringIO()
    bar = prog.Progress(label="fit ", stream=stream)
    bar.start(3, "layers")
    for _ in range(3):
        bar.advance(1)
    bar.finish()
    lines = stream.getvalue().splitlines()
    assert len(lines) >= 3 and "\r" not in stream.getvalue() and lines[-1].startswith("fit: 3/3 layers (100%")


# ------------------------------------------------------------------------------- 14. what is printed
def test_fit_lists_every_file_it_wrote_and_says_not_kept_once(tmp_path):
    f = task_files("digits")
    out = tmp_path / "fit"
    r = CliRunner().invoke(main, ["fit", str(f["float"]), str(f["int8"]), "--data", str(f["calib"]), "--holdout",
                                  str(f["holdout"]), "-o", str(out), "--no-progress"])
    assert r.exit_code == 0, r.output
    wrote = r.output.strip().splitlines()[-1]
    assert all(p.name in wrote for p in out.iterdir() if not p.name.startswith("."))
    assert ": not kept" not in r.output.replace("not kept —", "")


# -------------------------------------------------------------------- 18. device commands off POSIX
def test_device_commands_import_without_posix_only_modules(tmp_path):
    """As on Windows: no tty or pty module, no os.fchmod (pyserial picks its own backend by os.name, so its
    POSIX imports are left alone). hello on a port still gives its one-line answer, and a file is still written."""
    blocker = tmp_path / "sitecustomize.py"
    blocker.write_text(textwrap.dedent("""
        import builtins, os
        del os.fchmod
        _real = builtins.__import__
        def _no_posix(name, *a, **k):
            if name.split(".")[0] in ("tty", "pty"):
                raise ImportError(f"No module named {name!r} (blocked: Windows)")
            return _real(name, *a, **k)
        builtins.__import__ = _no_posix
    """))
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{ROOT}"}
    r = subprocess.run([sys.executable, "-m", "repair", "hello", "--serial", "loop://", "--timeout", "0.3"],
                       capture_output=True, text=True, cwd=ROOT, env=env)
    assert r.returncode == 2 and "no answer from loop://" in r.stderr and "Traceback" not in r.stderr, r.stderr
    code = ("from repair.atomic import write_atomic; import repair.device.targets, repair.device.calibrate;"
            f"write_atomic({str(tmp_path / 'x.txt')!r}, 'ok')")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=env)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "x.txt").read_text() == "ok"


# ------------------------------------------------------------------------------- 6. untrusted plans
def _edit(plan: dict, name: str, key: str, value):
    entry = next(r for r in plan["repairs"] if r["repair"] == name)
    entry[key] = value
    return plan


def _edit_integer(name, key, value):
    def edit(plan):
        entry = next(r for r in plan["repairs"] if r["repair"] == name)
        entry["integer"][key] = value(entry["integer"][key]) if callable(value) else value
        return plan
    return edit


HAND_EDITS = {
    "thresholds_q wrong length": (_edit_integer("class_thresholds", "thresholds_q", lambda t: t[:-1]), "thresholds_q"),
    "thresholds_q 500": (_edit_integer("class_thresholds", "thresholds_q", lambda t: [500] + t[1:]), "thresholds_q[0]"),
    "softmax_shift 99": (_edit_integer("temperature", "softmax_shift", 99), "softmax_shift"),
    "unknown repair": (lambda p: _edit(p, "temperature", "repair", "magic"), "'magic'"),
    "kept yes": (lambda p: _edit(p, "temperature", "kept", "yes"), "kept"),
    "NaN": (lambda p: _edit(p, "temperature", "fitted", {"temperature_": float("nan")}), "nan"),
    "softmax_multiplier lots": (_edit_integer("temperature", "softmax_multiplier", "lots"), "softmax_multiplier"),
    "edited fit": (_edit_integer("temperature", "softmax_multiplier", lambda m: m - 1), "was edited"),
    "task": (lambda p: {**p, "task": "regression"}, "task"),
}


@pytest.mark.parametrize("edit", list(HAND_EDITS))
def test_hand_edited_plans_are_refused_field_by_field(digits_plan_json, tmp_path, edit):
    fn, field = HAND_EDITS[edit]
    plan = fn(json.loads(digits_plan_json))
    for r in plan["repairs"]:  # make every repair count (the digits fit may drop one)
        r["kept"] = r["kept"] if r["repair"] != "temperature" or edit == "kept yes" else True
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(plan))
    for args in (["emit", str(path), "-o", str(tmp_path / "c")],
                 ["validate", "--plan", str(path), "--data", str(task_files("digits")["holdout"]), "--serial", "loop://"]):
        r = CliRunner().invoke(main, args)
        assert r.exit_code == 2 and field in r.stderr and len(r.stderr.strip().splitlines()) == 1, (edit, r.output)
    assert not (tmp_path / "c").exists()


def test_negated_vector_scaling_multipliers_are_refused(digits_plan_json, tmp_path):
    plan = json.loads(digits_plan_json)
    entry = next(r for r in plan["repairs"] if r["repair"] == "vector_scaling")
    entry["kept"] = True
    entry["integer"]["multipliers"] = [-m for m in entry["integer"]["multipliers"]]
    (tmp_path / "plan.json").write_text(json.dumps(plan))
    r = CliRunner().invoke(main, ["emit", str(tmp_path / "plan.json"), "-o", str(tmp_path / "c")])
    assert r.exit_code == 2 and "multipliers" in r.stderr and "edited" in r.stderr


def test_a_drift_report_is_untrusted_too(tmp_path):
    f = task_files("digits")
    r = CliRunner().invoke(main, ["drift", str(f["float"]), str(f["int8"]), "--data", str(f["holdout"]), "--json",
                                  str(tmp_path / "b.json"), "--no-progress"])
    assert r.exit_code == 0
    d = json.loads((tmp_path / "b.json").read_text())
    d["tensors"][0]["sqnr_db"] = "high"
    (tmp_path / "b.json").write_text(json.dumps(d))
    r = CliRunner().invoke(main, ["check", str(tmp_path / "b.json"), str(f["int8"]), "--data", str(f["holdout"])])
    assert r.exit_code == 2 and "tensors[0].sqnr_db" in r.stderr


# ------------------------------------------------------------------------------------------- 8. CSV
def test_a_flat_csv_feeds_a_model_with_a_multi_dimensional_input(tmp_path):
    f = task_files("digits")
    d = load_calibration(f["holdout"])
    x, y = d.x[:50].reshape(50, -1), d.y[:50]
    lines = ["y," + ",".join(f"p{i}" for i in range(x.shape[1]))]
    lines += [f"{label}," + ",".join(f"{v:.9g}" for v in row) for label, row in zip(y, x)]
    (tmp_path / "d.csv").write_text("\n".join(lines) + "\n")
    r = CliRunner().invoke(main, ["drift", str(f["float"]), str(f["int8"]), "--data", str(tmp_path / "d.csv"),
                                  "--json", str(tmp_path / "r.json"), "--no-progress"])
    assert r.exit_code == 0, r.output
    np.savez(tmp_path / "d.npz", x=d.x[:50], y=y)
    r2 = CliRunner().invoke(main, ["drift", str(f["float"]), str(f["int8"]), "--data", str(tmp_path / "d.npz"),
                                   "--json", str(tmp_path / "r2.json"), "--no-progress"])
    assert r2.exit_code == 0
    a, b = (json.loads((tmp_path / n).read_text())["outputs"][0] for n in ("r.json", "r2.json"))
    assert a["accuracy_int8"] == b["accuracy_int8"] and a["top1_agreement"] == b["top1_agreement"]


def test_a_header_only_csv_says_it_has_no_rows(tmp_path):
    (tmp_path / "h.csv").write_text("y,a,b\n")
    f = task_files("digits")
    r = CliRunner().invoke(main, ["info", str(f["float"]), str(f["int8"]), "--data", str(tmp_path / "h.csv")])
    assert r.exit_code == 2 and "no rows" in r.stderr


def test_a_csv_of_the_wrong_width_names_the_sizes(tmp_path):
    (tmp_path / "w.csv").write_text("1,2,3\n4,5,6\n")
    f = task_files("digits")
    r = CliRunner().invoke(main, ["drift", str(f["float"]), str(f["int8"]), "--data", str(tmp_path / "w.csv")])
    assert r.exit_code == 2 and "784 values per sample" in r.stderr


# ---------------------------------------------------------------- 5. a missed false-alarm target
def test_a_missed_anomaly_target_is_a_warning_in_the_output_and_the_plan(tmp_path):
    f = task_files("ecg")
    r = CliRunner().invoke(main, ["fit", str(f["float"]), str(f["int8"]), "--data", str(f["calib"]), "--holdout",
                                  str(f["holdout"]), "-o", str(tmp_path / "fit"), "--repairs", "score_threshold"])
    assert r.exit_code == 0, r.output
    assert re.search(r"WARNING: false-alarm rate on the holdout 1[0-9].[0-9]% misses the 10.0% target", r.output)
    entry = json.loads((tmp_path / "fit" / "plan.json").read_text())["repairs"][0]
    assert entry["holdout"]["target_check"]["missed"] and "misses" in entry["warning"]
    # on a holdout where the target holds, no warning
    r = CliRunner().invoke(main, ["fit", str(f["float"]), str(f["int8"]), "--data", str(f["calib"]), "--holdout",
                                  str(f["calib"]), "-o", str(tmp_path / "fit2"), "--repairs", "score_threshold"])
    assert r.exit_code == 0 and "WARNING" not in r.output


def test_clopper_pearson_interval_known_values():
    from repair import metrics as M

    lo, hi = M.rate_interval(0, 10)  # (0, 1 − 0.025^(1/10))
    assert lo == 0.0 and abs(hi - (1 - 0.025 ** 0.1)) < 1e-12
    lo, hi = M.rate_interval(5, 10)  # symmetric around 0.5
    assert abs(lo + hi - 1.0) < 1e-12 and abs(lo - 0.18708602) < 1e-7


# ------------------------------------------------------------ 16. unlabelled scores named as anomalies
def test_fit_scores_warns_when_unlabelled_ids_look_like_anomalies(tmp_path):
    rows = [f"normal_id_01_{i:08d}.wav,{1.0 + 0.01 * i}" for i in range(40)]
    rows += [f"anomaly_id_01_{i:08d}.wav,{3.0 + 0.01 * i}" for i in range(10)]
    (tmp_path / "s.csv").write_text("\n".join(rows) + "\n")
    args = ["fit-scores", str(tmp_path / "s.csv"), "--target-far", "0.1", "-o"]
    r = CliRunner().invoke(main, args + [str(tmp_path / "p.json")])
    assert r.exit_code == 0 and "10 of 50 ids start with 'anomaly'" in r.stderr and "--anomaly-prefix anomaly" in r.stderr
    r = CliRunner().invoke(main, args + [str(tmp_path / "p2.json"), "--anomaly-prefix", "anomaly"])
    assert r.exit_code == 0 and "warning" not in r.stderr


# ------------------------------------------------------------------ 2. models that end in a Softmax
@pytest.fixture(scope="module")
def softmax_digits(tmp_path_factory):
    """The bundled digits model with a Softmax appended, quantized by quantize_static, its output quantized as
    TFLite quantizes a Softmax output (scale 1/256, zero point −128)."""
    import onnx
    from onnx import helper, numpy_helper
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    d = tmp_path_factory.mktemp("softmax_digits")
    f = task_files("digits")
    m = onnx.load(f["float"])
    out = m.graph.output[0].name
    for n in m.graph.node:
        n.output[:] = [o + "_logits" if o == out else o for o in n.output]
    m.graph.node.append(helper.make_node("Softmax", [out + "_logits"], [out], axis=-1, name="softmax"))
    onnx.save(m, d / "float.onnx")
    calib = load_calibration(f["calib"])

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter(calib.x[i:i + 1] for i in range(len(calib.x)))

        def get_next(self):
            b = next(self.it, None)
            return None if b is None else {m.graph.input[0].name: b}

    quantize_static(str(d / "float.onnx"), str(d / "int8.onnx"), Reader(), quant_format=QuantFormat.QDQ,
                    per_channel=False, activation_type=QuantType.QInt8, weight_type=QuantType.QInt8)
    q = onnx.load(d / "int8.onnx")
    last_q = next(n for n in q.graph.node if n.op_type == "QuantizeLinear" and n.input[0] != out + "_logits"
                  and q.graph.node[[x.name for x in q.graph.node].index(n.name) - 1].op_type == "Softmax")
    for init in q.graph.initializer:
        if init.name == last_q.input[1]:
            init.CopyFrom(numpy_helper.from_array(np.array(1 / 256, np.float32), init.name))
    onnx.save(q, d / "int8.onnx")
    return {"float": d / "float.onnx", "int8": d / "int8.onnx", "calib": f["calib"], "holdout": f["holdout"]}


def test_a_softmax_model_gets_no_second_softmax(softmax_digits):
    from repair import fixedpoint as fp
    from repair.plan.shims import shim_from_plan
    from repair.program import lower

    s = softmax_digits
    pair = load_pair(s["float"], s["int8"])
    plan = fit_plan(pair, load_calibration(s["calib"]), load_calibration(s["holdout"]),
                    repairs=("temperature", "vector_scaling", "class_thresholds"))
    by = {r.repair: r.to_dict() for r in plan.repairs}
    assert "model_softmax" in plan.provenance
    assert by["temperature"]["kept"] and "folded into the model's Softmax" in by["temperature"]["reason"]
    m = by["temperature"]["holdout"]["metrics"]
    assert m["ece_after"] < m["ece_before"] < 0.1 and m["nll_after"] < m["nll_before"]
    assert not by["vector_scaling"]["kept"] and "own Softmax" in by["vector_scaling"]["reason"]
    th = by["class_thresholds"]["integer"]["thresholds_q"]
    assert max(th) < 127 and by["class_thresholds"]["int_agreement"]["share"] == 1.0  # every class can be decided
    shim = shim_from_plan(plan)
    assert shim.softmax is None and shim.thresholds == th
    # the fold is exact: the repaired model's integer program is the original with the Softmax's beta changed
    folded, original = lower(plan.repaired_model), lower(pair.int8.proto)
    t = by["temperature"]["integer"]
    original.layers[-1].p.update(mult=t["softmax_multiplier"], shift=t["softmax_shift"], diff_min=t["softmax_diff_min"])
    inp = folded.tensors[folded.input]
    x = load_calibration(s["holdout"]).x
    q = np.clip(np.round(x / inp.scale) + inp.zero_point, -128, 127).astype(np.int8).reshape(len(x), -1)
    np.testing.assert_array_equal(folded.run(q), original.run(q))
    assert fp.softmax_params(t["beta"], t["input_scale"])[1] == t["softmax_shift"]


def test_a_softmax_model_on_the_device_and_in_c(softmax_digits, tmp_path):
    s = softmax_digits
    out = tmp_path / "run"
    r = subprocess.run([sys.executable, "-m", "repair", "calibrate", str(s["float"]), str(s["int8"]), "--data",
                        str(s["calib"]), "--holdout", str(s["holdout"]), "--serial", "sim", "-o", str(out)],
                       capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["bit_exact"]["differ"] == 0
    assert report["model_on_device"]["bit_exact_vs_python_reference"]["differ"] == 0
    plan = json.loads((out / "plan.json").read_text())
    assert not next(r for r in plan["repairs"] if r["repair"] == "temperature")["kept"]  # no logits from a device
    params = (out / "c" / "tmlr_model_params.h").read_text()
    assert "TMLR_MODEL_INPUT_IS_PROBABILITIES 1" in params and "SOFTMAX_MULT" not in params
    assert not (out / "c" / "tmlr" / "src" / "tmlr_softmax_s8.c").exists()
    build = subprocess.run(["make", "-s", "-f", str(out / "c" / "tmlrepair.mk"), "tmlr_model_selftest"],
                           capture_output=True, text=True, cwd=tmp_path)
    assert build.returncode == 0, build.stderr
    run = subprocess.run([str(tmp_path / "tmlr_model_selftest")], capture_output=True, text=True)
    assert run.returncode == 0 and "0 failed" in run.stdout


@pytest.mark.real
def test_sww_thresholds_act_on_its_own_probabilities(tmp_path):
    from repair.data import CalibrationSet

    from .conftest import REAL

    pair = load_pair(*real_model("sww"))
    z = np.load(REAL / "data" / "sww_calibration_samples.npz")
    x, y = z["specs"].astype(np.float32), z["labels"].astype(np.int64)
    calib = CalibrationSet(x=x[0::2], y=y[0::2], source="sww even")
    holdout = CalibrationSet(x=x[1::2], y=y[1::2], source="sww odd")
    plan = fit_plan(pair, calib, holdout, repairs=("temperature", "vector_scaling", "class_thresholds"))
    by = {r.repair: r.to_dict() for r in plan.repairs}
    th = by["class_thresholds"]
    assert max(th["integer"]["thresholds_q"]) < 127 and th["int_agreement"]["share"] == 1.0
    assert th["holdout"]["rates"]["undecided"] < 0.5
    m = by["temperature"]["holdout"]["metrics"]
    assert m["ece_before"] < 0.25  # the model's own probabilities, not a softmax of them (that gave 0.38)


# ----------------------------------------------------------------------------- 15. the HTML pages
def test_html_reports_leave_the_callers_matplotlib_alone(tmp_path):
    """No pyplot, no backend switch: a notebook keeps its own (the pages are drawn on bare Figures)."""
    code = textwrap.dedent(f"""
        import sys, matplotlib
        matplotlib.use("pdf")
        from repair import load_pair, load_calibration, measure_drift
        from repair.drift.html import render_html
        f = {str(task_files("digits")["float"])!r}; q = {str(task_files("digits")["int8"])!r}
        page = render_html(measure_drift(load_pair(f, q), load_calibration({str(task_files("digits")["holdout"])!r})))
        assert matplotlib.get_backend() == "pdf", matplotlib.get_backend()
        assert "matplotlib.pyplot" not in sys.modules
        assert page.count("data:image/png;base64") == 3 and "pw2_relu_out" in page
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr


def test_the_fit_report_plots_bias_correction_only_when_kept():
    from repair.plan.report import _bias_plot

    row = {"layer": "conv1", "op": "Conv", "shift_rms": 1.0, "units_max_abs": 5.0}
    assert _bias_plot({"in_model": [{"repair": "bias_correction", "kept": False, "details": [row]}]}) == ""
    assert "Bias correction per layer" in _bias_plot({"in_model": [{"repair": "bias_correction", "kept": True,
                                                                      "details": [row]}]})


def test_a_tflite_model_is_read_and_checked_against_its_pair(tmp_path):
    from .tflite_builder import random_op_model

    model = random_op_model("fc", np.random.default_rng(0))[0]
    (tmp_path / "m.tflite").write_bytes(model)
    f = task_files("digits")
    r = CliRunner().invoke(main, ["info", str(f["float"]), str(tmp_path / "m.tflite")])
    assert r.exit_code == 2 and "not the same network" in r.stderr and len(r.stderr.strip().splitlines()) == 1
