"""DriftReport as text: a worst-first terminal table and a Markdown page for PRs."""

from __future__ import annotations

from .report import DriftReport

_OUTPUT_ROWS = [
    ("top1_agreement", "top-1 agreement", "{:.2%}"), ("accuracy_float", "accuracy float", "{:.2%}"),
    ("accuracy_int8", "accuracy int8", "{:.2%}"), ("nll_float", "NLL float", "{:.4f}"),
    ("nll_int8", "NLL int8", "{:.4f}"), ("ece_float", "ECE float (15 bins)", "{:.4f}"),
    ("ece_int8", "ECE int8 (15 bins)", "{:.4f}"), ("kl_divergence", "KL(float ‖ int8)", "{:.5f}"),
    ("score_mean_float", "mean score float", "{:.5g}"), ("score_mean_int8", "mean score int8", "{:.5g}"),
    ("score_shift_rel", "score shift int8 vs float", "{:+.2%}"), ("auroc_float", "AUROC float", "{:.4f}"),
    ("auroc_int8", "AUROC int8", "{:.4f}"), ("sqnr_db", "output SQNR (dB)", "{:.2f}"),
]


def _short(name: str, width: int) -> str:
    return name if len(name) <= width else "…" + name[-(width - 1):]


def output_lines(report: DriftReport) -> list[tuple[str, str]]:
    rows = []
    for out in report.outputs:
        for key, label, fmt in _OUTPUT_ROWS:
            if out.get(key) is not None:
                text = fmt.format(out[key])
                ci = out.get(f"{key}_ci95")
                if ci:
                    text += f"  [95% CI {ci[0]:.4f}, {ci[1]:.4f}]"
                rows.append((label, text))
    return rows


def render_terminal(report: DriftReport, top: int = 15) -> str:
    p = report.pairing
    data = report.provenance["data"]
    lines = [f"tmlrepair drift — {data['n']} samples of {data['source']}; paired {p['paired']}/{p['quantized_total']} "
             f"quantized tensors ({p['coverage']:.0%}, by {p['strategy']})", ""]
    if p.get("weight_mismatches"):
        lines[-1:] = [f"WARNING: {p['weight_mismatches']} paired layers hold weights unlike the float model's: "
                      "INT8 was not quantized from FLOAT, so these numbers compare two different networks", ""]
    lines.append(f"{'#':>3} {'tensor (float name)':<38} {'op':<18} {'SQNR dB':>8} {'cosine':>8} {'max|err|':>9} {'sat%':>6}")
    worst = report.worst(top)
    for t in worst:
        lines.append(f"{t['order']:>3} {_short(t['float_name'], 38):<38} {_short(t['op'], 18):<18} {t['sqnr_db']:>8.2f} "
                     f"{t['cosine']:>8.5f} {t['max_abs_err']:>9.4g} {100 * t.get('saturation', 0):>6.2f}")
    if len(report.tensors) > len(worst):
        lines.append(f"    … {len(report.tensors) - len(worst)} more tensors (see --json/--markdown)")
    if report.unmatched:
        lines += ["", f"not paired ({len(report.unmatched)}):"]
        lines += [f"  {_short(u['int8_name'], 50)}: {u['reason']}" for u in report.unmatched[:10]]
    lines += ["", "outputs (" + report.outputs[0]["task"] + "):"]
    lines += [f"  {label:<28} {text}" for label, text in output_lines(report)]
    return "\n".join(lines) + "\n"


def render_markdown(report: DriftReport) -> str:
    p = report.pairing
    prov = report.provenance
    md = ["# tmlrepair drift report", "",
          f"- float model: `{prov['models']['float']['path']}` (sha256 `{prov['models']['float']['sha256'][:12]}`)",
          f"- int8 model: `{prov['models']['int8']['path']}` (sha256 `{prov['models']['int8']['sha256'][:12]}`)",
          f"- data: `{prov['data']['source']}`, {prov['data']['n']} samples (sha256 `{prov['data']['sha256'][:12]}`)",
          f"- paired {p['paired']} of {p['quantized_total']} quantized tensors ({p['coverage']:.0%}), by {p['strategy']}",
          *([f"- **warning**: {p['weight_mismatches']} paired layers hold weights unlike the float model's "
             "(INT8 was not quantized from FLOAT)"] if p.get("weight_mismatches") else []),
          "", "## Outputs", "", "| metric | value |", "|---|---|"]
    md += [f"| {label} | {text} |" for label, text in output_lines(report)]
    md += ["", "## Tensors, worst first", "",
           "| # | float tensor | int8 tensor | op | SQNR dB | cosine | MAE | max abs err | saturation |",
           "|---:|---|---|---|---:|---:|---:|---:|---:|"]
    for t in report.worst():
        md.append(f"| {t['order']} | `{t['float_name']}` | `{t['int8_name']}` | {t['op']} | {t['sqnr_db']:.2f} | "
                  f"{t['cosine']:.5f} | {t['mae']:.4g} | {t['max_abs_err']:.4g} | {100 * t.get('saturation', 0):.2f}% |")
    if report.unmatched:
        md += ["", "## Not paired", "", "| int8 tensor | reason |", "|---|---|"]
        md += [f"| `{u['int8_name']}` | {u['reason']} |" for u in report.unmatched]
    return "\n".join(md) + "\n"
