"""DriftReport as one self-contained HTML page: plots inlined as PNG, no external files."""

from __future__ import annotations

import base64
import html
import io

from .render import output_lines
from .report import DriftReport

PAGE_STYLE = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}"
              "table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:3px 7px}"
              "td.n{text-align:right;font-variant-numeric:tabular-nums}code{font-size:12px}")


def page(title: str, body: list[str]) -> str:
    """A self-contained HTML page (every report's skeleton): the title as <title> and <h1>, then ``body``."""
    t = html.escape(title)
    return "\n".join([f"<!doctype html><html><head><meta charset='utf-8'><title>{t}</title>",
                      f"<style>{PAGE_STYLE}</style></head><body>", f"<h1>{t}</h1>", *body, "</body></html>\n"])


def new_figure(width: float, height: float, cols: int = 1, rows: int = 1):
    """A matplotlib Figure and its axes, without pyplot: no global state, no backend switch in the caller's
    process (a notebook keeps its own); PNG rendering goes through Agg inside ``savefig``."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    return fig, fig.subplots(rows, cols, sharex=rows > 1)


def figure_png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, metadata={"Software": None})
    return f'<img alt="" src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}">'


def short(name: str, width: int = 22) -> str:
    """A tensor or layer name for a tick label: its last ``width`` characters."""
    return name if len(name) <= width else "…" + name[-(width - 1):]


def _sqnr_bars(report: DriftReport) -> str:
    ts = report.tensors
    fig, ax = new_figure(max(6, 0.4 * len(ts) + 2), 4.2)
    vals = [min(t["sqnr_db"], 80.0) for t in ts]
    worst = sorted(vals)[: max(1, len(vals) // 5)]
    colors = ["#c0392b" if v <= worst[-1] else "#2c7fb8" for v in vals]
    ax.bar(range(len(ts)), vals, color=colors)
    ax.set_xticks(range(len(ts)))
    ax.set_xticklabels([f"{t['order']} {short(t['float_name'])}" for t in ts], rotation=60, ha="right", fontsize=7)
    ax.set_ylabel("SQNR (dB, capped at 80)")
    ax.set_title("Per-tensor SQNR in graph order, by float tensor (red: worst fifth)")
    return figure_png(fig)


def _reliability(out: dict) -> str:
    import numpy as np

    fig, axes = new_figure(8.5, 3.6, cols=2)
    for ax, name in zip(axes, ("float", "int8")):
        rel = out[f"reliability_{name}"]
        n = len(rel["count"])
        centers = (np.arange(n) + 0.5) / n
        mask = np.asarray(rel["count"]) > 0
        ax.bar(centers[mask], np.asarray(rel["accuracy"])[mask], width=1 / n, edgecolor="k", alpha=0.7, label="accuracy")
        ax.plot([0, 1], [0, 1], "k--", lw=1, label="perfect calibration")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.set_title(f"{name}: ECE {out[f'ece_{name}']:.4f}")
        ax.set_xlabel("confidence (15 bins)")
        ax.set_ylabel("accuracy")
    axes[0].legend(fontsize=7, loc="upper left")
    return figure_png(fig)


def _confusions(out: dict) -> str:
    import numpy as np

    fig, axes = new_figure(9, 4.2, cols=2)
    for ax, name in zip(axes, ("float", "int8")):
        m = np.asarray(out[f"confusion_{name}"])
        ax.imshow(m, cmap="Blues", vmin=0)
        k = len(m)
        ax.set_xticks(range(k))
        ax.set_yticks(range(k))
        if k <= 12:
            dark = m > m.max() / 2  # white counts on the dark cells, dark counts on the light ones
            for i in range(k):
                for j in range(k):
                    ax.text(j, i, str(m[i, j]), ha="center", va="center", fontsize=6,
                            color="white" if dark[i, j] else "#222")
        ax.set_title(f"confusion, {name}")
        ax.set_xlabel("predicted class")
        ax.set_ylabel("true class")
    return figure_png(fig)


def render_html(report: DriftReport) -> str:
    """One page: provenance, output metrics, plots, the worst-first tensor table, unmatched tensors."""
    e = html.escape
    prov, p = report.provenance, report.pairing
    parts = [
        "<ul>",
        f"<li>float model <code>{e(prov['models']['float']['path'])}</code></li>",
        f"<li>int8 model <code>{e(prov['models']['int8']['path'])}</code></li>",
        f"<li>data <code>{e(prov['data']['source'])}</code>: {prov['data']['n']} samples</li>",
        f"<li>paired {p['paired']} of {p['quantized_total']} quantized tensors ({p['coverage']:.0%}, by {e(p['strategy'])})</li>",
        "</ul><h2>Outputs</h2><table><tr><th>metric</th><th>value</th></tr>",
    ]
    parts += [f"<tr><td>{e(label)}</td><td class='n'>{e(text)}</td></tr>" for label, text in output_lines(report)]
    parts.append("</table>")
    if report.tensors:
        parts += ["<h2>Where the error enters</h2>", _sqnr_bars(report)]
    out = report.outputs[0]
    if "reliability_float" in out:
        parts += ["<h2>Reliability diagrams</h2>", _reliability(out), "<h2>Confusion matrices</h2>", _confusions(out)]
    parts += ["<h2>Tensors, worst first</h2><table><tr><th>#</th><th>float tensor</th><th>int8 tensor</th><th>op</th>"
              "<th>SQNR dB</th><th>cosine</th><th>max abs err</th><th>saturation</th></tr>"]
    for t in report.worst():
        parts.append(f"<tr><td class='n'>{t['order']}</td><td><code>{e(t['float_name'])}</code></td>"
                     f"<td><code>{e(t['int8_name'])}</code></td><td>{e(t['op'])}</td>"
                     f"<td class='n'>{t['sqnr_db']:.2f}</td><td class='n'>{t['cosine']:.5f}</td>"
                     f"<td class='n'>{t['max_abs_err']:.4g}</td><td class='n'>{100 * t.get('saturation', 0):.2f}%</td></tr>")
    parts.append("</table>")
    if report.unmatched:
        parts.append("<h2>Not paired</h2><table><tr><th>int8 tensor</th><th>reason</th></tr>")
        parts += [f"<tr><td><code>{e(u['int8_name'])}</code></td><td>{e(u['reason'])}</td></tr>" for u in report.unmatched]
        parts.append("</table>")
    return page("tmlrepair drift report", parts)
