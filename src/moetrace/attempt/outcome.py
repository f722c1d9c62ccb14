"""The records an attempt commits: one failure (classified from the exception and the server log),
a predicted failure without a launch, or one success per batch size (with the planner's floors)."""

from __future__ import annotations

from typing import Any

from ..measure.telemetry import telemetry_brief
from ..results.classify import classify
from ..results.record import Error, Record, Workload, now_iso
from .context import Attempt, StageError
from .launch import launch_count
from .measure import Runs, aggregate


def predicted_failure(ctx: Attempt) -> Record | None:
    """The record of a config the planner says will not fit, when such configs are skipped; else None."""
    plan, opts = ctx.plan, ctx.opts
    if not (plan and plan.get("verdict") == "will_not_fit" and opts.skip_predicted and not opts.base_url):
        return None
    ctx.progress.step(f"{ctx.preset.name} {ctx.config.name}")
    ctx.progress.done("skipped: predicted not to fit (use --no-skip-predicted to launch anyway)")
    return ctx.base.copy(key=ctx.key(opts.batch_sizes[0]), status="failure", finished_at=now_iso(), predicted=True,
                         error=Error(type="OOM", message=plan.get("reason", "predicted not to fit"), predicted=True,
                                     phase="plan"))


def failure(ctx: Attempt, err: StageError) -> Record:
    """The failure record of a stage's error, classified from the live launch's exit code and log."""
    exc, live = err.cause, ctx.live
    code = live.exit_code(exc) if live is not None else getattr(exc, "exit_code", None)
    log_path = live.log_path if live is not None else ctx.adir / "server.log"
    log_text = live.log_text() if live is not None else ""
    c = classify(exception=type(exc).__name__, message=str(exc), exit_code=code, log_text=log_text, phase=err.phase)
    rec = ctx.base.copy(key=ctx.key(ctx.opts.batch_sizes[0]), status="failure", finished_at=now_iso(),
                        error=Error(type=c.error_type, message=c.error_message, evidence=c.evidence,
                                    exception=type(exc).__name__, exit_code=code, phase=err.phase,
                                    log_path=ctx.rel(log_path) if log_path.exists() else None))
    rec.plan_check = plan_check(ctx.plan, "failure", c.error_type)
    if not rec.engine.resolved and (resolved := ctx.engine.resolved_backends(log_text)):
        rec.engine.resolved = resolved
    return rec


def successes(ctx: Attempt, runs: Runs, profile: dict[str, Any], nonce: str | None) -> list[Record]:
    """One success record per batch size."""
    opts, live = ctx.opts, ctx.live
    log_path = live.log_path if live is not None else ctx.adir / "server.log"
    out = []
    for bs, agg in aggregate(runs).items():
        rec = ctx.base.copy(key=ctx.key(bs), status="success", finished_at=now_iso(),
                            workload=Workload(batch_size=bs, input_len=opts.input_len, output_len=opts.output_len,
                                              repeat=opts.repeat, launches=ctx.launches or launch_count(ctx.config, opts),
                                              seed=opts.seed, prompt_nonce=nonce),
                            metrics=agg, runs=runs[bs], profile=profile,
                            log_path=ctx.rel(log_path) if log_path.exists() else None,
                            plan_check=plan_check(ctx.plan, "success", None))
        if ctx.launches_stopped:  # --launches auto: why it measured this many
            rec.workload.launches_stopped = ctx.launches_stopped
        add_floors(rec, ctx.plan)
        if any("telemetry" in x for x in runs[bs]):
            rec.telemetry = telemetry_brief(runs[bs], ctx.rel(ctx.adir / "telemetry.csv"))
        out.append(rec)
    return out


def plan_check(plan: dict[str, Any] | None, status: str, error_type: str | None) -> str | None:
    """A line when the real outcome contradicts the planner's prediction, else None."""
    if not plan:
        return None
    from ..plan.check import contradiction
    return contradiction(plan, status, error_type)


def add_floors(rec: Record, plan: dict[str, Any] | None) -> None:
    """The planner's floors and efficiency = floor / measured, into the metrics; and, when the
    profile has step times, where ITL and TTFT go against the floor (``profile.decomposition``)."""
    m = rec.metrics
    if plan:
        from ..plan import floor_fields
        m.update({k: v for k, v in floor_fields(plan, itl_ms=m.itl_ms, ttft_ms=m.ttft_ms).items() if v is not None})
    if rec.profile is not None and rec.profile.step_times:
        from ..traces.decompose import decompose
        rec.profile.decomposition = decompose(plan, m.to_dict(), rec.profile.step_times)  # per batch size
