"""Trace capture in the runner and the engine adapters, without an engine: empty traces are
retried then failures (issue 12.5), an engine that dies while profiling (issue 11 section 4),
every rank's breakdown (issue 12, H200 README item 6), SGLang's file names (issue 12.6), what
SGLang profiling sends, and vLLM's windows waiting for every rank.

Trace contents are the real H100 fixtures (tests/data/traces/gpu/, see README there) copied under
the names the engines write; the empty trace is written from the documented case (issue 12.5: a
DeepSeek-V3.1-tiny TP2 decode trace of 11 events and no op) in Kineto's layout."""

from __future__ import annotations

import gzip
import json
import shutil
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from moetrace.engines.base import ProfileRequest
from moetrace.engines.process import ServerProcess
from moetrace.errors import BenchmarkFailure
from moetrace.attempt import Progress
from moetrace.attempt.context import Attempt
from moetrace.attempt.launch import Launch
from moetrace.attempt.profile import profile as _profile
from moetrace.results.record import EngineInfo
from moetrace.traces.analyze import analyze_trace
from moetrace.traces.capture import file_traces, rank_key
from moetrace.traces.names import DECODE, EXTEND, parse_trace_name

from .conftest import GPU, kineto_text

TP1 = GPU / "tp1_sglang"
TP2 = GPU / "tp2_sglang"
TP1_EXTEND = next(TP1.glob("*-EXTEND.trace.json.gz"))
TP1_DECODE = next(TP1.glob("*-DECODE.trace.json.gz"))


def _empty_trace(path: Path) -> Path:
    """11 events, no op, no step: what the profiler writes when its window caught nothing."""
    events = [{"ph": "M", "name": "process_name", "pid": i, "tid": 0, "args": {"name": f"p{i}"}} for i in range(10)]
    events.append({"ph": "i", "name": "Iteration Start: PyTorch Profiler", "pid": 0, "tid": 0, "ts": 1.0, "s": "g"})
    with gzip.open(path, "wt") as f:
        f.write(kineto_text(events, {"schemaVersion": 1, "deviceProperties": []}))
    return path


class FakeEngine:
    name = "sglang"

    def __init__(self, attempts):
        self.attempts = list(attempts)  # one function per capture_profile call: fn(req) -> files
        self.requests: list[ProfileRequest] = []

    def capture_profile(self, http, base_url, req):
        self.requests.append(req)
        return self.attempts.pop(0)(req)


def _run(engine, tmp_path, *, tp=1, server=None, phases=None, base=None):
    adir = tmp_path / "attempt"
    adir.mkdir(exist_ok=True)
    session = SimpleNamespace(http=None, base_url="http://x", request=None, run_async=None)
    preset = SimpleNamespace(name="Qwen3-235B-mid")
    config = SimpleNamespace(name=f"TP{tp}_auto", tp=tp)
    opts = SimpleNamespace(profile_steps=5, profile_with_stack=False, seed=0, profile_timeout_s=30.0)
    ctx = Attempt(preset, config, opts, SimpleNamespace(root=tmp_path), engine, Progress(stream=sys.stderr),
                  adir=adir)
    launch = Launch(EngineInfo(), phases if phases is not None else {}, adir / "server.log", server=server,
                    session=session)
    out = _profile(ctx, launch)
    if base is not None:  # the launch's engine part, where the record keeps it
        base["engine"] = launch.info.to_dict()
    return out, adir


def _put(req, src: Path, name: str) -> Path:
    dst = req.out_dir / name
    shutil.copy(src, dst)
    return dst


# ---------------------------------------------------------------- A: a trace without a step of its stage
def test_empty_decode_trace_is_retried_with_longer_windows(tmp_path):
    def first(req):
        return {"extend": [_put(req, TP1_EXTEND, "1-TP-0-EXTEND.trace.json.gz")],
                "decode": [_empty_trace(req.out_dir / "1-TP-0-DECODE.trace.json.gz")]}

    def retry(req):
        assert req.longer and req.stages == ("decode",)
        return {"extend": [_put(req, TP1_EXTEND, "2-TP-0-EXTEND.trace.json.gz")],
                "decode": [_put(req, TP1_DECODE, "2-TP-0-DECODE.trace.json.gz")]}

    eng = FakeEngine([first, retry])
    out, adir = _run(eng, tmp_path)
    assert len(eng.requests) == 2 and not eng.requests[0].longer
    assert "error" not in out, out
    assert out["decode"] and analyze_trace(tmp_path / out["decode"]).stages[DECODE].steps.count == 3
    assert len(out["extend_all"]) == 1  # the retry's extend file is not taken: only decode was retried
    assert [r["reason"] for r in out["rejected"]] == ["no step of its stage"]
    assert (tmp_path / out["rejected"][0]["trace"]).is_file()
    assert set(out["breakdown"]) == {"extend", "decode"}


def test_empty_trace_twice_is_a_profiling_failure_naming_the_file(tmp_path):
    def empty(req):
        return {"extend": [_put(req, TP1_EXTEND, f"{len(eng.requests)}-TP-0-EXTEND.trace.json.gz")],
                "decode": [_empty_trace(req.out_dir / f"{len(eng.requests)}-TP-0-DECODE.trace.json.gz")]}

    eng = FakeEngine([empty, empty])
    out, _ = _run(eng, tmp_path)
    assert out["decode"] is None and out["extend"]
    assert "holds no DECODE step" in out["error"] and "after a retry" in out["error"]
    assert out["decode_all"][0] in out["error"]  # names the file
    assert "decode" not in out["breakdown"] and "extend" in out["breakdown"]


def test_tables_and_reports_show_a_profiling_failure(tmp_path):
    from moetrace.report.data import row_from_record
    from moetrace.report.tables import full_report
    err = "decode: attempts/a/traces/x__decode__rank0.trace.json.gz holds no DECODE step"
    e = {"model": "DeepSeek-V3.1-tiny", "config": "TP2_auto", "batch_size": 1, "input_len": 4096, "latency_s": 1.0,
         "profile_extend": "attempts/a/traces/x__extend__rank0.trace.json.gz", "profile_decode": None,
         "profile_error": err}
    text = full_report({"DeepSeek-V3.1-tiny::TP2_auto": e}, {})
    assert "profile failed" in text and err in text
    row = row_from_record({"status": "success", "model": "m", "config": "TP2_auto", "key": "m::TP2_auto",
                           "profile": {"error": err, "extend": "e", "decode": None}})
    assert row.profile_error == err
    from moetrace.report.html import render_html
    row = row_from_record({"status": "success", "model": "m", "config": "TP2_auto", "key": "m::TP2_auto", "seq": 1,
                           "config_detail": {"tp": 2, "ep": 1, "backend": "auto"},
                           "workload": {"batch_size": 1, "input_len": 4096, "output_len": 512},
                           "metrics": {"latency_s": 1.0, "itl_ms": 2.0}, "profile": {"error": err}})
    assert "Profiling failed" in render_html([row], root=tmp_path, out_dir=tmp_path) and err in render_html(
        [row], root=tmp_path, out_dir=tmp_path)


# ---------------------------------------------------------------- C: the engine dies while profiling
ENGINE = r'''
import os, subprocess, sys, time
# A launcher and its "scheduler", as SGLang runs them: the scheduler aborts in the profiler's
# teardown after the traces are written, and the launcher kills itself when a child dies.
if sys.argv[1] == "child":
    while not os.path.exists(sys.argv[2]):
        time.sleep(0.05)
    print("[2026-11-30 12:00:00 TP0] Profiling done. Traces are saved to: /tmp/x", flush=True)
    print("free(): invalid next size (fast)", flush=True)
    print("Fatal Python error: Aborted", flush=True)
    os.abort()
child = subprocess.Popen([sys.executable, __file__, "child", sys.argv[1]])
print("server ready", flush=True)
child.wait()
sys.exit(1)
'''


def test_engine_dying_while_profiling_is_a_classified_stage_failure_with_its_traces_filed(tmp_path):
    script = tmp_path / "engine.py"
    script.write_text(ENGINE)
    trigger = tmp_path / "die"
    log = tmp_path / "attempt" / "server.log"
    server = ServerProcess([sys.executable, str(script), str(trigger)], log_path=log, grace_s=5)
    server.start()
    deadline = time.monotonic() + 20
    while len(server.alive_pids()) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert len(server.alive_pids()) == 2

    def capture(req):
        # complete traces of both stages and both ranks (TP2_EP2 names), then the scheduler aborts
        for stage in ("EXTEND", "DECODE"):
            for r in (0, 1):
                _put(req, next(TP2.glob(f"*-TP-{r}-{stage}.trace.json.gz")), f"9-TP-{r}-EP-{r}-{stage}.trace.json.gz")
        trigger.touch()
        time.sleep(0.5)
        raise BenchmarkFailure("stream broke: connection broke after 0 tokens")

    phases: dict = {}
    base: dict = {"engine": {}}
    try:
        out, adir = _run(FakeEngine([capture]), tmp_path, tp=2, server=server, phases=phases, base=base)
    finally:
        server.stop()
    died = out["engine_died"]
    assert died["error_type"] == "ServerError" and "Fatal Python error: Aborted" in died["evidence"]
    assert "ServerError" in out["error"] and "Fatal Python error: Aborted" in out["error"]
    assert died["exit_code"] is not None and died["lost_pids"]
    assert died["stop"] is not None and died["stop"]["survivors"] == [] and base["engine"]["stop"] == died["stop"]
    assert server.stop_report is not None and "stop_s" in phases
    # every complete trace filed and analysed, none left in profiler_raw
    assert len(out["extend_all"]) == 2 and len(out["decode_all"]) == 2
    assert not list((adir / "profiler_raw").glob("*.gz"))
    assert set(out["breakdown"]) == {"extend", "decode"}
    assert [r["rank"] for r in out["breakdown_by_rank"]["decode"]] == [0, 1]


# ---------------------------------------------------------------- F: every rank's breakdown
def test_every_ranks_breakdown_and_the_rank_the_others_wait_for(tmp_path):
    def capture(req):
        out = {"extend": [], "decode": []}
        for stage in ("EXTEND", "DECODE"):
            for r in (0, 1):
                src = next(TP2.glob(f"*-TP-{r}-{stage}.trace.json.gz"))
                out[stage.lower()].append(_put(req, src, f"9-TP-{r}-{stage}.trace.json.gz"))
        return out

    out, _ = _run(FakeEngine([capture]), tmp_path, tp=2)
    rows = out["breakdown_by_rank"]["decode"]
    assert [r["rank"] for r in rows] == [0, 1]
    assert rows[0]["breakdown"]["communication"] > 40 > rows[1]["breakdown"].get("communication", 0)
    assert rows[0]["collective_ms"] > rows[1]["collective_ms"]
    assert out["breakdown"]["decode"] == rows[0]["breakdown"]  # the rank-0 view tables use
    assert out["bottleneck"]["decode"] == {"rank": 1, "longest_step_rank": 0}
    json.dumps(out)


# ---------------------------------------------------------------- B, D: file names
def test_sglang_ranks_are_keyed_on_every_part_and_never_overwrite(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    names = ["7-TP-0-DP-0-EP-0-DECODE.trace.json.gz", "7-TP-0-DP-1-EP-0-DECODE.trace.json.gz",
             "7-TP-1-PP-1-decode.trace.json.gz", "7-TP-1-PP-0-decode.trace.json.gz"]
    for n in names:
        shutil.copy(TP1_DECODE, raw / n)
    assert len({rank_key(raw / n) for n in names}) == 4
    filed = file_traces([raw / n for n in names], tmp_path / "t", model="M", config="TP2_auto", stage="decode",
                        engine="sglang")
    assert len({p.name for p in filed}) == 4 and all(p.exists() for p in filed)
    assert filed[0].name == "M__TP2_auto__sglang__decode__rank0__dp0-tp0-ep0.trace.json.gz"
    t = parse_trace_name(filed[0].name)
    assert (t.engine, t.rank, t.stage, t.parallel) == ("sglang", 0, DECODE, {"dp": 0, "tp": 0, "ep": 0})


@pytest.mark.parametrize(("name", "rank", "stage", "parallel"), [
    ("1764-TP-0-prefill.trace.json.gz", 0, EXTEND, {"tp": 0}),  # profiler V2 (0.5.23 profile_utils.py)
    ("1764-TP-3-DP-1-EP-3-decode.trace.json.gz", 3, DECODE, {"tp": 3, "dp": 1, "ep": 3}),
])
def test_sglang_profiler_v2_names(name, rank, stage, parallel):
    t = parse_trace_name(name)
    assert (t.engine, t.rank, t.stage, t.parallel) == ("sglang", rank, stage, parallel)


def test_filed_traces_keep_the_engine_for_analyze(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    src = raw / "dp0_pp0_tp1_dcp0_ep1_rank1.1795731681489352592.pt.trace.json.gz"
    shutil.copy(next((GPU / "tp1_vllm").glob("*.gz")), src)
    (p,) = file_traces([src], tmp_path / "t", model="Qwen3-235B-mid", config="TP2_EP2_auto", stage="extend",
                       engine="vllm")
    assert p.name == "Qwen3-235B-mid__TP2_EP2_auto__vllm__extend__rank1__pp0-dp0-tp1-dcp0-ep1.trace.json.gz"
    s = analyze_trace(p)
    assert (s.engine, s.rank, s.stage) == ("vllm", 1, EXTEND)
    from moetrace.traces.report import format_trace
    assert "engine ?" not in format_trace(s)
    # old filed names still read
    old = parse_trace_name("Qwen3-235B-tiny__TP2_auto__decode__rank1.trace.json.gz")
    assert (old.engine, old.rank, old.stage) == (None, 1, DECODE)


# ---------------------------------------------------------------- E: what SGLang profiling sends
class FakeHTTP:
    def __init__(self):
        self.posts: list[tuple[str, dict | None]] = []

    def post(self, url, json=None, timeout=None):
        self.posts.append((url, json))
        return SimpleNamespace(status_code=200, text="")


def test_sglang_profiling_sends_one_request_that_decodes_enough_steps(tmp_path):
    from moetrace.engines.sglang import SGLang
    calls = []

    def run(seed, max_tokens, on_token):
        calls.append(max_tokens)
        for stage, src in (("EXTEND", TP1_EXTEND), ("DECODE", TP1_DECODE)):
            shutil.copy(src, tmp_path / f"5-TP-0-{stage}.trace.json.gz")

    http = FakeHTTP()
    req = ProfileRequest(out_dir=tmp_path, steps=5, with_stack=False, run=run, run_async=None, timeout_s=20)
    files = SGLang().capture_profile(http, "http://x", req)
    assert len(calls) == 1 and calls[0] >= 5 + 2
    (url, body), = http.posts
    assert body["num_steps"] == 5 and body["with_stack"] is False and body["record_shapes"] is False
    assert [len(files["extend"]), len(files["decode"])] == [1, 1] and req.done == files


# ---------------------------------------------------------------- F: vLLM waits for every rank's file
def test_vllm_window_waits_for_every_ranks_file(tmp_path):
    from moetrace.engines.vllm import VLLM
    src = next((GPU / "tp1_vllm").glob("*.gz"))

    def late_rank1():
        time.sleep(2.5)
        shutil.copy(src, tmp_path / "dp0_pp0_tp1_dcp0_ep0_rank1.2.pt.trace.json.gz")

    def run(seed, max_tokens, on_token):
        shutil.copy(src, tmp_path / "dp0_pp0_tp0_dcp0_ep0_rank0.1.pt.trace.json.gz")
        threading.Thread(target=late_rank1).start()

    req = ProfileRequest(out_dir=tmp_path, steps=2, with_stack=False, run=run, run_async=None, expected_ranks=2,
                         timeout_s=20, stages=("extend",))
    files = VLLM().capture_profile(FakeHTTP(), "http://x", req)
    assert sorted(p.name.split(".")[0] for p in files["extend"]) == ["dp0_pp0_tp0_dcp0_ep0_rank0",
                                                                    "dp0_pp0_tp1_dcp0_ep0_rank1"]
