"""Fixtures of the report tests.

Two kinds of results directory:

- ``synthetic``: SYNTHETIC records committed through the real ``ResultsStore`` in a
  tmp dir (made-up numbers, for fast unit tests of the data layer, compare, LaTeX
  escaping, HTML escaping). Names deliberately contain ``<``, ``&`` and quotes.
- ``real_results``: the results directory of the session's real CPU sweep (the
  ``cpu_sweep`` fixture of tests/conftest.py). For development only,
  ``MOETRACE_REPORT_TEST_RESULTS=DIR`` points it at an existing real results
  directory instead of running the sweep.
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from moetrace.results.store import ResultsStore

WEIRD_MODEL = 'Mo<E> & "Big" \'Q\''


def synthetic_record(model: str, config: str, status: str = "success", *, tp: int = 8, ep: int = 1,
                     backend: str = "auto", metrics: dict[str, float] | None = None,
                     runs: list[dict[str, float]] | None = None, breakdown: dict | None = None,
                     workload: tuple[int, int, int] = (1, 4096, 512), error: dict | None = None,
                     key: str | None = None, profile: dict | None = None, **extra: Any) -> dict[str, Any]:
    """A SYNTHETIC attempt record shaped like the attempt stages' (made-up numbers)."""
    bs, il, ol = workload
    suffix = "" if workload == (1, 4096, 512) else f"::bs{bs}_in{il}_out{ol}"
    rec: dict[str, Any] = {
        "schema": 1, "synthetic": True, "model": model, "config": config,
        "key": key or f"{model}::{config}{suffix}", "status": status,
        "attempt_id": f"synthetic-{config}-{status}",
        "config_detail": {"tp": tp, "ep": ep, "backend": backend, "quantization": None, "nodes": 1},
        "engine": {"name": "sglang", "version": "0.0-synthetic", "device": "cuda"},
    }
    if status == "success":
        m = dict(metrics or {"latency_s": 7.59, "ttft_ms": 257.0, "itl_ms": 14.32, "itl_p50_ms": 14.0,
                             "itl_p90_ms": 15.1, "itl_p99_ms": 18.9, "input_throughput_tok_per_s": 15933.87,
                             "output_throughput_tok_per_s": 69.81})
        rec["workload"] = {"batch_size": bs, "input_len": il, "output_len": ol, "repeat": len(runs or [1])}
        rec["runs"] = [{"metrics": r, "token_times": [[0.1, 0.2]]} for r in (runs or [m])]
        if runs and len(runs) > 1:
            for k in ("latency_s", "ttft_ms", "itl_ms", "input_throughput_tok_per_s",
                      "output_throughput_tok_per_s"):
                vals = [r[k] for r in runs if k in r]
                if vals:
                    m[f"{k}_min"], m[f"{k}_max"] = min(vals), max(vals)
            m["repeat"] = len(runs)
        rec["metrics"] = m
        rec["profile"] = profile if profile is not None else {"enabled": True, "breakdown": breakdown or {}}
    else:
        rec["error"] = error or {"type": "OOM", "message": "CUDA out of memory. Tried to allocate 2.00 GiB",
                                 "phase": "launch"}
        rec["options"] = {"batch_sizes": [bs], "input_len": il, "output_len": ol}
    rec.update(extra)
    return rec


def _runs(base: dict[str, float], factors: list[float]) -> list[dict[str, float]]:
    out = []
    for f in factors:
        r = {}
        for k, v in base.items():
            r[k] = v / f if "throughput" in k else v * f
        out.append(r)
    return out


BASE = {"latency_s": 7.59, "ttft_ms": 257.0, "itl_ms": 14.32, "itl_p50_ms": 14.0, "itl_p90_ms": 15.1,
        "itl_p99_ms": 18.9, "input_throughput_tok_per_s": 15933.87, "output_throughput_tok_per_s": 69.81}


def build_synthetic(root: Path) -> ResultsStore:
    """A SYNTHETIC results directory: two models, TP/EP groups, two backends, repeats,
    floors, breakdowns, a trace and a log on disk, failures of several kinds."""
    store = ResultsStore(root, warn=lambda m: None)
    adir = store.attempt_dir("synthetic-TP8_EP2_auto")
    (adir / "traces").mkdir(exist_ok=True)
    trace = adir / "traces" / "M__TP8_EP2_auto__decode__rank0.trace.json.gz"
    with gzip.open(trace, "wt") as f:
        json.dump({"traceEvents": []}, f)
    log = store.attempt_dir("synthetic-TP4_auto") / "server.log"
    log.write_text("loading weights\n" * 5 + "torch.OutOfMemoryError: CUDA out of memory <&> \"quoted\"\n")
    bd = {"extend": {"attention": 40.0, "moe": 35.0, "gemm": 15.0, "other": 10.0},
          "decode": {"moe": 50.0, "attention": 20.0, "communication": 20.0, "other": 10.0}}
    rel = lambda p: str(p.relative_to(root))  # noqa: E731
    runs = _runs(BASE, [0.98, 1.0, 1.03])
    med = {k: sorted(r[k] for r in runs)[1] for k in BASE}
    store.commit(synthetic_record("Qwen3-235B", "TP4_auto", "failure", tp=4,
                                  error={"type": "OOM", "message": "CUDA out of memory", "phase": "launch",
                                         "evidence": "torch.OutOfMemoryError: CUDA out of memory",
                                         "log_path": rel(log)}))
    store.commit(synthetic_record(
        "Qwen3-235B", "TP8_EP2_auto", tp=8, ep=2, metrics=dict(med, itl_floor_ms=7.0, ttft_floor_ms=120.0,
                                                               itl_efficiency=7.0 / med["itl_ms"],
                                                               ttft_efficiency=120.0 / med["ttft_ms"]),
        runs=runs, breakdown=bd,
        profile={"enabled": True, "breakdown": bd, "decode": rel(trace), "decode_all": [rel(trace)],
                 "extend": "attempts/synthetic-TP8_EP2_auto/traces/missing__extend__rank0.trace.json.gz"},
        attempt_dir=rel(adir)))
    store.commit(synthetic_record("Qwen3-235B", "TP8_EP2_triton", tp=8, ep=2, backend="triton",
                                  metrics={k: v * 1.2 if "throughput" not in k else v / 1.2 for k, v in BASE.items()},
                                  breakdown={"decode": {"moe": 60.0, "attention": 25.0, "other": 15.0}}))
    store.commit(synthetic_record("Qwen3-235B", "TP8_auto", tp=8, metrics={k: v * 0.9 for k, v in BASE.items()}))
    # a failure after a success: the success stays in the views
    store.commit(synthetic_record("Qwen3-235B", "TP8_auto", "failure", tp=8,
                                  error={"type": "Timeout", "message": "no token for 300 s", "phase": "measure"}))
    store.commit(synthetic_record("Qwen3-235B", "TP8_EP2_auto", workload=(4, 1024, 128), tp=8, ep=2,
                                  metrics={k: v * 2 for k, v in BASE.items()}))
    store.commit(synthetic_record(WEIRD_MODEL, "TP2_auto", tp=2, metrics=BASE))
    store.commit(synthetic_record(WEIRD_MODEL, "TP2_triton", "failure", tp=2, backend="triton",
                                  error={"type": "ServerError", "message": "bad <tag> & 'quote' \"dq\" 100% _x_",
                                         "phase": "launch"}))
    return store


@pytest.fixture
def synthetic(tmp_path) -> Path:
    """A SYNTHETIC results directory (see build_synthetic)."""
    root = tmp_path / "synthetic-results"
    build_synthetic(root)
    return root


@pytest.fixture
def real_results(request) -> Path:
    """The real CPU sweep's results directory (read only: write reports elsewhere)."""
    override = os.environ.get("MOETRACE_REPORT_TEST_RESULTS")
    if override:
        return Path(override)
    return request.getfixturevalue("cpu_sweep").results


def report_cli(*args: str, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run a report command as a user would: through `moetrace` once cli.py registers it,
    else through the commands module's own group."""
    name = args[0]
    try:
        from moetrace.cli import main
        registered = name in main.commands
    except Exception:  # noqa: BLE001 - a broken cli.py must not hide these tests
        registered = False
    exe = Path(sys.executable).with_name("moetrace")
    if registered and exe.exists():
        cmd = [str(exe), *args]
    else:
        cmd = [sys.executable, "-m", "moetrace.report.commands", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=dict(os.environ, **(env or {})))
