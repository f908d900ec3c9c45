"""One fitted repair as a plan entry: state, C parameters, holdout effect, integer agreement."""

from __future__ import annotations

import numpy as np

from ..repairs import Repair

WHY_ARGMAX = {
    "temperature": "the int8 softmax outputs steps of 1/256: two classes within one step can tie or swap",
    "vector_scaling": "corrected logits are rounded back to int8 before the int8 softmax: classes within one step "
                      "of each other can swap",
}
WHY_THRESHOLD = "int8 probabilities lie on a 1/256 grid: a probability within one step of its threshold can fall " \
                "on the other side"
WHY_SCORES = "scores are quantized to int16 (and alpha² to 1/256) on the device: values within one step of the " \
             "boundary can fall on the other side"


def agreement(float_decisions, int_decisions, why: str) -> dict:
    """Share of samples where the integer reference decides as the float path does, the count that differ, and why."""
    a, b = np.asarray(float_decisions), np.asarray(int_decisions)
    differ = int((a != b).sum())
    d = {"share": float(1.0 - differ / len(a)) if len(a) else 1.0, "differ": differ, "n": int(len(a))}
    if differ:
        d["why"] = why
    return d


def plan_entry(repair: Repair, integer: dict, *, kept: bool, reason: str, holdout: dict | None = None,
               int_agreement: dict | None = None, warning: str | None = None) -> dict:
    d = repair.to_dict()
    d.update({"integer": integer, "kept": bool(kept), "reason": reason})
    if warning:
        d["warning"] = warning
    if holdout is not None:
        d["holdout"] = holdout
    if int_agreement is not None:
        d["int_agreement"] = int_agreement
    return d
