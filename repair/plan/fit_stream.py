"""fit-stream: the keyword recognizer's settings from a labelled stream of a device's int8 posteriors.

Fits ``StreamRecognizer`` (TFLM ``RecognizeCommands`` in integers: averaging window, detection threshold,
suppression, minimum count) to a false-accepts-per-hour target on the calibration stream, and judges it on a
held-out stream next to the two rules people ship without fitting: TFLM micro_speech's hand-tuned defaults
(1000 ms, 200, 1500 ms, 3) and MLPerf Tiny's streaming wake-word rule (posterior ≥ 0.95, no smoothing; a
detection re-arms after 1 s).
"""

from __future__ import annotations

import math

import numpy as np

from .. import fixedpoint as fp
from .. import metrics as M
from ..data.stream import KeywordStream
from ..errors import DataError
from ..repairs import StreamRecognizer
from .entry import PlanEntry
from .plan import RepairPlan

TFLM_DEFAULTS = {"average_window_ms": 1000, "detection_threshold": 200, "suppression_ms": 1500, "minimum_count": 3}
FIXED_PROBABILITY, FIXED_DEBOUNCE_MS = 0.95, 1000
LATENCY_MS = 1000  # a detection up to 1 s after an utterance ends still counts as its detection


def fixed_threshold_fires(scores: np.ndarray, times_ms: np.ndarray, keyword: int,
                          probability: float = FIXED_PROBABILITY, debounce_ms: int = FIXED_DEBOUNCE_MS) -> np.ndarray:
    """Steps where a fixed posterior threshold fires: int8 score q ≥ ⌈256·p⌉ − 128 (p = 0.95: q ≥ 116), at most
    once per ``debounce_ms`` (MLPerf Tiny's streaming wake-word rule)."""
    q_min = math.ceil(256 * probability) - 128
    fired = np.zeros(len(times_ms), bool)
    last = None
    for i in np.flatnonzero(np.asarray(scores)[:, keyword] >= q_min):
        if last is None or times_ms[i] - last > debounce_ms:
            fired[i], last = True, times_ms[i]
    return fired


def fa_upper_bound(false_accepts: int, hours: float, level: float = 0.95) -> float:
    """One-sided upper confidence bound on the false accepts per hour after ``false_accepts`` in ``hours``
    (Poisson, exact: χ²_{level}(2k + 2) / 2 / hours; 0 in 1 h gives 3.0 per hour at 95 %)."""
    from scipy.stats import chi2

    return float(chi2.ppf(level, 2 * false_accepts + 2) / 2 / hours)


def short_stream_warning(calib: dict, target: float) -> str | None:
    """A calibration stream too short to show the target: its 95 % bound on the false-accept rate is above it."""
    bound = fa_upper_bound(calib["false_accepts"], calib["hours"])
    if bound <= target:
        return None
    return (f"{calib['false_accepts']} false accepts in {calib['hours']:.2f} h of calibration stream only shows "
            f"≤ {bound:.1f} per hour (95 %), not {target:g}: record a longer stream of the device's background")


def rule_rates(stream: KeywordStream, keyword: int, silence_class: int, params: dict | None) -> dict:
    """False accepts per hour, false-reject rate, per-label false accepts and latency of one rule on ``stream``:
    RecognizeCommands with ``params`` (integer_params' keys), or the fixed 0.95 rule (None)."""
    if params is None:
        fired = fixed_threshold_fires(stream.scores, stream.times_ms, keyword)
        label = np.full(len(fired), keyword)
    else:
        fired, label, _ = fp.recognize_commands(stream.scores, stream.times_ms, params["average_window_ms"],
                                                params["detection_threshold"], params["suppression_ms"],
                                                params["minimum_count"], silence_class=silence_class)
    return M.stream_detection_rates(stream.times_ms[fired], label[fired], stream.events, keyword,
                                    stream.duration_ms, LATENCY_MS)


def fit_stream(stream: KeywordStream, target_fa_per_hour: float, *, keyword: int, silence_class: int,
               holdout: KeywordStream | None = None) -> RepairPlan:
    """The plan: the fitted recognizer (and the C ring's capacity), judged on ``holdout`` against the baselines."""
    k = stream.num_classes
    if not 0 <= keyword < k or not -1 <= silence_class < k or keyword == silence_class:
        raise DataError(f"--keyword {keyword} and --silence-class {silence_class} must be different classes of the "
                        f"stream's {k} (silence -1: none)")
    if holdout is not None and holdout.num_classes != k:
        raise DataError(f"the holdout stream has {holdout.num_classes} classes, the calibration stream {k}")
    rec = StreamRecognizer(target_fa_per_hour, keyword=keyword, silence_class=silence_class, latency_ms=LATENCY_MS)
    rec.fit(stream.scores, stream.times_ms, stream.events, stream.duration_ms)
    params = rec.integer_params()
    result = {"calibration": rec.calib_}
    warning = short_stream_warning(rec.calib_, target_fa_per_hour)
    if holdout is not None:
        result["holdout"] = rule_rates(holdout, keyword, silence_class, params)
        result["baselines_on_holdout"] = {
            "tflm_defaults": {"params": TFLM_DEFAULTS, **rule_rates(holdout, keyword, silence_class, TFLM_DEFAULTS)},
            "fixed_0.95": {"params": {"probability": FIXED_PROBABILITY, "debounce_ms": FIXED_DEBOUNCE_MS},
                           **rule_rates(holdout, keyword, silence_class, None)}}
        reached = result["holdout"]["fa_per_hour"]
        if reached > target_fa_per_hour:
            warning = ((warning + "; ") if warning else "") + (f"{reached:.1f} false accepts per hour on the holdout stream misses the {target_fa_per_hour:g} "
                       f"target ({result['holdout']['false_accepts']} in {holdout.duration_ms / 3.6e6:.2f} h): "
                       "fit on a longer stream, or one recorded where the device listens")
    entry = PlanEntry.of(rec, params, kept=True, holdout=result, warning=warning,
                         reason=f"fitted to {target_fa_per_hour:g} false accepts per hour on "
                                f"{stream.duration_ms / 3.6e6:.2f} h of the device's int8 posteriors, lowest "
                                f"false-reject rate among the settings that reach it")
    capacity = max(stream.window_capacity(params["average_window_ms"]), params["minimum_count"])
    return RepairPlan(task="keyword_stream", repairs=[entry],
                      provenance={"stream": stream.summary(), "holdout": holdout.summary() if holdout else None,
                                  "target_fa_per_hour": target_fa_per_hour, "keyword": keyword,
                                  "silence_class": silence_class, "num_classes": k, "ring_capacity": capacity,
                                  "min_step_ms": int(np.diff(stream.times_ms).min())})
