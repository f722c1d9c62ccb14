"""Traces re-serialized by Python's json (``json.dump(trace)``: no newline anywhere, ``}, {``
between events; what a merged or post-processed trace looks like), plain and gzipped: msgspec reads
them a buffer at a time as it reads Kineto's layout, and they give what the general loop gives.

The reader finds the end of a buffer's events by looking at bytes ('}', ',', '{'), which can also
be met inside a string or between objects nested in an event; these tests hold it to the general
loop on every real trace kept under tests/data and on events made to hold such text.
"""

from __future__ import annotations

import gzip
import json
from dataclasses import asdict
from pathlib import Path

import pytest

from moetrace.traces import reader
from moetrace.traces.analyze import analyze_trace
from moetrace.traces.reader import TraceStream

from .test_fast_path import CATS, DATA, REAL, _ev, _id, _odd_events, _reference, _tuples, decodes  # noqa: F401


def _write(path: Path, text: str, gz: bool) -> Path:
    if gz:
        with gzip.open(path, "wt", encoding="utf-8") as f:
            f.write(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def _summary(path: Path) -> dict:
    d = asdict(analyze_trace(path))
    del d["path"], d["bytes_read"]
    return d


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gzip"])
@pytest.mark.parametrize("path", REAL, ids=_id)
def test_every_real_trace_as_json_writes_it(path, gz, tmp_path, monkeypatch, decodes):
    """The same spans, and the same summary as the trace as the engine wrote it and as the general
    loop reads it."""
    with gzip.open(path, "rt") as f:
        trace = json.load(f)
    want, skipped = _reference(trace["traceEvents"])
    name = path.name if gz else path.name.removesuffix(".gz")  # same name: same rank and stage
    dumped = _write(tmp_path / name, json.dumps(trace), gz)
    stream = TraceStream(dumped)
    assert _tuples(stream.spans(CATS)) == repr(want) and stream.skipped == skipped
    assert decodes and all(decodes)  # msgspec read every event after the first
    fast = _summary(dumped)
    assert fast == _summary(path)
    monkeypatch.setattr(reader, "_decode_events", lambda buf, start, limit: None)  # the general loop reads all
    assert _summary(dumped) == fast


@pytest.mark.parametrize("how", [{"separators": (",", ":")}, {"separators": (",", ": ")},
                                 {"separators": (" ,\n ", ":")}, {"indent": 2}, {"sort_keys": True}],
                         ids=["compact", "no-space", "odd", "indented", "sorted-keys"])
def test_other_json_layouts(how, tmp_path, decodes):
    """Blanks or none around the ',' between events, indentation, keys in another order."""
    path = REAL[0]
    with gzip.open(path, "rt") as f:
        trace = json.load(f)
    want, skipped = _reference(trace["traceEvents"])
    dumped = _write(tmp_path / path.name.removesuffix(".gz"), json.dumps(trace, **how), False)
    stream = TraceStream(dumped)
    assert _tuples(stream.spans(CATS)) == repr(want) and stream.skipped == skipped
    assert decodes and all(decodes)


def _tricky_events() -> list[dict]:
    """Events holding what looks like a boundary between events, or its parts, where it is none."""
    return [
        _ev('a}, {"ph": "X", "cat": "kernel"}, {b', args={"External id": 1}),
        _ev("compact},{inside", args={"External id": 2, "device": 0}),
        _ev('quote \\"}, {\\" and backslash \\\\}, {', args={"External id": 3}),
        _ev("step[DECODE bs=1]", cat="user_annotation", args={"External id": 4, "note": "}, {"}),
        _ev("objects in a list", args={"External id": 5, "list": [{"a": 1}, {"b": {"c": [{"d": 2}, {}]}}]}),
        _ev("objects in a list, last", args={"External id": 6, "device": 1, "z": [{"x": "}, {"}, {"y": 1}]}),
        _ev("braces {x} and { and }", cat="cpu_op", args={"External id": 7, "Concrete Inputs": ["}, {", "{}", "},"]}),
        _ev("caf\u00e9 \u4e2d\u6587 \U0001f600 \u2028", cat="cpu_op", args={"External id": 8}),
        _ev("nested", args={"External id": 9, "sub": {"device": 9, "more": {"deep": [[{}], {"e": "}, {"}]}}}),
        _ev("comma then brace", args={"External id": 10, "s": ", {", "t": "} ,"}),
    ]


@pytest.mark.parametrize("ascii_only", [True, False], ids=["escaped", "utf-8"])
def test_boundaries_that_are_none(ascii_only, tmp_path, monkeypatch, decodes):
    """'}, {' inside strings and between objects nested in events, unicode written as escapes or as
    UTF-8, odd events, the buffers cut in many places: the spans json gives; where the last '}, {'
    of a buffer was none, msgspec refused it and the general loop read it."""
    plain = _ev("aten::add", cat="cpu_op", pid=1, tid=1, ts=0.25, dur=1.0, args={"External id": 0})
    odd = [e for e in _odd_events() if ascii_only or "\ud800" not in str(e["name"])]  # UTF-8 has no lone surrogate
    events = [plain] * 20 + (_tricky_events() + [plain] * 3) * 12 + odd + _tricky_events() * 4
    text = json.dumps({"schemaVersion": 1, "traceEvents": events, "after": [{"x": "}, {"}, {}]},
                      ensure_ascii=ascii_only)
    path = _write(tmp_path / "tricky.json", text, False)
    want, skipped = _reference(json.loads(text)["traceEvents"])
    for chunk in range(4096, 4396, 5):
        monkeypatch.setattr(reader, "_CHUNK", chunk)
        stream = TraceStream(path)
        assert _tuples(stream.spans(CATS)) == repr(want) and stream.skipped == skipped
        assert stream.header["after"] == [{"x": "}, {"}, {}]
    assert False in decodes and True in decodes


def test_a_boundary_that_is_none_is_passed_over(tmp_path, monkeypatch, decodes):
    """Where the last '}, {' of a buffer lies in a string or between objects nested in an event,
    msgspec reads the events up to a boundary before it: the general loop reads none of them."""
    slow: list[int] = []
    hand_back = TraceStream._hand_back

    def counted(self, buf, start, slow_to=None):
        if slow_to is not None:
            slow.append(slow_to)
        hand_back(self, buf, start, slow_to)

    monkeypatch.setattr(TraceStream, "_hand_back", counted)
    plain = _ev("aten::add", cat="cpu_op", pid=1, tid=1, ts=0.25, dur=1.0, args={"External id": 0})
    events = [plain] * 20 + (_tricky_events() + [plain]) * 30
    text = json.dumps({"traceEvents": events})
    path = _write(tmp_path / "nested.json", text, False)
    want, skipped = _reference(events)
    for chunk in range(4096, 4396, 5):
        monkeypatch.setattr(reader, "_CHUNK", chunk)
        stream = TraceStream(path)
        assert _tuples(stream.spans(CATS)) == repr(want) and stream.skipped == skipped
    assert False in decodes and not slow


@pytest.mark.parametrize("ascii_only", [True, False], ids=["escaped", "utf-8"])
def test_tricky_trace_gzipped_gives_the_general_loops_summary(ascii_only, tmp_path, monkeypatch):
    """The same, gzipped and through the whole analysis (a step and kernels in it), against the
    general loop."""
    events = [_ev("step[DECODE bs=1]", cat="user_annotation", ts=0.0, dur=100.0, args={"External id": 0}),
              _ev("step[DECODE bs=1]", cat="gpu_user_annotation", ts=1.0, dur=98.0, args={"device": 0})]
    for i, ev in enumerate(_tricky_events() * 200):
        events.append({**ev, "ts": 2.0 + i * 0.01, "dur": 0.005})
    text = json.dumps({"traceEvents": events}, ensure_ascii=ascii_only)
    path = _write(tmp_path / "x-TP-0-DECODE.trace.json.gz", text, True)
    monkeypatch.setattr(reader, "_CHUNK", 1024)
    fast = _summary(path)
    assert fast["events"] == len(events)
    monkeypatch.setattr(reader, "_decode_events", lambda buf, start, limit: None)
    assert _summary(path) == fast


def _with_tricky_text(events: list) -> list:
    """The events with '}, {', braces, objects in arrays and non-ASCII text in their arguments (and
    in some host ops' names), as a merged or annotated trace may hold them."""
    out = []
    for i, ev in enumerate(events):
        if isinstance(ev, dict) and i % 5 == 0:
            ev = {**ev, "args": {**(ev.get("args") or {}), "note": 'x}, {"y": 1},{z caf\u00e9 \u4e2d \U0001f600',
                                 "objs": [{"a": 1}, {"b": [{}, {"c": "}, {"}]}]}}
            if ev.get("cat") == "cpu_op" and i % 3 == 0:
                ev["name"] = ev.get("name", "") + " {}, {x}"
        out.append(ev)
    return out


@pytest.mark.parametrize("ascii_only", [True, False], ids=["escaped", "utf-8"])
@pytest.mark.parametrize("path", [p for p in REAL if "DECODE" in p.name or "decode" in p.name][:4]
                         + sorted((DATA / "traces").glob("**/*.trace.json.gz"))[:4],
                         ids=lambda p: p.name[:40])
def test_real_traces_with_tricky_text_give_the_general_loops_summary(path, ascii_only, tmp_path, monkeypatch,
                                                                     decodes):
    """Real traces, every fifth event given text that looks like event boundaries, re-serialized by
    json (unicode as escapes, or as UTF-8) and gzipped: the spans json gives, and the general loop's
    summary."""
    with gzip.open(path, "rt") as f:
        trace = json.load(f)
    trace["traceEvents"] = _with_tricky_text(trace["traceEvents"])
    want, skipped = _reference(trace["traceEvents"])
    dumped = _write(tmp_path / path.name, json.dumps(trace, ensure_ascii=ascii_only), True)
    monkeypatch.setattr(reader, "_CHUNK", 8191)  # many buffers, cut in many places
    stream = TraceStream(dumped)
    assert _tuples(stream.spans(CATS)) == repr(want) and stream.skipped == skipped
    assert stream._buffers > 0 and (False in decodes or stream._buffers < 5)  # boundaries that were none met
    fast = _summary(dumped)
    monkeypatch.setattr(reader, "_decode_events", lambda buf, start, limit: None)
    assert _summary(dumped) == fast
