"""Helpers for the device tests: shims with random parameters, and a transport that injects faults."""

from __future__ import annotations

import time

import numpy as np

from repair import fixedpoint as fp
from repair.plan.shims import AnomalyShim, ClassifierShim


def classifier_shim(rng, k: int = 10, affine: bool = True, thresholds: bool = True) -> ClassifierShim:
    aff = None
    if affine:
        a = rng.uniform(0.3, 2.5, k) * rng.choice([-1, 1], k, p=[0.1, 0.9])
        s_in = 0.1
        s_out = s_in * float(np.abs(a).max())
        mults, shifts = zip(*(fp.quantize_multiplier(abs(float(v)) * s_in / s_out) for v in a))
        aff = {"multipliers": [int(m * np.sign(v)) for m, v in zip(mults, a)], "shifts": [int(s) for s in shifts],
               "offsets": rng.integers(-40, 40, k).tolist(), "input_zero_point": int(rng.integers(-20, 20)),
               "output_zero_point": int(rng.integers(-20, 20))}
    softmax = tuple(int(v) for v in fp.softmax_params(float(rng.uniform(0.5, 2.0)), 0.1))
    thr = rng.integers(-128, 128, k).tolist() if thresholds else None
    return ClassifierShim(k, aff, softmax, thr)


def window_shim(window: int = 16, alpha2_q: int = 2304, frac_bits: int = 8) -> AnomalyShim:
    return AnomalyShim("window", 1.0, window=window, alpha2_q=alpha2_q, alpha2_frac_bits=frac_bits)


def window_stream(rng, n: int) -> np.ndarray:
    x = np.cumsum(rng.normal(0, 40, n)) + rng.normal(0, 300, n)
    x[rng.integers(0, n, n // 50)] += 6000
    return np.clip(np.rint(x), -32768, 32767).astype(np.int64)


class FaultyPort:
    """A pyserial-like port that drops, corrupts, duplicates and delays bytes both ways, and restarts the
    device (``restart()``) on chosen write calls. Seeded: the same faults for the same traffic."""

    def __init__(self, port, seed: int = 0, *, drop=0.0, corrupt=0.0, duplicate=0.0, delay=0.0,
                 max_delay: float = 0.06, restart=None, restart_on_writes=()):
        self.port, self.rng = port, np.random.default_rng(seed)
        self.p = {"drop": drop, "corrupt": corrupt, "duplicate": duplicate, "delay": delay}
        self.max_delay, self.restart, self.restart_on = max_delay, restart, set(restart_on_writes)
        self.writes = 0
        self.counts = {"drop": 0, "corrupt": 0, "duplicate": 0, "delay": 0, "restart": 0}

    def _mangle(self, data: bytes) -> bytes:
        out = bytearray()
        for b in data:
            r = self.rng.random(4)
            if r[0] < self.p["drop"]:
                self.counts["drop"] += 1
                continue
            if r[1] < self.p["corrupt"]:
                self.counts["corrupt"] += 1
                b ^= 1 << int(self.rng.integers(0, 8))
            out.append(b)
            if r[2] < self.p["duplicate"]:
                self.counts["duplicate"] += 1
                out.append(b)
            if r[3] < self.p["delay"]:
                self.counts["delay"] += 1
                time.sleep(float(self.rng.uniform(0, self.max_delay)))
        return bytes(out)

    def write(self, data: bytes) -> int:
        self.writes += 1
        if self.writes in self.restart_on and self.restart:
            self.counts["restart"] += 1
            self.restart()
            time.sleep(0.01)
        self.port.write(self._mangle(data))
        return len(data)

    def read(self, n: int = 1) -> bytes:
        return self._mangle(self.port.read(n))

    @property
    def in_waiting(self) -> int:
        return self.port.in_waiting

    @property
    def timeout(self):
        return self.port.timeout

    @timeout.setter
    def timeout(self, value):
        self.port.timeout = value

    def close(self) -> None:
        self.port.close()
