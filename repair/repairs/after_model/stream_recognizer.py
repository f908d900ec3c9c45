"""Keyword-spotting stream decisions fitted to a false-accepts-per-hour target.

TFLite Micro's micro_speech ``RecognizeCommands`` smooths int8 posteriors over a time window and fires
when the average top score passes a threshold, with a minimum result count and a suppression time:
defaults 1000 ms / 200 / 1500 ms / 3, tuned by hand. This fits (window, threshold, suppression,
min_count) on a calibration stream: among the settings whose false accepts per hour stay at or under
the target, the one with the lowest false-reject rate (ties: shorter window, then lower threshold).
Integer form: exactly RecognizeCommands (``repair.fixedpoint.recognize_commands``); the parameters are
plain integers, so a TFLM user changes four constructor arguments.
"""

from __future__ import annotations

import numpy as np

from ... import fixedpoint as fp
from ... import metrics as M
from ...errors import DataError
from .base import Repair, register

WINDOWS_MS = (250, 500, 1000, 1500)
MIN_COUNTS = (1, 3)
SUPPRESSIONS_MS = (500, 1000, 1500, 2000)
THRESHOLDS = tuple(range(64, 256, 8)) + (255,)


@register
class StreamRecognizer(Repair):
    name = "stream_recognizer"
    fitted_attributes = ("window_ms_", "threshold_", "suppression_ms_", "min_count_", "calib_")

    def __init__(self, target_fa_per_hour: float = 1.0, keyword: int = 0, silence_class: int = 0,
                 latency_ms: int = 1000):
        self.target_fa_per_hour = target_fa_per_hour
        self.keyword = keyword
        self.silence_class = silence_class
        self.latency_ms = latency_ms

    def _rates(self, scores, times, events, duration, params, averages=None) -> dict:
        fired, label, _ = fp.recognize_commands(scores, times, *params, silence_class=self.silence_class,
                                                averages=averages)
        return M.stream_detection_rates(times[fired], label[fired], events, self.keyword, duration, self.latency_ms)

    def fit(self, scores, times_ms, events, duration_ms: float | None = None) -> "StreamRecognizer":
        """``scores`` int8 posteriors (T, K); ``times_ms`` (T,); ``events`` rows (start_ms, end_ms, label)."""
        if not self.target_fa_per_hour >= 0:
            raise DataError("the false-accepts-per-hour target must be ≥ 0")
        scores, times = np.asarray(scores, np.int64), np.asarray(times_ms, np.int64)
        if scores.ndim != 2 or len(scores) != len(times) or len(times) < 2 or np.any(np.diff(times) <= 0):
            raise DataError("a stream needs int8 posteriors (T, K) and strictly increasing times (T,)")
        if not np.any(np.asarray(events).reshape(-1, 3)[:, 2] == self.keyword):
            raise DataError(f"the calibration stream has no event of keyword class {self.keyword}")
        duration = float(duration_ms or times[-1] - times[0])
        best = None
        for window in WINDOWS_MS:
            for count in MIN_COUNTS:
                averages = fp.recognize_averages(scores, times, window, count)
                for supp in SUPPRESSIONS_MS:
                    # a higher threshold never adds detections: scan down from the top, stop at the first miss
                    for thr in sorted(THRESHOLDS, reverse=True):
                        r = self._rates(scores, times, events, duration, (window, thr, supp, count), averages)
                        if r["fa_per_hour"] > self.target_fa_per_hour:
                            break
                        key = (r["false_reject_rate"], window, thr)
                        if best is None or key < best[0]:
                            best = (key, (window, thr, supp, count), r)
        if best is None:
            raise DataError(f"no setting reaches {self.target_fa_per_hour} false accepts per hour on this stream")
        self.window_ms_, self.threshold_, self.suppression_ms_, self.min_count_ = best[1]
        self.calib_ = best[2]
        return self

    def integer_params(self) -> dict:
        self.check_fitted()
        return {"average_window_ms": self.window_ms_, "detection_threshold": self.threshold_,
                "suppression_ms": self.suppression_ms_, "minimum_count": self.min_count_}

    def apply_int(self, scores, times_ms) -> tuple[np.ndarray, np.ndarray]:
        """(fired, label) per step, exactly as RecognizeCommands with the fitted parameters."""
        self.check_fitted()
        fired, label, _ = fp.recognize_commands(scores, times_ms, self.window_ms_, self.threshold_,
                                                self.suppression_ms_, self.min_count_, self.silence_class)
        return fired, label

    apply = apply_int  # the decision is integer by construction: the float and integer paths are one

    def evaluate(self, scores, times_ms, events, duration_ms: float | None = None) -> dict:
        """False accepts per hour and false-reject rate of the fitted setting on a stream."""
        self.check_fitted()
        times = np.asarray(times_ms, np.int64)
        duration = float(duration_ms or times[-1] - times[0])
        return self._rates(np.asarray(scores), times, events, duration,
                           (self.window_ms_, self.threshold_, self.suppression_ms_, self.min_count_))
