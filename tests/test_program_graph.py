"""The integer program compiled into onnxruntime graphs (``repair.program.graph``) against exact int64 arithmetic:
its float64 requantization over TFLM's whole parameter range (multipliers in [2^30, 2^31), shifts in [−31, 30],
any bias and zero points), and its convolutions over every geometry, against the numpy path's exact sums."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from repair import fixedpoint as fp
from repair.program import graph, host
from repair.program.ir import IntProgram, Layer, QTensor

from .test_program_sums import _slow_conv, random_layers


@pytest.fixture(autouse=True)
def _without_host_c(monkeypatch):
    """The graphs are what runs without the host build (no C compiler)."""
    monkeypatch.setattr(host, "library", lambda: None)


def _program(layer: Layer, in_shape: tuple, out_shape: tuple) -> IntProgram:
    tensors = {"x": QTensor("x", in_shape, 1.0, 0), "y": QTensor("y", out_shape, 1.0, 0)}
    return IntProgram(tensors, [layer], "x", "y")


def _uses_graph(prog: IntProgram) -> bool:
    return isinstance(prog.plan({prog.output})[0], graph.Segment)


@settings(max_examples=150, deadline=None)
@given(seed=st.integers(0, 2 ** 32 - 1), channels=st.integers(1, 6), inputs=st.integers(1, 40),
       weight_max=st.sampled_from([1, 20, 127]), bias_bits=st.integers(0, 31), shift=st.integers(-31, 30),
       in_zp=st.integers(-128, 127), out_zp=st.integers(-128, 127), act=st.sampled_from([(-128, 127), (0, 127),
                                                                                         (-100, 50)]))
def test_graph_fully_connected_layer_equals_int64_arithmetic(seed, channels, inputs, weight_max, bias_bits, shift,
                                                             in_zp, out_zp, act):
    rng = np.random.default_rng(seed)
    w = rng.integers(-weight_max, weight_max + 1, (channels, inputs)).astype(np.int8)
    bias = rng.integers(-(1 << bias_bits), (1 << bias_bits) + 1, channels).astype(np.int64)
    mult = rng.integers(1 << 30, 1 << 31, channels).astype(np.int64)
    shifts = np.clip(shift + rng.integers(-2, 3, channels), -31, 30)
    p = {"weights": w, "bias": [int(b) for b in bias], "mult": [int(m) for m in mult],
         "shift": [int(s) for s in shifts], "in_zp": in_zp, "out_zp": out_zp, "act_min": act[0], "act_max": act[1]}
    prog = _program(Layer("fc", ["x"], "y", "fc", p), (inputs,), (channels,))
    x = rng.integers(-128, 128, (9, inputs)).astype(np.int8)
    x[0], x[1] = -128, 127
    acc = (x.astype(np.int64) - in_zp) @ w.astype(np.int64).T + bias
    want = np.stack([fp.requantize(acc[:, c], int(mult[c]), int(shifts[c])) for c in range(channels)], axis=1)
    want = np.clip(want + out_zp, *act)
    np.testing.assert_array_equal(prog.run(x).astype(np.int64), want)


def test_the_graph_takes_typical_layers_and_declines_inexact_ones():
    """Typical parameters compile; a left shift that could saturate, or accumulators whose product with the
    multiplier reaches 2^53, run in numpy instead (and the fully connected test above checks both agree)."""
    rng = np.random.default_rng(0)
    w = rng.integers(-127, 128, (4, 32)).astype(np.int8)
    p = {"weights": w, "bias": [100, -100, 0, 5], "mult": [1 << 30] * 4, "shift": [-8] * 4, "in_zp": 3,
         "out_zp": -5, "act_min": -128, "act_max": 127}
    assert _uses_graph(_program(Layer("fc", ["x"], "y", "fc", p), (32,), (4,)))
    assert not _uses_graph(_program(Layer("fc", ["x"], "y", "fc", dict(p, shift=[20] * 4)), (32,), (4,)))
    wide = dict(p, weights=np.full((4, 600), 127, np.int8), mult=[(1 << 31) - 1] * 4, shift=[-20] * 4)
    assert not _uses_graph(_program(Layer("fc", ["x"], "y", "fc", wide), (600,), (4,)))  # A·M ≈ 2^54


@pytest.mark.parametrize("seed", range(4))
def test_graph_convolution_equals_the_exact_path(seed, monkeypatch):
    taken = 0
    for case, layer, x in random_layers(np.random.default_rng(100 + seed), 10):
        slow = _slow_conv(layer, x, monkeypatch)
        out_shape = (slow.shape[1], slow.shape[-1]) if x.ndim == 3 else slow.shape[1:]
        prog = _program(layer, x.shape[1:], out_shape)
        taken += _uses_graph(prog)
        got = prog.run(x.astype(np.int8))
        np.testing.assert_array_equal(got.reshape(slow.shape), slow, err_msg=f"case {case}: {layer.p['pads']}")
    assert taken >= 5  # most of these layers compile


def test_a_plan_stops_at_the_last_layer_its_tensors_need(monkeypatch):
    """An early tensor costs only the layers before it (bias correction asks for each layer's input in turn), and
    its values are those of a whole run (here by the graphs)."""
    from repair.program import lower
    from repair.resources import datasets_dir

    prog = lower(str(datasets_dir() / "digits" / "int8.onnx"))
    early = prog.layers[1].output
    assert prog.plan({prog.input}) == []
    with monkeypatch.context() as m:  # the layer-by-layer plan (a host build present) lists the layers it runs
        m.setattr(host, "library", lambda: object())
        assert prog.plan({early}) == prog.layers[:2]
    x = np.random.default_rng(0).integers(-128, 128, (20, *prog.tensors[prog.input].shape)).astype(np.int8)
    whole = prog.run_tensors(x, [early, prog.output])[early]
    np.testing.assert_array_equal(prog.run_tensors(x, [early])[early], whole)
