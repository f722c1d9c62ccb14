"""Slurm job states, from ``squeue``/``scontrol`` and, where there is an accounting database,
``sacct`` (submitit asks only ``sacct``, which a cluster without accounting cannot answer)."""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from typing import Iterable


# Slurm job states (squeue/scontrol/sacct spell them alike).
ACTIVE_STATES = {"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "SUSPENDED", "STOPPED", "SIGNALING",
                 "STAGE_OUT", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESIZING", "RESV_DEL_HOLD"}
QUEUED_STATES = {"PENDING", "CONFIGURING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESV_DEL_HOLD"}
KILLED_STATES = {"TIMEOUT", "PREEMPTED", "NODE_FAIL", "BOOT_FAIL", "DEADLINE", "OUT_OF_MEMORY", "CANCELLED",
                 "REVOKED"}
FINAL_STATES = KILLED_STATES | {"COMPLETED", "FAILED", "SPECIAL_EXIT"}


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


def _exit_code(text: str | None) -> int | None:
    if not text:
        return None
    m = re.match(r"(\d+)(?::(\d+))?", text)
    if not m:
        return None
    code, sig = int(m.group(1)), int(m.group(2) or 0)
    return code if code else (-sig if sig else 0)
