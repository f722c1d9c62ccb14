"""The real vLLM CPU engine killed while it is being profiled (issue 11 section 4, seen with
SGLang 0.5.17 on H200): the measured numbers stand, the profiling stage fails with the reason,
the engine's tree is stopped and reported, and the complete trace it wrote is filed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ENGINE_ARGS, engine_processes, engine_python, moetrace, require_engine

pytestmark = pytest.mark.engine
MODEL = "Qwen3-235B"


@pytest.fixture(scope="module")
def tiny(tiny_dir):
    require_engine()
    if not (tiny_dir / "qwen3-235b").exists():
        moetrace("tiny", MODEL, "--out", str(tiny_dir / "qwen3-235b"), check=True)
    return tiny_dir


def _complete_extend(results: Path) -> bool:
    from moetrace.traces.capture import complete_traces
    return any(complete_traces(d) for d in results.glob("attempts/*/profiler_raw"))


def test_engine_killed_while_profiling_keeps_numbers_and_files_its_traces(tiny, tmp_path):
    res = tmp_path / "r"
    exe = str(Path(sys.executable).with_name("moetrace"))
    cmd = [exe, "run", MODEL, "--tiny", "--tiny-dir", str(tiny), "-r", str(res), "-c", "TP1_auto",
           "--input-len", "256", "--output-len", "32", "--profile-steps", "400", *ENGINE_ARGS]
    env = dict(os.environ, MOETRACE_ENGINE_PYTHON=engine_python() or "", PYTHONUNBUFFERED="1")
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.monotonic() + 400
        while not _complete_extend(res):  # the extend window is over: its trace is complete
            assert p.poll() is None and time.monotonic() < deadline, p.communicate()[1][-3000:]
            time.sleep(0.2)
        core = [q for q in engine_processes(tiny) if "EngineCore" in " ".join(q.cmdline() or [q.name()])]
        assert core
        for q in core:
            q.send_signal(signal.SIGKILL)
        out, err = p.communicate(timeout=300)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 0, err
    (rec,) = [json.loads(f.read_text()) for f in (res / "records").glob("*.json")]
    assert rec["status"] == "success" and rec["metrics"]["latency_s"] > 0, rec.get("error")
    prof = rec["profile"]
    died = prof["engine_died"]
    assert prof["error"].startswith(died["error_type"]) and died["lost_pids"], prof
    assert died["stop"]["survivors"] == [] and rec["engine"]["stop"] == died["stop"]
    assert prof["extend"] and (res / prof["extend"]).is_file() and "__vllm__extend__rank0" in prof["extend"]
    assert "extend" in prof["breakdown"]
    assert not [f for f in prof["other_files"] if f.endswith(".gz")], prof["other_files"]
    assert engine_processes(tiny) == []
