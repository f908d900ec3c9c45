"""The reference device runs the int8 model: lowering, the Python integer twin, the C kernels (host and QEMU)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from repair.data import load_calibration
from repair.device.targets import build, model_source, open_link
from repair.errors import ModelError
from repair.models.graph import QuantParams
from repair.program import lower

from .conftest import ROOT, TASKS, real_model, task_files
from .test_device import needs_qemu
from .test_device_fuzz import SANITIZE


def _inputs(path, task=None, n=64):
    prog = lower(path)
    tin = prog.tensors[prog.input]
    if task:
        x = load_calibration(task_files(task)["holdout"]).x[:n]
        return prog, QuantParams(tin.scale, tin.zero_point, "int8").quantize(x).reshape(len(x), -1)
    rng = np.random.default_rng(0)
    xq = rng.integers(-128, 128, (n, tin.size)).astype(np.int8)
    xq[0], xq[1] = -128, 127
    return prog, xq


def _on_device(url, prog, xq, title):
    out_size = prog.tensors[prog.output].size
    with open_link(url, model_c=model_source(prog, title)) as link:
        hello = link.hello()
        assert hello.has_model and hello.model_input.size == xq.shape[1] and hello.model_output.size == out_size
        return np.array([link.infer(x, out_size).raw for x in xq])


def _models():
    cases = [(str(task_files(t)["int8"]), t) for t in TASKS]
    return cases + [("kws_dscnn", None), ("ad01", None)]


def _path(name):
    return name if name.endswith(".onnx") else str(real_model(name)[1])


@pytest.mark.parametrize("name,task", _models(), ids=lambda v: str(v).split("/")[-2] if "/" in str(v) else str(v))
def test_c_model_equals_the_python_integer_reference_on_the_host(name, task):
    prog, xq = _inputs(_path(name), task, n=200)
    got = _on_device("sim", prog, xq, name)
    np.testing.assert_array_equal(got, prog.run(xq).reshape(len(xq), -1))


@needs_qemu
@pytest.mark.parametrize("name,task", _models(), ids=lambda v: str(v).split("/")[-2] if "/" in str(v) else str(v))
def test_c_model_equals_the_python_integer_reference_on_the_cortex_m4(name, task):
    prog, xq = _inputs(_path(name), task, n=12)
    got = _on_device("qemu", prog, xq, name)
    np.testing.assert_array_equal(got, prog.run(xq).reshape(len(xq), -1))


def test_c_model_under_sanitizers():
    prog, xq = _inputs(str(real_model("kws_dscnn")[1]), None, n=8)
    exe = build("posix", model_sources=(model_source(prog, "kws"),), extra_flags=SANITIZE)
    from repair.device.framing import decode_frame, encode_frame
    from repair.device.protocol import INFER

    stream = b"".join(encode_frame(INFER, i, x.tobytes()) for i, x in enumerate(xq))
    proc = subprocess.run([str(exe)], input=stream, capture_output=True, timeout=120)
    assert proc.returncode == 0 and not proc.stderr, proc.stderr.decode(errors="replace")[-1500:]
    replies = [decode_frame(c) for c in proc.stdout.split(b"\x00")[:-1]]
    got = np.array([np.frombuffer(r.payload, np.int8, 12, 9) for r in replies])
    np.testing.assert_array_equal(got, prog.run(xq).reshape(len(xq), -1))


@pytest.mark.parametrize("task,min_top1", [("digits", 0.95), ("motions", 0.99)])
def test_agreement_with_onnxruntime_is_measured(task, min_top1):
    """The integer kernels round once per layer where onnxruntime's QDQ path rounds in float: outputs differ
    by a few LSB at most, and the decisions almost never (measured figures in docs/reference_device.md)."""
    from repair.device.session import device_vs_host
    from repair.models import load_pair
    from repair.plan.fit import int8_outputs

    files = task_files(task)
    pair = load_pair(files["float"], files["int8"])
    data = load_calibration(files["holdout"])
    prog = lower(files["int8"])
    tin = prog.tensors[prog.input]
    q_dev = prog.run(QuantParams(tin.scale, tin.zero_point, "int8").quantize(data.x)).reshape(len(data), -1)
    d = device_vs_host(q_dev.astype(np.int64), int8_outputs(pair, data.x)[1], True)
    assert d["top1_agreement"] >= min_top1 and d["within_1_lsb"] > 0.6 and d["max_abs_lsb"] <= 16


def _qdq_model_with(tmp_path, op: str):
    """x → Q → DQ → <op> → Q → DQ: one unsupported op in an otherwise int8 model."""
    s, z = numpy_helper.from_array(np.array(0.1, np.float32), "s"), numpy_helper.from_array(np.array(0, np.int8), "z")
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["xq"]),
             helper.make_node("DequantizeLinear", ["xq", "s", "z"], ["xd"]),
             helper.make_node(op, ["xd"], ["y"], name="the_odd_one"),
             helper.make_node("QuantizeLinear", ["y", "s", "z"], ["yq"]),
             helper.make_node("DequantizeLinear", ["yq", "s", "z"], ["out"])]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
                          [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["N", 4])], [s, z])
    path = tmp_path / "odd.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def test_an_unsupported_op_is_named_with_its_node(tmp_path):
    path = _qdq_model_with(tmp_path, "Sigmoid")
    with pytest.raises(ModelError, match=r"the_odd_one.*\(Sigmoid\): not supported by the reference device"):
        lower(path)
    with pytest.raises(ModelError, match=r"\.onnx: node 'the_odd_one'"):  # the model is named too
        lower(path)


def test_calibrate_runs_the_model_on_sim(tmp_path):
    out = tmp_path / "run"
    r = subprocess.run([sys.executable, "-m", "repair", "calibrate", "--task", "motions", "-o", str(out)],
                       capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    rep = json.loads((out / "report.json").read_text())
    model = rep["model_on_device"]
    assert model["bit_exact_vs_python_reference"]["differ"] == 0 and model["samples"] == 240
    assert rep["drift"]["device_vs_host_int8"]["within_1_lsb"] > 0.9
    assert "model on the device" in r.stdout and not list(out.glob(".journal-*"))


@needs_qemu
def test_calibrate_runs_the_model_on_the_cortex_m4(tmp_path):
    out = tmp_path / "run"
    r = subprocess.run([sys.executable, "-m", "repair", "calibrate", "--serial", "qemu", "--task", "motions", "-o",
                        str(out)], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    model = json.loads((out / "report.json").read_text())["model_on_device"]
    assert model["bit_exact_vs_python_reference"]["differ"] == 0
    assert model["instructions_per_inference"] > model["samples"]  # a real count, from -icount
