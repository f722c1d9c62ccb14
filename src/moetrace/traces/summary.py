"""What a profiled attempt's record says of its traces: one analysis per per-rank file, the files
that hold no step of their stage, and per stage the breakdown of every rank and the rank the
others wait for (the record's ``profile``; the runner's profile stage calls these)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable


def analyse(stages: dict[str, list[Path]]) -> tuple[dict[Path, Any], list[str]]:
    """One analysis per per-rank trace file (frontend files have no steps and are skipped)."""
    try:
        from .analyze import analyze_trace
    except ImportError as e:  # analyzer not available: keep traces, say why
        return {}, [f"analyzer unavailable: {e}"]
    out: dict[Path, Any] = {}
    errors = []
    for stage, files in stages.items():
        for f in files:
            if "__rank" not in f.name:
                continue
            try:
                out[f] = analyze_trace(f)
            except Exception as e:  # a trace the analyzer cannot read must not cost the result
                errors.append(f"{stage}: {type(e).__name__}: {e}")
    return out, errors


def empty_files(stages: dict[str, list[Path]], summaries: dict[Path, Any]) -> dict[str, list[Path]]:
    """Per stage, the per-rank files that hold no step of that stage (a profiling failure)."""
    from .analyze import step_count
    out: dict[str, list[Path]] = {}
    for stage, files in stages.items():
        bad = [f for f in files if f in summaries and step_count(summaries[f], stage) == 0]
        if bad:
            out[stage] = bad
    return out


def breakdowns(stages: dict[str, list[Path]], summaries: dict[Path, Any], empty: dict[str, list[Path]],
               rel: Callable[[Any], str | None]) -> dict[str, Any]:
    """Per stage: every rank's short breakdown and collective time, the rank the others wait for,
    and (``breakdown``, for tables) the first rank's breakdown."""
    from .analyze import group_stages, short_breakdown
    from .decompose import step_times_dict
    breakdown: dict[str, Any] = {}
    step_times: dict[str, Any] = {}
    by_rank: dict[str, Any] = {}
    bottleneck: dict[str, Any] = {}
    for stage, files in stages.items():
        ranked = [f for f in files if f in summaries and f not in empty.get(stage, [])]
        if not ranked:
            continue
        breakdown[stage] = short_breakdown(summaries[ranked[0]], stage)
        step_times[stage] = step_times_dict(summaries[ranked[0]], stage)
        g = {g.stage: g for g in group_stages([summaries[f] for f in ranked])}.get(stage.upper())
        by_rank[stage] = [_rank_row(summaries[f], f, stage, g, rel) for f in ranked]
        if g is not None and len(g.rows) > 1:
            bottleneck[stage] = {"rank": g.bottleneck_rank, "longest_step_rank": g.slowest_rank}
    return {"breakdown": breakdown, "breakdown_by_rank": by_rank, "bottleneck": bottleneck,
            "step_times": {k: v for k, v in step_times.items() if v is not None}}


def _rank_row(t: Any, f: Path, stage: str, g: Any, rel: Callable[[Any], str | None]) -> dict[str, Any]:
    """One rank's line of ``breakdown_by_rank``."""
    from .analyze import short_breakdown, step_count
    row = next((r for r in g.rows if r.path == t.path), None) if g else None
    other = "decode" if stage == "extend" else "extend"
    # A decode window armed before its request (vLLM's retry, or a stream that came in one burst) holds that
    # request's prefill step(s) too: said here, not hidden; the breakdown counts this stage's steps only.
    return {"rank": t.rank, "parallel": t.parallel, "trace": rel(f), "steps": step_count(t, stage),
            "other_stage_steps": step_count(t, other),
            "breakdown": short_breakdown(t, stage),
            "busy_ms": round(row.busy_us / 1000, 3) if row else None,
            "collective_ms": round(row.collective_us / 1000, 3) if row else None,
            "step_mean_ms": round(row.step_mean_us / 1000, 3) if row and row.step_mean_us else None}
