"""Benchmark: wall time of `check` against `drift` on the same pair and data, in one run.

check = drift of the new model + comparison with the baseline (+ one int8 pass per plan).
Target: check within 1.5x of drift. Median of --repeats runs, end to end in-process.

    python scripts/bench_check.py [--task digits] [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--task", default="digits")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    from repair.check.gate import Tolerances, run_check
    from repair.data import load_calibration
    from repair.drift import measure_drift
    from repair.models import load_pair
    from repair.plan.fit import fit_plan

    d = ROOT / "datasets" / args.task
    holdout = load_calibration(d / "holdout.npz")
    baseline = measure_drift(load_pair(d / "float.onnx", d / "int8.onnx"), holdout)
    plan = fit_plan(load_pair(d / "float.onnx", d / "int8.onnx"), load_calibration(d / "calib.npz"), holdout)
    runs = {"drift": lambda: measure_drift(load_pair(d / "float.onnx", d / "int8.onnx"), holdout),
            "check": lambda: run_check(baseline, load_pair(d / "float.onnx", d / "int8.onnx"), holdout, Tolerances()),
            "check --plan": lambda: run_check(baseline, load_pair(d / "float.onnx", d / "int8.onnx"), holdout,
                                              Tolerances(), plan)}
    times = {k: [] for k in runs}
    for _ in range(args.repeats):
        for name, fn in runs.items():  # interleaved, so machine noise hits all alike
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"task {args.task}, {len(holdout)} holdout samples, median of {args.repeats}\n")
    print("| run | seconds | ratio to drift |\n|---|---:|---:|")
    for k, v in med.items():
        print(f"| {k} | {v:.3f} | {v / med['drift']:.2f} |")


if __name__ == "__main__":
    main()
