"""The reference device's fast kernels (im2col columns with two-MAC SMLAD dot products on the Cortex-M4, a 3x3
depthwise path with the zero point folded into the bias, the pointwise and fully connected columns) against TFLite
Micro's interpreter, on random single-operator models: any size, stride, dilation, padding, group, activation and
per-channel or per-tensor weights (tests/tflite_builder.py). The virtual device runs the portable C, QEMU the
Cortex-M4 DSP path; the same inputs, every output equal."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("tflite_micro", reason="tflite-micro (TFLM's interpreter) is not installed")

from repair.device.targets import model_source, open_link  # noqa: E402
from repair.program.lower_tflite import lower_tflite  # noqa: E402

from .test_device import needs_qemu  # noqa: E402
from .tflite_builder import random_op_model, tflm_run  # noqa: E402


def _cases(rng, per_kind: int) -> list[tuple[bytes, tuple[int, ...], str]]:
    """``per_kind`` random conv, depthwise and fc models, and as many of each fast path's shapes (rare among random
    draws): 3x3 undilated depthwise with one output channel per input channel, and 1x1 stride-1 pointwise."""
    cases = [random_op_model(kind, rng) for kind in ("conv", "depthwise", "fc") for _ in range(per_kind)]
    dw3, pointwise = [], []
    while len(dw3) < per_kind:
        model, shape, desc = random_op_model("depthwise", rng)
        if " k3x3 " in desc and " d1,1 " in desc:
            prog = lower_tflite(model)
            layer = next(layer for layer in prog.layers if layer.op == "conv")
            w = layer.p["weights"]
            if layer.p["group"] == w.shape[0] and w.shape[1] == 1:  # one output channel per input channel
                dw3.append((model, shape, desc))
    while len(pointwise) < per_kind:
        model, shape, desc = random_op_model("conv", rng)
        if " k1x1 s1,1 " in desc:
            pointwise.append((model, shape, desc))
    return cases + dw3 + pointwise


def _check(url: str, cases) -> None:
    rng = np.random.default_rng(3)
    failures = []
    for model, shape, desc in cases:
        prog = lower_tflite(model)
        x = rng.integers(-128, 128, (3, *shape[1:])).astype(np.int8)
        x[0], x[1] = -128, 127
        want = np.array(tflm_run(model, x)).reshape(len(x), -1)
        out_size = prog.tensors[prog.output].size
        with open_link(url, model_c=model_source(prog, desc), build_flags=("-DTMLR_DEV_MAX_PAYLOAD=8192",)) as link:
            got = np.array([link.infer(s.reshape(-1), out_size).raw for s in x])
        if not np.array_equal(got, want):
            failures.append(f"{desc}: {int((got != want).sum())} of {want.size} differ")
    assert not failures, "\n".join(failures)


def test_kernels_on_the_virtual_device_equal_tflm():
    _check("sim", _cases(np.random.default_rng(11), per_kind=8))


@needs_qemu
def test_kernels_on_the_emulated_cortex_m4_equal_tflm():
    _check("qemu", _cases(np.random.default_rng(12), per_kind=4))
