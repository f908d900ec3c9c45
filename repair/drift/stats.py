"""Streaming error statistics of one paired tensor: memory O(channels), not O(samples).

For float values f and dequantized int8 values q = scale·(k − zp) over every element
seen so far, keeps Σf², Σq², Σfq, Σ(f−q)², Σ|f−q|, max|f−q|, Σ(f−q) per channel and
the count of integers at a clipping limit, from which:

* SQNR = 10·log10(Σf² / Σ(f−q)²) dB;
* cosine = Σfq / sqrt(Σf² · Σq²);
* per-channel mean error e_c = mean(f − q) over all elements of channel c — the shift
  bias correction adds back (Nagel et al. 2019, "Data-Free Quantization", §4.2);
* saturation = share of integers at qmin or qmax, not counting a limit equal to the
  zero point (there it encodes 0.0, e.g. the floor of a folded ReLU, not clipping).

Where the host build exists (``repair.program.host``) a batch is folded by one pass of C
(``c_patches/host/tmlr_error_stats_host.c``): the same q and d, each sample's sums in float32 lanes then added in
float64, where numpy's dot products sum in float32 (the two agree to ~1e-6 relative; tests/test_drift_stats_host.py).

An equalized tensor holds float/s_c in channel c (cross-layer equalization, Nagel et al. 2019 §4.1):
with ``channel_factors`` s, q is compared as s_c·q, in the float model's units.
"""

from __future__ import annotations

import math

import numpy as np

from ..metrics import sqnr_db
from ..models.graph import QuantParams
from ..program import host


class TensorStats:
    """Accumulates error statistics of one float/int8 tensor pair over batches."""

    def __init__(self, quant: QuantParams | None, channel_axis: int | None, channel_factors: np.ndarray | None = None):
        self.quant = quant
        self.axis = channel_axis
        self.factors = None if channel_factors is None else np.asarray(channel_factors, np.float32)
        self.n = 0
        self.ff = self.qq = self.fq = self.dd = self.abs_sum = 0.0
        self.max_abs = 0.0
        self.saturated = 0
        self.f_min, self.f_max = math.inf, -math.inf
        self.ch_sum: np.ndarray | None = None
        self.ch_count = 0
        self._row_factors, self._row_factors_key = None, None  # the host fold's per-element factors, by row shape
        self._limits: tuple | None = None  # the host fold's zero point and saturation limits

    def update(self, f: np.ndarray, k: np.ndarray) -> None:
        """Add one batch: ``f`` float values, ``k`` the int8 model's integers (int8, uint8, or float32 arrays holding
        them: the integer program's own values), same shape. In one pass of C where the host build exists
        (``repair.program.host``; module docstring), else in numpy passes."""
        if self._update_in_c(f, k):
            return
        qmin, qmax, zp = self.quant.qmin, self.quant.qmax, self.quant.zero_point
        kr = k.ravel()
        if qmin != zp:
            self.saturated += int(np.count_nonzero(kr == qmin))
        if qmax != zp:
            self.saturated += int(np.count_nonzero(kr == qmax))
        # the one buffer this batch allocates, dequantized and reused in place; C order, so that its ravel() is a
        # view (a transposed k would otherwise leave the differences in a copy and the per-channel sums on q)
        q = k.astype(np.float32, order="C")
        q -= np.float32(zp)
        q *= np.float32(self.quant.scale)
        if self.factors is not None and self.axis is not None and q.ndim > self.axis and \
                q.shape[self.axis] == self.factors.size:
            shape = [1] * q.ndim
            shape[self.axis] = -1
            q *= self.factors.reshape(shape)
        self._accumulate(np.ascontiguousarray(f, np.float32), q)

    def _update_in_c(self, f: np.ndarray, k: np.ndarray) -> bool:
        """``update`` by the host build, for int8 and uint8 integers (a uint8 tensor as int8 k − 128 with its zero
        point and limits moved alike: the same q) and float32 ones (the program's int8 values, read as they are).
        The C sees the batch as samples of one row each (the axes up to the channel axis are samples) and adds each
        element's d into a row of sums, summed here per channel."""
        lib = host.library()
        if lib is None or k.dtype not in (np.int8, np.uint8, np.float32) or f.shape != k.shape or k.ndim == 0:
            return False
        if self._limits is None:  # per batch, QuantParams' limits cost more than a small tensor's fold
            qmin, qmax, zp = self.quant.qmin, self.quant.qmax, self.quant.zero_point
            self._limits = (zp, qmin if qmin != zp else 256, qmax if qmax != zp else 256)  # 256: no int8 holds it
        zp, sat_lo, sat_hi = self._limits
        if k.dtype == np.uint8:
            k = (np.asarray(k) ^ np.uint8(0x80)).view(np.int8)
            zp, sat_lo, sat_hi = zp - 128, sat_lo - 128, sat_hi - 128
        f, k = np.ascontiguousarray(f, np.float32), np.ascontiguousarray(k)
        axis = self.axis if self.axis is not None and k.ndim > self.axis else None
        outer = math.prod(k.shape[:axis if axis is not None else 1])
        row = k.size // max(outer, 1)
        channels = k.shape[axis] if axis is not None else 1
        if self.factors is not None and axis is not None and self.factors.size == channels:
            if self._row_factors_key != (row, channels):  # element j's channel factor, for this row length
                self._row_factors = np.ascontiguousarray(np.repeat(self.factors, row // channels), np.float32)
                self._row_factors_key = (row, channels)
            factors = self._row_factors.ctypes.data
        else:
            factors = None  # all 1: the C's loop without the factors
        totals = np.array([self.ff, self.fq, self.dd, self.abs_sum, self.max_abs, self.f_min, self.f_max, 0.0])
        row_sums = np.zeros(row, np.float32)
        lib.tmlr_host_error_stats(f.ctypes.data, k.ctypes.data, int(k.dtype == np.float32), outer, row,
                                  float(self.quant.scale), int(zp),
                                  factors, sat_lo, sat_hi, totals.ctypes.data,
                                  row_sums.ctypes.data)
        if not np.isfinite(totals[:4]).all():
            return False  # a NaN or inf: the numpy fold takes the batch (the C's min/max would skip a NaN); no state set
        self.ff, self.fq, self.dd, self.abs_sum, self.max_abs, self.f_min, self.f_max = (float(v) for v in totals[:7])
        self.qq = self.dd - self.ff + 2.0 * self.fq
        self.saturated += int(totals[7])
        self.n += k.size
        if axis is not None:
            s = row_sums.reshape(channels, -1).sum(axis=1, dtype=np.float64)
            self.ch_sum = s if self.ch_sum is None else self.ch_sum + s
            self.ch_count += k.size // channels
        return True

    def update_values(self, f: np.ndarray, q: np.ndarray) -> None:
        """Add one batch of float values ``f`` and already-dequantized values ``q`` (not modified)."""
        self._accumulate(np.ascontiguousarray(f, np.float32), np.array(q, np.float32, copy=True))

    def _accumulate(self, f: np.ndarray, q: np.ndarray) -> None:
        """Fold a batch in; ``q`` is scratch: it ends up holding |f − q|.

        Fresh batch-sized temporaries cost more than the arithmetic (page faults), so
        everything after the dequantization happens in that one buffer.
        """
        fr, qr = f.ravel(), q.ravel()
        self.n += fr.size
        ff, fq = float(np.dot(fr, fr)), float(np.dot(fr, qr))
        np.subtract(fr, qr, out=qr)  # q now holds d = f − q
        dd = float(np.dot(qr, qr))
        self.ff += ff
        self.fq += fq
        self.dd += dd
        self.qq += dd - ff + 2.0 * fq  # Σq² = Σ(f−q)² − Σf² + 2Σfq; q² is of the order of f², no cancellation
        if self.axis is not None and q.ndim > self.axis:
            # sum the contiguous trailing axes first: 3x faster than one strided reduction
            c = q.shape[self.axis]
            s = q.reshape(*q.shape[:self.axis], c, -1).sum(axis=-1).reshape(-1, c).sum(axis=0, dtype=np.float64)
            self.ch_sum = s if self.ch_sum is None else self.ch_sum + s
            self.ch_count += q.size // c
        np.abs(qr, out=qr)
        self.abs_sum += float(qr.sum())  # float32 pairwise summation: relative error ~1e-7
        self.max_abs = max(self.max_abs, float(qr.max()))
        self.f_min = min(self.f_min, float(fr.min()))
        self.f_max = max(self.f_max, float(fr.max()))

    # ------------------------------------------------------------------ results
    @property
    def sqnr_db(self) -> float:
        return sqnr_db(self.ff, self.dd)

    @property
    def cosine(self) -> float:
        den = math.sqrt(self.ff * self.qq)
        return self.fq / den if den > 0 else (1.0 if self.dd == 0 else 0.0)

    @property
    def mae(self) -> float:
        return self.abs_sum / self.n if self.n else 0.0

    @property
    def saturation(self) -> float:
        return self.saturated / self.n if self.n else 0.0

    @property
    def channel_mean_error(self) -> list[float]:
        if self.ch_sum is None or not self.ch_count:
            return []
        return (self.ch_sum / self.ch_count).tolist()

    def to_dict(self) -> dict:
        d = {"sqnr_db": self.sqnr_db, "cosine": self.cosine, "mae": self.mae, "max_abs_err": self.max_abs,
             "elements": self.n, "float_range": [self.f_min, self.f_max]}
        q = self.quant
        if q is not None:
            d["saturation"] = self.saturation
            d["int8_range"] = [q.dequantize(np.array(q.qmin)).item(), q.dequantize(np.array(q.qmax)).item()]
        d["channel_mean_error"] = self.channel_mean_error
        return d
