"""The report's charts as SVG, drawn in Python with no element per data point where data is dense:
grouped bars (``svg_bar_chart``), time breakdowns (``svg_breakdown``), floor decompositions
(``svg_decomposition``), the expert-load heat map (``svg_heatmap``) and EP-rank shares (``svg_ep_ranks``).
Every text from a record goes through :func:`esc`."""

from __future__ import annotations

import html as _html
import math
from typing import Sequence

from ..text import clip
from .data import DECOMPOSITION_PARTS, Bar, BarChart, Breakdown, Decomposition, LoadMap, fmt_value, nice_ticks

__all__ = ["esc", "svg_bar_chart", "svg_breakdown", "svg_decomposition", "svg_heatmap", "svg_ep_ranks", "HEAT",
           "HEAT_ZERO", "PALETTE_EP"]

_PART_COLORS = {"floor": "#2b6cb0", "above floor: moe": "#dd6b20", "above floor: attention": "#38a169",
                "above floor: gemm": "#805ad5", "above floor: communication": "#e53e3e",
                "above floor: other": "#718096",
                "idle in steps": "#cbd5e0", "host/other": "#f6e05e"}


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
    out += _legend(bd.categories, {c: colors.get(c, "#888") for c in bd.categories}, per_line, axis_y, width=20)
    out.append("</svg>")
    return "".join(out)


def _legend(names: Sequence[str], colors: dict[str, str], per_line: int, axis_y: float, width: int) -> list[str]:
    """A swatch and a name (clipped to ``width`` characters) per entry, ``per_line`` to a line under the axis."""
    out = []
    for j, k in enumerate(names):
        lx = 8 + (j % per_line) * ((W - 16) / per_line)
        ly = axis_y + 30 + (j // per_line) * 16
        out.append(f'<rect x="{lx:.1f}" y="{ly - 9}" width="10" height="10" fill="{colors[k]}"/>'
                   f'<text class="legend" x="{lx + 14:.1f}" y="{ly}">{esc(clip(k, width))}<title>{esc(k)}</title></text>')
    return out


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
    out += _legend(DECOMPOSITION_PARTS, _PART_COLORS, per_line, axis_y, width=26)
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
