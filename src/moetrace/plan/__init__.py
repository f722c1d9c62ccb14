"""The planner: will a config fit in GPU memory, and what is the fastest it could run.

Pure library code (no engine, no GPU needed). Entry points::

    plan_config(preset, config, gpu="h200", batch=1, input_len=4096, output_len=512,
                mem_fraction=None, engine="sglang") -> Plan
    plan_matrix(preset, **kw) -> list[Plan]
    format_plan_table(plans) -> str                     # GitHub markdown + assumptions
    count_params(hf_config, include_mtp=False) -> ParamCount
    check.planner_accuracy(records) -> dict; check.format_accuracy(acc) -> str
    efficiency(floor_ms, measured_ms) -> float | None
    floor_fields(plan, itl_ms=..., ttft_ms=...) -> dict  # fields for a success record

Formulas and assumptions: docs/planner.md.
"""

from __future__ import annotations

from typing import Any

from ..text import num
from .check import contradiction, format_accuracy, planner_accuracy
from .floors import CommModel
from .hardware import GPU, GPUS, custom_gpu, detect_gpu, resolve_gpu
from .params import ParamCount, count_params
from .planner import Plan, PlannerSettings, plan_config, plan_matrix
from .table import format_plan_table

__all__ = ["CommModel", "GPU", "GPUS", "ParamCount", "Plan", "PlannerSettings", "contradiction", "count_params",
           "custom_gpu", "detect_gpu", "efficiency", "floor_fields", "format_accuracy", "format_plan_table",
           "plan_config", "plan_matrix", "planner_accuracy", "resolve_gpu"]


def efficiency(floor_ms: float | None, measured_ms: float | None) -> float | None:
    """floor / measured (1.0 = at the roofline), or None when either is missing, zero,
    negative or not finite. Above 1 means the measurement beat the floor: the floor's
    assumptions are wrong for that config (worth a look, not clipped)."""
    f, m = num(floor_ms, positive=True), num(measured_ms, positive=True)
    if f is None or m is None:
        return None
    return f / m


def floor_fields(plan: Plan | dict[str, Any] | None, *, itl_ms: float | None = None,
                 ttft_ms: float | None = None) -> dict[str, float | None]:
    """``itl_floor_ms``, ``ttft_floor_ms`` and their efficiencies for a success record."""
    if plan is None:
        return {"itl_floor_ms": None, "ttft_floor_ms": None, "itl_efficiency": None, "ttft_efficiency": None}
    get = plan.get if isinstance(plan, dict) else lambda k: getattr(plan, k, None)
    itl_f, ttft_f = get("itl_floor_ms"), get("ttft_floor_ms")
    return {"itl_floor_ms": itl_f, "ttft_floor_ms": ttft_f,
            "itl_efficiency": efficiency(itl_f, itl_ms), "ttft_efficiency": efficiency(ttft_f, ttft_ms)}
