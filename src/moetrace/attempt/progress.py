"""Progress lines on stderr, and the facts of the host an attempt ran on."""

from __future__ import annotations

import os
import platform
import shutil
import socket
import subprocess
import sys
import time
from typing import Any


class Progress:
    """Progress lines with elapsed time, on stderr. Quiet between updates on a non-terminal."""

    def __init__(self, stream=None, every_s: float = 10.0):
        self.stream = stream or sys.stderr
        self.every_s = every_s
        self.prefix = ""
        self._last = 0.0

    def step(self, text: str) -> None:
        self._t0 = time.monotonic()
        self._text = text
        self._emit(f"{self.prefix}{text}")

    def tick(self, elapsed: float, extra: str = "") -> None:
        now = time.monotonic()
        if now - self._last >= self.every_s:
            self._emit(f"{self.prefix}{self._text} ... {elapsed:.0f} s {extra}".rstrip())

    def done(self, text: str) -> None:
        self._emit(f"{self.prefix}{self._text}: {text} ({time.monotonic() - self._t0:.1f} s)")

    def _emit(self, line: str) -> None:
        self._last = time.monotonic()
        print(line, file=self.stream, flush=True)


def host_facts() -> dict[str, Any]:
    """Host name, platform, Python, CPUs and (where nvidia-smi answers) the GPUs."""
    from ..measure.client import client_facts
    facts: dict[str, Any] = {"hostname": socket.gethostname(), "platform": platform.platform(),
                             "python": platform.python_version(), "cpus": os.cpu_count(),
                             "measure_client": client_facts()}  # the stream's JSON decoder: part of every ITL
    if shutil.which("nvidia-smi"):
        try:
            out = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version",
                                  "--format=csv,noheader"], capture_output=True, text=True, timeout=30).stdout
            facts["gpus"] = [dict(zip(("name", "memory", "driver"), (x.strip() for x in line.split(","))))
                             for line in out.strip().splitlines()]
        except (OSError, subprocess.TimeoutExpired):
            pass
    return facts
