"""The driver: ``SlurmExecutor`` submits each config as a Slurm job (through submitit), follows
the jobs' states, re-attaches to the jobs of a stopped driver, records the jobs that Slurm ended,
and cancels its jobs on Ctrl-C (see the package's docstring)."""

from __future__ import annotations

import os
import re
import shlex
import signal
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ... import __version__
from ...matrix import Config
from ...results.classify import classify
from ...options import from_dict as options_from_dict
from ...results.record import DEFAULT_BATCH, EngineInfo, Error, Record, workload_suffix
from ...results.store import ResultsStore, now_iso, result_key, safe_name
from .commands import _package_root, model_arg, run_command
from .node import NodeCommand
from .registry import SLURM_DIR, JobEntry, JobRegistry
from .state import ACTIVE_STATES, KILLED_STATES, QUEUED_STATES, SlurmState, _exit_code, _run, query_states
from ...text import tail


class SubmissionError(ValueError):
    """sbatch refused a job (the CLI prints it as one line, exit code 2)."""


@dataclass
class _Tracked:
    job: Any  # sweep.Job
    config: Config
    role: str
    slurm_id: str
    entry: JobEntry
    sjob: Any = None  # submitit job
    state: str = "SUBMITTED"
    reason: str = ""
    nodes: str = ""
    finished: bool = False
    outcome: str = ""
    missing_polls: int = 0

    @property
    def label(self) -> str:
        fb = " (fallback)" if self.role == "fallback" else ""
        return f"[{self.job.index}/{self.job.total}] {self.job.preset.name} {self.config.name}{fb}"


@dataclass
class SlurmExecutor:
    """Runs each config as a Slurm job (see the module's docstring)."""

    partition: str | None = None
    gpus_per_node: int = 8  # of the partition's nodes; 0: ask for no GPUs (CPU clusters, tests)
    time_min: int = 240
    slurm_args: dict[str, Any] = field(default_factory=dict)  # more sbatch options
    setup: list[str] = field(default_factory=list)  # shell lines before the job's command
    poll_s: float = 10.0
    signal_delay_s: int | None = None  # SIGINT this long before the time limit; default: min(60, limit/4)
    python: str | None = None  # the nodes' Python for submitit's wrapper; default: this one
    exe: list[str] | None = None  # how the nodes start moetrace; default: this installation's
    cancel_wait_s: float = 30.0
    ranks_on_one_node: bool = False  # tests: a multi-node config's ranks as tasks of one node
    out: Any = None  # progress stream; default: the sweep's

    # ----- protocol
    def execute(self, jobs, opts, store: ResultsStore, progress, on_done) -> None:
        self._out = self.out or getattr(progress, "stream", None) or sys.stderr
        self._check(jobs)
        store_root = store.root.resolve()
        self._store, self._opts, self._root = store, opts, store_root
        self._reg = JobRegistry(store_root)
        self._logs = store_root / SLURM_DIR / "logs"
        tracked: list[_Tracked] = []
        self._tracked = tracked
        try:
            attached = self._attach_all(jobs, tracked)
            self._finalize_strays(attached)
            for job in jobs:
                if not any(t.job is job for t in tracked):
                    self._submit(job, job.config.without_fallback(), "primary")
            self._wait(tracked, on_done)
        except KeyboardInterrupt:
            self._cancel(tracked, "interrupted")
            raise
        except SubmissionError:
            self._cancel(tracked, "a submission failed")
            raise

    # ----- checks
    def _check(self, jobs) -> None:
        for j in jobs:
            for c in (j.config, j.config.fallback):
                if c is None:
                    continue
                per_node = c.tp // max(1, c.nodes)
                if self.gpus_per_node and per_node > self.gpus_per_node:
                    raise ValueError(
                        f"config {c.name} needs {per_node} GPUs per node but --gpus-per-node is "
                        f"{self.gpus_per_node}: give it nodes: {-(-c.tp // self.gpus_per_node)} (e.g. "
                        f"TP{c.tp}_N{-(-c.tp // self.gpus_per_node)}_{c.backend})")

    # ----- dry run
    def dry_run_lines(self, jobs, opts, results_dir: str | os.PathLike[str]) -> list[str]:
        """What ``--dry-run`` shows for Slurm: each job's sbatch options and node command."""
        self._check(jobs)
        out = [f"# Slurm: one job per config; logs and registry in {Path(results_dir).resolve() / SLURM_DIR}"]
        for j in jobs:
            for role, c in (("", j.config.without_fallback()), ("fallback, if it fails: ", j.config.fallback)):
                if c is None:
                    continue
                p = self.sbatch_parameters(c, f"moetrace:{j.preset.name}:{c.name}")
                sb = {k: v for k, v in p.items() if k not in ("additional_parameters", "setup", "stderr_to_stdout")}
                sb.update(p.get("additional_parameters") or {})
                flags = " ".join(f"--{k.replace('_', '-')}" + ("" if v is True else f"={v}") for k, v in sb.items())
                out.append(f"\n{j.label}  {role}sbatch {flags}")
                for line in p.get("setup", []):
                    out.append(f"  setup: {line}")
                out.append("  node: " + shlex.join(run_command(j, opts, results_dir, config=c, exe=self.exe)))
                if c.nodes > 1:
                    out.append(f"  ({c.nodes} nodes: rank 0 runs this and is benchmarked; ranks 1..{c.nodes - 1} "
                               "start their engine with --node-rank, see docs/slurm.md)")
        return out

    # ----- submission
    def sbatch_parameters(self, config: Config, name: str) -> dict[str, Any]:
        """submitit's ``update_parameters`` for one config's job."""
        delay = self.signal_delay_s
        if delay is None:
            delay = int(min(60, max(10, self.time_min * 60 // 4)))
        nodes, tasks = int(config.nodes), 1  # one task per node; the task's rank is its node's rank
        if self.ranks_on_one_node:
            nodes, tasks = 1, int(config.nodes)
        params: dict[str, Any] = {
            "job_name": name[:120], "time": int(self.time_min), "nodes": nodes,
            "ntasks_per_node": tasks, "stderr_to_stdout": True,
            "additional_parameters": {"signal": f"INT@{delay}", **self.slurm_args},
        }
        if self.partition:
            params["partition"] = self.partition
        if self.gpus_per_node:
            params["gpus_per_node"] = config.tp // nodes
        setup = list(self.setup)
        root = _package_root()
        if root.name != "site-packages":  # a checkout: submitit's wrapper must import this moetrace
            setup.insert(0, f"export PYTHONPATH={shlex.quote(str(root))}${{PYTHONPATH:+:$PYTHONPATH}}")
        if setup:
            params["setup"] = setup
        return params

    def _executor(self, config: Config, name: str):
        import submitit
        ex = submitit.SlurmExecutor(folder=str(self._logs / "%j"), python=self.python)
        ex.update_parameters(**self.sbatch_parameters(config, name))
        return ex

    def _submit(self, job, config: Config, role: str) -> _Tracked:
        cmd = run_command(job, self._opts, self._root, config=config, exe=self.exe)
        since = self._store.last_seq()
        desc = {"engine": self._opts.engine, "model": job.preset.name, "model_arg": model_arg(job.preset),
                "config": config.name, "config_detail": config.to_dict(), "results": str(self._root),
                "nnodes": config.nodes, "since_seq": since, "options": self._opts.to_dict()}
        fn = NodeCommand(cmd, desc, cwd=os.getcwd())
        ex = self._executor(config, f"moetrace:{job.preset.name}:{config.name}")
        # Ctrl-C waits until the job is in the registry and tracked, so that it is cancelled too
        blocked = _block_sigint()
        try:
            return self._submit_now(ex, fn, job, config, role, cmd, since)
        finally:
            _unblock_sigint(blocked)

    def _submit_now(self, ex, fn, job, config: Config, role: str, cmd: list[str], since: int) -> _Tracked:
        try:
            sjob = ex.submit(fn)
        except Exception as e:  # sbatch refused (bad partition, GPUs the nodes lack, ...)
            lines = list(dict.fromkeys(ln.strip() for ln in re.split(r"\n|(?=sbatch: )", str(e)) if ln.strip()))
            text = "; ".join(lines)[:400] or type(e).__name__
            raise SubmissionError(f"sbatch refused the job of {job.preset.name} {config.name}: {text}") from None
        sid = str(sjob.job_id)
        entry = JobEntry(
            slurm_id=sid, model=job.preset.name, model_arg=model_arg(job.preset), config=config.name,
            config_detail=config.to_dict(), role=role, key=_job_key(job, config, self._opts),
            command=cmd, nodes=config.nodes, results=str(self._root), since_seq=since,
            submitted_at=now_iso(), driver={"host": socket.gethostname(), "pid": os.getpid()},
            log=str(Path(SLURM_DIR) / "logs" / sid / f"{sid}_0_log.out"), status="active",
            state="SUBMITTED", options=self._opts.to_dict())
        t = _Tracked(job, config, role, sid, entry, sjob)
        self._tracked.append(t)
        self._reg.put(entry)
        self._say(f"{t.label}: submitted as Slurm job {sid}")
        return t

    # ----- re-attaching after a restart
    def _attach_all(self, jobs, tracked: list[_Tracked]) -> set[str]:
        """Jobs of this plan that an earlier driver submitted and nobody finalized: follow them
        instead of submitting again (a restarted driver loses nothing)."""
        import submitit
        entries = self._reg.load()
        active = {sid: e for sid, e in entries.items() if e.active and e.results == str(self._root)}
        attached: set[str] = set()
        if not active:
            return attached
        for job in jobs:
            for role, config in (("primary", job.config.without_fallback()), ("fallback", job.config.fallback)):
                if config is None:
                    continue
                cands = sorted((e for e in active.values() if e.model == job.preset.name
                                and e.config == config.name and e.the_role == role
                                and e.slurm_id not in attached), key=lambda e: int(e.slurm_id))
                if not cands:
                    continue
                e = cands[-1]
                cmd = run_command(job, self._opts, self._root, config=config, exe=self.exe)
                if e.command and e.command != cmd:
                    self._say(f"[{job.index}/{job.total}] {job.preset.name} {config.name}: Slurm job "
                              f"{e.slurm_id} of an earlier driver ran other options; not re-attached")
                    continue
                sjob = submitit.SlurmJob(folder=str(self._logs / "%j"), job_id=e.slurm_id)
                t = _Tracked(job, config, role, e.slurm_id, e, sjob)
                tracked.append(t)
                attached.add(e.slurm_id)
                driver = e.driver or {}
                self._say(f"{t.label}: re-attached to Slurm job {e.slurm_id} (submitted {e.submitted_at} "
                          f"by {driver.get('host')}:{driver.get('pid')})")
        # a fallback job re-attached makes its primary done: do not submit the primary again
        return attached

    def _finalize_strays(self, attached: set[str]) -> None:
        """Active registry entries outside this plan: record those that ended (a driver that
        died never saw them end); leave the running ones alone, and say so."""
        entries = {sid: e for sid, e in self._reg.load().items() if e.active
                   and e.results == str(self._root) and sid not in attached}
        if not entries:
            return
        states = query_states(entries)
        for sid, e in sorted(entries.items(), key=lambda x: int(x[0])):
            s = states.get(sid)
            if s is not None and not s.final:
                self._say(f"Slurm job {sid} ({e.model} {e.config}) of an earlier driver is {s.state}; "
                          "not part of this sweep (it records its own result)")
                continue
            recs = self._finalize(e, s, stray=True)
            self._say(f"Slurm job {sid} ({e.model} {e.config}) of an earlier driver ended "
                      f"{s.state if s else 'unknown to Slurm'}: {_outcome_text(recs)}")

    # ----- waiting
    def _wait(self, tracked: list[_Tracked], on_done) -> None:
        last_summary = ""
        last_time = 0.0
        while True:
            live = [t for t in tracked if not t.finished]
            if not live:
                break
            states = query_states(t.slurm_id for t in live)
            for t in live:
                s = states.get(t.slurm_id)
                if s is None:
                    t.missing_polls += 1
                    if t.missing_polls < 3 and not _result_pickle(self._logs, t.slurm_id).exists():
                        continue
                else:
                    t.missing_polls = 0
                    if s.state != t.state or s.reason != t.reason:
                        self._show(t, s)
                    t.state, t.reason, t.nodes = s.state, s.reason, s.nodes
                    if not s.final:
                        continue
                recs = self._finalize(t.entry, s)
                t.finished = True
                t.outcome = _outcome(recs)
                self._say(f"{t.label}: {_outcome_text(recs)}")
                on_done(t.job, recs)
                fb = t.job.config.fallback
                if t.role == "primary" and fb is not None and any(r.status == "failure" for r in recs) \
                        and not any(x.job is t.job and x.role == "fallback" for x in tracked):
                    self._say(f"{t.label} failed; submitting its fallback {fb.name}")
                    self._submit(t.job, fb, "fallback")
            summary = _summary(tracked)
            if summary != last_summary or time.monotonic() - last_time > 300:
                self._say(f"slurm: {summary}")
                last_summary, last_time = summary, time.monotonic()
            if any(not t.finished for t in tracked):
                time.sleep(self.poll_s)

    def _show(self, t: _Tracked, s: SlurmState) -> None:
        if s.state in QUEUED_STATES:
            text = f"queued (Slurm job {t.slurm_id}, {s.state}{', ' + s.reason if s.reason not in ('', 'None') else ''})"
        elif s.state in ACTIVE_STATES:
            text = f"{'running' if s.state == 'RUNNING' else s.state.lower()} on {s.nodes or '?'} (Slurm job {t.slurm_id})"
        else:
            return  # the outcome line says it
        self._say(f"{t.label}: {text}")
        self._reg.patch(t.slurm_id, state=s.state, reason=s.reason, node_list=s.nodes)

    # ----- finalizing one job
    def _finalize(self, entry: JobEntry | dict[str, Any], s: SlurmState | None, *,
                  stray: bool = False) -> list[Record]:
        """The records of a job that ended: what its node committed, plus the driver's record of
        how Slurm ended it when the node could not say. Under the registry lock, so two drivers
        never record one job twice."""
        entry = JobEntry.of(entry)
        sid = entry.slurm_id

        def fn(jobs: dict[str, JobEntry]) -> list[Record]:
            e = jobs.get(sid, entry)
            recs = _job_records(self._store, e)
            if not e.active:
                return recs
            recs = [r for r in recs if r.recorded_by != "driver"]
            extra = self._driver_record(e, s, recs)
            if extra is not None:
                recs.append(self._store.commit(extra))
            e.update(status="finished", finished_at=now_iso(), outcome=_outcome(recs),
                     records=[r.record_path for r in recs])
            if s is not None:
                e.update(state=s.state, reason=s.reason, node_list=s.nodes, slurm=s.to_dict())
            jobs[sid] = e
            return recs

        return self._reg.update(fn)

    def _driver_record(self, e: JobEntry, s: SlurmState | None, recs: list[Record]) -> Record | None:
        state = s.state if s else None
        succeeded = bool(recs) and all(r.ok for r in recs)
        log_rel = e.log
        log_path = self._root / log_rel if log_rel else None
        log_text = tail(log_path)
        where = f" on {s.nodes}" if s and s.nodes else ""
        if state in KILLED_STATES:
            if succeeded:
                return None
            reason = f" ({s.reason})" if s.reason and s.reason != "None" else ""
            ran = f" after {s.elapsed}" if s.elapsed else ""
            limit = f" of {s.time_limit}" if s.time_limit and state == "TIMEOUT" else ""
            progress = _last_progress(log_text, e.model, e.config)
            phase = next((r.the_error.phase for r in reversed(recs) if r.status == "failure"), None)
            msg = (f"Slurm ended job {e.slurm_id} with {state}{reason}{ran}{limit}{where}"
                   + (f"; last progress: {progress}" if progress else ""))
            return self._failure(e, "SlurmKilled", msg, phase or "slurm", s, log_rel, evidence=f"JobState={state}")
        if recs:
            return None
        if state == "COMPLETED":
            msg = f"Slurm job {e.slurm_id} completed{where} without a record (see its log)"
            return self._failure(e, "Unknown", msg, "slurm", s, log_rel)
        # FAILED, SPECIAL_EXIT, or gone from Slurm without a trace: read the job's log
        code = _exit_code(s.exit_code) if s else None
        what = f"failed{where} (exit code {code})" if state else "is unknown to Slurm (no accounting to ask)"
        base_msg = f"Slurm job {e.slurm_id} {what} without a record"
        said = [ln.strip() for ln in log_text.splitlines() if ln.strip().startswith("moetrace: error:")]
        if said:  # moetrace itself refused to run (bad input on the node: exit code 2)
            c = classify(log_text=said[-1], phase="slurm")
            etype = c.error_type if c.error_type not in ("ServerError", "Unknown") else "LaunchError"
            return self._failure(e, etype, f"[slurm] {said[-1]} ({base_msg})", "slurm", s, log_rel,
                                 evidence=said[-1])
        c = classify(exception=None, message=base_msg, exit_code=code, log_text=log_text, phase="slurm")
        if c.error_type in ("ServerError", "Unknown"):
            # no rule named a cause; "ServerError" would blame an engine that may never have started
            line = f": {c.evidence}" if c.evidence else ""
            return self._failure(e, "Unknown", f"[slurm] {base_msg}{line}", "slurm", s, log_rel, evidence=c.evidence)
        return self._failure(e, c.error_type, f"{c.error_message} ({base_msg})", "slurm", s, log_rel,
                             evidence=c.evidence)

    def _failure(self, e: JobEntry, etype: str, message: str, phase: str, s: SlurmState | None,
                 log_rel: str | None, evidence: str | None = None) -> Record:
        opts = e.options or self._opts.to_dict()
        o = options_from_dict(opts)
        suffix = workload_suffix((o.batch_sizes or (DEFAULT_BATCH,))[0], o.input_len, o.output_len)
        return Record.new(
            attempt_id=f"slurm-{e.slurm_id}-{safe_name(e.model, 40)}-{safe_name(e.config, 60)}",
            model=e.model, config=e.config, role=e.the_role, config_detail=e.config_detail,
            moetrace_version=__version__, started_at=e.submitted_at, finished_at=now_iso(),
            key=result_key(e.model, e.config, suffix), status="failure", recorded_by="driver", options=opts,
            host={"slurm_nodes": s.nodes if s else None, "driver": socket.gethostname()},
            engine=EngineInfo(name=o.engine, external=bool(o.base_url), model_path=o.model_path or e.model_arg,
                              device=o.device),
            slurm={"job_id": e.slurm_id, **(s.to_dict() if s else {"state": "UNKNOWN"}),
                   "command": e.command, "log": log_rel},
            error=Error(type=etype, message=message[:500], evidence=evidence, exception=None,
                        exit_code=_exit_code(s.exit_code) if s else None, phase=phase,
                        log_path=log_rel if log_rel and (self._root / log_rel).exists() else None))

    # ----- Ctrl-C
    def _cancel(self, tracked: list[_Tracked], why: str = "interrupted") -> None:
        old = signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not stop the clean-up
        try:
            live = [t for t in tracked if not t.finished]
            if not live:
                return
            self._say(f"{why}: cancelling {len(live)} Slurm job(s): {', '.join(t.slurm_id for t in live)}")
            states = query_states(t.slurm_id for t in live)
            for t in live:
                try:
                    if t.sjob is not None:
                        t.sjob.cancel(check=False)  # submitit: scancel <id>
                    else:
                        _run(["scancel", t.slurm_id])
                except Exception as e:  # keep cancelling the others
                    self._say(f"scancel {t.slurm_id} failed: {e}")
            for t in live:
                s = states.get(t.slurm_id)
                was_running = s is not None and s.state in ACTIVE_STATES - QUEUED_STATES

                def fn(jobs, t=t, s=s, was_running=was_running):
                    e = jobs.get(t.slurm_id, t.entry)
                    if not e.active:
                        return
                    if was_running:
                        msg = (f"cancelled with the sweep (Ctrl-C on the driver): Slurm job {t.slurm_id} was "
                               f"{s.state} on {s.nodes or '?'}")
                        rec = self._failure(e, "Interrupted", msg, "slurm", s, e.log)
                        e.records = [self._store.commit(rec).record_path]
                    e.update(status="cancelled", finished_at=now_iso(), state="CANCELLED",
                             outcome="cancelled", was=s.state if s else None)
                    jobs[t.slurm_id] = e
                self._reg.update(fn)
            # until Slurm no longer lists them as queued or running (their processes are gone)
            deadline = time.monotonic() + self.cancel_wait_s
            ids = [t.slurm_id for t in live]
            left = ids  # what the message says when the wait is over before a first look
            while time.monotonic() < deadline:
                st = query_states(ids)
                left = [i for i in ids if i in st and st[i].state in ACTIVE_STATES]
                if not left:
                    break
                time.sleep(1.0)
            else:
                self._say(f"Slurm jobs {', '.join(left)} are still ending (Slurm's KillWait); not waiting longer")
            self._say(f"cancelled Slurm job(s) {', '.join(ids)}")
        finally:
            signal.signal(signal.SIGINT, old)

    def _say(self, text: str) -> None:
        print(f"moetrace: {text}", file=self._out, flush=True)


def _block_sigint() -> bool:
    if not hasattr(signal, "pthread_sigmask"):
        return False
    try:
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        return True
    except (OSError, ValueError):
        return False


def _unblock_sigint(blocked: bool) -> None:
    if blocked:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


def _job_key(job, config: Config, opts) -> str:
    return result_key(job.preset.name, config.name, workload_suffix(opts.batch_sizes[0], opts.input_len,
                                                                    opts.output_len))


def _job_records(store: ResultsStore, e: JobEntry) -> list[Record]:
    """The job's records: what its node committed (same model and config, committed after its
    submission) and what a driver recorded for this Slurm job."""
    return [r for r in store.records(after=int(e.since_seq or 0))
            if r.model == e.model and r.config == e.config
            and (r.recorded_by != "driver" or str((r.slurm or {}).get("job_id")) == str(e.slurm_id))]


def _result_pickle(logs: Path, sid: str) -> Path:
    return logs / sid / f"{sid}_0_result.pkl"


def _last_progress(log_text: str, model: str, config: str) -> str | None:
    """The last progress line of ``moetrace run`` in the job's log ('[1/1] MODEL CONFIG: ...')."""
    needle = f"{model} {config}"
    for line in reversed(log_text.splitlines()):
        m = re.match(r"^\[\d+/\d+\]\s*(.*)$", line.strip())
        if m and needle in line:
            return m.group(1)[:200]
    return None


def _outcome(recs: list[Record]) -> str:
    if not recs:
        return "no record"
    return "success" if all(r.ok for r in recs) else "failure"


def _outcome_text(recs: list[Record]) -> str:
    if not recs:
        return "ended without a record"
    fails = [r for r in recs if r.status == "failure"]
    if not fails:
        return f"done ({len(recs)} result{'s' if len(recs) > 1 else ''})"
    last = fails[-1].the_error
    return f"failed [{last.type}] {last.message or ''}"[:400]


def _summary(tracked: list[_Tracked]) -> str:
    q = sum(1 for t in tracked if not t.finished and (t.state in QUEUED_STATES or t.state == "SUBMITTED"))
    r = sum(1 for t in tracked if not t.finished and t.state in ACTIVE_STATES - QUEUED_STATES)
    d = sum(1 for t in tracked if t.finished and t.outcome == "success")
    f = sum(1 for t in tracked if t.finished and t.outcome != "success")
    return f"{q} queued, {r} running, {d} done, {f} failed"
