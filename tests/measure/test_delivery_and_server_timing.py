"""Bursts in a stream are flagged, and the server's own timing is read from its /metrics page.

Streams here are token stamps as the client records them; the burst is the one seen on a
loaded host (first token at 0.60 s, 1.98 s of nothing, then 510 tokens within 7 ms). The
metrics pages are recorded from a real vLLM CPU server (tests/data/streams/README.md)."""

from __future__ import annotations

from pathlib import Path

import pytest

from moetrace.measure.metrics import RequestTrace, aggregate_runs, delivery, run_metrics
from moetrace.measure.server_metrics import histogram, server_timing
from moetrace.engines.sglang import SGLang
from moetrace.engines.vllm import VLLM

STREAMS = Path(__file__).resolve().parents[1] / "data" / "streams"


def _burst() -> RequestTrace:
    """First token at 0.60 s, the second 1.98 s later, then 510 tokens within 7 ms."""
    times = [0.60, 2.58] + [2.58 + (i + 1) * 7e-3 / 510 for i in range(510)]
    return RequestTrace(times, "length")


def _steady(n: int = 512, itl: float = 2.9e-3) -> RequestTrace:
    """Gaps of ``itl`` +-30% (a deterministic jitter)."""
    times = [0.57]
    for i in range(n - 1):
        times.append(times[-1] + itl * (1 + 0.3 * ((i * 7919) % 13 - 6) / 6))
    return RequestTrace(times, "length")


def test_a_burst_stream_is_flagged_with_its_figures():
    d = delivery([_burst()])
    assert d["bursty"] is True
    assert d["burst_share"] > 0.99  # 510 of 511 gaps are 14 us apart
    assert d["longest_stall_ms"] == pytest.approx(1980, abs=1)
    assert d["stall_ratio"] > 1000
    m = run_metrics([_burst()], input_len=4096, output_len=512)
    assert m["delivery"] == d and m["itl_p50_ms"] < 0.05  # the percentile that misleads, kept, and flagged


def test_a_steady_stream_is_not_flagged():
    d = delivery([_steady()])
    assert d["bursty"] is False and d["burst_share"] == 0 and d["stall_ratio"] < 3


def test_one_long_stall_in_a_steady_stream_is_flagged():
    t = _steady().token_times
    stalled = RequestTrace(t[:300] + [x + 0.5 for x in t[300:]], "length")  # 500 ms of nothing mid-stream
    d = delivery([stalled])
    assert d["bursty"] is True and d["burst_share"] == 0 and d["longest_stall_ms"] > 500


def test_repeats_keep_the_worst_delivery_and_count_bursty_runs():
    runs = [run_metrics([tr], input_len=4096, output_len=512) for tr in (_steady(), _burst(), _steady())]
    agg = aggregate_runs(runs)
    assert agg["delivery"]["bursty"] is True and agg["delivery"]["bursty_runs"] == 1 and agg["delivery"]["runs"] == 3
    assert agg["delivery"]["longest_stall_ms"] == pytest.approx(1980, abs=1)


def test_histogram_of_a_recorded_vllm_metrics_page():
    text = (STREAMS / "vllm_cpu_metrics.txt").read_text()
    total, count, buckets = histogram(text, "vllm:inter_token_latency_seconds")
    assert count == 21 and total == pytest.approx(0.282642148999912)
    assert buckets[-1] == (float("inf"), 21.0)
    assert histogram(text, "vllm:time_to_first_token_seconds")[1] == 3
    assert histogram(text, "vllm:no_such_histogram") is None


def test_server_timing_is_the_mean_of_the_histograms_change_over_the_run():
    before = (STREAMS / "vllm_cpu_metrics_before.txt").read_text()
    after = (STREAMS / "vllm_cpu_metrics_after.txt").read_text()
    eng = VLLM()
    t = server_timing(before, after, itl=eng.itl_metrics, ttft=eng.ttft_metrics)
    b_itl, a_itl = histogram(before, eng.itl_metrics[0]), histogram(after, eng.itl_metrics[0])
    assert a_itl[1] - b_itl[1] == 15  # one request of 16 tokens: 15 gaps
    assert t["server_itl_ms"] == pytest.approx((a_itl[0] - b_itl[0]) / 15 * 1000)
    assert t["server_ttft_ms"] > 0 and t["server_timing"] == {
        "available": True, "itl_metric": "vllm:inter_token_latency_seconds", "itl_samples": 15,
        "ttft_metric": "vllm:time_to_first_token_seconds", "ttft_samples": 1}


def test_no_metrics_page_or_no_histogram_says_so():
    assert server_timing(None, None, itl=VLLM.itl_metrics, ttft=VLLM.ttft_metrics) == \
        {"server_timing": {"available": False, "reason": "no /metrics page"}}
    page = (STREAMS / "vllm_cpu_metrics.txt").read_text()  # a vLLM page read with SGLang's names
    t = server_timing(page, page, itl=SGLang.itl_metrics, ttft=SGLang.ttft_metrics)
    assert "server_itl_ms" not in t and t["server_timing"]["available"] is False


def test_older_metric_name_is_used_when_the_newer_is_absent():
    page = ('# TYPE sglang:time_per_output_token_seconds histogram\n'
            'sglang:time_per_output_token_seconds_sum{model_name="m"} {s}\n'
            'sglang:time_per_output_token_seconds_count{model_name="m"} {c}\n')
    before = page.replace("{s}", "1.0").replace("{c}", "100")
    after = page.replace("{s}", "2.5").replace("{c}", "200")
    t = server_timing(before, after, itl=SGLang.itl_metrics, ttft=SGLang.ttft_metrics)
    assert t["server_itl_ms"] == pytest.approx(15.0)
    assert t["server_timing"]["itl_metric"] == "sglang:time_per_output_token_seconds"
