"""Shared fixtures: bundled tasks, the MLPerf Tiny models beside the project, tiny models built in code."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
DATASETS = ROOT / "datasets"
TASKS = ("digits", "motions", "ecg")
REAL = ROOT.parent / "shared" / "real" / "mlperf_tiny"


def task_files(task: str) -> dict[str, Path]:
    d = DATASETS / task
    return {"float": d / "float.onnx", "int8": d / "int8.onnx", "calib": d / "calib.npz", "holdout": d / "holdout.npz"}


def real_model(name: str) -> tuple[Path, Path]:
    """Paths of an MLPerf Tiny pair; skips the test, saying why, when ../shared/real is absent."""
    f, q = REAL / "models" / f"{name}_float.onnx", REAL / "models" / f"{name}_int8.onnx"
    if not (f.is_file() and q.is_file()):
        pytest.skip(f"MLPerf Tiny models not found at {REAL / 'models'} (../shared/real is outside the project)")
    return f, q


def make_float_model(path: Path, *, kernel: int = 3, channels: int = 4, seed: int = 0,
                     names: str = "t", bias: bool = True) -> Path:
    """A tiny Conv→Relu→GlobalAveragePool→Flatten→Gemm classifier, input (N,1,8,8), 3 classes
    (``bias=False``: neither layer has a bias input)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    w = rng.normal(0, 0.5, (channels, 1, kernel, kernel)).astype(np.float32)
    b = rng.normal(0, 0.1, channels).astype(np.float32)
    fw = rng.normal(0, 0.5, (3, channels)).astype(np.float32)
    fb = np.zeros(3, np.float32)
    pad = kernel // 2
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"] if bias else ["x", "w"], [f"{names}_conv"], name="conv",
                         kernel_shape=[kernel, kernel],
                         pads=[pad] * 4),
        helper.make_node("Relu", [f"{names}_conv"], [f"{names}_relu"], name="relu"),
        helper.make_node("GlobalAveragePool", [f"{names}_relu"], [f"{names}_gap"], name="gap"),
        helper.make_node("Flatten", [f"{names}_gap"], [f"{names}_flat"], name="flatten"),
        helper.make_node("Gemm", [f"{names}_flat", "fw", "fb"] if bias else [f"{names}_flat", "fw"], ["logits"],
                         name="fc", transB=1),
    ]
    graph = helper.make_graph(
        nodes, "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 3])],
        [numpy_helper.from_array(a, n) for a, n in ((w, "w"), (b, "b"), (fw, "fw"), (fb, "fb"))
         if bias or n in ("w", "fw")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def quantize_model(float_path: Path, int8_path: Path, x: np.ndarray, input_name: str = "x",
                   fmt: str = "QDQ", per_channel: bool = False) -> Path:
    """quantize_static the way users do: per-tensor MinMax int8, QDQ (or QOperator)."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter(x[i:i + 1] for i in range(len(x)))

        def get_next(self):
            b = next(self.it, None)
            return None if b is None else {input_name: b}

    quantize_static(str(float_path), str(int8_path), Reader(),
                    quant_format=QuantFormat.QDQ if fmt == "QDQ" else QuantFormat.QOperator,
                    per_channel=per_channel, activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                    calibrate_method=CalibrationMethod.MinMax)
    return int8_path


@pytest.fixture(scope="session")
def tiny(tmp_path_factory) -> dict[str, Path]:
    """A tiny float model, its int8 QDQ and QOperator models, and a labelled set for them."""
    d = tmp_path_factory.mktemp("tiny")
    rng = np.random.default_rng(1)
    x = rng.uniform(0, 1, (64, 1, 8, 8)).astype(np.float32)
    f = make_float_model(d / "float.onnx")
    quantize_model(f, d / "int8.onnx", x[:32])
    quantize_model(f, d / "qop.onnx", x[:32], fmt="QOperator")
    import onnxruntime as ort

    y = ort.InferenceSession(str(f), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0].argmax(1)
    np.savez(d / "data.npz", x=x, y=y)
    return {"float": f, "int8": d / "int8.onnx", "qop": d / "qop.onnx", "data": d / "data.npz", "dir": d}
