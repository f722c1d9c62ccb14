"""The decode profile holds decode steps on a busy host (issue 23 §3): the real vLLM CPU server (tiny Qwen3)
profiled while two busy loops load this machine's CPUs, where the stream arrives in bursts. The decode
window is bounded by the engine's own steps (max_iterations), not by the client's token count; with the
old rule `make demo` on a loaded 2-core machine lost 2 of 4 decode traces."""

from __future__ import annotations

import io
import subprocess
import sys

import pytest

from moetrace.attempt import Progress, RunOptions, run_config
from moetrace.matrix import Config
from moetrace.presets import get_preset
from moetrace.results.store import ResultsStore
from moetrace.sweep import tiny_preset
from moetrace.traces.analyze import analyze_trace, step_count
from tests.conftest import engine_processes, require_engine

pytestmark = pytest.mark.engine


def test_decode_trace_holds_decode_steps_while_the_host_is_busy(tiny_dir, tmp_path):
    preset = tiny_preset(get_preset("Qwen3-235B"), tiny_dir)
    store = ResultsStore(tmp_path / "results", warn=lambda m: None)
    opts = RunOptions(engine="vllm", device="cpu", engine_python=require_engine(), input_len=64, output_len=16,
                      repeat=1, profile_steps=4, max_model_len=8192, extra_args=("--gpu-memory-utilization", "0.15"))
    burners = [subprocess.Popen([sys.executable, "-c", "while 1: pass"]) for _ in range(2)]
    try:
        (rec,) = run_config(preset, Config(1), opts, store, progress=Progress(stream=io.StringIO(), every_s=60))
    finally:
        for b in burners:
            b.kill()
            b.wait()
    assert engine_processes(tiny_dir) == []
    r = rec.to_dict()
    assert r["status"] == "success", r.get("error")
    prof = r["profile"]
    assert not prof.get("error") and prof["decode"], prof
    decode = analyze_trace(store.root / prof["decode"])
    print(f"decode steps {step_count(decode, 'DECODE')}, extend steps {step_count(decode, 'EXTEND')}, "
          f"rejected {prof.get('rejected')}")
    assert 1 <= step_count(decode, "DECODE")
    # Not asserted: that the window closed at the engine's step bound (4, 4x on a retry). A clean-clone run on
    # this 2-core VM (2026-12-06 23:37) held 23 decode steps, so vLLM 0.32 CPU did not always stop at
    # max_iterations there; the requirement (decode steps present on a busy host) held. Open defect.
