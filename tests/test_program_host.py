"""The host build's requantization (c_patches/host/tmlr_program_host.c through ``repair.program.host``) against
the Python twin of TFLM's arithmetic, over the whole parameter range: any int32 accumulator, multipliers in
[0, 2^31), shifts in [−31, 30] (left shifts that saturate included), any zero point and activation range, both
loops (a fully connected layer's channels-last rows and a convolution's channel planes); and without a
compiler, the program still runs (its onnxruntime graphs)."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from repair import fixedpoint as fp
from repair.program import host
from repair.resources import host_compiler

# skipped only without a compiler: where there is one, a source that no longer compiles fails here instead of
# leaving every caller on the slower numpy path unnoticed
pytestmark = pytest.mark.skipif(host_compiler() is None, reason="no C compiler here: the host build is not available")


def test_the_host_build_builds_where_there_is_a_compiler():
    assert os.environ.get("TMLREPAIR_HOST_C", "1") == "0" or host.library() is not None, \
        f"{host_compiler()} did not build c_patches/host (compile it by hand to see why)"


@settings(max_examples=300, deadline=None)
@given(seed=st.integers(0, 2 ** 32 - 1), n=st.integers(1, 5), channels=st.integers(1, 9),
       inner=st.sampled_from([1, 1, 3, 17]), sum_bits=st.integers(0, 24), bias_bits=st.integers(0, 30),
       shift=st.integers(-31, 30), spread=st.integers(0, 4), multiplier=st.sampled_from(["normal", "any"]),
       zp=st.integers(-128, 127), act=st.sampled_from([(-128, 127), (0, 127), (-100, 50)]))
def test_host_requantize_equals_tflm_arithmetic(seed, n, channels, inner, sum_bits, bias_bits, shift, spread,
                                                multiplier, zp, act):
    rng = np.random.default_rng(seed)
    limit = (1 << sum_bits) - 1
    sums = rng.integers(-limit, limit + 1, (n, channels, inner)).astype(np.float32)  # exact: |sums| < 2^24
    bias = rng.integers(-(1 << bias_bits), (1 << bias_bits) + 1, channels)
    low = (1 << 30) if multiplier == "normal" else 0
    mult = rng.integers(low, 1 << 31, channels)
    shifts = np.clip(shift + rng.integers(-spread, spread + 1, channels), -31, 30)
    p = {"mult": mult.tolist(), "shift": shifts.tolist(), "out_zp": zp, "act_min": act[0], "act_max": act[1]}
    acc = sums.astype(np.int64) + bias[None, :, None]
    bound = np.abs(acc).max(axis=(0, 2)).astype(np.float64)
    got = host.requantize(sums, bias, bound, p)
    assert got is not None
    want = np.stack([fp.requantize(acc[:, c], int(mult[c]), int(shifts[c])) for c in range(channels)], axis=1)
    np.testing.assert_array_equal(got.astype(np.int64), np.clip(want + zp, *act))


def test_host_requantize_declines_what_the_device_would_overflow():
    p = {"mult": [1 << 30], "shift": [-3], "out_zp": 0, "act_min": -128, "act_max": 127}
    sums = np.zeros((1, 1, 4), np.float32)
    assert host.requantize(sums, np.array([5]), np.array([2.0 ** 31]), p) is None
    assert host.requantize(sums, np.array([5]), np.array([5.0]), dict(p, shift=[-32])) is None
    assert host.requantize(sums, np.array([5]), np.array([5.0]), p) is not None


def test_without_a_compiler_the_program_runs_its_graphs(tmp_path):
    """CC pointing nowhere and an empty cache: no host build, and the program gives the same integers."""
    code = ("import numpy as np; from repair.program import lower, host; import repair.resources as r;"
            "prog = lower(str(r.datasets_dir() / 'digits' / 'int8.onnx'));"
            "x = np.random.default_rng(0).integers(-128, 128, (50, *prog.tensors[prog.input].shape)).astype(np.int8);"
            "print(host.library() is None, type(prog.plan({prog.output})[0]).__name__);"
            "import sys; np.save(sys.argv[1], prog.run(x))")
    env = {"CC": str(tmp_path / "no-such-cc"), "TMLREPAIR_CACHE": str(tmp_path / "cache"), "PATH": "/nonexistent"}
    out = tmp_path / "graph.npy"
    r = subprocess.run([sys.executable, "-c", code, str(out)], capture_output=True, text=True,
                       env={**os.environ, **env})
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["True", "Segment"]
    from repair.program import lower
    from repair.resources import datasets_dir

    prog = lower(str(datasets_dir() / "digits" / "int8.onnx"))
    x = np.random.default_rng(0).integers(-128, 128, (50, *prog.tensors[prog.input].shape)).astype(np.int8)
    np.testing.assert_array_equal(np.load(out), prog.run(x))
