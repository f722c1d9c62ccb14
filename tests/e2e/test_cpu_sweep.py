"""End to end, for real: the `cpu_sweep` fixture (tests/conftest.py) drove the real
vLLM CPU server through the real CLI. These tests check what it left behind against
the spec's rules."""

from __future__ import annotations

import gzip
import json
import re

import pytest

from moetrace.report.tables import SPEC_COLUMNS

pytestmark = pytest.mark.engine

Q, D = "Qwen3-235B-tiny", "DeepSeek-V3.1-tiny"
SUCCESS_KEYS = {f"{m}::{c}" for m in (Q, D) for c in ("TP1_auto", "TP2_auto")}


def _views(run):
    return (json.loads((run.results / "success_results.json").read_text()),
            json.loads((run.results / "failure_results.json").read_text()))


def _records(run):
    return [json.loads(p.read_text()) for p in sorted((run.results / "records").glob("*.json"))]


def _record(run, key):
    """The record behind a success entry (the last one written for that model and config)."""
    return [r for r in _records(run) if r["key"] == key and r["status"] == "success"][-1]


def test_successes_have_the_spec_shape_and_real_numbers(cpu_sweep):
    success, _ = _views(cpu_sweep)
    assert set(success) == SUCCESS_KEYS, cpu_sweep.stdout
    for key, e in success.items():
        assert e["model"] + "::" + e["config"] == key
        assert (e["batch_size"], e["input_len"], e["output_len"]) == (1, 4096, 512)
        for k in ("latency_s", "input_throughput_tok_per_s", "output_throughput_tok_per_s", "itl_ms"):
            assert isinstance(e[k], float) and e[k] > 0 and round(e[k], 2) == e[k]
        if (e.get("delivery") or {}).get("bursty"):
            # the server held the stream back and sent it in a burst (seen with TP2 on 2 cores: both
            # workers spin on the cores, the API server waits): the headline is the server's own timing, the
            # client's delivery figures beside it (measure/metrics.py, settle_headline)
            assert e["headline"] == "engine" and e["itl_ms"] == e["server_itl_ms"] > 0, e
            assert e["client"]["itl_ms"] > 0 and e["ttft_ms"] / 1000 < e["latency_s"]
        else:
            assert e["headline"] == "client" and e["ttft_ms"] / 1000 < e["latency_s"]
            assert e["itl_p50_ms"] <= e["itl_p99_ms"]
        assert e["output_tokens"] == 512


def test_traces_of_both_stages_are_linked_and_hold_only_their_stage(cpu_sweep):
    """The extend trace holds prefill steps only. The decode trace holds decode steps; where its window was
    armed before its request (vLLM adapter, _decode_armed: a retry, or a stream that arrived in one burst on
    a busy host, as in CI) it also holds that request's prefill steps, all before its first decode step, and
    the record counts them (breakdown_by_rank's other_stage_steps) instead of hiding them."""
    success, _ = _views(cpu_sweep)
    for key, e in success.items():
        rec = _record(cpu_sweep, key)
        for stage, want, other in (("extend", r"execute_context_[1-9]", r"generation_[1-9]"),
                                   ("decode", r"generation_[1-9]", r"execute_context_[1-9]")):
            path = cpu_sweep.results / e[f"profile_{stage}"]
            assert path.is_file() and f"__{stage}__rank0" in path.name
            steps = [ev["name"] for ev in json.loads(gzip.open(path).read())["traceEvents"]
                     if str(ev.get("name", "")).startswith("execute_context")]
            working = [s for s in steps if re.search(want, s) or re.search(other, s)]
            ours = [i for i, s in enumerate(working) if re.search(want, s) and not re.search(other, s)]
            foreign = [i for i, s in enumerate(working) if re.search(other, s)]
            assert ours, steps[:5]
            row = rec["profile"]["breakdown_by_rank"][stage][0]
            if stage == "extend":
                assert not foreign and row["other_stage_steps"] == 0, steps[:5]
            else:
                assert all(i < ours[0] for i in foreign), steps[:12]
                assert (row["other_stage_steps"] > 0) == bool(foreign), (row, steps[:12])


def test_backend_rejected_by_the_engine_is_unsupported_config(cpu_sweep):
    _, failure = _views(cpu_sweep)
    for m in (Q, D):
        f = failure[f"{m}::TP1_triton"]
        assert f["error_type"] == "UnsupportedConfig"
        assert "TRITON does not support" in f["error_message"] and "cpu" in f["error_message"]
        assert (cpu_sweep.results / f["log_path"]).is_file()


def test_real_startup_oom_after_success_keeps_the_success(cpu_sweep):
    success, failure = _views(cpu_sweep)
    f = failure[f"{Q}::TP1_auto"]
    assert f["error_type"] == "OOM"
    assert "memory" in f["error_message"].lower()
    assert f"{Q}::TP1_auto" in success
    assert "last attempt failed, earlier success kept" in cpu_sweep.outputs[3].stdout


def test_success_removed_the_earlier_oom_from_failures(cpu_sweep):
    _, failure = _views(cpu_sweep)
    assert f"{D}::TP1_auto" not in failure
    first = [r for r in _records(cpu_sweep) if r["key"] == f"{D}::TP1_auto"]
    assert [r["status"] for r in first] == ["failure", "success"]
    assert first[0]["error"]["type"] == "OOM"


def test_fallback_runs_only_after_its_primary_failed_and_both_are_recorded(cpu_sweep):
    recs = _records(cpu_sweep)
    primary, fallback = recs[7:9]
    assert (primary["key"], primary["role"], primary["error"]["type"]) == \
        (f"{Q}::TP1_triton", "primary", "UnsupportedConfig")
    assert (fallback["key"], fallback["role"], fallback["status"]) == (f"{Q}::TP1_auto", "fallback", "success")
    out = cpu_sweep.outputs[2].stdout
    assert out.index("TP1_triton): FAILED [UnsupportedConfig]") < out.index(f"{Q} (TP1_auto)")
    # in the sweep, whose configs have no fallback, nothing ran twice
    sweep_keys = [r["key"] for r in recs[1:7]]
    assert len(sweep_keys) == len(set(sweep_keys)) == 6


def test_every_attempt_is_recorded_with_its_command_versions_and_phases(cpu_sweep):
    recs = _records(cpu_sweep)
    assert len(recs) == 10  # 1 OOM + 2 models x 3 configs + a primary and its fallback + 1 OOM
    for r in recs:
        assert r["engine"]["name"] == "vllm" and r["engine"]["command"][:3][1:] == ["-m", "vllm.entrypoints.openai.api_server"]
        assert r["moetrace_version"] and r["host"]["hostname"]
        assert (cpu_sweep.results / r["attempt_dir"] / "server.log").is_file()
        assert r["phases"].get("stop_s") is not None and r["phases"].get("launch_s") is not None, r["phases"]
        assert r["engine"]["stop"]["survivors"] == [] and r["engine"]["stop"]["port_free"] is True
        assert r["engine"]["version"] == "0.32.0"  # failures too: asked before the launch (the OOMs, triton)
        if r["status"] == "success":
            assert len(r["runs"][0]["token_times"][0]) == 512
            assert r["phases"]["launch_s"] > 0 and r["phases"]["measure_s"] > 0


def test_results_rebuild_reproduces_the_views(cpu_sweep, tmp_path):
    import shutil
    from tests.conftest import moetrace
    copy = tmp_path / "copy"
    shutil.copytree(cpu_sweep.results, copy)
    before = [(copy / n).read_text() for n in ("success_results.json", "failure_results.json")]
    (copy / "success_results.json").unlink()
    out = moetrace("results", "rebuild", "--results", str(copy), check=True)
    assert "rebuilt" in out.stdout
    assert [(copy / n).read_text() for n in ("success_results.json", "failure_results.json")] == before


def test_tables_printed(cpu_sweep):
    out = cpu_sweep.outputs[1].stdout
    header = "| " + " | ".join(SPEC_COLUMNS) + " |"  # then the --show columns asked for (breakdown)
    assert sum(line.startswith(header) for line in out.splitlines()) == 4  # one per successful config
    assert f"{Q} (TP1_auto)" in out and "## Failures" in out and "✓ Successful: 4" in out
    # the ITL may carry a mark (†: the stream came in bursts, as on a loaded host; a note says so below)
    assert re.search(r"\| 1 \| 4096 \| \d+\.\d\d \| \d+\.\d\d \| \d+\.\d\d \| \d+\.\d\d(?: †)? \| \[trace\]\(", out)


def test_no_engine_process_is_left_behind(cpu_sweep):
    assert not list((cpu_sweep.results / "running").iterdir())
    from tests.conftest import engine_processes
    assert engine_processes(cpu_sweep.tiny_dir) == []


def test_each_swept_success_says_why_it_has_no_expert_load_and_where_its_time_went(cpu_sweep):
    swept = [r for r in _records(cpu_sweep) if r["status"] == "success" and r["options"].get("expert_load")]
    assert len(swept) >= 4, cpu_sweep.stdout
    for r in swept:
        # vLLM's CPU build refuses --enable-return-routed-experts (it needs Model Runner V2, which needs Triton)
        assert r["expert_load"]["available"] is False and "Model Runner V2" in r["expert_load"]["reason"]
        # no recorder, so no second launch for it (attempt.launch.launch_options), and the progress lines say so
        assert not (cpu_sweep.results / r["attempt_dir"] / "server-expert-load.log").exists()
        assert f"{r['model']} {r['config']}: expert load: not exposed by the engine" in cpu_sweep.outputs[1].stderr
        # the floor decomposition of issue 14: measured ITL = floor + kernels above it + idle + host/other
        d = r["profile"]["decomposition"]
        assert d, r["config"]
