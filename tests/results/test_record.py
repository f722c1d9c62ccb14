"""The attempt record type: stored records load and write back byte for byte, unknown keys are
kept, parts read as attributes and as the dicts they were, and the key format in one place."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from moetrace.results.flat import failure_entry, success_entry
from moetrace.results.record import (DEFAULT_WORKLOAD, SCHEMA, Error, Metrics, Record, Workload, key_workload,
                                     result_key, split_key, workload_suffix)
from moetrace.results.store import ResultsStore
from moetrace.text import clip, num, pct

DATA = Path(__file__).resolve().parents[1] / "data"
STORED = sorted(DATA.glob("**/records/*.json"))


def test_fixtures_hold_records():
    assert len(STORED) >= 20


@pytest.mark.parametrize("path", STORED, ids=lambda p: str(p.relative_to(DATA)))
def test_stored_records_round_trip_byte_for_byte(path: Path):
    raw = path.read_text()
    rec = Record.from_dict(json.loads(raw))
    assert json.dumps(rec.to_dict(), indent=2) + "\n" == raw
    assert rec.schema == SCHEMA and rec.status in ("success", "failure") and rec.key.startswith(f"{rec.model}::")


def test_parts_read_as_attributes_and_as_dicts():
    ok = next(Record.from_dict(json.loads(p.read_text())) for p in STORED
              if json.loads(p.read_text())["status"] == "success")
    assert isinstance(ok.metrics, Metrics) and isinstance(ok.workload, Workload)
    assert ok.metrics.itl_ms == ok["metrics"]["itl_ms"] == ok.metrics.numbers()["itl_ms"]
    assert ok.workload_triple() == (ok.workload.batch_size, ok.workload.input_len, ok.workload.output_len)
    assert ok.the_engine.name in ("vllm", "sglang") and ok.the_engine.stop is not None
    assert ok.the_runs and all(r.metrics.latency_s > 0 for r in ok.the_runs)
    assert ok.the_profile.traces("decode") and ok.the_error.type is None
    assert "error" not in ok and ok.get("error") is None


def test_unknown_keys_and_order_are_kept():
    d = {"schema": 1, "future": {"x": 1}, "model": "M", "config": "TP1_auto", "key": "M::TP1_auto",
         "status": "failure", "error": {"type": "OOM", "hint": "new"}, "engine": {"name": "vllm", "gpus": 2}}
    rec = Record.from_dict(d)
    assert rec.extra == {"future": {"x": 1}} and rec.error.extra == {"hint": "new"}
    assert rec.to_dict() == d and list(rec.to_dict()) == list(d)
    rec.plan_check = None  # set later: written after the rest, even when None
    assert list(rec.to_dict())[-1] == "plan_check" and rec.to_dict()["plan_check"] is None
    assert rec.copy(status="success").status == "success" and rec.status == "failure"


def test_new_records_write_what_was_given():
    err = Error(type="OOM", message="m", predicted=True, phase="plan")
    assert err.to_dict() == {"type": "OOM", "message": "m", "phase": "plan", "predicted": True}
    rec = Record.new(model="M", config="C", key="M::C", status="failure", error=err, log_path=None)
    assert list(rec.to_dict()) == ["schema", "model", "config", "key", "status", "error", "log_path"]
    assert rec.was_predicted and failure_entry(rec)["error_type"] == "OOM"


def test_key_format_and_default_workload():
    assert DEFAULT_WORKLOAD == (1, 4096, 512) and workload_suffix(*DEFAULT_WORKLOAD) == ""
    key = result_key("M", "TP2_auto", workload_suffix(8, 1024, 128))
    assert key == "M::TP2_auto::bs8_in1024_out128"
    assert key_workload(key) == (8, 1024, 128) and key_workload("M::TP2_auto") is None
    assert split_key(key) == ("M", "TP2_auto", "bs8_in1024_out128") and split_key("M::C") == ("M", "C", "")
    fail = Record.new(model="M", config="TP2_auto", key=key, status="failure")
    assert fail.workload_triple() == (8, 1024, 128)


def test_views_from_records_match_the_stored_views(tmp_path: Path):
    src = DATA / "gpu" / "results"
    views = [(src / n).read_text() for n in ("success_results.json", "failure_results.json")]
    shutil.copytree(src, tmp_path / "r")
    store = ResultsStore(tmp_path / "r")
    store.rebuild()
    assert [(tmp_path / "r" / n).read_text() for n in ("success_results.json", "failure_results.json")] == views
    recs = store.records()
    assert all(isinstance(r, Record) for r in recs)
    ok = [r for r in recs if r.ok]
    assert success_entry(ok[-1]) == json.loads(views[0])[ok[-1].key]


def test_shared_helpers():
    assert num(True) is None and num(float("nan")) is None and num(3) == 3.0
    assert num(0, positive=True) is None and num(2.5, positive=True) == 2.5
    assert pct(0.4213) == "42%" and pct(0.4213, 1) == "42.1%" and pct(None) is None and pct(None, none="-") == "-"
    assert clip("abcdef", 4) == "abc…" and clip("abcdef", 5, mark="...") == "ab..." and clip("ab", 4) == "ab"


def test_parts_have_typed_none_defaults_and_know_which_keys_they_were_given():
    """No sentinel default: an absent field reads None (its type's null); ``has`` and the JSON
    tell a field never given from one given as None, in the constructor's field order."""
    import dataclasses
    assert all(f.default is None for f in dataclasses.fields(Workload) if f.name != "extra")
    err = Error(message=None, type="OOM")
    assert err.evidence is None and not err.has("evidence") and err.has("message")
    assert list(err.to_dict()) == ["type", "message"] and err.to_dict()["message"] is None
    err.phase = "launch"
    assert err.has("phase") and list(err.to_dict()) == ["type", "message", "phase"]
    assert Workload(8, 1024).to_dict() == {"batch_size": 8, "input_len": 1024}
