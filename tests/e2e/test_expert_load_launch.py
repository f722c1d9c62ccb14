"""--expert-load with a real engine: the measured launch goes without the expert recorder, a
second launch of the same config counts the load, and a failure of that second launch costs the
expert_load field only (attempt.launch.launch_options says why: the recorder's kernels sit in SGLang's
CUDA graph of every decode step, GPU run 3).

The engine launches are real vLLM CPU launches of the tiny Qwen3-235B. vLLM has no expert
recorder, so the adapter here claims one: its recorder launch gets arguments the measured launch
lacks (as SGLang's gets --expert-distribution-recorder-mode), and its capture sends the request to
the server it is given and returns a copy of a real SGLang 0.5.17 dump recorded on one H200
(tests/data/gpu-2/results-load, the Qwen3-235B slice at TP1_auto: 2 MoE layers x 128 experts)."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import pytest

from moetrace.attempt import run as runner
from moetrace.engines.sglang import SGLang
from moetrace.engines.vllm import VLLM
from moetrace.matrix import Config
from moetrace.presets import get_preset
from moetrace.results.store import ResultsStore
from moetrace.attempt import Progress, RunOptions, run_config
from moetrace.sweep import tiny_preset
from tests.conftest import DATA, engine_processes, require_engine

pytestmark = pytest.mark.engine
DUMP = next((DATA / "gpu-2" / "results-load" / "attempts").glob("*Qwen3-235B-slice-TP1_auto*/expert_load/*.pt"))


class RecorderVLLM(VLLM):
    """vLLM, claiming a recorder: ``recorder_args`` go to the launch that has one."""

    expert_load_source = "a real SGLang 0.5.17 dump (H200), returned by a test adapter"

    def __init__(self, recorder_args: list[str]):
        self.recorder_args = recorder_args
        self.captured_on: list[str] = []  # the server each capture's request went to

    def command(self, spec):
        return super().command(spec) + (self.recorder_args if spec.expert_load_dir is not None else [])

    expert_counts = SGLang.expert_counts  # the dump is SGLang's: its adapter decodes it

    def expert_load_unavailable(self, device):
        return None  # a recorder on this CPU machine too

    def capture_expert_load(self, http, base_url, out_dir, run):
        run()
        self.captured_on.append(base_url)
        out_dir.mkdir(parents=True, exist_ok=True)
        return [Path(shutil.copy(DUMP, out_dir / DUMP.name))]


def _run(engine: RecorderVLLM, tiny_dir: Path, tmp_path: Path, monkeypatch) -> tuple[dict, ResultsStore, str]:
    monkeypatch.setattr(runner, "get_engine", lambda name: engine)
    preset = tiny_preset(get_preset("Qwen3-235B"), tiny_dir)
    store = ResultsStore(tmp_path / "results", warn=lambda m: None)
    opts = RunOptions(engine="vllm", device="cpu", engine_python=require_engine(), input_len=64, output_len=16,
                      profile=False, expert_load=True, max_model_len=8192,
                      extra_args=("--gpu-memory-utilization", "0.15"))
    lines = io.StringIO()
    (rec,) = run_config(preset, Config(1), opts, store, progress=Progress(stream=lines, every_s=60))
    assert engine_processes(tiny_dir) == [] and not list((store.root / "running").iterdir())
    return rec.to_dict(), store, lines.getvalue()


def _port(cmd: list[str]) -> str:
    return cmd[cmd.index("--port") + 1]


def test_the_load_is_counted_in_a_second_launch_and_the_measured_one_has_no_recorder(tiny_dir, tmp_path,
                                                                                     monkeypatch):
    engine = RecorderVLLM(["--max-logprobs", "20"])  # vLLM's default: a recorder flag that changes nothing
    rec, store, progress = _run(engine, tiny_dir, tmp_path, monkeypatch)
    assert rec["status"] == "success" and rec["metrics"]["latency_s"] > 0, rec.get("error")
    el, measured = rec["expert_load"], rec["engine"]["command"]
    launch = el["launch"]
    assert el["recorder_in_measured_launch"] is False and "error" not in el, el
    assert "--max-logprobs" not in measured and launch["command"][-2:] == ["--max-logprobs", "20"]
    # the capture went to the second server (its port may be the first's again: that one had stopped)
    assert engine.captured_on == [f"http://127.0.0.1:{_port(launch['command'])}"]
    # two servers, two logs; the record's own log and stop are the measured launch's
    assert rec["log_path"] == f"{rec['attempt_dir']}/server.log"
    assert launch["log_path"] == f"{rec['attempt_dir']}/server-expert-load.log"
    assert (store.root / rec["log_path"]).is_file() and (store.root / launch["log_path"]).is_file()
    assert launch["launch_s"] > 0 and launch["stop"]["survivors"] == [] and launch["stop"] != rec["engine"]["stop"]
    assert rec["phases"]["expert_load_s"] > launch["launch_s"]
    # what the recorder wrote, read like any dump: SGLang's, with its 128 experts (its stages are read with
    # the tiny model's top-k of 4, not the slice's 8, so its decode passes count as 2 tokens each)
    assert (store.root / el["file"]).read_bytes() == DUMP.read_bytes()
    assert el["experts"] == 128 and el["stages"]["extend"]["passes"] == 513
    assert "launching vllm for the expert recorder on port" in progress
    assert "expert load of one request (bs=1)" in progress


def test_a_failed_recorder_launch_costs_the_expert_load_only(tiny_dir, tmp_path, monkeypatch):
    engine = RecorderVLLM(["--no-such-recorder-flag"])
    rec, store, progress = _run(engine, tiny_dir, tmp_path, monkeypatch)
    assert rec["status"] == "success" and rec["metrics"]["latency_s"] > 0 and rec["metrics"]["itl_ms"] > 0
    el = rec["expert_load"]
    assert el["available"] is True and el["recorder_in_measured_launch"] is False
    assert el["error"].startswith("LaunchError: [expert_load] ") and "unrecognized arguments" in el["evidence"]
    assert "--no-such-recorder-flag" in el["evidence"] and el["exception"] == "LaunchError"
    assert el["launch"]["command"][-1] == "--no-such-recorder-flag"
    assert "--no-such-recorder-flag" not in rec["engine"]["command"]
    assert "--no-such-recorder-flag" in (store.root / el["launch"]["log_path"]).read_text()
    assert engine.captured_on == [] and "file" not in el and "expert_load_s" in rec["phases"]
