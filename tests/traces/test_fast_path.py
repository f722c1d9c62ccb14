"""The reader's fast path against plain JSON decoding: the same spans, the same analysis to the last bit.

In Kineto's layout the reader decodes a buffer's events at once with msgspec into typed structs
(``reader._decode_events``) instead of decoding each event to a dict with ``json``. These tests
compare the two: on every real trace kept under tests/data, and on synthetic files full of events
msgspec must leave to the general loop (fields of other types, NaN, lone surrogates, an event
end inside an event...) or must read right (escapes, nested arguments, other key orders...).
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

from .conftest import kineto_text

DATA = Path(__file__).resolve().parents[1] / "data"
REAL = sorted(DATA.glob("gpu*/**/*.trace.json.gz")) + sorted(DATA.glob("traces/**/*.trace.json.gz"))
CATS = frozenset({"kernel", "gpu_memcpy", "gpu_memset", "cpu_op", "user_annotation", "gpu_user_annotation"})


def _id(path: Path) -> str:
    return str(path.relative_to(DATA))


def _tuples(spans) -> str:
    """The spans' fields, as repr: to the last bit and type (1, 1.0 and True are equal, not the same)."""
    return repr([(s.cat, s.name, s.pid, s.tid, s.ts, s.dur, s.ext, s.device) for s in spans])


@pytest.fixture
def decodes(monkeypatch) -> list[bool]:
    """Whether each of msgspec's readings succeeded (True) or not (False: the general loop reads the
    buffer, or a boundary before the one tried is tried)."""
    seen: list[bool] = []
    real = reader._decode_events

    def counted(buf, start, limit):
        spans = real(buf, start, limit)
        seen.append(isinstance(spans, list))
        return spans

    monkeypatch.setattr(reader, "_decode_events", counted)
    return seen


def _reference(events: list) -> tuple[list[tuple], int]:
    """What spans() must give, computed from decoded events (independently of the reader)."""
    out = []
    for ev in events:
        if isinstance(ev, dict) and ev.get("ph") == "X" and ev.get("cat") in CATS:
            args = ev.get("args") or {}
            out.append((ev["cat"], str(ev.get("name", "")), ev.get("pid"), ev.get("tid"), float(ev["ts"]),
                        float(ev.get("dur", 0.0)), args.get("External id"), args.get("device", ev.get("pid"))))
    return out, len(events) - len(out)


@pytest.mark.parametrize("path", REAL, ids=_id)
def test_every_real_trace_reads_the_same_both_ways(path, monkeypatch, decodes):
    with gzip.open(path, "rt") as f:
        want, skipped = _reference(json.load(f)["traceEvents"])
    stream = TraceStream(path)
    assert _tuples(stream.spans(CATS)) == repr(want) and stream.skipped == skipped
    assert decodes and all(decodes)  # msgspec read every event after the first
    fast = asdict(analyze_trace(path))
    monkeypatch.setattr(reader, "_decode_events", lambda buf, start, limit: None)  # the general loop reads all
    assert asdict(analyze_trace(path)) == fast


@pytest.mark.parametrize("path", [p for p in REAL if "DECODE" in p.name or "decode" in p.name][:6], ids=_id)
def test_a_trace_in_another_layout_gives_the_same_analysis(path, tmp_path):
    """Compact JSON (no Kineto layout): the general loop decodes everything, and agrees exactly."""
    compact = tmp_path / path.name.replace(".gz", "")  # same name: same rank and stage
    with gzip.open(path, "rt") as f:
        compact.write_text(json.dumps(json.load(f)))
    a, b = asdict(analyze_trace(path)), asdict(analyze_trace(compact))
    for d in (a, b):
        del d["path"], d["bytes_read"]
    assert a == b


_NONE = object()


def _ev(name, cat="kernel", pid=0, tid=7, ts=1.5, dur=2.0, args=_NONE, ph="X", **extra) -> dict:
    """An event with its keys in Kineto's order (what the fast path looks for); _NONE leaves a key out."""
    ev = {"ph": ph, "cat": cat, "name": name, "pid": pid, "tid": tid, "ts": ts, "dur": dur, **extra, "args": args}
    return {k: v for k, v in ev.items() if v is not _NONE}


def _odd_events() -> list[dict]:
    """Events the fast path must not read on its own (or must read right), between plain ones."""
    return [
        _ev('quote " inside', args={"External id": 1, "device": 0}),
        _ev("back\\slash and \u00e9 and \n newline", args={"External id": 2}),
        _ev("ext not first", args={"queued": 0, "External id": 3, "device": 1}),
        _ev("device first, no ext", args={"device": 2, "stream": 7}),
        _ev("nested", args={"External id": 4, "sub": {"device": 9}, "device": 3}),
        _ev("device as text", args={"External id": 5, "device": "cuda:0"}),
        _ev("escaped arg", args={"External id": 6, "note": 'a "device": 5 b'}),
        _ev("key ending in device", args={"External id": 19, 'a "device': 5}),
        _ev("device not an int", args={"External id": 20, "device": 1.5}),
        _ev("device 1e3", args={"External id": 21, "device": 1e3}),
        _ev("device null", args={"External id": 24, "device": None}),
        _ev("null args", args=None),
        _ev("list args", args=[]),
        _ev("huge ext", args={"External id": 2**70}),
        _ev("infinite ts", ts=float("inf")),  # json writes Infinity, which msgspec does not read
        _ev("lone surrogate \ud800"),
        _ev(5),
        _ev(None),
        _ev("cat null", cat=None),
        _ev("no args"),
        _ev("empty args", args={}),
        _ev("exponent", ts=1.5e3, dur=2e-3, args={"External id": 7}),
        _ev("int ts", ts=4874644486077, args={"External id": 8}),
        _ev("string pid", pid="Spans", args={"External id": 9}),
        _ev("float pid", pid=1.0, args={"External id": 10}),
        _ev("list pid", pid=[1, {"a": None}], args={"External id": 25, "device": [0]}),
        _ev("float ext", args={"External id": 26.0}),
        _ev("string tid", tid="stream 7", args={"External id": 11}),
        _ev("bool pid", pid=True, args={"External id": 22}),
        _ev("string ts", ts="12.5", args={"External id": 23}),
        _ev("no dur", dur=_NONE, args={"External id": 12}),
        _ev("extra key", bp="e", args={"External id": 13}),
        _ev("ext as text", args={"External id": "14"}),
        _ev("aten::mm", cat="cpu_op", args={"External id": 15, "Input Dims": [[2, 3], [3, 4]]}),
        _ev("with {braces}", cat="cpu_op", args={"External id": 16, "Concrete Inputs": ["{x}"]}),
        _ev("step[DECODE bs=1]", cat="user_annotation", args={"External id": 17}),
        _ev("step[DECODE bs=1]", cat="gpu_user_annotation", args={"device": 0}),
        _ev("cudaLaunchKernel", cat="cuda_runtime", args={"External id": 18, "device": 0}),
        _ev("instant", ph="i"),
        {"ph": "f", "id": 5, "pid": 0, "tid": 7, "ts": 1.0, "cat": "ac2g", "name": "ac2g", "bp": "e"},
    ]


def test_odd_events_are_decoded_not_misread(tmp_path, monkeypatch, decodes):
    plain = {"ph": "X", "cat": "cpu_op", "name": "aten::add", "pid": 1, "tid": 1, "ts": 0.25, "dur": 1.0,
             "args": {"External id": 0}}
    events = [plain] * 200 + _odd_events() * 3 + [plain] * 200  # past the layout check, then odd ones
    path = tmp_path / "odd.json"
    path.write_text(kineto_text(events))
    monkeypatch.setattr(reader, "_CHUNK", 4096)  # many buffers: msgspec reads again after the odd ones
    want, skipped = _reference(json.loads(path.read_text())["traceEvents"])
    stream = TraceStream(path)
    got = _tuples(stream.spans(CATS))
    assert got == repr(want) and stream.skipped == skipped
    assert False in decodes and decodes[-1] is True


def test_fields_the_analysis_passes_along_take_any_json_value(tmp_path, decodes):
    """pid, tid, External id and device are whatever JSON says, from msgspec as from json: a buffer
    of them is not handed to the general loop."""
    odd = [_ev("float pid", pid=1.0, args={"External id": 1.0}), _ev("bool pid", pid=True, tid=False),
           _ev("list pid", pid=[1, {"a": None}], args={"External id": 2**70, "device": [0]}),
           _ev("string tid", tid="stream 7", args={"device": "cuda:0"}), _ev("null device", args={"device": None})]
    path = tmp_path / "any.json"
    path.write_text(kineto_text([_ev("k", args={"External id": 0})] * 200 + odd * 40))
    want, skipped = _reference(json.loads(path.read_text())["traceEvents"])
    stream = TraceStream(path)
    assert _tuples(stream.spans(CATS)) == repr(want) and stream.skipped == skipped
    assert decodes and all(decodes)


def test_text_across_chunk_ends(tmp_path, monkeypatch, decodes):
    """Characters of several bytes cut by a chunk's end, in events msgspec reads."""
    events = [_ev(f"caf\u00e9 \u4e2d\u6587 \U0001f600 {i}", cat="cpu_op", ts=float(i), args={"External id": i})
              for i in range(400)]
    path = tmp_path / "utf8.json"
    path.write_text(kineto_text(events), encoding="utf-8")
    want, skipped = _reference(json.loads(path.read_text(encoding="utf-8"))["traceEvents"])
    for chunk in (4096, 4097, 4099):
        monkeypatch.setattr(reader, "_CHUNK", chunk)
        stream = TraceStream(path)
        assert _tuples(stream.spans(CATS)) == repr(want) and stream.skipped == skipped
    assert decodes and all(decodes)


def test_bad_utf8_in_a_buffer_msgspec_reads_is_a_trace_error(tmp_path, monkeypatch):
    text = kineto_text([_ev(f"k{i}", args={"External id": i}) for i in range(400)]).encode()
    cut = text.index(b'"k300"')
    path = tmp_path / "bad.json"
    path.write_bytes(text[:cut + 2] + b"\xff" + text[cut + 3:])
    monkeypatch.setattr(reader, "_CHUNK", 4096)
    with pytest.raises(reader.TraceError, match="not UTF-8"):
        list(TraceStream(path).spans(CATS))


def test_an_object_inside_the_arguments_is_decoded(tmp_path, monkeypatch, decodes):
    """Arguments whose nested object closes the way Kineto's events end (valid JSON, another layout),
    the buffers cut in many places: read right (test_json_layout.py has boundaries that are none)."""
    plain = _ev("aten::add", cat="cpu_op", pid=1, tid=1, ts=0.25, dur=1.0, args={"External id": 0})
    odd = ('{\n    "ph": "X", "cat": "kernel", "name": "n", "pid": 0, "tid": 7, "ts": 1, "dur": 1,'
           ' "args": {"External id": 1, "sub": {"device": 9}\n  }\n}')
    text = kineto_text([plain] * 200)  # past the layout check
    cut = text.rindex("\n  ]")
    path = tmp_path / "nested.json"
    path.write_text(text[:cut] + ",\n  " + odd + ",\n" + kineto_text([plain] * 5).split("[\n", 1)[1])
    want, skipped = _reference(json.loads(path.read_text())["traceEvents"])
    for chunk in range(3000, 3400, 7):  # buffers cut in many places, inside the odd event among them
        monkeypatch.setattr(reader, "_CHUNK", chunk)
        stream = TraceStream(path)
        assert _tuples(stream.spans(CATS)) == repr(want) and stream.skipped == skipped
    assert decodes


def test_a_malformed_event_past_the_checks_is_a_trace_error(tmp_path):
    plain = _ev("aten::add", cat="cpu_op", pid=1, tid=1, ts=0.25, dur=1.0, args={"External id": 0})
    path = tmp_path / "bad.json"
    path.write_text(kineto_text([plain] * 200 + [_ev("list ts", ts=[1, 2])] + [plain] * 5))
    with pytest.raises(reader.TraceError, match="malformed event"):
        list(TraceStream(path).spans(CATS))


def test_keys_after_the_events_are_read_into_the_header(tmp_path, decodes):
    """Objects after traceEvents that look like a boundary between events ("}, {"): msgspec refuses
    the buffer that runs past the array's end, and the general loop reads the rest."""
    events = [_ev("k", args={"External id": 0})] * 200
    after = '\n  ],\n  "after": [{"x": 1}, {"y": 2}],\n  "traceName"'
    text = kineto_text(events).replace('\n  ],\n  "traceName"', after)
    path = tmp_path / "after.json"
    path.write_text(text)
    want, skipped = _reference(events)
    stream = TraceStream(path)
    assert _tuples(stream.spans(CATS)) == repr(want) and stream.skipped == skipped
    assert stream.header["after"] == [{"x": 1}, {"y": 2}] and stream.header["traceName"] == "synthetic"
    assert False in decodes
