"""The executor interface, and the local executor: the jobs one after another in this process
(the default). A job is one config of one model and, when it fails, its fallback."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Protocol

from ..plan.run import plan_for
from ..attempt import run_config

if TYPE_CHECKING:
    from ..results.record import Record

__all__ = ["Executor", "LocalExecutor", "run_job"]


class Executor(Protocol):
    def execute(self, jobs: list[Any], opts: Any, store: Any, progress: Any,
                on_done: Callable[[Any, list[Record]], None]) -> None: ...


def run_job(job: Any, opts: Any, store: Any, progress: Any) -> list[Record]:
    """One config and, when it failed and has one, its fallback."""
    progress.prefix = f"[{job.index}/{job.total}] "
    recs = run_config(job.preset, job.config.without_fallback(), opts, store, progress=progress, plan=job.plan)
    if job.config.fallback and any(r.status == "failure" for r in recs):
        fb = job.config.fallback
        progress.step(f"{job.preset.name} {job.config.name} failed; running fallback {fb.name}")
        progress.done("starting")
        recs += run_config(job.preset, fb, opts, store, progress=progress, role="fallback",
                           plan=plan_for(job.preset, fb, opts))
    return recs


@dataclass
class LocalExecutor:
    """Runs the jobs one after another in this process (the default)."""

    def execute(self, jobs, opts, store, progress, on_done) -> None:
        for job in jobs:
            on_done(job, run_job(job, opts, store, progress))
