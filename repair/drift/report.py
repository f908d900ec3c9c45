"""DriftReport: what measure_drift found, as plain data with a versioned JSON form.

JSON schema ``tmlrepair.drift/1`` (keys are stable; new keys may be added):

``schema``      "tmlrepair.drift/1"
``pairing``     {strategy, quantized_total, paired, coverage, weight_mismatches}
``tensors``     list in topological order, one per paired quantized tensor:
                order, float_name, int8_name, op, node, shape, paired_by,
                weight_cosine (float vs dequantized int8 weights of the layer), scale,
                zero_point, dtype, sqnr_db, cosine, mae, max_abs_err, saturation,
                elements, float_range, int8_range, channel_mean_error
``unmatched``   int8 quantized tensors not paired: int8_name, reason
``outputs``     one per model output: float_name, int8_name, task, sqnr_db, cosine,
                max_abs_err, n, and by task —
                classifier: top1_agreement, kl_divergence, and with labels
                accuracy_float, accuracy_int8, nll_float, nll_int8, ece_float,
                ece_int8, ece_*_ci95 [low, high], reliability_*, confusion_*;
                reconstruction/score: score_mean_float, score_mean_int8,
                score_shift_rel, score_shift_basis, score_sqnr_db, and with both
                labels auroc_float, auroc_int8
``provenance``  models (paths, sha256, I/O, ops), data (source, n, sha256), settings
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from ..errors import DataError
from ..fields import Fields
from ..jsonio import dumps_stable

SCHEMA = "tmlrepair.drift/1"


@dataclass
class DriftReport:
    schema: str
    tensors: list[dict]
    unmatched: list[dict]
    outputs: list[dict]
    pairing: dict
    provenance: dict

    def worst(self, n: int | None = None) -> list[dict]:
        """Paired tensors, lowest SQNR first."""
        ranked = sorted(self.tensors, key=lambda t: t["sqnr_db"])
        return ranked if n is None else ranked[:n]

    def to_dict(self) -> dict:
        return asdict(self)

    def to_json(self) -> str:
        """Stable JSON: sorted keys; a non-finite number (never expected) becomes null, not NaN."""
        return dumps_stable(self.to_dict())

    @classmethod
    def from_dict(cls, d: dict, source: str = "the drift report") -> "DriftReport":
        if not isinstance(d, dict) or d.get("schema") != SCHEMA:
            schema = d.get("schema") if isinstance(d, dict) else None
            raise DataError(f"report schema {schema!r} is not {SCHEMA!r}: regenerate it with this tmlrepair")
        check_drift_report(d, source)
        return cls(**{k: d[k] for k in ("schema", "tensors", "unmatched", "outputs", "pairing", "provenance")})

    @classmethod
    def from_json(cls, path: str | Path) -> "DriftReport":
        try:
            d = json.loads(Path(path).read_text())
        except (OSError, ValueError) as exc:
            raise DataError(f"{path} is not a readable JSON report ({type(exc).__name__})") from None
        return cls.from_dict(d, str(path))


def check_drift_report(d, source: str) -> dict:
    """``d`` (a parsed drift report) checked where ``check`` reads it; returns it."""
    doc = Fields(source)
    d = doc.obj(d, "the report")
    for part in ("tensors", "unmatched", "outputs"):
        if not isinstance(d.get(part), list):
            doc.fail(part, "expected a list")
    for part in ("pairing", "provenance"):
        doc.obj(d.get(part), part)
    for n, t in enumerate(d["tensors"]):
        t = doc.obj(t, f"tensors[{n}]")
        doc.text(t.get("float_name"), f"tensors[{n}].float_name")
        doc.number(t.get("sqnr_db"), f"tensors[{n}].sqnr_db")
    if not d["outputs"]:
        doc.fail("outputs", "the report has no outputs")
    for n, o in enumerate(d["outputs"]):
        o = doc.obj(o, f"outputs[{n}]")
        for key in ("accuracy_int8", "top1_agreement", "auroc_int8", "nll_int8", "ece_int8"):
            if o.get(key) is not None:
                doc.number(o[key], f"outputs[{n}].{key}")
    return d
