"""fit_scores: a threshold or an adaptive boundary from anomaly scores alone (no models).

Users often have only scores logged from the device. The repair is fitted on the given
scores' normal samples (label 0, or all samples when unlabelled) to a target
false-alarm rate and judged, when a holdout score file is given, on that file.
"""

from __future__ import annotations

from .. import metrics as M
from ..data.scores import ScoreSet
from ..errors import DataError
from ..repairs import ScoreThreshold, WindowBoundary
from .entry import WHY_SCORES, PlanEntry, agreement
from .plan import RepairPlan


def fit_scores(scores: ScoreSet, target_far: float, *, method: str = "threshold", window: int = 32,
               holdout: ScoreSet | None = None) -> RepairPlan:
    if method == "threshold":
        rep = ScoreThreshold(target_far).fit(scores.score, scores.label)
    elif method == "window":
        rep = WindowBoundary(window, target_far).fit(scores.score, scores.label)
    else:
        raise DataError(f"method {method!r}: use 'threshold' or 'window'")
    calib = M.alarm_rates(rep.apply(scores.score), scores.label)
    result = {"calibration": calib}
    agree = None
    if holdout is not None:
        alarms_f, alarms_i = rep.apply(holdout.score), rep.apply_int(holdout.score)
        start = window if method == "window" else 0
        labels = None if holdout.label is None else holdout.label[start:]
        result["holdout"] = M.alarm_rates(alarms_f[start:], labels)
        check = M.target_check(alarms_f[start:], labels, target_far)
        if check:
            result["target_check"] = check
        agree = agreement(alarms_f, alarms_i, WHY_SCORES)
    entry = PlanEntry.of(rep, rep.integer_params(), kept=True,
                         reason=f"fitted to a {target_far:.1%} false-alarm rate on {len(scores.score)} scores",
                         holdout=result, int_agreement=agree,
                         warning=M.target_warning(result.get("target_check"), "the holdout"))
    return RepairPlan(task="anomaly_scores" if method == "threshold" else "anomaly_stream", repairs=[entry],
                      provenance={"scores": scores.source, "holdout": holdout.source if holdout else None,
                                  "target_far": target_far, "method": method})
