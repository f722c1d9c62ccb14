"""What the driver keeps in the results directory: the job registry (``<results>/slurm/jobs.json``,
written atomically under a lock, so that a restarted driver finds its jobs again). A job's
records are listed through the results store (``submit._job_records``)."""

from __future__ import annotations

import datetime as _dt
import json
import os
import sys
from pathlib import Path
from typing import Any, Callable

from filelock import FileLock

from ...results.store import atomic_write_json


SLURM_DIR = "slurm"
REGISTRY_FILE = "jobs.json"


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
