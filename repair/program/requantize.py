"""Requantizing whole tensors of integer accumulators, as the device does, fast: the batched integer program's
``requantize`` (CMSIS-NN arm_nn_requantize / TFLM MultiplyByQuantizedMultiplier, ``repair.fixedpoint``).

Three ways to the same integers:

- ``requantize_array``: int64, every case (saturating left shift, SRDHM's one saturation);
- ``requantize_float``: float64 where every step is exact (accumulators below 2^22);
- ``requantize_fast``: float32 (or float64) arithmetic that may err by one only next to a rounding boundary, the
  elements next to one recomputed exactly — for a positive multiplier and no saturation (TFLM's usual case);
  the accumulators exact in that float type (``repair.program.sums`` adds the bias in the convolution).

``requantize_fast`` rests on the one-rounding form of the requantization (``tmlr_requantize_right`` in
c_patches/include/tmlr_fixedpoint.h): with x' = a·2^l (l = max(shift, 0), no saturation: |a|·2^l < 2^31) and
r = max(−shift, 0), requantize(a) = ⌊a·S + ½ + sign(a)·δ⌋, S = M·2^(l−31−r), δ = 2^(−1−r) (δ = 0 for r = 0;
sign(0) = +). So y = clamp(⌊t⌋), t = a·S + ½ + sign(a)·δ + z_y. Computed in a float type of unit roundoff u
from an exact accumulator a — roundings of S, of the product and of at most two additions — t is off by less than

    E = min(A·S, 512)·8u + 512u,   A ≥ |a| (per output channel; |z_y| ≤ 128)

so ⌊t⌋ is exact wherever t's fraction lies in [2E, 1 − 2E] (t − ⌊t⌋ is exact by Sterbenz's lemma, but in (−1, 0)
where it is within u). The cap at 512: an element with |a·S| > 512 has |t| > 383 both exactly and as computed
(its relative error is below 16u), so it is clamped to the range's end either way. The other elements are
recomputed by ``requantize_array``: about 4E + 2δ of them (0.7–1.7% on the bundled and MLPerf Tiny models). About
ten passes over the layer's output in float32, where the exact float64 requantization took a dozen in float64
and the int64 one more (numpy has no vector int64 multiply on x86).
"""

from __future__ import annotations

import threading

import numpy as np

from .. import fixedpoint as fp

#: above this error bound (accumulators that dwarf the output step) the exact paths are used instead
MAX_ERROR = 1.0 / 64


def requantize_array(x, multiplier, shift) -> np.ndarray:
    """``requantize`` for whole tensors, per-tensor or per-channel (``multiplier``/``shift`` broadcast against x):
    the same integers in about a third of the numpy passes, for the batched integer program.

    With p = x'·M (x' = x·2^max(shift, 0) saturated; |p| < 2^62) and r = max(−shift, 0):
    SRDHM = sign(p)·⌊(|p| + 2^30 − [p < 0]) / 2^31⌋ (ties toward +∞), then the rounding divide by 2^r, ties away
    from zero, = sign·⌊(m + ⌊2^r / 2⌋) / 2^r⌋ on the magnitude m. M = x' = −2^31 (SRDHM's one saturation) is
    handled as ``sat_rounding_doubling_high_mul`` does.
    """
    s = np.asarray(shift, np.int64)
    m = np.asarray(multiplier, np.int64)
    a = fp.saturating_left_shift(x, np.maximum(s, 0)) if np.any(s > 0) else np.asarray(x, np.int64)
    prod = a * m
    neg = prod < 0
    mag = np.abs(prod)
    mag += 1 << 30
    mag -= neg
    mag >>= 31
    right = np.maximum(-s, 0)
    mag += (np.int64(1) << right) >> 1
    mag >>= right
    out = np.where(neg, -mag, mag)
    if np.any(m == fp.Q31_MIN):
        out = np.where((a == fp.Q31_MIN) & (m == fp.Q31_MIN), fp.rounding_divide_by_pot(fp.Q31_MAX, right), out)
    return out


FLOAT_EXACT_INPUT = 1 << 22  # |x'| < 2^22 and |M| ≤ 2^31 keep |x'·M| < 2^53: every step below is exact in float64


def requantize_float(x: np.ndarray, multiplier, shift, bound: float | None = None) -> np.ndarray | None:
    """``requantize_array`` computed in float64, or None when the inputs are too large for it to be exact.

    With integer-valued x' = x·2^max(shift, 0), |x'| < 2^22, and |M| ≤ 2^31: p = x'·M is an integer below 2^53,
    so float64 holds it exactly; |p| + 2^30 too; multiplying by 2^−31 and 2^−r only moves the exponent; floor
    of an exactly represented value is exact. Hence the same integers as the int64 path, with native float
    multiplies (numpy has no vector 64-bit integer multiply on x86). When |p| + K < 2^52 as well, K = 2^30 +
    ⌊2^r/2⌋·2^31 (typical accumulators), the two roundings fold into one: p ≥ 0 gives ⌊(p + K) / D⌋ and p < 0
    gives −⌊(−p + K − 1) / D⌋, D = 2^(31+r), i.e. trunc(t + sign(t)·(K − ½)/D + ½/D) with t = x'·(M/D): every
    step exact (the ½ needs the one bit below 2^53), and no per-element branch. ``bound``: a known bound on |x|
    (from the layer's weights), which spares the two passes that find it. Per-channel ``multiplier`` and
    ``shift`` broadcast against ``x``; channels on the leading axis keep numpy's inner loops long.
    """
    s = np.asarray(shift, np.int64)
    xf = np.asarray(x, np.float64)
    if np.any(s > 0):
        xf = xf * np.exp2(np.maximum(s, 0))
    if bound is not None:
        amax = bound * float(np.exp2(np.max(np.maximum(s, 0))))
    else:
        amax = max(-xf.min(), xf.max()) if xf.size else 0.0
    if amax >= FLOAT_EXACT_INPUT:
        return None
    m = np.asarray(multiplier, np.float64)
    right = np.maximum(-s, 0)
    half = np.floor(np.exp2(right - 1.0))  # ⌊2^r / 2⌋: the rounding divide's nudge
    k = (1 << 30) + half * 2.0 ** 31
    if amax * float(np.abs(m).max()) + float(np.max(k)) < 2.0 ** 52:
        unit = np.exp2(-31.0 - right)  # 1/D
        t = xf * (m * unit)  # p/D, exactly: a power-of-two scaling of the exact product
        t += np.copysign((k - 0.5) * unit, t)
        t += 0.5 * unit
        np.trunc(t, out=t)
        return t
    p = xf * m  # a new array: the passes below work in place
    neg = np.signbit(p)
    np.abs(p, out=p)
    p += 1 << 30
    p -= neg
    p *= 2.0 ** -31
    np.floor(p, out=p)
    p += half
    p *= np.exp2(-right.astype(np.float64))
    np.floor(p, out=p)
    np.negative(p, out=p, where=neg)
    return p


_workspace = threading.local()


def _scratch(shape: tuple, dtype) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """This thread's temporaries for ``requantize_fast``, views of buffers kept from call to call and grown to the
    largest layer seen: fresh arrays of a few MB each are returned to the OS when freed and page-faulted back in by
    the next (measured on digits: 25% of the program's time)."""
    n = int(np.prod(shape, dtype=np.int64))
    key = np.dtype(dtype).str
    buffers = getattr(_workspace, "buffers", None)
    if buffers is None:
        buffers = _workspace.buffers = {}
    if key not in buffers or buffers[key][0].size < n:
        buffers[key] = (np.empty(n, dtype), np.empty(n, dtype), np.empty(n, bool), np.empty(n, bool))
    return tuple(b[:n].reshape(shape) for b in buffers[key])


def _per_channel(values, channels: int) -> np.ndarray:
    v = np.asarray(values).reshape(-1)
    return np.broadcast_to(v, (channels,)) if v.size == 1 else v


def requantize_fast(acc: np.ndarray, p: dict, bound, ignore: np.ndarray | None = None) -> np.ndarray | None:
    """clamp(z_y + requantize(acc)) with the requantization, zero point and range of layer ``p``, in acc's float
    type (float32 or float64; ``acc`` holds exact integers, channels on axis 1 where ``p`` is per channel);
    ``bound`` ≥ |acc| (per channel, or one number). None when the requantization is not of the fast kind (a
    multiplier ≤ 0, a left shift that could saturate) or the error bound is above ``MAX_ERROR``: the caller takes
    an exact path. ``ignore``: channels whose outputs the caller replaces (left out of those checks).

    The sign term: where 2δ is small (r ≥ 5), t takes +δ for every element and the elements whose fraction lies
    below 2δ + 2E are recomputed too (for a < 0 the result is ⌊t − 2δ⌋, which differs from ⌊t⌋ only there) —
    two passes fewer than applying sign(a)·δ."""
    mult = np.asarray(p["mult"], np.int64).reshape(-1)
    per_channel = mult.size > 1
    c = acc.shape[1] if per_channel else 1
    mult, shift = _per_channel(mult, c), _per_channel(np.asarray(p["shift"], np.int64), c)
    bound = _per_channel(np.asarray(bound, np.float64), c)
    left, right = np.maximum(shift, 0), np.maximum(-shift, 0)
    live = np.ones(c, bool) if ignore is None else ~np.asarray(ignore, bool)
    if np.any((mult <= 0)[live]) or np.any(right > 62) or np.any((bound * np.exp2(left) >= 2.0 ** 31)[live]):
        return None
    scale = mult * np.exp2(left - 31.0 - right)
    u = float(np.finfo(acc.dtype).eps) / 2
    error = np.where(live, np.minimum(bound * scale, 512.0) * 8 * u + 512 * u, 0.0)
    if float(error.max()) > MAX_ERROR:
        return None
    dt = acc.dtype.type
    shape = (1, c) + (1,) * (acc.ndim - 2) if per_channel else ()
    half_step = np.where(right >= 1, np.exp2(-1.0 - right), 0.0)  # δ
    t, tmp, near, far = _scratch(acc.shape, acc.dtype)
    np.multiply(acc, scale.astype(dt).reshape(shape), out=t)
    low, high = float(2 * error.max()), 1 - float(2 * error.max())
    if 2 * half_step.max() <= 1 / 32:
        t += (0.5 + p["out_zp"] + half_step).astype(dt).reshape(shape)
        low += float(2 * half_step.max())
    else:
        t += np.copysign(half_step.astype(dt).reshape(shape), t, out=tmp)  # sign(a)·δ: t has a's sign (S > 0)
        t += dt(0.5 + p["out_zp"])
    y = np.floor(t)
    t -= y
    np.less(t, dt(low), out=near)
    np.greater(t, dt(high), out=far)
    near |= far
    idx = np.flatnonzero(near)
    if idx.size:
        ch = (idx // int(np.prod(acc.shape[2:], dtype=np.int64))) % c
        y.reshape(-1)[idx] = requantize_array(acc.reshape(-1)[idx].astype(np.int64), mult[ch], shift[ch]) + p["out_zp"]
    np.clip(y, p["act_min"], p["act_max"], out=y)
    return y


def finish(acc, p: dict, axis: int = 1, bound: float | None = None) -> np.ndarray:
    """z_y + requantize(acc), clamped to [act_min, act_max], as float32 (exact integers). ``acc`` holds integers
    (a float array of exact integers, or int64), channels on ``axis``; ``bound``: a known bound on |acc|.
    ``requantize_fast`` where it applies, else float64 where exact (``requantize_float``), else int64; the
    exact paths apply per-channel parameters with the channel axis moved first."""
    acc = np.asarray(acc)
    if axis == 1 and acc.dtype.kind == "f" and acc.ndim >= 2:
        if bound is None:  # two reductions, no |acc| array
            bound = max(-float(acc.min(initial=0.0)), float(acc.max(initial=0.0)))
        y = requantize_fast(acc, p, bound)
        if y is not None:
            return y.astype(np.float32, copy=False)
    mult, shift = np.asarray(p["mult"], np.int64), np.asarray(p["shift"], np.int64)
    per_channel = mult.size > 1
    a = np.moveaxis(acc, axis, 0) if per_channel else acc
    if per_channel:
        shape = (-1,) + (1,) * (a.ndim - 1)
        mult, shift = mult.reshape(shape), shift.reshape(shape)
    else:
        mult, shift = mult.reshape(()), shift.reshape(())
    y = requantize_float(a, mult, shift, bound)
    if y is None:
        y = requantize_array(np.asarray(a).astype(np.int64), mult, shift).astype(np.float64)
    y += p["out_zp"]
    np.clip(y, p["act_min"], p["act_max"], out=y)
    if not per_channel:
        return y.astype(np.float32)
    out = np.empty(acc.shape, np.float32)
    np.moveaxis(out, axis, 0)[...] = y
    return out


def folded_bias(p: dict, offset: int) -> tuple[np.ndarray, np.ndarray]:
    """(b − (z_x − o)·Σw, A) of a conv or fc layer ``p`` whose sums take o = ``offset`` off the inputs: the
    constant that makes Σ (x − o)·w the accumulator, and A = (128 + |o|)·Σ|w| + |that constant| ≥ every partial
    sum of it (per output channel)."""
    w64 = np.asarray(p["weights"]).reshape(len(p["weights"]), -1).astype(np.int64)
    folded = np.asarray(p["bias"], np.int64) - (p["in_zp"] - offset) * w64.sum(axis=1)
    return folded, ((128 + abs(offset)) * np.abs(w64).sum(axis=1) + np.abs(folded)).astype(np.float64)


def constant_channels(p: dict, folded: np.ndarray, bound: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(which output channels of conv/fc layer ``p`` give one value whatever their input, that value): the
    accumulator of channel c lies in [B_c − s_c, B_c + s_c], s_c = A_c − |B_c| (``folded_bias``), and the
    requantization is monotone, so the channel is constant when both ends give the same output. Dead channels —
    a bias of 10^9 driving every output to the range's end, as some TFLite models carry — are the case: their
    accumulators need not fit float32."""
    spread = (bound - np.abs(folded)).astype(np.int64)
    mult = _per_channel(np.asarray(p["mult"], np.int64), len(folded))
    shift = _per_channel(np.asarray(p["shift"], np.int64), len(folded))
    ends = [np.clip(requantize_array(folded + sign * spread, mult, shift) + p["out_zp"], p["act_min"], p["act_max"])
            for sign in (-1, 1)]
    return ends[0] == ends[1], ends[0].astype(np.float32)
