"""Loading model pairs: I/O specs, int8 I/O quant params, quantize/dequantize semantics."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

from repair.cli import main
from repair.models import QuantParams, load_pair

from .conftest import TASKS, real_model, task_files


@pytest.mark.parametrize("task", TASKS)
def test_bundled_pairs_load_with_float_io(task):
    f = task_files(task)
    pair = load_pair(f["float"], f["int8"])
    assert not pair.int8_io_is_integer
    q_in = pair.int8.inputs[0].quant
    assert q_in is not None and q_in.dtype == "int8" and q_in.scale > 0
    assert pair.float.inputs[0].shape == pair.int8.inputs[0].shape


def test_ad01_int8_io_quant_params_from_graph():
    pair = load_pair(*real_model("ad01"))
    assert pair.int8_io_is_integer
    qi, qo = pair.int8.inputs[0].quant, pair.int8.outputs[0].quant
    assert (round(qi.scale, 3), qi.zero_point, qi.dtype) == (0.391, 89, "int8")
    assert (round(qo.scale, 3), qo.zero_point) == (0.364, 96)


def test_info_prints_int8_io_scale_and_zero_point():
    f, q = real_model("ad01")
    r = CliRunner().invoke(main, ["info", str(f), str(q)])
    assert r.exit_code == 0, r.output
    assert "scale 0.391015232, zero point 89 (int8)" in r.output
    assert "scale 0.364498466, zero point 96 (int8)" in r.output
    assert "int8 I/O: integer" in r.output


@pytest.mark.parametrize("task", TASKS)
def test_info_on_every_bundled_pair_with_data(task):
    f = task_files(task)
    r = CliRunner().invoke(main, ["info", str(f["float"]), str(f["int8"]), "--data", str(f["calib"])])
    assert r.exit_code == 0, r.output
    assert "zero point" in r.output and "labels:" in r.output


def test_quantize_matches_onnx_quantizelinear_bit_for_bit():
    """QuantParams.quantize is ONNX QuantizeLinear: round half to even, then saturate."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    qp = QuantParams(0.05, -3, "int8")
    node = helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"])
    g = helper.make_graph([node], "q", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N"])],
                          [helper.make_tensor_value_info("q", TensorProto.INT8, ["N"])],
                          [numpy_helper.from_array(np.array(qp.scale, np.float32), "s"),
                           numpy_helper.from_array(np.array(qp.zero_point, np.int8), "z")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    ties = (np.arange(-300, 300) + 0.5) * np.float32(qp.scale)
    x = np.concatenate([rng.normal(0, 4, 20000), ties, [-1e9, 1e9, 0.0, -0.0]]).astype(np.float32)
    np.testing.assert_array_equal(qp.quantize(x), sess.run(None, {"x": x})[0])


def test_int8_feed_and_output_dequantize_round_trip():
    pair = load_pair(*real_model("ad01"))
    qi = pair.int8.inputs[0].quant
    k = np.arange(-128, 128, dtype=np.int8).reshape(1, -1)[:, :640].repeat(3, axis=0)
    k = np.resize(k, (3, 640)).astype(np.int8)
    x = qi.dequantize(k)
    fed = pair.int8_feed({pair.float.inputs[0].name: x})
    np.testing.assert_array_equal(fed[pair.int8.inputs[0].name], k)


def test_max_batch_respects_fixed_batch_dimension():
    assert load_pair(*real_model("kws_dscnn")).max_batch == 1
    f = task_files("digits")
    assert load_pair(f["float"], f["int8"]).max_batch is None
