"""RepairPlan: the fitted repairs, in order, with what they did on the holdout and why.

JSON schema ``tmlrepair.plan/1``: everything needed to emit C without the models.

``schema``      "tmlrepair.plan/1"
``task``        "classifier" | "anomaly_scores" | "anomaly_stream" | "keyword_stream"
``repairs[]``   each: ``repair`` (registry name), ``params`` (hyperparameters), ``fitted``
                (learned state), ``integer`` (the C shim's parameters), ``kept`` (bool),
                ``reason`` (why kept or not), ``holdout`` (metrics before/after, or the rates
                reached), ``int_agreement`` (share of holdout decisions where the integer
                reference equals the float one, and the count that differ)
``provenance``  inputs (paths, sha256), settings, tool version
``in_model``    the in-model repairs behind ``repaired_int8.onnx`` / ``.tflite`` (its sha256, each repair with its per-layer
                decisions and holdout effect); empty when the plan repairs after the model only

``sha256()`` hashes the canonical JSON; the emitted C carries it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from .. import __version__
from ..errors import DataError
from ..jsonio import dumps_stable
from .entry import PlanEntry

SCHEMA = "tmlrepair.plan/1"


@dataclass
class RepairPlan:
    task: str
    repairs: list[PlanEntry] = field(default_factory=list)
    provenance: dict = field(default_factory=dict)
    in_model: dict = field(default_factory=dict)
    schema: str = SCHEMA
    #: the repaired int8 model (onnx.ModelProto) when in-model repairs ran; written beside plan.json, not in it
    repaired_model: object = field(default=None, repr=False, compare=False)
    #: that model as the file to deploy (``model_file.ModelFile``: repaired_int8.onnx or repaired_int8.tflite)
    repaired_file: object = field(default=None, repr=False, compare=False)
    #: the folder the plan was read from: model paths in the plan that are relative are relative to it
    origin: Path | None = field(default=None, repr=False, compare=False)

    def kept(self) -> list[PlanEntry]:
        return [r for r in self.repairs if r.kept]

    def to_json(self) -> str:
        d = {"schema": self.schema, "task": self.task, "repairs": [r.to_dict() for r in self.repairs],
             "provenance": {**self.provenance, "tmlrepair_version": __version__}, "in_model": self.in_model}
        return dumps_stable(d)

    def sha256(self) -> str:
        return hashlib.sha256(self.to_json().encode()).hexdigest()

    @classmethod
    def from_json(cls, path: str | Path) -> "RepairPlan":
        try:
            d = json.loads(Path(path).read_text())
        except (OSError, ValueError) as exc:
            raise DataError(f"{path} is not a readable plan ({type(exc).__name__}): give a plan.json written by tmlrepair") \
                from None
        if not isinstance(d, dict) or d.get("schema") != SCHEMA:
            schema = d.get("schema") if isinstance(d, dict) else None
            raise DataError(f"{path}: plan schema {schema!r} is not {SCHEMA!r}; refit with this tmlrepair")
        from .untrusted import check_plan

        check_plan(d, str(path))
        return cls(task=d["task"], repairs=[PlanEntry.from_dict(r) for r in d["repairs"]],
                   provenance=d.get("provenance", {}),
                   in_model=d.get("in_model", {}), origin=Path(path).resolve().parent)

    def fitted_on(self, model_bytes: bytes, path: str = "repaired_int8.onnx", original: dict | None = None) -> None:
        """Record that the after-model repairs were fitted on ``model_bytes`` (the repaired int8 model, written as
        ``path`` beside plan.json): validate, check and calibrate --resume then use it by default. ``original``:
        the int8 model it was repaired from (default: the one the provenance names now)."""
        import hashlib

        models = self.provenance.setdefault("models", {})
        original = original or models.get("int8")
        models["int8"] = {"path": path, "sha256": hashlib.sha256(model_bytes).hexdigest(),
                          **({"repaired_from": original} if original else {})}
