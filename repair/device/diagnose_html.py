"""A diagnosis as one self-contained HTML page: per layer, how often the device equals the program, and (with
the float model) each layer's SQNR against float — the device's own, where its digests prove it equals the
program."""

from __future__ import annotations

import html

from ..drift.html import figure_png, new_figure, page, short


def _layer_plot(rows: list[dict], inputs: int) -> str:
    with_float = any(r.get("sqnr_vs_float_db") is not None for r in rows)
    fig, axes = new_figure(max(8.0, 0.55 * len(rows) + 2), 6.4 if with_float else 3.6, rows=2 if with_float else 1)
    agree, drift = axes if with_float else (axes, None)
    x = range(len(rows))
    equal = [(inputs - r["differ"]) / inputs for r in rows]
    agree.bar(x, equal, color="#2c7fb8")
    agree.bar(x, [1 - e for e in equal], bottom=equal, color="#c0392b")
    agree.set_ylim(0, 1.05)
    agree.set_ylabel("share of inputs")
    agree.set_title("Device vs integer program per layer: inputs where it is equal (blue) or differs (red)")
    if drift is not None:
        vals = [min(r["sqnr_vs_float_db"], 80.0) if r.get("sqnr_vs_float_db") is not None else 0.0 for r in rows]
        drift.bar(x, vals, color="#636363")
        drift.set_ylabel("SQNR vs float (dB, capped at 80)")
        drift.set_title("SQNR against the float model per layer (the device's where it equals the program)")
    bottom = drift if drift is not None else agree
    bottom.set_xticks(list(x))
    bottom.set_xticklabels([f"{r['index']} {r['op']} {short(r['node'], 18)}" for r in rows], rotation=50,
                           ha="right", fontsize=8)
    return figure_png(fig)


def render_diagnosis_html(result: dict, model_name: str) -> str:
    """``result``: ``Diagnosis.to_dict()`` with its ``summary`` (and per-layer SQNR when measured)."""
    rows = result["layers"]
    table = ["<table><tr><th>layer</th><th>op</th><th>node</th><th>inputs where the device differs</th>"
             "<th>first divergence here</th><th>SQNR vs float (dB)</th></tr>"]
    for r in rows:
        sq = r.get("sqnr_vs_float_db")
        table.append(f"<tr><td class=n>{r['index']}</td><td>{html.escape(r['op'])}</td>"
                     f"<td><code>{html.escape(str(r['node']))}</code></td><td class=n>{r['differ']}</td>"
                     f"<td class=n>{r['first_here']}</td><td class=n>{'not proven' if sq is None else f'{sq:.1f}'}</td></tr>")
    table.append("</table>")
    body = [f"<p>{html.escape(line)}</p>" for line in result["summary"].splitlines()]
    body += [_layer_plot(rows, result["inputs"]), *table]
    return page(f"tmlrepair diagnose: {model_name}", body)
