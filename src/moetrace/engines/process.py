"""Engine processes: start in their own session, log to a file, wait until ready,
and stop the whole tree on every exit path, verifying nothing is left.

Servers that are running are listed in ``<results>/running/<pgid>.json`` so that
a later moetrace, after this one was SIGKILLed, finds and stops them
(``reap_orphans``). Entries carry the process's start time so a reused pid is
never killed by mistake.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import psutil

from ..errors import LaunchError, LaunchTimeout
from ..text import tail

__all__ = ["ServerProcess", "free_port", "port_is_free", "reap_orphans", "tail"]


def free_port(host: str = "127.0.0.1") -> int:
    with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """Could a server listen on this port now? (SO_REUSEADDR, as servers set it, so that
    connections of the previous server lingering in TIME_WAIT do not count.)"""
    with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
        return True


@dataclass
class StopReport:
    signalled: list[int] = field(default_factory=list)
    killed: list[int] = field(default_factory=list)  # needed SIGKILL
    survivors: list[int] = field(default_factory=list)  # still alive after SIGKILL: should be empty
    port_free: bool | None = None

    def to_dict(self) -> dict:
        return {"signalled": self.signalled, "killed": self.killed, "survivors": self.survivors,
                "port_free": self.port_free}


class ServerProcess:
    """One engine server: ``with ServerProcess(...) as sp: sp.wait_ready(probe)``."""

    def __init__(self, cmd: list[str], *, log_path: Path, env: dict[str, str] | None = None,
                 port: int | None = None, host: str = "127.0.0.1", registry: Path | None = None,
                 label: str = "", grace_s: float = 20.0, cwd: Path | None = None):
        self.cmd = [str(c) for c in cmd]
        self.log_path = Path(log_path)
        self.env = env
        self.port = port
        self.host = host
        self.registry = registry
        self.label = label
        self.grace_s = grace_s
        self.cwd = cwd
        self.proc: subprocess.Popen[bytes] | None = None
        self.stop_report: StopReport | None = None
        self._known: dict[int, float] = {}  # pid -> create_time of every process seen in the tree
        self.exit_code_before_stop: int | None = None  # how the engine ended by itself, if it did

    # ----- start
    def start(self) -> "ServerProcess":
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        logf = open(self.log_path, "ab", buffering=0)
        try:
            logf.write(("$ " + " ".join(self.cmd) + "\n").encode())
            self.proc = subprocess.Popen(self.cmd, stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT,
                                         env=self.env, cwd=self.cwd, start_new_session=True)
        except OSError as e:
            raise LaunchError(f"{self.label}: cannot start {self.cmd[0]!r}: {e.strerror or e}",
                              log_path=self.log_path) from None
        finally:
            logf.close()
        self._remember_tree()
        self._register()
        return self

    def __enter__(self) -> "ServerProcess":
        return self.start() if self.proc is None else self

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def exit_code(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def log_text(self, max_bytes: int = 256_000) -> str:
        return tail(self.log_path, max_bytes)

    # ----- readiness
    def wait_ready(self, probe: Callable[[], bool], *, timeout_s: float,
                   on_wait: Callable[[float], None] | None = None) -> float:
        """Poll ``probe`` with back-off (0.05 s growing to 0.5 s) until it returns True.
        Fails at once when the process exits, and at ``timeout_s``. Returns seconds waited."""
        t0 = time.monotonic()
        deadline = t0 + timeout_s
        delay = 0.05
        while True:
            code = self.exit_code()
            if code is not None:
                raise LaunchError(f"{self.label}: engine exited with code {code} before it was ready",
                                  log_path=self.log_path, exit_code=code)
            self._remember_tree()
            if probe():
                return time.monotonic() - t0
            now = time.monotonic()
            if now >= deadline:
                raise LaunchTimeout(f"{self.label}: engine not ready after {timeout_s:.0f} s (launch timeout)",
                                    log_path=self.log_path)
            if on_wait:
                on_wait(now - t0)
            time.sleep(min(delay, max(0.0, deadline - now)))
            delay = min(delay * 1.5, 0.5)

    # ----- stop
    def _tree(self) -> list[psutil.Process]:
        procs: dict[int, psutil.Process] = {}
        if self.proc is not None:
            try:
                root = psutil.Process(self.proc.pid)
                procs[root.pid] = root
                for c in root.children(recursive=True):
                    procs[c.pid] = c
            except psutil.Error:
                pass
            pgid = self.proc.pid  # start_new_session: the group id is the leader's pid
            for p in psutil.process_iter(["pid"]):
                try:
                    if os.getpgid(p.pid) == pgid:
                        procs.setdefault(p.pid, p)
                except (ProcessLookupError, PermissionError, psutil.Error):
                    continue
        return list(procs.values())

    def _remember_tree(self) -> None:
        for p in self._tree():
            try:
                self._known.setdefault(p.pid, p.create_time())
            except psutil.Error:
                pass

    def _alive_known(self) -> list[psutil.Process]:
        out = []
        for pid, ctime in self._known.items():
            try:
                p = psutil.Process(pid)
                if abs(p.create_time() - ctime) < 0.01 and p.status() != psutil.STATUS_ZOMBIE:
                    out.append(p)
            except psutil.Error:
                continue
        return out

    def alive_pids(self) -> set[int]:
        """Processes of the tree alive now (compare two snapshots to see a worker die)."""
        self._remember_tree()
        return {p.pid for p in self._alive_known()}

    def stop(self) -> StopReport:
        """SIGTERM the group and every process ever seen in the tree, SIGKILL what is left
        after the grace period, then verify none survives and the port is free."""
        if self.stop_report is not None:
            return self.stop_report
        rep = StopReport()
        if self.proc is None:
            self.stop_report = rep
            return rep
        self.exit_code_before_stop = self.proc.poll()
        self._remember_tree()
        targets = self._alive_known()
        rep.signalled = sorted(p.pid for p in targets)
        _signal_group(self.proc.pid, signal.SIGTERM)
        for p in targets:
            _signal(p, signal.SIGTERM)
            _signal(p, signal.SIGCONT)  # a stopped (hung) process must run to act on SIGTERM
        _, alive = psutil.wait_procs(targets, timeout=self.grace_s)
        if alive:
            rep.killed = sorted(p.pid for p in alive)
            _signal_group(self.proc.pid, signal.SIGKILL)
            for p in alive:
                _signal(p, signal.SIGKILL)
            psutil.wait_procs(alive, timeout=10)
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        rep.survivors = sorted(p.pid for p in self._alive_known())
        if self.port:
            deadline = time.monotonic() + 10
            while not (free := port_is_free(self.port, self.host)) and time.monotonic() < deadline:
                time.sleep(0.2)
            rep.port_free = free
        if not rep.survivors:
            self._unregister()
        self.stop_report = rep
        return rep

    # ----- registry of running servers
    def _registry_file(self) -> Path | None:
        return self.registry / f"{self.proc.pid}.json" if (self.registry and self.proc) else None

    def _register(self) -> None:
        f = self._registry_file()
        if f is None:
            return
        try:
            ctime = psutil.Process(self.proc.pid).create_time()
        except psutil.Error:
            ctime = None
        f.parent.mkdir(parents=True, exist_ok=True)
        tmp = f.with_suffix(".tmp")
        tmp.write_text(json.dumps({"pid": self.proc.pid, "pgid": self.proc.pid, "create_time": ctime,
                                   "cmd": self.cmd, "port": self.port, "label": self.label,
                                   "owner_pid": os.getpid(),
                                   "owner_create_time": _my_create_time(), "host": socket.gethostname(),
                                   "log": str(self.log_path)}))
        os.replace(tmp, f)

    def _unregister(self) -> None:
        f = self._registry_file()
        if f is not None:
            try:
                f.unlink()
            except FileNotFoundError:
                pass


def _my_create_time() -> float | None:
    try:
        return psutil.Process().create_time()
    except psutil.Error:
        return None


def _signal(p: psutil.Process, sig: int) -> None:
    try:
        p.send_signal(sig)
    except psutil.Error:
        pass


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def reap_orphans(registry: Path, *, grace_s: float = 10.0, log: Callable[[str], None] = print) -> list[dict]:
    """Stop servers a previous moetrace started and never stopped (it was killed).
    Only servers of this host whose owner is gone and whose start time matches are touched."""
    reaped = []
    if not registry.is_dir():
        return reaped
    host = socket.gethostname()
    for f in sorted(registry.glob("*.json")):
        try:
            info = json.loads(f.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if info.get("host") != host or _owner_alive(info):
            continue
        pgid = int(info["pgid"])
        members = []
        for p in psutil.process_iter(["pid"]):
            try:
                if os.getpgid(p.pid) == pgid:
                    members.append(p)
            except (ProcessLookupError, PermissionError, psutil.Error):
                continue
        try:
            leader = psutil.Process(pgid)
            if info.get("create_time") and abs(leader.create_time() - info["create_time"]) > 0.01:
                members = [m for m in members if m.pid != pgid]  # pid reused by something else
        except psutil.Error:
            pass
        if members:
            log(f"stopping {len(members)} leftover engine process(es) of {info.get('label')} "
                f"(group {pgid}, started by moetrace pid {info.get('owner_pid')}, log {info.get('log')})")
            for p in members:
                _signal(p, signal.SIGTERM)
            _, alive = psutil.wait_procs(members, timeout=grace_s)
            for p in alive:
                _signal(p, signal.SIGKILL)
            psutil.wait_procs(alive, timeout=5)
        reaped.append(info)
        f.unlink(missing_ok=True)
    return reaped


def _owner_alive(info: dict) -> bool:
    """Is the moetrace that registered this server still running?"""
    try:
        p = psutil.Process(int(info["owner_pid"]))
        same = info.get("owner_create_time") is None or abs(p.create_time() - info["owner_create_time"]) < 0.01
        return same and p.status() != psutil.STATUS_ZOMBIE
    except (psutil.Error, KeyError, ValueError):
        return False
