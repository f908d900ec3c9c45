"""How the reference device's integer kernels agree with onnxruntime's int8 outputs.

    python scripts/eval_reference_device.py

The device (repair.program: integer requantization per layer, TFLM/CMSIS-NN arithmetic) and onnxruntime's
QDQ path (dequantize → float op → QuantizeLinear, graph optimisations off) round differently at every layer.
For each bundled model (its holdout split) and MLPerf Tiny's int8 models (200 random int8 inputs, as no
data ships with them here): the share of output values equal and within 1 LSB, the worst difference, and
the top-1 agreement for classifiers. The device side is the Python twin, which the C equals bit for bit
(tests/test_intmodel.py).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from repair.data import load_calibration
from repair.errors import ModelError
from repair.models.graph import QuantParams
from repair.program import lower

ROOT = Path(__file__).resolve().parents[1]
REAL = ROOT.parent / "shared" / "real" / "mlperf_tiny" / "models"


def main() -> None:
    cases = [(t, ROOT / "datasets" / t / "int8.onnx", ROOT / "datasets" / t / "holdout.npz")
             for t in ("digits", "motions", "ecg")]
    cases += [(n, REAL / f"{n}_int8.onnx", None) for n in ("kws_dscnn", "ad01", "ic_resnet8", "vww_mobilenet")
              if (REAL / f"{n}_int8.onnx").is_file()]
    print("| model | inputs | outputs equal | within 1 LSB | worst (LSB) | top-1 agreement |")
    print("|---|---|---|---|---|---|")
    for name, path, data in cases:
        try:
            prog = lower(path)
        except ModelError as e:
            print(f"| {name} | – | not lowered: {e} | | | |")
            continue
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        sess = ort.InferenceSession(str(path), opts)
        tin, tout = prog.tensors[prog.input], prog.tensors[prog.output]
        if data is not None:
            x = load_calibration(data).x.astype(np.float32)
            xq = QuantParams(tin.scale, tin.zero_point, "int8").quantize(x)
            feed, what = x, f"{len(x)} holdout"
        else:
            shape = [d.dim_value for d in onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim[1:]]
            n = 50 if name == "vww_mobilenet" else 200
            xq = np.random.default_rng(0).integers(-128, 128, [n] + shape).astype(np.int8)
            feed, what = xq, f"{n} random"
        ref = sess.run(None, {sess.get_inputs()[0].name: feed})[0]
        if ref.dtype != np.int8:
            ref = QuantParams(tout.scale, tout.zero_point, "int8").quantize(ref)
        got = prog.run(xq).reshape(len(xq), -1).astype(np.int64)
        ref = ref.reshape(len(xq), -1).astype(np.int64)
        d = np.abs(got - ref)
        top1 = f"{(got.argmax(1) == ref.argmax(1)).mean():.1%}" if got.shape[1] <= 64 else "–"
        print(f"| {name} | {what} | {(d == 0).mean():.1%} | {(d <= 1).mean():.1%} | {d.max()} | {top1} |")


if __name__ == "__main__":
    main()
