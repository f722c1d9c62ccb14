"""Sweeps through `--executor slurm` on the local one-node cluster (scripts/slurm-local.sh):
tiny presets on the vLLM CPU engine, one job at a time (a job without --mem takes the node's
memory, so Slurm runs them one after another).

* a sweep whose driver is SIGKILLed and started again: it re-attaches, nothing is submitted
  twice, the results and the traces are in the shared results directory;
* a job over its time limit: Slurm ends it (TIMEOUT) and the driver records SlurmKilled;
* Ctrl-C on the driver: its jobs are cancelled (squeue no longer lists them), the running one
  recorded as Interrupted;
* a job whose node cannot run moetrace: FAILED without a record, classified from its log.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path

import psutil
import pytest

from .conftest import engine_python, job_state, registry, squeue_active, unavailable, wait_until

pytestmark = pytest.mark.slurm

WORKLOAD = ["--input-len", "256", "--output-len", "16", "--max-model-len", "4096",
            "--engine-arg=--gpu-memory-utilization=0.15"]


@pytest.fixture
def common(slurm_cluster, tiny_dir, tmp_path):
    py = engine_python()
    if py is None:
        unavailable("the vLLM CPU engine is not installed (scripts/setup.sh --engine)")
    results = tmp_path / "results"
    args = ["--results", str(results), "--tiny", "--tiny-dir", str(tiny_dir), "--engine-python", py,
            "--executor", "slurm", "--partition", slurm_cluster["partition"], "--gpus-per-node", "0",
            "--slurm-poll", "1", *WORKLOAD]
    yield results, args
    from .conftest import cancel_all
    cancel_all(results)


def _engines_of(results: Path) -> list[psutil.Process]:
    """Engine processes a test's jobs started (their profiler dir or log is in its results dir)."""
    out = []
    for p in psutil.process_iter(["cmdline"]):
        cmd = " ".join(p.info["cmdline"] or [])
        if "vllm" in cmd and str(results) in cmd:
            out.append(p)
    return out


def _running(results: Path, n: int):
    jobs = registry(results)
    if len(jobs) < n:
        return None
    active = squeue_active(jobs)
    return [i for i, st in active.items() if st == "RUNNING"] or None


@pytest.mark.engine
def test_sweep_survives_a_driver_restart(common, start_driver):
    results, args = common
    argv = ["Qwen3-235B", "Qwen3-Coder-480B", "-c", "TP1_auto", *args, "--profile-steps", "2", "--time", "20"]
    first = start_driver(*argv)
    wait_until(lambda: _running(results, 2), 300, "a job of the sweep to run")
    first.kill()  # the driver dies (SIGKILL); its jobs go on
    ids = sorted(registry(results), key=int)
    assert len(ids) == 2 and set(squeue_active(ids)) == set(ids), first.text()

    second = start_driver(*argv)
    assert second.wait(900) == 0, second.text()
    out = second.text()
    for i in ids:
        assert f"re-attached to Slurm job {i}" in out, out
    assert "submitted as Slurm job" not in out  # nothing ran twice
    assert sorted(registry(results), key=int) == ids

    # the shared results directory: both results, written by the jobs on their node
    success = json.loads((results / "success_results.json").read_text())
    assert set(success) == {"Qwen3-235B-tiny::TP1_auto::bs1_in256_out16",
                            "Qwen3-Coder-480B-tiny::TP1_auto::bs1_in256_out16"}, success
    for e in success.values():
        assert e["latency_s"] > 0 and e["output_throughput_tok_per_s"] > 0
        for stage in ("profile_extend", "profile_decode"):
            assert e[stage] and (results / e[stage]).is_file(), e
    assert json.loads((results / "failure_results.json").read_text()) == {}
    # job states
    for i in ids:
        e = registry(results)[i]
        assert (e["status"], e["state"], e["outcome"]) == ("finished", "COMPLETED", "success"), e
        assert job_state(i) == "COMPLETED"
        assert (results / e["log"]).is_file()
    # progress per job and the spec's tables at the end
    assert "running on" in out and "done (1 result)" in out
    assert "### Qwen3-235B-tiny" in out and "### Qwen3-Coder-480B-tiny" in out and "## Summary" in out
    assert not squeue_active(ids) and not _engines_of(results)


@pytest.mark.engine
def test_a_job_over_its_time_limit_is_recorded_as_slurm_killed(common, start_driver):
    results, args = common
    # far more measured runs than one minute holds: Slurm's time limit ends the job
    d = start_driver("Qwen3-235B", "-c", "TP1_auto", *args, "--no-profile", "--repeat", "100000",
                     "--launch-timeout", "900", "--time", "1")
    assert d.wait(400) == 3, d.text()  # a config failed and was recorded (cli.py: exit 3)
    (sid,) = registry(results)
    assert job_state(sid) == "TIMEOUT"
    e = registry(results)[sid]
    assert (e["status"], e["state"], e["reason"]) == ("finished", "TIMEOUT", "TimeLimit"), e
    failures = json.loads((results / "failure_results.json").read_text())
    f = failures["Qwen3-235B-tiny::TP1_auto::bs1_in256_out16"]
    assert f["error_type"] == "SlurmKilled", f
    assert f"Slurm ended job {sid} with TIMEOUT (TimeLimit)" in f["error_message"]
    assert f["log_path"] == e["log"]
    recs = [json.loads(p.read_text()) for p in sorted((results / "records").glob("*.json"))]
    killed = [r for r in recs if r["error"]["type"] == "SlurmKilled"]
    assert len(killed) == 1 and killed[0]["slurm"]["state"] == "TIMEOUT" and killed[0]["recorded_by"] == "driver"
    assert "failed [SlurmKilled]" in d.text()
    assert not _engines_of(results)


@pytest.mark.engine
def test_ctrl_c_on_the_driver_cancels_its_jobs(common, start_driver):
    results, args = common
    d = start_driver("Qwen3-235B", "Qwen3-Coder-480B", "-c", "TP1_auto", *args, "--no-profile", "--time", "20")
    running = wait_until(lambda: _running(results, 2), 300, "a job of the sweep to run")
    ids = sorted(registry(results), key=int)
    assert len(squeue_active(ids)) == 2  # one running, one queued behind it
    d.signal(signal.SIGINT)
    assert d.wait(120) == 130, d.text()
    assert squeue_active(ids) == {}, d.text()  # squeue no longer lists them
    out = d.text()
    assert "cancelling 2 Slurm job(s)" in out
    reg = registry(results)
    assert all(reg[i]["status"] == "cancelled" for i in ids), reg
    for i in ids:
        assert job_state(i) == "CANCELLED"
    (ran,) = running
    model = reg[ran]["model"]
    failures = json.loads((results / "failure_results.json").read_text())
    assert failures[f"{model}::TP1_auto::bs1_in256_out16"]["error_type"] == "Interrupted", failures
    assert len(failures) == 1  # the queued job never started: nothing to record
    wait_until(lambda: not _engines_of(results), 30, "the cancelled job's engine to be gone")


def test_a_node_that_cannot_run_moetrace_is_classified(slurm_cluster, tmp_path):
    from moetrace.executors.slurm import SlurmExecutor
    from moetrace.matrix import Config
    from moetrace.presets import get_preset
    from moetrace.results.store import ResultsStore
    from moetrace.attempt import RunOptions
    from moetrace.sweep import Job, run_sweep

    results = tmp_path / "results"
    store = ResultsStore(results)
    out = (tmp_path / "driver.txt").open("w")
    ex = SlurmExecutor(gpus_per_node=0, time_min=5, poll_s=1, exe=["/nonexistent/bin/moetrace"], out=out)
    job = Job(get_preset("Qwen3-235B"), Config(1), index=1, total=1)
    outcome = run_sweep([job], RunOptions(engine="vllm", device="cpu", engine_python="p"), store, executor=ex,
                        out=out)
    (rec,) = outcome.records
    (sid,) = registry(results)
    assert rec["recorded_by"] == "driver" and rec["slurm"]["state"] == "FAILED"
    assert rec["error"]["type"] == "Unknown"
    assert f"Slurm job {sid} failed" in rec["error"]["message"] and "/nonexistent/bin/moetrace" in rec["error"]["message"]
    assert registry(results)[sid]["status"] == "finished"
