"""One attempt: a config launched, measured, profiled and recorded (``run.run_config``), as typed
stages over one context (``context.Attempt``). Also the entry point a Slurm job runs on its node
(``moetrace run``)."""

from ..options import RunOptions
from ..results.record import DEFAULT_WORKLOAD, workload_suffix
from .launch import launch_count, launch_options
from .progress import Progress
from .run import run_config

__all__ = ["RunOptions", "run_config", "launch_options", "launch_count", "Progress", "workload_suffix",
           "DEFAULT_WORKLOAD"]
