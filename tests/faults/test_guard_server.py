"""How a failed request is blamed (attempt.session.guard_server): on the engine when it died or stopped serving,
on the stream otherwise. The server here is a real listening socket or none; the process facts are the
three ServerProcess answers the guard reads (exit code, live pids, its port)."""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from moetrace.engines.process import free_port
from moetrace.errors import BenchmarkFailure, ServerDied
from moetrace.attempt.session import guard_server as _guard_server


@dataclass
class Facts:
    port: int
    host: str = "127.0.0.1"
    code: int | None = None
    pids: set[int] = field(default_factory=lambda: {1, 2})
    log_path: Path = Path("server.log")

    def exit_code(self):
        return self.code

    def alive_pids(self):
        return set(self.pids)


def _broken():
    raise BenchmarkFailure("connection broke after 0 tokens: Connection refused")


def test_nothing_listening_on_the_engines_port_is_a_server_error():
    # vLLM's EngineCore killed, its API server closed the port and still exiting after the guard's 5 s wait
    with pytest.raises(ServerDied, match="stopped listening on port"):
        _guard_server(_broken, Facts(port=free_port("127.0.0.1")), None)


def test_a_listening_engine_leaves_the_blame_on_the_stream():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        with pytest.raises(BenchmarkFailure) as e:
            _guard_server(_broken, Facts(port=s.getsockname()[1]), None)
        assert not isinstance(e.value, ServerDied)


def test_an_exited_engine_is_a_server_error():
    with pytest.raises(ServerDied, match="exited with code 137"):
        _guard_server(_broken, Facts(port=1, code=137), None)
