"""The integer program (Python twin and C kernels) against TensorFlow Lite Micro's own interpreter.

TFLM's interpreter with its reference kernels (the ``tflite-micro`` wheel; CMSIS-NN is bit-exact with them) runs
MLPerf Tiny's original int8 .tflite files; the integer program is lowered from the same models converted to ONNX
(same weights, scales and zero points). Same random int8 inputs, outputs compared element by element.
"""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest

from repair.device.targets import model_source
from repair.intmodel import lower

from .conftest import REAL, ROOT

# name: (.tflite, .onnx, random inputs)
MODELS = {"kws": ("kws_ref_model.tflite", "kws_dscnn_int8.onnx", 200),
          "ic": ("pretrainedResnet_quant.tflite", "ic_resnet8_int8.onnx", 200),
          "vww": ("vww_96_int8.tflite", "vww_mobilenet_int8.onnx", 50),
          "ad": ("ad01_int8.tflite", "ad01_int8.onnx", 200),
          "sww": ("str_ww_ref_model.tflite", "sww_int8.onnx", 200)}


def tflm_outputs(tflite_path, x: np.ndarray) -> np.ndarray:
    """TFLM's int8 outputs for int8 inputs x [N, *input shape], one invoke per sample."""
    runtime = pytest.importorskip("tflite_micro.python.tflite_micro.runtime",
                                  reason="tflite-micro (TFLM's interpreter) is not installed")
    interp = runtime.Interpreter.from_bytes(tflite_path.read_bytes())
    out = []
    for sample in x:
        interp.set_input(sample[None], 0)
        interp.invoke()
        out.append(interp.get_output(0).copy())
    return np.concatenate(out).reshape(len(x), -1)


def _case(name):
    tfl, onx, n = MODELS[name]
    paths = REAL / "tflite" / tfl, REAL / "models" / onx
    if not all(p.is_file() for p in paths):
        pytest.skip(f"MLPerf Tiny models not found under {REAL} (../shared/real is outside the project)")
    prog = lower(paths[1])
    tin = prog.tensors[prog.input]
    rng = np.random.default_rng(7)
    x = rng.integers(-128, 128, (n, *tin.shape)).astype(np.int8)
    x[0], x[1] = -128, 127
    return paths[0], prog, x


@pytest.mark.real
@pytest.mark.parametrize("name", list(MODELS))
def test_python_twin_equals_tflm(name):
    tflite, prog, x = _case(name)
    want = tflm_outputs(tflite, x)
    got = prog.run(x.reshape(len(x), -1)).reshape(len(x), -1)
    np.testing.assert_array_equal(got, want, err_msg=f"{name}: {(got != want).mean():.2%} of outputs differ")


@pytest.mark.real
@pytest.mark.parametrize("name", list(MODELS))
def test_c_kernels_on_the_host_equal_tflm(name, tmp_path):
    cc = shutil.which("gcc")
    if cc is None:
        pytest.skip("gcc not found")
    tflite, prog, x = _case(name)
    lib = ROOT / "c_patches"
    exe = tmp_path / "model"
    r = subprocess.run([cc, "-std=c99", "-O2", "-Wall", "-Wextra", "-Werror", "-I", str(lib / "include"), "-I",
                        str(lib / "device"), str(model_source(prog, name)), str(lib / "src" / "tmlr_model_s8.c"),
                        str(lib / "src" / "tmlr_softmax_s8.c"), str(ROOT / "tests" / "c" / "model_driver.c"),
                        "-o", str(exe)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    run = subprocess.run([str(exe)], input=x.tobytes(), capture_output=True, timeout=600)
    assert run.returncode == 0
    got = np.frombuffer(run.stdout, np.int8).reshape(len(x), -1)
    np.testing.assert_array_equal(got, tflm_outputs(tflite, x))


@pytest.mark.real
@pytest.mark.parametrize("name", list(MODELS))
def test_program_lowered_from_the_tflite_itself_equals_tflm(name):
    """The .tflite front end (no ONNX in between): the same file TFLM runs, lowered to the program."""
    from repair.intmodel.tflite import lower_tflite

    tflite, _, x = _case(name)
    got = lower_tflite(tflite).run(x.reshape(len(x), -1)).reshape(len(x), -1)
    np.testing.assert_array_equal(got, tflm_outputs(tflite, x))
