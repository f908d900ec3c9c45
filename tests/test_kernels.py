"""The reference device's fast kernels (im2col columns with two-MAC SMLAD dot products on the Cortex-M4, a 3x3
depthwise path with the zero point folded into the bias, the pointwise and fully connected columns; pooling, add and
the layout transposes) against TFLite
Micro's interpreter, on random single-operator models: any size, stride, dilation, padding, group, activation and
per-channel or per-tensor weights (tests/tflite_builder.py). The virtual device runs the portable C, QEMU the
Cortex-M4 DSP path; the same inputs, every output equal."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest

pytest.importorskip("tflite_micro", reason="tflite-micro (TFLM's interpreter) is not installed")

from repair.device.targets import model_source, open_link  # noqa: E402
from repair.errors import DeviceError  # noqa: E402
from repair.program.ir import IntProgram, Layer, QTensor  # noqa: E402
from repair.program.lower_tflite import lower_tflite  # noqa: E402
from repair.resources import c_library_dir  # noqa: E402

from .test_device import needs_qemu  # noqa: E402
from .tflite_builder import random_op_model, tflm_run  # noqa: E402


def _cases(rng, per_kind: int) -> list[tuple[bytes, tuple[int, ...], str]]:
    """``per_kind`` random conv, depthwise, fc, pooling and add models, and as many of each fast path's shapes (rare
    among random draws): 3x3 undilated depthwise with one output channel per input channel, and 1x1 stride-1
    pointwise. (Every .tflite program also transposes its input and output between NHWC and NCHW on the device.)"""
    cases = [random_op_model(kind, rng) for kind in ("conv", "depthwise", "fc", "avgpool", "maxpool", "add")
             for _ in range(per_kind)]
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


def _long_column_program(kind: str, rng) -> IntProgram:
    """One layer whose im2col column is longer than TMLR_MODEL_MAX_COL's default (1024 values): a 3x3 convolution
    over 128 input channels (1152), or a fully connected layer over 1500 inputs."""
    cout = 6
    p = {"in_zp": -7, "out_zp": 2, "act_min": -128, "act_max": 127,
         "bias": [int(v) for v in rng.integers(-5000, 5000, cout)],
         "mult": [int(v) for v in rng.integers(1 << 30, (1 << 31) - 1, cout)], "shift": [-11] * cout}
    if kind == "fc":
        p["weights"] = rng.integers(-127, 128, (cout, 1500)).astype(np.int8)
        tensors = {"x": QTensor("x", (1500,), 0.1, -7), "y": QTensor("y", (cout,), 0.1, 2)}
        return IntProgram(tensors, [Layer("fc", ["x"], "y", "fc 1500->6", p)], "x", "y")
    p.update({"weights": rng.integers(-127, 128, (cout, 128, 3, 3)).astype(np.int8), "group": 1, "strides": (1, 1),
              "dilations": (1, 1), "pads": (1, 1, 1, 1), "in_hw": (5, 4), "out_hw": (5, 4)})
    tensors = {"x": QTensor("x", (128, 5, 4), 0.1, -7), "y": QTensor("y", (cout, 5, 4), 0.1, 2)}
    return IntProgram(tensors, [Layer("conv", ["x"], "y", "conv 128->6 3x3", p)], "x", "y")


@pytest.mark.parametrize("url", ["sim", pytest.param("qemu", marks=needs_qemu)])
@pytest.mark.parametrize("kind", ["conv", "fc"])
def test_a_column_longer_than_the_default_scratch_builds_with_the_flag_its_source_names(kind, url):
    """The model source names the scratch its longest column needs (a build flag the device build reads, and an
    #error for a build without it); built so, the device equals the program."""
    rng = np.random.default_rng(5)
    prog = _long_column_program(kind, rng)
    src = model_source(prog, kind)
    text = src.read_text()
    need = 1152 if kind == "conv" else 1500
    assert f"-DTMLR_MODEL_MAX_COL={need}" in text.splitlines()[2]
    cc = shutil.which("gcc")
    if cc is not None:  # the default scratch refuses the model at compile time, saying what to do
        root = c_library_dir()
        r = subprocess.run([cc, "-fsyntax-only", f"-I{root / 'include'}", f"-I{root / 'device'}", str(src)],
                           capture_output=True, text=True)
        assert r.returncode != 0 and f"build with -DTMLR_MODEL_MAX_COL={need}" in r.stderr
    x = rng.integers(-128, 128, (3, *prog.tensors["x"].shape)).astype(np.int8)
    x[0] = -128
    want = prog.run(x).reshape(len(x), -1)
    with open_link(url, model_c=src, build_flags=("-DTMLR_DEV_MAX_PAYLOAD=8192",)) as link:
        got = np.array([link.infer(s.reshape(-1), want.shape[1]).raw for s in x])
    assert np.array_equal(got, want)


def test_a_layer_table_whose_column_outgrows_the_scratch_fails_the_inference_instead_of_overrunning(tmp_path):
    """A source stripped of its build flag and #error (a hand-edited table) builds with the default scratch; the
    kernels then refuse the layer (INFER answers 'model failed') rather than write past col_buf."""
    prog = _long_column_program("fc", np.random.default_rng(6))
    text = model_source(prog, "fc").read_text()
    kept = [line for line in text.splitlines() if "TMLR_MODEL_MAX_COL" not in line and not line.startswith("#e")]
    stripped = tmp_path / "stripped.c"
    stripped.write_text("\n".join(kept) + "\n")
    with open_link("sim", model_c=stripped, build_flags=("-DTMLR_DEV_MAX_PAYLOAD=8192",)) as link:
        with pytest.raises(DeviceError, match="(?i)model"):
            link.infer(np.zeros(1500, np.int8), 6)


def _requantization_program(rng, out_zp: int, act: tuple[int, int], kind: str) -> IntProgram:
    """A layer whose 100 output channels span the requantization's documented range (tmlr_requantize: shift in
    [-31, 30], any multiplier): every right shift 1..31 with multipliers at 2^30, 2^31 - 1 and between (the kernels'
    common case, in Thumb-2 instructions on the Cortex-M4), then left shifts and multipliers of 0, 1 and below 0 (the
    general path); sums in the output range at each shift, and every fourth 2^20 short of an int32 limit. ``kind``
    "fc": a fully connected layer, its outputs one per channel (`requantize_channels`); "conv": a 1x1 convolution over
    2x2 pixels, each channel's four outputs one run of its requantization (`requantize_out`)."""
    k, limit = 8, (1 << 31) - (1 << 20)
    right = [(-s, m) for s in range(1, 32) for m in (1 << 30, (1 << 31) - 1, int(rng.integers(1 << 30, 1 << 31)))]
    general = [(0, 1 << 30), (30, (1 << 31) - 1), (1, 1), (5, 0), (-3, 0), (-7, -(1 << 30)), (2, -12345)]
    pairs = right + general
    cout = len(pairs)  # 100
    # sums the output range can hold (about 2^(r+1) per step: the rounding matters), and every fourth at a limit
    scale = np.array([2.0 ** (-s + 1) if s < 0 else 1.0 for s, _ in pairs])
    bias = np.clip(rng.uniform(-150, 150, cout) * scale, -limit, limit).astype(np.int64)
    bias[::4] = limit * np.where(np.arange(0, cout, 4) % 8 == 0, 1, -1)
    p = {"in_zp": -3, "out_zp": out_zp, "act_min": act[0], "act_max": act[1], "bias": [int(v) for v in bias],
         "mult": [m for _, m in pairs], "shift": [s for s, _ in pairs],
         "weights": rng.integers(-127, 128, (cout, k)).astype(np.int8)}
    name = f"requantization {kind} zp {out_zp} act {act}"
    if kind == "fc":
        tensors = {"x": QTensor("x", (k,), 0.1, -3), "y": QTensor("y", (cout,), 0.1, out_zp)}
        return IntProgram(tensors, [Layer("fc", ["x"], "y", name, p)], "x", "y")
    p.update({"weights": p["weights"].reshape(cout, k, 1, 1), "group": 1, "strides": (1, 1), "dilations": (1, 1),
              "pads": (0, 0, 0, 0), "in_hw": (2, 2), "out_hw": (2, 2)})
    tensors = {"x": QTensor("x", (k, 2, 2), 0.1, -3), "y": QTensor("y", (cout, 2, 2), 0.1, out_zp)}
    return IntProgram(tensors, [Layer("conv", ["x"], "y", name, p)], "x", "y")


@pytest.mark.parametrize("kind", ["fc", "conv"])
@pytest.mark.parametrize("url", ["sim", pytest.param("qemu", marks=needs_qemu)])
def test_the_requantization_equals_the_program_over_its_whole_range(url, kind):
    """Each output's requantization — on the Cortex-M4 a loop of Thumb-2 instructions (`channel_run` for outputs one
    per channel, `finish_run` for runs of one channel's), elsewhere tmlr_requantize_right and tmlr_requantize — equals
    the Python program's (TFLM's arithmetic: tests above) for every right shift, multipliers at their limits, sums near
    the int32 limits of both signs, the general path's shifts and multipliers, and activation ranges full, ReLU-like
    and narrow."""
    rng = np.random.default_rng(21)
    for out_zp, act in ((0, (-128, 127)), (-128, (-128, 127)), (5, (5, 127)), (-20, (-40, 30))):
        prog = _requantization_program(rng, out_zp, act, kind)
        x = rng.integers(-128, 128, (6, prog.tensors["x"].size)).astype(np.int8)
        x[0], x[1] = -128, 127
        want = prog.run(x).reshape(len(x), -1)
        with open_link(url, model_c=model_source(prog, "requantization")) as link:
            got = np.array([link.infer(s, want.shape[1]).raw for s in x])
        assert np.array_equal(got, want), f"zp {out_zp}, act {act}: {int((got != want).sum())} outputs differ"
        assert len(np.unique(want)) > 20  # the outputs are not all clamped to one value


@pytest.mark.parametrize("url", ["sim", pytest.param("qemu", marks=needs_qemu)])
def test_a_per_tensor_fully_connected_layer_equals_the_program_across_its_runs_of_outputs(url):
    """A fully connected layer with one requantization requantizes its sums in runs (`rows_run`: 16 at a time): 37
    outputs (two full runs and an odd last one) at right shifts 1, 17 and 31 and a left shift, equal to the program."""
    rng = np.random.default_rng(8)
    k, cout = 24, 37
    for shift in (-1, -17, -31, 3):
        scale = 2.0 ** (-shift + 1) if shift < 0 else 2.0 ** -shift
        w_max = int(np.clip(scale * 150 / 400, 0, 127))  # sums the output range can hold (the left shift: the bias)
        bias = np.clip(rng.uniform(-150, 150, cout) * scale, -2 ** 31 + 2 ** 20, 2 ** 31 - 2 ** 20)
        p = {"in_zp": 4, "out_zp": -9, "act_min": -128, "act_max": 127, "bias": [int(v) for v in bias],
             "mult": [int(rng.integers(1 << 30, 1 << 31))], "shift": [shift],
             "weights": rng.integers(-w_max, w_max + 1, (cout, k)).astype(np.int8)}
        tensors = {"x": QTensor("x", (k,), 0.1, 4), "y": QTensor("y", (cout,), 0.1, -9)}
        prog = IntProgram(tensors, [Layer("fc", ["x"], "y", f"fc per-tensor shift {shift}", p)], "x", "y")
        x = rng.integers(-128, 128, (4, k)).astype(np.int8)
        want = prog.run(x).reshape(len(x), -1)
        with open_link(url, model_c=model_source(prog, "per-tensor fc")) as link:
            got = np.array([link.infer(s, cout).raw for s in x])
        assert np.array_equal(got, want), f"shift {shift}: {int((got != want).sum())} outputs differ"
        assert shift < -20 or len(np.unique(want)) > 10  # at 2^-31 every int32 sum rounds to z_y (or one off it)
