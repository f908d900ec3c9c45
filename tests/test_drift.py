"""measure_drift: agreement with onnxruntime's qdq_loss_debug, streaming, outputs, reports, real pairs."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from repair.cli import main
from repair.data import CalibrationSet, load_calibration
from repair.drift import DriftReport, measure_drift
from repair.models import load_pair

from .conftest import real_model, task_files


def _pair_and_data(task, split="holdout"):
    f = task_files(task)
    return load_pair(f["float"], f["int8"]), load_calibration(f[split])


def test_sqnr_matches_qdq_loss_debug_within_0_1_db(tmp_path):
    """Our per-tensor SQNR on an ORT-quantized pair equals qdq_loss_debug's float-vs-QDQ error."""
    from onnxruntime.quantization.qdq_loss_debug import (
        collect_activations,
        compute_activation_error,
        create_activation_matching,
        modify_model_output_intermediate_tensors,
    )

    pair, data = _pair_and_data("digits", "calib")
    data = CalibrationSet(x=data.x[:200], y=data.y[:200], source="calib[:200]")
    report = measure_drift(pair, data, batch_size=64, int8_runtime="onnxruntime")  # ORT's tool measures ORT

    class Reader:
        def __init__(self):
            self.it = iter(data.x[i:i + 1] for i in range(len(data)))

        def get_next(self):
            b = next(self.it, None)
            return None if b is None else {"image": b}

        def __iter__(self):
            return iter(lambda: self.get_next(), None)

        def rewind(self):
            self.it = iter(data.x[i:i + 1] for i in range(len(data)))

    f_aug, q_aug = tmp_path / "f_aug.onnx", tmp_path / "q_aug.onnx"
    modify_model_output_intermediate_tensors(str(pair.float.path), str(f_aug))
    modify_model_output_intermediate_tensors(str(pair.int8.path), str(q_aug))
    reader = Reader()
    f_act = collect_activations(str(f_aug), reader)
    reader.rewind()
    q_act = collect_activations(str(q_aug), reader)
    errors = compute_activation_error(create_activation_matching(q_act, f_act))
    compared = 0
    for t in report.tensors:
        ours = t["sqnr_db"]
        theirs = errors.get(t["float_name"], {}).get("xmodel_err")
        if theirs is None:
            continue
        assert abs(ours - theirs) <= 0.1, (t["float_name"], ours, theirs)
        compared += 1
    assert compared >= 6


def test_streaming_result_does_not_depend_on_batch_size():
    pair, data = _pair_and_data("motions")
    a = measure_drift(pair, data, batch_size=7)
    b = measure_drift(pair, data, batch_size=1000)
    for ta, tb in zip(a.tensors, b.tensors):
        for key in ("sqnr_db", "cosine", "mae", "max_abs_err", "saturation"):
            assert ta[key] == pytest.approx(tb[key], rel=1e-5, abs=1e-9), key
        np.testing.assert_allclose(ta["channel_mean_error"], tb["channel_mean_error"], rtol=1e-5, atol=1e-7)
    assert a.outputs[0]["accuracy_int8"] == b.outputs[0]["accuracy_int8"]


def test_digits_report_shows_the_loss_and_where_it_enters():
    pair, data = _pair_and_data("digits")
    r = measure_drift(pair, data)
    out = r.outputs[0]
    assert out["task"] == "classifier"
    assert out["accuracy_float"] - out["accuracy_int8"] >= 0.03
    assert out["nll_int8"] > out["nll_float"]
    lo, hi = out["ece_int8_ci95"]
    assert lo <= out["ece_int8"] <= hi
    assert r.pairing["coverage"] == 1.0
    # error grows through the depthwise-separable blocks: the first conv is cleaner than the last
    sq = {t["float_name"]: t["sqnr_db"] for t in r.tensors}
    assert sq["conv1_relu_out"] > sq["pw2_relu_out"] + 10


def test_anomaly_score_shifts_upward_under_int8():
    pair, data = _pair_and_data("ecg")
    out = measure_drift(pair, data).outputs[0]
    assert out["task"] == "reconstruction"
    assert out["score_shift_rel"] > 0.05
    assert 0.5 < out["auroc_float"] <= 1.0 and 0.5 < out["auroc_int8"] <= 1.0


def test_channel_mean_error_is_the_mean_of_float_minus_int8():
    pair, data = _pair_and_data("motions")
    r = measure_drift(pair, data)
    t = next(t for t in r.tensors if t["float_name"] == "conv1_relu_out")
    f = pair.float.session(("conv1_relu_out",)).run(["conv1_relu_out"], {"imu": data.x})[0]
    from repair.program.runner import ProgramRunner

    k = ProgramRunner.for_pair(pair).run(data.x, [t["int8_name"]])[0]  # the int8 tensor as the device computes it
    expect = (f.astype(np.float64) - (k.astype(np.float64) - t["zero_point"]) * t["scale"]).mean(axis=(0, 2))
    np.testing.assert_allclose(t["channel_mean_error"], expect, rtol=1e-4, atol=1e-6)


def test_json_round_trip_and_schema_keys(tmp_path):
    pair, data = _pair_and_data("digits")
    r = measure_drift(pair, data)
    p = tmp_path / "r.json"
    p.write_text(r.to_json())
    d = json.loads(p.read_text())
    assert d["schema"] == "tmlrepair.drift/1"
    for key in ("float_name", "int8_name", "op", "sqnr_db", "cosine", "max_abs_err", "saturation"):
        assert key in d["tensors"][0]
    for key in ("top1_agreement", "accuracy_float", "accuracy_int8", "nll_float", "nll_int8", "ece_float", "ece_int8"):
        assert key in d["outputs"][0]
    assert "unmatched" in d
    again = DriftReport.from_json(p)
    assert again.to_json() == r.to_json()


def test_cli_drift_writes_json_markdown_html(tmp_path):
    f = task_files("digits")
    paths = {k: tmp_path / f"r.{k}" for k in ("json", "md", "html")}
    r = CliRunner().invoke(main, ["drift", str(f["float"]), str(f["int8"]), "--data", str(f["holdout"]),
                                  "--json", str(paths["json"]), "--markdown", str(paths["md"]),
                                  "--html", str(paths["html"])])
    assert r.exit_code == 0, r.output
    assert "accuracy int8" in r.output
    lines = r.output.splitlines()
    table = [ln for ln in lines[3:12] if ln.strip() and ln.split()[0].isdigit()]
    sqnrs = [float(ln.split()[-4]) for ln in table]
    assert sqnrs == sorted(sqnrs)  # worst first
    assert "| metric | value |" in paths["md"].read_text()
    html = paths["html"].read_text()
    assert html.count("data:image/png;base64,") >= 3
    assert "src=\"http" not in html and "href=\"http" not in html
    assert not list(tmp_path.glob(".*.tmp"))


def test_cli_profile_holds_the_worker_threads_and_refuses_an_existing_file(tmp_path):
    """``tmlrepair --profile FILE drift …``: the pstats file holds what the statistics thread ran (its fold of every
    batch), which a profile of the main thread alone (``python -m cProfile``) leaves out; an existing FILE is refused
    before anything runs, in one line, and left as it was."""
    import pstats

    f = task_files("digits")
    args = ["drift", str(f["float"]), str(f["int8"]), "--data", str(f["holdout"])]
    out = tmp_path / "drift.prof"
    r = CliRunner().invoke(main, ["--profile", str(out), *args])
    assert r.exit_code == 0, r.output
    assert "tmlrepair-stats" in r.output and str(out) in r.output
    folds = [v for (path, _, name), v in pstats.Stats(str(out)).stats.items()
             if name == "fold" and path.endswith("measure.py")]
    assert folds and folds[0][1] >= 1  # called, from the statistics thread
    before = out.read_bytes()
    r = CliRunner().invoke(main, ["--profile", str(out), *args])
    assert r.exit_code == 2 and "already exists" in r.output and len(r.output.strip().splitlines()) == 1
    assert out.read_bytes() == before


def _random_in_range(pair, n=8):
    q = pair.int8.inputs[0].quant
    k = np.random.default_rng(0).integers(q.qmin, q.qmax + 1, (n, *pair.float.inputs[0].shape))
    return CalibrationSet(x=q.dequantize(k), source="random int8 range")


@pytest.mark.real
@pytest.mark.parametrize("name", ["ad01", "ic_resnet8", "vww_mobilenet"])
def test_mlperf_drift_on_random_inputs_in_range(name):
    pair = load_pair(*real_model(name))
    r = measure_drift(pair, _random_in_range(pair))
    assert len(r.tensors) / r.pairing["quantized_total"] >= 0.9
    assert r.pairing["weight_mismatches"] == 0
    assert all(t["weight_cosine"] is None or t["weight_cosine"] > 0.99 for t in r.tensors)


@pytest.mark.real
def test_mlperf_kws_float_and_int8_are_different_networks():
    """MLPerf Tiny's kws float (SavedModel) and int8 (TFLite) files hold unrelated weights.

    Same architecture, so every tensor pairs by structure; but a drift table would compare
    two different networks. By default that is refused with a clear message; on request
    it is measured and flagged.
    """
    f, q = real_model("kws_dscnn")
    pair = load_pair(f, q)
    data = _random_in_range(pair)
    from repair.errors import PairError

    with pytest.raises(PairError, match="different weights"):
        measure_drift(pair, data)
    r = measure_drift(pair, data, check_weights=False)
    assert len(r.tensors) / r.pairing["quantized_total"] >= 0.9
    assert r.pairing["weight_mismatches"] >= 9
    from repair.drift.render import render_terminal

    assert "WARNING" in render_terminal(r)


@pytest.mark.real
def test_mlperf_sww_drift_on_its_calibration_samples():
    from .conftest import REAL

    pair = load_pair(*real_model("sww"))
    z = np.load(REAL / "data" / "sww_calibration_samples.npz")
    data = CalibrationSet(x=z["specs"].astype(np.float32), y=z["labels"].astype(np.int64), source="sww samples")
    r = measure_drift(pair, data)
    out = r.outputs[0]
    assert len(r.tensors) / r.pairing["quantized_total"] >= 0.9
    assert out["accuracy_float"] == pytest.approx(0.911, abs=0.001)
    assert out["top1_agreement"] > 0.9


def test_qoperator_pair_gets_output_level_drift(tiny):
    r = measure_drift(load_pair(tiny["float"], tiny["qop"]), load_calibration(tiny["data"]))
    assert r.tensors == [] and r.unmatched and "QOperator" in r.unmatched[0]["reason"]
    out = r.outputs[0]
    assert out["top1_agreement"] > 0.9 and out["sqnr_db"] > 10 and "accuracy_int8" in out


def test_tensor_statistics_do_not_depend_on_the_int8_array_memory_layout():
    """The integer program may hand back a transposed (non-contiguous) array: the per-channel mean error must be
    the same as for a C-ordered copy (it once summed the dequantized values instead of the differences)."""
    from repair.drift.stats import TensorStats
    from repair.models import QuantParams

    rng = np.random.default_rng(0)
    k = rng.integers(-128, 128, (8, 3, 5, 5)).transpose(1, 0, 2, 3).copy().transpose(1, 0, 2, 3)  # (8, 3, 5, 5)
    f = rng.normal(0, 1, k.shape).astype(np.float32)
    quant = QuantParams(0.02, 3, "int8")
    a, b = TensorStats(quant, 1), TensorStats(quant, 1)
    a.update(f, k)
    b.update(f, np.ascontiguousarray(k))
    assert not k.flags.c_contiguous
    assert a.channel_mean_error == pytest.approx(b.channel_mean_error) and a.sqnr_db == pytest.approx(b.sqnr_db)


@pytest.mark.parametrize("where", ["int8 side", "statistics", "output metrics"])
def test_a_failure_anywhere_in_the_pass_reaches_the_caller_and_leaves_no_thread(monkeypatch, where):
    """The pass runs the float model a batch ahead in one thread, the statistics in another and the output metrics
    while the last batches fold: an exception in any of them is the caller's, and every thread is gone after it."""
    import threading

    import repair.drift.measure as measure
    from repair.drift.stats import TensorStats
    from repair.program.runner import ProgramRunner

    pair, data = _pair_and_data("digits", "calib")
    calls = []

    def fail_at_the_third(original):
        def wrapped(*args, **kwargs):
            calls.append(1)
            if len(calls) == 3:
                raise RuntimeError(f"boom in the {where}")
            return original(*args, **kwargs)
        return wrapped

    if where == "int8 side":
        monkeypatch.setattr(ProgramRunner, "run", fail_at_the_third(ProgramRunner.run))
    elif where == "statistics":
        monkeypatch.setattr(TensorStats, "update", fail_at_the_third(TensorStats.update))
    else:
        monkeypatch.setattr(measure, "_output_metrics", lambda *a, **k: (_ for _ in ()).throw(RuntimeError(
            "boom in the output metrics")))
    before = set(threading.enumerate())
    with pytest.raises(RuntimeError, match=f"boom in the {where}"):
        measure_drift(pair, data, batch_size=32)
    assert not [t for t in threading.enumerate() if t not in before and t.name.startswith("tmlrepair")]
