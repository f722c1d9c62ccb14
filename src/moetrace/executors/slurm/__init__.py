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

The package, by job: ``commands`` (the node's ``moetrace run`` command line, the Slurm options'
parsing), ``state`` (job states from squeue/scontrol/sacct), ``registry`` (the job registry and a
job's records), ``node`` (what runs on the node), ``submit`` (the driver: ``SlurmExecutor``).
"""

from __future__ import annotations

from .commands import model_arg, moetrace_exe, parse_slurm_args, parse_time, run_command
from .node import NodeCommand
from .registry import REGISTRY_FILE, SLURM_DIR, JobRegistry
from .state import ACTIVE_STATES, FINAL_STATES, KILLED_STATES, QUEUED_STATES, SlurmState, query_states
from .submit import SlurmExecutor, SubmissionError

__all__ = ["SlurmExecutor", "NodeCommand", "JobRegistry", "run_command", "parse_time", "query_states",
           "SlurmState", "KILLED_STATES", "FINAL_STATES", "ACTIVE_STATES", "QUEUED_STATES", "SLURM_DIR",
           "REGISTRY_FILE", "SubmissionError", "parse_slurm_args", "moetrace_exe", "model_arg"]
