"""Exceptions raised while running one config. Each carries what the failure
classifier needs; none of them is fatal to a sweep."""

from __future__ import annotations

from pathlib import Path

#: ``moetrace run``'s exit code when an attempted config failed and was recorded (cli.py's docstring);
#: a Slurm node (executors/slurm/node.py) takes it as a run that did its job
EXIT_CONFIGS_FAILED = 3


class MoetraceError(Exception):
    """Base class. ``log_path`` names the file a user should read."""

    def __init__(self, message: str, *, log_path: Path | None = None, exit_code: int | None = None):
        super().__init__(message)
        self.log_path = log_path
        self.exit_code = exit_code


class LaunchError(MoetraceError):
    """The engine process could not be started, or exited before it was ready."""


class LaunchTimeout(MoetraceError):
    """The engine did not become ready within the launch timeout."""


class RequestTimeout(MoetraceError):
    """A request got no progress within the request timeout (the server hangs)."""


class ServerDied(MoetraceError):
    """The engine process exited while it was being measured."""


class ServerHTTPError(MoetraceError):
    """The server answered with an HTTP error status or an error object."""


class BenchmarkFailure(MoetraceError):
    """A stream that broke, ended short, or carried bad data: never a number."""


class ProfileError(MoetraceError):
    """Trace capture failed; the benchmark numbers are kept."""


class StoreError(MoetraceError):
    """The results store could not write (disk full, permissions)."""
