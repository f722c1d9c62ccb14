"""The Slurm executor: each config of a sweep becomes one Slurm job that runs moetrace's own
single-config entry point (``moetrace run MODEL -c CONFIG --results DIR <options>``) on its
node(s), writing into the same results directory as the driver (a shared filesystem; the
store's file lock makes the writers safe across nodes).

Submission and cancellation go through submitit (``submitit.SlurmExecutor``); the function it
runs on the node is ``NodeCommand``, which starts the ``moetrace run`` command line and streams
its output into the job's log (submitit's ``CommandFunction`` buffers all output in memory, and
on an exception SIGKILLs the child, which leaves its engine behind). Job *states* come from
``squeue``/``scontrol`` and, where there is an accounting database, ``sacct``: submitit asks
only ``sacct``, which on a cluster without accounting prints "Slurm accounting storage is
disabled" and leaves every job UNKNOWN (a killed job would then never look finished).

The driver keeps a job registry, ``<results>/slurm/jobs.json`` (written atomically, under a
lock), so that a driver that was stopped finds its jobs again: a restarted sweep re-attaches
to the jobs still queued or running and finalizes the ones that ended meanwhile.

A job that Slurm ended (time limit, preemption, node failure, out of memory, an outside
``scancel``) never got to record anything on its node; the driver records it: a failure of
class ``SlurmKilled`` whose message carries Slurm's state and reason. A job that ended
without a record for another reason (the node could not run moetrace) is classified from
its log. Ctrl-C on the driver cancels the jobs it submitted (or re-attached to), records the
running ones as ``Interrupted`` and re-raises.

Slurm sends ``SIGINT`` ``signal_delay_s`` before a job's time limit (``--signal=INT@N``):
``moetrace run`` then stops its engine and records ``Interrupted`` with the phase it was in,
and the job stays until Slurm ends it, so that its state says TIMEOUT.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from filelock import FileLock

from .. import __version__
from ..matrix import Config
from ..results.classify import classify
from ..results.record import (DEFAULT_BATCH, DEFAULT_INPUT_LEN, DEFAULT_OUTPUT_LEN, EngineInfo, Error, Record,
                              workload_suffix)
from ..results.store import ResultsStore, atomic_write_json, now_iso, result_key, safe_name
from ..text import tail

__all__ = ["SlurmExecutor", "NodeCommand", "JobRegistry", "run_command", "parse_time", "query_states",
           "SlurmState", "KILLED_STATES", "FINAL_STATES"]

SLURM_DIR = "slurm"
REGISTRY_FILE = "jobs.json"

# Slurm job states (squeue/scontrol/sacct spell them alike).
ACTIVE_STATES = {"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "SUSPENDED", "STOPPED", "SIGNALING",
                 "STAGE_OUT", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESIZING", "RESV_DEL_HOLD"}
QUEUED_STATES = {"PENDING", "CONFIGURING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESV_DEL_HOLD"}
KILLED_STATES = {"TIMEOUT", "PREEMPTED", "NODE_FAIL", "BOOT_FAIL", "DEADLINE", "OUT_OF_MEMORY", "CANCELLED",
                 "REVOKED"}
FINAL_STATES = KILLED_STATES | {"COMPLETED", "FAILED", "SPECIAL_EXIT"}


# ----------------------------------------------------------------------------- small helpers

def parse_time(text: str | int | float) -> int:
    """Slurm's time formats (``MM``, ``MM:SS``, ``HH:MM:SS``, ``D-HH``, ``D-HH:MM``,
    ``D-HH:MM:SS``) as whole minutes, rounded up (submitit takes minutes)."""
    if isinstance(text, (int, float)):
        if text <= 0:
            raise ValueError(f"--time must be positive, got {text}")
        return int(-(-text // 1))
    s = str(text).strip()
    m = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", s)
    if not m:
        raise ValueError(f"--time {text!r}: expected minutes, MM:SS, HH:MM:SS or D-HH[:MM[:SS]]")
    days, a, b, c = (int(x) if x is not None else None for x in m.groups())
    if days is not None:  # D-HH[:MM[:SS]]
        secs = days * 86400 + a * 3600 + (b or 0) * 60 + (c or 0)
    elif c is not None:  # HH:MM:SS
        secs = a * 3600 + b * 60 + c
    elif b is not None:  # MM:SS
        secs = a * 60 + b
    else:  # MM
        secs = a * 60
    if secs <= 0:
        raise ValueError(f"--time {text!r} must be positive")
    return -(-secs // 60)


def parse_slurm_args(items: Iterable[str]) -> dict[str, Any]:
    """``--slurm-arg`` values: ``KEY=VALUE`` or a bare ``KEY`` (a flag), with or without leading
    dashes: ``account=abc``, ``--qos=high``, ``exclusive``, ``constraint=h200``."""
    out: dict[str, Any] = {}
    for it in items:
        k, sep, v = str(it).strip().partition("=")
        k = k.strip().lstrip("-").replace("_", "-")
        if not k or not re.fullmatch(r"[A-Za-z][A-Za-z0-9-]*", k):
            raise ValueError(f"--slurm-arg {it!r}: expected KEY=VALUE or KEY (an sbatch option)")
        out[k.replace("-", "_")] = v if sep else True
    return out


def _package_root() -> Path:
    """The folder this ``moetrace`` package is imported from (``src/`` of a checkout)."""
    return Path(__file__).resolve().parents[2]


def moetrace_exe() -> list[str]:
    """How this installation's ``moetrace`` is started: the console script next to this Python,
    else this Python with this package's folder on its path (the per-model scripts run from a
    checkout without installing)."""
    exe = Path(sys.executable).with_name("moetrace")
    if exe.exists():
        return [str(exe)]
    return [sys.executable, "-c", f"import sys; sys.path.insert(0, {str(_package_root())!r}); "
            "from moetrace.cli import main; sys.exit(main())"]


def model_arg(preset: Any) -> str:
    """The MODEL argument that names this preset on the node: a built-in by name, a model file
    or a checkpoint directory (tiny variants) by absolute path."""
    src = getattr(preset, "source", None)
    if src and src != "builtin" and Path(src).exists():
        return str(Path(src).resolve())
    return preset.name


def run_command(job: Any, opts: Any, results_dir: str | os.PathLike[str], *, config: Config | None = None,
                exe: list[str] | None = None) -> list[str]:
    """The ``moetrace run`` command line that runs ``job`` (its ``config``, or the one given: a
    fallback) with ``opts`` on a node: explicit flags for every option that differs from the
    CLI's defaults, so the node runs what the user asked for whatever its environment says."""
    from ..runner import RunOptions
    config = config or job.config.without_fallback()
    d = RunOptions(engine_python=opts.engine_python)  # the CLI's defaults
    cmd = [*(exe or moetrace_exe()), "run", model_arg(job.preset), "-c", config.name,
           "--results", str(Path(results_dir).resolve())]

    def flag(name: str, value: Any, default: Any) -> None:
        if value != default:
            cmd.extend([name, _num(value)])

    cmd += ["--engine", opts.engine, "--device", opts.device]
    for b in opts.batch_sizes:
        cmd += ["--batch-size", str(b)]
    flag("--input-len", opts.input_len, d.input_len)
    flag("--output-len", opts.output_len, d.output_len)
    flag("--repeat", opts.repeat, d.repeat)
    flag("--seed", opts.seed, d.seed)
    if not opts.warmup:
        cmd.append("--no-warmup")
    flag("--launch-timeout", opts.launch_timeout_s, d.launch_timeout_s)
    flag("--request-timeout", opts.request_timeout_s, d.request_timeout_s)
    if not opts.profile:
        cmd.append("--no-profile")
    flag("--profile-steps", opts.profile_steps, d.profile_steps)
    if opts.profile_with_stack:
        cmd.append("--profile-with-stack")
    flag("--profile-timeout", opts.profile_timeout_s, d.profile_timeout_s)
    cmd += ["--engine-python", opts.engine_python]
    if opts.launch_prefix:
        cmd += ["--launch-prefix", shlex.join(opts.launch_prefix)]
    for a in opts.extra_args:
        # One token each. The CLI splits '--k=v' at '=' and shell-splits anything else, so a
        # token that itself looks like '--k=v' is quoted to come back whole.
        q = shlex.quote(a)
        if q.startswith("--") and "=" in q:
            q = "'" + a.replace("'", "'\"'\"'") + "'"
        cmd.append(f"--engine-arg={q}")
    for k, v in getattr(opts, "engine_env", ()) or ():
        cmd += ["--engine-env", f"{k}={v}"]
    if opts.base_url:
        cmd += ["--base-url", opts.base_url]
    flag("--host", opts.host, d.host)
    if opts.port is not None:
        cmd += ["--port", str(opts.port)]
    if opts.model_path:
        cmd += ["--model-path", opts.model_path]
    if opts.max_model_len is not None:
        cmd += ["--max-model-len", str(opts.max_model_len)]
    if opts.gpu:
        cmd += ["--gpu", opts.gpu]
    if opts.mem_fraction is not None:
        cmd += ["--mem-fraction", _num(opts.mem_fraction)]
    if not opts.skip_predicted:
        cmd.append("--no-skip-predicted")
    return cmd


def _num(v: Any) -> str:
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)


class SubmissionError(ValueError):
    """sbatch refused a job (the CLI prints it as one line, exit code 2)."""


# ----------------------------------------------------------------------------- Slurm states

@dataclass
class SlurmState:
    job_id: str
    state: str
    reason: str = ""
    nodes: str = ""
    elapsed: str = ""
    time_limit: str = ""
    exit_code: str = ""
    source: str = ""  # squeue | scontrol | sacct

    @property
    def final(self) -> bool:
        return self.state in FINAL_STATES

    def to_dict(self) -> dict[str, str]:
        return {k: getattr(self, k) for k in ("state", "reason", "nodes", "elapsed", "time_limit", "exit_code",
                                                "source")}


def _run(cmd: list[str], timeout: float = 60) -> subprocess.CompletedProcess | None:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired):
        return None


def _scontrol_state(job_id: str) -> SlurmState | None:
    cp = _run(["scontrol", "show", "job", "-o", job_id])
    if cp is None or cp.returncode != 0 or "JobState=" not in cp.stdout:
        return None
    f = dict(re.findall(r"(\w+)=(\S*)", cp.stdout))
    return SlurmState(job_id, f.get("JobState", "UNKNOWN"), f.get("Reason", ""), f.get("NodeList", ""),
                      f.get("RunTime", ""), f.get("TimeLimit", ""), f.get("ExitCode", ""), "scontrol")


def query_states(job_ids: Iterable[str]) -> dict[str, SlurmState]:
    """The states of these jobs: ``squeue --states=all`` for all of them at once, ``scontrol``
    for the final ones (exit code) and for those squeue no longer lists, then ``sacct`` (only
    where accounting exists). A job none of them knows is absent from the answer."""
    ids = [str(i) for i in job_ids]
    out: dict[str, SlurmState] = {}
    if not ids:
        return out
    cp = _run(["squeue", "--noheader", "--states=all", "--jobs", ",".join(ids), "--format", "%i|%T|%r|%N|%M|%l"])
    if cp is not None and cp.returncode == 0:
        for line in cp.stdout.splitlines():
            parts = line.strip().split("|")
            if len(parts) >= 6 and parts[0] in ids:
                out[parts[0]] = SlurmState(parts[0], parts[1].upper(), parts[2], parts[3], parts[4], parts[5],
                                           source="squeue")
    for i in ids:
        if i not in out or out[i].final:
            s = _scontrol_state(i)
            if s is not None:
                out[i] = s
    missing = [i for i in ids if i not in out]
    if missing:
        cp = _run(["sacct", "--noheader", "--parsable2", "--allocations", "--jobs", ",".join(missing),
                   "--format", "JobIDRaw,State,NodeList,Elapsed,Timelimit,ExitCode"])
        if cp is not None and cp.returncode == 0:
            for line in cp.stdout.splitlines():
                p = line.strip().split("|")
                if len(p) >= 6 and p[0] in missing:
                    state, _, by = p[1].partition(" ")  # "CANCELLED by 0"
                    out[p[0]] = SlurmState(p[0], state.upper(), by, p[2], p[3], p[4], p[5], "sacct")
    return out


# ----------------------------------------------------------------------------- the job registry

class JobRegistry:
    """``<results>/slurm/jobs.json``: every Slurm job a driver submitted into this results
    directory, keyed by Slurm job id. ``status``: ``active`` (submitted, not yet finalized),
    ``finished`` (its records, or the driver's record of how Slurm ended it, are in the store),
    ``cancelled`` (cancelled by a driver)."""

    def __init__(self, results: Path):
        self.dir = Path(results) / SLURM_DIR
        self.dir.mkdir(parents=True, exist_ok=True)
        self.path = self.dir / REGISTRY_FILE
        self._lock = FileLock(str(self.dir / ".jobs.lock"), timeout=300)

    def load(self) -> dict[str, dict[str, Any]]:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, json.JSONDecodeError) as e:
            stamp = _dt.datetime.now().strftime("%Y%m%dT%H%M%S")
            aside = self.path.with_name(f"{REGISTRY_FILE}.corrupt-{stamp}")
            try:
                os.replace(self.path, aside)
            except OSError:
                pass
            print(f"moetrace: warning: {self.path} was unreadable ({e}); moved to {aside}", file=sys.stderr)
            return {}
        return data.get("jobs", {}) if isinstance(data, dict) else {}

    def update(self, fn: Callable[[dict[str, dict[str, Any]]], Any]) -> Any:
        with self._lock:
            jobs = self.load()
            result = fn(jobs)
            atomic_write_json(self.path, {"version": 1, "jobs": jobs})
            return result

    def put(self, entry: dict[str, Any]) -> None:
        self.update(lambda jobs: jobs.__setitem__(entry["slurm_id"], entry))

    def patch(self, slurm_id: str, **fields: Any) -> None:
        def fn(jobs):
            if slurm_id in jobs:
                jobs[slurm_id].update(fields)
        self.update(fn)


# ----------------------------------------------------------------------------- on the node

class NodeCommand:
    """The function a Slurm job runs (through submitit) on each of its tasks: the
    ``moetrace run`` command line, or for a multi-node config the per-rank part
    (``multinode.node_main``). Output goes to the job's log as it comes."""

    def __init__(self, command: list[str], job: dict[str, Any], *, cwd: str | None = None,
                 unset_env: tuple[str, ...] = ("GITHUB_STEP_SUMMARY",), final_wait_s: float = 300.0):
        self.command = list(command)
        self.job = dict(job)
        self.cwd = cwd
        self.unset_env = unset_env
        self.final_wait_s = final_wait_s

    def __call__(self) -> dict[str, Any]:
        rank = int(os.environ.get("SLURM_PROCID") or 0)
        env = {k: v for k, v in os.environ.items() if k not in self.unset_env}
        jid = os.environ.get("SLURM_JOB_ID", "local")
        job = dict(self.job, jobdir=str(Path(self.job["results"]) / SLURM_DIR / "jobs" / jid))
        log = lambda s: print(s, file=sys.stderr, flush=True)  # noqa: E731
        if int(job.get("nnodes", 1)) > 1:
            from .multinode import node_main
            rc = node_main(rank, job, lambda extra: self._run(self.command + extra, env, log), log=log)
        else:
            rc = self._run(self.command, env, log)
        if rc != 0:
            raise RuntimeError(f"rank {rank}: {shlex.join(self.command[:4])} ... exited with code {rc}")
        return {"returncode": rc, "rank": rank, "host": socket.gethostname()}

    def _run(self, cmd: list[str], env: dict[str, str], log: Callable[[str], None]) -> int:
        from ..engines.process import reap_orphans
        log(f"moetrace: node {socket.gethostname()} job {os.environ.get('SLURM_JOB_ID')}: {shlex.join(cmd)}")
        proc = subprocess.Popen(cmd, env=env, cwd=self.cwd)
        got: list[int] = []

        def on_signal(signum, frame):
            # Slurm signals every process of the job step (--signal=INT@N before the time limit,
            # SIGTERM when it ends the job), so moetrace run has it already: forwarding it would
            # interrupt its clean-up (stopping the engine) a second time. Note it and keep waiting.
            got.append(signum)

        handled = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR2)
        old = {s: signal.signal(s, on_signal) for s in handled}
        try:
            rc = proc.wait()
        finally:
            for s, h in old.items():
                signal.signal(s, h)
            reap_orphans(Path(self.job["results"]) / "running", log=log)
        if got:
            names = ", ".join(signal.Signals(s).name for s in got)
            log(f"moetrace: got {names} from Slurm; moetrace run exited with code {rc}")
            if signal.SIGINT in got or signal.SIGUSR2 in got:
                # Slurm's warning before the time limit (--signal=INT@N): the run was stopped and
                # recorded; stay until Slurm ends the job, so that its state says why (TIMEOUT).
                deadline = time.monotonic() + self.final_wait_s
                while time.monotonic() < deadline:
                    time.sleep(1.0)
        return rc


# ----------------------------------------------------------------------------- the driver

@dataclass
class _Tracked:
    job: Any  # sweep.Job
    config: Config
    role: str
    slurm_id: str
    entry: dict[str, Any]
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
        entry = {
            "slurm_id": sid, "model": job.preset.name, "model_arg": model_arg(job.preset), "config": config.name,
            "config_detail": config.to_dict(), "role": role, "key": _job_key(job, config, self._opts),
            "command": cmd, "nodes": config.nodes, "results": str(self._root), "since_seq": since,
            "submitted_at": now_iso(), "driver": {"host": socket.gethostname(), "pid": os.getpid()},
            "log": str(Path(SLURM_DIR) / "logs" / sid / f"{sid}_0_log.out"), "status": "active",
            "state": "SUBMITTED", "options": self._opts.to_dict(),
        }
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
        active = {sid: e for sid, e in entries.items() if e.get("status") == "active"
                  and e.get("results") == str(self._root)}
        attached: set[str] = set()
        if not active:
            return attached
        for job in jobs:
            for role, config in (("primary", job.config.without_fallback()), ("fallback", job.config.fallback)):
                if config is None:
                    continue
                cands = sorted((e for e in active.values() if e["model"] == job.preset.name
                                and e["config"] == config.name and e.get("role", "primary") == role
                                and e["slurm_id"] not in attached), key=lambda e: int(e["slurm_id"]))
                if not cands:
                    continue
                e = cands[-1]
                cmd = run_command(job, self._opts, self._root, config=config, exe=self.exe)
                if e.get("command") and e["command"] != cmd:
                    self._say(f"[{job.index}/{job.total}] {job.preset.name} {config.name}: Slurm job "
                              f"{e['slurm_id']} of an earlier driver ran other options; not re-attached")
                    continue
                sjob = submitit.SlurmJob(folder=str(self._logs / "%j"), job_id=e["slurm_id"])
                t = _Tracked(job, config, role, e["slurm_id"], e, sjob)
                tracked.append(t)
                attached.add(e["slurm_id"])
                self._say(f"{t.label}: re-attached to Slurm job {e['slurm_id']} (submitted {e.get('submitted_at')} "
                          f"by {e.get('driver', {}).get('host')}:{e.get('driver', {}).get('pid')})")
        # a fallback job re-attached makes its primary done: do not submit the primary again
        return attached

    def _finalize_strays(self, attached: set[str]) -> None:
        """Active registry entries outside this plan: record those that ended (a driver that
        died never saw them end); leave the running ones alone, and say so."""
        entries = {sid: e for sid, e in self._reg.load().items() if e.get("status") == "active"
                   and e.get("results") == str(self._root) and sid not in attached}
        if not entries:
            return
        states = query_states(entries)
        for sid, e in sorted(entries.items(), key=lambda x: int(x[0])):
            s = states.get(sid)
            if s is not None and not s.final:
                self._say(f"Slurm job {sid} ({e['model']} {e['config']}) of an earlier driver is {s.state}; "
                          "not part of this sweep (it records its own result)")
                continue
            recs = self._finalize(e, s, stray=True)
            self._say(f"Slurm job {sid} ({e['model']} {e['config']}) of an earlier driver ended "
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
                if t.role == "primary" and fb is not None and any(r["status"] == "failure" for r in recs) \
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
    def _finalize(self, entry: dict[str, Any], s: SlurmState | None, *, stray: bool = False) -> list[dict[str, Any]]:
        """The records of a job that ended: what its node committed, plus the driver's record of
        how Slurm ended it when the node could not say. Under the registry lock, so two drivers
        never record one job twice."""
        sid = entry["slurm_id"]

        def fn(jobs: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
            e = jobs.get(sid, entry)
            recs = _job_records(self._store, e)
            if e.get("status") != "active":
                return recs
            recs = [r for r in recs if r.get("recorded_by") != "driver"]
            extra = self._driver_record(e, s, recs)
            if extra is not None:
                recs.append(self._store.commit(extra))
            e.update(status="finished", finished_at=now_iso(), outcome=_outcome(recs),
                     records=[r.get("record_path") for r in recs])
            if s is not None:
                e.update(state=s.state, reason=s.reason, node_list=s.nodes, slurm=s.to_dict())
            jobs[sid] = e
            return recs

        return self._reg.update(fn)

    def _driver_record(self, e: dict[str, Any], s: SlurmState | None,
                       recs: list[dict[str, Any]]) -> dict[str, Any] | None:
        state = s.state if s else None
        succeeded = bool(recs) and all(r["status"] == "success" for r in recs)
        log_rel = e.get("log")
        log_path = self._root / log_rel if log_rel else None
        log_text = tail(log_path)
        where = f" on {s.nodes}" if s and s.nodes else ""
        if state in KILLED_STATES:
            if succeeded:
                return None
            reason = f" ({s.reason})" if s.reason and s.reason != "None" else ""
            ran = f" after {s.elapsed}" if s.elapsed else ""
            limit = f" of {s.time_limit}" if s.time_limit and state == "TIMEOUT" else ""
            progress = _last_progress(log_text, e["model"], e["config"])
            phase = next((r.get("error", {}).get("phase") for r in reversed(recs) if r["status"] == "failure"), None)
            msg = (f"Slurm ended job {e['slurm_id']} with {state}{reason}{ran}{limit}{where}"
                   + (f"; last progress: {progress}" if progress else ""))
            return self._failure(e, "SlurmKilled", msg, phase or "slurm", s, log_rel, evidence=f"JobState={state}")
        if recs:
            return None
        if state == "COMPLETED":
            msg = f"Slurm job {e['slurm_id']} completed{where} without a record (see its log)"
            return self._failure(e, "Unknown", msg, "slurm", s, log_rel)
        # FAILED, SPECIAL_EXIT, or gone from Slurm without a trace: read the job's log
        code = _exit_code(s.exit_code) if s else None
        what = f"failed{where} (exit code {code})" if state else "is unknown to Slurm (no accounting to ask)"
        base_msg = f"Slurm job {e['slurm_id']} {what} without a record"
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

    def _failure(self, e: dict[str, Any], etype: str, message: str, phase: str, s: SlurmState | None,
                 log_rel: str | None, evidence: str | None = None) -> Record:
        opts = e.get("options") or self._opts.to_dict()
        bs = (opts.get("batch_sizes") or [DEFAULT_BATCH])[0]
        suffix = workload_suffix(bs, opts.get("input_len", DEFAULT_INPUT_LEN),
                                 opts.get("output_len", DEFAULT_OUTPUT_LEN))
        return Record.new(
            attempt_id=f"slurm-{e['slurm_id']}-{safe_name(e['model'], 40)}-{safe_name(e['config'], 60)}",
            model=e["model"], config=e["config"], role=e.get("role", "primary"), config_detail=e.get("config_detail"),
            moetrace_version=__version__, started_at=e.get("submitted_at"), finished_at=now_iso(),
            key=result_key(e["model"], e["config"], suffix), status="failure", recorded_by="driver", options=opts,
            host={"slurm_nodes": s.nodes if s else None, "driver": socket.gethostname()},
            engine=EngineInfo(name=opts.get("engine"), external=bool(opts.get("base_url")),
                              model_path=opts.get("model_path") or e.get("model_arg"), device=opts.get("device")),
            slurm={"job_id": e["slurm_id"], **(s.to_dict() if s else {"state": "UNKNOWN"}),
                   "command": e.get("command"), "log": log_rel},
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
                    if e.get("status") != "active":
                        return
                    if was_running:
                        msg = (f"cancelled with the sweep (Ctrl-C on the driver): Slurm job {t.slurm_id} was "
                               f"{s.state} on {s.nodes or '?'}")
                        rec = self._failure(e, "Interrupted", msg, "slurm", s, e.get("log"))
                        e["records"] = [self._store.commit(rec).get("record_path")]
                    e.update(status="cancelled", finished_at=now_iso(), state="CANCELLED",
                             outcome="cancelled", was=s.state if s else None)
                    jobs[t.slurm_id] = e
                self._reg.update(fn)
            # until Slurm no longer lists them as queued or running (their processes are gone)
            deadline = time.monotonic() + self.cancel_wait_s
            ids = [t.slurm_id for t in live]
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


# ----------------------------------------------------------------------------- helpers

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


def _job_records(store: ResultsStore, e: dict[str, Any]) -> list[Record]:
    """The job's records: what its node committed (same model and config, committed after its
    submission) and what a driver recorded for this Slurm job."""
    return [r for r in store.records(after=int(e.get("since_seq", 0)))
            if r.model == e["model"] and r.config == e["config"]
            and (r.recorded_by != "driver" or str((r.slurm or {}).get("job_id")) == str(e["slurm_id"]))]


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


def _exit_code(text: str | None) -> int | None:
    if not text:
        return None
    m = re.match(r"(\d+)(?::(\d+))?", text)
    if not m:
        return None
    code, sig = int(m.group(1)), int(m.group(2) or 0)
    return code if code else (-sig if sig else 0)


def _outcome(recs: list[dict[str, Any]]) -> str:
    if not recs:
        return "no record"
    return "success" if all(r["status"] == "success" for r in recs) else "failure"


def _outcome_text(recs: list[dict[str, Any]]) -> str:
    if not recs:
        return "ended without a record"
    fails = [r for r in recs if r["status"] == "failure"]
    if not fails:
        return f"done ({len(recs)} result{'s' if len(recs) > 1 else ''})"
    last = fails[-1].get("error", {})
    return f"failed [{last.get('type')}] {last.get('message', '')}"[:400]


def _summary(tracked: list[_Tracked]) -> str:
    q = sum(1 for t in tracked if not t.finished and (t.state in QUEUED_STATES or t.state == "SUBMITTED"))
    r = sum(1 for t in tracked if not t.finished and t.state in ACTIVE_STATES - QUEUED_STATES)
    d = sum(1 for t in tracked if t.finished and t.outcome == "success")
    f = sum(1 for t in tracked if t.finished and t.outcome != "success")
    return f"{q} queued, {r} running, {d} done, {f} failed"
