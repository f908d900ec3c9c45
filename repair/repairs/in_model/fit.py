"""fit_in_model: the in-model repairs, each fitted on calibration, kept only if cross-validation on the
calibration split shows a gain beyond its noise; the holdout is reported on, never decided on.

Order: input scaling → cross-layer equalization → activation thresholds → sequential bias correction → logit
offset.
Each repair is fitted on the model the kept repairs so far have produced. The decision: the calibration
split is dealt into k folds (stratified by label); on each, the repair is fitted on the other k − 1 folds
(on top of the repairs already kept, fitted on the same folds) and the metric is measured on the held fold
before and after; kept iff the mean gain is positive and exceeds its standard error (``cv_decision``).
Every number comes from the integer program (``judge.ModelJudge``: what TFLM and the device compute),
not onnxruntime's float simulation of QDQ. Metric: accuracy for a labelled classifier, AUROC of the anomaly
score for a labelled reconstruction / score model, and — when asked, as there are no labels — output SQNR
against the float model in dB (``metric="sqnr"``, as for MLPerf Tiny models driven by random inputs).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx

from ... import metrics as M
from ...data import CalibrationSet, check_fits
from ...data.outliers import discount_outliers
from ...errors import DataError, ModelError
from ...models import ModelPair
from ...models.task import anomaly_scores, detect_task
from ...progress import Progress
from .bias_correction import bias_correction, logit_offset
from .context import FitContext, require_layers
from .equalization import equalize
from .input_scaling import scale_inputs
from .judge import ModelJudge
from .qdq import QdqModel
from .thresholds import fit_thresholds

IN_MODEL_REPAIRS = ("input_scaling", "equalization", "activation_thresholds", "bias_correction", "logit_offset")
_FIT = {"input_scaling": scale_inputs, "equalization": equalize, "activation_thresholds": fit_thresholds,
        "bias_correction": bias_correction, "logit_offset": logit_offset}
METRICS = ("accuracy", "auroc", "sqnr")


@dataclass
class InModelEntry:
    """What fitting one in-model repair decided: kept or not and why, the cross-validation behind it (when the
    repair changed the model), the holdout effect (reported, never decided on), and the repair's own per-layer or
    per-activation rows."""

    repair: str
    kept: bool
    reason: str
    judged_on: str
    holdout: dict
    details: list[dict]
    cross_validation: dict | None = None

    def to_dict(self) -> dict:
        return {"repair": self.repair, "stage": "in_model", "kept": self.kept, "reason": self.reason,
                "judged_on": self.judged_on, "holdout": self.holdout, "details": self.details,
                **({"cross_validation": self.cross_validation} if self.cross_validation else {})}


@dataclass
class InModelResult:
    """The repaired model, one entry per repair tried, and the holdout metrics before and after."""

    model: onnx.ModelProto
    entries: list[InModelEntry]
    holdout: dict
    calibration: dict = field(default_factory=dict)

    @property
    def kept(self) -> list[str]:
        return [e.repair for e in self.entries if e.kept]

    #: int8 tensor → per-channel factors s of an equalized activation (it holds float/s): drift and check
    #: compare it in the float model's units
    equalized: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"repairs": [e.to_dict() for e in self.entries], "holdout": self.holdout, "calibration": self.calibration,
                "equalized": self.equalized}


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
                 check_weights: bool = True, progress: bool = False, n_folds: int = 3,
                 seed: int = 0, judge: str = "program") -> InModelResult:
    """Fit the in-model repairs of ``pair.int8`` on ``calib``; keep those whose gain, cross-validated on
    ``n_folds`` folds of ``calib`` and measured on the integer program, beats its fold-to-fold noise.
    ``holdout`` is only reported on. ``judge``: "program" (the device's arithmetic) or "onnxruntime" (its float
    simulation, for comparisons).

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
    calib, discounted = discount_outliers(check_fits(calib, pair, n_classes))
    holdout = check_fits(holdout, pair, n_classes)
    metric = _check_splits(pair, calib, holdout, metric or choose_metric(task))
    qm = QdqModel(pair.int8.proto)
    require_layers(qm)
    ctx = FitContext(pair, calib.x.astype(np.float32), batch_size=batch_size, check_weights=check_weights)
    scorer = _Scorer(pair, ctx, ModelJudge(pair, ctx, judge), calib, holdout, task, metric)
    search = _Search(scorer, ctx, qm, cv_folds(calib, n_folds, scorer.decide_by, seed))
    float_metric = scorer.float_metric()
    int8_metric, int8_sqnr = search.best_metric, search.best_sqnr
    bar = Progress(enabled=progress, label="in-model repairs ")
    entries = [search.try_repair(name, bar) for name in wanted]
    judged_on = scorer.judge.judged_on
    summary = {"metric": metric, "float": float_metric, "int8": int8_metric, "repaired": search.best_metric,
               "sqnr_int8_db": int8_sqnr, "sqnr_repaired_db": search.best_sqnr, "n": len(holdout),
               "gap_recovered": gap_recovered(float_metric, int8_metric, search.best_metric), "judged_on": judged_on,
               "folds": len(search.folds), "decided_by": scorer.decide_by, "discounted_samples": discounted}
    qm = search.qm
    equalized = {q.output[0]: [float(v) for v in qm.equalized[key]] for key, act in qm.activations.items()
                 if key in qm.equalized for q in act.q_nodes}
    return InModelResult(qm.to_model(), entries, summary, {"n": len(calib), "source": calib.source}, equalized)


def _check_splits(pair: ModelPair, calib: CalibrationSet, holdout: CalibrationSet, metric: str) -> str:
    """The metric, once the splits and the model can carry the fit (else one clear error)."""
    if len(calib) < 2:
        raise DataError(f"{calib.source} has {len(calib)} sample(s): bias correction averages over the calibration "
                        "split and thresholds need a distribution; give at least 2 samples (hundreds are better)")
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
    return metric


class _Scorer:
    """A model's metric on the holdout (reported) or on calibration samples (decided on), from the judge's outputs
    (the integer program), with its output SQNR against the float model."""

    def __init__(self, pair, ctx, judge, calib, holdout, task, metric):
        self.judge, self.calib, self.holdout, self.task, self.metric = judge, calib, holdout, task, metric
        self.decide_by = decision_metric(metric, calib)
        self.xc, self.xh = ctx.calib_x, holdout.x.astype(np.float32)
        self.ref_c, self.ref_h = (ctx.outputs(pair.float.proto, x, int8=False) for x in (self.xc, self.xh))

    def float_metric(self) -> float:
        if self.metric == "sqnr":
            return float("inf")
        return _metric_of(self.metric, self.task, self.xh, self.holdout.y, self.ref_h, self.ref_h)

    def on_holdout(self, model: onnx.ModelProto) -> tuple[float, float]:
        out = self.judge.outputs(model, self.xh)
        return _metric_of(self.metric, self.task, self.xh, self.holdout.y, out, self.ref_h), sqnr(self.ref_h, out)

    def on_calibration(self, model: onnx.ModelProto, idx: np.ndarray) -> float:
        x, ref = self.xc[idx], self.ref_c[idx]
        y = None if self.calib.y is None else self.calib.y[idx]
        return _metric_of(self.decide_by, self.task, x, y, self.judge.outputs(model, x), ref)


class _Search:
    """The repairs kept so far — on the whole calibration split (``qm``) and on each fold's training part — and
    their metrics; ``try_repair`` fits one more on top and keeps it if cross-validation says so."""

    def __init__(self, scorer: _Scorer, ctx: FitContext, qm: QdqModel, folds):
        self.scorer, self.ctx, self.qm, self.folds = scorer, ctx, qm, folds
        self.fold_ctx = [ctx.on_subset(train) for train, _ in folds]
        self.fold_models = [qm.copy() for _ in folds]
        self.best_metric, self.best_sqnr = scorer.on_holdout(qm.model)
        self.fold_before = [scorer.on_calibration(qm.model, held) for _, held in folds]

    def try_repair(self, name: str, bar: Progress) -> InModelEntry:
        scorer, judge = self.scorer, self.scorer.judge
        bar.start(len(self.folds) + 1, name)
        trial = self.qm.copy()
        rows = _FIT[name](self.ctx, trial)
        bar.advance(1)
        changed = trial.differs_from(self.qm)  # decided from the model, not from a message
        trial_model = trial.to_model() if changed else None
        unchanged = {"metric": scorer.metric, "before": self.best_metric, "after": self.best_metric,
                     "sqnr_before_db": self.best_sqnr, "sqnr_after_db": self.best_sqnr}
        refused = judge.why_not_runnable(trial_model) if changed else None
        if refused or not changed:
            bar.finish()
            reason = (f"not kept: the repaired model could not run on the device ({refused})" if refused
                      else "fitting changed nothing in the model")  # nothing to decide: the folds are not fitted
            return InModelEntry(name, False, reason, judge.judged_on, unchanged, rows)
        trials, fold_after = self._fit_folds(name, bar)
        bar.finish()
        after, after_sqnr = scorer.on_holdout(trial_model)
        cv = cv_decision(self.fold_before, fold_after)
        kept = cv["beats_noise"]
        reason = (f"{'kept' if kept else 'not kept'}: cross-validated {scorer.decide_by} gain "
                  f"{_fmt_gain(scorer.decide_by, cv)} over {len(self.folds)} calibration folds; holdout "
                  f"{_fmt(scorer.metric, self.best_metric)} → {_fmt(scorer.metric, after)} (reported, not used to "
                  "decide)")
        entry = InModelEntry(name, bool(kept), reason, judge.judged_on,
                             {**unchanged, "after": after, "sqnr_after_db": after_sqnr}, rows, cv)
        if kept:
            self.qm, self.best_metric, self.best_sqnr = trial, after, after_sqnr
            self.fold_models, self.fold_before = trials, fold_after
        return entry

    def _fit_folds(self, name: str, bar: Progress) -> tuple[list[QdqModel], list[float]]:
        """The repair fitted on each fold's training part and scored on its held part; a fold's fit the device
        could not run counts as a loss."""
        trials, fold_after = [], []
        for k, ((_, held), sub) in enumerate(zip(self.folds, self.fold_ctx)):
            t = self.fold_models[k].copy()
            _FIT[name](sub, t)
            trials.append(t)
            if not t.differs_from(self.fold_models[k]):
                fold_after.append(self.fold_before[k])
            else:
                model = t.to_model()
                judge = self.scorer.judge
                fold_after.append(-np.inf if judge.why_not_runnable(model) else self.scorer.on_calibration(model, held))
            bar.advance(1)
        return trials, fold_after


def decision_metric(metric: str, calib: CalibrationSet) -> str:
    """The metric the calibration folds decide by: the holdout's, unless the calibration split cannot carry it
    (no labels, or only one class for AUROC: anomaly calibration sets are usually all normal); then output SQNR
    against the float model, which needs no labels."""
    if metric == "sqnr" or calib.y is None:
        return "sqnr"
    if metric == "auroc" and len(np.unique(calib.y)) < 2:
        return "sqnr"
    return metric


def cv_folds(calib: CalibrationSet, n_folds: int, metric: str, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """``n_folds`` (train, held-out) index splits of the calibration set: shuffled with ``seed``, stratified by
    label when there are labels (each fold keeps the class mix), at least 2 training samples each."""
    n = len(calib)
    k = max(2, min(n_folds, n // 2))
    rng = np.random.default_rng(seed)
    order = rng.permutation(n)
    if calib.y is not None and metric != "sqnr":
        order = order[np.argsort(calib.y[order], kind="stable")]  # deal each class round-robin into the folds
    assign = np.empty(n, np.int64)
    assign[order] = np.arange(n) % k
    return [(np.flatnonzero(assign != f), np.flatnonzero(assign == f)) for f in range(k)]


def cv_decision(before: list[float], after: list[float]) -> dict:
    """Keep a repair when its mean gain over the held-out folds is positive and larger than its standard error
    (the fold-to-fold noise): mean(g) > 0 and mean(g) > sd(g)/√k, g_f = after_f − before_f."""
    g = np.asarray(after, np.float64) - np.asarray(before, np.float64)
    finite = np.isfinite(g)
    if not finite.all():  # SQNR of a fold the model reproduces exactly: +inf; compare finite folds only
        g = np.where(np.isinf(g), np.sign(g) * 1e3, np.nan_to_num(g))
    mean = float(g.mean())
    se = float(g.std(ddof=1) / np.sqrt(len(g))) if len(g) > 1 else float("inf")
    return {"folds": len(g), "before": [float(v) for v in before], "after": [float(v) for v in after],
            "gain": [float(v) for v in g], "mean_gain": mean, "standard_error": se,
            "beats_noise": bool(mean > 0 and mean > se)}


def _fmt_gain(metric: str, cv: dict) -> str:
    unit = (lambda v: f"{100 * v:+.2f} pts") if metric == "accuracy" else (
        (lambda v: f"{v:+.2f} dB") if metric == "sqnr" else (lambda v: f"{v:+.4f}"))
    folds = ", ".join(unit(v) for v in cv["gain"])
    return f"{unit(cv['mean_gain'])} ± {unit(cv['standard_error']).lstrip('+')} (folds {folds})"


def gap_recovered(float_metric: float, int8_metric: float, repaired_metric: float) -> float | None:
    """(repaired − int8) / (float − int8); None when int8 does not lose anything (no gap)."""
    gap = float_metric - int8_metric
    if not np.isfinite(gap) or gap <= 0:
        return None
    return float((repaired_metric - int8_metric) / gap)


def _fmt(metric: str, v: float) -> str:
    return f"{v:.2f} dB" if metric == "sqnr" else (f"{v:.2%}" if metric == "accuracy" else f"{v:.4f}")
