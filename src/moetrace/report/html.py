"""``moetrace report``: one self-contained HTML file, re-rendered from saved records.

Everything is inline: CSS, the charts as SVG drawn here in Python, and a short
script that only marks the page as loaded (``<body data-report-status="ok">``) or
records a script error, which the browser test reads. A Content-Security-Policy
forbids every network fetch, so the page opens offline and stays that way.

Every text that comes from a record (model and config names, error messages, log
lines, paths) goes through :func:`esc`.

The charts are ``svg.py``'s. A config run with ``--expert-load`` gets, per stage, a layer x expert heat map of the tokens
its experts received (:func:`svg_heatmap`: no element or text per cell, so a map of 160 experts
x 2 layers is about 5 KB, and one of 384 experts (binned to 192 columns) x 58 layers about
100 KB), and with EP > 1 the share each EP rank's experts received (:func:`svg_ep_ranks`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence
from urllib.parse import quote

from ..text import pct
from .data import (CHART_METRICS, METRIC, Row, backend_colors, backend_order, bar_chart, breakdowns, by_model,
                   category_colors, config_sort_key, current, decompositions, ep_rank_bars, expert_load_note,
                   fmt_value, load_maps, trace_files, workload_label)
from .significance import html_notes
from .svg import esc, svg_bar_chart, svg_breakdown, svg_decomposition, svg_ep_ranks, svg_heatmap
from .tables import BURST_MARK

__all__ = ["render_html", "write_html", "esc", "log_excerpt"]

PERFETTO_NOTE = (
    "To open a trace, go to https://ui.perfetto.dev in a browser and drag the file onto the page "
    "(or use “Open trace file”). The UI runs locally in the browser: the file is not uploaded. "
    "Files ending in .json.gz open as they are; chrome://tracing opens them too. "
    "The links below are relative to this report, so keep it inside (or next to) the results directory.")


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
