"""What a model's output is: a classifier's scores, a reconstruction of its input, an anomaly score, or a tensor;
and the anomaly score per sample. Every stage that judges outputs (drift, repairs, plan, device) asks here."""

from __future__ import annotations

import math

import numpy as np

from .pair import ModelPair


def detect_task(pair: ModelPair) -> str:
    """classifier (K ≥ 2 outputs per sample), reconstruction (output shape = input shape), score, or tensor."""
    out, inp = pair.float.outputs[0].shape, pair.float.inputs[0].shape
    if out == inp and len(out) >= 1:
        return "reconstruction"
    size = math.prod(d for d in out if isinstance(d, int)) if out else 1
    if size == 1:
        return "score"
    if len(out) == 1:
        return "classifier"
    return "tensor"


def anomaly_scores(task: str, x: np.ndarray, out: np.ndarray) -> np.ndarray:
    """Anomaly score per sample: mean squared reconstruction error, or the model's scalar output."""
    if task == "reconstruction":
        return ((x.astype(np.float64) - out.astype(np.float64)) ** 2).reshape(len(x), -1).mean(axis=1)
    return out.reshape(len(out), -1)[:, 0].astype(np.float64)
