"""The streaming reader: formats, the fast path's equivalence, and every way a file can be bad."""

from __future__ import annotations

import gzip
import json

import pytest

from moetrace.traces.analyze import analyze_trace
from moetrace.traces.reader import TraceError, TraceStream

from .conftest import GPU, files, kernel, op

EVENTS = [op("step[DECODE bs=1]", 0, 100, 1, cat="user_annotation"), op("aten::mm", 10, 20, 2),
          kernel("nvjet_sm90_tst_64x8_64x16_4x1_v_bz_TNT", 15, 5, 2),
          {"ph": "f", "id": 5, "pid": 1, "tid": 1, "ts": 12, "cat": "ac2g", "name": "ac2g", "bp": "e"}]


def read_all(path, **kw):
    stream = TraceStream(path, **kw)
    return list(stream.events()), stream


def test_gzip_plain_and_array_forms_give_the_same_events(write_trace, tmp_path):
    gz, _ = read_all(write_trace(EVENTS))
    plain, _ = read_all(write_trace(EVENTS, name="p.json", gz=False))
    compact, _ = read_all(write_trace(EVENTS, name="c.json", gz=False, compact=True))
    array = tmp_path / "a.json"
    array.write_text(json.dumps(EVENTS))
    assert gz == plain == compact == read_all(array)[0] == EVENTS


def test_header_keys_are_kept(write_trace):
    header = {"schemaVersion": 1, "distributedInfo": {"rank": 3, "world_size": 4}, "deviceProperties": []}
    _, stream = read_all(write_trace(EVENTS, header=header))
    assert stream.header["distributedInfo"] == {"rank": 3, "world_size": 4}


def test_skipped_categories_are_counted_not_yielded(write_trace):
    many = EVENTS * 40  # past the layout check
    stream = TraceStream(write_trace(many))
    stream.skip_cats = frozenset({"ac2g"})
    out = list(stream.events())
    assert all(e["cat"] != "ac2g" for e in out[-10:])
    assert len(out) + stream.skipped == len(many)


def test_fast_path_and_plain_decoding_agree_on_a_real_trace(tmp_path):
    real = files(GPU / "tp2_sglang", "*TP-0-DECODE*")[0]
    compact = tmp_path / real.name.replace(".gz", "")  # same name: same rank and stage
    with gzip.open(real, "rt") as f:
        compact.write_text(json.dumps(json.load(f)))  # no Kineto layout: every event decoded
    a, b = analyze_trace(real), analyze_trace(compact)
    assert a.category_us == pytest.approx(b.category_us)
    assert a.events == b.events and a.idle_us == pytest.approx(b.idle_us)


def test_events_across_chunk_boundaries(write_trace, monkeypatch, inflater):
    import moetrace.traces.reader as reader
    monkeypatch.setattr(reader, "_CHUNK", 7)
    monkeypatch.setattr(reader, "_OUT_CHUNK", 5)
    assert read_all(write_trace(EVENTS * 3))[0] == EVENTS * 3
    assert read_all(write_trace(EVENTS * 3, name="x.json", gz=False))[0] == EVENTS * 3


def test_multi_member_gzip(tmp_path, inflater):
    text = json.dumps({"traceEvents": EVENTS})
    path = tmp_path / "m.json.gz"
    path.write_bytes(gzip.compress(text[:50].encode()) + gzip.compress(text[50:].encode()))
    assert read_all(path)[0] == EVENTS


# ---- bad files: a clear TraceError naming the file ---------------------------------------------
def _assert_error(path, match, **kw):
    with pytest.raises(TraceError, match=match) as e:
        read_all(path, **kw)
    assert str(path) in str(e.value)


def test_truncated_gzip(tmp_path, inflater):
    data = gzip.compress(json.dumps({"traceEvents": EVENTS * 50}).encode())
    path = tmp_path / "cut.trace.json.gz"
    path.write_bytes(data[: len(data) // 2])
    _assert_error(path, "truncated")


def test_corrupt_gzip(tmp_path, inflater):
    data = bytearray(gzip.compress(json.dumps({"traceEvents": EVENTS * 50}).encode()))
    data[30:60] = b"\xff" * 30
    path = tmp_path / "bad.trace.json.gz"
    path.write_bytes(bytes(data))
    _assert_error(path, "corrupt gzip|truncated")


def test_truncated_json_inside_valid_gzip(tmp_path, inflater):
    text = json.dumps({"traceEvents": EVENTS * 5})
    path = tmp_path / "half.trace.json.gz"
    path.write_bytes(gzip.compress(text[: len(text) - 40].encode()))
    _assert_error(path, "truncated or corrupt")


def test_truncated_plain_json_at_every_cut(tmp_path):
    text = json.dumps({"schemaVersion": 1, "traceEvents": EVENTS})
    path = tmp_path / "cut.json"
    for cut in range(1, len(text), 7):
        path.write_text(text[:cut])
        _assert_error(path, "truncated or corrupt|empty")


def test_invalid_json_in_an_event(write_trace):
    path = write_trace(EVENTS, name="x.json", gz=False)
    path.write_text(path.read_text().replace('"aten::mm"', '"aten::mm" oops'))
    _assert_error(path, "invalid")


def test_empty_and_missing_files(tmp_path):
    (tmp_path / "empty.json").write_text("")
    _assert_error(tmp_path / "empty.json", "empty file")
    _assert_error(tmp_path / "nope.json.gz", "cannot open")


def test_gzip_bomb_is_refused_at_the_limit(tmp_path, inflater):
    path = tmp_path / "bomb.trace.json.gz"
    zeros = b" " * (64 << 20)  # 64 MiB of blanks compress to about 64 KiB
    path.write_bytes(gzip.compress(b'{"traceEvents": [' + zeros + b"]}", compresslevel=9))
    assert path.stat().st_size < 1 << 20
    _assert_error(path, "gzip bomb", max_bytes=8 << 20)


def test_plain_file_over_the_limit(write_trace):
    path = write_trace(EVENTS, name="big.json", gz=False)
    _assert_error(path, "over the limit", max_bytes=100)


def test_analyze_trace_raises_trace_error_too(tmp_path):
    path = tmp_path / "x-TP-0-DECODE.trace.json.gz"
    path.write_bytes(b"\x1f\x8b\x08\x00garbage")
    with pytest.raises(TraceError, match=str(path)):
        analyze_trace(path)


def test_malformed_event_names_the_file(write_trace):
    path = write_trace([{"ph": "X", "cat": "kernel", "name": "nvjet_x", "dur": 3}], name="m-TP-0-DECODE.trace.json.gz")
    with pytest.raises(TraceError, match="malformed event") as e:
        analyze_trace(path)
    assert str(path) in str(e.value)


def test_spans_yields_the_wanted_events_and_counts_the_rest(tmp_path):
    """In Kineto's layout msgspec reads whole buffers; only the wanted events come out, the others
    are counted. Key order does not matter (a JSON decoder, not a pattern)."""
    from tests.traces.conftest import kineto_text

    evs = []
    for i in range(200):
        evs.append({"ph": "X", "cat": "cuda_runtime", "name": "cudaLaunchKernel", "pid": 1, "tid": 1, "ts": i, "dur": 1})
        evs.append({"ph": "X", "cat": "kernel", "name": f"k{i}", "pid": 0, "tid": 7, "ts": i, "dur": 1})
        evs.append({"ph": "f", "cat": "ac2g", "name": "ac2g", "id": i, "pid": 0, "tid": 7, "ts": i})
    p = tmp_path / "t.json"
    p.write_text(kineto_text(evs))
    s = TraceStream(p)
    assert [span.name for span in s.spans(frozenset({"kernel"}))] == [f"k{i}" for i in range(200)]
    assert s.skipped == 400 and s._buffers > 0
    reordered = [{"dur": 1, "ts": i, "name": f"k{i}", "cat": "kernel", "ph": "X"} for i in range(100)]
    p.write_text(kineto_text(reordered))
    s = TraceStream(p)
    assert [span.name for span in s.spans(frozenset({"kernel"}))] == [f"k{i}" for i in range(100)]
    assert s._buffers > 0


def test_a_reader_dropped_early_stops_its_gunzip_thread(tmp_path, monkeypatch, inflater):
    """The gunzip thread runs ahead of the reader; a reader left mid-file (an error in the analysis,
    a caller that stops) stops it, and the file is closed."""
    import gc
    import threading

    import moetrace.traces.reader as reader
    monkeypatch.setattr(reader, "_CHUNK", 64)
    monkeypatch.setattr(reader, "_OUT_CHUNK", 256)  # many chunks: the thread is blocked on a full queue
    path = tmp_path / "t.json.gz"
    path.write_bytes(gzip.compress(json.dumps({"traceEvents": EVENTS * 2000}).encode()))
    events = TraceStream(path).events()
    assert next(events) == EVENTS[0]
    assert [t for t in threading.enumerate() if t.name == f"gunzip {path.name}"]
    del events
    gc.collect()
    assert not [t for t in threading.enumerate() if t.name == f"gunzip {path.name}"]
