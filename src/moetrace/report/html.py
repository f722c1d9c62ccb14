"""``moetrace report``: one self-contained HTML file, re-rendered from saved records.

Everything is inline: CSS, the charts as SVG drawn here in Python, and a short
script that only marks the page as loaded (``<body data-report-status="ok">``) or
records a script error, which the browser test reads. A Content-Security-Policy
forbids every network fetch, so the page opens offline and stays that way.

Every text that comes from a record (model and config names, error messages, log
lines, paths) goes through :func:`esc`.

A config run with ``--expert-load`` gets, per stage, a layer x expert heat map of the tokens
its experts received (:func:`svg_heatmap`: no element or text per cell, so a map of 160 experts
x 2 layers is about 5 KB, and one of 384 experts (binned to 192 columns) x 58 layers about
100 KB), and with EP > 1 the share each EP rank's experts received (:func:`svg_ep_ranks`).
"""

from __future__ import annotations

import html as _html
import math
import os
from pathlib import Path
from typing import Sequence
from urllib.parse import quote

from ..text import clip, pct
from .data import (CHART_METRICS, DECOMPOSITION_PARTS, METRIC, Bar, BarChart, Breakdown, Decomposition, LoadMap,
                   Row, backend_colors, backend_order, bar_chart, breakdowns, by_model, category_colors,
                   config_sort_key, current, decompositions, ep_rank_bars, expert_load_note, fmt_value, load_maps,
                   nice_ticks, trace_files, workload_label)
from .significance import html_notes
from .tables import BURST_MARK

__all__ = ["render_html", "write_html", "esc", "svg_bar_chart", "svg_breakdown", "svg_decomposition", "svg_heatmap",
           "svg_ep_ranks", "log_excerpt"]

_PART_COLORS = {"floor": "#2b6cb0", "above floor: moe": "#dd6b20", "above floor: attention": "#38a169",
                "above floor: gemm": "#805ad5", "above floor: communication": "#e53e3e",
                "above floor: other": "#718096",
                "idle in steps": "#cbd5e0", "host/other": "#f6e05e"}

PERFETTO_NOTE = (
    "To open a trace, go to https://ui.perfetto.dev in a browser and drag the file onto the page "
    "(or use “Open trace file”). The UI runs locally in the browser: the file is not uploaded. "
    "Files ending in .json.gz open as they are; chrome://tracing opens them too. "
    "The links below are relative to this report, so keep it inside (or next to) the results directory.")


def esc(text: object) -> str:
    """Text (from a record, a file, a name) made safe for HTML and SVG text and attributes."""
    return _html.escape("" if text is None else str(text), quote=True)


# ------------------------------------------------------------------ SVG charts
W, H = 520, 280
ML, MR, MT, MB = 62, 14, 30, 52  # margins: left (y labels), right, top (title), bottom (group labels)


def svg_bar_chart(chart: BarChart, colors: dict[str, str], tips: dict[str, str] | None = None) -> str:
    """Grouped bars: one group per TP/EP, one bar per backend in its colour, a whisker
    for the spread over repetitions, marks for extra points (ITL p50, p99), and a
    dashed reference line (100 % for efficiency)."""
    tips = tips or {}
    pw, ph = W - ML - MR, H - MT - MB
    ticks = nice_ticks(chart.ymax * 1.08 if chart.ymax > 0 else 1.0)
    top = ticks[-1]
    y = lambda v: MT + ph - (v / top) * ph if top else MT + ph  # noqa: E731
    out = [f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {W} {H}" width="{W}" height="{H}" '
           f'role="img" aria-label="{esc(chart.title)}">',
           f'<text class="title" x="{ML}" y="18">{esc(chart.title)}</text>']
    for t in ticks:
        out.append(f'<line class="grid" x1="{ML}" x2="{ML + pw}" y1="{y(t):.1f}" y2="{y(t):.1f}"/>'
                   f'<text class="tick" x="{ML - 6}" y="{y(t) + 4:.1f}" text-anchor="end">{esc(fmt_value(t))}</text>')
    out.append(f'<line class="axis" x1="{ML}" x2="{ML}" y1="{MT}" y2="{MT + ph}"/>'
               f'<line class="axis" x1="{ML}" x2="{ML + pw}" y1="{MT + ph}" y2="{MT + ph}"/>')
    gw = pw / max(1, len(chart.groups))
    for gi, g in enumerate(chart.groups):
        gbars = [b for b in chart.bars if b.group == g]
        bw = min(44.0, gw * 0.8 / max(1, len(gbars)))
        x0 = ML + gi * gw + (gw - bw * len(gbars)) / 2
        for bi, b in enumerate(gbars):
            x = x0 + bi * bw
            out.append(_bar(b, x + 1, bw - 2, y, MT + ph, colors.get(b.backend, "#888"), chart, tips.get(b.key)))
        out.append(f'<text class="group" x="{ML + gi * gw + gw / 2:.1f}" y="{MT + ph + 18}" '
                   f'text-anchor="middle">{esc(clip(g, int(gw / 6.5)))}<title>{esc(g)}</title></text>')
    if chart.reference is not None:
        out.append(f'<line class="ref" x1="{ML}" x2="{ML + pw}" y1="{y(chart.reference):.1f}" '
                   f'y2="{y(chart.reference):.1f}"/>')
    if any(b.marks for b in chart.bars):
        out.append(f'<g class="marks-legend" transform="translate({ML},{H - 12})">'
                   '<circle cx="4" cy="-4" r="3.5" class="mark-p50"/><text x="12" y="0">p50</text>'
                   '<path d="M40,-1 l4,-7 l4,7 z" class="mark-p99"/><text x="52" y="0">p99</text>'
                   '<text x="84" y="0">bar: mean</text></g>')
    kinds = {b.interval for b in chart.bars if b.lo is not None}
    if kinds:
        what = ("95% confidence interval" if kinds == {"95% CI"} else "95% CI, else min–max" if "95% CI" in kinds
                else "min–max over repetitions")
        out.append(f'<text class="note" x="{W - MR}" y="{H - 2}" text-anchor="end">whiskers: {what}</text>')
    out.append("</svg>")
    return "".join(out)


def _bar(b: Bar, x: float, w: float, y, base: float, color: str, chart: BarChart, extra_tip: str | None) -> str:
    unit = chart.metric.unit
    tip = f"{b.config}: {fmt_value(b.value)} {unit}"
    if b.lo is not None:
        tip += (f" (95% CI {fmt_value(b.lo)}–{fmt_value(b.hi)}, {b.n} runs)" if b.interval == "95% CI" else
                f" (min {fmt_value(b.lo)}, max {fmt_value(b.hi)}, {b.n} runs)")
    for lbl, v in b.marks:
        tip += f", {lbl} {fmt_value(v)} {unit}"
    if extra_tip:
        tip += f"; {extra_tip}"
    top = y(b.value)
    parts = [f'<g class="bar-group"><title>{esc(tip)}</title>',
             f'<rect class="bar" x="{x:.1f}" y="{top:.1f}" width="{max(w, 1):.1f}" height="{max(base - top, 0.5):.1f}" '
             f'fill="{color}"/>']
    cx = x + w / 2
    if b.lo is not None and b.hi is not None:
        parts.append(f'<path class="whisker" d="M{cx:.1f},{y(b.lo):.1f}V{y(b.hi):.1f}M{cx - 4:.1f},{y(b.lo):.1f}'
                     f'h8M{cx - 4:.1f},{y(b.hi):.1f}h8"/>')
    for lbl, v in b.marks:
        if lbl == "p99":
            parts.append(f'<path class="mark-p99" d="M{cx - 4:.1f},{y(v) + 3:.1f} l4,-7 l4,7 z"/>')
        else:
            parts.append(f'<circle class="mark-p50" cx="{cx:.1f}" cy="{y(v):.1f}" r="3.5"/>')
    label_y = min(top, y(b.hi) if b.hi is not None else top) - 4
    parts.append(f'<text class="value" x="{cx:.1f}" y="{max(label_y, MT - 2):.1f}" text-anchor="middle">'
                 f'{esc(fmt_value(b.value))}</text></g>')
    return "".join(parts)


def svg_breakdown(bd: Breakdown, colors: dict[str, str]) -> str:
    """Stacked horizontal bars: one bar per config, the share of each category of the
    stage's time; a legend below."""
    lw = 150  # config labels
    row_h, pw = 26, W - lw - MR
    n = len(bd.configs)
    per_line = 4
    legend_lines = (len(bd.categories) + per_line - 1) // per_line
    h = MT + n * row_h + 26 + legend_lines * 16 + 6
    out = [f'<svg class="chart breakdown" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {W} {h}" width="{W}" '
           f'height="{h}" role="img" aria-label="{esc(bd.stage)} time breakdown">',
           f'<text class="title" x="{lw}" y="18">{esc(bd.stage.capitalize())}: share of time (%)</text>']
    axis_y = MT + n * row_h + 2
    for t in (0, 25, 50, 75, 100):
        xx = lw + t * pw / 100
        out.append(f'<line class="grid" x1="{xx:.1f}" x2="{xx:.1f}" y1="{MT}" y2="{axis_y}"/>'
                   f'<text class="tick" x="{xx:.1f}" y="{axis_y + 12}" text-anchor="middle">{t}</text>')
    for i, (config, _key, cats) in enumerate(bd.configs):
        yy = MT + i * row_h
        out.append(f'<text class="group" x="{lw - 6}" y="{yy + row_h / 2 + 4:.1f}" text-anchor="end">'
                   f'{esc(clip(config, 22))}<title>{esc(config)}</title></text>')
        total = sum(cats.values()) or 1.0
        scale = pw / max(100.0, total)
        x = float(lw)
        for c in bd.categories:
            v = cats.get(c)
            if not v:
                continue
            w = v * scale
            out.append(f'<rect class="bar seg" x="{x:.1f}" y="{yy + 3}" width="{max(w, 0.5):.1f}" '
                       f'height="{row_h - 6}" fill="{colors.get(c, "#888")}"><title>{esc(f"{config} {c}: {v:.1f}%")}'
                       '</title></rect>')
            if w > 34:
                out.append(f'<text class="seg-label" x="{x + w / 2:.1f}" y="{yy + row_h / 2 + 4:.1f}" '
                           f'text-anchor="middle">{v:.0f}%</text>')
            x += w
    for j, c in enumerate(bd.categories):
        lx = 8 + (j % per_line) * ((W - 16) / per_line)
        ly = axis_y + 30 + (j // per_line) * 16
        out.append(f'<rect x="{lx:.1f}" y="{ly - 9}" width="10" height="10" fill="{colors.get(c, "#888")}"/>'
                   f'<text class="legend" x="{lx + 14:.1f}" y="{ly}">{esc(clip(c, 20))}<title>{esc(c)}</title></text>')
    out.append("</svg>")
    return "".join(out)


def svg_decomposition(d: Decomposition) -> str:
    """Stacked horizontal bars in ms: per config, the measured ITL (or TTFT) as floor, kernel time
    above the floor by group, device idle inside steps, and host/other; a tick marks the measured
    value. Negative parts (a profiled step longer than the measured one) are listed in the
    tooltip and not drawn."""
    lw, row_h = 150, 26
    pw = W - lw - MR
    n = len(d.configs)
    per_line = 4
    legend_lines = (len(DECOMPOSITION_PARTS) + per_line - 1) // per_line
    h = MT + n * row_h + 26 + legend_lines * 16 + 6
    top = max(max(sum(max(v, 0.0) for k, v in parts.items() if k != "measured"), parts["measured"])
              for _, _, parts in d.configs) or 1.0
    ticks = nice_ticks(top)
    top = max(top, ticks[-1])
    out = [f'<svg class="chart decomposition" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {W} {h}" '
           f'width="{W}" height="{h}" role="img" aria-label="{esc(d.metric)} against the floor">',
           f'<text class="title" x="{lw}" y="18">{esc(d.metric)} ({d.stage}) against the floor (ms)</text>']
    axis_y = MT + n * row_h + 2
    for t in ticks:
        xx = lw + t * pw / top
        out.append(f'<line class="grid" x1="{xx:.1f}" x2="{xx:.1f}" y1="{MT}" y2="{axis_y}"/>'
                   f'<text class="tick" x="{xx:.1f}" y="{axis_y + 12}" text-anchor="middle">{esc(fmt_value(t))}</text>')
    for i, (config, _key, parts) in enumerate(d.configs):
        yy = MT + i * row_h
        tip = f"{config}: measured {parts['measured']:.3f} ms; " + ", ".join(
            f"{k} {parts[k]:.3f}" for k in DECOMPOSITION_PARTS if k in parts)
        out.append(f'<text class="group" x="{lw - 6}" y="{yy + row_h / 2 + 4:.1f}" text-anchor="end">'
                   f'{esc(clip(config, 22))}<title>{esc(tip)}</title></text>')
        x = float(lw)
        for k in DECOMPOSITION_PARTS:
            v = parts.get(k, 0.0)
            if v <= 0:
                continue
            w = v * pw / top
            out.append(f'<rect class="bar seg" x="{x:.1f}" y="{yy + 3}" width="{max(w, 0.5):.1f}" '
                       f'height="{row_h - 6}" fill="{_PART_COLORS[k]}"><title>{esc(f"{config} {k}: {v:.3f} ms")}'
                       '</title></rect>')
            x += w
        measured = parts["measured"]
        mx = lw + measured * pw / top
        out.append(f'<line class="measured" x1="{mx:.1f}" x2="{mx:.1f}" y1="{yy + 1}" y2="{yy + row_h - 1}" '
                   f'stroke="#000" stroke-width="2"><title>{esc(f"{config} measured: {measured:.3f} ms")}'
                   '</title></line>')
    for j, k in enumerate(DECOMPOSITION_PARTS):
        lx = 8 + (j % per_line) * ((W - 16) / per_line)
        ly = axis_y + 30 + (j // per_line) * 16
        out.append(f'<rect x="{lx:.1f}" y="{ly - 9}" width="10" height="10" fill="{_PART_COLORS[k]}"/>'
                   f'<text class="legend" x="{lx + 14:.1f}" y="{ly}">{esc(clip(k, 26))}<title>{esc(k)}</title></text>')
    out.append("</svg>")
    return "".join(out)


# ------------------------------------------------------------------ expert load
HEAT = ("#ffffcc", "#ffeda0", "#fed976", "#feb24c", "#fd8d3c", "#fc4e2a", "#e31a1c", "#b10026")  # YlOrRd, low to high
HEAT_ZERO = "#e4e4e4"  # an expert no token went to


def _heat_level(v: int, vmax: int) -> int:
    """0 for no tokens, else 1..len(HEAT) by the square root of the share of the map's busiest cell
    (on a linear scale one hot expert, as a planted router makes, leaves every other cell pale)."""
    return 0 if v <= 0 or vmax <= 0 else min(len(HEAT), max(1, math.ceil(len(HEAT) * math.sqrt(v / vmax))))


def _cell_paths(values: Sequence[Sequence[int]], vmax: int) -> list[str]:
    """One path per colour level. A cell (column c, row r) is a stroke from (c, r+.5) to
    (c+1, r+.5), one unit wide, in a group scaled to the cell size: a few bytes per cell, and
    neighbours of one level in a row are one stroke."""
    out = []
    for level, color in enumerate((HEAT_ZERO, *HEAT)):
        d: list[str] = []
        at: tuple[int, int] | None = None  # the pen after the last stroke
        run = 0
        for r, row in enumerate(values):
            for c, v in enumerate(row):
                if _heat_level(v, vmax) != level:
                    continue
                if at == (c, r):
                    run += 1
                else:
                    if run:
                        d.append(f"h{run}")
                    d.append(f"M{c} {r}.5" if at is None else f"m{c - at[0]} {r - at[1]}")
                    run = 1
                at = (c + 1, r)
        if run:
            d.append(f"h{run}")
            out.append(f'<path class="cell" stroke="{color}" d="{"".join(d)}"/>')
    return out


def _expert_ticks(experts: int) -> list[int]:
    step = 1 << max(0, math.ceil(math.log2(max(experts, 1) / 8)))  # about 8 ticks, at powers of two
    return list(range(0, experts + 1, step))


def svg_heatmap(m: LoadMap) -> str:
    """Tokens per expert (columns) and MoE layer (rows) of one stage, darker = more tokens. Hover
    a row for its busiest expert; with the page's script, hover a cell for its layer, expert and
    tokens (the readout line under the map). Thin black lines part the EP ranks' experts."""
    rows, cols, vmax = len(m.values), m.columns, m.vmax
    lw, mt = 46, 30
    cw = min(12.0, max(2.0, 880 / max(cols, 1)))
    rh = min(14.0, max(3.0, 360 / max(rows, 1)))
    pw, ph = cols * cw, rows * rh
    w, h = max(340, math.ceil(lw + pw + 14)), math.ceil(mt + ph + 62)
    data = ";".join(",".join(str(v) for v in row) for row in m.values)
    out = [f'<svg class="chart heatmap" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {w} {h}" width="{w}" '
           f'height="{h}" role="img" aria-label="{esc(m.stage)}: tokens per expert and MoE layer" '
           f'data-stage="{esc(m.stage)}" data-experts="{m.experts}" data-bin="{m.bin}" '
           f'data-layers="{",".join(map(str, m.layers))}" data-v="{data}">',
           f'<text class="title" x="{lw}" y="18">{esc(m.stage.capitalize())}: tokens per expert and MoE layer</text>',
           f'<g class="cells" transform="translate({lw},{mt}) scale({cw:.3g},{rh:.3g})" fill="none" stroke-width="1" '
           'shape-rendering="crispEdges">']
    out += _cell_paths(m.values, vmax)
    if m.ep_size > 1 and m.experts % m.ep_size == 0:
        per = m.experts // m.ep_size
        d = "".join(f"M{k * per / m.bin:g} 0v{rows}" for k in range(1, m.ep_size))
        out.append(f'<path class="ep" d="{d}" stroke="#000" stroke-opacity=".6" '
                   'vector-effect="non-scaling-stroke"/>')
    for r, row in enumerate(m.values):
        total = sum(row)
        c = max(range(len(row)), key=lambda i: row[i]) if row else 0
        lo, hi = m.expert_range(c)
        who = f"expert {lo}" if lo == hi else f"experts {lo}–{hi}"
        tip = (f"layer {m.layers[r]}: busiest {who} with {row[c]:,} tokens; mean {total / max(m.experts, 1):,.1f} "
               f"per expert")
        if r < len(m.imbalance):
            tip += f"; max/mean {m.imbalance[r]:.2f}"
        out.append(f'<rect class="row" x="0" y="{r}" width="{cols}" height="1" fill="transparent">'
                   f'<title>{esc(tip)}</title></rect>')
    out.append("</g>")
    step = max(1, math.ceil(11 / rh))
    for r in range(0, rows, step):
        out.append(f'<text class="tick" x="{lw - 4}" y="{mt + (r + 0.5) * rh + 3.5:.1f}" text-anchor="end">'
                   f'L{m.layers[r]}</text>')
    for e in _expert_ticks(m.experts):
        x = lw + e / m.bin * cw
        out.append(f'<line class="axis" x1="{x:.1f}" x2="{x:.1f}" y1="{mt + ph}" y2="{mt + ph + 3}"/>'
                   f'<text class="tick" x="{x:.1f}" y="{mt + ph + 13:.1f}" text-anchor="middle">{e}</text>')
    ly = mt + ph + 30
    legend = [f'<text class="legend" x="{lw}" y="{ly}">tokens (√ scale):</text>',
              f'<rect x="{lw + 82}" y="{ly - 9}" width="10" height="10" fill="{HEAT_ZERO}"/>'
              f'<text class="legend" x="{lw + 95}" y="{ly}">0</text>']
    for i, color in enumerate(HEAT):
        legend.append(f'<rect x="{lw + 108 + 10 * i}" y="{ly - 9}" width="10" height="10" fill="{color}"/>')
    x_end = lw + 108 + 10 * len(HEAT) + 4
    what = "expert" if m.bin == 1 else f"{m.bin} experts"
    legend.append(f'<text class="legend" x="{x_end}" y="{ly}">{vmax:,} (busiest {what})'
                  f'{"; lines: EP ranks" if m.ep_size > 1 else ""}</text>')
    out += legend
    out.append(f'<text class="readout" x="{lw}" y="{ly + 18}">hover a cell: layer, expert, tokens</text>')
    out.append("</svg>")
    return "".join(out)


def svg_ep_ranks(bars: Sequence[tuple[str, tuple[int, ...], float | None]], experts: int | None) -> str:
    """Per stage, the share of the routed tokens each EP rank's experts received (summed over the
    MoE layers; a token counts once per expert it picks), with the even share dashed."""
    lw, row_h, gap = 92, 16, 10
    pw = W - lw - MR - 44
    n = sum(len(r) for _, r, _ in bars)
    h = MT + n * row_h + gap * (len(bars) - 1) + 40
    shares = [100.0 * v / (sum(ranks) or 1) for _, ranks, _ in bars for v in ranks]
    ticks = nice_ticks(max(shares, default=1.0) * 1.05)
    top = ticks[-1]
    x = lambda v: lw + v / top * pw  # noqa: E731
    out = [f'<svg class="chart eprank" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {W} {h}" width="{W}" '
           f'height="{h}" role="img" aria-label="tokens per EP rank">',
           f'<text class="title" x="{lw}" y="18">Tokens per EP rank (% of the stage\'s)</text>']
    axis_y = h - 28
    for t in ticks:
        out.append(f'<line class="grid" x1="{x(t):.1f}" x2="{x(t):.1f}" y1="{MT}" y2="{axis_y}"/>'
                   f'<text class="tick" x="{x(t):.1f}" y="{axis_y + 12}" text-anchor="middle">'
                   f'{esc(fmt_value(t))}</text>')
    yy = MT
    for stage, ranks, imb in bars:
        total = sum(ranks) or 1
        even = 100.0 / len(ranks)
        per = experts // len(ranks) if experts and experts % len(ranks) == 0 else None
        y0 = yy
        for i, v in enumerate(ranks):
            share = 100.0 * v / total
            who = f" (experts {i * per}–{(i + 1) * per - 1})" if per else ""
            tip = (f"{stage}, EP rank {i}{who}: {v:,} tokens routed to its experts, {share:.1f}% "
                   f"(even share {even:.1f}%)" + (f"; worst layer: busiest rank / mean {imb:.2f}" if imb else ""))
            out.append(f'<g class="bar-group"><title>{esc(tip)}</title>'
                       f'<text class="group" x="{lw - 6}" y="{yy + row_h / 2 + 4:.1f}" text-anchor="end">'
                       f'{esc(stage)} r{i}</text>'
                       f'<rect class="bar" x="{lw}" y="{yy + 2}" width="{max(x(share) - lw, 0.5):.1f}" '
                       f'height="{row_h - 4}" fill="{PALETTE_EP[stage]}"/>'
                       f'<text class="value" x="{x(share) + 3:.1f}" y="{yy + row_h / 2 + 4:.1f}">{share:.1f}%</text>'
                       '</g>')
            yy += row_h
        out.append(f'<line class="ref" x1="{x(even):.1f}" x2="{x(even):.1f}" y1="{y0}" y2="{yy}"/>')
        yy += gap
    out.append(f'<text class="note" x="{W - MR}" y="{h - 2}" text-anchor="end">summed over MoE layers; a token '
               'counts once per expert it picks; dashed: even share</text>')
    out.append("</svg>")
    return "".join(out)


PALETTE_EP = {"extend": "#0072B2", "decode": "#E69F00"}


def _planted_line(p: dict) -> str:
    hot = ", ".join(str(x) for x in p.get("hot_experts") or [])
    exp = p.get("expected_imbalance")
    want = (f"experts {hot} should take every token of every MoE layer and stage, so max/mean "
            f"{fmt_value(exp) if isinstance(exp, (int, float)) else '?'} in each layer")
    if p.get("ok"):
        return f'<p class="planted ok">Planted router (moetrace tiny --hot-experts): {esc(want)}: found.</p>'
    found = []
    for stage, f in (p.get("found") or {}).items():
        if isinstance(f, dict):
            imb = ", ".join(fmt_value(x) for x in f.get("imbalance") or [] if isinstance(x, (int, float)))
            found.append(f"{stage}: hot experts got every token: {'yes' if f.get('hot_get_every_token') else 'no'}, "
                         f"max/mean per layer {imb or '-'}")
    return (f'<p class="planted missed">Planted router (moetrace tiny --hot-experts): {esc(want)}: '
            f'<b>NOT found</b> ({esc("; ".join(found) or "no stage measured")}).</p>')


def _expert_load_block(r: Row, root: Path, out_dir: Path) -> str:
    el = r.expert_load or {}
    maps = load_maps(el)
    stage_text = "; ".join(
        f"{m.stage}: {m.tokens:,} tokens in {m.passes:,} pass{'es' if m.passes != 1 else ''}"
        + (f", busiest expert / mean {max(m.imbalance):.2f} (worst layer)" if m.imbalance else "")
        for m in maps if m.tokens is not None and m.passes is not None)
    moe = el.get("moe_layers") if isinstance(el.get("moe_layers"), list) else []
    facts = [f"{el.get('experts', '?')} experts, top-{el.get('top_k', '?')}",
             f"{len(moe)} of {el.get('layers', '?')} layers with experts", f"EP {el.get('ep_size', 1)}"]
    workload = workload_label((el.get("batch_size"), el.get("input_len"), el.get("output_len")))
    src = el.get("source") or "the engine's recorder"
    file = el.get("file")
    raw = ""
    if isinstance(file, str) and (root / file).is_file():
        raw = f' (<a href="{esc(_href(root, file, out_dir))}">raw counts</a>)'
    out = [f'<div class="expert-load"><h4>{esc(r.config)}</h4>',
           f'<p class="source">Counted by {esc(src)}{raw} over one request ({esc(workload)}): {esc("; ".join(facts))}.'
           f'{" " + esc(stage_text) + "." if stage_text else ""}</p>']
    if isinstance(el.get("planted"), dict):
        out.append(_planted_line(el["planted"]))
    charts = [svg_heatmap(m) for m in maps]
    if bars := ep_rank_bars(el):
        charts.append(svg_ep_ranks(bars, el.get("experts") if isinstance(el.get("experts"), int) else None))
    if charts:
        out.append('<div class="charts">' + "".join(charts) + "</div>")
    else:
        out.append('<p class="muted">The record holds no per-expert counts to draw.</p>')
    if any(m.bin > 1 for m in maps):
        b = max(m.bin for m in maps)
        out.append(f'<p class="muted">{el.get("experts")} experts are more columns than a map draws: each column '
                   f'sums {b} neighbouring experts.</p>')
    out.append("</div>")
    return "".join(out)


def _expert_load_section(rows: Sequence[Row], root: Path, out_dir: Path) -> str:
    """Per config that asked for expert load (--expert-load): where the numbers come from,
    whether a planted skew was found, a heat map per stage and the tokens per EP rank; or one
    line saying why there are none."""
    seen, items = set(), []
    for r in sorted(rows, key=config_sort_key):
        k = (r.config, r.attempt_id or r.seq)
        if r.expert_load is not None and k not in seen:  # one measurement serves every batch size of an attempt
            seen.add(k)
            items.append(r)
    if not items:
        return ""
    out = ['<h3>Expert load</h3>',
           '<p class="muted">How the tokens of one request were routed, as the engine\'s own recorder counted '
           'them: one row per MoE layer, one column per expert, darker = more tokens (a square-root scale; zero is '
           'grey). Hover a row for its busiest expert, a cell for its tokens.</p>']
    none: dict[str, list[str]] = {}
    for r in items:
        note = expert_load_note(r.expert_load, short=False)
        if note:
            none.setdefault(note, []).append(r.config)
        else:
            out.append(_expert_load_block(r, root, out_dir))
    for note, configs in none.items():
        what = "expert load not exposed by the engine" if note.startswith("n/a") else "recording the expert load failed"
        why = note.split(" (", 1)[1][:-1] if " (" in note else note
        out.append(f'<p class="expert-load-none">{esc(", ".join(configs))}: {what}: {esc(why)}.</p>')
    return "".join(out)


# ------------------------------------------------------------------ files
def log_excerpt(root: Path, rel: str | None, lines: int = 40, max_bytes: int = 256 * 1024) -> str | None:
    """The last lines of a saved log (None when there is none)."""
    if not rel:
        return None
    p = (root / rel).resolve()
    if not p.is_relative_to(root.resolve()):  # a record names only files of its own results directory
        return None
    try:
        with open(p, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - max_bytes))
            data = f.read()
    except OSError:
        return None
    text = data.decode("utf-8", errors="replace")
    return "\n".join(text.splitlines()[-lines:])


def _href(root: Path, rel: str, out_dir: Path) -> str:
    target = os.path.relpath((root / rel).resolve(), out_dir.resolve())
    return quote(Path(target).as_posix(), safe="/._-~")


# ------------------------------------------------------------------ page
CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;margin:24px auto;
max-width:1120px;padding:0 16px;color:#222;background:#fff}
h1{font-size:24px;margin:0 0 4px}h2{font-size:20px;margin:32px 0 8px;border-bottom:2px solid #ddd;padding-bottom:4px}
h3{font-size:16px;margin:20px 0 6px}.muted{color:#666}
table{border-collapse:collapse;margin:8px 0 12px;font-size:13px}
th,td{border:1px solid #ddd;padding:3px 8px;text-align:right;vertical-align:top}
th{background:#f4f4f4}td.l,th.l{text-align:left}
.charts{display:flex;flex-wrap:wrap;gap:12px}.charts svg{border:1px solid #eee;background:#fff}
svg text{font-family:system-ui,"DejaVu Sans",sans-serif;fill:#333}svg .title{font-size:13px;font-weight:600}
svg .tick,svg .legend,svg .note,svg .marks-legend text{font-size:10px;fill:#555}svg .group{font-size:11px}
svg .value{font-size:10px}svg .seg-label{font-size:10px;fill:#fff}
svg .grid{stroke:#eee}svg .axis{stroke:#999}svg .ref{stroke:#444;stroke-dasharray:4 3}
svg .whisker{stroke:#222;stroke-width:1.2;fill:none}svg .mark-p50{fill:#fff;stroke:#222;stroke-width:1.2}
svg .mark-p99{fill:#222}svg .bar-group:hover .bar{opacity:.8}svg .cell{fill:none}
svg .readout{font-size:11px;fill:#222}svg .row:hover{stroke:#000;stroke-width:.1}
.planted.ok{color:#1a6b2a}.planted.missed{color:#a00}h4{font-size:14px;margin:14px 0 4px}
.legendbar span{display:inline-block;margin-right:14px}.sw{display:inline-block;width:11px;height:11px;
margin-right:4px;vertical-align:-1px}
pre{background:#f7f7f7;border:1px solid #e3e3e3;padding:8px;overflow:auto;max-height:360px;font-size:12px;
white-space:pre-wrap;word-break:break-word}
.cls{font-weight:600;color:#a00}.note{background:#fffbe6;border:1px solid #eedc82;padding:8px 10px}
nav a{margin-right:12px}
"""

SCRIPT = """
(function(){
  var errors = [];
  window.addEventListener('error', function(e){
    errors.push(String(e.message || e));
    document.body.setAttribute('data-report-status', 'error: ' + errors.join('; '));
  });
  function heatmap(svg){  // the readout under a heat map: the hovered cell's layer, experts and tokens
    var v = svg.getAttribute('data-v').split(';'), layers = svg.getAttribute('data-layers').split(',');
    var bin = +svg.getAttribute('data-bin'), n = +svg.getAttribute('data-experts');
    var cells = svg.querySelector('.cells'), out = svg.querySelector('.readout'), rows = [];
    for (var r = 0; r < v.length; r++) { rows.push(v[r].split(',')); }
    svg.addEventListener('mousemove', function(e){
      var m = cells.getScreenCTM();
      if (!m) { return; }
      var p = svg.createSVGPoint(); p.x = e.clientX; p.y = e.clientY; p = p.matrixTransform(m.inverse());
      var row = Math.floor(p.y), col = Math.floor(p.x);
      if (row < 0 || row >= rows.length || col < 0 || col >= rows[row].length) { return; }
      var lo = col * bin, hi = Math.min(n, lo + bin) - 1;
      out.textContent = 'layer ' + layers[row] + ', expert' + (hi > lo ? 's ' + lo + '\u2013' + hi : ' ' + lo) +
        ': ' + Number(rows[row][col]).toLocaleString('en') + ' tokens';
    });
  }
  function ready(){
    var charts = document.querySelectorAll('svg.chart'), drawn = 0;
    for (var i = 0; i < charts.length; i++) {
      if (charts[i].querySelector('.bar, .cell')) { drawn++; }
    }
    var maps = document.querySelectorAll('svg.heatmap');
    for (var j = 0; j < maps.length; j++) { heatmap(maps[j]); }
    document.body.setAttribute('data-charts', drawn + '/' + charts.length);
    if (!errors.length) { document.body.setAttribute('data-report-status', 'ok'); }
  }
  if (document.readyState === 'loading') { document.addEventListener('DOMContentLoaded', ready); } else { ready(); }
})();
"""

CSP = "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:"


def _legend(backends: Sequence[str], colors: dict[str, str]) -> str:
    items = "".join(f'<span><i class="sw" style="background:{colors[b]}"></i>{esc(b)}</span>' for b in backends)
    return f'<p class="legendbar">MoE backend: {items}</p>'


def _num_cell(v: float | None, ci: tuple[float, float] | None = None) -> str:
    if v is None or not ci:
        return f"<td>{esc(fmt_value(v))}</td>"
    lo, hi = fmt_value(ci[0]), fmt_value(ci[1])
    return (f'<td title="95% confidence interval {esc(lo)}–{esc(hi)}">{esc(fmt_value(v))} '
            f'<small>({esc(lo)}–{esc(hi)})</small></td>')


SUMMARY_COLUMNS = (("latency_s", "Latency (s)"), ("ttft_ms", "TTFT (ms)"), ("itl_ms", "ITL (ms)"),
                   ("itl_p50_ms", "ITL p50 (ms)"), ("itl_p99_ms", "ITL p99 (ms)"),
                   ("input_throughput_tok_per_s", "Input (tok/s)"), ("output_throughput_tok_per_s", "Output (tok/s)"))


def _summary_table(rows: Sequence[Row]) -> str:
    head = "".join(f"<th>{esc(h)}</th>" for _, h in SUMMARY_COLUMNS)
    out = [f'<table><tr><th class="l">config</th><th class="l">backend</th><th>runs</th>{head}'
           '<th>ITL floor (ms)</th><th>ITL eff.</th><th>TTFT eff.</th></tr>']
    notes = []
    for r in rows:
        cells = "".join(_itl_cell(r) if k == "itl_ms" else _num_cell(r.value(k), r.ci95.get(k))
                        for k, _ in SUMMARY_COLUMNS)
        out.append(f'<tr><td class="l">{esc(r.config)}</td><td class="l">{esc(r.backend or "?")}</td>'
                   f'<td>{esc(r.repeat or 1)}</td>{cells}{_num_cell(r.value("itl_floor_ms"))}'
                   f'<td>{pct(r.value("itl_efficiency"), none="-")}</td>'
                   f'<td>{pct(r.value("ttft_efficiency"), none="-")}</td></tr>')
        if r.delivery.get("bursty"):
            notes.append(f'<li>{esc(r.config)}: {esc(_burst_text(r))}</li>')
    out.append("</table>")
    if notes:
        out.append(f'<ul class="note bursts">{"".join(notes)}</ul>')
    return "".join(out)


def _burst_text(r: Row) -> str:
    d = r.delivery
    server = r.value("server_itl_ms")
    return (f"{BURST_MARK} the stream arrived in bursts ({100 * d.get('burst_share', 0):.0f}% of token gaps under "
            f"50 µs, longest stall {d.get('longest_stall_ms', 0):.0f} ms = {d.get('stall_ratio', 0):.0f}× the median "
            "gap), so its ITL describes delivery, not generation"
            + (f"; the server's own mean ITL: {server:.2f} ms" if server is not None else "") + ".")


def _itl_cell(r: Row) -> str:
    """The ITL cell, marked (with the reason as its tooltip) when the stream came in bursts."""
    if not r.delivery.get("bursty"):
        return _num_cell(r.value("itl_ms"), r.ci95.get("itl_ms"))
    return (f'<td class="bursty" title="{esc(_burst_text(r))}">{esc(fmt_value(r.value("itl_ms")))} '
            f'{BURST_MARK}</td>')


def _efficiency_tips(rows: Sequence[Row]) -> dict[str, str]:
    tips = {}
    for r in rows:
        parts = []
        for m, f in (("itl_ms", "itl_floor_ms"), ("ttft_ms", "ttft_floor_ms")):
            if r.value(f) is not None and r.value(m) is not None:
                parts.append(f"{METRIC[m].label} {fmt_value(r.value(m))} ms measured, floor {fmt_value(r.value(f))} ms")
        if parts:
            tips[r.key] = "; ".join(parts)
    return tips


def _model_section(idx: int, model: str, rows: Sequence[Row], colors: dict[str, str],
                   cat_colors: dict[str, str], root: Path = Path("."), out_dir: Path = Path(".")) -> str:
    out = [f'<section class="model" id="model-{idx}"><h2>{esc(model)}</h2>']
    workloads = list(dict.fromkeys(r.workload for r in rows))
    for w in workloads:
        wrows = [r for r in rows if r.workload == w]
        out.append(f'<h3>{esc(workload_label(w))}</h3>')
        out.append(_summary_table(wrows))
        out.append(html_notes(wrows))  # what the intervals are; configs one dimension apart, tested
        backends = [b for b in backend_order(wrows)]
        out.append(_legend(backends, colors))
        charts = [c for c in (bar_chart(wrows, k) for k in CHART_METRICS) if c is not None]
        out.append('<div class="charts">' + "".join(svg_bar_chart(c, colors) for c in charts) + "</div>")
        out.append("<h3>Efficiency against the planner's floor</h3>")
        eff = [c for c in (bar_chart(wrows, k) for k in ("itl_efficiency", "ttft_efficiency")) if c is not None]
        if eff:
            out.append('<p class="muted">Efficiency = the planner\'s roofline floor ÷ the measured value '
                       '(100% = at the floor; the dashed line).</p>')
            tips = _efficiency_tips(wrows)
            out.append('<div class="charts">' + "".join(svg_bar_chart(c, colors, tips) for c in eff) + "</div>")
        else:
            out.append('<p class="muted">No planner floor in these records (the planner computes floors for '
                       'GPU runs; CPU runs and runs without a plan have none).</p>')
        out.append("<h3>Extend and decode time breakdown</h3>")
        prof_errs = [r for r in wrows if r.ok and r.profile_error]
        if prof_errs:
            out.append('<p class="profile-failures">Profiling failed (the measured numbers stand):</p><ul>'
                       + "".join(f'<li>{esc(r.config)}: {esc(r.profile_error)}</li>'
                                 for r in sorted(prof_errs, key=lambda r: r.config)) + "</ul>")
        decs = decompositions(wrows)
        if decs:
            out.append("<h3>Where the time goes against the floor</h3>")
            out.append('<p class="muted">From the profiled steps of the first rank: the planner\'s floor, device '
                       'busy time above it by kernel group, device idle inside steps (launch and host work), and '
                       'host/other = the measured value minus the profiled step (between-step host time, '
                       'streaming, the profiler\'s own cost; negative when the profiled step is the longer). '
                       'The black tick is the measured value.</p>')
            out.append('<div class="charts">' + "".join(svg_decomposition(x) for x in decs) + "</div>")
        bds = breakdowns(wrows)
        if bds:
            out.append('<div class="charts">' + "".join(svg_breakdown(b, cat_colors) for b in bds) + "</div>")
        else:
            errs = sorted({r.profile_error for r in wrows if r.profile_error})
            why = f" ({'; '.join(errs)})" if errs else ""
            out.append(f'<p class="muted">No trace breakdown in these records{esc(why)}.</p>')
    out.append(_expert_load_section(rows, root, out_dir))
    out.append("</section>")
    return "".join(out)


def _failures(root: Path, failure: dict[str, Row], success: dict[str, Row], out_dir: Path) -> str:
    if not failure:
        return "<h2 id=\"failures\">Failures</h2><p>None.</p>"
    out = ['<h2 id="failures">Failures</h2>',
           '<table><tr><th class="l">model</th><th class="l">config</th><th class="l">class</th>'
           '<th class="l">phase</th><th class="l">message</th><th class="l">note</th></tr>']
    rows = sorted(failure.values(), key=lambda r: (r.model, r.config, r.key))
    for r in rows:
        note = []
        if r.key in success:
            note.append("last attempt failed; the earlier success is kept")
        if r.predicted:
            note.append("predicted by the planner, not launched")
        out.append(f'<tr><td class="l">{esc(r.model)}</td><td class="l">{esc(r.config)}</td>'
                   f'<td class="l cls">{esc(r.error_type or "Unknown")}</td><td class="l">{esc(r.error_phase or "-")}'
                   f'</td><td class="l">{esc(r.error_message or "")}</td><td class="l">{esc("; ".join(note))}</td></tr>')
    out.append("</table>")
    for r in rows:
        excerpt = log_excerpt(root, r.log_path)
        if not excerpt and not r.error_evidence:
            continue
        log_link = (f' — <a href="{esc(_href(root, r.log_path, out_dir))}">{esc(r.log_path)}</a>'
                    if r.log_path and (root / r.log_path).exists() else "")
        out.append(f'<details><summary>{esc(r.model)} {esc(r.config)}: <span class="cls">{esc(r.error_type)}</span>'
                   f' — log excerpt{log_link}</summary>')
        if r.error_evidence:
            out.append(f"<p>Lines the classifier matched:</p><pre>{esc(r.error_evidence)}</pre>")
        if excerpt:
            out.append(f"<p>Last lines of the log:</p><pre>{esc(excerpt)}</pre>")
        out.append("</details>")
    return "".join(out)


def _traces(root: Path, rows: Sequence[Row], success: dict[str, Row], out_dir: Path) -> str:
    with_traces = [r for r in rows if trace_files(r)]
    out = ['<h2 id="traces">Traces</h2>', f'<p class="note">{esc(PERFETTO_NOTE)}</p>']
    if not with_traces:
        out.append("<p>No traces in these records.</p>")
        return "".join(out)
    current_seqs = {r.seq for r in success.values()}
    out.append('<table><tr><th class="l">model</th><th class="l">config</th><th class="l">stage</th>'
               '<th class="l">trace file</th><th class="l">attempt</th></tr>')
    for r in sorted(with_traces, key=lambda r: (r.model, r.config, -r.seq)):
        state = "" if r.seq in current_seqs else " (superseded by a later attempt)"
        for stage, path in trace_files(r):
            if (root / path).exists():
                link = f'<a href="{esc(_href(root, path, out_dir))}">{esc(path)}</a>'
            else:
                link = f"{esc(path)} <span class=\"muted\">(file missing)</span>"
            out.append(f'<tr><td class="l">{esc(r.model)}</td><td class="l">{esc(r.config)}</td>'
                       f'<td class="l">{esc(stage)}</td><td class="l">{link}</td>'
                       f'<td class="l">{esc(r.attempt_id or "")}{esc(state)}</td></tr>')
    out.append("</table>")
    return "".join(out)


def render_html(rows: Sequence[Row], *, root: Path, out_dir: Path, title: str = "moetrace report") -> str:
    """The whole page, from the rows of a results directory (see :func:`data.load`)."""
    root, out_dir = Path(root), Path(out_dir)
    success, failure = current(rows)
    models = by_model(success.values())
    all_models = sorted({r.model for r in rows})
    colors = backend_colors(backend_order(rows))
    cat_colors = category_colors(c for r in rows for stage in ("extend", "decode")
                                 for c in sorted(r.breakdown.get(stage, {}), key=lambda c: -r.breakdown[stage][c]))
    last = max((r.finished_at or "" for r in rows), default="")
    versions: dict[str, set[str]] = {}
    for r in rows:
        if r.engine:
            versions.setdefault(r.engine, set()).update([r.engine_version] if r.engine_version else [])
    engines = [f"{e} {', '.join(sorted(v))}".strip() for e, v in sorted(versions.items())]
    nav = "".join(f'<a href="#model-{i}">{esc(m)}</a>' for i, m in enumerate(models))
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{esc(title)}</title><style>{CSS}</style></head>",
        '<body data-report-status="pending">',
        f"<h1>{esc(title)}</h1>",
        f'<p class="muted">Results: {esc(root)} — {len(rows)} attempt records, {len(success)} successful keys, '
        f'{len(failure)} failing keys, {len(all_models)} models; last record {esc(last or "-")}'
        f'{"; engines: " + esc(", ".join(engines)) if engines else ""}.</p>',
        f'<nav>{nav}<a href="#failures">Failures</a><a href="#traces">Traces</a></nav>',
        '<p class="muted">Bars: median over repetitions; hover a bar for its numbers. '
        'Groups: tensor/expert parallelism; colours: MoE backend.</p>',
    ]
    if not models:
        parts.append("<h2>Results</h2><p>No successful results.</p>")
    for i, (m, mrows) in enumerate(models.items()):
        parts.append(_model_section(i, m, mrows, colors, cat_colors, root, out_dir))
    parts.append(_failures(root, failure, success, out_dir))
    parts.append(_traces(root, rows, success, out_dir))
    parts.append(f"<script>{SCRIPT}</script></body></html>")
    return "\n".join(parts) + "\n"


def write_html(rows: Sequence[Row], *, root: Path, out: Path, title: str = "moetrace report") -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    text = render_html(rows, root=root, out_dir=out.parent, title=title)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, out)
    return out
