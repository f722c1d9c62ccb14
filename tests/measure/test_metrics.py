"""Metrics are pure functions of token arrival stamps."""

from __future__ import annotations

import pytest

from moetrace.measure.metrics import RequestTrace, aggregate_runs, by_launch, run_metrics
from moetrace.stats import percentile
from moetrace.measure.prompts import random_prompts
from moetrace.errors import BenchmarkFailure


def _trace(ttft: float, itl: float, n: int) -> RequestTrace:
    return RequestTrace([ttft + i * itl for i in range(n)], "length")


def test_spec_seed_example_is_reproduced():
    # The spec's example row: 4096 in, 512 out, latency 7.59 s, 15933.87 / 69.81 tok/s.
    ttft = 4096 / 15933.87
    itl = (7.59 - ttft) / 511
    m = run_metrics([_trace(ttft, itl, 512)], input_len=4096, output_len=512)
    assert round(m["latency_s"], 2) == 7.59
    assert round(m["input_throughput_tok_per_s"], 2) == 15933.87
    # output throughput as SGLang: B * output_len / (latency - TTFT)
    assert m["output_throughput_tok_per_s"] == pytest.approx(512 / (7.59 - ttft))
    # ITL is the measured mean gap (not 1000/throughput)
    assert m["itl_ms"] == pytest.approx(itl * 1000)
    assert m["itl_p50_ms"] == pytest.approx(itl * 1000)


def test_batch_uses_last_first_token_and_pooled_gaps():
    a = RequestTrace([0.10, 0.11, 0.12], "length")
    b = RequestTrace([0.12, 0.15, 0.18], "length")
    m = run_metrics([a, b], input_len=100, output_len=3)
    assert m["ttft_ms"] == pytest.approx(120)
    assert m["latency_s"] == pytest.approx(0.18)
    assert m["input_throughput_tok_per_s"] == pytest.approx(2 * 100 / 0.12)
    assert m["itl_ms"] == pytest.approx((10 + 10 + 30 + 30) / 4)


def test_short_stream_is_a_failure_not_a_number():
    with pytest.raises(BenchmarkFailure, match="request 1: stream ended after 2 of 3 tokens"):
        run_metrics([_trace(0.1, 0.01, 3), _trace(0.1, 0.01, 2)], input_len=10, output_len=3)


def test_percentile_matches_numpy_linear():
    v = sorted([1.0, 2.0, 3.0, 4.0, 10.0])
    assert percentile(v, 50) == 3.0 and percentile(v, 90) == pytest.approx(7.6) and percentile(v, 100) == 10.0


def test_repeats_are_medians_with_spread():
    runs = [{"latency_s": x, "itl_ms": y} for x, y in ((1.0, 5.0), (3.0, 7.0), (2.0, 6.0))]
    agg = aggregate_runs(runs)
    intervals = {k: agg.pop(k) for k in list(agg) if k.endswith("_ci95") or k.startswith("ci_")}
    assert agg == {"repeat": 3, "latency_s": 2.0, "latency_s_min": 1.0, "latency_s_max": 3.0,
                   "itl_ms": 6.0, "itl_ms_min": 5.0, "itl_ms_max": 7.0}
    # three runs of one launch: the bootstrap of the median spans the runs' range (stats.bootstrap_interval)
    assert intervals["latency_s_ci95"] == [1.0, 3.0] and intervals["itl_ms_ci95"] == [5.0, 7.0]
    assert intervals["ci_method"] == "bootstrap_runs" and "launch-to-launch spread is not in it" in intervals["ci_note"]


def test_prompts_are_seeded_and_in_range():
    a = random_prompts(batch=2, input_len=50, vocab_size=1000, seed=3)
    assert a == random_prompts(batch=2, input_len=50, vocab_size=1000, seed=3)
    assert a != random_prompts(batch=2, input_len=50, vocab_size=1000, seed=4)
    assert all(10 <= t < 990 for p in a for t in p) and a[0] != a[1]


def test_prompts_of_two_attempts_differ_by_their_nonce():
    a = random_prompts(batch=1, input_len=50, vocab_size=1000, seed=3, nonce="a1")
    assert a == random_prompts(batch=1, input_len=50, vocab_size=1000, seed=3, nonce="a1")
    assert a != random_prompts(batch=1, input_len=50, vocab_size=1000, seed=3, nonce="b2")


def test_prompt_tokens_served_from_a_cache_are_a_failure_naming_how_many():
    hit = RequestTrace([0.04 + i * 0.003 for i in range(4)], "length", cached_tokens=4080)
    with pytest.raises(BenchmarkFailure, match=r"4080 prompt tokens were served from the engine's prefix cache "
                                               r"\(request 0: 4080 of 4096\)"):
        run_metrics([hit], input_len=4096, output_len=4)


def test_cached_tokens_recorded_as_reported():
    clean = RequestTrace([0.5 + i * 0.003 for i in range(4)], "length", cached_tokens=0)
    m = run_metrics([clean], input_len=4096, output_len=4)
    assert m["cached_prompt_tokens"] == 0 and m["cached_tokens_reported"] is True
    m = run_metrics([_trace(0.5, 0.003, 4)], input_len=4096, output_len=4)  # the engine said nothing
    assert m["cached_prompt_tokens"] is None and m["cached_tokens_reported"] is False
    agg = aggregate_runs([dict(m, cache_flushed=True), dict(m, cache_flushed=False)])
    assert agg["cache_flushed"] is False and agg["cached_tokens_reported"] is False


def test_by_launch_gives_each_launchs_median_in_launch_order():
    runs = [{"itl_ms": 1.4, "ttft_ms": 24.0, "latency_s": 0.8}, {"itl_ms": 1.5, "ttft_ms": 23.0, "latency_s": 0.9},
            {"itl_ms": 1.2, "ttft_ms": 22.0, "latency_s": 0.7}, {"itl_ms": 1.3, "ttft_ms": 22.5, "latency_s": 0.6}]
    got = by_launch(runs, [2, 2, 1, 1])
    assert {k: got.pop(k) for k in ("ci_method", "ci_note")} == {
        "ci_method": "t_launch_means", "ci_note": "Student-t over 2 launch means (df 1), 4 runs in all"}
    # launch means 1.25 and 1.45: mean 1.35, s = 0.1 * sqrt(2), se = 0.1, t(0.975, 1) = 12.706
    assert got.pop("itl_ms_ci95") == [pytest.approx(1.35 - 1.27062, abs=1e-4), pytest.approx(1.35 + 1.27062, abs=1e-4)]
    assert got.pop("ttft_ms_ci95") and got.pop("latency_s_ci95")
    assert got == {"ttft_ms_by_launch": [22.25, 23.5], "itl_ms_by_launch": pytest.approx([1.25, 1.45]),
                   "latency_s_by_launch": pytest.approx([0.65, 0.85])}
    assert by_launch(runs, [1, 1, 1, 1]) == {}  # one launch: nothing to compare
    assert "itl_ms_by_launch" not in by_launch([{"itl_ms": 1.0}, {"ttft_ms": 2.0}], [1, 2])  # launch 2 has none


def test_one_run_has_no_interval_and_says_why():
    agg = aggregate_runs([{"itl_ms": 1.0, "ttft_ms": 20.0, "output_tokens": 4}])
    assert agg["itl_ms_ci95"] is None and agg["ttft_ms_ci95"] is None and "output_tokens_ci95" not in agg
    assert agg["ci_method"] == "none" and agg["ci_note"].startswith("one run")


def test_launch_intervals_replace_the_runs_bootstrap():
    """The runner does agg = aggregate_runs(runs); agg.update(by_launch(runs, launch_of)): with several
    launches the t interval over launch means is what the record keeps."""
    runs = [{"itl_p50_ms": x} for x in (1.0, 1.1, 1.2, 2.0, 2.1, 2.2, 1.5, 1.6, 1.7)]
    launch_of = [1, 1, 1, 2, 2, 2, 3, 3, 3]
    agg = aggregate_runs(runs)
    agg.update(by_launch(runs, launch_of))
    # launch means 1.1, 2.1, 1.6: mean 1.6, s 0.5, se 0.5/sqrt(3), t(0.975, 2) = 4.3027
    h = 4.302653 * 0.5 / 3 ** 0.5
    assert agg["itl_p50_ms_ci95"] == [pytest.approx(1.6 - h, abs=1e-5), pytest.approx(1.6 + h, abs=1e-5)]
    assert agg["ci_method"] == "t_launch_means"
    # a launch without the metric: no interval for it, rather than one over fewer launches
    assert by_launch([{"itl_ms": 1.0}, {"ttft_ms": 2.0}], [1, 2])["itl_ms_ci95"] is None
