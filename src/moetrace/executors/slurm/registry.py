"""What the driver keeps in the results directory: the job registry (``<results>/slurm/jobs.json``,
written atomically under a lock, so that a restarted driver finds its jobs again), one typed
``JobEntry`` per Slurm job. A job's records are listed through the results store
(``submit._job_records``)."""

from __future__ import annotations

import datetime as _dt
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from filelock import FileLock

from ...results.record import Part
from ...results.store import atomic_write_json


SLURM_DIR = "slurm"
REGISTRY_FILE = "jobs.json"


@dataclass(eq=False)
class JobEntry(Part):
    """One Slurm job of the registry, as the driver wrote it (keys it does not name are kept in
    ``extra``; reads like the dict it was, ``entry["status"]``)."""

    # written at submission, in this order
    slurm_id: str | None = None
    model: str | None = None
    model_arg: str | None = None  # what the node's ``moetrace run`` is given for the model
    config: str | None = None
    config_detail: dict[str, Any] | None = None
    role: str | None = None  # "primary" or "fallback"
    key: str | None = None
    command: list[str] | None = None
    nodes: int | None = None
    results: str | None = None  # the results directory it writes into
    since_seq: int | None = None  # the store's last record number when it was submitted
    submitted_at: str | None = None
    driver: dict[str, Any] | None = None  # host and pid of the driver that submitted it
    log: str | None = None  # its log, relative to the results directory
    status: str | None = None  # active | finished | cancelled
    state: str | None = None  # Slurm's state, last seen
    options: dict[str, Any] | None = None  # options.RunOptions.to_dict()
    # written as it runs and ends
    reason: str | None = None
    node_list: str | None = None
    finished_at: str | None = None
    outcome: str | None = None  # success | failure | no record | cancelled
    records: list[str] | None = None  # the paths of its records
    slurm: dict[str, Any] | None = None
    was: str | None = None  # the state a cancelled job was in

    @property
    def the_role(self) -> str:
        return self.role or "primary"

    @property
    def active(self) -> bool:
        return self.status == "active"


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

    def load(self) -> dict[str, JobEntry]:
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
        jobs = data.get("jobs", {}) if isinstance(data, dict) else {}
        return {sid: JobEntry.of(e) for sid, e in jobs.items()}

    def update(self, fn: Callable[[dict[str, JobEntry]], Any]) -> Any:
        with self._lock:
            jobs = self.load()
            result = fn(jobs)
            atomic_write_json(self.path, {"version": 1, "jobs": jobs})
            return result

    def put(self, entry: JobEntry | dict[str, Any]) -> None:
        entry = JobEntry.of(entry)
        self.update(lambda jobs: jobs.__setitem__(entry.slurm_id, entry))

    def patch(self, slurm_id: str, **fields: Any) -> None:
        def fn(jobs):
            if slurm_id in jobs:
                jobs[slurm_id].update(fields)
        self.update(fn)
