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


# ---------------------------------------------------------------- G: vLLM's decode window follows engine steps
class _Job:
    """A streamed request as the profiler's client sees it, in a thread: ``deliver(on_token)`` says when its
    tokens arrive."""

    def __init__(self, deliver, on_token):
        self.done, self.error, self.cancelled = False, None, False

        def body():
            deliver(on_token)
            self.done = True

        self._t = threading.Thread(target=body, daemon=True)
        self._t.start()

    def cancel(self):
        self.cancelled = True

    def join(self, timeout=None):
        self._t.join(timeout)


class SteppingVLLM(FakeHTTP):
    """/start_profile and /stop_profile of a vLLM server whose worker profiler stops itself after the window's
    ``max_iterations`` steps, ``step_s`` apart, and then writes its rank file (vLLM 0.32 profiler/wrapper.py);
    /stop_profile writes it where the window was still open."""

    def __init__(self, out: Path, step_s: float = 0.02):
        super().__init__()
        self.out, self.step_s, self.written, self.open, self.at = out, step_s, [], False, []
        self.lock = threading.Lock()

    def post(self, url, json=None, timeout=None):
        self.at.append((url.rsplit("/", 1)[-1], time.monotonic()))
        if url.endswith("/start_profile"):
            self.open = True
            bound = (json or {}).get("max_iterations", 0)
            if bound:
                threading.Timer(bound * self.step_s, self._close).start()
        elif url.endswith("/stop_profile"):
            self._close()
        return super().post(url, json=json, timeout=timeout)

    def _close(self):
        with self.lock:
            if not self.open:
                return
            self.open = False
            src = next((GPU / "tp1_vllm").glob("*.gz"))
            dest = self.out / f"dp0_pp0_tp0_dcp0_ep0_rank0.{time.time_ns()}.pt.trace.json.gz"
            shutil.copy(src, dest)
            self.written.append(dest)


def test_vllm_launch_bounds_every_profiler_window_by_engine_steps(tmp_path):
    from moetrace.engines.base import LaunchSpec
    from moetrace.engines.vllm import VLLM
    from moetrace.matrix import Config
    from moetrace.presets import get_preset
    spec = LaunchSpec(preset=get_preset("Qwen3-235B"), config=Config(1), model_path="m", port=1, device="cpu",
                      profile_dir=tmp_path, profile_steps=7)
    cmd = VLLM().command(spec)
    cfg = json.loads(cmd[cmd.index("--profiler-config") + 1])
    assert cfg["max_iterations"] == 7 and cfg["profiler"] == "torch"  # vLLM 0.25.0 and 0.32 ProfilerConfig


def test_vllm_decode_window_is_closed_by_the_engine_not_by_a_bursty_stream(tmp_path):
    """The first token at once, the rest in one burst 1.5 s later (a busy host): the window opens at the first
    token with max_iterations = the steps, and closes when the engine has written its file, long before the
    burst; the client's token count plays no part. The extend window has no bound (the whole prefill)."""
    from moetrace.engines.vllm import VLLM
    http = SteppingVLLM(tmp_path)

    def bursty(on_token):
        on_token(1)
        time.sleep(1.5)
        on_token(256)

    jobs = []
    req = ProfileRequest(out_dir=tmp_path, steps=5, with_stack=False, run=lambda *a: None,
                         run_async=lambda seed, n, on_token: jobs.append(_Job(bursty, on_token)) or jobs[-1],
                         timeout_s=20, stages=("extend", "decode"))
    files = VLLM().capture_profile(http, "http://x", req)
    starts = [body for url, body in http.posts if url.endswith("/start_profile")]
    assert starts == [{"max_iterations": 0}, {"max_iterations": 5}]
    assert len(files["decode"]) == 1 and files["decode"][0] == http.written[-1]
    (_, opened), (_, closed) = [x for x in http.at if x[0] in ("start_profile", "stop_profile")][2:]
    assert closed - opened < 1.0  # closed once the engine's 5 steps were done, not at the burst 1.5 s later
    assert jobs[0].cancelled


def test_vllm_decode_window_is_armed_before_the_request_when_the_stream_came_too_late(tmp_path):
    """Every token arrived at once after the request ended: no decode step left to open a window on, so the
    window opens before a new request and bounds itself at the steps plus room for the prefill; the retry
    (longer windows) does the same with 4x the steps."""
    from moetrace.engines.vllm import PREFILL_STEPS, VLLM

    def all_at_end(on_token):
        on_token(256)

    for longer, want in ((False, 5), (True, 20)):
        http, runs = SteppingVLLM(tmp_path, step_s=0.001), []
        req = ProfileRequest(out_dir=tmp_path, steps=5, with_stack=False,
                             run=lambda seed, n, on_token: runs.append(n),
                             run_async=lambda seed, n, on_token: _Job(all_at_end, on_token),
                             timeout_s=20, stages=("decode",), longer=longer)
        if not longer:  # the job must be over before the window would open
            req.run_async = lambda seed, n, on_token: _done(_Job(all_at_end, on_token))
        files = VLLM().capture_profile(http, "http://x", req)
        (url, body), = [(u, b) for u, b in http.posts if u.endswith("/start_profile")]
        assert body == {"max_iterations": want + PREFILL_STEPS} and runs == [want + PREFILL_STEPS + 1]
        assert len(files["decode"]) == 1


def _done(job):
    job.join()
    return job
