"""The sweep: (preset, configs) pairs -> plan -> one run per config through an
executor -> the spec's tables. A failed config is recorded and the sweep goes on;
a fallback runs only when its primary failed."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from .engines.process import reap_orphans
from .executors.local import Executor, LocalExecutor, run_job
from .matrix import Config
from .presets import Preset
from .report.tables import append_step_summary, config_table, full_report
from .plan.run import engine_mem_fraction, plan_for
from .results.flat import failure_entry, success_entry
from .results.record import Record, result_key
from .results.store import ResultsStore
from .attempt import Progress, RunOptions, workload_suffix

__all__ = ["Job", "Executor", "LocalExecutor", "plan_jobs", "run_sweep", "job_failed", "plan_for",
           "engine_mem_fraction", "run_job"]


@dataclass
class Job:
    preset: Preset
    config: Config
    plan: dict[str, Any] | None = None
    index: int = 0
    total: int = 0

    @property
    def label(self) -> str:
        return f"[{self.index}/{self.total}] {self.preset.name} {self.config.name}"


def plan_jobs(targets: Iterable[tuple[Preset, list[Config]]], opts: RunOptions, store: ResultsStore, *,
              skip_succeeded: bool = False, only_failed: bool = False,
              note: Callable[[str], None] = lambda s: print(s, file=sys.stderr)) -> list[Job]:
    success, failure = store.views() if (skip_succeeded or only_failed) else ({}, {})
    jobs: list[Job] = []
    for preset, configs in targets:
        for c in configs:
            keys = [result_key(preset.name, c.name, workload_suffix(bs, opts.input_len, opts.output_len))
                    for bs in opts.batch_sizes]
            if skip_succeeded and all(k in success for k in keys):
                note(f"skip {preset.name} {c.name}: already succeeded (--skip-succeeded)")
                continue
            if only_failed and not any(k in failure for k in keys):
                note(f"skip {preset.name} {c.name}: not in failures (--only-failed)")
                continue
            jobs.append(Job(preset, c, plan_for(preset, c, opts)))
    for i, j in enumerate(jobs, 1):
        j.index, j.total = i, len(jobs)
    return jobs


@dataclass
class SweepOutcome:
    records: list[Record] = field(default_factory=list)
    report: str = ""

    @property
    def failed(self) -> int:
        return sum(1 for r in self.records if r.status == "failure")

    failed_jobs: int = 0  # jobs with a failure that counts (job_failed); the exit code's (cli.py)


def job_failed(recs: list[Record]) -> bool:
    """Whether a job's records hold a failure that counts for the exit code: an attempted config that
    failed, unless its fallback then succeeded (the CONFIGS line got its numbers). A config the planner
    predicted would not fit, recorded without a launch (``--skip-predicted``), went as predicted."""
    if any(r.status == "success" and r.role == "fallback" for r in recs):
        return False
    return any(r.status == "failure" and not r.was_predicted for r in recs)


def print_record(rec: Record, store: ResultsStore, out=sys.stdout, extra: tuple[str, ...] = ()) -> None:
    if rec.ok:
        print("\n" + config_table(success_entry(rec), base=store.root, extra=extra) + "\n", file=out)
    else:
        e = failure_entry(rec)
        log = f" (log: {store.root / e['log_path']})" if e.get("log_path") else ""
        print(f"\n{rec.model} ({rec.config}): FAILED [{e['error_type']}] {e['error_message']}{log}\n", file=out)
    print(f"record: {store.root / rec.record_path}", file=out, flush=True)


def run_sweep(jobs: list[Job], opts: RunOptions, store: ResultsStore, *, executor: Executor | None = None,
              progress: Progress | None = None, out=sys.stdout, extra_columns: tuple[str, ...] = ()) -> SweepOutcome:
    progress = progress or Progress()
    reap_orphans(store.root / "running", log=lambda s: print(s, file=sys.stderr))
    outcome = SweepOutcome()

    def on_done(job: Job, recs: list[dict[str, Any]]) -> None:
        outcome.records.extend(recs)
        outcome.failed_jobs += job_failed([Record.of(r) for r in recs])
        for r in recs:
            print_record(r, store, out, extra=extra_columns)

    (executor or LocalExecutor()).execute(jobs, opts, store, progress, on_done)
    success, failure = store.views()
    outcome.report = full_report(success, failure, base=store.root, extra=extra_columns)
    print(outcome.report, file=out, flush=True)
    append_step_summary(outcome.report)
    return outcome


def tiny_preset(preset: Preset, cache: Path) -> Preset:
    """The tiny random-weight variant of a preset, generated once into ``cache``."""
    from .presets import preset_from_checkpoint
    from .tiny import write_tiny_checkpoint
    import os
    import shutil
    d = cache / preset.slug
    if not (d / "moetrace.json").is_file():
        tmp = cache / f".{preset.slug}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        write_tiny_checkpoint(preset, tmp)
        shutil.rmtree(d, ignore_errors=True)
        os.replace(tmp, d)  # all or nothing: a killed run never leaves half a checkpoint
    return preset_from_checkpoint(d)
