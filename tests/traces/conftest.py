"""Fixtures of the trace tests: paths of the real trace files and a writer of small synthetic traces."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import pytest

DATA = Path(__file__).resolve().parents[1] / "data" / "traces"
GPU = DATA / "gpu"
CPU = DATA / "cpu"
VLLM_CPU = DATA / "vllm_cpu"  # real vLLM CPU server traces, dropped here by the engine work


def files(folder: Path, pattern: str = "*.trace.json.gz") -> list[Path]:
    return sorted(folder.glob(pattern))


def kineto_text(events: list[dict[str, Any]], header: dict[str, Any] | None = None) -> str:
    """A trace in the layout of PyTorch's Kineto writer: one key per line at the top, each event
    closed by a newline, two spaces and '}' (what the reader's fast path relies on)."""
    head = "".join(f'  "{k}": {json.dumps(v)},\n' for k, v in (header or {"schemaVersion": 1}).items())
    body = ",\n".join("  {\n    " + json.dumps(e)[1:-1] + "\n  }" for e in events)
    return "{\n" + head + '  "traceEvents": [\n' + body + '\n  ],\n  "traceName": "synthetic"\n}'


@pytest.fixture(params=["isal", "zlib"])
def inflater(request, monkeypatch):
    """The reader's gunzip through ISA-L (skipped where isal is not installed) and through zlib (its
    fallback): the same bytes, the same errors."""
    import zlib

    from moetrace.traces import reader
    if request.param == "isal":
        isal_zlib = pytest.importorskip("isal.isal_zlib")
        monkeypatch.setattr(reader, "_inflate", isal_zlib)
    else:
        monkeypatch.setattr(reader, "_inflate", zlib)
    return request.param


@pytest.fixture
def write_trace(tmp_path):
    """write_trace(events, name=..., header=..., gz=True, compact=False) -> path of a synthetic trace."""

    def write(events: list[dict[str, Any]], name: str = "t.trace.json.gz", header: dict | None = None,
              gz: bool = True, compact: bool = False) -> Path:
        text = json.dumps({**(header or {}), "traceEvents": events}) if compact else kineto_text(events, header)
        path = tmp_path / name
        if gz:
            with gzip.open(path, "wt") as f:
                f.write(text)
        else:
            path.write_text(text)
        return path

    return write


def op(name: str, ts: float, dur: float, ext: int, cat: str = "cpu_op", pid: int = 1, tid: int = 1) -> dict:
    return {"ph": "X", "cat": cat, "name": name, "pid": pid, "tid": tid, "ts": ts, "dur": dur,
            "args": {"External id": ext}}


def kernel(name: str, ts: float, dur: float, ext: int | None, device: int = 0, stream: int = 7,
           cat: str = "kernel") -> dict:
    args: dict[str, Any] = {"device": device, "stream": stream}
    if ext is not None:
        args["External id"] = ext
    return {"ph": "X", "cat": cat, "name": name, "pid": device, "tid": stream, "ts": ts, "dur": dur, "args": args}
