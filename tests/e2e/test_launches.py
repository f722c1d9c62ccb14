"""``--launches N``: one config measured over N launches of a real engine (the vLLM CPU build serving the
tiny Qwen3 checkpoint), because on H200 one launch's figure moved by +-20% between launches of the same
config on one node (tests/data/gpu-3/README.md). One record: the runs of every launch, tagged; the medians
over all of them; each launch's median beside them; the traces and the record's log of the last launch."""

from __future__ import annotations

import io
import json

import pytest

from moetrace.matrix import Config
from moetrace.presets import get_preset
from moetrace.report.tables import EXTRA_COLUMNS
from moetrace.results.store import ResultsStore
from moetrace.attempt import Progress, RunOptions, run_config
from moetrace.sweep import tiny_preset
from tests.conftest import engine_processes, require_engine

pytestmark = pytest.mark.engine


def test_two_launches_make_one_record_with_each_launchs_runs(tiny_dir, tmp_path):
    preset = tiny_preset(get_preset("Qwen3-235B"), tiny_dir)
    store = ResultsStore(tmp_path / "results", warn=lambda m: None)
    opts = RunOptions(engine="vllm", device="cpu", engine_python=require_engine(), input_len=64, output_len=16,
                      repeat=2, launches=2, profile_steps=2, max_model_len=8192,
                      extra_args=("--gpu-memory-utilization", "0.15"))
    lines = io.StringIO()
    (rec,) = run_config(preset, Config(1), opts, store, progress=Progress(stream=lines, every_s=60))
    assert engine_processes(tiny_dir) == [] and not list((store.root / "running").iterdir())
    r = rec.to_dict()
    assert r["status"] == "success", r.get("error")
    assert r["workload"]["launches"] == 2 and r["workload"]["repeat"] == 2
    assert [run["launch"] for run in r["runs"]] == [1, 1, 2, 2]
    m = r["metrics"]
    assert m["repeat"] == 4  # the medians are over every run of every launch
    for key in ("ttft_ms", "itl_ms", "latency_s"):
        per = m[f"{key}_by_launch"]
        assert len(per) == 2 and all(v > 0 for v in per)
        assert m[f"{key}_min"] <= min(per) <= max(per) <= m[f"{key}_max"]
    # the intervals are over the two launch means (measure/metrics.py launch_intervals), not over the runs
    assert m["ci_method"] == "t_launch_means" and m["itl_ms_ci95"][0] <= m["itl_ms_ci95"][1]
    # two servers, two logs; the record's log, stop and traces are the last launch's
    adir = store.root / r["attempt_dir"]
    assert (adir / "server-launch1.log").is_file() and r["log_path"] == f"{r['attempt_dir']}/server.log"
    for log in ("server-launch1.log", "server.log"):  # each launch wrote its own, from its command on
        assert (adir / log).read_text().startswith("$ ") and "Application startup complete" in (adir / log).read_text()
    assert r["profile"]["extend"] and r["profile"]["decode"]
    assert "launching vllm (launch 1/2)" in lines.getvalue() and "launching vllm (launch 2/2)" in lines.getvalue()
    assert "run 2/2 of launch 2" in lines.getvalue()
    (entry,) = json.loads((store.root / "success_results.json").read_text()).values()  # one config, one entry
    assert entry["launches"] == 2 and entry["itl_ms_by_launch"] == [round(x, 2) for x in m["itl_ms_by_launch"]]
    assert EXTRA_COLUMNS["launches"][1](entry) == " / ".join(f"{x:.2f}" for x in m["itl_ms_by_launch"])
