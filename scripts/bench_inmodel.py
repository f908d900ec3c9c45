"""In-model repairs against the usual alternatives, in one run, on the same splits.

    python scripts/bench_inmodel.py            # NNCF rows need: pip install -e '.[bench]'

For each bundled task (calibration split to fit / calibrate, holdout split to judge):
- naive int8: the bundled int8.onnx (quantize_static, QDQ, per-tensor, MinMax);
- ORT per-channel: quantize_static with per_channel=True (weights per channel), MinMax;
- ORT Percentile: quantize_static with CalibrationMethod.Percentile (99.999), per tensor;
- NNCF FastBiasCorrection / BiasCorrection: nncf.quantize on the float model with fast_bias_correction
  True / False (NNCF's own quantizer, its defaults otherwise; skipped with a note if nncf is missing);
- tmlrepair: each in-model repair alone on the naive int8 model, then all together (``fit_in_model``).
Holdout accuracy (AUROC of the reconstruction error for ecg) and wall time of making the model.
Then the MLPerf Tiny pairs from ../shared/real (no data ships for most: 256 random int8 inputs to fit,
another 256 to judge; sww has real samples, split in half): output SQNR against the float model.
All times are one run on this machine (2 cores, shared): read them as ratios.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

from repair.data import CalibrationSet, load_calibration, random_in_range
from repair.drift.measure import anomaly_scores, detect_task
from repair.errors import TmlrepairError
from repair.metrics import auroc
from repair.models import load_pair
from repair.repairs.in_model import IN_MODEL_REPAIRS, fit_in_model

sys.path.insert(0, str(Path(__file__).resolve().parent))
import peers  # noqa: E402  (the peers, run as their users run them)

ROOT = Path(__file__).resolve().parents[1]
REAL = ROOT.parent / "shared" / "real" / "mlperf_tiny"


def _session(model_bytes: bytes):
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    return ort.InferenceSession(model_bytes, opts, providers=["CPUExecutionProvider"])


def _score(model_bytes: bytes, task: str, x: np.ndarray, y: np.ndarray) -> float:
    sess = _session(model_bytes)
    name = sess.get_inputs()[0].name
    out = np.concatenate([sess.run(None, {name: x[i:i + 256]})[0] for i in range(0, len(x), 256)])
    out = out.reshape(len(x), -1).astype(np.float64)
    if task == "classifier":
        return float((out.argmax(1) == y).mean())
    return auroc(anomaly_scores(task, x, out), y)


def bundled(task: str) -> list[tuple[str, str, float]]:

    d = ROOT / "datasets" / task
    calib, holdout = load_calibration(d / "calib.npz"), load_calibration(d / "holdout.npz")
    xc, xh = calib.x.astype(np.float32), holdout.x.astype(np.float32)
    pair = load_pair(d / "float.onnx", d / "int8.onnx")
    kind = detect_task(pair)
    rows = [("float model", _score((d / "float.onnx").read_bytes(), kind, xh, holdout.y), None),
            ("naive int8 (bundled)", _score((d / "int8.onnx").read_bytes(), kind, xh, holdout.y), None)]
    tools = [("ORT per-channel", lambda: peers.ort_quantize(d / "float.onnx", xc, per_channel=True)),
             ("ORT Percentile", lambda: peers.ort_percentile(d / "float.onnx", xc, 99.999)),
             ("NNCF FastBiasCorrection", lambda: peers.nncf_quantize(d / "float.onnx", xc, True)),
             ("NNCF BiasCorrection", lambda: peers.nncf_quantize(d / "float.onnx", xc, False))]
    for label, make in tools:
        t0 = time.perf_counter()
        try:
            model = make()
        except ImportError:
            rows.append((label, float("nan"), None))
            print(f"  {task}: {label} skipped: nncf is not installed (pip install -e '.[bench]')")
            continue
        rows.append((label, _score(model, kind, xh, holdout.y), time.perf_counter() - t0))
    for repairs in [(r,) for r in IN_MODEL_REPAIRS] + [None]:
        t0 = time.perf_counter()
        res = fit_in_model(pair, calib, holdout, repairs=repairs)
        wall = time.perf_counter() - t0
        label = "tmlrepair " + (repairs[0] if repairs else "all of them (kept: " + ", ".join(res.kept) + ")")
        # a repair that does not help is not kept; alone, its own score is the one the entry reports
        rows.append((label, res.entries[-1].holdout["after"] if repairs else res.holdout["repaired"], wall))
    return rows


def mlperf() -> list[tuple[str, str]]:
    out = []
    for name in ("kws_dscnn", "ic_resnet8", "vww_mobilenet", "ad01", "sww"):
        f, q = REAL / "models" / f"{name}_float.onnx", REAL / "models" / f"{name}_int8.onnx"
        if not q.is_file():
            continue
        try:
            pair = load_pair(f, q)
            n = 64 if name == "vww_mobilenet" else 256
            if name == "sww":
                x = np.load(REAL / "data" / "sww_calibration_samples.npz")["specs"].astype(np.float32)
                calib = CalibrationSet(x=x[0::2], source="sww samples (even)")
                holdout = CalibrationSet(x=x[1::2], source="sww samples (odd)")
            else:
                calib, holdout = random_in_range(pair, n, 0), random_in_range(pair, n, 1)
            t0 = time.perf_counter()
            res = fit_in_model(pair, calib, holdout, metric="sqnr")
            h = res.holdout
            out.append((name, f"{len(calib)}/{len(holdout)}", f"{h['sqnr_int8_db']:.2f}", f"{h['sqnr_repaired_db']:.2f}",
                        ", ".join(res.kept) or "none", f"{time.perf_counter() - t0:.1f}"))
        except TmlrepairError as exc:
            out.append((name, "–", "–", "–", f"refused: {str(exc)[:150]}", "–"))
    return out


def main() -> None:
    for task in ("digits", "motions", "ecg"):
        metric = "AUROC" if task == "ecg" else "accuracy"
        print(f"\n### {task} (holdout {metric})\n\n| method | holdout {metric} | wall s |\n|---|---|---|")
        for label, v, wall in bundled(task):
            val = "skipped" if v != v else (f"{v:.4f}" if task == "ecg" else f"{100 * v:.1f}%")
            print(f"| {label} | {val} | {'' if wall is None else f'{wall:.2f}'} |")
    print("\n### MLPerf Tiny pairs (output SQNR vs float, dB)\n\n| model | fit/judge samples | int8 | repaired "
          "| kept | wall s |\n|---|---|---|---|---|---|")
    for row in mlperf():
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
