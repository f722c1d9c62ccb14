"""Markdown views of trace summaries (pure: summaries in, text out)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from .categories import CATEGORIES

if TYPE_CHECKING:
    from .analyze import MultiSummary, StageSummary, TraceSummary

__all__ = ["breakdown_line", "format_multi", "format_trace"]

_GROUP_LABELS = {"moe": "MoE", "attention": "attention", "gemm": "GEMM", "communication": "communication",
                 "other": "other", "idle": "idle"}
_NAME_WIDTH = 90


def _ms(us: float | None) -> str:
    return "-" if us is None else f"{us / 1000:.3f}"


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _short_name(name: str) -> str:
    return name if len(name) <= _NAME_WIDTH else name[: _NAME_WIDTH - 1] + "…"


def breakdown_line(stage: str, breakdown: dict[str, float]) -> str:
    """``decode: MoE 41.0%, attention 22.0%, ...`` (largest first)."""
    parts = sorted(breakdown.items(), key=lambda kv: -kv[1])
    return f"{stage.lower()}: " + ", ".join(f"{_GROUP_LABELS.get(g, g)} {v:.1f}%" for g, v in parts)


def _stage_rows(stages: dict[str, StageSummary]) -> list[str]:
    lines = ["| stage | steps | mean ms | p50 ms | p99 ms | timed on |", "|---|---:|---:|---:|---:|---|"]
    for stage, s in stages.items():
        st = s.steps
        if st is None:
            lines.append(f"| {stage} | 0 | - | - | - | - |")
        else:
            lines.append(f"| {stage} | {st.count} | {_ms(st.mean_us)} | {_ms(st.p50_us)} | {_ms(st.p99_us)} "
                         f"| {st.source} |")
    return lines


def _category_rows(t: TraceSummary) -> list[str]:
    stages = list(t.stages)
    head = "| category | total ms | share | " + " | ".join(f"{s} share" for s in stages) + " |"
    lines = [head, "|---|---:|---:|" + "---:|" * len(stages)]
    shares = t.shares()
    stage_shares = {s: v.shares() for s, v in t.stages.items()}
    for cat in sorted(t.category_us, key=lambda c: -t.category_us[c]):
        if t.category_us[cat] <= 0:
            continue
        per_stage = " | ".join(_pct(stage_shares[s].get(cat, 0.0)) for s in stages)
        label = CATEGORIES.get(cat, cat)
        lines.append(f"| {label} | {_ms(t.category_us[cat])} | {_pct(shares.get(cat, 0.0))} | {per_stage} |")
    return lines


def format_trace(t: TraceSummary, *, top_n: int | None = None) -> str:
    from .analyze import short_breakdown

    what = "device kernels" if t.has_device else "host ops (no device activity in the trace)"
    title = f"### {Path(t.path).name}"
    facts = [f"rank {t.rank}" if t.rank is not None else "rank ?", t.engine or "engine ?", what]
    if t.stage:
        facts.insert(1, t.stage)
    if t.header.get("device_names"):
        facts.append(", ".join(t.header["device_names"]))
    lines = [title, "", "; ".join(facts) + f"; {t.events} events, {t.bytes_read / 1e6:.1f} MB", ""]
    lines += [breakdown_line(s, short_breakdown(t, s)) for s in t.stages] + [""]
    lines += _stage_rows(t.stages) + [""]
    lines += _category_rows(t) + [""]
    if t.has_device:
        lines.append(f"device busy {_ms(t.busy_us)} ms; idle inside steps {_ms(t.idle_us)} ms; "
                     f"idle between steps {_ms(t.idle_between_steps_us)} ms")
        lines.append("")
    ops = t.top_ops[:top_n] if top_n else t.top_ops
    kind = "kernel" if t.has_device else "op"
    lines += [f"| # | {kind} | category | count | total ms | share |", "|---:|---|---|---:|---:|---:|"]
    lines += [f"| {i} | `{_short_name(o.name)}` | {o.category} | {o.count} | {_ms(o.total_us)} | {_pct(o.share)} |"
              for i, o in enumerate(ops, 1)]
    if t.unmatched_names:
        lines += ["", f"unmatched: {t.unmatched_names} names, {_ms(t.unmatched_us)} ms "
                  f"({_pct(t.unmatched_us / max(t.busy_us, 1e-9))} of busy time):"]
        lines += [f"- `{_short_name(o.name)}` ({o.count}x, {_ms(o.total_us)} ms)" for o in t.unmatched]
    return "\n".join(lines) + "\n"


def format_multi(m: MultiSummary, *, top_n: int | None = None) -> str:
    lines = ["## Across ranks", ""]
    for g in m.groups:
        head = f"### {g.stage}: {len(g.rows)} rank(s)"
        if len(g.rows) > 1:
            held = next((r for r in g.rows if r.path == g.bottleneck_path), None)
            if held is not None and any(r.collective_us > 0 for r in g.rows):
                head += (f"; rank {g.bottleneck_rank} holds the others back (least time in collectives: "
                         f"{_ms(held.collective_us)} ms)")
            head += f"; longest mean step: rank {g.slowest_rank}"
            head += (f" ({g.spread:.3f}x the fastest, waiting in collectives included)" if g.spread else "")
        lines += [head, ""]
        lines += ["| rank | mean step ms | busy ms | in collectives ms | busy outside collectives ms | breakdown |",
                  "|---:|---:|---:|---:|---:|---|"]
        for r in g.rows:
            mark = " (holds others back)" if len(g.rows) > 1 and r.path == g.bottleneck_path else ""
            parts = sorted(r.breakdown.items(), key=lambda kv: -kv[1])
            bd = ", ".join(f"{_GROUP_LABELS.get(k, k)} {v:.1f}%" for k, v in parts)
            lines.append(f"| {r.rank}{mark} | {_ms(r.step_mean_us)} | {_ms(r.busy_us)} | {_ms(r.collective_us)} "
                         f"| {_ms(r.compute_us)} | {bd} |")
        lines += ["", "all ranks: " + breakdown_line(g.stage, g.breakdown), ""]
    lines += ["## Per rank", ""]
    for t in m.traces:
        lines.append(format_trace(t, top_n=top_n))
    return "\n".join(lines)

