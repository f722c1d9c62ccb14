"""Metrics as pure functions of the raw stamps recorded while streaming.

Definitions (B = batch size, stamps from ``time.perf_counter`` relative to the
moment the request was sent):

- TTFT: the time the first output token of the *last* request of the batch arrived
  (SGLang's bench_one_batch_server uses the same: the batch is prefilled together).
- latency: the time the last token of the last request arrived.
- input throughput  = B * input_len / TTFT                       (as SGLang)
- output throughput = B * output_len / (latency - TTFT)           (as SGLang)
- ITL: every gap between consecutive tokens of a request, pooled over the batch;
  mean, p50, p90, p99 of those measured gaps. (SGLang reports 1000 * B / output
  throughput, a derived mean.) Tokens that arrive in one chunk share its stamp.
- delivery: whether the stream reached us as the server generated it. On a loaded host a
  server can hold tokens back and deliver them in bursts (seen: the first token at 0.60 s,
  1.98 s of nothing, then 510 tokens within 7 ms: p50 ITL 0.01 ms beside a 3.88 ms mean).
  ITL percentiles of such a stream describe delivery, not generation, and the run says so:
  ``burst_share`` (share of gaps under 50 us), ``longest_stall_ms``, ``stall_ratio`` (longest
  gap / median gap), ``bursty`` (burst_share >= 10% or stall_ratio >= 50).
- the headline (:func:`settle_headline`): a bursty run's TTFT, ITL, latency and throughputs (the spec's
  JSON fields) come from the engine's own per-request timing (its /metrics histograms over the run:
  ``server_ttft_ms``, ``server_itl_ms``), ``headline: "engine"``; the client's figures stay in the run as
  ``client`` (what was delivered). A bursty run whose engine reports no timing is a measurement failure:
  no trustworthy ITL exists for it. On a busy 2-core host a whole 512-token stream once arrived in one
  burst: the client measured ITL 0.007 ms and 146,056 output tok/s, the engine 2.25 ms.

Intervals (``<metric>_ci95: [lo, hi]`` for each of ``CI_KEYS``, ``ci_method``, ``ci_note``; docs/fidelity.md):

- runs from two or more engine launches (``--launches N``): a Student-t 95% interval over the launch
  means (each launch's mean of its runs), ``ci_method: "t_launch_means"``, set by :func:`by_launch`.
  One launch's ITL moved +-20% against another's on an H200: runs of one launch share that launch's
  state (memory layout, CUDA graphs, clocks), so only launches are independent samples of a config.
- one launch, two or more runs: a seeded percentile bootstrap of the median over the runs' own
  values, ``ci_method: "bootstrap_runs"``, set by :func:`aggregate_runs`. Per-run statistics, not the
  pooled token gaps: the record's figure is the median over runs of each run's statistic, so the runs
  are what the bootstrap must resample; a run's gaps are not independent of each other (one batch,
  one server state), and resampling them, even as whole per-run lists, would estimate the spread of a
  pooled percentile the record does not report. This interval leaves out the launch-to-launch spread
  (``ci_note`` says so).
- one run: no interval (``null``), ``ci_method: "none"``.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any, Sequence

from ..errors import BenchmarkFailure
from ..stats import BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED, bootstrap_interval, percentile, t_interval

__all__ = ["RequestTrace", "run_metrics", "settle_headline", "aggregate_runs", "by_launch", "run_intervals", "launch_intervals",
           "percentile", "delivery", "BURST_GAP_S", "CI_KEYS", "launches_verdict", "relative_half_width"]

BURST_GAP_S = 50e-6  # two tokens closer than this were not generated apart: they were delivered together
BURSTY_SHARE = 0.10  # bursty when at least this share of gaps are bursts ...
BURSTY_STALL_RATIO = 50.0  # ... or the longest gap is this many times the median one


@dataclass
class RequestTrace:
    """What one streamed request produced: arrival stamps of each token (seconds since send)."""

    token_times: list[float] = field(default_factory=list)
    finish_reason: str | None = None
    cached_tokens: int | None = None  # prompt tokens the engine says its prefix cache served; None: not reported

    @property
    def n_tokens(self) -> int:
        return len(self.token_times)


def delivery(requests: Sequence[RequestTrace]) -> dict[str, Any] | None:
    """How the tokens reached us: bursts and stalls in the gaps between consecutive tokens of
    each request (pooled over the batch). None when no request has two tokens."""
    gaps = sorted(t1 - t0 for r in requests for t0, t1 in zip(r.token_times, r.token_times[1:]))
    if not gaps:
        return None
    share = sum(1 for g in gaps if g < BURST_GAP_S) / len(gaps)
    median = percentile(gaps, 50)
    ratio = gaps[-1] / max(median, 1e-6)  # a median under 1 us (bursts) counts as 1 us
    return {"burst_share": round(share, 4), "longest_stall_ms": round(gaps[-1] * 1000, 3),
            "stall_ratio": round(ratio, 1), "bursty": share >= BURSTY_SHARE or ratio >= BURSTY_STALL_RATIO}


def aggregate_delivery(runs: Sequence[dict[str, Any] | None]) -> dict[str, Any] | None:
    """Over repetitions: the worst run's figures, and how many runs were bursty."""
    ds = [d for d in runs if d]
    if not ds:
        return None
    return {"burst_share": max(d["burst_share"] for d in ds), "longest_stall_ms": max(d["longest_stall_ms"] for d in ds),
            "stall_ratio": max(d["stall_ratio"] for d in ds), "bursty": any(d["bursty"] for d in ds),
            "bursty_runs": sum(1 for d in ds if d["bursty"]), "runs": len(ds)}


def run_metrics(requests: Sequence[RequestTrace], *, input_len: int, output_len: int) -> dict[str, Any]:
    """Metrics of one measured batch. Raises BenchmarkFailure when any request came back
    short: a missing value is missing, never a number."""
    if not requests:
        raise BenchmarkFailure("no request was sent")
    for i, r in enumerate(requests):
        if r.n_tokens < output_len:
            raise BenchmarkFailure(f"request {i}: stream ended after {r.n_tokens} of {output_len} tokens"
                                   f" (finish_reason={r.finish_reason!r})")
    cached = [(i, r.cached_tokens) for i, r in enumerate(requests) if r.cached_tokens is not None]
    hits = [(i, n) for i, n in cached if n > 0]
    if hits:
        raise BenchmarkFailure(f"{sum(n for _, n in hits)} prompt tokens were served from the engine's prefix cache ("
                               + ", ".join(f"request {i}: {n} of {input_len}" for i, n in hits)
                               + "): TTFT would measure a cache hit, not a prefill")
    b = len(requests)
    ttft = max(r.token_times[0] for r in requests)
    latency = max(r.token_times[-1] for r in requests)
    gaps = sorted(t1 - t0 for r in requests for t0, t1 in zip(r.token_times, r.token_times[1:]))
    decode_s = latency - ttft
    m: dict[str, Any] = {
        "ttft_ms": ttft * 1000,
        "latency_s": latency,
        "input_throughput_tok_per_s": b * input_len / ttft if ttft > 0 else None,
        "output_throughput_tok_per_s": b * output_len / decode_s if decode_s > 0 else None,
        "output_tokens": sum(r.n_tokens for r in requests),
        # what the engine said about its prefix cache: 0 when it reported, None when it did not
        "cached_prompt_tokens": sum(n for _, n in cached) if cached else None,
        "cached_tokens_reported": bool(cached),
    }
    if gaps:
        m.update(itl_ms=statistics.fmean(gaps) * 1000, itl_p50_ms=percentile(gaps, 50) * 1000,
                 itl_p90_ms=percentile(gaps, 90) * 1000, itl_p99_ms=percentile(gaps, 99) * 1000,
                 itl_max_ms=gaps[-1] * 1000)
        m["delivery"] = delivery(requests)
    return m


#: what the headline of a run is made of: the client's figures, replaced by the engine's when delivery was bursty
HEADLINE_KEYS = ("ttft_ms", "latency_s", "input_throughput_tok_per_s", "output_throughput_tok_per_s", "itl_ms",
                 "itl_p50_ms", "itl_p90_ms", "itl_p99_ms", "itl_max_ms")


def settle_headline(m: dict[str, Any], *, batch: int, input_len: int, output_len: int) -> dict[str, Any]:
    """The run's metrics with their headline settled (module docstring): the client's figures when the
    stream arrived as it was generated; the engine's own mean TTFT and ITL (and the latency and
    throughputs they imply, by the same formulas) when it arrived in bursts, with the client's kept under
    ``client``. Raises :class:`BenchmarkFailure` for a bursty run the engine gives no timing of. Pure."""
    d = m.get("delivery") or {}
    if not d.get("bursty"):
        return {**m, "headline": "client"}
    ttft, itl = m.get("server_ttft_ms"), m.get("server_itl_ms")
    if not isinstance(ttft, (int, float)) or not isinstance(itl, (int, float)) or ttft <= 0 or itl <= 0:
        why = (m.get("server_timing") or {}).get("reason") or "no TTFT and ITL histograms changed"
        raise BenchmarkFailure(
            f"the stream arrived in bursts ({100 * d['burst_share']:.0f}% of token gaps under 50 us, longest stall "
            f"{d['longest_stall_ms']:.0f} ms): its ITL would describe delivery, not generation, and the engine "
            f"reported no timing of its own ({why})")
    out = {k: v for k, v in m.items() if k not in HEADLINE_KEYS}
    decode_s = itl / 1000 * max(output_len - 1, 1)
    out.update(ttft_ms=float(ttft), itl_ms=float(itl), latency_s=ttft / 1000 + decode_s,
               input_throughput_tok_per_s=batch * input_len / (ttft / 1000),
               output_throughput_tok_per_s=batch * output_len / decode_s,
               headline="engine", client={k: m[k] for k in HEADLINE_KEYS if k in m})
    return out


_SPREAD_KEYS = ("latency_s", "ttft_ms", "itl_ms", "input_throughput_tok_per_s", "output_throughput_tok_per_s")


_BY_LAUNCH_KEYS = ("ttft_ms", "itl_ms", "latency_s")
#: the metrics that carry a 95% interval (``<key>_ci95``)
CI_KEYS = ("ttft_ms", "latency_s", "itl_ms", "itl_p50_ms", "itl_p90_ms", "itl_p99_ms", "input_throughput_tok_per_s",
           "output_throughput_tok_per_s")


def _values(runs: Sequence[dict[str, Any]], key: str) -> list[float]:
    return [float(r[key]) for r in runs if isinstance(r.get(key), (int, float)) and not isinstance(r[key], bool)]


def _pair(iv: tuple[float, float] | None) -> list[float] | None:
    return None if iv is None else [iv[0], iv[1]]


def run_intervals(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """95% intervals from the runs of one launch: a seeded percentile bootstrap of the median of each
    run's value (module docstring: why runs, not token gaps); none from one run."""
    n = len(runs)
    if n < 2:
        return {**{f"{k}_ci95": None for k in CI_KEYS if _values(runs, k)}, "ci_method": "none",
                "ci_note": "one run: no spread to estimate an interval from"}
    out: dict[str, Any] = {f"{k}_ci95": _pair(bootstrap_interval(_values(runs, k)))
                           for k in CI_KEYS if _values(runs, k)}
    out["ci_method"] = "bootstrap_runs"
    out["ci_note"] = (f"percentile bootstrap of the median over {n} runs ({BOOTSTRAP_RESAMPLES} resamples, seed "
                      f"{BOOTSTRAP_SEED}); one launch: the launch-to-launch spread is not in it (--launches 2+)")
    return out


def launch_intervals(runs: Sequence[dict[str, Any]], launch_of: Sequence[int]) -> dict[str, Any]:
    """95% Student-t intervals over the launch means (each launch's mean of its runs' values), when the
    runs come from two or more launches; else {}. A metric some launch has no value of gets none."""
    launches = sorted(set(launch_of))
    if len(launches) < 2:
        return {}
    out: dict[str, Any] = {}
    for k in CI_KEYS:
        per = [_values([r for r, n in zip(runs, launch_of) if n == i], k) for i in launches]
        if any(per):
            out[f"{k}_ci95"] = _pair(t_interval([statistics.fmean(v) for v in per])) if all(per) else None
    out["ci_method"] = "t_launch_means"
    out["ci_note"] = f"Student-t over {len(launches)} launch means (df {len(launches) - 1}), {len(runs)} runs in all"
    return out


def by_launch(runs: Sequence[dict[str, Any]], launch_of: Sequence[int]) -> dict[str, Any]:
    """The median of each main metric per engine launch (``<key>_by_launch``), in launch order, when the
    runs come from more than one launch: how far one launch's figure is from another's. With them the
    intervals over launch means (:func:`launch_intervals`), which replace :func:`aggregate_runs`' ones."""
    launches = sorted(set(launch_of))
    if len(launches) < 2:
        return {}
    out = {}
    for k in _BY_LAUNCH_KEYS:
        per = [[r[k] for r, n in zip(runs, launch_of) if n == i and isinstance(r.get(k), (int, float))]
               for i in launches]
        if all(per):
            out[f"{k}_by_launch"] = [statistics.median(v) for v in per]
    out.update(launch_intervals(runs, launch_of))
    return out


def aggregate_runs(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Median of each metric over repetitions, with min and max of the main ones, and the intervals
    of one launch's runs (:func:`run_intervals`; :func:`by_launch` replaces them for several launches)."""
    if not runs:
        raise ValueError("no runs")
    out: dict[str, Any] = {"repeat": len(runs)}
    if any(r.get("delivery") for r in runs):
        out["delivery"] = aggregate_delivery([r.get("delivery") for r in runs])
    sources = [r["headline"] for r in runs if r.get("headline")]
    if sources:  # where the headline of each run came from; the client's figures of bursty runs, as medians
        out["headline"] = "engine" if "engine" in sources else "client"
        out["headline_runs"] = {src: sources.count(src) for src in dict.fromkeys(sources)}
        clients = [r["client"] for r in runs if r.get("client")]
        if clients:
            out["client"] = {k: statistics.median(c[k] for c in clients if isinstance(c.get(k), (int, float)))
                             for k in HEADLINE_KEYS if any(isinstance(c.get(k), (int, float)) for c in clients)}
    for k in dict.fromkeys(k for r in runs for k in r):  # every run's keys: a bursty run lacks the ITL percentiles
        flags = [r[k] for r in runs if isinstance(r.get(k), bool)]
        if flags:  # a yes/no of every run (cache flushed, cached tokens reported): true only if true for all
            out[k] = all(flags)
            continue
        vals = [r[k] for r in runs if isinstance(r.get(k), (int, float))]
        if vals:
            out[k] = statistics.median(vals)
            if k in _SPREAD_KEYS and len(vals) > 1:
                out[f"{k}_min"], out[f"{k}_max"] = min(vals), max(vals)
    out.update(run_intervals(runs))
    return out


def relative_half_width(ci: Sequence[float] | None) -> float | None:
    """An interval's half-width over its centre (0.05: +-5%); None without an interval or with a centre <= 0."""
    if not ci:
        return None
    lo, hi = float(ci[0]), float(ci[1])
    centre = (lo + hi) / 2
    return (hi - lo) / 2 / centre if centre > 0 else None


def launches_verdict(runs: dict[int, Sequence[dict[str, Any]]], n: int, *, target: float, cap: int) -> str | None:
    """``--launches auto`` after ``n`` launches: why to stop (the record's ``workload.launches_stopped``), or None
    to launch again. Stops at 2 launches or more once the ITL p50's 95% Student-t interval over launch means
    (:func:`launch_intervals`) is within ``target`` of its centre for every batch size (the widest decides), or at
    ``cap`` launches. ``runs``: per batch size, the runs as the record keeps them (``metrics``, ``launch``). A run
    without an ITL p50 (a bursty stream's headline is the engine's mean ITL) counts with its ``itl_ms``."""
    if n < 2:
        return None
    widths = []
    for rs in runs.values():
        ms = [r["metrics"] for r in rs]
        key = "itl_p50_ms" if all(isinstance(m.get("itl_p50_ms"), (int, float)) for m in ms) else "itl_ms"
        widths.append(relative_half_width(launch_intervals(ms, [r.get("launch", 1) for r in rs]).get(f"{key}_ci95")))
    known = [w for w in widths if w is not None]
    worst = max(known) if known and len(known) == len(widths) else None
    shown = "n/a" if worst is None else f"{100 * worst:.1f}%"
    if worst is not None and worst <= target:
        return f"interval {shown} <= {100 * target:g}%"
    if n >= cap:
        return f"cap {cap} reached, interval {shown}"
    return None
