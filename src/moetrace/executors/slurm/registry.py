"""What the driver keeps in the results directory: the job registry (``<results>/slurm/jobs.json``,
written atomically under a lock, so that a restarted driver finds its jobs again) and the
records a job committed."""

from __future__ import annotations

import datetime as _dt
import json
import os
import re
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


_RECORD_RE = re.compile(r"^(\d{8,})\.json$")


def _record_files(root: Path) -> list[tuple[int, Path]]:
    d = Path(root) / "records"
    if not d.is_dir():
        return []
    return sorted((int(m.group(1)), p) for p in d.iterdir() if (m := _RECORD_RE.match(p.name)))


def _last_seq(root: Path) -> int:
    files = _record_files(root)
    return files[-1][0] if files else 0


def _job_records(root: Path, e: dict[str, Any]) -> list[dict[str, Any]]:
    """The job's records: what its node committed (same model and config, committed after its
    submission) and what a driver recorded for this Slurm job."""
    out = []
    for seq, p in _record_files(root):
        if seq <= int(e.get("since_seq", 0)):
            continue
        try:
            rec = json.loads(p.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        mine = rec.get("recorded_by") != "driver" or str((rec.get("slurm") or {}).get("job_id")) == str(e["slurm_id"])
        if rec.get("model") == e["model"] and rec.get("config") == e["config"] and mine:
            rec["seq"], rec["record_path"] = seq, str(p.relative_to(root))
            out.append(rec)
    return out
