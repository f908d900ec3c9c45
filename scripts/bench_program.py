"""Benchmark: the integer program (the device's arithmetic, batched) against one onnxruntime pass of the int8
model with graph optimisations off (how tmlrepair ran int8 models before), same model, same inputs.

    python scripts/bench_program.py [--samples 1000] [--repeats 7]

Bundled tasks (their calibration inputs) and, when ../shared/real is present, the MLPerf Tiny int8 models
(random int8 inputs). The program runs two ways: with the host build of its requantization (C, the default where
a compiler exists) and without it (``TMLREPAIR_HOST_C=0``: its onnxruntime graphs). Each figure is the median
of ``--repeats`` rounds, each way of the program run in turn with onnxruntime within a round (the two ways in
rounds of their own), models loaded and sessions created beforehand; the ratios are program / onnxruntime in the
same rounds (issue 21's target: ≤ 1); the onnxruntime column is from the host C's rounds. The process keeps freed memory as the command line
does (``repair.allocator``; without it the small models' batches page-fault: ad01 2.1×, ecg 2.2× slower).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
from bench_drift import timed_together  # a sibling script: medians of interleaved runs

from repair.models import load_pair
from repair.models.pair import load_model, ort_session
from repair.program import lower
from repair.program.runner import ProgramRunner

ROOT = Path(__file__).resolve().parents[1]
REAL = ROOT.parent / "shared" / "real" / "mlperf_tiny" / "models"


def cases(samples: int):
    for task in ("digits", "motions", "ecg"):
        d = ROOT / "datasets" / task
        pair = load_pair(d / "float.onnx", d / "int8.onnx")
        x = np.load(d / "calib.npz")["x"].astype(np.float32)
        x = np.resize(x, (samples, *x.shape[1:]))
        runner = ProgramRunner(pair, lower(pair.int8.proto))
        sess = ort_session(pair.int8.proto)
        name = sess.get_inputs()[0].name
        feed = pair.int8_feed({pair.float.inputs[0].name: x})[name]
        yield task, lambda r=runner, x=x: r.output_values(x), lambda s=sess, f=feed, n=name: s.run(None, {n: f})
    for path in sorted(REAL.glob("*int8*.onnx")) if REAL.is_dir() else []:
        model = load_model(path, "INT8")
        prog = lower(model.proto)
        spec = model.inputs[0]
        rng = np.random.default_rng(0)
        q = rng.integers(-128, 128, (samples, *spec.shape)).astype(np.int8)
        sess = ort_session(model.proto)
        feed = q if spec.dtype == "int8" else spec.quant.dequantize(q) if spec.quant else q.astype(np.float32)
        yield path.stem, lambda p=prog, q=q: p.run(q), lambda s=sess, f=feed, n=spec.name: s.run(None, {n: f})


def without_host_c(fn):
    def run():
        os.environ["TMLREPAIR_HOST_C"] = "0"
        try:
            return fn()
        finally:
            del os.environ["TMLREPAIR_HOST_C"]
    return run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args()
    from repair.allocator import keep_freed_memory

    keep_freed_memory()  # as the command line runs (repair.allocator); every tool timed here shares it
    print("| model | program, host C | program, graphs (no compiler) | onnxruntime int8, optimisations off | "
          "ratio C | ratio graphs |\n|---|---|---|---|---|---|")
    for name, program, ort in cases(args.samples):
        # each way of the program interleaved with onnxruntime on its own: the graphs' float64 temporaries and
        # sessions, run between, slowed the C way's next run (ecg: 1.38× onnxruntime with them in the round, 1.20×
        # without)
        tc, to = timed_together([program, ort], args.repeats)
        tg, to_g = timed_together([without_host_c(program), ort], args.repeats)
        print(f"| {name} | {1e3 * tc:.3g} ms | {1e3 * tg:.3g} ms | {1e3 * to:.3g} ms | {tc / to:.2f}× | "
              f"{tg / to_g:.2f}× |", flush=True)


if __name__ == "__main__":
    main()
