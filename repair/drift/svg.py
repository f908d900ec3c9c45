"""Bar charts as inline SVG: for the pages whose plots are a few bars, drawn without matplotlib (whose import
and PNG rendering cost a CLI run about a second)."""

from __future__ import annotations

import html
import math


def _ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """About ``n`` round tick values covering [lo, hi]."""
    span = hi - lo if hi > lo else abs(hi) or 1.0
    raw = span / n
    step = 10 ** math.floor(math.log10(raw))
    step *= next(m for m in (1, 2, 2.5, 5, 10) if m * step >= raw)
    first = math.ceil(lo / step) * step
    return [first + k * step for k in range(int((hi - first) / step + 1e-9) + 1)]


def svg_bars(labels: list[str], values: list[float], *, colors: list[str] | str = "#2c7fb8", ylabel: str = "",
             title: str = "", ylim: tuple[float, float] | None = None, log: bool = False) -> str:
    """A bar chart (one bar per label) as an inline <svg>. ``log``: bar heights on log10(1 + v) (v ≥ 0), the
    ticks still in v's units. Labels longer than the bar's room are rotated 45°."""
    shown = [float(v) for v in values]
    values = [v if math.isfinite(v) else 0.0 for v in shown]  # a bar of 0 for a value that has none (its tooltip says)
    n = len(values)
    colors = [colors] * n if isinstance(colors, str) else colors
    f = (lambda v: math.log10(1 + max(v, 0.0))) if log else (lambda v: v)
    lo, hi = ylim if ylim is not None else (min(0.0, min(values)), max(values) or 1.0)
    flo, fhi = f(lo), f(hi) if f(hi) > f(lo) else f(lo) + 1
    bar_w = max(28, min(70, 520 // max(n, 1)))
    rotate = max(len(s) for s in labels) * 6.5 > bar_w
    left, top, plot_h = 64, 30 if title else 12, 200
    bottom = 90 if rotate else 30
    width, height = left + bar_w * n + 20, top + plot_h + bottom

    def y(v: float) -> float:
        return top + plot_h * (1 - (f(v) - flo) / (fhi - flo))

    e = html.escape
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" '
           f'font-size="11">']
    if title:
        out.append(f'<text x="{left}" y="18" font-size="13">{e(title)}</text>')
    ticks = ([0.0] + [10 ** k for k in range(0, int(math.log10(hi)) + 1)] if log and hi >= 1 else
             _ticks(lo, hi))
    for t in ticks:
        if lo <= t <= hi:
            out.append(f'<line x1="{left}" x2="{width - 20}" y1="{y(t):.1f}" y2="{y(t):.1f}" stroke="#e0e0e0"/>'
                       f'<text x="{left - 6}" y="{y(t) + 4:.1f}" text-anchor="end">{t:g}</text>')
    base = y(max(lo, 0.0) if lo <= 0 <= hi else lo)
    for i, (label, v, c, s) in enumerate(zip(labels, values, colors, shown)):
        x0 = left + i * bar_w + 4
        top_y = y(min(max(v, lo), hi))
        out.append(f'<rect x="{x0}" y="{min(top_y, base):.1f}" width="{bar_w - 8}" '
                   f'height="{abs(base - top_y):.1f}" fill="{c}"><title>{e(label)}: {s:.4g}</title></rect>')
        cx, ly = x0 + (bar_w - 8) / 2, top + plot_h + 14
        out.append(f'<text x="{cx:.1f}" y="{ly}" text-anchor="{"end" if rotate else "middle"}"'
                   + (f' transform="rotate(-45 {cx:.1f} {ly})"' if rotate else "") + f">{e(label)}</text>")
    out.append(f'<line x1="{left}" x2="{left}" y1="{top}" y2="{top + plot_h}" stroke="#444"/>'
               f'<line x1="{left}" x2="{width - 20}" y1="{top + plot_h}" y2="{top + plot_h}" stroke="#444"/>'
               f'<text transform="rotate(-90)" x="{-(top + plot_h / 2):.1f}" y="14" text-anchor="middle">'
               f"{e(ylabel)}</text></svg>")
    return "".join(out)
