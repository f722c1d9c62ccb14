"""Where the time goes against the floor: measured ITL (decode) and TTFT (extend) in four parts.

Pure functions: a record's plan and metrics and a trace's per-step figures in, a dict out.

- ``floor_ms``: the planner's floor (plan/floors.py: weights, KV and compute at peak, collectives
  at link speed), with its terms;
- ``above_floor_ms``: the device's busy time in a step (union of its kernels over streams) minus
  the floor, split by group: the floor's communication term is taken from the communication
  kernels, the rest of the floor from the compute groups in proportion to their kernel time;
- ``idle_ms``: gaps on the device between the kernels of a step (launches, host work in the step);
- ``host_other_ms``: what is left of the measured figure: time between steps on the host,
  stream and detokenization, the profiler's own cost and run-to-run difference.

By construction floor + above + idle = the trace's busy + gaps of a step (``trace_parts_ms``),
which is checked against the step's device span (``trace_step_ms``, from the engine's step
annotation): ``trace_residual_pct``. The measured figure is of unprofiled runs; the trace's is
of a profiled one, so ``host_other_ms`` may be negative when the profiled step is the longer.
For the extend stage the figure is the mean prefill step, against TTFT (which adds the request's
queueing, tokenization and the first token's trip to the client).
"""

from __future__ import annotations

from typing import Any

__all__ = ["GROUPS", "decompose", "decompose_stage", "step_times_dict"]

GROUPS = ("moe", "attention", "gemm", "communication", "other")
_STAGES = {"decode": ("itl_ms", "itl_floor_ms", {"weights": "decode_weights_ms", "kv_cache": "decode_kv_ms",
                                                   "compute": "decode_compute_ms", "communication": "decode_comm_ms"}),
           "extend": ("ttft_ms", "ttft_floor_ms", {"compute": "prefill_compute_ms", "weights": "prefill_weights_ms",
                                                     "communication": "prefill_comm_ms"})}


def step_times_dict(summary: Any, stage: str) -> dict[str, Any] | None:
    """A trace summary's per-step figures of ``stage`` (ms), as a record keeps them; None without steps."""
    st = stage.upper()
    t = getattr(summary, "step_times", {}).get(st)
    s = summary.stages.get(st)
    if s is None or s.steps is None:
        return None
    if t is None:  # host-only trace (CPU engine): op time, no device gaps
        busy = sum(v for k, v in s.category_us.items() if k != "idle") / s.steps.count
        from .analyze import short_breakdown
        groups = {g: busy * v / 100 for g, v in short_breakdown(summary, st).items() if g in GROUPS}
        return {"source": "host", "steps": s.steps.count, "step_ms": _r(s.steps.mean_us / 1e3),
                "busy_ms": _r(busy / 1e3), "idle_ms": None,
                "group_ms": {g: _r(groups.get(g, 0.0) / 1e3) for g in GROUPS}}
    return {"source": s.steps.source, "steps": t.steps, "step_ms": _r(s.steps.mean_us / 1e3),
            "busy_ms": _r(t.busy_us / 1e3), "idle_ms": _r(t.gaps_us / 1e3),
            "group_ms": {g: _r(t.group_us.get(g, 0.0) / 1e3) for g in GROUPS}}


def decompose_stage(stage: str, measured_ms: float | None, floor_ms: float | None, floor_terms: dict[str, float],
                    times: dict[str, Any] | None) -> dict[str, Any] | None:
    if times is None:
        return None
    busy = float(times["busy_ms"])
    idle = times.get("idle_ms")
    groups = {g: float(times["group_ms"].get(g, 0.0)) for g in GROUPS}
    kernel_sum = sum(groups.values()) or 1.0
    scaled = {g: v * busy / kernel_sum for g, v in groups.items()}  # overlapping streams: scale to the union
    above: dict[str, float] | None = None
    if floor_ms is not None:
        comm_floor = min(float(floor_terms.get("communication") or 0.0), floor_ms)
        rest = floor_ms - comm_floor
        compute_groups = [g for g in GROUPS if g != "communication"]
        compute_time = sum(scaled[g] for g in compute_groups) or 1.0
        above = {g: scaled[g] - rest * scaled[g] / compute_time for g in compute_groups}
        above["communication"] = scaled["communication"] - comm_floor
    parts = busy + (idle or 0.0)
    step = times.get("step_ms")
    out: dict[str, Any] = {
        "metric": _STAGES[stage][0], "measured_ms": _r(measured_ms), "floor_ms": _r(floor_ms),
        "floor_terms_ms": {k: _r(v) for k, v in floor_terms.items()},
        "above_floor_ms": _r(busy - floor_ms) if floor_ms is not None else None,
        "above_floor_by_group_ms": {g: _r(v) for g, v in above.items()} if above else None,
        "busy_ms": _r(busy), "idle_ms": _r(idle), "trace_parts_ms": _r(parts), "trace_step_ms": _r(step),
        "trace_residual_pct": _r(100 * (parts - step) / step) if step else None,
        "host_other_ms": _r(measured_ms - parts) if measured_ms is not None else None,
        "source": times.get("source"), "steps": times.get("steps"),
    }
    return out


def decompose(plan: dict[str, Any] | None, metrics: dict[str, Any], step_times: dict[str, Any] | None
              ) -> dict[str, Any]:
    """Per stage (``decode``, ``extend``): the decomposition, from a record's plan, metrics and
    ``profile.step_times``; stages without a trace are left out."""
    out = {}
    for stage, (metric, floor_key, terms) in _STAGES.items():
        times = (step_times or {}).get(stage)
        floor = metrics.get(floor_key) if metrics.get(floor_key) is not None else (plan or {}).get(floor_key)
        floor_terms = {k: float(plan[v]) for k, v in terms.items() if plan and plan.get(v) is not None}
        d = decompose_stage(stage, metrics.get(metric), floor, floor_terms, times)
        if d is not None:
            out[stage] = d
    return out


def _r(x: float | None) -> float | None:
    return None if x is None else round(float(x), 4)
