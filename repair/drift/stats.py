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
"""

from __future__ import annotations

import math

import numpy as np

from ..models.graph import QuantParams
from .metrics import sqnr_db


class TensorStats:
    """Accumulates error statistics of one float/int8 tensor pair over batches."""

    def __init__(self, quant: QuantParams | None, channel_axis: int | None):
        self.quant = quant
        self.axis = channel_axis
        self.n = 0
        self.ff = self.qq = self.fq = self.dd = self.abs_sum = 0.0
        self.max_abs = 0.0
        self.saturated = 0
        self.f_min, self.f_max = math.inf, -math.inf
        self.ch_sum: np.ndarray | None = None
        self.ch_count = 0

    def update(self, f: np.ndarray, k: np.ndarray) -> None:
        """Add one batch: ``f`` float values, ``k`` the int8 model's integers, same shape."""
        qmin, qmax, zp = self.quant.qmin, self.quant.qmax, self.quant.zero_point
        kr = k.ravel()
        if qmin != zp:
            self.saturated += int(np.count_nonzero(kr == qmin))
        if qmax != zp:
            self.saturated += int(np.count_nonzero(kr == qmax))
        self.update_values(f, self.quant.dequantize(k))

    def update_values(self, f: np.ndarray, q: np.ndarray) -> None:
        """Add one batch of float values ``f`` and already-dequantized values ``q``."""
        f = np.ascontiguousarray(f, np.float32)
        q = np.ascontiguousarray(q, np.float32)
        d = f - q
        fr, qr, dr = f.ravel(), q.ravel(), d.ravel()
        self.n += fr.size
        self.ff += float(np.dot(fr, fr))
        self.qq += float(np.dot(qr, qr))
        self.fq += float(np.dot(fr, qr))
        self.dd += float(np.dot(dr, dr))
        ad = np.abs(dr)
        self.abs_sum += float(ad.sum(dtype=np.float64))
        self.max_abs = max(self.max_abs, float(ad.max()))
        self.f_min = min(self.f_min, float(fr.min()))
        self.f_max = max(self.f_max, float(fr.max()))
        if self.axis is not None and d.ndim > self.axis:
            axes = tuple(i for i in range(d.ndim) if i != self.axis)
            s = d.sum(axis=axes, dtype=np.float64)
            self.ch_sum = s if self.ch_sum is None else self.ch_sum + s
            self.ch_count += d.size // d.shape[self.axis]

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
