"""One fitted repair as a plan entry: state, C parameters, holdout effect, integer agreement."""

from __future__ import annotations

import numpy as np

from .repairs import Repair


def agreement(float_decisions, int_decisions, why: str) -> dict:
    """Share of samples where the integer reference decides as the float path does, the count that differ, and why."""
    a, b = np.asarray(float_decisions), np.asarray(int_decisions)
    differ = int((a != b).sum())
    d = {"share": float(1.0 - differ / len(a)) if len(a) else 1.0, "differ": differ, "n": int(len(a))}
    if differ:
        d["why"] = why
    return d


def plan_entry(repair: Repair, integer: dict, *, kept: bool, reason: str, holdout: dict | None = None,
               int_agreement: dict | None = None) -> dict:
    d = repair.to_dict()
    d.update({"integer": integer, "kept": bool(kept), "reason": reason})
    if holdout is not None:
        d["holdout"] = holdout
    if int_agreement is not None:
        d["int_agreement"] = int_agreement
    return d
