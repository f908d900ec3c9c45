"""One fitted repair as a plan entry (``PlanEntry``): state, C parameters, holdout effect, integer agreement."""

from __future__ import annotations

from dataclasses import dataclass, field

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


@dataclass
class PlanEntry:
    """One after-model repair in a plan: the repair (registry name, hyperparameters, fitted state), the C shim's
    integer parameters, and what fitting decided — kept or not and why, the holdout effect, the integer reference's
    agreement with the float path, the cross-validation behind a keep/drop, a warning. ``plan.json`` holds
    ``to_dict()``; keys this version does not know are carried through unchanged (``extra``), so a plan read and
    written again hashes the same."""

    repair: str
    params: dict
    fitted: dict
    integer: dict
    kept: bool
    reason: str
    holdout: dict | None = None
    int_agreement: dict | None = None
    cross_validation: dict | None = None
    warning: str | None = None
    extra: dict = field(default_factory=dict)

    @classmethod
    def of(cls, repair: Repair, integer: dict, *, kept: bool, reason: str, holdout: dict | None = None,
           int_agreement: dict | None = None, cross_validation: dict | None = None,
           warning: str | None = None) -> "PlanEntry":
        """The entry of a fitted ``repair``: the one constructor fitting uses."""
        d = repair.to_dict()
        return cls(d["repair"], d["params"], d["fitted"], integer, bool(kept), reason, holdout, int_agreement,
                   cross_validation, warning or None)

    @classmethod
    def not_fitted(cls, repair: Repair, reason: str) -> "PlanEntry":
        """The entry of a repair that was not fitted (it cannot apply to this model), saying why."""
        return cls(repair.name, repair.get_params(), {}, {}, False, reason)

    @classmethod
    def from_dict(cls, d: dict) -> "PlanEntry":
        """An entry of a plan.json already checked by ``untrusted.check_plan``."""
        known = {f for f in cls.__dataclass_fields__ if f != "extra"}
        return cls(d["repair"], d.get("params", {}), d.get("fitted", {}), d.get("integer", {}), bool(d.get("kept")),
                   d.get("reason", ""), d.get("holdout"), d.get("int_agreement"), d.get("cross_validation"),
                   d.get("warning") or None, {k: v for k, v in d.items() if k not in known})

    def to_dict(self) -> dict:
        d = {"repair": self.repair, "params": self.params, "fitted": self.fitted, "integer": self.integer,
             "kept": self.kept, "reason": self.reason, **self.extra}
        for key in ("holdout", "int_agreement", "cross_validation", "warning"):
            if getattr(self, key) is not None:
                d[key] = getattr(self, key)
        return d

    def to_repair(self) -> Repair:
        """The repair object again (``repair.repairs.from_dict``), to apply it."""
        from ..repairs import from_dict

        return from_dict(self.to_dict())
