"""Per-operator property test: random single-operator int8 .tflite models (tests/tflite_builder.py) through TFLite
Micro's interpreter and through the integer program lowered from the same file (repair.program.lower_tflite):
every output equal. ``TMLR_TFLM_CASES`` sets the number of models (default 400; 1,200 for the full run)."""

from __future__ import annotations

import os

import numpy as np
import pytest

pytest.importorskip("tflite_micro", reason="tflite-micro (TFLM's interpreter) is not installed")

from repair.program.lower_tflite import lower_tflite  # noqa: E402

from .tflite_builder import KINDS, random_op_model, tflm_run  # noqa: E402

CASES = int(os.environ.get("TMLR_TFLM_CASES", "400"))


@pytest.mark.parametrize("kind", KINDS)
def test_single_op_models_equal_tflm(kind):
    rng = np.random.default_rng(KINDS.index(kind) + 1)
    n_models = max(1, CASES // len(KINDS))
    failures = []
    for case in range(n_models):
        model, shape, desc = random_op_model(kind, rng)
        x = rng.integers(-128, 128, (4, *shape[1:])).astype(np.int8)
        x[0], x[1] = -128, 127
        want = tflm_run(model, x)
        got = lower_tflite(model).run(x.reshape(len(x), -1)).reshape(len(x), -1)
        if not np.array_equal(got, np.array(want)):
            d = np.abs(got.astype(int) - np.array(want, int))
            failures.append(f"case {case}: {desc}: {int((d > 0).sum())} of {d.size} differ, worst {int(d.max())}")
    assert not failures, f"{len(failures)} of {n_models} {kind} models differ from TFLM:\n" + "\n".join(failures[:10])


def _bad(tmp_path, name, data):
    path = tmp_path / name
    path.write_bytes(data)
    return path


def test_bad_tflite_input_is_named(tmp_path):
    from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as S

    from repair.errors import ModelError

    from .conftest import REAL
    from .tflite_builder import ModelBuilder

    b = ModelBuilder()
    x = b.tensor([1, 8], scale=0.1, zero_point=0)
    y = b.tensor([1, 8], scale=0.1, zero_point=0)
    tanh = b.build(S.BuiltinOperator.TANH, [x], y)
    with pytest.raises(ModelError, match=r"operator 0 \(TANH\): not supported by the integer program"):
        lower_tflite(_bad(tmp_path, "tanh.tflite", tanh))
    b = ModelBuilder()
    x = b.tensor([1, 8], 3, scale=0.1, zero_point=128)  # uint8: legacy quantization
    y = b.tensor([1, 8], 3, scale=0.1, zero_point=128)
    with pytest.raises(ModelError, match="uint8 .legacy"):
        lower_tflite(_bad(tmp_path, "u8.tflite", b.build(S.BuiltinOperator.QUANTIZE, [x], y)))
    good = random_op_model("conv", np.random.default_rng(0))[0]
    with pytest.raises(ModelError, match="damaged TFLite flatbuffer"):
        lower_tflite(_bad(tmp_path, "cut.tflite", good[: len(good) // 2]))
    with pytest.raises(ModelError, match="not a TFLite flatbuffer"):
        lower_tflite(_bad(tmp_path, "text.tflite", b"this is not a model at all"))
    flt = REAL / "tflite" / "kws_ref_model_float32.tflite"
    if flt.is_file():
        with pytest.raises(ModelError, match="float activations: a float or hybrid model"):
            lower_tflite(flt)


def test_a_float_input_quantized_inside_the_model():
    """float input → QUANTIZE → SOFTMAX: the program starts at the QUANTIZE output (the host quantizes)."""
    from tflite_micro.python.tflite_micro import runtime
    from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as S

    from .tflite_builder import ModelBuilder

    b = ModelBuilder()
    x = b.tensor([1, 12], 0)  # float32
    q = b.tensor([1, 12], scale=0.05, zero_point=3)
    y = b.tensor([1, 12], scale=1 / 256, zero_point=-128)
    o = S.SoftmaxOptionsT()
    o.beta = 1.0
    model = b.build_ops([(S.BuiltinOperator.QUANTIZE, [x], q, 0, None),
                         (S.BuiltinOperator.SOFTMAX, [q], y, S.BuiltinOptions.SoftmaxOptions, o)], x, y)
    prog = lower_tflite(model)
    rng = np.random.default_rng(5)
    xf = rng.normal(0, 2, (20, 12)).astype(np.float32)
    interp = runtime.Interpreter.from_bytes(model)
    want = []
    for s in xf:
        interp.set_input(s[None], 0)
        interp.invoke()
        want.append(interp.get_output(0).reshape(-1).copy())
    # TFLM quantizes with round half away from zero (random floats have no ties)
    xq = np.clip(np.round(xf / np.float32(0.05)) + 3, -128, 127).astype(np.int8)
    np.testing.assert_array_equal(prog.run(xq), np.array(want))
