"""Repairs where int8 really fails, against the peers, on a test split no tool ever sees.

    python scripts/bench_peers.py [CASE ...]        # NNCF rows need: pip install -e '.[bench]'

Four failure classes seen in the field, two cases or more each, on data and models that are not the bundled
tasks' (scikit-learn's bundled datasets; MLPs trained here, seeded) plus cases where int8 loses nothing:

- ``glitch``: one calibration sample is a sensor spike (×20, ×25): MinMax ranges, the input's included, blow up;
- ``gain``: calibration captured at another sensor gain (0.5, 0.7) than the field's (1.0): ranges too small;
- ``raw``: raw-unit inputs (a standard scaler folded into the first layer): features spanning orders of
  magnitude share one int8 input scale;
- ``drift``: the deployed sensor reads x·a + b (1.1, +0.05σ; 0.9, −0.1σ): the float model loses too;
- ``clean``: nothing wrong (int8 should lose nothing, and no tool should cost anything).

Splits per case: train (the float model), calibration (what every tool quantizes or fits on), holdout (what
tmlrepair reports on; peers do not use it), field (unlabelled inputs as the deployed device sees them, for
the cases where the field differs; only ``tmlrepair --field`` uses it), test (accuracy in the table: no tool
ever sees it). Every int8 model is scored as the device computes it (``peers.device_outputs``).

Peers run on the same float model and calibration split: naive (quantize_static, MinMax per tensor: the
model tmlrepair repairs), ORT per-channel, ORT Percentile 99.9 and 99.999, NNCF defaults and with
BiasCorrection. Wall time is one run each on this machine (2 shared cores): read it as a ratio.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parent))
import peers  # noqa: E402

from repair.data import CalibrationSet  # noqa: E402
from repair.models import load_pair  # noqa: E402
from repair.plan.fit import fit_plan  # noqa: E402
from repair.repairs.in_model import IN_MODEL_REPAIRS  # noqa: E402


@dataclass
class Case:
    name: str
    what: str
    float_onnx: bytes
    calib: tuple  # (x, y)
    holdout: tuple
    test: tuple
    field: np.ndarray | None = None  # unlabelled field inputs (the deployed distribution)
    clean_test: np.ndarray | None = None  # drift cases: the test inputs before the drift (what float could do)


# ----------------------------------------------------------------------------- data and models
def _data(name: str):
    from sklearn import datasets

    if name == "digits8":  # 8×8 handwritten digits, pixel values 0..16
        d = datasets.load_digits()
        return d.data.astype(np.float32), d.target.astype(np.int64)
    if name == "cancer":  # 30 cell measurements in their own units (1e-3 … 4e3)
        d = datasets.load_breast_cancer()
        return d.data.astype(np.float32), d.target.astype(np.int64)
    if name in ("sensors", "sensors-raw"):  # a synthetic 6-class, 24-feature sensor problem
        x, y = datasets.make_classification(6000, 24, n_informative=16, n_redundant=4, n_classes=6,
                                            n_clusters_per_class=2, class_sep=1.2, random_state=7)
        if name == "sensors-raw":  # in raw units: feature j scaled by 10^u_j, u_j uniform in [−3, 2]
            x = x * 10.0 ** np.random.default_rng(12).uniform(-3, 2, x.shape[1])
        return x.astype(np.float32), y.astype(np.int64)
    raise KeyError(name)


def _splits(x, y, seed: int):
    """train 50 %, calibration 15 %, holdout 10 %, field 10 %, test 15 % (stratified by shuffling per class)."""
    rng = np.random.default_rng(seed)
    parts = {k: [] for k in ("train", "calib", "holdout", "field", "test")}
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        cuts = (np.cumsum([0.5, 0.15, 0.10, 0.10]) * len(idx)).astype(int)
        for k, part in zip(parts, np.split(idx, cuts)):
            parts[k].append(part)
    return {k: rng.permutation(np.concatenate(v)) for k, v in parts.items()}


def _spread(x: np.ndarray) -> np.ndarray:
    """Per-feature standard deviation, 1 for a constant feature (a pixel that is always 0)."""
    sd = x.std(0)
    return np.where(sd < 1e-6, 1.0, sd)


def _mlp_onnx(x, y, hidden, seed: int, scaler: str) -> bytes:
    """An MLP (ReLU) trained with scikit-learn on standardized features, as ONNX Gemm/Relu. ``scaler``: "input"
    (the model takes standardized features) or "folded" (the scaler folded into the first layer: the model takes
    raw units, as a deployed model fed by the sensor does)."""
    from sklearn.neural_network import MLPClassifier

    mu, sd = x.mean(0), _spread(x)
    clf = MLPClassifier(hidden, max_iter=400, random_state=seed, early_stopping=False).fit((x - mu) / sd, y)
    ws = [w.astype(np.float64) for w in clf.coefs_]
    bs = [b.astype(np.float64) for b in clf.intercepts_]
    if ws[-1].shape[1] == 1:  # binary: logits (0, z)
        ws[-1] = np.concatenate([np.zeros_like(ws[-1]), ws[-1]], axis=1)
        bs[-1] = np.concatenate([np.zeros(1), bs[-1]])
    if scaler == "folded":
        bs[0] = bs[0] - (mu / sd) @ ws[0]
        ws[0] = ws[0] / sd[:, None]
    nodes, inits, cur = [], [], "x"
    for i, (w, b) in enumerate(zip(ws, bs)):
        inits += [numpy_helper.from_array(w.astype(np.float32), f"w{i}"),
                  numpy_helper.from_array(b.astype(np.float32), f"b{i}")]
        nodes.append(helper.make_node("Gemm", [cur, f"w{i}", f"b{i}"], [f"fc{i}"], name=f"fc{i}"))
        cur = f"fc{i}"
        if i < len(ws) - 1:
            nodes.append(helper.make_node("Relu", [cur], [f"relu{i}"], name=f"relu{i}"))
            cur = f"relu{i}"
    g = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", x.shape[1]])],
                          [helper.make_tensor_value_info(cur, TensorProto.FLOAT, ["N", ws[-1].shape[1]])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m.SerializeToString()


def _case(name, what, data, hidden, seed, scaler, stress) -> Case:
    x, y = _data(data)
    s = _splits(x, y, seed)
    if scaler == "input":  # the model takes standardized features: standardize with the training split's stats
        mu, sd = x[s["train"]].mean(0), _spread(x[s["train"]])
        x = ((x - mu) / sd).astype(np.float32)
    model = _mlp_onnx(x[s["train"]], y[s["train"]], hidden, seed, "folded" if scaler == "folded" else "input")
    part = {k: (x[v].copy(), y[v].copy()) for k, v in s.items()}
    field = part["field"][0]
    kind, *arg = stress
    sd = x[s["train"]].std(0)
    if kind == "glitch":  # one calibration sample is a spike
        cx = part["calib"][0].copy()
        cx[int(arg[1])] *= arg[0]
        part["calib"] = (cx, part["calib"][1])
        field = None
    elif kind == "gain":  # calibration captured at gain g; the field (and test) at 1
        part["calib"] = (part["calib"][0] * arg[0], part["calib"][1])
        part["holdout"] = (part["holdout"][0] * arg[0], part["holdout"][1])
    elif kind == "drift":  # the deployed sensor: x·a + b·σ
        a, b = arg
        field = (field * a + b * sd).astype(np.float32)
        clean = part["test"][0]
        part["test"] = ((part["test"][0] * a + b * sd).astype(np.float32), part["test"][1])
    else:
        field = None
    return Case(name, what, model, part["calib"], part["holdout"], part["test"], field,
                clean if kind == "drift" else None)


CASES = {
    "glitch-digits8-x20": lambda: _case("glitch-digits8-x20", "one calibration sample ×20", "digits8", (64, 32),
                                        1, "input", ("glitch", 20.0, 7)),
    "glitch-sensors-x25": lambda: _case("glitch-sensors-x25", "one calibration sample ×25", "sensors", (96, 48),
                                        2, "input", ("glitch", 25.0, 11)),
    "gain-digits8-0.5": lambda: _case("gain-digits8-0.5", "calibrated at gain 0.5, field at 1", "digits8", (64,),
                                      3, "folded", ("gain", 0.5)),
    "gain-sensors-0.7": lambda: _case("gain-sensors-0.7", "calibrated at gain 0.7, field at 1", "sensors", (64, 32),
                                      4, "input", ("gain", 0.7)),
    "raw-cancer": lambda: _case("raw-cancer", "raw units (scaler folded in)", "cancer", (32, 16), 5, "folded",
                                ("none",)),
    "raw-sensors": lambda: _case("raw-sensors", "raw units spanning 1e-3…1e2", "sensors-raw", (64, 32), 6,
                                 "folded", ("none",)),
    "drift-sensors-1.1": lambda: _case("drift-sensors-1.1", "field reads x·1.1 + 0.05σ", "sensors", (64, 32), 7,
                                       "input", ("drift", 1.1, 0.05)),
    "drift-digits8-0.9": lambda: _case("drift-digits8-0.9", "field reads x·0.9 − 0.1σ", "digits8", (64, 32), 8,
                                       "folded", ("drift", 0.9, -0.1)),
    "clean-digits8": lambda: _case("clean-digits8", "nothing wrong", "digits8", (64, 32), 9, "input", ("none",)),
    "clean-sensors": lambda: _case("clean-sensors", "nothing wrong", "sensors", (96, 48), 10, "input", ("none",)),
}


# ----------------------------------------------------------------------------- the run
def _accuracy(float_path: Path, int8: bytes, x, y) -> tuple[float, str]:
    out, how = peers.device_outputs(float_path, int8, x)
    return float((out.argmax(1) == y).mean()), how


def run_case(case: Case, use_nncf: bool) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        fpath = Path(tmp) / "float.onnx"
        fpath.write_bytes(case.float_onnx)
        import onnxruntime as ort

        sess = ort.InferenceSession(case.float_onnx, providers=["CPUExecutionProvider"])
        tx, ty = case.test
        float_acc = float((sess.run(None, {"x": tx})[0].argmax(1) == ty).mean())
        if case.clean_test is not None:
            rows.append({"tool": "float on the test inputs before the drift",
                         "test_accuracy": float((sess.run(None, {"x": case.clean_test})[0].argmax(1) == ty).mean())})
        cx = case.calib[0]
        tools = {"naive (MinMax per tensor)": lambda: peers.ort_quantize(fpath, cx),
                 "ORT per-channel": lambda: peers.ort_quantize(fpath, cx, per_channel=True),
                 "ORT Percentile 99.9": lambda: peers.ort_percentile(fpath, cx, 99.9),
                 "ORT Percentile 99.999": lambda: peers.ort_percentile(fpath, cx, 99.999)}
        if use_nncf:
            tools["NNCF defaults"] = lambda: peers.nncf_quantize(fpath, cx, fast=True)
            tools["NNCF BiasCorrection"] = lambda: peers.nncf_quantize(fpath, cx, fast=False)
        made = {}
        for name, make in tools.items():
            t0 = time.perf_counter()
            try:
                made[name] = make()
            except Exception as exc:  # a peer that fails on a case is reported, not fatal
                rows.append({"tool": name, "error": f"{type(exc).__name__}: {exc}"[:160]})
                continue
            seconds = time.perf_counter() - t0
            acc, how = _accuracy(fpath, made[name], tx, ty)
            rows.append({"tool": name, "test_accuracy": acc, "seconds": seconds, "scored_by": how})
        naive = made["naive (MinMax per tensor)"]
        qpath = Path(tmp) / "int8.onnx"
        qpath.write_bytes(naive)
        pair = load_pair(fpath, qpath)
        calib = CalibrationSet(x=case.calib[0], y=case.calib[1], source="calibration")
        holdout = CalibrationSet(x=case.holdout[0], y=case.holdout[1], source="holdout")
        t0 = time.perf_counter()
        plan = fit_plan(pair, calib, holdout, in_model=True, repairs=IN_MODEL_REPAIRS,
                        **({} if case.field is None else {"field": CalibrationSet(x=case.field, source="field")}))
        seconds = time.perf_counter() - t0
        acc, how = _accuracy(fpath, plan.repaired_model.SerializeToString(), tx, ty)
        kept = [e["repair"] for e in plan.in_model.get("repairs", []) if e.get("kept")]
        rows.append({"tool": "tmlrepair" + (" --field" if case.field is not None else ""), "test_accuracy": acc,
                     "seconds": seconds, "scored_by": how, "kept": kept})
    for r in rows:
        r["float"] = float_acc
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("cases", nargs="*", help=f"any of {', '.join(CASES)} (default: all)")
    ap.add_argument("--json", help="write every row here too")
    args = ap.parse_args()
    try:
        import nncf  # noqa: F401

        use_nncf = True
    except ImportError:
        use_nncf = False
        print("NNCF not installed (pip install -e '.[bench]'): its rows are left out", file=sys.stderr)
    results = {}
    print("| case | what | float | naive | ORT per-ch | ORT P99.9 | ORT P99.999 | NNCF | NNCF BC | tmlrepair | "
          "gap recovered | kept | tmlrepair s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name in args.cases or list(CASES):
        case = CASES[name]()
        rows = run_case(case, use_nncf)
        results[name] = rows
        by = {r["tool"].split(" --")[0]: r for r in rows}
        acc = {k: r.get("test_accuracy") for k, r in by.items()}
        f, naive, ours = rows[0]["float"], acc["naive (MinMax per tensor)"], acc["tmlrepair"]
        gap = (ours - naive) / (f - naive) if f - naive >= 0.02 else None
        cells = [acc.get(k) for k in ("naive (MinMax per tensor)", "ORT per-channel", "ORT Percentile 99.9",
                                      "ORT Percentile 99.999", "NNCF defaults", "NNCF BiasCorrection", "tmlrepair")]
        fmt = " | ".join("—" if v is None else f"{100 * v:.1f}" for v in cells)
        print(f"| {name} | {case.what} | {100 * f:.1f} | {fmt} | {'—' if gap is None else f'{100 * gap:.0f} %'} | "
              f"{', '.join(by['tmlrepair'].get('kept', [])) or 'none'} | {by['tmlrepair']['seconds']:.1f} |",
              flush=True)
    print("\nwall time (s), one run each:\n")
    tools = [r["tool"].split(" --")[0] for r in next(iter(results.values())) if "seconds" in r]
    print("| case | " + " | ".join(tools) + " |\n|---|" + "---|" * len(tools))
    for name, rows in results.items():
        by = {r["tool"].split(" --")[0]: r for r in rows}
        print(f"| {name} | " + " | ".join(f"{by[t]['seconds']:.2f}" if t in by and "seconds" in by[t] else "—"
                                         for t in tools) + " |")
    drifted = {n: next(r["test_accuracy"] for r in rows if r["tool"].startswith("float on the test"))
               for n, rows in results.items() if any(r["tool"].startswith("float on the test") for r in rows)}
    for n, acc in drifted.items():
        print(f"{n}: the float model on the test inputs before the drift: {100 * acc:.1f}%")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
