"""check: a regression gate after requantization, for CI.

Measures the new int8 model against the float model on the holdout (``measure_drift``)
and compares with a saved baseline drift report, check by check:

* accuracy and top-1 agreement (classifiers), AUROC (anomaly scores) — drop in points;
* every layer's SQNR, paired by float tensor name (the float model is the same, so its
  names are stable across requantizations) — each layer that lost more than the tolerance
  is named, worst first;
* calibration: NLL and ECE increase;
* with ``plan``, the plan's repairs on the new model: does the anomaly boundary still hit
  its false-alarm target, do the class thresholds still hold theirs (else: refit, and by
  how much it misses), does temperature scaling still lower NLL.

Exit codes (CLI): 0 all checks pass, 1 a regression, 2 bad input.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np

from .. import metrics as M
from ..data import CalibrationSet
from ..drift import DriftReport, measure_drift
from ..errors import DataError
from ..models import ModelPair
from ..plan.plan import RepairPlan


@dataclass
class Tolerances:
    """How much worse than the baseline is still a pass. Read from ``[tool.tmlrepair.check]`` too."""

    max_accuracy_drop: float = 1.0  # points
    max_agreement_drop: float = 2.0  # points of top-1 agreement with the float model
    max_auroc_drop: float = 0.02
    max_sqnr_drop: float = 3.0  # dB, per layer
    max_nll_increase: float = 0.05
    max_ece_increase: float = 0.02
    max_far_miss: float = 0.03  # |false-alarm or false-accept rate − target|, as a rate

    @classmethod
    def from_pyproject(cls, path: str | Path) -> "Tolerances":
        try:
            import tomllib
        except ModuleNotFoundError:  # Python 3.10
            import tomli as tomllib
        try:
            table = tomllib.loads(Path(path).read_text()).get("tool", {}).get("tmlrepair", {}).get("check", {})
        except (OSError, ValueError) as exc:
            raise DataError(f"{path} cannot be read as TOML ({type(exc).__name__})") from None
        known = {f.name for f in fields(cls)}
        unknown = set(table) - known
        if unknown:
            raise DataError(f"{path}: unknown [tool.tmlrepair.check] key(s) {sorted(unknown)}; known: {sorted(known)}")
        return cls(**{k: float(v) for k, v in table.items()})


@dataclass
class Check:
    name: str
    passed: bool
    measured: float | None
    baseline: float | None
    limit: str
    message: str
    severity: float = 0.0  # how far past the tolerance, for worst-first ordering


@dataclass
class CheckResult:
    checks: list[Check] = field(default_factory=list)
    report: DriftReport | None = None

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    def failures(self) -> list[Check]:
        return sorted((c for c in self.checks if not c.passed), key=lambda c: -c.severity)

    def to_dict(self) -> dict:
        return {"passed": self.passed, "checks": [asdict(c) for c in self.checks]}


def _drop_check(name: str, base: float | None, new: float | None, tol: float, scale: float, unit: str) -> Check | None:
    if base is None or new is None:
        return None
    drop = (base - new) * scale
    ok = drop <= tol
    msg = f"{name}: {base * scale:.2f} → {new * scale:.2f}{unit} (drop {drop:.2f}{unit}, tolerance {tol:g}{unit})"
    return Check(name, ok, new, base, f"drop ≤ {tol:g}{unit}", msg, max(0.0, drop - tol) / max(tol, 1e-9))


def _rise_check(name: str, base: float | None, new: float | None, tol: float) -> Check | None:
    if base is None or new is None:
        return None
    rise = new - base
    ok = rise <= tol
    return Check(name, ok, new, base, f"increase ≤ {tol:g}",
                 f"{name}: {base:.4f} → {new:.4f} (increase {rise:+.4f}, tolerance {tol:g})",
                 max(0.0, rise - tol) / max(tol, 1e-9))


def run_check(baseline: DriftReport, pair: ModelPair, data: CalibrationSet, tol: Tolerances,
              plan: RepairPlan | None = None, batch_size: int = 256, check_weights: bool = True) -> CheckResult:
    base_data = baseline.provenance.get("data", {})
    if base_data.get("sha256") and base_data["sha256"] != data.sha256:
        raise DataError(f"the baseline was measured on other data ({base_data.get('source')}, sha256 "
                        f"{base_data['sha256'][:12]}) than {data.source} ({data.sha256[:12]}): compare on the same set")
    base_float = baseline.provenance.get("models", {}).get("float", {}).get("sha256")
    if base_float and base_float != pair.float.sha256:
        raise DataError(f"the baseline's float model (sha256 {base_float[:12]}) is not {pair.float.path} "
                        f"({pair.float.sha256[:12]}): pass the float model the baseline was measured with")
    factors = None  # the plan's repaired (equalized) model: its equalized tensors compared in float units
    if plan is not None and plan.in_model.get("model", {}).get("sha256") == pair.int8.sha256:
        factors = plan.in_model.get("equalized") or None
    report, outputs = measure_drift(pair, data, batch_size=batch_size, return_outputs=True,
                                    check_weights=check_weights, channel_factors=factors)
    result = CheckResult(report=report)
    bo, no = baseline.outputs[0], report.outputs[0]
    for c in (_drop_check("accuracy", bo.get("accuracy_int8"), no.get("accuracy_int8"), tol.max_accuracy_drop, 100,
                          " pts"),
              _drop_check("top-1 agreement with float", bo.get("top1_agreement"), no.get("top1_agreement"),
                          tol.max_agreement_drop, 100, " pts"),
              _drop_check("AUROC", bo.get("auroc_int8"), no.get("auroc_int8"), tol.max_auroc_drop, 1, ""),
              _rise_check("NLL", bo.get("nll_int8"), no.get("nll_int8"), tol.max_nll_increase),
              _rise_check("ECE", bo.get("ece_int8"), no.get("ece_int8"), tol.max_ece_increase)):
        if c is not None:
            result.checks.append(c)
    result.checks.extend(_layer_checks(baseline, report, tol))
    if plan is not None:
        result.checks.extend(_plan_checks(plan, report.outputs[0]["task"], outputs["int8"], data, tol))
    return result


def _layer_checks(baseline: DriftReport, report: DriftReport, tol: Tolerances) -> list[Check]:
    base = {t["float_name"]: t for t in baseline.tensors}
    checks = []
    for t in report.tensors:
        b = base.get(t["float_name"])
        if b is None:
            continue
        drop = b["sqnr_db"] - t["sqnr_db"]
        ok = drop <= tol.max_sqnr_drop
        checks.append(Check(f"SQNR {t['float_name']}", ok, t["sqnr_db"], b["sqnr_db"], f"drop ≤ {tol.max_sqnr_drop:g} dB",
                            f"layer {t['float_name']!r} ({t['op']}): SQNR {b['sqnr_db']:.2f} → {t['sqnr_db']:.2f} dB "
                            f"(lost {drop:.2f} dB, tolerance {tol.max_sqnr_drop:g} dB)",
                            max(0.0, drop - tol.max_sqnr_drop) / tol.max_sqnr_drop))
    missing = sorted(set(base) - {t["float_name"] for t in report.tensors})
    if missing:
        checks.append(Check("tensors paired", False, float(len(report.tensors)), float(len(baseline.tensors)),
                            "every baseline tensor paired",
                            f"{len(missing)} baseline tensor(s) no longer pair, e.g. {missing[0]!r}", 1.0))
    return checks


def _plan_checks(plan: RepairPlan, task: str, int8_out: np.ndarray, data: CalibrationSet,
                 tol: Tolerances) -> list[Check]:
    """The plan's repairs on the new model; ``int8_out`` is what drift collected: logits, or anomaly scores."""
    from ..plan.fit import calibrated_probs

    if data.y is None:
        raise DataError(f"{data.source} has no labels: checking the plan's repairs needs them")
    z = np.asarray(int8_out, np.float64)
    checks = []
    for entry in plan.kept():
        rep = entry.to_repair()
        name = entry.repair
        if name in ("score_threshold", "window_boundary"):
            if task not in ("reconstruction", "score"):
                raise DataError(f"the plan's {name} needs anomaly scores, but the model is a {task}")
            alarms = rep.apply(z)
            start = rep.window if name == "window_boundary" else 0
            far = M.alarm_rates(alarms[start:], data.y[start:])["false_alarm_rate"]
            target = rep.target_far
            miss = far - target
            ok = abs(miss) <= tol.max_far_miss
            msg = (f"{name}: false-alarm rate {far:.1%} vs target {target:.1%}"
                   + ("" if ok else f" — misses by {100 * miss:+.1f} points: refit it on the new model's scores"))
            checks.append(Check(f"plan {name}", ok, far, target, f"|FAR − target| ≤ {tol.max_far_miss:g}", msg,
                                max(0.0, abs(miss) - tol.max_far_miss) / tol.max_far_miss))
        elif name == "class_thresholds":
            probs = calibrated_probs(plan.kept(), z)
            far = M.accept_reject_rates(rep.apply(probs), data.y, probs.shape[1])["far_macro"]
            miss = far - rep.target_far
            ok = miss <= tol.max_far_miss
            msg = (f"class_thresholds: macro false-accept rate {far:.2%} vs target {rep.target_far:.2%}"
                   + ("" if ok else f" — misses by {100 * miss:+.2f} points: refit it"))
            checks.append(Check("plan class_thresholds", ok, far, rep.target_far,
                                f"FAR − target ≤ {tol.max_far_miss:g}", msg, max(0.0, miss - tol.max_far_miss)))
        elif name in ("temperature", "vector_scaling"):
            before = M.nll(M.as_probabilities(z), data.y)
            after = M.nll(M.softmax(rep.apply(z)), data.y)
            ok = after <= before
            checks.append(Check(f"plan {name}", ok, after, before, "NLL not worse than without it",
                                f"{name}: NLL {before:.4f} without → {after:.4f} with"
                                + ("" if ok else " — it now hurts: refit it"), 0.0 if ok else after - before))
    return checks


def to_junit(result: CheckResult, suite: str = "tmlrepair.check") -> str:
    """JUnit XML: one test case per check; a failure carries the message with its numbers."""
    from xml.sax.saxutils import quoteattr

    fails = sum(not c.passed for c in result.checks)
    lines = ['<?xml version="1.0" encoding="UTF-8"?>',
             f'<testsuite name={quoteattr(suite)} tests="{len(result.checks)}" failures="{fails}" errors="0">']
    for c in result.checks:
        props = (f'<properties><property name="measured" value={quoteattr(_num(c.measured))}/>'
                 f'<property name="baseline" value={quoteattr(_num(c.baseline))}/>'
                 f'<property name="limit" value={quoteattr(c.limit)}/></properties>')
        if c.passed:
            lines.append(f'  <testcase classname={quoteattr(suite)} name={quoteattr(c.name)}>{props}'
                         f'<system-out>{_esc(c.message)}</system-out></testcase>')
        else:
            lines.append(f'  <testcase classname={quoteattr(suite)} name={quoteattr(c.name)}>{props}'
                         f'<failure message={quoteattr(c.message)}>{_esc(c.message)}</failure></testcase>')
    lines.append("</testsuite>")
    return "\n".join(lines) + "\n"


def _num(v) -> str:
    return "" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{v:.6g}"


def _esc(s: str) -> str:
    from xml.sax.saxutils import escape

    return escape(s)


def render_summary(result: CheckResult, markdown: bool = False) -> str:
    fails = result.failures()
    head = ("PASS" if result.passed else f"FAIL: {len(fails)} of {len(result.checks)} checks regressed")
    if markdown:
        md = [f"## tmlrepair check: {head}", ""]
        if fails:
            md += ["| check | what happened |", "|---|---|"] + [f"| {c.name} | {c.message} |" for c in fails]
        md += ["", f"<details><summary>all {len(result.checks)} checks</summary>", "",
               "| check | pass | message |", "|---|---|---|"]
        md += [f"| {c.name} | {'yes' if c.passed else '**no**'} | {c.message} |" for c in result.checks]
        md += ["", "</details>"]
        return "\n".join(md) + "\n"
    lines = [f"tmlrepair check: {head}"]
    lines += [f"  FAIL {c.message}" for c in fails]
    passed = [c for c in result.checks if c.passed]
    lines.append(f"  ({len(passed)} checks passed"
                 + (f"; largest SQNR loss among them: {_largest_loss(passed)}" if passed else "") + ")")
    return "\n".join(lines) + "\n"


def _largest_loss(passed: list[Check]) -> str:
    sq = [c for c in passed if c.name.startswith("SQNR ") and c.measured is not None and c.baseline is not None]
    if not sq:
        return "n/a"
    c = max(sq, key=lambda c: c.baseline - c.measured)
    return f"{c.name[5:]} lost {c.baseline - c.measured:.2f} dB"

