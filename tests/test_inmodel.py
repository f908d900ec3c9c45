"""In-model repairs: the editor keeps numbers consistent, each repair does what its equation says, the
fit meets the issue's bars on the bundled tasks, and bad input gets one clear line."""

from __future__ import annotations

import hashlib
from collections import Counter

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from click.testing import CliRunner

from repair.cli import main
from repair.data import CalibrationSet, load_calibration, random_in_range
from repair.errors import DataError, ModelError, PairError
from repair.models import load_pair
from repair.repairs.in_model import QdqModel, fit_in_model
from repair.repairs.in_model.bias_correction import bias_correction, correct_layer
from repair.repairs.in_model.context import FitContext
from repair.repairs.in_model.equalization import (
    _in_multiplier,
    _in_ranges,
    _out_ranges,
    equalize,
)
from repair.repairs.in_model.parts import range_params
from repair.repairs.in_model.thresholds import fit_thresholds

from .conftest import (
    DATASETS,
    TASKS,
    make_float_model,
    quantize_model,
    real_model,
    task_files,
)


@pytest.fixture(scope="module")
def digits():
    f = task_files("digits")
    pair = load_pair(f["float"], f["int8"])
    return pair, load_calibration(f["calib"]), load_calibration(f["holdout"])


def _shift_after(ctx: FitContext, qm: QdqModel, layer) -> np.ndarray:
    """Remaining float − int8 pre-activation mean per channel, in bias units, with the model as it stands: the int8
    side as the device computes it (the integer program's accumulators, what bias correction measures)."""
    from repair.repairs.in_model.bias_correction import ProgramMeans

    f_name = ctx.float_preact(layer)
    f = ctx.float_channel_means([f_name], {f_name: layer.preact_axis})[f_name].mean(0)
    q = ProgramMeans(ctx)(qm, layer).mean(0)
    return (f / qm.channel_divisor(layer.name, f.size) - q) / qm.bias_lsb(layer)


# ---------------------------------------------------------------------------------------------- editor
def test_unedited_model_round_trips_byte_for_byte(digits):
    pair = digits[0]
    out = QdqModel(pair.int8.proto).to_model()
    assert out.SerializeToString() == pair.int8.proto.SerializeToString()


def test_activation_rescale_is_consistent_and_keeps_reader_biases(digits):
    pair = digits[0]
    qm = QdqModel(pair.int8.proto)
    key = next(k for k, a in qm.activations.items() if not a.interface and not a.model_input and
               any(qm.input_activation(lay) == k for lay in qm.layers))
    reader = next(lay for lay in qm.layers if qm.input_activation(lay) == key)
    before = qm.bias(reader)
    scale, zp = qm.activation_params(key)
    qm.set_activation(key, scale * 0.7, -100)
    qm2 = QdqModel(qm.to_model())  # re-read from the written model
    act = qm2.activations[key]
    assert {qm2.params(n) for n in (*act.q_nodes, *act.dq_nodes)} == {(np.float32(scale * 0.7).item(), -100)}
    r2 = qm2.layer(reader.name)
    assert np.all(np.abs(qm2.bias(r2) - before) <= 0.5 * qm2.bias_lsb(r2) * (1 + 1e-6))
    onnx.checker.check_model(qm2.to_model())
    # a model's input quantization is refitted like any range (an int8 input's: the plan says so loudly); an int8
    # output's is what the shims and firmware read: never changed
    assert any(a.model_input and not a.interface for a in qm.activations.values())
    tflite = QdqModel(load_pair(DATASETS / "digits_tflite" / "float.tflite", DATASETS / "digits_tflite" / "int8.tflite")
                      .int8.proto)
    assert any(a.int8_input and not a.interface for a in tflite.activations.values())
    with pytest.raises(ModelError, match="output"):
        tflite.set_activation(next(k for k, a in tflite.activations.items() if "output" in a.interface), 1.0, 0)


def test_range_params_equal_onnxruntime():
    from onnxruntime.quantization.quant_utils import compute_scale_zp

    rng = np.random.default_rng(0)
    for _ in range(500):
        lo, hi = sorted(rng.normal(0, 3, 2))
        if rng.random() < 0.3:
            lo = 0.0
        s, z = range_params(lo, hi)
        zp_ref, s_ref = compute_scale_zp(np.float32(min(lo, 0)), np.float32(max(hi, 0)), np.int8(-128), np.int8(127))
        assert int(zp_ref) == z and s == pytest.approx(float(s_ref), rel=1e-6)


# ---------------------------------------------------------------------------------------------- bias correction
def test_sequential_bias_correction_leaves_at_most_half_a_unit_in_every_layer(digits):
    pair, calib, _ = digits
    ctx = FitContext(pair, calib.x.astype(np.float32))
    qm = QdqModel(pair.int8.proto)
    before = {lay.name: np.abs(_shift_after(ctx, qm, lay)).max() for lay in qm.layers}
    rows = bias_correction(ctx, qm)
    assert [r["decision"] for r in rows] == ["corrected"] * len(qm.layers)
    for lay in qm.layers:
        left = np.abs(_shift_after(ctx, qm, lay))
        # adding k units to a bias moves the pre-activation mean by exactly k units: rounding leaves ≤ 0.5
        assert left.max() <= 0.5 + 1e-3, (lay.name, left.max(), before[lay.name])
    assert max(before.values()) > 20  # the stress case has something to correct


def test_one_shot_correction_over_corrects_downstream(digits):
    """Measuring every layer before any correction (one shot) leaves layers off by many units."""
    pair, calib, _ = digits
    ctx = FitContext(pair, calib.x.astype(np.float32))
    shot = QdqModel(pair.int8.proto)
    probe = QdqModel(pair.int8.proto)
    for lay in probe.layers:  # measure all on the uncorrected model, write into the one-shot copy
        row = correct_layer(ctx, probe.copy(), lay)
        assert row["decision"].startswith("corrected")
    units = {lay.name: np.rint(_shift_after(ctx, probe, lay)) for lay in probe.layers}
    for lay in shot.layers:
        shot.set_bias_int(lay, shot.bias_int(lay) + units[lay.name])
    worst = max(np.abs(_shift_after(ctx, shot, lay)).max() for lay in shot.layers)
    assert worst > 2.0


def test_model_without_biases_gets_one_and_the_same_ops(tmp_path):
    f = make_float_model(tmp_path / "f.onnx", bias=False, channels=6)
    x = np.random.default_rng(3).uniform(0, 1, (96, 1, 8, 8)).astype(np.float32)
    q = quantize_model(f, tmp_path / "q.onnx", x[:48])
    pair = load_pair(f, q)
    qm = QdqModel(pair.int8.proto)
    assert all(lay.bias_dq is None for lay in qm.layers)
    rows = bias_correction(FitContext(pair, x[:48]), qm)
    added = [r for r in rows if "no bias: one was added" in r.get("why", "")]
    assert added, rows
    m = qm.to_model()
    onnx.checker.check_model(m)
    assert set(Counter(n.op_type for n in m.graph.node)) == set(Counter(n.op_type for n in pair.int8.proto.graph.node))
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    assert np.isfinite(sess.run(None, {"x": x})[0]).all()


def test_saturating_correction_is_clamped_and_reported(tiny):
    pair = load_pair(tiny["float"], tiny["int8"])
    qm = QdqModel(pair.int8.proto)
    conv = qm.layers[0]
    # a weight scale 1e9 times too fine: int8 pre-activations collapse, and the bias unit is ~1e-12
    w_scale = qm.inits[conv.weight_dq.input[1]]
    qm._own(conv.weight_dq, 1, (w_scale * 1e-9).astype(np.float32), "t")
    qm._sync_bias_scale(conv)
    x = load_calibration(tiny["data"]).x
    row = correct_layer(FitContext(pair, x), qm, conv)
    assert row["decision"] == "corrected, saturated"
    assert "saturated" in row["why"] and "int32" in row["why"] and row["saturated_channels"]
    assert np.abs(qm.bias_int(conv)).max() == 2 ** 31 - 1 or qm.bias_int(conv).min() == -2 ** 31


# ---------------------------------------------------------------------------------------------- equalization
def test_equalization_keeps_the_float_function_and_evens_ranges(digits):
    pair, calib, _ = digits
    ctx = FitContext(pair, calib.x.astype(np.float32))
    qm = QdqModel(pair.int8.proto)
    rows = equalize(ctx, qm)
    pairs = [r for r in rows if r["decision"] == "equalized"]
    assert {r["layer"] for r in pairs} == {"conv1", "dw1", "pw1", "dw2", "pw2"}
    assert any("depthwise" in r["why"] for r in pairs)
    for r in pairs:
        l1, l2 = qm.layer(r["layer"]), qm.layer(r["next"])
        s1 = qm.channel_divisor(l1.name, qm.n_out(l1))
        s_in = qm.channel_divisor(qm.input_activation(l2), qm.n_out(l1))
        assert np.array_equal(s1, s_in)
        # dequantized new weights × the channel scales give back the float weights, to one quantization step
        w1f, _, src = ctx.float_weights(QdqModel(pair.int8.proto).layer(l1.name), QdqModel(pair.int8.proto))
        assert src == "float model"
        s0 = qm.channel_divisor(qm.input_activation(l1) or "", w1f.shape[1] * l1.group)  # l1's own input
        back = qm.weights(l1) * s1.reshape(-1, *([1] * (w1f.ndim - 1))) / _in_multiplier(qm, l1, s0)
        step = qm.weight_scale(l1).max() * s1.max() / s0.min()
        assert np.abs(back - w1f).max() <= 0.5 * step * (1 + 1e-5)
        w1, w2 = qm.weights(l1), qm.weights(l2)
        r1, r2 = _out_ranges(l1, w1), _in_ranges(qm, l2, w2, qm.n_out(l1))
        live = (r1 > 0.05 * r1.max()) & (r2 > 0.05 * r2.max())
        assert np.median(np.abs(np.log(r1[live] / r2[live]))) < 0.3  # ranges even out (up to rounding)


def test_in_multiplier_maps_grouped_channels():
    from repair.repairs.in_model.qdq import Layer

    class Fake:
        def __init__(self, shape):
            self.shape = shape

        def weight_q(self, _):
            return np.zeros(self.shape)

    s = np.arange(1, 9, dtype=float)
    dw = Layer("dw", "Conv", None, None, None, None, None, "", group=8)
    m = _in_multiplier(Fake((16, 1, 3, 3)), dw, s)  # depthwise, multiplier 2: rows 2c, 2c+1 read channel c
    assert np.array_equal(m[:, 0, 0, 0], np.repeat(s, 2))
    g2 = Layer("g", "Conv", None, None, None, None, None, "", group=2)
    m = _in_multiplier(Fake((4, 4, 1, 1)), g2, s)  # 2 groups of 4 inputs, 2 outputs each
    assert np.array_equal(m[0, :, 0, 0], s[:4]) and np.array_equal(m[3, :, 0, 0], s[4:])


# ---------------------------------------------------------------------------------------------- thresholds
def test_thresholds_never_raise_the_calibration_output_error(digits):
    pair, calib, _ = digits
    ctx = FitContext(pair, calib.x[:256].astype(np.float32))
    qm = QdqModel(pair.int8.proto)
    rows = fit_thresholds(ctx, qm)
    summary = rows[-1]["why"]
    before, after = (float(v) for v in summary.split("calibration ")[1].split(" → "))
    assert after <= before
    changed = [r for r in rows if r["decision"] not in ("kept", "summary")]
    assert changed and all(r["scale_after"] != r["scale_before"] or r["zero_point_after"] != r["zero_point_before"]
                           for r in changed)
    # float I/O: the model quantizes its input and dequantizes its output itself; both ranges are refitted too
    keys = {r["activation"] for r in rows}
    assert not any("interface" in r["why"] for r in rows)
    assert any(a.model_input and k in keys for k, a in qm.activations.items())


def test_a_folds_float_values_are_the_whole_splits_draws_from_its_own_samples(digits):
    """One float pass for every fold: a fold's values are drawn from its samples only (each value found in that
    sample's tensor, in the channel recorded for it, divided by that channel's divisor), its extremes are its own
    samples' (not the split's), and the split itself draws about VALUE_SAMPLE values."""
    from repair.repairs.in_model.context import VALUE_SAMPLE

    pair, calib, _ = digits
    x = calib.x[:300].astype(np.float32)
    ctx = FitContext(pair, x, batch_size=128)
    qm = QdqModel(pair.int8.proto)
    name = next(ctx.float_tensor(k) for k, a in qm.activations.items()
                if not a.interface and not a.model_input and ctx.float_tensor(k))
    fold = np.arange(0, 300, 3)  # every third sample
    sub = ctx.on_subset(fold)
    full = np.concatenate([b[name] for b in ctx.run(pair.float.proto, [name], x, int8=False)])
    channels = full.shape[1]
    divisor = np.linspace(0.5, 2.0, channels)
    whole = ctx.float_values(name)
    assert abs(len(whole) - 2 - VALUE_SAMPLE) <= 3
    assert whole[-2] == full.min() and whole[-1] == full.max()
    values = sub.float_values(name, divisor)
    mine = full[fold] / divisor.reshape(1, -1, *([1] * (full.ndim - 2)))
    assert values[-2] == pytest.approx(mine.min(), rel=1e-12) and values[-1] == pytest.approx(mine.max(), rel=1e-12)
    drawn, samples, chans = ctx._value_draws([name])[name]
    in_fold = np.isin(samples, fold)
    assert len(values) - 2 == in_fold.sum() and 0.25 < in_fold.mean() < 0.42
    per_sample = full.reshape(len(full), channels, -1)
    for v, smp, c in list(zip(drawn[in_fold], samples[in_fold], chans[in_fold]))[:200]:
        assert v in per_sample[smp, c]
    np.testing.assert_array_equal(values[:-2], drawn[in_fold] / divisor[chans[in_fold]])


@pytest.mark.parametrize("task", TASKS)
def test_edits_run_through_one_part_equal_each_edited_model_run_whole(task):
    """edited_outputs (one session over the part of the graph the edits reach, fed the cut) gives exactly the
    outputs of running each edited model whole, for a range edit of every activation and a bias edit."""
    from repair.repairs.in_model.edits import edited_outputs
    from repair.repairs.in_model.thresholds import candidates

    f = task_files(task)
    pair = load_pair(f["float"], f["int8"])
    x = load_calibration(f["calib"]).x[:96].astype(np.float32)
    ctx = FitContext(pair, x, batch_size=40)  # three batches, the last one short
    qm = QdqModel(pair.int8.proto)
    edits = []
    for key, act in qm.activations.items():
        if act.interface:
            continue
        t = qm.copy()
        lo, hi = candidates(np.random.default_rng(0).normal(0, 1, 5000))["p99"]
        t.set_activation(key, *range_params(lo * 3, hi * 3))
        edits.append(t)
    t = qm.copy()
    t.set_bias_int(t.layers[-1], t.bias_int(t.layers[-1]) + 5)
    edits.append(t)
    assert len(edits) > 2
    together = edited_outputs(ctx, qm, edits, x)  # one part: every edit's constants are inputs of it
    for e, g in zip(edits, together):
        whole = ctx.outputs(e.to_model(), x, int8=True)
        np.testing.assert_array_equal(g, whole)
        np.testing.assert_array_equal(edited_outputs(ctx, qm, [e], x)[0], whole)  # its own part, fed a cut
    assert not np.array_equal(together[0], ctx.outputs(qm.to_model(), x, int8=True))  # the edits do change it


def test_an_edit_of_an_int8_inputs_quantization_is_run_whole():
    """An int8-input model (TFLite): narrowing the input's range changes how the float data is quantized into the
    feed, which a cut computed from the base model's feed cannot show; the edit is run whole, and every output
    equals the edited model's."""
    from repair.repairs.in_model.edits import edited_outputs

    d = DATASETS / "digits_tflite"
    pair = load_pair(d / "float.tflite", d / "int8.tflite")
    x = load_calibration(d / "calib.npz").x[:64].astype(np.float32)
    ctx, qm = FitContext(pair, x), QdqModel(pair.int8.proto)
    key = next(k for k, a in qm.activations.items() if a.model_input)
    scale, zp = qm.activation_params(key)
    narrow, later = qm.copy(), qm.copy()
    narrow.set_activation(key, scale / 3, zp)
    other = next(k for k, a in qm.activations.items() if not a.interface and not a.model_input)
    later.set_activation(other, qm.activation_params(other)[0] * 2, qm.activation_params(other)[1])
    got = edited_outputs(ctx, qm, [narrow, later], x)
    for e, g in zip((narrow, later), got):
        np.testing.assert_array_equal(g, ctx.outputs(e.to_model(), x, int8=True))


def test_an_edit_that_adds_a_node_is_run_whole(tmp_path):
    from repair.repairs.in_model.edits import edited_outputs

    f = make_float_model(tmp_path / "f.onnx", bias=False, channels=6)
    x = np.random.default_rng(3).uniform(0, 1, (64, 1, 8, 8)).astype(np.float32)
    pair = load_pair(f, quantize_model(f, tmp_path / "q.onnx", x[:48]))
    ctx, qm = FitContext(pair, x), QdqModel(pair.int8.proto)
    added, ranged = qm.copy(), qm.copy()
    added.set_bias_int(added.layers[0], np.full(qm.n_out(qm.layers[0]), 40))  # a bias DQ node appears
    key = next(k for k, a in qm.activations.items() if not a.interface and not a.model_input)
    ranged.set_activation(key, qm.activation_params(key)[0] * 2, qm.activation_params(key)[1])
    assert len(added.model.graph.node) > len(qm.model.graph.node)
    for e, g in zip((added, ranged), edited_outputs(ctx, qm, [added, ranged], x)):
        np.testing.assert_array_equal(g, ctx.outputs(e.to_model(), x, int8=True))


# ---------------------------------------------------------------------------------------------- the fit
def test_digits_recovers_most_of_the_gap_and_the_model_still_runs_everywhere(digits, tmp_path):
    pair, calib, holdout = digits
    digest = hashlib.sha256(pair.int8.path.read_bytes()).hexdigest()
    res = fit_in_model(pair, calib, holdout)
    h = res.holdout
    assert h["float"] - h["int8"] >= 0.03
    assert h["gap_recovered"] >= 0.70
    assert h["sqnr_repaired_db"] > h["sqnr_int8_db"] + 6
    assert hashlib.sha256(pair.int8.path.read_bytes()).hexdigest() == digest  # input untouched
    assert Counter(n.op_type for n in res.model.graph.node) == Counter(n.op_type for n in pair.int8.proto.graph.node)
    sess = ort.InferenceSession(res.model.SerializeToString(), providers=["CPUExecutionProvider"])  # optimised
    out = sess.run(None, {"image": holdout.x.astype(np.float32)})[0]
    assert (out.argmax(1) == holdout.y).mean() >= h["int8"] + 0.7 * (h["float"] - h["int8"]) - 0.01
    # the reference device's integer kernels run the repaired model too
    from repair.models.graph import QuantParams
    from repair.program import lower

    path = tmp_path / "repaired.onnx"
    path.write_bytes(res.model.SerializeToString())
    prog = lower(path)
    t = prog.tensors[prog.input]
    dev = prog.run(QuantParams(t.scale, t.zero_point, "int8").quantize(holdout.x)).reshape(len(holdout), -1)
    assert (dev.argmax(1) == holdout.y).mean() >= h["int8"] + 0.03


@pytest.mark.parametrize("task", ["motions", "ecg"])
def test_tasks_without_loss_are_not_made_worse(task):
    f = task_files(task)
    res = fit_in_model(load_pair(f["float"], f["int8"]), load_calibration(f["calib"]), load_calibration(f["holdout"]))
    assert res.holdout["repaired"] >= res.holdout["int8"] - 0.002
    # kept exactly when cross-validation on the calibration split beats its noise (the holdout only reports)
    assert all(e.kept == (e.cross_validation or {}).get("beats_noise", False) for e in res.entries)


def test_mlperf_ad01_reports_sqnr_before_and_after():
    f, q = real_model("ad01")
    pair = load_pair(f, q)
    res = fit_in_model(pair, random_in_range(pair, 128, 0), random_in_range(pair, 128, 1), metric="sqnr")
    h = res.holdout
    assert h["metric"] == "sqnr" and h["sqnr_repaired_db"] >= h["sqnr_int8_db"]
    assert res.model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.INT8


def test_mlperf_kws_with_unrelated_float_weights_is_refused():
    f, q = real_model("kws_dscnn")
    pair = load_pair(f, q)
    with pytest.raises(PairError, match="different weights"):
        fit_in_model(pair, random_in_range(pair, 8, 0), random_in_range(pair, 8, 1), metric="sqnr")


# ---------------------------------------------------------------------------------------------- bad input
def test_one_calibration_sample_is_refused(tiny):
    pair = load_pair(tiny["float"], tiny["int8"])
    data = load_calibration(tiny["data"])
    with pytest.raises(DataError, match="1 sample.*at least 2"):
        fit_in_model(pair, CalibrationSet(x=data.x[:1], y=data.y[:1]), data)


def test_holdout_without_labels(tiny):
    pair = load_pair(tiny["float"], tiny["int8"])
    data = load_calibration(tiny["data"])
    unlabeled = CalibrationSet(x=data.x, source="nolabels.npz")
    with pytest.raises(DataError, match="nolabels.npz has no labels"):
        fit_in_model(pair, data, unlabeled)
    assert fit_in_model(pair, data, unlabeled, metric="sqnr").holdout["metric"] == "sqnr"


def test_cli_fit_writes_everything_and_refuses_unlabelled_holdout(digits, tmp_path):
    f = task_files("digits")
    out = tmp_path / "out"
    r = CliRunner().invoke(main, ["fit", str(f["float"]), str(f["int8"]), "--data", str(f["calib"]),
                                  "--holdout", str(f["holdout"]), "-o", str(out), "--no-progress"])
    assert r.exit_code == 0, r.output
    names = {"plan.json", "repaired_int8.onnx", "report.json", "report.md", "report.html"}
    assert names <= {p.name for p in out.iterdir()}
    import json

    plan = json.loads((out / "plan.json").read_text())
    assert plan["in_model"]["model"]["sha256"] == hashlib.sha256((out / "repaired_int8.onnx").read_bytes()).hexdigest()
    report = json.loads((out / "report.json").read_text())
    assert report["holdout"]["gap_recovered"] >= 0.7 and "gap recovered" in (out / "report.md").read_text()
    x = load_calibration(f["holdout"]).x
    np.savez(tmp_path / "nolabels.npz", x=x)
    out2 = tmp_path / "out2"
    r = CliRunner().invoke(main, ["fit", str(f["float"]), str(f["int8"]), "--data", str(f["calib"]),
                                  "--holdout", str(tmp_path / "nolabels.npz"), "-o", str(out2), "--no-progress"])
    assert r.exit_code == 2
    assert r.output.count("\n") == 1 and "no labels" in r.output and "Traceback" not in r.output
    assert not out2.exists()  # a failed fit leaves nothing behind, not even an empty folder
