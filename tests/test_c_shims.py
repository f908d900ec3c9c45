"""The C shims in c_patches/ equal their Python twins in repair/fixedpoint.py, bit for bit.

The library and tests/c/driver.c are compiled twice with gcc — ``-std=c99 -Wall -Wextra
-Wconversion -Werror -O2``, and again with ``-fsanitize=address,undefined`` (any report
aborts) — and each build is fed ≥ 10,000 vectors per shim: seeded random draws plus the
edges (int8/int16/int32 extremes, saturation, ties, empty windows).
"""

from __future__ import annotations

import functools
import shutil
import subprocess

import numpy as np
import pytest

from repair import fixedpoint as fp
from repair import fixedpoint_anomaly as fpa

from .conftest import ROOT

N = 10_000
CFLAGS = ["-std=c99", "-Wall", "-Wextra", "-Wconversion", "-Werror", "-I", str(ROOT / "c_patches" / "include")]
BUILDS = {"plain": ["-O2"], "sanitized": ["-O1", "-g", "-fsanitize=address,undefined", "-fno-sanitize-recover=all"]}


@pytest.fixture(scope="module", params=list(BUILDS))
def driver(request, tmp_path_factory):
    cc = shutil.which("gcc")
    if cc is None:
        pytest.skip("gcc not found: the C shims cannot be compiled here")
    out = tmp_path_factory.mktemp("cshim") / f"driver_{request.param}"
    sources = sorted(str(p) for p in (ROOT / "c_patches" / "src").glob("*.c")) + [str(ROOT / "tests" / "c" / "driver.c")]
    r = subprocess.run([cc, *CFLAGS, *BUILDS[request.param], *sources, "-o", str(out)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr

    def run(lines: list[str]) -> list[str]:
        res = subprocess.run([str(out)], input="\n".join(lines) + "\n", capture_output=True, text=True, timeout=300)
        assert res.returncode == 0 and not res.stderr, res.stderr[-2000:]
        return res.stdout.splitlines()

    return run


def _ints(rng, lo, hi, n):
    return rng.integers(lo, hi, n, endpoint=True, dtype=np.int64)


def _with_edges(values, edges):
    return np.concatenate([np.asarray(edges, np.int64), values])


def _assert_equal(got_lines, want, what):
    got = np.array([int(v) for line in got_lines for v in line.split()])
    want = np.asarray(want).ravel()
    bad = np.flatnonzero(got != want)
    assert bad.size == 0, f"{what}: {bad.size} mismatches, first at {bad[:10].tolist()}"


def test_primitives(driver):
    rng = np.random.default_rng(0)
    q31 = [fp.Q31_MIN, fp.Q31_MAX, 0, 1, -1, 1 << 30, -(1 << 30), fp.Q31_MIN + 1]
    a = _with_edges(_ints(rng, fp.Q31_MIN, fp.Q31_MAX, N), q31 * 8)
    b = _with_edges(_ints(rng, fp.Q31_MIN, fp.Q31_MAX, N), [e for e in q31 for _ in range(8)])
    _assert_equal(driver([f"mul {x} {y}" for x, y in zip(a, b)]), fp.sat_rounding_doubling_high_mul(a, b), "mul")
    e = _with_edges(_ints(rng, 0, 31, N), [0, 31] * 32)[: len(a)]
    _assert_equal(driver([f"divpot {x} {k}" for x, k in zip(a, e)]), fp.rounding_divide_by_pot(a, e), "divpot")
    mult = _ints(rng, 1 << 30, fp.Q31_MAX, len(a))
    shift = _ints(rng, -31, 0, len(a))
    x = _with_edges(_ints(rng, -255, 255, N), [-255, 255, 0])[: len(a)]
    want = np.array([fp.requantize(v, int(mm), int(ss)) for v, mm, ss in zip(x, mult, shift)])
    _assert_equal(driver([f"requant {v} {mm} {ss}" for v, mm, ss in zip(x, mult, shift)]), want, "requant")
    neg = _with_edges(_ints(rng, -(31 << 26), 0, N), [0, -1, -(31 << 26), -(1 << 24), -(1 << 26)])
    _assert_equal(driver([f"exp {v}" for v in neg]), fp.exp_on_negative_values(neg), "exp")
    pos = _with_edges(_ints(rng, 0, fp.Q31_MAX, N), [0, 1, fp.Q31_MAX, 1 << 30])
    _assert_equal(driver([f"oneover {v}" for v in pos]), fp.one_over_one_plus_x_for_x_in_0_1(pos), "oneover")


@pytest.mark.parametrize("bits", [8, 16])
def test_softmax(driver, bits):
    lines, want = _softmax_cases(bits)
    assert len(lines) >= N * 0.95
    _assert_equal(driver(lines), want, f"softmax s8->s{bits}")


@functools.cache
def _softmax_cases(bits):
    rng = np.random.default_rng(bits)
    lines, want = [], []
    for i in range(N):
        k = int(rng.integers(1, 21))
        beta = float(np.exp(rng.uniform(np.log(0.1), np.log(10))))
        scale = float(np.exp(rng.uniform(np.log(0.005), np.log(0.5))))
        try:
            mult, shift, dmin = fp.softmax_params(beta, scale)
        except ValueError:
            continue
        if i % 50 == 0:
            x = np.full((1, k), 127 if i % 100 else -128, np.int64)  # all equal at an int8 extreme
        elif i % 50 == 1:
            x = np.array([[127] + [-128] * (k - 1)])  # one hot at the extremes
        else:
            x = _ints(rng, -128, 127, k).reshape(1, k)
        lines.append(f"softmax{bits} 1 {k} {mult} {shift} {dmin} " + " ".join(map(str, x.ravel())))
        ref = fp.softmax_s8(x, mult, shift, dmin) if bits == 8 else fp.softmax_s8_s16(x, mult, shift, dmin)
        want.extend(ref.ravel().tolist())
    return lines, want


def test_class_affine(driver):
    _assert_equal(driver(_affine_cases()[0]), _affine_cases()[1], "class affine")


@functools.cache
def _affine_cases():
    rng = np.random.default_rng(3)
    lines, want = [], []
    for _ in range(N // 4):
        k = int(rng.integers(1, 13))
        a = rng.uniform(-2.5, 2.5, k)
        s_in = float(rng.uniform(0.01, 0.3))
        s_out = s_in * max(1.0, float(np.abs(a).max()))
        mults, shifts = zip(*(fp.quantize_multiplier(abs(float(v)) * s_in / s_out) for v in a))
        mults = [int(mm * np.sign(v)) for mm, v in zip(mults, a)]
        offs = _ints(rng, -300, 300, k).tolist()
        zi, zo = int(rng.integers(-128, 128)), int(rng.integers(-128, 128))
        x = _ints(rng, -128, 127, 4 * k).reshape(4, k)
        x[0] = -128
        x[1] = 127
        lines.append(f"affine 4 {k} {zi} {zo} " + " ".join(map(str, [*mults, *shifts, *offs, *x.ravel()])))
        want.extend(fp.class_scale_offset_s8(x, zi, mults, shifts, offs, zo).ravel().tolist())
    return lines, want


def test_input_pre_shim(driver):
    """≥ 10,000 readings per build: random per-feature scales and offsets as input_pre_shim_params derives them,
    int16 extremes in every vector, saturation at both int8 ends."""
    rng = np.random.default_rng(8)
    lines, want = [], []
    for i in range(N // 8):
        k = int(rng.integers(1, 17))
        a = 10.0 ** rng.uniform(-4, 2, k) * rng.choice([-1, 1], k, p=[0.1, 0.9])
        b = rng.uniform(-2, 2, k)
        p = fp.input_pre_shim_params(a, b, float(rng.uniform(0.002, 0.05)), 10.0 ** rng.uniform(-3, 0, k))
        p["shifts"] = [min(v, fp.PRE_SHIM_MAX_SHIFT) for v in p["shifts"]]
        p["offsets"] = [int(np.clip(v, -(1 << 24), 1 << 24)) for v in p["offsets"]]
        zp = int(rng.integers(-128, 128))
        raw = _ints(rng, -32768, 32767, 8 * k).reshape(8, k)
        raw[0], raw[1] = -32768, 32767
        lines.append(f"preshim 8 {k} {zp} " + " ".join(map(str, [*p["multipliers"], *p["shifts"], *p["offsets"],
                                                                 *raw.ravel()])))
        want.extend(fp.input_pre_shim_s8(raw, p["multipliers"], p["shifts"], p["offsets"], zp).ravel().tolist())
    assert len(want) >= N
    _assert_equal(driver(lines), want, "input pre-shim")


def test_input_pre_shim_refuses_parameters_out_of_range(driver):
    for m, sh, o, zp in ((1 << 30, 6, 0, 0), (1 << 30, 0, (1 << 24) + 1, 0), (1 << 30, 0, 0, 128)):
        with pytest.raises(fp.ParamError):
            fp.input_pre_shim_s8(np.array([[5]]), [m], [sh], [o], zp)
        assert driver([f"preshim 1 1 {zp} {m} {sh} {o} 5"]) == ["status 1"]  # TMLR_ERR_ARG, output untouched


def test_threshold_decide(driver):
    rng = np.random.default_rng(4)
    lines, want = [], []
    for _ in range(N):
        k = int(rng.integers(1, 13))
        th = _ints(rng, -128, 127, k)
        sc = _ints(rng, -128, 127, k)
        if rng.uniform() < 0.2:
            sc[:] = sc[0]  # ties
        lines.append(f"decide {k} " + " ".join(map(str, [*th, *sc])))
        want.append(int(fp.threshold_decide(sc.reshape(1, k), th)[0]))
    _assert_equal(driver(lines), want, "threshold decide")


def test_window_boundary(driver):
    _assert_equal(driver(_window_cases()[0]), _window_cases()[1], "window boundary")


@functools.cache
def _window_cases():
    rng = np.random.default_rng(5)
    lines, want, total = [], [], 0
    while total < 4 * N:
        n = int(rng.choice([2, 3, 8, 32, 1024]))
        length = int(rng.integers(n + 1, n + 400))
        kind = rng.integers(0, 3)
        if kind == 0:
            x = _ints(rng, -32768, 32767, length)  # full int16 range
        elif kind == 1:
            x = np.full(length, int(rng.integers(-32768, 32768)))  # constant: zero spread
            x[-1] += 1 if x[-1] < 32767 else -1
        else:
            x = np.clip(np.rint(np.cumsum(rng.normal(0, 50, length))), -32768, 32767).astype(np.int64)
        a2 = int(rng.choice([0, 1, 256, 2304, 4095]))
        f = int(rng.integers(0, 9))
        lines.append(f"window {n} {a2} {f} {length} " + " ".join(map(str, x)))
        want.extend(fpa.window_boundary_alarms(x, n, a2, f).tolist())
        total += length
    return lines, want


def test_bad_arguments_return_a_status(driver):
    out = driver(["softmax8 1 5000 1077952576 23 -248 " + " ".join(["0"] * 5000),
                  "window 1 256 8 3 1 2 3", "window 4 4096 8 1 7", "affine 1 1 0 0 1073741824 40 0 5"])
    assert out[0] == "status 2"  # row too long for the Q12.19 sum
    assert out[2] == "status 1"  # window of 1 sample
    assert out[4] == "status 1"  # alpha² beyond the int64-safe range
    assert out[5] == "status 1"  # shift out of range


@pytest.mark.parametrize("cpu", ["cortex-m4", "cortex-m0plus", "cortex-m3", "cortex-m7", "cortex-m33",
                                 "cortex-m33+nodsp", "cortex-m55"])
def test_cross_compiles_for_cortex_m_cores_without_warnings(tmp_path, cpu):
    """Every source builds warning-free for the cores the library's paths are written for: the Cortex-M4's DSP
    kernels (and M7, M33, M55, which have the extension), Thumb-2 without it (M3, M33+nodsp: the requantization
    loops in Thumb-2 instructions, the portable dot products) and the portable C alone (M0+, no Thumb-2). On the M4,
    without libgcc helpers either (the M0+ has no divide instruction: it needs them)."""
    cc = shutil.which("arm-none-eabi-gcc")
    if cc is None:
        pytest.skip("arm-none-eabi-gcc not found (apt-get install --no-install-recommends gcc-arm-none-eabi)")
    for src in sorted((ROOT / "c_patches" / "src").glob("*.c")):
        r = subprocess.run([cc, *CFLAGS, f"-mcpu={cpu}", "-mthumb", "-Os", "-c", str(src), "-o",
                            str(tmp_path / (src.stem + ".o"))], capture_output=True, text=True)
        assert r.returncode == 0 and not r.stderr, f"{src.name}, {cpu}: {r.stderr}"
        if cpu == "cortex-m4":
            undef = subprocess.run(["arm-none-eabi-nm", "-u", str(tmp_path / (src.stem + ".o"))],
                                   capture_output=True, text=True).stdout
            assert "__aeabi" not in undef, f"{src.name} needs a libgcc helper: {undef}"
