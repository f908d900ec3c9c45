"""fit_plan: fit the repairs — in the model, then after it — on calibration, judge them on a holdout.

With ``in_model=True`` (or in-model names in ``repairs``) the in-model repairs come first
(``repair.repairs.in_model.fit_in_model``: equalization, activation thresholds, bias correction, logit offset);
the plan then carries the repaired model (``plan.repaired_model``, an ``onnx.ModelProto``, not part of
the JSON) and ``plan.in_model`` says what each did, and the after-model repairs are fitted on the
*repaired* model's outputs, as the device will produce them.

Fit on the calibration split, judge on the holdout split, always. A calibration repair
is kept only if it lowers holdout NLL (vector scaling only if it beats what is kept
before it); decision rules (thresholds, boundaries) are fitted to their target rate
and the rate they reach on the holdout is reported. Every entry says how often the
integer reference (what the C shim computes) decides as the float path does.

Classifier: temperature scaling → vector scaling → per-class thresholds.
Anomaly (reconstruction or score output): a static score threshold, or an adaptive
window boundary over the holdout's time-ordered scores (``anomaly_boundary``).
"""

from __future__ import annotations

import numpy as np

from .. import fixedpoint as fp
from .. import metrics as M
from ..data import CalibrationSet, check_fits
from ..errors import DataError, ModelError
from ..models import ModelPair
from ..models.task import anomaly_scores, detect_task
from ..repairs import (
    ClassThresholds,
    ScoreThreshold,
    TemperatureScaling,
    VectorScaling,
    WindowBoundary,
)
from ..repairs.in_model.fit import cv_decision, cv_folds
from .entry import WHY_ARGMAX, WHY_SCORES, WHY_THRESHOLD, PlanEntry, agreement
from .model_file import input_pre_shim, int8_input_change, repaired_model_file
from .model_softmax import (
    find_model_softmax,
    fold_temperature,
    int8_logits,
    temperature_params,
)
from .plan import RepairPlan
from .recon_score import model_input, recon_score_params, recon_scores

CLASSIFIER_REPAIRS = ("temperature", "vector_scaling", "class_thresholds")

ANOMALY_REPAIRS = ("score_threshold", "window_boundary")
REPAIRED = "the repaired int8 model (repaired_int8.onnx or .tflite)"


def int8_outputs(pair: ModelPair, x: np.ndarray, batch_size: int = 256, model=None,
                 runtime: str = "program") -> tuple[np.ndarray, np.ndarray]:
    """The int8 model's (or ``model``'s, an edited copy) first output on ``x``: (dequantized float, the integers).

    ``runtime="program"``: as the device computes it (the integer program, bit-exact with TFLite Micro), or
    onnxruntime's float simulation of QDQ where the program cannot express the model; ``"onnxruntime"``: always
    onnxruntime (to compare a device with it)."""
    quant = pair.int8.outputs[0].quant
    if quant is None:
        raise DataError("the int8 model's output has no per-tensor QuantizeLinear: its integers are unknown")
    if runtime == "program" and not pair.int8.index.is_qoperator:
        from ..program import lower
        from ..program.runner import ProgramRunner

        try:
            runner = ProgramRunner(pair, lower(model if model is not None else pair.int8.proto))
        except ModelError:
            runner = None
        if runner is not None:
            q = runner.output_integers(x).reshape(len(x), *pair.int8.outputs[0].shape)
            return quant.dequantize(q).astype(np.float64), q
    if model is None:
        sess = pair.int8.session(())
    else:
        from ..repairs.in_model.context import session

        sess = session(model, [o.name for o in model.graph.output])
    raw = pair.run_batched(sess, x, int8=True, batch_size=batch_size)
    if np.issubdtype(raw.dtype, np.integer):
        return quant.dequantize(raw).astype(np.float64), raw.astype(np.int64)
    # float output written by a final DequantizeLinear: re-quantizing recovers its integers exactly
    return raw.astype(np.float64), quant.quantize(raw).astype(np.int64)


def fit_plan(pair: ModelPair, calib: CalibrationSet, holdout: CalibrationSet, *, repairs: tuple[str, ...] | None = None,
             target_far: float = 0.01, anomaly_far: float = 0.1, anomaly_boundary: str = "threshold",
             window: int = 32, raw_outputs: tuple[np.ndarray, np.ndarray] | None = None,
             source: str = "integer program", in_model: bool = False, metric: str | None = None,
             check_weights: bool = True, progress: bool = False, field: CalibrationSet | None = None,
             reading_lsb=1.0) -> RepairPlan:
    """Fit the repairs that apply to ``pair``'s task; return the plan with holdout results.

    ``raw_outputs``: the int8 output integers on calib and holdout as a device produced them (``calibrate``);
    by default the integer program runs the int8 model (the device's arithmetic). ``source`` says which, in the plan's provenance.
    ``in_model``: run the in-model repairs first (all of them unless ``repairs`` names some); ``metric``,
    ``check_weights`` and ``progress`` go to ``fit_in_model``. Without labels (``metric="sqnr"``) only the
    in-model repairs are fitted. ``field``: unlabelled inputs as the deployed device sees them (logged from it);
    the in-model repairs are then fitted on them, and decided by output SQNR against the float model on their
    folds (no labels needed), while the after-model repairs keep the labelled calibration split.
    ``reading_lsb``: what one integer sensor reading is worth per input feature (a number, or one per feature),
    for the integer form of an input pre-shim (``model_file.input_pre_shim``).
    """
    from ..repairs.in_model import IN_MODEL_REPAIRS, fit_in_model

    unknown = set(repairs or ()) - set(CLASSIFIER_REPAIRS) - set(ANOMALY_REPAIRS) - set(IN_MODEL_REPAIRS)
    if unknown:
        raise DataError(f"unknown repair(s) {sorted(unknown)}; choose from "
                        f"{', '.join(IN_MODEL_REPAIRS + CLASSIFIER_REPAIRS + ANOMALY_REPAIRS)}")
    in_names = tuple(r for r in (repairs or IN_MODEL_REPAIRS) if r in IN_MODEL_REPAIRS)
    if repairs and in_names:
        in_model = True
    repairs = tuple(r for r in repairs if r not in IN_MODEL_REPAIRS) if repairs else None
    if field is not None and not in_model:
        raise DataError("--field feeds the in-model repairs, and none were asked for: drop --field or ask for "
                        "an in-model repair")
    if in_model:
        if raw_outputs is not None:
            raise DataError("in-model repairs change the model: fit them on onnxruntime outputs, not a device's")
        result = fit_in_model(pair, calib if field is None else field, holdout, repairs=in_names, metric=metric,
                              check_weights=check_weights, progress=progress)
        plan = _after_model(pair, calib, holdout, repairs, target_far, anomaly_far, anomaly_boundary, window,
                            result)
        _set_repaired(plan, pair, _with_folded_temperature(pair, plan, result.model), holdout, result.to_dict(),
                      reading_lsb)
        if field is not None:
            plan.provenance["field"] = field.summary()
        return plan
    plan = _fit_after(pair, calib, holdout, repairs, target_far, anomaly_far, anomaly_boundary, window,
                      raw_outputs, source)
    folded = _with_folded_temperature(pair, plan, pair.int8.proto)
    if folded is not pair.int8.proto:
        _set_repaired(plan, pair, folded, holdout, {"repairs": []})
    return plan


def _set_repaired(plan: RepairPlan, pair: ModelPair, model, holdout: CalibrationSet, in_model: dict,
                  reading_lsb=1.0) -> None:
    """The repaired model into the plan: as a graph, as the file to deploy (checked), and in the provenance."""
    plan.repaired_model = model
    plan.repaired_file = repaired_model_file(pair, model, holdout.x)
    plan.in_model = {**in_model, "model": {"path": plan.repaired_file.name, "sha256": plan.repaired_file.sha256}}
    for key, value in (("input_pre_shim", input_pre_shim(model, reading_lsb)),
                       ("int8_input_changed", int8_input_change(pair, model))):
        if value is not None:
            plan.in_model[key] = value
    plan.fitted_on(plan.repaired_file.data, path=plan.repaired_file.name)


def _with_folded_temperature(pair: ModelPair, plan: RepairPlan, model):
    """``model`` with a kept temperature folded into its own Softmax (a model without one is returned as is)."""
    kept = {r.repair: r for r in plan.kept()}
    if "model_softmax" not in plan.provenance or "temperature" not in kept:
        return model
    return fold_temperature(model, find_model_softmax(pair), kept["temperature"].fitted["temperature_"])


def _after_model(pair, calib, holdout, repairs, target_far, anomaly_far, anomaly_boundary, window, result):
    """The after-model repairs on the repaired model's outputs; without labels, none (the plan says why)."""
    if repairs == () or calib.y is None or holdout.y is None:
        why = ("only in-model repairs were asked for" if repairs == () else
               "the calibration or holdout split has no labels: after-model repairs need them")
        return RepairPlan(task="classifier" if detect_task(pair) == "classifier" else "anomaly_scores",
                          repairs=[], provenance={"after_model": f"not fitted: {why}",
                                                  **_provenance(pair, calib, holdout, REPAIRED)})
    raw = tuple(int8_outputs(pair, d.x, model=result.model)[1] for d in (calib, holdout))
    plan = _fit_after(pair, calib, holdout, repairs, target_far, anomaly_far, anomaly_boundary, window, raw,
                      f"{REPAIRED} (integer program)", model=result.model)
    if plan.task == "classifier" and "model_softmax" not in plan.provenance:
        z = pair.int8.outputs[0].quant.dequantize(raw[1]).astype(np.float64)
        result.holdout["accuracy_with_after_model"] = float((calibrated_probs(plan.repairs, z).argmax(1) ==
                                                             holdout.y).mean())
    return plan


def _provenance(pair, calib, holdout, source) -> dict:
    return {"models": {k: {"path": str(m.path), "sha256": m.sha256} for k, m in
                       (("float", pair.float), ("int8", pair.int8))},
            "calibration": calib.summary(), "holdout": holdout.summary(), "int8_outputs_from": source}


def _fit_after(pair, calib, holdout, repairs, target_far, anomaly_far, anomaly_boundary, window, raw_outputs,
               source, model=None) -> RepairPlan:
    """``model``: the (repaired) int8 model the raw outputs came from, for the logits of a trailing Softmax."""
    task = detect_task(pair)
    n_classes = pair.float.outputs[0].shape[0] if task == "classifier" else None
    calib = check_fits(calib, pair, n_classes)
    holdout = check_fits(holdout, pair, n_classes)
    if holdout.y is None:
        raise DataError(f"{holdout.source} has no labels (y): the holdout judges the repairs, it needs labels")
    if calib.y is None:
        raise DataError(f"{calib.source} has no labels (y): fitting these repairs needs labels")
    if len(calib) < 2:
        raise DataError(f"{calib.source} has {len(calib)} sample(s): a calibration split needs at least 2")
    out_q = pair.int8.outputs[0].quant
    if raw_outputs is None:
        zc, qc = int8_outputs(pair, calib.x)
        zh, qh = int8_outputs(pair, holdout.x)
    else:
        qc, qh = (np.asarray(q, np.int64).reshape(len(d), -1) for q, d in zip(raw_outputs, (calib, holdout)))
        zc, zh = (out_q.dequantize(q).astype(np.float64) for q in (qc, qh))
    provenance = {**_provenance(pair, calib, holdout, source),
                  "int8_output_quant": out_q.to_dict(), "int8_output_name": pair.int8.outputs[0].name,
                  "num_classes": n_classes, "task": task}
    if task == "classifier":
        wanted = repairs or CLASSIFIER_REPAIRS
        sm = find_model_softmax(pair)
        if sm is not None:
            on_host = raw_outputs is None or model is not None  # a device's outputs carry no logits
            logits = tuple(int8_logits(pair, sm, d.x, model=model) for d in (calib, holdout)) if on_host else None
            qc = out_q.quantize(zc).astype(np.int64) if raw_outputs is None else qc
            entries = _classifier_model_softmax(sm, qc, calib.y, qh, holdout.y, logits, wanted, target_far)
            provenance["model_softmax"] = {"logits": sm.logits, "quant": sm.quant.to_dict(),
                                           "dequantize_node": sm.dequantize_node}
            return RepairPlan(task="classifier", repairs=entries, provenance=provenance)
        entries = _classifier(zc, calib.y, zh, qh, holdout.y, out_q, wanted, target_far)
        return RepairPlan(task="classifier", repairs=entries, provenance=provenance)
    if task in ("reconstruction", "score"):
        sc, sh = anomaly_scores(task, calib.x, zc), anomaly_scores(task, holdout.x, zh)
        recon = None
        if task == "reconstruction":  # the score the device computes, in integers, from its int8 input and output
            (ic, in_quant), (ih, _) = (model_input(pair, d.x, model) for d in (calib, holdout))
            qc, qh = (np.asarray(q).reshape(len(d), -1) for q, d in ((qc, calib), (qh, holdout)))
            recon = recon_score_params(pair, in_quant, ic, qc)
        if recon is not None:
            sc, sh = recon_scores(recon, ic, qc), recon_scores(recon, ih, qh)
            provenance["reconstruction_score"] = recon
        entries = _anomaly(sc, calib.y, sh, holdout.y, anomaly_far, anomaly_boundary, window,
                           recon["score_scale"] if recon else None)
        return RepairPlan(task="anomaly_stream" if anomaly_boundary == "window" else "anomaly_scores",
                          repairs=entries, provenance=provenance)
    raise DataError(f"no after-model repair applies to a model whose output has shape {list(pair.float.outputs[0].shape)}")


def _classifier(zc, yc, zh, qh, yh, out_q, wanted, target_far) -> list[PlanEntry]:
    entries = []
    is_prob = zc.min() >= 0 and np.allclose(zc.sum(axis=1), 1.0, atol=0.02)
    raw = M.nll(M.as_probabilities(zh), yh)
    best_nll, best_probs_float, best_probs_int = raw, M.as_probabilities(zh), None
    if is_prob:
        best_probs_int = qh  # the model's own int8 softmax output
    folds = cv_folds(CalibrationSet(x=zc, y=yc, source="calibration logits"), 3, "nll", seed=0)
    best_cv = [-M.nll(M.as_probabilities(zc[held]), yc[held]) for _, held in folds]  # per fold, higher is better
    for name in ("temperature", "vector_scaling"):
        if name not in wanted:
            continue
        if is_prob:
            rep = TemperatureScaling() if name == "temperature" else VectorScaling()
            entries.append(PlanEntry.not_fitted(rep, "the model outputs probabilities (Softmax inside): calibrate its "
                                                     "logits instead"))
            continue
        rep = (TemperatureScaling() if name == "temperature" else VectorScaling()).fit(zc, yc)
        logits_after = rep.apply(zh)
        p_after = M.softmax(logits_after)
        nll_after = M.nll(p_after, yh)
        if name == "temperature":
            integer = rep.integer_params(out_q.scale)
            p_int = rep.apply_int(qh, out_q.scale)
        else:
            integer = rep.integer_params(out_q.scale, out_q.zero_point)
            p_int = rep.apply_int(qh, out_q.scale, out_q.zero_point)
        make = TemperatureScaling if name == "temperature" else VectorScaling
        fold_cv = [-M.nll(M.softmax(make().fit(zc[train], yc[train]).apply(zc[held])), yc[held]) for train, held in folds]
        cv = cv_decision(best_cv, fold_cv)  # gain in −NLL over what is kept so far, fold by fold
        kept = cv["beats_noise"]
        metrics = {"nll_before": raw, "nll_after": nll_after,
                   "accuracy_before": float((zh.argmax(1) == yh).mean()),
                   "accuracy_after": float((p_after.argmax(1) == yh).mean()),
                   "ece_before": M.ece(M.as_probabilities(zh), yh), "ece_after": M.ece(p_after, yh)}
        reason = (f"cross-validated NLL gain {cv['mean_gain']:+.4f} ± {cv['standard_error']:.4f} over {len(folds)} "
                  f"calibration folds ({'beyond' if kept else 'within'} its noise); holdout NLL "
                  f"{best_nll:.4f} → {nll_after:.4f} (reported, not used to decide)")
        entries.append(PlanEntry.of(rep, integer, kept=kept, reason=reason, holdout={"metrics": metrics},
                                    int_agreement=agreement(p_after.argmax(1), p_int.argmax(1), WHY_ARGMAX[name]),
                                    cross_validation=cv))
        if kept:
            best_nll, best_probs_float, best_probs_int, best_cv = nll_after, p_after, p_int, fold_cv
    if "class_thresholds" in wanted:
        calib_probs = calibrated_probs(entries, zc)
        rep = ClassThresholds(target_far).fit(calib_probs, yc)
        dec_f = rep.apply(best_probs_float)
        if best_probs_int is None:  # no calibration kept: the shim runs the plain int8 softmax
            best_probs_int = fp.softmax_s8(qh, *fp.softmax_params(1.0, out_q.scale))
        dec_i = rep.apply_int(best_probs_int)
        rates = M.accept_reject_rates(dec_f, yh, zc.shape[1])
        entries.append(PlanEntry.of(rep, rep.integer_params(), kept=True,
                                    reason=f"fitted to a {target_far:.1%} false-accept rate per class",
                                    holdout={"rates": rates}, int_agreement=agreement(dec_f, dec_i, WHY_THRESHOLD)))
    return entries


def _classifier_model_softmax(sm, qc, yc, qh, yh, logits, wanted, target_far) -> list[PlanEntry]:
    """After-model repairs of a model that ends in its own Softmax (``repair.plan.model_softmax``): ``qc``/``qh`` are its
    int8 probabilities; ``logits`` the int8 logits feeding the Softmax on (calib, holdout), None when only the
    outputs are known (a device's). Temperature is judged on the int8 probabilities the folded Softmax gives."""
    entries = []
    probs_c, probs_h = qc, qh  # int8 probabilities the thresholds will see
    as_p = _int8_probabilities
    for name in ("temperature", "vector_scaling"):
        if name not in wanted:
            continue
        rep = TemperatureScaling() if name == "temperature" else VectorScaling()
        if name == "vector_scaling" or logits is None:
            why = ("the model ends in its own Softmax: a per-class affine would have to sit inside it (temperature "
                   "folds into the Softmax instead)" if name == "vector_scaling" else
                   "only the model's probabilities are known here (a device's outputs): fit the temperature with "
                   "`tmlrepair fit`, which folds it into the model's Softmax")
            entries.append(PlanEntry.not_fitted(rep, why))
            continue
        lc, lh = (sm.quant.dequantize(q).astype(np.float64) for q in logits)

        def folded(q_logits, temperature):
            i = temperature_params(sm, temperature)
            return fp.softmax_s8(q_logits, i["softmax_multiplier"], i["softmax_shift"],
                                 i["softmax_diff_min"]).astype(np.int64)

        folds = cv_folds(CalibrationSet(x=lc, y=yc, source="calibration logits"), 3, "nll", seed=0)
        cv = cv_decision([-M.nll(as_p(qc[held]), yc[held]) for _, held in folds],
                         [-M.nll(as_p(folded(logits[0][held], TemperatureScaling().fit(lc[train], yc[train])
                                             .temperature_)), yc[held]) for train, held in folds])
        rep.fit(lc, yc)
        integer = temperature_params(sm, rep.temperature_)
        after_c, after_h = (folded(q, rep.temperature_) for q in logits)
        nll_before, nll_after = M.nll(as_p(qh), yh), M.nll(as_p(after_h), yh)
        kept = cv["beats_noise"]
        metrics = {"nll_before": nll_before, "nll_after": nll_after,
                   "accuracy_before": float((qh.argmax(1) == yh).mean()),
                   "accuracy_after": float((after_h.argmax(1) == yh).mean()),
                   "ece_before": M.ece(as_p(qh), yh), "ece_after": M.ece(as_p(after_h), yh)}
        p_float = M.softmax(rep.apply(lh))
        reason = (f"cross-validated NLL gain of the int8 probabilities {cv['mean_gain']:+.4f} ± "
                  f"{cv['standard_error']:.4f} over {len(folds)} calibration folds; "
                  + (f"kept, folded into the model's Softmax (beta 1/T = {1 / rep.temperature_:.4g})" if kept else
                     "within its noise")
                  + f"; holdout NLL {nll_before:.4f} → {nll_after:.4f} (reported, not used to decide)")
        entries.append(PlanEntry.of(rep, integer, kept=kept, reason=reason, holdout={"metrics": metrics},
                                    int_agreement=agreement(p_float.argmax(1), after_h.argmax(1), WHY_ARGMAX[name]),
                                    cross_validation=cv))
        if kept:
            probs_c, probs_h = after_c, after_h
    if "class_thresholds" in wanted:
        rep = ClassThresholds(target_far).fit(as_p(probs_c), yc)
        dec_i = rep.apply_int(probs_h)
        dec_f = rep.apply(as_p(probs_h))
        rates = M.accept_reject_rates(dec_i, yh, qc.shape[1])
        entries.append(PlanEntry.of(rep, rep.integer_params(), kept=True,
                                    reason=f"fitted to a {target_far:.1%} false-accept rate per class on the model's "
                                           "own int8 probabilities", holdout={"rates": rates},
                                    int_agreement=agreement(dec_f, dec_i, WHY_THRESHOLD)))
    return entries


def _int8_probabilities(q: np.ndarray) -> np.ndarray:
    """int8 softmax outputs (scale 1/256, zero point −128) as probabilities, 0 floored at half a step."""
    return np.maximum(M.int8_probabilities(q), M.INT8_PROBABILITY_FLOOR)


def calibrated_probs(entries: list[PlanEntry], z: np.ndarray) -> np.ndarray:
    """Probabilities on ``z`` after the calibration repairs kept so far."""
    probs = M.as_probabilities(z)
    for e in entries:
        if e.kept and e.repair in ("temperature", "vector_scaling"):
            probs = M.softmax(e.to_repair().apply(z))
    return probs


def _anomaly(sc, yc, sh, yh, far, boundary, window, scale=None) -> list[PlanEntry]:
    """``scale``: the int16 scale the scores already come in (the device's integer reconstruction score)."""
    if boundary == "threshold":
        rep = ScoreThreshold(far, score_scale=scale).fit(sc, yc)
        alarms_f, alarms_i = rep.apply(sh), rep.apply_int(sh)
        start = 0
    elif boundary == "window":
        rep = WindowBoundary(window, far, score_scale=scale).fit(sc, yc)
        alarms_f, alarms_i = rep.apply(sh), rep.apply_int(sh)
        start = window
    else:
        raise DataError(f"anomaly boundary {boundary!r}: use 'threshold' or 'window'")
    rates = M.alarm_rates(alarms_f[start:], yh[start:])
    rates["auroc"] = M.auroc(sh, yh)
    check = M.target_check(alarms_f[start:], yh[start:], far)
    holdout = {"rates": rates, **({"target_check": check} if check else {})}
    return [PlanEntry.of(rep, rep.integer_params(), kept=True,
                         reason=f"fitted to a {far:.1%} false-alarm rate on the int8 model's own calibration scores",
                         holdout=holdout, int_agreement=agreement(alarms_f, alarms_i, WHY_SCORES),
                         warning=M.target_warning(check, "the holdout"))]
