"""The results store: every attempt as its own record, and the spec's two JSON
files as views derived from the records.

Layout of a results directory::

    success_results.json      view: last success per key            (the spec's shape)
    failure_results.json      view: last failure per key not followed by a success
    records/00000042.json     one attempt each, numbered in commit order, never rewritten
    attempts/<attempt-id>/    logs and traces of one attempt
    running/<pgid>.json       engines started and not yet stopped (for orphan cleanup)
    .lock, .views_seq         the writers' lock; the last record applied to the views

Rules (the spec's): a re-run updates an entry; a success removes the key from
failures; a failure never overwrites a success (it is still recorded, in the
failures view and in its record). ``rebuild()`` replays the records in order and
yields exactly what the incremental updates produced.

Durability: every file is written to a temporary name, fsynced, renamed over
the old one, and the directory fsynced; a record is reported written only after
that. Files get the user's umask (readable by others where it allows); a writer killed
mid-write leaves a temp file that the next writer removes (under the lock: this host's
writers by pid, other hosts' after an hour). Writers take an exclusive file lock (works across processes, and across
nodes on a shared filesystem with POSIX locks). A view that does not parse is
moved aside with a time stamp, reported, and rebuilt from the records.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import re
import socket
import time
from pathlib import Path
from typing import Any, Callable

import psutil
from filelock import FileLock, Timeout as LockTimeout

from ..errors import StoreError
from .flat import failure_entry, success_entry
from .record import Error, Metrics, Profile, Record, Workload, json_default, now_iso, result_key

__all__ = ["ResultsStore", "success_entry", "failure_entry", "result_key", "safe_name", "now_iso", "check_writable"]

log = logging.getLogger("moetrace.store")

SUCCESS_FILE = "success_results.json"
FAILURE_FILE = "failure_results.json"
RECORDS = "records"
ATTEMPTS = "attempts"
RUNNING = "running"
DEFAULT_DIR = "performance_profiles_neurips_traces"
ENV_DIR = "MOETRACE_RESULTS_DIR"
_RECORD_RE = re.compile(r"^(\d{8,})\.json$")


def safe_name(text: str, limit: int = 80) -> str:
    """A name usable as one path component: no separators, no '..', no shell characters."""
    s = re.sub(r"[^A-Za-z0-9._+-]+", "-", text).strip(".-") or "x"
    s = s.replace("..", ".")
    return s[:limit]


def apply_record(success: dict, failure: dict, rec: Record) -> None:
    """The spec's rules, as one function used by both the incremental path and rebuild."""
    key = rec.key
    if rec.status == "success":
        success[key] = success_entry(rec)
        failure.pop(key, None)
    else:
        failure[key] = failure_entry(rec)


def _fsync_dir(d: Path) -> None:
    try:
        fd = os.open(d, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# Temp files of atomic writes: ".<name>.<host>.<pid>.<random>.tmp" beside the file, so that a
# later writer can tell a killed writer's leftovers (its pid gone on this host) from a live one's.
_TEMP_RE = re.compile(r"^\.(?P<name>.+)\.(?P<host>[A-Za-z0-9-]+)\.(?P<pid>\d+)\.[0-9a-f]{8}\.tmp$")
STALE_TEMP_S = 3600.0  # a temp file of another host is stale after this long (its pid cannot be checked)


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9-]+", "-", socket.gethostname())[:32] or "host"


def _temp_name(path: Path, *, host: str | None = None, pid: int | None = None) -> str:
    return f".{path.name}.{host or _host()}.{pid or os.getpid()}.{os.urandom(4).hex()}.tmp"


def atomic_write_json(path: Path, obj: Any) -> None:
    """Write JSON so that readers see the old file or the new one, never a part. The file gets
    the user's umask (0666 & ~umask), like any file the user creates, so that others on a
    shared filesystem can read the results when the umask lets them."""
    data = (json.dumps(obj, indent=2, sort_keys=False, default=json_default) + "\n").encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / _temp_name(path)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise StoreError(f"could not write {path}: {e.strerror or e} (the previous file is intact)") from e
    _fsync_dir(path.parent)


def remove_stale_temp_files(directory: Path, *, max_age_s: float = STALE_TEMP_S) -> list[Path]:
    """Remove the temp files of atomic writes whose writer is gone: named by this store's
    pattern, and either written on this host by a process that no longer exists, or older than
    ``max_age_s``. Call under the store's lock. Returns what was removed."""
    removed = []
    try:
        entries = list(directory.iterdir())
    except OSError:
        return removed
    host, now = _host(), time.time()
    for p in entries:
        m = _TEMP_RE.match(p.name)
        if not m:
            continue
        try:
            gone = m["host"] == host and not psutil.pid_exists(int(m["pid"]))
            if gone or now - p.lstat().st_mtime > max_age_s:
                p.unlink()
                removed.append(p)
        except OSError:
            continue
    return removed


class CorruptFile(Exception):
    pass


def _load_view(path: Path) -> dict[str, dict[str, Any]]:
    try:
        raw = path.read_text()
    except FileNotFoundError:
        return {}
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as e:
        raise CorruptFile(f"{path} is not valid JSON ({e})") from None
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise CorruptFile(f"{path} does not hold an object of entries")
    return data


def check_writable(root: Path) -> None:
    """Raise StoreError unless ``root`` could be created and written, without creating anything
    (for ``--dry-run``): the nearest existing ancestor must be a writable directory."""
    p = Path(os.path.abspath(root))
    while not p.exists() and p != p.parent:
        p = p.parent
    why = ("Not a directory" if not p.is_dir() else
           None if os.access(p, os.W_OK | os.X_OK) else "Permission denied")
    if why:
        raise StoreError(f"results directory {root} is not writable: {why} ({p})")


class ResultsStore:
    """One results directory. Safe for many processes at once."""

    def __init__(self, root: str | os.PathLike[str] | None = None, *, warn: Callable[[str], None] | None = None,
                 lock_timeout: float = 300.0, readonly: bool = False):
        self.root = Path(root or os.environ.get(ENV_DIR) or DEFAULT_DIR)
        self.warn = warn or (lambda msg: log.warning(msg))
        self.lock_timeout = lock_timeout
        self.readonly = readonly  # for readers (reports): creates, locks and rewrites nothing
        self._lock = FileLock(str(self.root / ".lock"), timeout=lock_timeout)
        if readonly:
            return
        try:
            for d in (self.root, self.root / RECORDS, self.root / ATTEMPTS, self.root / RUNNING):
                d.mkdir(parents=True, exist_ok=True)
            probe = self.root / f".write-probe-{os.getpid()}"
            probe.write_text("")
            probe.unlink()
        except OSError as e:
            raise StoreError(f"results directory {self.root} is not writable: {e.strerror or e}") from None

    # ----- paths
    @property
    def success_path(self) -> Path:
        return self.root / SUCCESS_FILE

    @property
    def failure_path(self) -> Path:
        return self.root / FAILURE_FILE

    def attempt_dir(self, attempt_id: str) -> Path:
        d = self.root / ATTEMPTS / safe_name(attempt_id, 160)
        d.mkdir(parents=True, exist_ok=True)
        return d

    # ----- locking
    def locked(self):
        try:
            return self._lock.acquire()
        except LockTimeout:
            raise StoreError(f"could not lock {self.root / '.lock'} within {self.lock_timeout:.0f} s "
                             "(another moetrace holds it)") from None

    def _remove_stale_temp_files(self) -> None:
        for d in (self.root, self.root / RECORDS):
            for p in remove_stale_temp_files(d):
                log.info("removed %s, left by a writer that is gone", p)

    # ----- records
    def _record_files(self) -> list[tuple[int, Path]]:
        out = []
        if not (self.root / RECORDS).is_dir():
            return out
        for p in (self.root / RECORDS).iterdir():
            m = _RECORD_RE.match(p.name)
            if m:
                out.append((int(m.group(1)), p))
        return sorted(out)

    def _read_record(self, seq: int, p: Path) -> Record | None:
        try:
            data = json.loads(p.read_text())
        except (OSError, json.JSONDecodeError) as e:
            self.warn(f"skipping unreadable record {p}: {e}")
            return None
        if not isinstance(data, dict):
            self.warn(f"skipping unreadable record {p}: not a JSON object")
            return None
        rec = Record.from_dict(data)
        rec.seq, rec.record_path = seq, str(p.relative_to(self.root))
        return rec

    def records(self, *, after: int = 0) -> list[Record]:
        """All attempt records in commit order (those numbered above ``after``). An unreadable
        record is reported and skipped."""
        return [rec for seq, p in self._record_files() if seq > after
                if (rec := self._read_record(seq, p)) is not None]

    def last_seq(self) -> int:
        """The number of the last record committed (0 for none)."""
        files = self._record_files()
        return files[-1][0] if files else 0

    def other_engines(self, engine: str | None) -> list[str]:
        """The engines other than ``engine`` whose results the views hold."""
        seen: set[str] = set()
        for path in (self.success_path, self.failure_path):
            try:
                seen |= {e["engine"] for e in _load_view(path).values() if e.get("engine")}
            except (CorruptFile, OSError):
                continue  # a corrupt view is moved aside and rebuilt by the next commit
        return sorted(seen - {engine}) if engine else []

    def check_engine(self, engine: str | None) -> None:
        """One engine per results directory: the spec's key is ``Model::config``, so a second engine's
        result would replace the first's under the same name, and a table would mix engines under
        one label (seen: vLLM's and SGLang's DeepSeek-V3.1 TP1_auto in tests/data/gpu-2/results)."""
        if others := self.other_engines(engine):
            raise StoreError(f"{self.root} holds {', '.join(others)} results; {engine}'s go into another results "
                             "directory (--results DIR), so that no Model::config entry names two engines' numbers")

    def commit(self, record: Record | dict[str, Any]) -> Record:
        """Append one attempt record and update the views. Returns the record with its
        ``seq`` and ``record_path``; when this returns, the record is on disk. A record of another
        engine than the views' is refused (``check_engine``)."""
        given = Record.of(record)
        for k in ("model", "config", "key", "status"):
            if not given.has(k):
                raise ValueError(f"record lacks {k!r}")
        with self.locked():
            self.check_engine(given.the_engine.name)
            self._remove_stale_temp_files()
            self._import_legacy_views()
            files = self._record_files()
            seq = (files[-1][0] + 1) if files else 1
            path = self.root / RECORDS / f"{seq:08d}.json"
            rec = Record.from_dict(dict(given.to_dict(), seq=seq,
                                        record_path=str(path.relative_to(self.root))))
            if not rec.has("finished_at"):
                rec.finished_at = now_iso()
            atomic_write_json(path, rec.to_dict())
            self._update_views(seq)
            return rec

    # ----- views
    def _read_views_seq(self) -> int | None:
        try:
            return int((self.root / ".views_seq").read_text().strip())
        except (OSError, ValueError):
            return None

    def _move_aside(self, path: Path, why: str) -> Path:
        stamp = _dt.datetime.now().strftime("%Y%m%dT%H%M%S%f")
        dest = path.with_name(f"{path.name}.corrupt-{stamp}")
        os.replace(path, dest)
        self.warn(f"{why}; moved it to {dest} (kept) and rebuilt it from {self.root / RECORDS}")
        return dest

    def _update_views(self, upto: int) -> None:
        """Bring the views up to record ``upto``: apply the records the views have not
        seen, or rebuild everything when the views are missing, stale or corrupt."""
        applied = self._read_views_seq()
        success = failure = None
        if applied is not None and applied < upto:
            try:
                success, failure = _load_view(self.success_path), _load_view(self.failure_path)
            except CorruptFile:
                success = None  # moved aside and rebuilt below
        if success is None or failure is None:
            self._rebuild_locked()
            return
        for seq, p in self._record_files():
            if applied < seq <= upto and (rec := self._read_record(seq, p)) is not None:
                apply_record(success, failure, rec)
        self._write_views(success, failure, upto)

    def _write_views(self, success: dict, failure: dict, seq: int) -> None:
        atomic_write_json(self.success_path, success)
        atomic_write_json(self.failure_path, failure)
        atomic_write_json(self.root / ".views_seq", seq)

    def _rebuild_locked(self) -> tuple[dict, dict]:
        success: dict[str, Any] = {}
        failure: dict[str, Any] = {}
        recs = self.records()
        for rec in recs:
            apply_record(success, failure, rec)
        for path in (self.success_path, self.failure_path):
            try:
                _load_view(path)
            except CorruptFile as e:
                self._move_aside(path, str(e))
        self._write_views(success, failure, (recs[-1].seq or 0) if recs else 0)
        return success, failure

    def rebuild(self) -> tuple[dict, dict]:
        """Regenerate both views from the records (``moetrace results rebuild``)."""
        with self.locked():
            self._remove_stale_temp_files()
            self._import_legacy_views()
            return self._rebuild_locked()

    def views(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """Read both views; a corrupt one is moved aside and rebuilt (read-only: reported)."""
        try:
            return _load_view(self.success_path), _load_view(self.failure_path)
        except CorruptFile as e:
            if self.readonly:
                raise StoreError(f"{e}; run `moetrace results rebuild` to rebuild it from the records") from None
            return self.rebuild()

    def all_records(self) -> list[Record]:
        """Every attempt record; for a directory written before records existed (only the
        spec's two files), records made from its entries, without writing anything."""
        recs = self.records()
        if recs:
            return recs
        success, failure = self.views()
        out = [_legacy_record(k, e, status) for status, view in (("failure", failure), ("success", success))
               for k, e in view.items()]
        for i, r in enumerate(out, 1):
            r.seq = i
        return out

    def _import_legacy_views(self) -> None:
        """Results files written before records existed (for example by the original trace
        scripts) become records once, so that no earlier result is dropped by a rebuild."""
        if self._record_files() or self._read_views_seq() is not None:
            return
        try:
            success, failure = _load_view(self.success_path), _load_view(self.failure_path)
        except CorruptFile:
            return  # rebuilt (and moved aside) by the caller
        seq = 0
        for status, view in (("failure", failure), ("success", success)):
            for key, e in view.items():
                seq += 1
                rec = _legacy_record(key, e, status)
                atomic_write_json(self.root / RECORDS / f"{seq:08d}.json", rec.to_dict())
        if seq:
            self.warn(f"imported {seq} entries of existing results files in {self.root} as records")


def _legacy_record(key: str, e: dict[str, Any], status: str) -> Record:
    model, _, config = key.partition("::")  # config with the workload suffix, as before
    rec = Record.new(imported=True, key=key, model=e.get("model", model), config=e.get("config", config),
                     status=status, finished_at=e.get("last_updated"), attempt_id=f"imported-{safe_name(key)}")
    if status == "success":
        rec.workload = Workload(**{k: e.get(k) for k in ("batch_size", "input_len", "output_len")})
        rec.metrics = Metrics(**{k: e.get(k) for k in ("latency_s", "input_throughput_tok_per_s",
                                                       "output_throughput_tok_per_s", "itl_ms")})
        rec.profile = Profile(extend=e.get("profile_extend"), decode=e.get("profile_decode"))
    else:
        rec.error = Error(type=e.get("error_type", "Unknown"), message=e.get("error_message", ""))
    return rec
