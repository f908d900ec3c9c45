"""A plan's integer pipeline, as the device runs it: the single source of expected device outputs.

Classifier plans: int8 logits → (per-class affine, if vector scaling was kept) → int8 softmax
(temperature folded in, if kept) → (per-class threshold decision, if kept).
Anomaly plans: int16 scores → static threshold, or the sliding-window boundary; for an autoencoder the int16
score is itself computed from the model's int8 input and output (``fixedpoint_anomaly.recon_score_s16``).

Each stage calls the bit-exact twins in ``repair.fixedpoint``; ``emit`` uses this to write the
self-test's expected outputs, and device validation compares the board against it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import fixedpoint as fp
from .. import fixedpoint_anomaly as fpa
from ..errors import DataError
from .plan import RepairPlan


@dataclass(frozen=True)
class ClassifierShim:
    """Integer parameters of the classifier chain (see module docstring)."""

    num_classes: int
    affine: dict | None  # multipliers, shifts, offsets, input_zero_point, output_zero_point
    softmax: tuple[int, int, int] | None  # multiplier, shift, diff_min; None: the model ends in its own Softmax
    thresholds: list[int] | None

    def run(self, q_logits: np.ndarray) -> dict[str, np.ndarray]:
        x = np.asarray(q_logits, np.int64).reshape(-1, self.num_classes)
        if self.affine is not None:
            a = self.affine
            x = fp.class_scale_offset_s8(x, a["input_zero_point"], a["multipliers"], a["shifts"], a["offsets"],
                                         a["output_zero_point"]).astype(np.int64)
        probs = x.astype(np.int8) if self.softmax is None else fp.softmax_s8(x, *self.softmax)
        out = {"probs": probs}
        if self.thresholds is not None:
            out["decision"] = fp.threshold_decide(probs, self.thresholds)
        return out


@dataclass(frozen=True)
class AnomalyShim:
    kind: str  # "threshold" or "window"
    score_scale: float
    threshold_q: int | None = None
    window: int | None = None
    alpha2_q: int | None = None
    alpha2_frac_bits: int | None = None
    recon: dict | None = None  # the reconstruction score's integer parameters (an autoencoder), else None

    def scores(self, q_in: np.ndarray, q_out: np.ndarray) -> np.ndarray:
        """The int16 scores the device computes from its model's int8 inputs and outputs (an autoencoder)."""
        if self.recon is None:
            raise DataError("the plan computes no reconstruction score (not an autoencoder's plan)")
        return fpa.recon_score_s16(q_in, q_out, self.recon)

    def run(self, q_scores: np.ndarray) -> dict[str, np.ndarray]:
        q = np.asarray(q_scores, np.int64)
        if self.kind == "threshold":
            return {"alarm": (q > self.threshold_q).astype(np.int8)}
        return {"alarm": fpa.window_boundary_alarms(q, self.window, self.alpha2_q, self.alpha2_frac_bits)}


@dataclass(frozen=True)
class StreamShim:
    """The keyword recognizer (TFLM RecognizeCommands, ``tmlr_recognizer_s8``) over a stream of int8 posteriors."""

    num_classes: int
    window_ms: int
    threshold: int
    suppression_ms: int
    min_count: int
    silence_class: int
    capacity: int  # the C ring: results one window holds
    keyword: int

    def __post_init__(self):
        if not 1 <= self.min_count <= self.capacity:
            raise DataError(f"the recognizer's minimum count {self.min_count} must be 1..its ring capacity "
                            f"{self.capacity}: refit the plan")

    def run(self, values: np.ndarray) -> dict[str, np.ndarray]:
        """``values``: rows of K int8 posteriors then the time in ms. Per step, as the C answers: the top label
        (−1: no decision), its average score (0: no decision), and whether a new command fired."""
        v = np.asarray(values, np.int64).reshape(-1, self.num_classes + 1)
        fired, label, score = fp.recognize_commands(v[:, :-1], v[:, -1], self.window_ms, self.threshold,
                                                    self.suppression_ms, self.min_count, self.silence_class)
        return {"label": label, "score": np.where(label >= 0, score, 0), "fired": fired.astype(np.int8)}


def shim_from_plan(plan: RepairPlan) -> ClassifierShim | AnomalyShim | StreamShim:
    kept = {r.repair: r for r in plan.kept()}
    if plan.task == "keyword_stream":
        if "stream_recognizer" not in kept:
            raise DataError("the stream plan keeps no recognizer: nothing to emit")
        i, p = kept["stream_recognizer"].integer, plan.provenance
        return StreamShim(p["num_classes"], i["average_window_ms"], i["detection_threshold"], i["suppression_ms"],
                          i["minimum_count"], p["silence_class"], p["ring_capacity"], p["keyword"])
    if plan.task == "classifier" and plan.provenance.get("model_softmax"):
        # the model computes its probabilities itself (a kept temperature is folded into its Softmax): the shim
        # chain is the thresholds on those probabilities
        if "class_thresholds" not in kept:
            raise DataError("the model ends in its own Softmax and the plan keeps no thresholds: nothing runs after "
                            "the model (a kept temperature is in repaired_int8.onnx)")
        thresholds = kept["class_thresholds"].integer["thresholds_q"]
        return ClassifierShim(len(thresholds), None, None, thresholds)
    if plan.task == "classifier":
        quant = plan.provenance.get("int8_output_quant")
        if quant is None:
            raise DataError("the plan lacks the int8 output quantization (provenance.int8_output_quant): refit it")
        if "vector_scaling" in kept:
            i = kept["vector_scaling"].integer
            affine = {k: i[k] for k in ("multipliers", "shifts", "offsets", "input_zero_point", "output_zero_point")}
            softmax = (i["softmax_multiplier"], i["softmax_shift"], i["softmax_diff_min"])
            k = len(i["multipliers"])
        else:
            affine = None
            if "temperature" in kept:
                i = kept["temperature"].integer
                softmax = (i["softmax_multiplier"], i["softmax_shift"], i["softmax_diff_min"])
            else:
                softmax = fp.softmax_params(1.0, quant["scale"])
            k = None
        thresholds = kept["class_thresholds"].integer["thresholds_q"] if "class_thresholds" in kept else None
        k = k or (len(thresholds) if thresholds else plan.provenance.get("num_classes"))
        if not k:
            raise DataError("the plan does not say how many classes the model has: refit it")
        return ClassifierShim(int(k), affine, tuple(int(v) for v in softmax), thresholds)
    recon = plan.provenance.get("reconstruction_score")
    if "score_threshold" in kept:
        i = kept["score_threshold"].integer
        return AnomalyShim("threshold", i["score_scale"], threshold_q=i["threshold_q"], recon=recon)
    if "window_boundary" in kept:
        i = kept["window_boundary"].integer
        return AnomalyShim("window", i["value_scale"], window=i["window"], alpha2_q=i["alpha2_q"],
                           alpha2_frac_bits=i["alpha2_frac_bits"], recon=recon)
    raise DataError("the plan keeps no repair that runs on the device: nothing to emit")
