"""Every CLI error path: one line naming the problem, exit code 2, no traceback.
Plus the commands that need no engine (models, dry-run, plan, summary)."""

from __future__ import annotations

import json
import sys
from pathlib import Path


from tests.conftest import moetrace

ROOT = Path(__file__).resolve().parents[1]


def _err(cp):
    assert cp.returncode == 2, (cp.returncode, cp.stdout, cp.stderr)
    assert "Traceback" not in cp.stderr
    lines = [line for line in cp.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, cp.stderr
    return lines[0]


def test_unknown_model(tmp_path):
    assert "unknown model 'NoSuch'" in _err(moetrace("run", "NoSuch", "-r", str(tmp_path), "--dry-run"))


def test_malformed_config_name(tmp_path):
    assert "config name 'EP2_TP8'" in _err(moetrace("run", "GLM-4.6", "-c", "EP2_TP8", "-r", str(tmp_path)))


def test_ep_must_divide_tp(tmp_path):
    assert "ep=3 must divide tp=8" in _err(moetrace("run", "GLM-4.6", "-c", "TP8_EP3_auto", "-r", str(tmp_path)))


def test_backend_the_engine_does_not_accept(tmp_path):
    line = _err(moetrace("run", "GLM-4.6", "-c", "TP8_EP2_tritonx", "-r", str(tmp_path), "--engine", "sglang"))
    assert "'tritonx' is not accepted by sglang; valid: auto" in line


def test_unwritable_results_directory(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    line = _err(moetrace("run", "GLM-4.6", "-r", str(blocker / "results"), "--dry-run"))
    assert "is not writable" in line and str(blocker) in line


def test_missing_engine(tmp_path):
    line = _err(moetrace("run", "GLM-4.6", "-r", str(tmp_path), "--engine", "sglang",
                         "--engine-python", sys.executable, "--no-skip-predicted"))
    assert "engine 'sglang' is not installed" in line


def test_engine_python_that_does_not_exist(tmp_path):
    line = _err(moetrace("run", "GLM-4.6", "-r", str(tmp_path), "--engine-python", "/no/such/python"))
    assert "/no/such/python" in line


def test_bad_numbers(tmp_path):
    assert "input length must be at least 1" in _err(moetrace("run", "GLM-4.6", "--input-len", "0", "-r", str(tmp_path)))
    assert "KEY=VALUE" in _err(moetrace("run", "GLM-4.6", "--engine-env", "nope", "-r", str(tmp_path)))


def test_malformed_configs_list_in_a_script(tmp_path):
    script = tmp_path / "trace_x.py"
    script.write_text(f"import sys; sys.path.insert(0, {str(ROOT / 'src')!r})\n"
                      "from moetrace.cli import script_main\n"
                      "script_main('GLM-4.6', [(8, 3, ['auto'])])\n")
    cp = __import__("subprocess").run([sys.executable, str(script), "--dry-run"], capture_output=True, text=True)
    assert cp.returncode == 2 and "ep=3 must divide tp=8" in cp.stderr and "Traceback" not in cp.stderr


def test_spec_scripts_dry_run_print_every_config(tmp_path):
    import subprocess
    for script, n in (("trace_qwen3_235b.py", 4), ("trace_minimax_m2.py", 6), ("trace_glm_46.py", 2)):
        cp = subprocess.run([sys.executable, str(ROOT / "scripts" / script), "--dry-run", "--engine", "sglang",
                             "-r", str(tmp_path)], capture_output=True, text=True)
        assert cp.returncode == 0, cp.stderr
        assert cp.stdout.count("-m sglang.launch_server") == n


def test_dry_run_shows_plan_and_exact_commands(tmp_path):
    cp = moetrace("run", "DeepSeek-V3.1", "--dry-run", "--engine", "sglang", "--gpu", "h200", "-r", str(tmp_path))
    assert cp.returncode == 0, cp.stderr
    assert "[1/4] DeepSeek-V3.1 TP4_auto  plan: will_not_fit" in cp.stdout
    assert "--tp 8 --ep 2 --moe-runner-backend triton" in cp.stdout
    assert "'{\"enable_multithread_load\": true}'" in cp.stdout
    assert not list((tmp_path / "records").glob("*.json"))


def test_dry_run_for_a_gpu_node_shows_the_recorder_launch_it_will_make(tmp_path):
    """Planned for a GPU (--gpu) from this CPU machine: the expert recorder's second launch is the GPU node's,
    vLLM's with --enable-return-routed-experts (its CPU build has none, so a CPU dry run shows none)."""
    cp = moetrace("run", "Qwen3-235B", "-c", "TP8_EP2_auto", "--dry-run", "--engine", "vllm", "--gpu", "h200",
                  "--expert-load", "-r", str(tmp_path))
    assert cp.returncode == 0, cp.stderr
    (line,) = [ln for ln in cp.stdout.splitlines() if "expert load (a second launch, recorder on)" in ln]
    assert "--enable-return-routed-experts" in line


def test_dry_run_creates_nothing_on_disk(tmp_path):
    results = tmp_path / "results"
    cp = moetrace("run", "DeepSeek-V3.1", "--dry-run", "--engine", "sglang", "--gpu", "h200", "-r", str(results),
                  "--skip-succeeded")
    assert cp.returncode == 0, cp.stderr
    assert "launch_server" in cp.stdout
    assert not results.exists() and list(tmp_path.iterdir()) == []  # no results dir, records, attempts, lock


def test_models_lists_presets():
    cp = moetrace("models", check=True)
    assert "| Kimi-K2-Thinking | moonshotai/Kimi-K2-Thinking | 1026.4B |" in cp.stdout


def test_plan_matches_the_spec_notes():
    cp = moetrace("plan", "--gpu", "h200", check=True)
    rows = {tuple(c.strip() for c in line.split("|")[1:3]): line for line in cp.stdout.splitlines()
            if line.startswith("| ") and "_" in line}
    for model in ("DeepSeek-V3.1", "Qwen3-Coder-480B"):
        assert "will not fit" in rows[(model, "TP4_auto")]
    for model in ("Qwen3-235B", "Qwen3-Coder-480B", "DeepSeek-V3.1", "MiniMax-M2", "Kimi-K2-Thinking", "GLM-4.6"):
        assert "| fits |" in rows[(model, "TP8_EP2_auto")]


def test_predicted_oom_is_recorded_without_launching(tmp_path):
    # The engine's Python has no vLLM: launching anything would fail. Nothing is launched.
    cp = moetrace("sweep", "DeepSeek-V3.1", "-c", "TP4_auto", "--gpu", "h200", "-r", str(tmp_path / "p"),
                  "--engine", "vllm", "--engine-python", sys.executable)
    assert cp.returncode == 0, cp.stderr
    failure = json.loads((tmp_path / "p" / "failure_results.json").read_text())
    f = failure["DeepSeek-V3.1::TP4_auto"]
    assert f["error_type"] == "OOM" and f["predicted"] is True and "GiB" in f["error_message"]
    assert "predicted by the planner, not launched" in cp.stdout
    assert not list((tmp_path / "p" / "attempts").glob("*/server.log"))


def test_summary_and_table_on_empty_results(tmp_path):
    assert "✓ Successful: 0" in moetrace("summary", "-r", str(tmp_path), check=True).stdout
    assert "no successful results" in moetrace("table", "-r", str(tmp_path), check=True).stdout
    assert "not a results directory" in _err(moetrace("summary", "-r", str(tmp_path / "nope")))


def test_readers_write_nothing_into_the_spec_files_directory(tmp_path):
    """A results directory of the original scripts (only the two JSON files) is read as is."""
    (tmp_path / "success_results.json").write_text(json.dumps({"Qwen3-235B::TP8_EP2_auto": {
        "model": "Qwen3-235B", "config": "TP8_EP2_auto", "batch_size": 1, "input_len": 4096, "output_len": 512,
        "latency_s": 7.59, "input_throughput_tok_per_s": 15933.87, "output_throughput_tok_per_s": 69.81,
        "itl_ms": 14.32, "last_updated": "2025-11-27T23:45:12"}}))
    before = sorted(p.name for p in tmp_path.iterdir())
    assert "| 1 | 4096 | 7.59 | 15933.87 | 69.81 | 14.32 |" in moetrace("table", "-r", str(tmp_path), check=True).stdout
    moetrace("summary", "-r", str(tmp_path), check=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_analyze_command_on_real_gpu_traces_and_a_corrupt_file(tmp_path):
    gpu = ROOT / "tests" / "data" / "traces" / "gpu" / "tp2_sglang"
    cp = moetrace("analyze", *map(str, sorted(gpu.glob("*DECODE*"))), check=True)
    assert "holds the others back" in cp.stdout and "all-reduce" in cp.stdout
    bad = tmp_path / "x.trace.json.gz"
    bad.write_bytes(b"\x1f\x8b\x08\x00garbage")
    line = _err(moetrace("analyze", str(bad)))
    assert str(bad.name) in line


def test_dry_run_for_a_gpu_prints_the_gpu_nodes_command(tmp_path, monkeypatch):
    """Planned for an H200 on a host without nvidia-smi: the command the GPU node will run, not --device cpu."""
    monkeypatch.setenv("PATH", str(tmp_path))  # no nvidia-smi here, whatever this host has
    cp = moetrace("run", "GLM-4.6", "--dry-run", "--engine", "sglang", "--gpu", "h200", "-r", str(tmp_path / "r"))
    assert cp.returncode == 0, cp.stderr
    assert "launch_server" in cp.stdout and "--device cpu" not in cp.stdout
    cp = moetrace("run", "GLM-4.6", "--dry-run", "--engine", "sglang", "-r", str(tmp_path / "r"))
    assert "--device cpu" in cp.stdout  # no GPU to plan for and none here: the CPU build, as before


def test_mem_fraction_reaches_the_engine_and_the_plan(tmp_path):
    import shlex

    def dry_run(*extra):
        cp = moetrace("run", "Qwen3-Coder-480B", "-c", "TP8_EP2_auto", "--dry-run", "--gpu", "h200",
                      "-r", str(tmp_path / "r"), *extra)
        assert cp.returncode == 0, cp.stderr
        (cmd,) = [shlex.split(x) for x in cp.stdout.splitlines() if " -m " in x]
        return cp.stdout, cmd

    out, cmd = dry_run("--engine", "sglang", "--mem-fraction", "0.8")
    assert cmd[cmd.index("--mem-fraction-static") + 1] == "0.8" and "(--mem-fraction-static 0.800)" in out
    out, cmd = dry_run("--engine", "vllm", "--mem-fraction", "0.5")
    assert cmd[cmd.index("--gpu-memory-utilization") + 1] == "0.5" and "(--gpu-memory-utilization 0.500)" in out
    out, cmd = dry_run("--engine", "vllm", "--engine-arg=--gpu-memory-utilization=0.5")  # issue 11 §4
    assert "(--gpu-memory-utilization 0.500)" in out


def test_launches_in_the_dry_run_and_at_least_one(tmp_path):
    cp = moetrace("run", "Qwen3-235B", "-r", str(tmp_path), "--dry-run", "--launches", "3", "-c", "TP8_auto",
                  "--gpu", "h200", "--engine", "sglang")
    assert cp.returncode == 0 and "  measured 3 times, launched each time as: " in cp.stdout
    assert "--tp 8" in cp.stdout.split("measured 3 times")[1]
    cp = moetrace("run", "Qwen3-235B", "-r", str(tmp_path), "--dry-run", "--launches", "0")
    assert "--launches 0: at least one launch" in _err(cp)


def test_exit_code_3_when_a_config_failed_through_a_per_model_script(tmp_path):
    """cli.py's convention: 3 when an attempted config failed (recorded), for the scripts as for `run`
    (tests/test_base_url.py: `run` against a closed port)."""
    from tests.conftest import run_script
    cp = run_script("Qwen3-235B", [(8, 2, [(None, "auto", None, None)])], "--engine", "vllm", "--base-url",
                    "http://127.0.0.1:9", "-c", "TP8_EP2_auto", "--no-profile", "-r", str(tmp_path), timeout=300)
    assert cp.returncode == 3, cp.stderr
    f = json.loads((tmp_path / "failure_results.json").read_text())["Qwen3-235B::TP8_EP2_auto"]
    assert f["error_type"] == "LaunchError"


def test_which_failures_count_for_the_exit_code():
    from moetrace.results.record import Record
    from moetrace.sweep import job_failed
    ok, bad = Record.of({"status": "success"}), Record.of({"status": "failure", "error": {"type": "OOM"}})
    predicted = Record.of({"status": "failure", "error": {"type": "OOM", "predicted": True}})
    rescued = Record.of({"status": "success", "role": "fallback"})
    assert not job_failed([ok]) and job_failed([bad]) and job_failed([ok, bad])
    assert not job_failed([predicted])          # the planner's prediction, not launched (--skip-predicted)
    assert not job_failed([bad, rescued])       # the fallback got the numbers
