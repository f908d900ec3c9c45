"""The integer program's fast convolution (sums by onnxruntime's float32 Conv; requantization by the host build's
C, or in float32 with the elements next to a rounding boundary recomputed) against its exact float64 path, layer by layer: every
geometry (padding, stride, dilation, groups, 1-D), zero points at the int8 ends, and weights large enough to take
each way — o = z_x, the input padded with z_x, and the float64 fallback where float32 could not be exact."""

from __future__ import annotations

import numpy as np
import pytest

from repair.program import host, ir, requantize, sums
from repair.program.ir import Layer


def _layer(rng, cin, cout, k, group, stride, dilation, pad, one_d, weight_max):
    kh = 1 if one_d else k
    w = rng.integers(-weight_max, weight_max + 1, (cout, cin // group, kh, k)).astype(np.int8)
    p = {"weights": w, "bias": [int(v) for v in rng.integers(-(1 << 20), 1 << 20, cout)],
         "mult": [int(v) for v in rng.integers(1 << 29, (1 << 31) - 1, cout)],
         "shift": [int(v) for v in rng.integers(-14, -3, cout)],
         "in_zp": int(rng.choice([-128, -3, 0, 127])), "out_zp": int(rng.integers(-128, 128)),
         "act_min": -128, "act_max": 127, "group": group, "strides": (1 if one_d else stride, stride),
         "dilations": (1 if one_d else dilation, dilation),
         "pads": (0 if one_d else pad, pad, 0 if one_d else pad, pad)}
    return Layer("conv", ["x"], "y", "conv", p)


def random_layers(rng, n: int):
    """(case, layer, input) for n random convolutions: every geometry, 1-D every fourth, a long column every third
    (100-160 input channels per group), weights up to 20 or 127; inputs [5, *shape] with both int8 ends."""
    for case in range(n):
        one_d = case % 4 == 3
        group = int(rng.choice([1, 2, 4]))
        cin = group * int(rng.integers(1, 9)) if case % 3 else group * int(rng.integers(100, 160))
        cout = group * int(rng.integers(1, 5))
        k = int(rng.integers(1, 5))
        layer = _layer(rng, cin, cout, k, group, int(rng.integers(1, 3)), int(rng.integers(1, 3)),
                       int(rng.integers(0, 3)), one_d, int(rng.choice([20, 127])))
        shape = (cin, 14) if one_d else (cin, int(rng.integers(k * 2, 12)), 13)
        x = rng.integers(-128, 128, (5, *shape)).astype(np.float32)
        x[0], x[1] = -128, 127
        yield case, layer, x


def _slow_conv(layer, x, monkeypatch):
    """The layer by numpy sums in exact float arithmetic and the exact float64/int64 requantization."""
    with monkeypatch.context() as m:
        m.setattr(ir, "conv_sums", lambda p, x: None)
        m.setattr(requantize, "requantize_fast", lambda *args: None)
        return ir._conv(layer, [x], {})


@pytest.mark.parametrize("host_c", [True, False], ids=["host C", "numpy"])
@pytest.mark.parametrize("seed", range(6))
def test_fast_convolution_equals_the_exact_path(seed, host_c, monkeypatch):
    if not host_c:
        monkeypatch.setattr(host, "library", lambda: None)
    elif host.library() is None:
        pytest.skip("no C compiler here: the host build is not available")
    for case, layer, x in random_layers(np.random.default_rng(seed), 12):
        fast = ir._conv(layer, [x], {})
        slow = _slow_conv(layer, x, monkeypatch)
        np.testing.assert_array_equal(fast.reshape(slow.shape), slow, err_msg=f"case {case}: {layer.p['pads']}")


def test_every_way_of_summing_is_taken():
    """The three ways exist on realistic layers: small weights (o = z_x), a padded layer whose zero point would
    break the bound (padded here), and a layer too long for float32 at all (float64)."""
    from repair.program.requantize import folded_bias

    rng = np.random.default_rng(0)
    small = _layer(rng, 16, 4, 3, 1, 1, 1, 1, False, 20).p
    padded = _layer(rng, 1100, 2, 1, 1, 1, 1, 1, False, 127).p
    padded["in_zp"] = -128
    long = _layer(rng, 2600, 2, 1, 1, 1, 1, 0, False, 127).p
    def spread(p, offset):  # the bound on the sums alone
        folded, bound = folded_bias(p, offset)
        return (bound - np.abs(folded)).max()

    assert spread(small, small["in_zp"]) < sums.EXACT_FLOAT32
    assert spread(padded, -128) >= sums.EXACT_FLOAT32 > spread(padded, 0)
    assert spread(long, 0) >= sums.EXACT_FLOAT32
    x = rng.integers(-128, 128, (2, 2600, 3, 3)).astype(np.float32)
    assert sums.conv_sums(long, x) is None
    assert sums.conv_sums(padded, x[:, :1100]).sums.shape == (2, 2, 5, 5)


def test_a_dead_channel_does_not_send_its_layer_to_the_slow_path(monkeypatch):
    """A channel whose bias (10^9, as some TFLite models carry) drives every output to the range's end is constant:
    its value is written directly, the other channels stay on the fast path, and the layer equals the exact path."""
    rng = np.random.default_rng(3)
    layer = _layer(rng, 32, 6, 3, 1, 1, 1, 1, False, 127)
    layer.p["bias"][2] = -1_070_000_000
    layer.p["bias"][4] = 1_070_000_000
    layer.p["mult"][2] = 0  # as such channels often carry: no multiplier at all, or one ≥ ½ with a left shift
    layer.p["mult"][4], layer.p["shift"][4] = 1 << 30, 3
    x = rng.integers(-128, 128, (4, 32, 9, 9)).astype(np.float32)
    s = sums.conv_sums(layer.p, x)
    assert s is not None and list(np.flatnonzero(s.constant)) == [2, 4]
    assert requantize.requantize_fast(s.accumulators(), layer.p, s.bound, ignore=s.constant) is not None
    np.testing.assert_array_equal(ir._conv(layer, [x], {}), _slow_conv(layer, x, monkeypatch))
