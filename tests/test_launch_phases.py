"""--launches N keeps each launch's timings (issue 23 §3): phases.launches, one entry per launch, beside the
top-level keys (the last launch's launch, warm-up and stop; the measuring summed over the launches).

The engine is the stand-in of tests/faults/test_expert_load_interrupt.py: a real process and HTTP server,
launched by the runner, replaying a recorded vLLM CPU stream."""

from __future__ import annotations

import io
import sys

from moetrace.attempt import Progress, RunOptions, run_config
from moetrace.matrix import Config
from moetrace.presets import get_preset
from moetrace.results.store import ResultsStore
from tests.conftest import DATA
from tests.faults.test_expert_load_interrupt import STAND_IN


def stand_in(tmp_path):
    fake = tmp_path / "vllm-python"
    fake.write_text(STAND_IN.format(python=sys.executable,
                                    stream=str(DATA / "streams" / "vllm_cpu_completions_bs1.sse")))
    fake.chmod(0o755)
    return fake


def run(tmp_path, **kw):
    store = ResultsStore(tmp_path / "results", warn=lambda m: None)
    opts = RunOptions(engine="vllm", device="cpu", engine_python=str(stand_in(tmp_path)), input_len=8, output_len=8,
                      profile=False, launch_timeout_s=30, request_timeout_s=30, grace_s=2, **kw)
    run_config(get_preset("Qwen3-235B"), Config(1), opts, store, progress=Progress(stream=io.StringIO()))
    (rec,) = store.records()
    return rec


def test_every_launch_keeps_its_own_phases(tmp_path):
    rec = run(tmp_path, launches=3, repeat=1)
    ph = rec["phases"]
    assert len(ph["launches"]) == 3
    for one in ph["launches"]:
        assert set(one) == {"launch_s", "warmup_s", "measure_s", "stop_s"}, one
        assert all(v > 0 for v in one.values())
    last = ph["launches"][-1]
    # the top-level keys: the last launch's launch, warm-up and stop (its log, traces and stop are the record's),
    # the measuring summed over the launches
    assert (ph["launch_s"], ph["warmup_s"], ph["stop_s"]) == (last["launch_s"], last["warmup_s"], last["stop_s"])
    assert abs(ph["measure_s"] - sum(x["measure_s"] for x in ph["launches"])) < 1e-9
    assert rec["workload"]["launches"] == 3


def test_one_launch_writes_the_phases_as_before(tmp_path):
    rec = run(tmp_path, launches=1, repeat=1)
    assert "launches" not in rec["phases"] and {"launch_s", "warmup_s", "measure_s", "stop_s"} <= set(rec["phases"])
