"""The peers tmlrepair is measured against, run the way their users run them, and one scorer for all: the model's
accuracy as the device computes it (the integer program, bit-exact with TFLite Micro; onnxruntime's float
simulation of QDQ only for a model the program cannot express, and then labelled).

- ORT: ``onnxruntime.quantization.quantize_static``, QDQ, int8, MinMax per tensor (what users usually run:
  the "naive" model), per channel, and Percentile calibration;
- NNCF: ``nncf.quantize`` on the float ONNX model with its defaults (fast bias correction) or with the full
  BiasCorrection (``fast_bias_correction=False``); needs ``pip install -e '.[bench]'``.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx

from repair.errors import ModelError
from repair.models import load_pair
from repair.program import lower
from repair.program.runner import ProgramRunner

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_datasets import quantize  # noqa: E402  (the bundled models' own quantize_static call)


def ort_quantize(float_path: Path, x: np.ndarray, **options) -> bytes:
    """quantize_static on calibration inputs ``x`` (``options``: per_channel, calibrate_method, extra_options)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "q.onnx"
        quantize(float_path, out, x, onnx.load(str(float_path)).graph.input[0].name, **options)
        return out.read_bytes()


def ort_percentile(float_path: Path, x: np.ndarray, percentile: float) -> bytes:
    from onnxruntime.quantization import CalibrationMethod

    return ort_quantize(float_path, x, calibrate_method=CalibrationMethod.Percentile,
                        extra_options={"CalibPercentile": percentile})


def nncf_quantize(float_path: Path, x: np.ndarray, fast: bool) -> bytes:
    import nncf

    model = onnx.load(str(float_path))
    name = model.graph.input[0].name
    ds = nncf.Dataset([x[i:i + 1] for i in range(len(x))], lambda b: {name: b})
    q = nncf.quantize(model, ds, subset_size=len(x), fast_bias_correction=fast)
    return q.SerializeToString()


def device_outputs(float_path: Path, int8: bytes, x: np.ndarray) -> tuple[np.ndarray, str]:
    """The int8 model's dequantized outputs on float inputs ``x`` and what computed them."""
    with tempfile.TemporaryDirectory() as tmp:
        p = Path(tmp) / "int8.onnx"
        p.write_bytes(int8)
        pair = load_pair(float_path, p)
        try:
            return ProgramRunner(pair, lower(pair.int8.proto)).output_values(x), "integer program"
        except ModelError:
            sess = pair.int8.session()
            out = sess.run(None, pair.int8_feed({pair.float.inputs[0].name: x}))[0]
            return pair.int8_output_to_float(0, out).reshape(len(x), -1), "onnxruntime (program refused it)"
