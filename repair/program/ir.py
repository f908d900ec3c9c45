"""The integer program the reference device runs, and its Python twin (bit-exact with c_patches/src/tmlr_model_s8.c).

An int8 model lowered from ONNX QDQ (``lower.py``) is a list of layers over int8 tensors (batch dimension
dropped, ONNX layouts kept: NCHW, or NCL for 1-D). Arithmetic is TFLite Micro's / CMSIS-NN's:

    conv, fc:  acc = b_c + Σ (x − z_x) · w           (int32; weights symmetric, zero point 0; padding adds 0)
               y = clamp(z_y + requantize(acc, M_c, n_c), act_min, act_max),  M_c · 2^(n_c − 31) ≈ s_x s_w,c / s_y
    avgpool:   acc = Σ_window (x − z_x);  y = clamp(z_y + requantize(acc, M, n)), M·2^(n−31) ≈ s_x / (s_y · count)
               (input and output quantized differently, as onnxruntime's quantizer leaves a pooling layer)
    avgpool_tflm: TFLM's AVERAGE_POOL_2D, input and output sharing scale and zero point: acc = Σ_window x (raw,
               zero point not subtracted), y = clamp((acc ± count/2) / count) with C truncation (half away from 0)
    maxpool:   m = max_window x;  y = clamp(z_y + requantize(m − z_x, M, n)),  M·2^(n−31) ≈ s_x / s_y
    requant:   y = clamp(z_y + requantize(x − z_x, M, n))  (a change of scale, or a standalone ReLU/Clip)
    add:       TFLM's int8 Add: both inputs (x − z)·2^20 rescaled by s_i / (2 max(s_1, s_2)), summed, rescaled by
               2 max(s_1, s_2) / (2^20 s_y)
    softmax:   TFLM's int8 Softmax (output scale 1/256, zero point −128)
    transpose: a permutation;  reshape: the same bytes

``requantize`` is ``repair.fixedpoint.requantize`` (CMSIS-NN arm_nn_requantize: doubling high multiply with
round-half-up, then rounding right shift, ties away from zero). ReLU/Clip are folded into act_min/act_max.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field

import numpy as np

from .. import fixedpoint as fp
from . import host
from .graph import build_segment
from .requantize import finish, requantize_fast
from .sums import LayerSums, conv_sums, fc_sums

OPS = ("conv", "fc", "avgpool", "maxpool", "requant", "add", "softmax", "transpose", "reshape",
       "avgpool_tflm")  # tmlr_layer_op 1..10
ADD_LEFT_SHIFT = 20


@dataclass(frozen=True)
class QTensor:
    name: str
    shape: tuple[int, ...]  # without the batch dimension
    scale: float
    zero_point: int

    @property
    def size(self) -> int:
        return int(math.prod(self.shape))


@dataclass
class Layer:
    op: str
    inputs: list[str]
    output: str
    node: str  # the ONNX node it came from (for messages)
    p: dict = field(default_factory=dict)  # integer parameters (see the module docstring)


@dataclass
class IntProgram:
    tensors: dict[str, QTensor]
    layers: list[Layer]
    input: str
    output: str
    #: names the source model gives its int8 tensors (ONNX QuantizeLinear outputs, the graph output) → tensors here
    aliases: dict[str, str] = field(default_factory=dict)
    #: a per-feature affine (a, b) the host applies to a float input before quantizing it (x·a + b, float32), the
    #: model's input pre-shim; None: none
    input_affine: tuple | None = None

    def run_tensors(self, x: np.ndarray, names: list[str], batch: int | None = None,
                    codes: bool = False) -> dict[str, np.ndarray]:
        """int8 values [N, *shape] of the tensors ``names`` (program names or the source model's aliases) on the
        int8 input ``x``: what the device holds in each, for per-layer drift and on-device diagnosis; with
        ``codes``, the same integers as the float32 arrays the program computes in, without the conversion (drift's
        statistics read them so: digits, 5,000 samples, the conversions were 0.03 of 0.15 s).

        Runs ``batch`` samples at a time (default ``auto_batch``): the intermediate tensors then stay in cache."""
        x = np.asarray(x)
        batch = batch or self.auto_batch()
        keys = {n: self.aliases.get(n, n) for n in names}
        missing = [n for n, k in keys.items() if k not in self.tensors]
        if missing:
            raise KeyError(f"not tensors of the program: {missing[:3]}")
        parts: dict[str, list] = {n: [] for n in names}
        steps = self.plan(set(keys.values()))
        for i in range(0, len(x), batch):
            values = self._forward(x[i:i + batch], steps)
            for name, key in keys.items():
                parts[name].append(values[key] if codes else values[key].astype(np.int8))
        return {name: v[0] if len(v) == 1 else np.concatenate(v) for name, v in parts.items()}

    def plan(self, names: set) -> list:
        """How one batch runs with the present parameters: layer by layer (``_KERNELS``: sums by onnxruntime, the
        requantization by the host build's C) where the host build exists; else ``graph.Segment`` s (runs of layers
        onnxruntime computes exactly) and the layers they cannot take, in numpy. ``scripts/bench_program.py``
        (1000 samples, time over onnxruntime's unoptimised int8 pass, the bundled and MLPerf Tiny models, one run):
        C 0.47-1.70×, the graphs 0.95-6.1×. Layers after the last one that produces a tensor of ``names`` are
        left out (an early layer's tensor costs only the layers before it)."""
        stop = 1 + max((i for i, layer in enumerate(self.layers) if layer.output in names), default=-1)
        if host.library() is not None:  # one pass of C per layer: faster than any graph
            return list(self.layers[:stop])
        steps, i = [], 0
        while i < stop:
            segment, end = build_segment(self, i, names, stop)
            if segment is None:
                steps.append(self.layers[i])
                i += 1
            else:
                steps.append(segment)
                i = end
        return steps

    def auto_batch(self) -> int:
        """Samples per batch: 2^20 / the largest per-sample tensor, within [32, 1024] — about 4 MB of float32 per
        tensor, the float64 temporaries of the graphs (``graph``) twice that. Measured with the host build (1000
        samples, batch sizes interleaved in one run, twice): ic_resnet8 (largest 16,384) 348-358 ms at 64-128
        against 385-416 at 32 and 544-716 at 512-1000; sww (3,584) 37 ms at 256 against 43-44 at 128-146;
        motions (800) fastest whole (5.4-7.3 ms against 7.0-9.4 at 655); digits (6,272) within noise from 64 to
        1000; kws_dscnn (8,000) 139-157 ms from 64 to 256."""
        work = max(self.tensors[layer.output].size for layer in self.layers) if self.layers else 1
        return int(min(1024, max(32, (1 << 20) // work)))

    def run(self, x: np.ndarray, batch: int | None = None) -> np.ndarray:
        """int8 input [N, *input shape] → int8 output [N, *output shape], exactly as the C kernels compute."""
        return self.run_tensors(x, [self.output], batch)[self.output]

    def _forward(self, xb: np.ndarray, steps: list) -> dict[str, np.ndarray]:
        """The values of the tensors the steps hand on (and the input) on one batch, as float32 arrays of exact
        integers (int8 values fit; float32 is what the kernels compute in, so no conversions between layers)."""
        n = len(xb)
        x = xb.reshape(n, *self.tensors[self.input].shape).astype(np.float32, copy=False)  # int8, or float32 codes
        return self.advance({self.input: x}, steps)

    def advance(self, values: dict[str, np.ndarray], steps: list) -> dict[str, np.ndarray]:
        """``values`` (tensors of one batch, as ``_forward`` holds them) with the outputs of ``steps`` added: a run
        carried on from where an earlier one stopped (bias correction's layer after layer)."""
        n = len(next(iter(values.values())))
        for step in steps:
            if isinstance(step, Layer):
                out = _KERNELS[step.op](step, [values[j] for j in step.inputs], self.tensors)
                values[step.output] = out.reshape(n, *self.tensors[step.output].shape)
            else:
                values.update(step.run(values))
        return values

    def macs(self) -> int:
        """Multiply-accumulates of one inference (conv and fc)."""
        total = 0
        for layer in self.layers:
            if layer.op in ("conv", "fc"):
                total += int(layer.p["weights"][0].size) * self.tensors[layer.output].size  # taps x outputs
        return total


def _accumulator_bound(p) -> float:
    """max over output channels of |b_c| + 255·Σ|w_c|: no accumulator of the layer exceeds it (|x − z_x| ≤ 255)."""
    w = np.abs(np.asarray(p["weights"], np.int64)).reshape(len(p["weights"]), -1).sum(axis=1)
    return float(np.max(np.abs(np.asarray(p["bias"], np.int64)) + 255 * w))


def exact_float_dtype(taps: int) -> type:
    """The float type whose BLAS computes an integer dot product of ``taps`` terms exactly.

    |x − z_x| ≤ 255 and |w| ≤ 127 (int8, symmetric), so |Σ| ≤ taps · 32385: float32 holds every integer below 2^24
    exactly (taps ≤ 518), float64 below 2^53 (taps < 2.7·10^11). Every partial sum is such an integer, so no
    rounding happens at any step, whatever order the BLAS adds in.
    """
    return np.float32 if taps * 255 * 127 < (1 << 24) else np.float64


def _requantized(s: LayerSums | None, p) -> np.ndarray | None:
    """A conv or fc layer's output from its exact sums (``sums``): by the host build's C (``host``), else from
    float32 accumulators by ``requantize_fast``; None where neither applies (the caller takes the exact float64
    path). Constant channels get their value."""
    if s is None:
        return None
    out = host.requantize(s.sums, s.folded, s.bound, p)
    if out is None:
        acc = s.accumulators()
        out = None if acc is None else requantize_fast(acc, p, s.bound, ignore=s.constant)
    if out is not None and s.constant.any():
        out[:, s.constant] = s.values[s.constant].reshape(-1, *([1] * (out.ndim - 2)))
    return out


def _conv(layer, args, tensors):
    """Convolution over (N, C, H, W): its integer sums by onnxruntime's float32 Conv and the requantization in
    float32 where both are provably exact (``sums``, ``requantize``); else in exact float arithmetic here.

    Each tap is read as one flat run of the padded image: with equal strides s, output (i, j) of tap (ky, kx)
    reads flat position o + s·(i·W_p + j), o = ky·d_h·W_p + kx·d_w, so a tap is the slice [o :: s] of length
    H_o·W_p (columns j ≥ W_o are computed and dropped; s extra zero rows keep every slice inside). Long
    contiguous runs instead of one numpy inner loop per output row: 1.6× faster on digits' depthwise layers.
    """
    p = layer.p
    out = _requantized(conv_sums(p, args[0]), p)
    if out is not None:
        return out
    x = args[0] - p["in_zp"]
    n = len(x)
    if x.ndim == 3:  # 1-D: (N, C, L) as (N, C, 1, L)
        x = x[:, :, None, :]
    w = p["weights"]  # (Cout, Cin/g, kh, kw)
    cout, cg, kh, kw = w.shape
    g = p["group"]
    dt = exact_float_dtype(cg * kh * kw)
    (sh, sw), (dh, dw), (pt, pl, pb, pr) = p["strides"], p["dilations"], p["pads"]
    ho = (x.shape[2] + pt + pb - dh * (kh - 1) - 1) // sh + 1
    wo = (x.shape[3] + pl + pr - dw * (kw - 1) - 1) // sw + 1
    wf = w.astype(dt)
    if sh == sw:
        xp = np.pad(x.astype(dt), ((0, 0), (0, 0), (pt, pb + sh), (pl, pr)))
        wp = xp.shape[3]
        flat, cols_w = xp.reshape(n, x.shape[1], -1), wp
        taps = [flat[:, :, o: o + sh * (ho * wp - 1) + 1: sh]
                for o in (ky * dh * wp + kx * dw for ky in range(kh) for kx in range(kw))]
    else:
        xp = np.pad(x.astype(dt), ((0, 0), (0, 0), (pt, pb), (pl, pr)))
        cols_w = wo
        taps = [xp[:, :, ky * dh: ky * dh + sh * (ho - 1) + 1: sh, kx * dw: kx * dw + sw * (wo - 1) + 1: sw].reshape(
            n, x.shape[1], -1) for ky in range(kh) for kx in range(kw)]
    if cg == 1 and cout == g:  # depthwise: one multiply-add per tap
        acc = np.zeros((n, cout, ho * cols_w), dt)
        tmp = np.empty_like(acc)
        for t, patch in enumerate(taps):
            np.multiply(patch, wf[None, :, 0, t // kw, t % kw, None], out=tmp)
            acc += tmp
    elif g == 1:  # im2col and one GEMM over every sample: (Cout, Cin·kh·kw) x (Cin·kh·kw, N·H·W), channel-major
        cols = np.empty((cg, kh * kw, n, ho * cols_w), dt)
        for t, patch in enumerate(taps):
            cols[:, t] = patch.transpose(1, 0, 2)
        acc = (wf.reshape(cout, -1) @ cols.reshape(cg * kh * kw, -1)).reshape(cout, n, -1).transpose(1, 0, 2)
    else:
        acc = np.zeros((n, cout, ho * cols_w), dt)
        for t, patch in enumerate(taps):
            acc += np.einsum("ngcl,goc->ngol", patch.reshape(n, g, cg, -1),
                             wf[:, :, t // kw, t % kw].reshape(g, cout // g, cg), optimize=True).reshape(n, cout, -1)
    acc = acc.reshape(n, cout, ho, cols_w)[:, :, :, :wo].astype(np.float64)
    acc += np.asarray(p["bias"], np.float64)[None, :, None, None]  # exact: all < 2^53
    return finish(acc, p, axis=1, bound=_accumulator_bound(p))


def _fc(layer, args, tensors):
    p = layer.p
    x = args[0].reshape(len(args[0]), -1)
    out = _requantized(fc_sums(p, x), p)
    if out is not None:
        return out
    x = x - p["in_zp"]
    dt = exact_float_dtype(x.shape[1])
    acc = (x.astype(dt) @ p["weights"].astype(dt).T).astype(np.float64)
    acc += np.asarray(p["bias"], np.float64)
    return finish(acc, p, axis=1, bound=_accumulator_bound(p))


def _windows(x, p, reduce) -> np.ndarray:
    """``reduce`` (np.add or np.maximum) over the pooling windows of (N, C, H, W) (or (N, C, L)); no padding. One
    pass per window tap over strided views (a window covering the whole input: one reduction)."""
    if x.ndim == 3:
        x = x[:, :, None, :]
    (kh, kw), (sh, sw) = p["kernel"], p["strides"]
    ho, wo = (x.shape[2] - kh) // sh + 1, (x.shape[3] - kw) // sw + 1
    if (ho, wo) == (1, 1):
        return reduce.reduce(x[:, :, :kh, :kw].reshape(len(x), x.shape[1], -1), axis=2)
    out = None
    for ky in range(kh):
        for kx in range(kw):
            tap = x[:, :, ky: ky + sh * (ho - 1) + 1: sh, kx: kx + sw * (wo - 1) + 1: sw]
            out = tap.copy() if out is None else reduce(out, tap, out=out)
    return out


def _avgpool(layer, args, tensors):
    """Σ_window (x − z_x) as Σ_window x − count·z_x (exact integers in float32: |Σ| ≤ 255·count), requantized (by
    the host build where there is one: no bias, that bound)."""
    p = layer.p
    count = p["kernel"][0] * p["kernel"][1]
    acc = _windows(args[0], p, np.add)
    acc -= count * p["in_zp"]
    out = host.requantize(acc, *_pool_constants(acc.shape[1], count), p)
    return out if out is not None else finish(acc, p)


@functools.lru_cache(maxsize=256)
def _pool_constants(channels: int, count: int) -> tuple[np.ndarray, np.ndarray]:
    """An average pooling's zero bias and its bound 255·count per channel, the same objects call after call (the
    host build keeps its prepared arguments by them)."""
    return np.zeros(channels, np.int64), np.full(channels, 255.0 * count)


def _avgpool_tflm(layer, args, tensors):
    """TFLM reference_integer_ops::AveragePool / CMSIS-NN arm_avgpool_s8 (see the module docstring)."""
    p = layer.p
    n = p["kernel"][0] * p["kernel"][1]
    acc = _windows(args[0], p, np.add).astype(np.int64)
    q = np.where(acc > 0, (acc + n // 2) // n, -((n // 2 - acc) // n))
    return np.clip(q, p["act_min"], p["act_max"])


_INT8 = np.arange(-128, 128, dtype=np.float32)
_TABLE_KEYS = ("in_zp", "in1_zp", "mult1", "shift1", "mult2", "shift2", "mult", "shift", "out_zp", "act_min",
               "act_max")


def _table_key(p: dict) -> tuple:
    return tuple(tuple(np.asarray(p[k]).ravel().tolist()) if k in p else None for k in _TABLE_KEYS)


@functools.lru_cache(maxsize=512)
def _table(op: str, key: tuple) -> np.ndarray:
    """Every output of an elementwise layer (requant, maxpool's requantization, add) for every int8 input (add:
    every pair, first input major), computed once by the exact paths; cached per layer parameters."""
    p = {k: (v[0] if v is not None and len(v) == 1 else v) for k, v in zip(_TABLE_KEYS, key)}
    if op != "add":
        return finish((_INT8 - p["in_zp"])[None, :], p).reshape(-1)
    a = _add_input(_INT8, p["in_zp"], p["mult1"], p["shift1"])
    b = _add_input(_INT8, p["in1_zp"], p["mult2"], p["shift2"])
    return finish(np.add.outer(a, b), p).reshape(-1)


def _maxpool(layer, args, tensors):
    m = _windows(args[0], layer.p, np.maximum)
    return _table("requant", _table_key(layer.p)).take((m + 128).astype(np.intp))


def _requant(layer, args, tensors):
    return _table("requant", _table_key(layer.p)).take((args[0] + 128).astype(np.intp))


def _add(layer, args, tensors):
    """TFLM's int8 Add read from the table of its 65,536 outputs at (x₁ + 128)·256 + x₂ + 128."""
    i = args[0] * 256
    i += args[1]
    i += 128 * 257
    return _table("add", _table_key(layer.p)).take(i.astype(np.intp))


def _add_input(x, zero_point: int, multiplier: int, shift: int) -> np.ndarray:
    """requantize((x − z)·2^20, M, shift): one input of TFLM's int8 Add, in its common sum's units.

    For shift = −r ≤ 0 in float64, exactly: with v = (x − z)·M (|v| < 2^40), SRDHM(v·2^20) =
    ⌊(v·2^20 + 2^30) / 2^31⌋ = ⌊(v + 2^10) / 2^11⌋ = u (both signs: gemmlowp's nudge makes it round half up),
    then the rounding divide by 2^r, ties away from zero, = trunc(u/2^r + ½·sign(u)) (r ≥ 1; u itself for r = 0).
    Every value is an integer or a half below 2^53. A left shift (never from TFLM's Add, whose input multipliers
    are below one) takes the int64 path.
    """
    if shift > 0:
        return fp.requantize((np.asarray(x, np.int64) - zero_point) * (1 << ADD_LEFT_SHIFT), multiplier, shift)
    v = (np.asarray(x, np.float64) - zero_point) * float(multiplier)
    v += 1 << 10
    v *= 2.0 ** -11
    np.floor(v, out=v)
    if shift < 0:
        v *= 2.0 ** shift
        v += np.copysign(0.5, v)
        np.trunc(v, out=v)
    return v


def _softmax(layer, args, tensors):
    p = layer.p
    x = np.asarray(args[0], np.int64)
    return fp.softmax_s8(x.reshape(-1, x.shape[-1]), p["mult"], p["shift"], p["diff_min"]).astype(np.float32).reshape(
        x.shape)


def _transpose(layer, args, tensors):
    perm = layer.p["perm"]
    return np.transpose(args[0], [0] + [1 + i for i in perm])


def _reshape(layer, args, tensors):
    return args[0]


_KERNELS = {"conv": _conv, "fc": _fc, "avgpool": _avgpool, "maxpool": _maxpool, "requant": _requant, "add": _add,
            "softmax": _softmax, "transpose": _transpose, "reshape": _reshape, "avgpool_tflm": _avgpool_tflm}
