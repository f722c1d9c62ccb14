"""Markdown views of trace summaries (pure: summaries in, text out)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ..text import pct
from .analyze import MultiSummary, short_breakdown
from .categories import CATEGORIES

if TYPE_CHECKING:
    from .analyze import StageGroup, StageSummary, TraceSummary
    from .layers import CommStats, LayerStats

__all__ = ["breakdown_line", "comm_line", "format_multi", "format_summary", "format_trace", "layer_table",
           "wait_lines"]


def format_summary(summary: TraceSummary | MultiSummary, *, top_n: int | None = None) -> str:
    """Markdown text of a summary (the CLI's output)."""
    if isinstance(summary, MultiSummary):
        return format_multi(summary, top_n=top_n)
    return format_trace(summary, top_n=top_n)

_GROUP_LABELS = {"moe": "MoE", "attention": "attention", "gemm": "GEMM", "communication": "communication",
                 "other": "other", "idle": "idle"}
_NAME_WIDTH = 90


def _ms(us: float | None) -> str:
    return "-" if us is None else f"{us / 1000:.3f}"


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
        per_stage = " | ".join(pct(stage_shares[s].get(cat, 0.0), 1) for s in stages)
        label = CATEGORIES.get(cat, cat)
        lines.append(f"| {label} | {_ms(t.category_us[cat])} | {pct(shares.get(cat, 0.0), 1)} | {per_stage} |")
    return lines


def layer_table(stats: LayerStats) -> list[str]:
    """Per-layer mean µs of one stage: span, attention, MoE, GEMM, communication, other."""
    from .layers import layer_groups

    counts = ", ".join(f"{n} layers: {k} steps" for n, k in stats.layer_counts.items())
    lines = [f"{stats.stage.lower()}: {stats.layers_per_step} layers a step ({counts}); mean µs per step",
             "", "| layer | kind | span | " + " | ".join(layer_groups) + " |",
             "|---|---|---:|" + "---:|" * len(layer_groups)]
    for r in [*stats.rows, stats.mean, stats.outside]:
        if r is None:
            continue
        span = "-" if r.index == "outside" else f"{r.span_us:.1f}"
        lines.append(f"| {r.index} | {r.kind} | {span} | " + " | ".join(f"{r.group_us[g]:.1f}" for g in layer_groups)
                     + " |")
    return lines


def comm_line(c: CommStats) -> str:
    """``decode collectives: 42 calls in 7 steps, 13.777 ms (all-reduce 35 ...), 0.0% overlapped compute``."""
    kinds = ", ".join(f"{CATEGORIES.get(k, k)} {int(v['calls'])} calls {_ms(v['us'])} ms" for k, v in c.by_kind.items())
    share = c.overlapped_us / c.total_us if c.total_us else 0.0
    return (f"{c.stage.lower()} collectives: {c.calls} calls in {c.steps} steps, {_ms(c.total_us)} ms ({kinds}); "
            f"{_ms(c.overlapped_us)} ms ({pct(share, 1)}) overlapped compute on another stream")


def wait_lines(g: StageGroup) -> list[str]:
    """Wait versus transfer inside collectives per rank, and per step the rank the others waited for."""
    w = g.wait
    if w is None:
        return []
    parts = [f"rank {r} waited {_ms(wt)} ms, transfer {_ms(tr)} ms"
             for r, wt, tr in zip(w.ranks, w.wait_us, w.transfer_us, strict=True)]
    lines = [f"{g.stage.lower()} collectives ({w.matched_calls} calls matched across ranks): " + "; ".join(parts)]
    for rank, n in sorted(w.held_steps.items(), key=lambda kv: -kv[1]):
        holds = [us for _, r, us in w.steps if r == rank]
        lines.append(f"rank {rank} held the others back in {n} of {len(w.steps)} steps, by {_ms(sum(holds) / n)} ms "
                     f"a step (max {_ms(max(holds))} ms)")
    lines.append("per step (step: rank, others' wait ms): "
                 + ", ".join(f"{i}: {r}, {_ms(us)}" for i, r, us in w.steps[:20])
                 + (" ..." if len(w.steps) > 20 else ""))
    return lines


def format_trace(t: TraceSummary, *, top_n: int | None = None) -> str:
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
    for stats in t.layers.values():
        lines += layer_table(stats) + [""]
    for c in t.comm.values():
        lines += [comm_line(c), ""]
    ops = t.top_ops[:top_n] if top_n else t.top_ops
    kind = "kernel" if t.has_device else "op"
    lines += [f"| # | {kind} | category | count | total ms | share |", "|---:|---|---|---:|---:|---:|"]
    lines += [f"| {i} | `{_short_name(o.name)}` | {o.category} | {o.count} | {_ms(o.total_us)} | {pct(o.share, 1)} |"
              for i, o in enumerate(ops, 1)]
    if t.unmatched_names:
        lines += ["", f"unmatched: {t.unmatched_names} names, {_ms(t.unmatched_us)} ms "
                  f"({pct(t.unmatched_us / max(t.busy_us, 1e-9), 1)} of busy time):"]
        lines += [f"- `{_short_name(o.name)}` ({o.count}x, {_ms(o.total_us)} ms)" for o in t.unmatched]
    return "\n".join(lines) + "\n"


def format_multi(m: MultiSummary, *, top_n: int | None = None) -> str:
    lines = ["## Across ranks", ""]
    for g in m.groups:
        head = f"### {g.stage}: {len(g.rows)} rank(s)"
        if len(g.rows) > 1:
            held = next((r for r in g.rows if r.path == g.bottleneck_path), None)
            if held is not None and g.wait is not None:
                head += (f"; rank {g.bottleneck_rank} holds the others back (they wait for it in "
                         f"{g.wait.held_steps.get(g.bottleneck_rank, 0)} of {len(g.wait.steps)} steps)")
            elif held is not None and any(r.collective_us > 0 for r in g.rows):
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
        lines += ["", *wait_lines(g)]
        lines += ["", "all ranks: " + breakdown_line(g.stage, g.breakdown), ""]
    lines += ["## Per rank", ""]
    for t in m.traces:
        lines.append(format_trace(t, top_n=top_n))
    return "\n".join(lines)

