"""What a Slurm job runs on its node(s), through submitit: ``NodeCommand``."""

from __future__ import annotations

import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

from ...errors import EXIT_CONFIGS_FAILED
from .registry import SLURM_DIR


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
            from ..multinode import node_main
            rc = node_main(rank, job, lambda extra: self._run(self.command + extra, env, log), log=log)
        else:
            rc = self._run(self.command, env, log)
        if rc not in (0, EXIT_CONFIGS_FAILED):  # 3: the config failed and its record says why; the job did its part
            raise RuntimeError(f"rank {rank}: {shlex.join(self.command[:4])} ... exited with code {rc}")
        return {"returncode": rc, "rank": rank, "host": socket.gethostname()}

    def _run(self, cmd: list[str], env: dict[str, str], log: Callable[[str], None]) -> int:
        from ...engines.process import reap_orphans
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
