"""fit_in_model: the in-model repairs, each fitted on calibration and kept only if it helps on the holdout.

Order: cross-layer equalization → activation thresholds → sequential bias correction → logit offset.
Each repair is fitted on the model the kept repairs so far have produced; it is kept if the holdout
metric strictly improves on the best so far, otherwise the model goes on without it and the entry says
so. The holdout metric: accuracy for a labelled classifier, AUROC of the anomaly score for a labelled
reconstruction / score model, and — when asked, as there are no labels — output SQNR against the float
model in dB (``metric="sqnr"``, as for MLPerf Tiny models driven by random inputs).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx

from .. import metrics as M
from ..data import CalibrationSet, check_fits
from ..drift.measure import anomaly_scores, detect_task
from ..errors import DataError, ModelError
from ..models import ModelPair
from ..progress import Progress
from .bias_correction import bias_correction, logit_offset
from .context import FitContext, require_layers
from .equalization import equalize
from .qdq import QdqModel
from .thresholds import fit_thresholds

IN_MODEL_REPAIRS = ("equalization", "activation_thresholds", "bias_correction", "logit_offset")
_FIT = {"equalization": equalize, "activation_thresholds": fit_thresholds,
        "bias_correction": bias_correction, "logit_offset": logit_offset}
METRICS = ("accuracy", "auroc", "sqnr")


@dataclass
class InModelResult:
    """The repaired model, one entry per repair tried, and the holdout metrics before and after."""

    model: onnx.ModelProto
    entries: list[dict]
    holdout: dict
    calibration: dict = field(default_factory=dict)

    @property
    def kept(self) -> list[str]:
        return [e["repair"] for e in self.entries if e["kept"]]

    def to_dict(self) -> dict:
        return {"repairs": self.entries, "holdout": self.holdout, "calibration": self.calibration}


def _metric_of(metric: str, task: str, x: np.ndarray, y, out: np.ndarray, ref: np.ndarray) -> float:
    if metric == "accuracy":
        return float((out.argmax(axis=1) == y).mean())
    if metric == "auroc":
        return M.auroc(anomaly_scores(task, x, out), y)
    return sqnr(ref, out)


def sqnr(ref: np.ndarray, out: np.ndarray) -> float:
    """Output SQNR in dB: 10·log10(Σ ref² / Σ (ref − out)²)."""
    return M.sqnr_db(float(np.sum(ref ** 2)), float(np.sum((ref - out) ** 2)))


def choose_metric(task: str) -> str:
    """Accuracy for classifiers, AUROC of the anomaly score otherwise; SQNR only when asked (it needs no labels
    but judges closeness to the float model, not the task)."""
    return "accuracy" if task == "classifier" else "auroc"


def fit_in_model(pair: ModelPair, calib: CalibrationSet, holdout: CalibrationSet, *,
                 repairs: tuple[str, ...] | None = None, metric: str | None = None, batch_size: int = 256,
                 check_weights: bool = True, progress: bool = False) -> InModelResult:
    """Fit the in-model repairs of ``pair.int8`` on ``calib``; keep those that improve ``holdout``.

    ``metric``: "accuracy" | "auroc" | "sqnr" (default: accuracy for classifiers, AUROC otherwise).
    ``check_weights``: refuse a pair whose layers hold unrelated weights (repairing toward another network).
    Raises ``DataError`` for splits that cannot carry the fit (fewer than 2 calibration samples, a
    labelled metric without labels) and ``ModelError`` for a model with nothing to repair.
    """
    wanted = tuple(repairs or IN_MODEL_REPAIRS)
    unknown = [r for r in wanted if r not in IN_MODEL_REPAIRS]
    if unknown:
        raise DataError(f"unknown in-model repair(s) {unknown}; choose from {', '.join(IN_MODEL_REPAIRS)}")
    task = detect_task(pair)
    n_classes = pair.float.outputs[0].shape[0] if task == "classifier" else None
    calib = check_fits(calib, pair, n_classes)
    holdout = check_fits(holdout, pair, n_classes)
    if len(calib) < 2:
        raise DataError(f"{calib.source} has {len(calib)} sample(s): bias correction averages over the calibration "
                        "split and thresholds need a distribution; give at least 2 samples (hundreds are better)")
    metric = metric or choose_metric(task)
    if metric not in METRICS:
        raise DataError(f"metric {metric!r}: use one of {', '.join(METRICS)}")
    if metric != "sqnr" and holdout.y is None:
        raise DataError(f"{holdout.source} has no labels (y): judging repairs by {metric} needs them; "
                        "add y, or judge by output SQNR (metric 'sqnr')")
    if metric == "auroc" and len(np.unique(holdout.y)) < 2:
        raise DataError(f"{holdout.source}: AUROC needs both normal (0) and anomalous (1) samples")
    if pair.int8.index.is_qoperator:
        raise ModelError(f"INT8 model {pair.int8.path} is in QOperator format (QLinearConv, …): in-model repairs "
                         "edit QDQ models; quantize with QuantFormat.QDQ")
    qm = QdqModel(pair.int8.proto)
    require_layers(qm)
    xc = calib.x.astype(np.float32)
    xh = holdout.x.astype(np.float32)
    ctx = FitContext(pair, xc, batch_size=batch_size, check_weights=check_weights)
    ref_h = ctx.outputs(pair.float.proto, xh, int8=False)

    def judge(model: onnx.ModelProto) -> tuple[float, float]:
        out = ctx.outputs(model, xh, int8=True)
        return _metric_of(metric, task, xh, holdout.y, out, ref_h), sqnr(ref_h, out)

    float_metric = _metric_of(metric, task, xh, holdout.y, ref_h, ref_h) if metric != "sqnr" else float("inf")
    int8_metric, int8_sqnr = judge(pair.int8.proto)
    best_metric, best_sqnr = int8_metric, int8_sqnr
    entries = []
    bar = Progress(enabled=progress, label="in-model repairs ")
    for name in wanted:
        trial = qm.copy()
        bar.start(1, name)
        rows = _FIT[name](ctx, trial, progress=lambda done, total: bar.update(done, total))
        bar.finish()
        changed = any(r.get("decision") not in ("kept", "no change", "not corrected", "summary",
                                                "not a first layer of a pair") for r in rows)
        after, after_sqnr = judge(trial.to_model()) if changed else (best_metric, best_sqnr)
        kept = changed and after > best_metric
        if not changed:
            reason = "fitting changed nothing in the model"
        elif kept:
            reason = f"holdout {metric} {_fmt(metric, best_metric)} → {_fmt(metric, after)}"
        else:
            reason = f"holdout {metric} {_fmt(metric, after)} does not beat {_fmt(metric, best_metric)}"
        entries.append({"repair": name, "stage": "in_model", "kept": bool(kept), "reason": reason,
                        "holdout": {"metric": metric, "before": best_metric, "after": after,
                                    "sqnr_before_db": best_sqnr, "sqnr_after_db": after_sqnr},
                        "details": rows})
        if kept:
            qm, best_metric, best_sqnr = trial, after, after_sqnr
    summary = {"metric": metric, "float": float_metric, "int8": int8_metric, "repaired": best_metric,
               "sqnr_int8_db": int8_sqnr, "sqnr_repaired_db": best_sqnr, "n": len(holdout),
               "gap_recovered": gap_recovered(float_metric, int8_metric, best_metric)}
    return InModelResult(qm.to_model(), entries, summary, {"n": len(calib), "source": calib.source})


def gap_recovered(float_metric: float, int8_metric: float, repaired_metric: float) -> float | None:
    """(repaired − int8) / (float − int8); None when int8 does not lose anything (no gap)."""
    gap = float_metric - int8_metric
    if not np.isfinite(gap) or gap <= 0:
        return None
    return float((repaired_metric - int8_metric) / gap)


def _fmt(metric: str, v: float) -> str:
    return f"{v:.2f} dB" if metric == "sqnr" else (f"{v:.2%}" if metric == "accuracy" else f"{v:.4f}")
