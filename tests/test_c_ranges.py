"""Every C shim over its whole documented parameter range (and past its edges): the C equals the Python twin, or
both refuse with the same status. Parameters are drawn by hypothesis, not taken from fitted plans.

The library and tests/c/driver.c are built with ``-fsanitize=address,undefined -fno-sanitize-recover=all`` at -O0
and at -O2 (GCC's UBSan can fold ``diff * (1 << shift)`` into a shift at -O2 and miss an overflow: -O0 keeps the
multiply), so any undefined behaviour aborts the driver and fails the test.
"""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from repair import fixedpoint as fp
from repair import fixedpoint_anomaly as fpa

from .conftest import ROOT

CFLAGS = ["-std=c99", "-Wall", "-Wextra", "-Wconversion", "-Werror", "-g", "-fsanitize=address,undefined",
          "-fno-sanitize-recover=all", "-I", str(ROOT / "c_patches" / "include")]
EXAMPLES = 150
I32 = st.integers(fp.Q31_MIN, fp.Q31_MAX)
I8 = st.integers(-128, 127)


class Driver:
    """tests/c/driver.c as a long-lived process: one command line in, one answer line out."""

    def __init__(self, exe):
        self.proc = subprocess.Popen([exe], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, bufsize=1)

    def ask(self, line: str, lines: int = 1) -> list[str]:
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        out = [self.proc.stdout.readline() for _ in range(lines)]
        if not all(out):
            raise AssertionError(f"the C driver died (sanitizer report?): {self.proc.stderr.read()[-3000:]}")
        return [o.strip() for o in out]

    def close(self):
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


@pytest.fixture(scope="module", params=["-O0", "-O2"])
def driver(request, tmp_path_factory):
    cc = shutil.which("gcc")
    if cc is None:
        pytest.skip("gcc not found: the C shims cannot be compiled here")
    exe = tmp_path_factory.mktemp("ranges") / f"driver{request.param}"
    sources = sorted(str(p) for p in (ROOT / "c_patches" / "src").glob("tmlr_*_s*.c"))
    r = subprocess.run([cc, *CFLAGS, request.param, *sources, str(ROOT / "tests" / "c" / "driver.c"), "-o", str(exe)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    d = Driver(str(exe))
    yield d
    d.close()


def _twin(fn):
    """The Python twin's answer as the driver prints it: the values, or 'status N' when it refuses."""
    try:
        return " ".join(str(int(v)) for v in np.asarray(fn()).ravel())
    except fp.ParamError as e:
        return f"status {e.status}"


SETTINGS = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                                  HealthCheck.too_slow])


@SETTINGS
@given(x=I32, mult=I32, shift=st.integers(-31, 30))
def test_requantize_over_int32(driver, x, mult, shift):
    assert driver.ask(f"requant {x} {mult} {shift}") == [str(int(fp.requantize(x, mult, shift)))]


@SETTINGS
@given(x=st.one_of(I32, st.sampled_from([fp.Q31_MIN, fp.Q31_MAX, -1, 0, 1])),
       mult=st.one_of(st.integers(1, fp.Q31_MAX), st.sampled_from([1, 1 << 30, 3 << 28, fp.Q31_MAX])),
       right=st.integers(1, 31))
def test_the_kernels_one_rounding_requantize_equals_tflms_two_over_its_whole_range(driver, x, mult, right):
    """tmlr_requantize_right (the kernels' M > 0, right-shift case, one multiply-add and one shift) against the
    two-rounding requantize, every int32 accumulator, every positive multiplier, every right shift."""
    assert driver.ask(f"requantr {x} {mult} {right}") == [str(int(fp.requantize(x, mult, -right)))]


@st.composite
def softmax_case(draw):
    cols = draw(st.one_of(st.integers(1, 16), st.sampled_from([4094, 4095, 4096]), st.integers(17, 300)))
    rows = draw(st.integers(1, 2))
    shift = draw(st.one_of(st.integers(0, 30), st.integers(-2, 33)))
    mult = draw(st.one_of(st.integers(1 << 30, fp.Q31_MAX), st.integers(-5, fp.Q31_MAX)))
    radius = -((31 << 26) >> max(shift, 0))
    diff_min = draw(st.one_of(st.just(radius), st.integers(fp.Q31_MIN, 2), st.integers(-300, 0)))
    kind = draw(st.sampled_from(["equal", "random", "extremes"]))
    rng = np.random.default_rng(draw(st.integers(0, 2 ** 32 - 1)))
    if kind == "equal":
        x = np.full((rows, cols), draw(I8))
    elif kind == "extremes":
        x = rng.choice([-128, 127], (rows, cols))
    else:
        x = rng.integers(-128, 128, (rows, cols))
    return x, mult, shift, diff_min


@SETTINGS
@given(case=softmax_case())
def test_softmax_over_its_range(driver, case):
    x, mult, shift, diff_min = case
    rows, cols = x.shape
    got = driver.ask(f"softmax8 {rows} {cols} {mult} {shift} {diff_min} " + " ".join(map(str, x.ravel())))
    assert got == [_twin(lambda: fp.softmax_s8(x, mult, shift, diff_min))]


@st.composite
def affine_case(draw):
    k = draw(st.integers(1, 12))
    rows = draw(st.integers(1, 3))
    zp = st.one_of(I8, st.integers(-300, 300))
    mults = draw(st.lists(st.one_of(I32, st.integers(1 << 30, fp.Q31_MAX)), min_size=k, max_size=k))
    shifts = draw(st.lists(st.one_of(st.integers(-31, 23), st.integers(-40, 40)), min_size=k, max_size=k))
    offsets = draw(st.lists(st.one_of(st.integers(-(1 << 24), 1 << 24), I32), min_size=k, max_size=k))
    x = np.asarray(draw(st.lists(I8, min_size=rows * k, max_size=rows * k))).reshape(rows, k)
    return x, draw(zp), mults, shifts, offsets, draw(zp)


@SETTINGS
@given(case=affine_case())
def test_class_affine_over_its_range(driver, case):
    x, in_zp, mults, shifts, offsets, out_zp = case
    rows, k = x.shape
    line = (f"affine {rows} {k} {in_zp} {out_zp} " + " ".join(map(str, [*mults, *shifts, *offsets, *x.ravel()])))
    assert driver.ask(line) == [_twin(lambda: fp.class_scale_offset_s8(x, in_zp, mults, shifts, offsets, out_zp))]


@SETTINGS
@given(k=st.integers(1, 256), data=st.data())
def test_threshold_decide_over_its_range(driver, k, data):
    th = data.draw(st.lists(I8, min_size=k, max_size=k))
    s = data.draw(st.lists(I8, min_size=k, max_size=k))
    got = driver.ask(f"decide {k} " + " ".join(map(str, [*th, *s])))
    assert got == [str(int(fp.threshold_decide(np.asarray([s]), th)[0]))]


@SETTINGS
@given(n=st.one_of(st.integers(2, 1024), st.integers(-1, 1100)), a2=st.integers(-3, 4200),
       f=st.integers(-1, 9), seed=st.integers(0, 2 ** 32 - 1), kind=st.sampled_from(["walk", "extremes"]))
def test_window_over_its_range(driver, n, a2, f, seed, kind):
    rng = np.random.default_rng(seed)
    length = int(rng.integers(1, 3 * max(n, 2)))
    x = (rng.choice([-32768, 32767], length) if kind == "extremes" else
         np.clip(np.cumsum(rng.normal(0, 3000, length)), -32768, 32767).astype(np.int64))
    got = driver.ask(f"window {n} {a2} {f} {length} " + " ".join(map(str, x)), lines=1)
    want = _twin(lambda: fpa.window_boundary_alarms(x, n, a2, f))
    if want.startswith("status"):
        assert got == [" ".join(["0"] * length)] and driver.ask("", 1)[0] == want  # zeros, then the status line
    else:
        assert got == [want]


@SETTINGS
@given(n=st.one_of(st.integers(1, 32768), st.sampled_from([-1, 0, 32769])), izp=st.integers(-130, 130),
       ozp=st.integers(-130, 130), mults=st.lists(st.one_of(st.integers(0, fpa.RECON_MAX_MULT),
                                                            st.sampled_from([-1, fpa.RECON_MAX_MULT + 1])),
                                                  min_size=3, max_size=3),
       shift=st.integers(-1, 63), seed=st.integers(0, 2 ** 32 - 1), kind=st.sampled_from(["random", "extremes"]))
def test_recon_score_over_its_range(driver, n, izp, ozp, mults, shift, seed, kind):
    """Extremes put every e = ±255 against f = ∓255: the largest sums (|C| = E = F = n·255²) the int64 must hold."""
    rng = np.random.default_rng(seed)
    rows = max(1, min(4, 65536 // max(n, 1)))
    size = rows * max(n, 0)
    if kind == "extremes":
        q_in = rng.choice([-128, 127], size)
        q_out = np.where(q_in == 127, -128, 127)
    else:
        q_in, q_out = rng.integers(-128, 128, size), rng.integers(-128, 128, size)
    p = {"size": n, "input_zero_point": izp, "output_zero_point": ozp, "mult_ee": mults[0], "mult_ef": mults[1],
         "mult_ff": mults[2], "shift": shift}
    got = driver.ask(f"recon {rows} {n} {izp} {ozp} {' '.join(map(str, mults))} {shift} "
                     + " ".join(map(str, [*q_in, *q_out])))
    assert got == [_twin(lambda: fpa.recon_score_s16(q_in, q_out, p))]


@pytest.mark.parametrize("shift", [0, 1, 31, 62])
def test_recon_score_at_the_int64_edge(driver, shift):
    """The largest sums the range allows (n = 32768, e = 255 against f = −255, every multiplier 2^30): no overflow,
    the same saturated or rounded score from C and twin."""
    n = fpa.RECON_MAX_SIZE
    q_in, q_out = np.full(n, 127), np.full(n, -128)
    p = {"size": n, "input_zero_point": -128, "output_zero_point": 127, "mult_ee": fpa.RECON_MAX_MULT,
         "mult_ef": fpa.RECON_MAX_MULT, "mult_ff": fpa.RECON_MAX_MULT, "shift": shift}
    want = _twin(lambda: fpa.recon_score_s16(q_in, q_out, p))
    assert driver.ask(f"recon 1 {n} -128 127 {(1 << 30)} {(1 << 30)} {(1 << 30)} {shift} "
                      + " ".join(map(str, [*q_in, *q_out]))) == [want]
    assert want == ("32767" if shift < 62 else "1")  # 3·2^30·n·255² / 2^62 = 1.49: rounds to 1


STREAMS = 10_000


def _recognizer_case(rng):
    """A random stream (bursts of one class over a noisy floor, steps of 0–400 ms) and random settings."""
    k = int(rng.integers(1, 13))
    length = int(rng.integers(1, 60))
    times = np.cumsum(rng.choice([0, 1, 20, 32, 100, 400], length, p=[.05, .05, .3, .3, .2, .1])).astype(np.int64)
    times += int(rng.integers(-1000, 1000))
    scores = rng.integers(-128, -40, (length, k))
    burst = rng.random(length) < 0.5
    scores[burst, rng.integers(0, k, int(burst.sum()))] = rng.integers(-20, 128, int(burst.sum()))
    window = int(rng.choice([1, 3, 100, 250, 500, 1000, 1500, 2000]))
    settings = (window, int(rng.integers(0, 256)), int(rng.choice([0, 100, 500, 1500, 3000])),
                int(rng.integers(1, 6)), int(rng.integers(-1, k)))
    return scores, times, settings


def test_recognizer_equals_its_twin_on_ten_thousand_streams(driver):
    """tmlr_recognizer_s8 against fixedpoint.recognize_commands (TFLM RecognizeCommands) on 10,000 random streams,
    each with its own settings (window 1–2000 ms, threshold 0–255, suppression, minimum count, silence class or
    none): label, score and new-command flag at every step, under ASan/UBSan, at -O0 and -O2."""
    rng = np.random.default_rng(11)
    for case in range(STREAMS):
        scores, times, (window, thr, supp, minc, sil) = _recognizer_case(rng)
        cap = int(max(np.searchsorted(times, times, side="right") - np.searchsorted(times, times - window)))
        cap = max(cap, minc)
        got = driver.ask(f"recog {scores.shape[1]} {cap} {window} {thr} {supp} {minc} {sil} {len(times)} "
                         + " ".join(map(str, [*times, *scores.ravel()])))[0].split()
        fired, label, score = fp.recognize_commands(scores, times, window, thr, supp, minc, silence_class=sil)
        want = np.stack([label, np.where(label >= 0, score, 0), fired.astype(int)], axis=1).ravel()
        assert got == [str(int(v)) for v in want], (case, window, thr, supp, minc, sil)


def test_recognizer_refuses_a_ring_smaller_than_its_window(driver):
    """Capacity 3 with four results inside a 40 ms window: the fourth step is refused (status 2); before it, no
    decision while the span is under 10 ms, then a command at each step (no suppression)."""
    got = driver.ask("recog 2 3 40 100 0 1 -1 4 0 10 20 30 " + " ".join(["127", "-128"] * 4))[0].split()
    assert got == ["-1", "0", "0", "0", "255", "1", "0", "255", "1", "s2"]
