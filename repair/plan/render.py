"""RepairPlan as text: one block per repair, what was fitted and what it did on the holdout."""

from __future__ import annotations

from .entry import PlanEntry
from .plan import RepairPlan


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, list):
        return "[" + ", ".join(_fmt(x) for x in v[:12]) + (", …" if len(v) > 12 else "") + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k}: {_fmt(x)}" for k, x in v.items()) + "}"
    return str(v)


def render_plan(plan: RepairPlan) -> str:
    lines = [f"tmlrepair plan ({plan.task}), sha256 {plan.sha256()[:16]}"]
    if plan.in_model:
        im = plan.in_model
        lines.append(f"in the model ({im['model']['path']}, sha256 {im['model']['sha256'][:16]}):")
        for r in im["repairs"]:
            lines.append(f"- {r['repair']}: {'KEPT' if r['kept'] else 'not kept'} — {r['reason']}")
        c = im.get("int8_input_changed")
        if c:
            lines.append(f"  NOTE: THE INT8 INPUT'S QUANTIZATION CHANGED: scale {c['scale_before']:.9g} → "
                         f"{c['scale_after']:.9g}, zero point {c['zero_point_before']} → {c['zero_point_after']}; "
                         f"{c['why']}")
        if "model_softmax" in plan.provenance and any(r.repair == "temperature" for r in plan.kept()):
            lines.append("- temperature (after-model repair below): folded into the model's own Softmax")
        lines.append("after the model:" + (f" {plan.provenance['after_model']}"
                                            if "after_model" in plan.provenance else ""))
    for r in plan.repairs:
        state = "KEPT" if r.kept else "not kept"
        lines.append(f"- {r.repair}: {state} — {r.reason}")
        if r.warning:
            lines.append(f"    WARNING: {r.warning}")
        lines.append(f"    fitted: {_fmt(r.fitted)}")
        for split, metrics in (r.holdout or {}).items():
            lines.append(f"    {split}: {_fmt(metrics)}")
        ag = r.int_agreement
        if ag:
            lines.append(f"    integer reference = float on {ag['share']:.2%} of {ag['n']} holdout decisions "
                         f"({ag['differ']} differ{': ' + ag['why'] if ag.get('why') else ''})")
    if plan.task == "keyword_stream" and plan.repairs and "holdout" in (plan.repairs[0].holdout or {}):
        lines += stream_comparison(plan.repairs[0])
    return "\n".join(lines) + "\n"


def stream_comparison(entry: PlanEntry) -> list[str]:
    """The fitted recognizer next to TFLM's defaults and the fixed 0.95 rule on the holdout stream, as a table."""
    h = entry.holdout
    rows = [("tmlrepair (fitted)", entry.integer, h["holdout"]),
            *((name, b["params"], b) for name, b in h["baselines_on_holdout"].items())]
    out = ["", "holdout stream: | rule | settings | false accepts/hour | false-reject rate | median latency | "
               "false accepts by utterance label |"]
    for name, params, r in rows:
        latency = f"{r['median_latency_ms']:.0f} ms" if r.get("median_latency_ms") is not None else "–"
        out.append(f"  | {name} | {_fmt(params)} | {r['fa_per_hour']:.1f} | {r['false_reject_rate']:.1%} | "
                   f"{latency} | {_fmt(r['false_accepts_by_label']) if r['false_accepts_by_label'] else '–'} |")
    return out
