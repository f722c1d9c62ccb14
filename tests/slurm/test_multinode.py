"""Multi-node launches: the command and environment each node's engine process gets (SGLang's
and vLLM's own parsers read them), and the ranks of a Slurm job starting them for real (two
tasks of one node standing in for two nodes, a stand-in engine that writes down what it got)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import psutil
import pytest

from moetrace.engines.base import LaunchSpec
from moetrace.engines.registry import get_engine
from moetrace.executors.multinode import dist_init_args, launch_plan, node_main, split_addr
from moetrace.matrix import Config
from moetrace.presets import get_preset
from moetrace.attempt import RunOptions

from .conftest import registry, sglang_parse, vllm_parse

ADDR = "10.1.2.3:29600"
NODES = ["gpu01", "gpu02"]


def _opts(engine: str, device: str = "cuda", **kw) -> RunOptions:
    return RunOptions(engine=engine, device=device, engine_python="/env/bin/python", port=30000,
                      engine_env=(("NCCL_DEBUG", "INFO"),), **kw)


def _value(cmd: list[str], flag: str) -> str | None:
    return cmd[cmd.index(flag) + 1] if flag in cmd else None


def _after(cmd: list[str], marker: str) -> list[str]:
    return cmd[cmd.index(marker) + 1:]


def _runner_rank0(preset, config, opts, addr) -> list[str]:
    """Rank 0's command as `moetrace run` builds it on the first node: the runner's LaunchSpec
    (no rank or address of its own) plus the dist-init arguments the executor adds."""
    spec = LaunchSpec(preset=preset, config=config, model_path=preset.hf_id, port=opts.port, host=opts.host,
                      python=opts.engine_python, extra_args=[*opts.extra_args, *dist_init_args(opts.engine, addr)],
                      device=opts.resolved_device())
    return get_engine(opts.engine).command(spec)


def test_sglang_plan_per_node(tmp_path):
    preset, config = get_preset("Kimi-K2-Thinking"), Config(16, 2, nodes=2)
    opts = _opts("sglang", extra_args=("--mem-fraction-static", "0.85"))
    plan = launch_plan(preset, config, opts, NODES, ADDR, port=30000,
                       profile_dirs={0: tmp_path / "a", 1: tmp_path / "n1"})
    assert [p.rank for p in plan] == [0, 1] and [p.host for p in plan] == NODES
    assert [p.serves_http for p in plan] == [True, False]  # only rank 0 is benchmarked
    for p in plan:
        c = p.command
        assert c[:3] == ["/env/bin/python", "-m", "sglang.launch_server"]
        assert (_value(c, "--nnodes"), _value(c, "--node-rank"), _value(c, "--dist-init-addr")) == \
            ("2", str(p.rank), ADDR)
        assert _value(c, "--tp") == "16" and _value(c, "--ep") == "2"
        assert p.env["NCCL_DEBUG"] == "INFO"  # --engine-env reaches every node
    assert plan[1].env["SGLANG_TORCH_PROFILER_DIR"] == str((tmp_path / "n1").resolve())

    runner0 = _runner_rank0(preset, config, opts, ADDR)
    parsed = sglang_parse([_after(plan[0].command, "sglang.launch_server"),
                           _after(plan[1].command, "sglang.launch_server"),
                           _after(runner0, "sglang.launch_server")])
    for r in parsed:
        assert r["exit_code"] == 0, r["stderr"]
    for rank, r in zip((0, 1, 0), parsed):
        a = r["args"]
        assert (a["nnodes"], a["node_rank"], a["dist_init_addr"]) == (2, rank, ADDR)
        assert (a["tp_size"], a["ep_size"], a["mem_fraction_static"]) == (16, 2, 0.85)
    # what the runner launches on node 0 means the same as the plan's rank 0
    assert parsed[2]["args"] == parsed[0]["args"]


@pytest.mark.parametrize("device", ["cuda", "cpu"])
def test_vllm_plan_per_node(tmp_path, device):
    preset, config = get_preset("Qwen3-235B"), Config(16, 2, nodes=2)
    opts = _opts("vllm", device=device)
    plan = launch_plan(preset, config, opts, NODES, ADDR, port=30000, profile_dirs={1: tmp_path / "n1"})
    r0, r1 = plan[0].command, plan[1].command
    for c, rank in ((r0, 0), (r1, 1)):
        assert (_value(c, "--nnodes"), _value(c, "--node-rank")) == ("2", str(rank))
        assert (_value(c, "--master-addr"), _value(c, "--master-port")) == split_addr(ADDR)[:1] + ("29600",)
        assert _value(c, "--tensor-parallel-size") == "16" and "--enable-expert-parallel" in c
    assert "--headless" not in r0 and "--headless" in r1  # rank 1: workers only, no API server
    assert r1[1:4] == ["-m", "vllm.entrypoints.cli.main", "serve"]  # --headless is a `vllm serve` flag
    assert json.loads(_value(r1, "--profiler-config"))["torch_profiler_dir"] == str((tmp_path / "n1").resolve())
    assert "--profiler-config" not in r0  # rank 0's profiler dir is the runner's (its attempt folder)
    assert plan[0].env["VLLM_SERVER_DEV_MODE"] == "1" and plan[1].env["NCCL_DEBUG"] == "INFO"


@pytest.mark.engine
def test_vllm_parser_reads_the_per_node_commands():
    """vLLM 0.32's own parser (the one `vllm serve` and the OpenAI server module share)."""
    preset, config = get_preset("Qwen3-235B"), Config(4, 1, nodes=2)
    opts = _opts("vllm", device="cpu")
    plan = launch_plan(preset, config, opts, NODES, ADDR, port=30000)
    runner0 = _runner_rank0(preset, config, opts, ADDR)
    argvs = [_after(plan[0].command, "vllm.entrypoints.openai.api_server"), _after(plan[1].command, "serve"),
             _after(runner0, "vllm.entrypoints.openai.api_server")]
    parsed = vllm_parse(argvs)
    for rank, headless, r in zip((0, 1, 0), (False, True, False), parsed):
        assert r["exit_code"] == 0
        a = r["args"]
        assert (a["nnodes"], a["node_rank"], a["master_addr"], a["master_port"]) == (2, rank, "10.1.2.3", 29600)
        assert a["headless"] is headless and a["tensor_parallel_size"] == 4
    assert parsed[2]["args"] == parsed[0]["args"]


def test_plan_needs_enough_nodes_and_an_address():
    preset, opts = get_preset("Qwen3-235B"), _opts("sglang")
    with pytest.raises(ValueError, match="needs 2 nodes"):
        launch_plan(preset, Config(16, nodes=2), opts, ["a"], ADDR, port=1)
    with pytest.raises(ValueError, match="HOST:PORT"):
        launch_plan(preset, Config(16, nodes=2), opts, NODES, "nohost", port=1)
    with pytest.raises(ValueError, match="not multi-node"):
        launch_plan(preset, Config(8), opts, NODES, ADDR, port=1)


def test_rank0_publishes_the_address_and_passes_it_to_moetrace_run(tmp_path, monkeypatch):
    monkeypatch.setenv("MOETRACE_DIST_HOST", "10.9.8.7")
    job = {"jobdir": str(tmp_path / "job"), "engine": "sglang", "nnodes": 2, "results": str(tmp_path / "r"),
           "model": "M", "config": "TP16_N2_auto"}
    got = {}

    def run_rank0(extra):
        got["extra"] = extra
        got["addr"] = (tmp_path / "job" / "dist_init_addr").read_text()
        assert not (tmp_path / "job" / "done").exists()
        return 0

    assert node_main(0, job, run_rank0, log=lambda s: None) == 0
    host, port = split_addr(got["addr"])
    assert host == "10.9.8.7" and port > 0
    assert got["extra"] == [f"--engine-arg=--dist-init-addr", f"--engine-arg={got['addr']}"]
    assert (tmp_path / "job" / "done").exists()  # the other ranks stop their engines


# ----------------------------------------------------------------------------- through Slurm

FAKE_ENGINE = """#!{python}
# Stand-in engine: writes down its argv and environment, then waits to be stopped.
import json, os, signal, sys, time
if len(sys.argv) > 1 and sys.argv[1] == "-c":
    sys.exit(0)  # moetrace's "is the engine installed" probe
out = os.environ["FAKE_ENGINE_OUT"]
keep = ("SGLANG_", "VLLM_", "NCCL_", "SLURM_PROCID", "SLURM_JOB_ID")
info = {{"argv": sys.argv[1:], "env": {{k: v for k, v in os.environ.items() if k.startswith(keep)}},
        "pid": os.getpid()}}
with open(os.path.join(out, "rank%s-%d.json" % (os.environ.get("SLURM_PROCID", "x"), os.getpid())), "w") as f:
    json.dump(info, f)
signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
while True:
    time.sleep(1)
"""


@pytest.mark.slurm
@pytest.mark.parametrize("engine", ["sglang", "vllm"])
def test_a_two_node_job_starts_one_engine_per_rank(slurm_cluster, tmp_path, monkeypatch, engine):
    from moetrace.executors.slurm import SlurmExecutor
    from moetrace.results.store import ResultsStore
    from moetrace.sweep import Job, run_sweep

    fake = tmp_path / "fake-python"
    fake.write_text(FAKE_ENGINE.format(python=sys.executable))
    fake.chmod(0o755)
    seen = tmp_path / "seen"
    seen.mkdir()
    monkeypatch.setenv("FAKE_ENGINE_OUT", str(seen))  # sbatch passes the driver's environment on
    results = tmp_path / "results"
    store = ResultsStore(results)
    opts = RunOptions(engine=engine, device="cpu", engine_python=str(fake), launch_timeout_s=8, profile=True,
                      warmup=False, engine_env=(("NCCL_DEBUG", "INFO"),))
    job = Job(get_preset("Qwen3-235B"), Config(2, 1, nodes=2), index=1, total=1)
    out = (tmp_path / "driver.txt").open("w")
    ex = SlurmExecutor(gpus_per_node=0, time_min=5, poll_s=1, ranks_on_one_node=True, out=out)
    outcome = run_sweep([job], opts, store, executor=ex, out=out)

    (sid,) = registry(results)
    jobdir = results / "slurm" / "jobs" / sid
    addr = (jobdir / "dist_init_addr").read_text()
    got = {}
    for f in seen.glob("rank*.json"):
        info = json.loads(f.read_text())
        got[int(info["env"]["SLURM_PROCID"])] = info
    assert sorted(got) == [0, 1], list(seen.iterdir())
    a0, a1 = got[0]["argv"], got[1]["argv"]
    for argv, rank in ((a0, 0), (a1, 1)):
        assert (_value(argv, "--nnodes"), _value(argv, "--node-rank")) == ("2", str(rank))
        if engine == "sglang":
            assert _value(argv, "--dist-init-addr") == addr
        else:
            assert f"{_value(argv, '--master-addr')}:{_value(argv, '--master-port')}" == addr
        assert got[rank]["env"]["NCCL_DEBUG"] == "INFO"
    if engine == "vllm":
        assert "--headless" in a1 and "--headless" not in a0 and a1[:3] == ["-m", "vllm.entrypoints.cli.main", "serve"]
        assert json.loads(_value(a1, "--profiler-config"))["torch_profiler_dir"] == \
            str((jobdir / "node1" / "profiler_raw").resolve())
    else:
        assert got[1]["env"]["SGLANG_TORCH_PROFILER_DIR"] == str((jobdir / "node1" / "profiler_raw").resolve())
    plan1 = json.loads((jobdir / "node1" / "launch.json").read_text())
    assert plan1["rank"] == 1 and plan1["serves_http"] is False and plan1["command"][1:] == a1

    # rank 0 is the ordinary `moetrace run`: it launched, waited for readiness (the stand-in never
    # serves), recorded; then rank 1 stopped its engine
    (rec,) = outcome.records
    assert rec["error"]["type"] == "Timeout" and rec["engine"]["command"][1:] == a0
    assert registry(results)[sid]["status"] == "finished" and registry(results)[sid]["state"] == "COMPLETED"
    left = [p for p in psutil.process_iter(["cmdline"]) if str(fake) in " ".join(p.info["cmdline"] or [])]
    assert not left, left


def test_balanced_routing_reaches_every_node():
    """--routing balanced sets the engine's simulator on every node (Engine.launch_environment, the one merge the
    attempt's launch and the dry run use too); the user's --engine-env stays last."""
    config = Config(16, 2, nodes=2)
    for engine, var in (("sglang", "SGLANG_SIMULATE_UNIFORM_EXPERTS"), ("vllm", "VLLM_MOE_ROUTING_SIMULATION_STRATEGY")):
        plan = launch_plan(get_preset("Qwen3-235B"), config, _opts(engine, routing="balanced"), NODES, ADDR, port=30000)
        assert all(var in p.env and p.env["NCCL_DEBUG"] == "INFO" for p in plan), [p.env for p in plan]
        plan = launch_plan(get_preset("Qwen3-235B"), config, _opts(engine), NODES, ADDR, port=30000)
        assert not any(var in p.env for p in plan)
