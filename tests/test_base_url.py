"""--base-url: measure a server someone else started, launching nothing. The server here is
a real local HTTP server replaying a stream recorded from vLLM (tests/data/streams/README.md)."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import moetrace
from tests.replay_server import Reply, ReplayServer

STREAMS = Path(__file__).resolve().parent / "data" / "streams"


def test_external_server_is_measured_and_recorded_as_external(tmp_path):
    body = (STREAMS / "vllm_cpu_completions_bs1.sse").read_bytes()  # 8 tokens
    with ReplayServer(Reply(body, chunk_delay_s=0.02)) as srv:  # paced as generated: one burst would fail (below)
        cp = moetrace("run", "Qwen3-235B", "-c", "TP8_EP2_auto", "--engine", "vllm", "--base-url", srv.url,
                      "--input-len", "8", "--output-len", "8", "--no-profile", "--no-warmup", "-r", str(tmp_path),
                      env={"GITHUB_STEP_SUMMARY": str(tmp_path / "summary.md")})
        posted = [json.loads(r) for r in srv.reply.requests if r]  # (a cache reset posts no body)
    assert cp.returncode == 0, cp.stderr
    (rec_path,) = (tmp_path / "records").glob("*.json")
    rec = json.loads(rec_path.read_text())
    assert rec["status"] == "success" and rec["engine"]["external"] is True and rec["engine"]["command"] is None
    assert rec["metrics"]["output_tokens"] == 8
    assert not (tmp_path / "running").exists() or not list((tmp_path / "running").iterdir())
    assert posted and posted[-1]["max_tokens"] == 8 and len(posted[-1]["prompt"]) == 8
    assert posted[-1]["ignore_eos"] is True and posted[-1]["stream"] is True
    # the spec's tables went to the GitHub step summary too
    summary = (tmp_path / "summary.md").read_text()
    assert "### Qwen3-235B" in summary and "| TP8_EP2_auto | 1 | 8 |" in summary and "✓ Successful: 1" in summary


def test_floors_and_efficiency_reach_records_and_tables(tmp_path):
    body = (STREAMS / "vllm_cpu_completions_bs1.sse").read_bytes()
    with ReplayServer(Reply(body, chunk_delay_s=0.02)) as srv:  # the recorded events, 20 ms apart
        moetrace("run", "Qwen3-235B", "-c", "TP8_EP2_auto", "--engine", "vllm", "--base-url", srv.url, "--gpu", "h200",
                 "--input-len", "8", "--output-len", "8", "--no-profile", "--no-warmup", "-r", str(tmp_path), check=True)
    # not the spec's workload (8 in, 8 out): its own key, never the spec's numbers
    e = json.loads((tmp_path / "success_results.json").read_text())["Qwen3-235B::TP8_EP2_auto::bs1_in8_out8"]
    assert e["itl_floor_ms"] > 0 and e["ttft_floor_ms"] > 0 and e["itl_ms"] > 0
    assert 0 < e["itl_efficiency"] < 1  # a replayed stream is far slower than an H200's floor
    rec = json.loads(next((tmp_path / "records").glob("*.json")).read_text())
    assert rec["plan"]["verdict"] == "fits" and rec["plan_check"] is None  # agrees: no contradiction noted
    out = moetrace("table", "--show", "efficiency", "-r", str(tmp_path), check=True).stdout
    # the row's efficiency cell (a note may follow the table: a loaded host can make the stream bursty)
    assert "ITL eff." in out and any(line.startswith("| TP8_EP2_auto") and "%" in line for line in out.splitlines())


def test_no_server_at_the_base_url_is_a_launch_error(tmp_path):
    cp = moetrace("run", "Qwen3-235B", "-c", "TP8_EP2_auto", "--engine", "vllm", "--base-url", "http://127.0.0.1:9",
                  "--no-profile", "-r", str(tmp_path))
    assert cp.returncode == 3, cp.stderr  # the config failed and was recorded (cli.py's exit codes)
    f = json.loads((tmp_path / "failure_results.json").read_text())["Qwen3-235B::TP8_EP2_auto"]
    assert f["error_type"] == "LaunchError" and "no ready server at http://127.0.0.1:9" in f["error_message"]


def test_plan_check_reports_accuracy_over_recorded_outcomes(tmp_path):
    moetrace("sweep", "DeepSeek-V3.1", "-c", "TP4_auto", "--gpu", "h200", "-r", str(tmp_path), "--engine", "vllm",
             check=True)
    cp = moetrace("plan", "--check", "-r", str(tmp_path), check=True)
    assert "Planner accuracy" in cp.stdout and "1 records" in cp.stdout


def test_a_matrix_against_one_external_server_is_refused(tmp_path):
    """One server, many labels: the preset's matrix (or several -c) against --base-url would
    record the same server's numbers under every config name. One line, exit 2, nothing sent."""
    body = (STREAMS / "vllm_cpu_completions_bs1.sse").read_bytes()
    with ReplayServer(Reply(body)) as srv:
        for extra in ([], ["-c", "TP8_EP2_auto", "-c", "TP4_auto"]):
            cp = moetrace("run", "Qwen3-235B", *extra, "--engine", "vllm", "--base-url", srv.url, "--input-len", "8",
                          "--output-len", "8", "--no-profile", "--no-warmup", "-r", str(tmp_path))
            assert cp.returncode == 2, cp.stderr
            (line,) = cp.stderr.strip().splitlines()
            assert "--base-url measures one server" in line and "TP8_EP2_auto" in line
        cp = moetrace("sweep", "Qwen3-235B", "DeepSeek-V3.1", "-c", "TP8_EP2_auto", "--engine", "vllm",
                      "--base-url", srv.url, "--no-profile", "-r", str(tmp_path))
        assert cp.returncode == 2 and "not a matrix" in cp.stderr
        assert srv.reply.requests == []
    assert not (tmp_path / "records").exists() or not list((tmp_path / "records").iterdir())


def test_the_record_says_moetrace_did_not_launch_the_engine(tmp_path):
    body = (STREAMS / "vllm_cpu_completions_bs1.sse").read_bytes()
    with ReplayServer(Reply(body, chunk_delay_s=0.02)) as srv:
        moetrace("run", "Qwen3-235B", "-c", "TP8_EP2_auto", "--engine", "vllm", "--base-url", srv.url,
                 "--input-len", "8", "--output-len", "8", "--no-profile", "--no-warmup", "-r", str(tmp_path), check=True)
    rec = json.loads(next((tmp_path / "records").glob("*.json")).read_text())
    assert rec["engine"]["launched_by_moetrace"] is False and rec["engine"]["command"] is None


def test_each_attempt_sends_its_own_prompts_and_a_cache_hit_is_a_failure(tmp_path):
    """Two attempts against one external server: their prompts differ (a nonce per attempt,
    recorded). A server reporting cached prompt tokens (a real vLLM stream of a repeated
    prompt, 384 of 512 cached) makes the attempt a BenchmarkFailure, not a fast success."""
    first = (STREAMS / "vllm_cpu_cached_first.sse").read_bytes()
    args = ("run", "Qwen3-235B", "-c", "TP8_EP2_auto", "--engine", "vllm", "--input-len", "512", "--output-len", "16",
            "--no-profile", "--no-warmup", "-r", str(tmp_path))
    with ReplayServer(Reply(first, chunk_delay_s=0.02)) as srv:
        moetrace(*args, "--base-url", srv.url, check=True)
        moetrace(*args, "--base-url", srv.url, check=True)
        prompts = [json.loads(r)["prompt"] for r in srv.reply.requests if r]
    assert len(prompts) == 2 and prompts[0] != prompts[1] and len(prompts[0]) == 512
    recs = [json.loads(p.read_text()) for p in sorted((tmp_path / "records").glob("*.json"))]
    assert [r["status"] for r in recs] == ["success", "success"]
    assert recs[0]["workload"]["prompt_nonce"] != recs[1]["workload"]["prompt_nonce"]
    assert all(r["runs"][0]["metrics"]["cached_prompt_tokens"] == 0 for r in recs)
    with ReplayServer(Reply((STREAMS / "vllm_cpu_cached_again.sse").read_bytes(), chunk_delay_s=0.02)) as srv:
        assert moetrace(*args, "--base-url", srv.url).returncode == 3  # failed, recorded
    f = json.loads((tmp_path / "failure_results.json").read_text())["Qwen3-235B::TP8_EP2_auto::bs1_in512_out16"]
    assert f["error_type"] == "BenchmarkFailure" and "384 prompt tokens were served from the engine's prefix cache" \
        in f["error_message"]


def test_a_stream_in_one_burst_without_the_engines_timing_is_a_measurement_failure(tmp_path):
    """The whole recorded stream at once (a loaded host's delivery), and no /metrics page to take the
    engine's own timing from: no trustworthy ITL exists, so no success is recorded (measure/metrics.py)."""
    body = (STREAMS / "vllm_cpu_completions_bs1.sse").read_bytes()
    with ReplayServer(Reply(body)) as srv:
        cp = moetrace("run", "Qwen3-235B", "-c", "TP8_EP2_auto", "--engine", "vllm", "--base-url", srv.url,
                      "--input-len", "8", "--output-len", "8", "--no-profile", "--no-warmup", "-r", str(tmp_path))
    assert cp.returncode == 3, cp.stderr
    assert not (tmp_path / "success_results.json").exists() or "Qwen3" not in (tmp_path / "success_results.json").read_text()
    f = json.loads((tmp_path / "failure_results.json").read_text())["Qwen3-235B::TP8_EP2_auto::bs1_in8_out8"]
    assert f["error_type"] == "BenchmarkFailure" and "arrived in bursts" in f["error_message"]
    assert "reported no timing of its own" in f["error_message"]
