"""The report of ``tmlrepair fit``: holdout metrics before and after, the gap recovered, every repair's decision.

JSON schema ``tmlrepair.fit-report/1``:

``holdout``     metric ("accuracy" | "auroc" | "sqnr"), its value for float, int8 and the repaired model,
                ``gap_recovered`` = (repaired − int8) / (float − int8) (null when int8 loses nothing), output
                SQNR against the float model before and after, and for classifiers the accuracy with the
                after-model repairs too
``in_model``    each in-model repair: kept, why, holdout before/after, one row per layer/activation
``after_model`` the plan's after-model entries (``plan.json`` holds the same)
``models``      float, int8 and repaired model: path and sha256
"""

from __future__ import annotations

import html

from ..jsonio import dumps_stable
from .plan import RepairPlan

SCHEMA = "tmlrepair.fit-report/1"


def fit_report(plan: RepairPlan) -> dict:
    models = dict(plan.provenance.get("models", {}))
    if "repaired_from" in models.get("int8", {}):  # the plan names the repaired model it was fitted on
        models["int8"] = models["int8"]["repaired_from"]
    if plan.in_model:
        models["repaired"] = plan.in_model["model"]
    return {"schema": SCHEMA, "task": plan.task, "holdout": plan.in_model.get("holdout", {}),
            "in_model": plan.in_model.get("repairs", []), "after_model": [r.to_dict() for r in plan.repairs], "models": models,
            "after_model_note": plan.provenance.get("after_model", "")}


def report_json(report: dict) -> str:
    return dumps_stable(report)


def _value(metric: str, v) -> str:
    if v is None:
        return "–"
    if metric == "sqnr":
        return "∞" if v == float("inf") else f"{v:.2f} dB"
    return f"{100 * v:.2f}%" if metric == "accuracy" else f"{v:.4f}"


def summary_rows(report: dict) -> list[tuple[str, str, str]]:
    """(what, metric value, output SQNR) rows of the before/after table."""
    h = report["holdout"]
    m = h["metric"]
    rows = [("float model", _value(m, h["float"]), "reference"),
            ("int8 model as given", _value(m, h["int8"]), f"{h['sqnr_int8_db']:.2f} dB"),
            ("repaired_int8.onnx", _value(m, h["repaired"]), f"{h['sqnr_repaired_db']:.2f} dB")]
    if "accuracy_with_after_model" in h:
        rows.append(("repaired + after-model repairs", _value("accuracy", h["accuracy_with_after_model"]), ""))
    return rows


def _gap_line(h: dict) -> str:
    if h.get("gap_recovered") is None:
        return "int8 loses nothing on this holdout: no gap to recover (repairs are kept only if they improve it)"
    return (f"gap recovered: {100 * h['gap_recovered']:.1f}% "
            f"(= (repaired − int8) / (float − int8), holdout {h['metric']}, {h['n']} samples)")


def render_markdown(report: dict) -> str:
    h = report["holdout"]
    lines = [f"# tmlrepair fit ({report['task']})", "",
             f"| model | holdout {h['metric']} | output SQNR vs float |", "|---|---|---|"]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in summary_rows(report)]
    lines += ["", _gap_line(h), "", "## In-model repairs (fitted on calibration, kept only if the holdout improves)", "",
              "| repair | kept | why |", "|---|---|---|"]
    lines += [f"| {r['repair']} | {'yes' if r['kept'] else 'no'} | {r['reason']} |"
              for r in report["in_model"]]
    for r in report["in_model"]:
        lines += ["", f"### {r['repair']}", "", "| layer / activation | decision | why |", "|---|---|---|"]
        lines += [f"| `{d.get('layer', d.get('activation'))}` | {d['decision']} | {d.get('why', '')} |"
                  for d in r["details"]]
    lines += ["", "## After-model repairs", ""]
    if report["after_model_note"]:
        lines.append(report["after_model_note"])
    lines += [f"- {r['repair']}: {'KEPT' if r.get('kept') else 'not kept'} — {r['reason']}"
              + (f" **WARNING: {r['warning']}**" if r.get("warning") else "") for r in report["after_model"]]
    return "\n".join(lines) + "\n"


def _bias_plot(report: dict) -> str:
    """The per-layer corrections of a bias correction the model kept (one that was not kept is not drawn)."""
    entry = next((r for r in report["in_model"] if r["repair"] == "bias_correction" and r["kept"]), None)
    rows = [d for d in (entry["details"] if entry else []) if "shift_rms" in d]
    if not rows:
        return ""
    from ..drift.html import short
    from ..drift.svg import svg_bars

    values = [d["units_max_abs"] for d in rows]
    return "<h2>Bias correction per layer</h2>" + svg_bars(
        [short(d["layer"]) for d in rows], values, ylabel="largest correction (bias units)", log=True,
        ylim=(0.0, 2 * max(max(values), 1)), title="Sequential bias correction (kept), layer by layer")


def _metric_plot(report: dict) -> str:
    from ..drift.svg import svg_bars

    h = report["holdout"]
    if h["metric"] == "sqnr":
        labels, vals = ["int8", "repaired"], [h["sqnr_int8_db"], h["sqnr_repaired_db"]]
    else:
        labels, vals = ["float", "int8", "repaired"], [h["float"], h["int8"], h["repaired"]]
    lo = min(vals)
    return svg_bars(labels, vals, colors=["#7f7f7f", "#c0392b", "#27ae60"][-len(vals):],
                    ylim=(lo - 0.1 * abs(lo) - 0.01, max(vals) + 0.02 * abs(max(vals)) + 0.01),
                    ylabel=f"holdout {h['metric']}")


def render_html(report: dict) -> str:
    from ..drift.html import page

    e = html.escape
    parts = ["<ul>"]
    parts += [f"<li>{e(k)} model <code>{e(m['path'])}</code> sha256 <code>{e(m['sha256'][:16])}</code></li>"
              for k, m in report["models"].items()]
    parts.append("</ul><table><tr><th>model</th><th>holdout metric</th><th>output SQNR vs float</th></tr>")
    parts += [f"<tr><td>{e(a)}</td><td>{e(b)}</td><td>{e(c)}</td></tr>" for a, b, c in summary_rows(report)]
    parts += ["</table>", f"<p>{e(_gap_line(report['holdout']))}</p>", _metric_plot(report), _bias_plot(report),
              "<h2>In-model repairs</h2>"]
    for r in report["in_model"]:
        parts.append(f"<h3>{e(r['repair'])}: {'kept' if r['kept'] else 'not kept'}</h3><p>{e(r['reason'])}</p>"
                     "<table><tr><th>layer / activation</th><th>decision</th><th>why</th></tr>")
        parts += [f"<tr><td><code>{e(str(d.get('layer', d.get('activation'))))}</code></td><td>{e(d['decision'])}</td>"
                  f"<td>{e(d.get('why', ''))}</td></tr>" for d in r["details"]]
        parts.append("</table>")
    parts.append("<h2>After-model repairs</h2><ul>")
    if report["after_model_note"]:
        parts.append(f"<li>{e(report['after_model_note'])}</li>")
    parts += [f"<li>{e(r['repair'])}: {'kept' if r.get('kept') else 'not kept'} — {e(r['reason'])}"
              + (f" <strong>WARNING: {e(r['warning'])}</strong>" if r.get("warning") else "") + "</li>"
              for r in report["after_model"]]
    parts.append("</ul>")
    return page(f"tmlrepair fit report ({report['task']})", parts)
