"""Stream raw outputs through the device's shims, surviving resets, with an optional journal.

The device may restart at any time (a brown-out, a watchdog, a fault): it then answers "no parameters".
The stream uploads the parameters again and, for the stateful window boundary, rebuilds the window by
replaying the ``window`` samples before the current one (the window's state is a function of exactly
those samples), discarding the replayed outputs; the keyword recognizer's state (the last command fired,
however long ago) is a function of the whole stream, so it is replayed from the start. Results already
journaled are never asked for again.
"""

from __future__ import annotations

import numpy as np

from ..errors import DeviceError
from ..plan.shims import AnomalyShim, ClassifierShim, StreamShim
from . import protocol as P
from .journal import Journal
from .link import DeviceLink

MAX_RECOVERIES = 20  # consecutive restarts without progress before giving up


def batch_size(shim: ClassifierShim | AnomalyShim, max_payload: int) -> int:
    """Samples per SHIM request that fit the device's payload limit both ways."""
    per_in, per_out = P.shim_sample_bytes(shim)
    return max(1, min(0xFFFF, (max_payload - 6) // max(per_in, per_out)))


def shim_inputs(shim: ClassifierShim | AnomalyShim, raw: np.ndarray) -> np.ndarray:
    """What SHIM carries for ``raw``: int8 logits as they are, anomaly scores quantized to int16."""
    if isinstance(shim, ClassifierShim):
        return np.asarray(raw, np.int64).reshape(-1, shim.num_classes)
    from ..repairs.after_model.score_threshold import quantize_scores

    return quantize_scores(np.asarray(raw, np.float64), shim.score_scale).astype(np.int64)


class ShimStream:
    """Runs ``inputs`` (from shim_inputs) through the device; ``run()`` returns outputs like shim.run()."""

    def __init__(self, link: DeviceLink, shim, params_id: int, *, max_payload: int, journal: Journal | None = None,
                 progress=None):
        self.link, self.shim, self.params_id = link, shim, params_id
        self.batch = batch_size(shim, max_payload)
        self.journal, self.progress = journal, progress
        self.stateful = isinstance(shim, StreamShim) or (isinstance(shim, AnomalyShim) and shim.kind == "window")
        self.recoveries = 0

    def _prepare(self, inputs: np.ndarray, pos: int) -> None:
        """Parameters uploaded and, for the window, its state as it was just before sample ``pos``."""
        self.link.set_params(self.shim, self.params_id)
        if self.stateful:
            start = 0 if isinstance(self.shim, StreamShim) else max(0, pos - self.shim.window)
            self.link.reset(P.RESET_STATE, start)
            for a in range(start, pos, self.batch):
                self.link.shim(self.shim, inputs[a:min(pos, a + self.batch)], a)

    def run(self, inputs: np.ndarray) -> dict[str, np.ndarray]:
        n = len(inputs)
        pos = self.journal.done if self.journal else 0
        results = []
        if self.progress:
            self.progress.start(n, "samples")
            self.progress.advance(pos)
        self._prepare(inputs, pos)
        failures = 0
        while pos < n:
            end = min(n, pos + self.batch)
            try:
                out = self.link.shim(self.shim, inputs[pos:end], pos)
            except DeviceError as e:
                if e.code not in (P.E_NO_PARAMS, P.E_STREAM_POS, P.E_FAULT) or failures >= MAX_RECOVERIES:
                    raise
                failures += 1
                self.recoveries += 1
                self._prepare(inputs, pos)  # the device restarted (or lost its place): rebuild and go on
                continue
            failures = 0
            if self.journal:
                self.journal.record(pos, out)
            else:
                results.append(out)
            if self.progress:
                self.progress.advance(end - pos)
            pos = end
        if self.progress:
            self.progress.finish()
        if self.journal:
            return self.journal.outputs()
        return {k: np.concatenate([r[k] for r in results]) for k in results[0]} if results else {}


class InferStream:
    """Runs int8 inputs through the device's model, one INFER each; returns the raw outputs (and, with
    classifier parameters given, the device's shim outputs), journaled every ``flush_every`` samples."""

    def __init__(self, link: DeviceLink, out_size: int, *, shim=None, params_id: int | None = None,
                 journal: Journal | None = None, progress=None, flush_every: int = 16, raw: bool = False):
        """``raw``: the inputs are int16 sensor readings the device's input pre-shim quantizes."""
        self.link, self.out_size, self.shim, self.params_id = link, out_size, shim, params_id
        self.infer = link.infer_raw if raw else link.infer
        self.journal, self.progress, self.flush_every = journal, progress, flush_every
        self.recoveries = 0

    def _prepare(self) -> None:
        if self.shim is not None:
            self.link.set_params(self.shim, self.params_id)
        else:
            self.link.reset(P.RESET_PARAMS)

    def run(self, inputs: np.ndarray) -> dict[str, np.ndarray]:
        n = len(inputs)
        pos = self.journal.done if self.journal else 0
        records: list[dict] = []
        pending: list[dict] = []
        if self.progress:
            self.progress.start(n, "inferences")
            self.progress.advance(pos)
        self._prepare()
        failures = 0
        while pos < n:
            try:
                r = self.infer(inputs[pos], self.out_size, self.shim)
                if self.shim is not None and r.shim is None:  # parameters gone: the device restarted
                    raise DeviceError("restarted", P.E_NO_PARAMS)
            except DeviceError as e:
                if e.code not in (P.E_NO_PARAMS, P.E_FAULT) or failures >= MAX_RECOVERIES:
                    raise
                failures += 1
                self.recoveries += 1
                self._prepare()
                continue
            failures = 0
            rec = {"raw": r.raw, "model_ticks": r.model_ticks, "shim_ticks": r.shim_ticks, **(r.shim or {})}
            pending.append(rec)
            pos += 1
            if len(pending) >= self.flush_every or pos == n:
                if self.journal:
                    self.journal.record(pos - len(pending), {k: np.array([p[k] for p in pending]) for k in rec})
                else:
                    records.extend(pending)
                pending = []
            if self.progress:
                self.progress.advance(1)
        if self.progress:
            self.progress.finish()
        if self.journal:
            return self.journal.outputs()
        return {k: np.array([r[k] for r in records]) for k in records[0]} if records else {}
