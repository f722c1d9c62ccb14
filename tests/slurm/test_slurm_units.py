"""The Slurm executor's pure parts, without a cluster: the node's command line (round trip
through the CLI's own parser), time and option parsing, the sbatch parameters, how a job that
Slurm ended is recorded, the registry under concurrent writers."""

from __future__ import annotations

import json
import multiprocessing
from pathlib import Path

import pytest

from moetrace import cli
from moetrace.executors import make_executor
from moetrace.executors.slurm import (JobRegistry, SlurmExecutor, SlurmState, parse_slurm_args, parse_time,
                                      run_command)
from moetrace.matrix import Config, parse_config_name, parse_matrix
from moetrace.presets import get_preset
from moetrace.results.store import ResultsStore
from moetrace.attempt import RunOptions
from moetrace.sweep import Job


def _parse_back(cmd: list[str]) -> RunOptions:
    """What `moetrace run` makes of a command line: the CLI's own parser and _options()."""
    assert cmd[1] == "run"
    ctx = cli.run.make_context("run", cmd[2:])
    return cli._options(dict(ctx.params))


def test_run_command_round_trips_every_option(tmp_path):
    preset = get_preset("Qwen3-235B")
    opts = RunOptions(engine="vllm", device="cpu", batch_sizes=(1, 4), input_len=128, output_len=16, repeat=2,
                      warmup=False, seed=7, launch_timeout_s=300.5, request_timeout_s=60, profile=True,
                      profile_steps=3, profile_with_stack=True, profile_timeout_s=100,
                      engine_python="/opt/engine/bin/python", launch_prefix=("docker", "exec", "a b"),
                      extra_args=("--gpu-memory-utilization", "0.3", "--model-loader-extra-config",
                                  '{"enable_multithread_load": true}', "--x=y"),
                      engine_env=(("NCCL_DEBUG", "INFO"), ("A", "b c=d")), host="0.0.0.0", port=31000,
                      model_path="/models/q", max_model_len=8192, gpu="h200", skip_predicted=False,
                      mem_fraction=0.85)
    cmd = run_command(Job(preset, parse_config_name("TP8_EP2_triton")), opts, tmp_path / "res",
                      exe=["moetrace"])
    assert cmd[:6] == ["moetrace", "run", "Qwen3-235B", "-c", "TP8_EP2_triton", "--results"]
    assert cmd[6] == str((tmp_path / "res").resolve())
    back = _parse_back(cmd)
    assert back.to_dict() == opts.to_dict()


def test_run_command_defaults_and_checkpoint_dir(tmp_path):
    from moetrace.tiny import write_tiny_checkpoint
    d = write_tiny_checkpoint(get_preset("DeepSeek-V3.1"), tmp_path / "tiny")
    preset = get_preset(str(d))
    opts = RunOptions(engine="sglang", device="auto", engine_python="/usr/bin/python3")
    cmd = run_command(Job(preset, parse_config_name("TP1_auto")), opts, tmp_path / "r", exe=["moetrace"])
    assert cmd[2] == str(Path(d).resolve())  # a tiny variant is named by its directory
    assert _parse_back(cmd).to_dict() == opts.to_dict()
    # only what differs from the CLI's defaults is spelled out, besides engine/device/python
    assert "--input-len" not in cmd and "--repeat" not in cmd and "--no-profile" not in cmd


def test_run_command_for_a_fallback(tmp_path):
    (c,) = parse_matrix([(8, 2, [("fp8", "flashinfer_trtllm", None, "triton")])])
    job = Job(get_preset("GLM-4.6"), c)
    opts = RunOptions(engine="sglang", engine_python="/p")
    assert run_command(job, opts, tmp_path, exe=["m"])[4] == "TP8_EP2_fp8_flashinfer_trtllm"
    assert run_command(job, opts, tmp_path, config=c.fallback, exe=["m"])[4] == c.fallback.name


@pytest.mark.parametrize("text,minutes", [("1", 1), ("90", 90), ("1:30", 2), ("0:30", 1), ("2:00:00", 120),
                                          ("1-0", 1440), ("1-02:03", 1563), ("0-00:00:59", 1), (5, 5)])
def test_parse_time(text, minutes):
    assert parse_time(text) == minutes


@pytest.mark.parametrize("bad", ["", "abc", "0", "1:2:3:4", "-5", "0:00"])
def test_parse_time_rejects(bad):
    with pytest.raises(ValueError):
        parse_time(bad)


def test_parse_slurm_args():
    assert parse_slurm_args(["account=abc", "--qos=high", "exclusive", "mem_per_gpu=100G", "--constraint=h200"]) == {
        "account": "abc", "qos": "high", "exclusive": True, "mem_per_gpu": "100G", "constraint": "h200"}
    with pytest.raises(ValueError):
        parse_slurm_args(["=x"])
    with pytest.raises(ValueError):
        parse_slurm_args(["a b=c"])


def _kw(**over):
    kw = {"executor": "slurm", "partition": None, "gpus_per_node": 8, "slurm_time": "4:00:00", "slurm_args": (),
          "slurm_setup": (), "slurm_poll": 10.0, "base_url": None}
    kw.update(over)
    return kw


def test_make_executor(monkeypatch):
    assert make_executor(_kw(executor="local")) is None
    with pytest.raises(ValueError, match="--partition needs --executor slurm"):
        make_executor(_kw(executor="local", partition="gpu"))
    monkeypatch.setattr("shutil.which", lambda name: "/usr/bin/" + name)
    ex = make_executor(_kw(partition="h200", gpus_per_node=8, slurm_time="1-00:00:00",
                           slurm_args=("account=llm", "exclusive"), slurm_setup=("module load cuda",)))
    assert isinstance(ex, SlurmExecutor)
    assert (ex.partition, ex.gpus_per_node, ex.time_min, ex.setup) == ("h200", 8, 1440, ["module load cuda"])
    assert ex.slurm_args == {"account": "llm", "exclusive": True}
    with pytest.raises(ValueError, match="--time"):
        make_executor(_kw(slurm_time="soon"))
    with pytest.raises(ValueError, match="base-url"):
        make_executor(_kw(base_url="http://x:1"))
    monkeypatch.setattr("shutil.which", lambda name: None)
    with pytest.raises(ValueError, match="no sbatch"):
        make_executor(_kw())


def test_sbatch_parameters_and_script(tmp_path):
    from submitit.slurm.slurm import _make_sbatch_string
    ex = SlurmExecutor(partition="h200", gpus_per_node=8, time_min=90, slurm_args={"account": "llm",
                                                                                    "exclusive": True},
                       setup=["module load cuda"])
    p = ex.sbatch_parameters(Config(16, 2, nodes=2), "moetrace:X:TP16_EP2_N2_auto")
    assert (p["nodes"], p["ntasks_per_node"], p["gpus_per_node"], p["time"]) == (2, 1, 8, 90)
    script = _make_sbatch_string(command="python -m x", folder=tmp_path / "%j", **p)
    for line in ("#SBATCH --partition=h200", "#SBATCH --gpus-per-node=8", "#SBATCH --nodes=2",
                 "#SBATCH --ntasks-per-node=1", "#SBATCH --time=90", "#SBATCH --signal=INT@60",
                 "#SBATCH --account=llm", "#SBATCH --exclusive", "module load cuda"):
        assert line in script, line
    # a TP4 config asks for 4 GPUs of a node; no GPUs at all on a CPU cluster
    assert ex.sbatch_parameters(Config(4), "n")["gpus_per_node"] == 4
    assert "gpus_per_node" not in SlurmExecutor(gpus_per_node=0).sbatch_parameters(Config(4), "n")
    # a one-minute job is warned 15 s before its limit, not 60
    assert SlurmExecutor(time_min=1).sbatch_parameters(Config(1), "n")["additional_parameters"]["signal"] == "INT@15"


def test_a_config_larger_than_a_node_is_refused():
    job = Job(get_preset("Kimi-K2-Thinking"), Config(16, 1))
    with pytest.raises(ValueError, match="needs 16 GPUs per node.*nodes: 2"):
        SlurmExecutor(gpus_per_node=8)._check([job])
    SlurmExecutor(gpus_per_node=8)._check([Job(job.preset, Config(16, 1, nodes=2))])


# ----------------------------------------------------------------------------- how a job's end is recorded

def _executor_on(store: ResultsStore, opts: RunOptions) -> SlurmExecutor:
    ex = SlurmExecutor(gpus_per_node=0)
    ex._store, ex._opts, ex._root = store, opts, store.root.resolve()
    ex._reg = JobRegistry(ex._root)
    ex._logs = ex._root / "slurm" / "logs"
    import io
    ex._out = io.StringIO()
    return ex


def _entry(ex: SlurmExecutor, sid: str, log_text: str | None = None) -> dict:
    e = {"slurm_id": sid, "model": "M", "config": "TP1_auto", "role": "primary", "since_seq": 0,
         "results": str(ex._root), "status": "active", "submitted_at": "2026-01-01T00:00:00",
         "options": ex._opts.to_dict(), "config_detail": Config(1).to_dict(), "command": ["moetrace", "run"],
         "log": f"slurm/logs/{sid}/{sid}_0_log.out", "model_arg": "M"}
    if log_text is not None:
        p = ex._root / e["log"]
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(log_text)
    ex._reg.put(e)
    return e


@pytest.mark.parametrize("state,reason", [("TIMEOUT", "TimeLimit"), ("PREEMPTED", "None"),
                                          ("NODE_FAIL", "NodeDown"), ("OUT_OF_MEMORY", "OutOfMemory"),
                                          ("CANCELLED", "None")])
def test_a_job_slurm_ended_is_recorded_as_slurm_killed(store, state, reason):
    opts = RunOptions(engine="vllm", device="cpu", batch_sizes=(2,), input_len=64, output_len=8, engine_python="p")
    ex = _executor_on(store, opts)
    e = _entry(ex, "41", "[1/1] M TP1_auto: launching vllm on port 123\n[1/1] M TP1_auto: launching vllm on port"
                         " 123 ... 40 s\nslurmstepd: error: *** JOB 41 ON vm CANCELLED ***\n")
    s = SlurmState("41", state, reason, "gpu07", "00:01:12", "00:01:00", "0:15", "scontrol")
    recs = ex._finalize(e, s)
    assert len(recs) == 1
    rec = recs[0]
    assert rec["status"] == "failure" and rec["error"]["type"] == "SlurmKilled"
    msg = rec["error"]["message"]
    assert f"with {state}" in msg and "job 41" in msg and "gpu07" in msg
    assert "last progress: M TP1_auto: launching vllm on port 123 ... 40 s" in msg
    if reason != "None":
        assert f"({reason})" in msg
    assert rec["key"] == "M::TP1_auto::bs2_in64_out8"
    assert rec["slurm"]["state"] == state and rec["slurm"]["reason"] == reason
    assert rec["error"]["log_path"] == "slurm/logs/41/41_0_log.out"
    _, failures = store.views()
    assert failures["M::TP1_auto::bs2_in64_out8"]["error_type"] == "SlurmKilled"
    reg = ex._reg.load()["41"]
    assert reg["status"] == "finished" and reg["state"] == state
    # finalizing again (another driver, a restart) records nothing more
    assert len(ex._finalize(e, s)) == 1 and len(store.records()) == 1


def test_a_timeout_after_the_node_recorded_keeps_both(store):
    """The node recorded Interrupted (Slurm's SIGINT before the limit); the driver adds SlurmKilled
    with the phase the node was in; the failures view shows the Slurm class."""
    opts = RunOptions(engine="vllm", engine_python="p")
    ex = _executor_on(store, opts)
    e = _entry(ex, "7", "")
    store.commit({"model": "M", "config": "TP1_auto", "key": "M::TP1_auto", "status": "failure",
                  "error": {"type": "Interrupted", "message": "[measure] Interrupted", "phase": "measure"}})
    recs = ex._finalize(e, SlurmState("7", "TIMEOUT", "TimeLimit", "vm", "00:01:20", "00:01:00"))
    assert [r["error"]["type"] for r in recs] == ["Interrupted", "SlurmKilled"]
    assert recs[1]["error"]["phase"] == "measure"
    assert store.views()[1]["M::TP1_auto"]["error_type"] == "SlurmKilled"


def test_a_success_then_a_kill_adds_nothing(store):
    ex = _executor_on(store, RunOptions(engine="vllm", engine_python="p"))
    e = _entry(ex, "8", "")
    store.commit({"model": "M", "config": "TP1_auto", "key": "M::TP1_auto", "status": "success",
                  "metrics": {}, "workload": {}})
    recs = ex._finalize(e, SlurmState("8", "TIMEOUT", "TimeLimit"))
    assert [r["status"] for r in recs] == ["success"]


def test_a_failed_job_without_a_record_is_classified_from_its_log(store):
    ex = _executor_on(store, RunOptions(engine="vllm", engine_python="p"))
    e = _entry(ex, "9", "Traceback (most recent call last):\nModuleNotFoundError: No module named 'vllm'\n")
    (rec,) = ex._finalize(e, SlurmState("9", "FAILED", "NonZeroExitCode", "vm", exit_code="1:0"))
    assert rec["error"]["type"] == "LaunchError" and "No module named 'vllm'" in rec["error"]["message"]
    assert "Slurm job 9 failed on vm (exit code 1) without a record" in rec["error"]["message"]
    e = _entry(ex, "10", "something odd\n")
    (rec,) = ex._finalize(e, SlurmState("10", "COMPLETED", "None", "vm", exit_code="0:0"))
    assert rec["error"]["type"] == "Unknown" and "completed on vm without a record" in rec["error"]["message"]
    e = _entry(ex, "11", "")
    (rec,) = ex._finalize(e, None)
    assert rec["error"]["type"] == "Unknown" and "unknown to Slurm" in rec["error"]["message"]


def _bump(path: str, n: int, who: int) -> None:
    reg = JobRegistry(Path(path))
    for i in range(n):
        reg.put({"slurm_id": f"{who}-{i}", "status": "active"})


def test_registry_survives_concurrent_writers(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_bump, args=(str(tmp_path), 25, w)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    jobs = JobRegistry(tmp_path).load()
    assert len(jobs) == 100
    assert json.loads((tmp_path / "slurm" / "jobs.json").read_text())["version"] == 1


def test_a_corrupt_registry_is_kept_aside(tmp_path, capsys):
    reg = JobRegistry(tmp_path)
    reg.path.write_text("{not json")
    assert reg.load() == {}
    assert list(reg.dir.glob("jobs.json.corrupt-*"))
    reg.put({"slurm_id": "1", "status": "active"})
    assert list(reg.load()) == ["1"]


def test_bad_input_on_the_node_is_a_launch_error(store):
    """`moetrace run` refused to start on the node (exit code 2, one line): that line is the message."""
    ex = _executor_on(store, RunOptions(engine="sglang", engine_python="p"))
    e = _entry(ex, "12", "moetrace: node vm job 12: moetrace run ...\nmoetrace: error: engine 'sglang' is not "
                         "installed for /usr/bin/python3 (give --engine-python, or install sglang)\n"
                         "Traceback (most recent call last):\nRuntimeError: rank 0: moetrace run ... exited with code 2\n")
    (rec,) = ex._finalize(e, SlurmState("12", "FAILED", "NonZeroExitCode", "gpu3", exit_code="1:0"))
    assert rec["error"]["type"] == "LaunchError"
    assert rec["error"]["message"].startswith("[slurm] moetrace: error: engine 'sglang' is not installed")


def test_dry_run_shows_each_jobs_sbatch_options_and_node_command():
    (c,) = parse_matrix([(8, 2, [("fp8", "flashinfer_trtllm", None, "triton")])])
    jobs = [Job(get_preset("GLM-4.6"), c, index=1, total=2), Job(get_preset("GLM-4.6"), Config(16, 2, nodes=2),
                                                                  index=2, total=2)]
    lines = "\n".join(SlurmExecutor(partition="h200", slurm_args={"exclusive": True}).dry_run_lines(
        jobs, RunOptions(engine_python="/e/python"), "/shared/res"))
    assert "--partition=h200 --gpus-per-node=8 --signal=INT@60 --exclusive" in lines
    assert "node: " in lines and "run GLM-4.6 -c TP8_EP2_fp8_flashinfer_trtllm --results /shared/res" in lines
    assert "fallback, if it fails: " in lines and "-c TP8_EP2_triton" in lines
    assert "--nodes=2 --ntasks-per-node=1" in lines and "2 nodes: rank 0 runs this" in lines


def test_the_node_takes_a_recorded_config_failure_as_done(tmp_path, monkeypatch):
    """`moetrace run` exits 3 when its config failed and was recorded (cli.py): the Slurm job did its part and
    ends COMPLETED, as before that exit code; any other non-zero code still fails the job."""
    import sys
    from moetrace.executors.slurm.node import NodeCommand
    monkeypatch.setenv("SLURM_JOB_ID", "7")
    job = {"results": str(tmp_path), "nnodes": 1}
    assert NodeCommand([sys.executable, "-c", "import sys; sys.exit(3)"], job)()["returncode"] == 3
    with pytest.raises(RuntimeError, match="exited with code 1"):
        NodeCommand([sys.executable, "-c", "import sys; sys.exit(1)"], job)()
