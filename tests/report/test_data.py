"""The report data layer on SYNTHETIC records (built through the real store)."""

from __future__ import annotations

import json

import pytest

from moetrace.report import data
from moetrace.results.store import ResultsStore

from .conftest import WEIRD_MODEL


def test_current_matches_the_stores_views(synthetic):
    rows = data.load(synthetic)
    success, failure = data.current(rows)
    s_view, f_view = ResultsStore(synthetic).views()
    assert set(success) == set(s_view)
    assert set(failure) == set(f_view)
    # a failure after a success: both views hold the key, the success row is kept
    assert success["Qwen3-235B::TP8_auto"].ok and failure["Qwen3-235B::TP8_auto"].error_type == "Timeout"


def test_rows_carry_config_workload_metrics_and_errors(synthetic):
    rows = {(r.key, r.status): r for r in data.load(synthetic)}
    r = rows[("Qwen3-235B::TP8_EP2_auto", "success")]
    assert (r.tp, r.ep, r.backend, r.nodes, r.group) == (8, 2, "auto", 1, "TP8 EP2")
    assert r.workload == (1, 4096, 512) and r.repeat == 3 and len(r.runs) == 3
    assert r.value("itl_efficiency") == pytest.approx(7.0 / r.value("itl_ms"))
    assert r.breakdown["decode"]["moe"] == 50.0
    assert [s for s, _ in data.trace_files(r)] == ["extend", "decode"]
    small = rows[("Qwen3-235B::TP8_EP2_auto::bs4_in1024_out128", "success")]
    assert small.workload == (4, 1024, 128)
    f = rows[("Qwen3-235B::TP4_auto", "failure")]
    assert (f.error_type, f.error_phase, f.workload) == ("OOM", "launch", (1, 4096, 512))
    assert f.log_path and f.error_evidence and f.value("latency_s") is None


def test_missing_values_stay_missing(tmp_path):
    store = ResultsStore(tmp_path / "r")
    store.commit({"model": "M", "config": "TP1_auto", "key": "M::TP1_auto", "status": "success",
                  "workload": {"batch_size": 1, "input_len": 8, "output_len": 2},
                  "metrics": {"latency_s": 1.0, "itl_ms": None, "ttft_ms": float("nan")}})
    (r,) = data.load(store.root)
    assert r.value("itl_ms") is None and r.value("ttft_ms") is None and r.value("latency_s") == 1.0
    assert data.bar_chart([r], "itl_ms") is None


def test_bar_chart_groups_by_tp_ep_and_colours_by_backend(synthetic):
    success, _ = data.current(data.load(synthetic))
    rows = [r for r in success.values() if r.model == "Qwen3-235B" and r.workload == (1, 4096, 512)]
    c = data.bar_chart(rows, "itl_ms")
    assert c.groups == ("TP8", "TP8 EP2")
    assert c.backends == ("auto", "triton")
    auto = next(b for b in c.bars if b.config == "TP8_EP2_auto")
    assert auto.lo == pytest.approx(14.32 * 0.98) and auto.hi == pytest.approx(14.32 * 1.03) and auto.n == 3
    assert [m for m, _ in auto.marks] == ["p50", "p99"]
    triton = next(b for b in c.bars if b.backend == "triton")
    assert triton.lo is None  # one run: no spread
    eff = data.bar_chart(rows, "itl_efficiency")
    assert eff.reference == 100.0 and [b.config for b in eff.bars] == ["TP8_EP2_auto"]
    assert eff.bars[0].value == pytest.approx(100 * 7.0 / auto.value)


def test_breakdowns_per_stage_and_config(synthetic):
    success, _ = data.current(data.load(synthetic))
    rows = [r for r in success.values() if r.model == "Qwen3-235B"]
    bds = {b.stage: b for b in data.breakdowns(rows)}
    assert set(bds) == {"extend", "decode"}
    assert [c for c, _, _ in bds["decode"].configs] == ["TP8_EP2_auto", "TP8_EP2_triton"]
    assert bds["decode"].categories[0] == "moe" and bds["decode"].categories[-1] == "other"


def test_colours_are_stable_and_distinct():
    c = data.backend_colors(["zeta", "auto", "triton", "alpha"])
    assert c["auto"] == data.PALETTE[0] and c["triton"] == data.PALETTE[1]
    assert len(set(c.values())) == 4
    assert data.category_colors(["moe", "other"])["other"] == "#BAB0AC"


@pytest.mark.parametrize("v,want", [(None, "-"), (0, "0"), (7.5912, "7.59"), (14.32, "14.3"), (257.06, "257"),
                                    (15933.87, "15,934"), (0.01234, "0.0123")])
def test_fmt_value(v, want):
    assert data.fmt_value(v) == want


@pytest.mark.parametrize("vmax", [0.0, 0.003, 1.0, 7.7, 99.0, 16000.0])
def test_nice_ticks_cover_the_range(vmax):
    t = data.nice_ticks(vmax)
    assert t[0] == 0 and t[-1] >= vmax and 2 <= len(t) <= 12
    steps = {round(b - a, 9) for a, b in zip(t, t[1:])}
    assert len(steps) == 1


def test_spec_only_directory_is_read_without_adding_records(tmp_path):
    """Results files of the original trace scripts (no records): read as they are."""
    root = tmp_path / "legacy"
    root.mkdir()
    (root / "success_results.json").write_text(json.dumps({"Qwen3-235B::TP8_EP2_auto": {
        "model": "Qwen3-235B", "config": "TP8_EP2_auto", "batch_size": 1, "input_len": 4096, "output_len": 512,
        "latency_s": 7.59, "input_throughput_tok_per_s": 15933.87, "output_throughput_tok_per_s": 69.81,
        "itl_ms": 14.32, "last_updated": "2025-11-27T23:45:12"}}))
    (root / "failure_results.json").write_text(json.dumps({"DeepSeek-V3.1::TP4_auto": {
        "model": "DeepSeek-V3.1", "config": "TP4_auto", "error_message": "CUDA out of memory...",
        "error_type": "OOM", "last_updated": "2025-11-27T23:50:00"}}))
    rows = data.load(root)
    assert not list((root / "records").glob("*.json"))
    ok = next(r for r in rows if r.ok)
    assert (ok.tp, ok.ep, ok.backend, ok.value("itl_ms")) == (8, 2, "auto", 14.32)
    bad = next(r for r in rows if not r.ok)
    assert (bad.error_type, bad.tp) == ("OOM", 4)


def test_no_results_is_bad_input(tmp_path):
    with pytest.raises(data.NoResults, match="does not exist"):
        data.load(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(data.NoResults, match="holds no results"):
        data.load(tmp_path / "empty")
    assert not (tmp_path / "empty" / "records").exists()  # nothing created in a wrong directory


def test_weird_names_survive(synthetic):
    assert WEIRD_MODEL in data.by_model(data.load(synthetic))
