"""compare on SYNTHETIC records: deltas, noise bands, regressions, exit codes, step summary."""

from __future__ import annotations

import json

import pytest

from moetrace.report import compare, data
from moetrace.results.store import ResultsStore

from .conftest import BASE, report_cli, synthetic_record


def _dir(tmp_path, name, recs):
    store = ResultsStore(tmp_path / name)
    for r in recs:
        store.commit(r)
    return store.root


def _ok(config="TP8_EP2_auto", scale=1.0, runs=None, model="M", **kw):
    m = {k: (v / scale if "throughput" in k else v * scale) for k, v in BASE.items()}
    if runs:
        m = {k: sorted(r[k] for r in runs)[len(runs) // 2] for k in BASE}
    return synthetic_record(model, config, metrics=m, runs=runs, ep=2, **kw)


def _runs(scale, spread):
    return [{k: (v / (scale * f) if "throughput" in k else v * scale * f) for k, v in BASE.items()}
            for f in (1 - spread, 1.0, 1 + spread)]


def _cmp(tmp_path, old, new, **kw):
    return compare.compare_rows(data.load(_dir(tmp_path, "old", old)), data.load(_dir(tmp_path, "new", new)), **kw)


def test_unchanged_is_ok(tmp_path):
    c = _cmp(tmp_path, [_ok()], [_ok()])
    assert not c.failed and {x.verdict for x in c.changes} == {"ok"}
    assert len(c.changes) == len(compare.DEFAULT_METRICS)


def test_slower_beyond_threshold_is_a_regression_in_every_direction(tmp_path):
    c = _cmp(tmp_path, [_ok()], [_ok(scale=1.10)], threshold_pct=5)
    assert c.failed
    by = {x.metric: x for x in c.changes}
    assert by["latency_s"].change_pct == pytest.approx(10.0) and by["latency_s"].flagged
    # throughput fell by 1 - 1/1.1: worse for a higher-is-better metric
    assert by["output_throughput_tok_per_s"].change_pct == pytest.approx(-100 * (1 - 1 / 1.1))
    assert by["output_throughput_tok_per_s"].flagged
    assert by["latency_s"].noise_pct is None  # no repetitions


def test_faster_is_an_improvement_not_a_regression(tmp_path):
    c = _cmp(tmp_path, [_ok()], [_ok(scale=0.8)])
    assert not c.failed and {x.verdict for x in c.changes} == {"improvement"}


def test_change_within_the_noise_band_is_not_flagged(tmp_path):
    # runs spread +-8 %: a 7 % change is inside the band (8 % + 8 %), a 30 % one is not
    c = _cmp(tmp_path, [_ok(runs=_runs(1.0, 0.08))], [_ok(runs=_runs(1.07, 0.08))], threshold_pct=5)
    lat = next(x for x in c.changes if x.metric == "latency_s")
    assert lat.noise_pct == pytest.approx(8 + 8 * 1.07) and lat.verdict == "noise" and not c.failed
    c = _cmp(tmp_path / "b", [_ok(runs=_runs(1.0, 0.08))], [_ok(runs=_runs(1.3, 0.08))], threshold_pct=5)
    assert c.failed and next(x for x in c.changes if x.metric == "latency_s").flagged


def test_small_change_under_threshold_passes(tmp_path):
    assert not _cmp(tmp_path, [_ok()], [_ok(scale=1.03)], threshold_pct=5).failed
    assert _cmp(tmp_path / "b", [_ok()], [_ok(scale=1.03)], threshold_pct=2).failed


def test_now_failing_missing_new_and_fixed(tmp_path):
    old = [_ok("TP8_EP2_auto"), _ok("TP8_EP2_triton", backend="triton"), _ok("TP4_auto"),
           synthetic_record("M", "TP2_auto", "failure", tp=2)]
    new = [_ok("TP8_EP2_auto"), synthetic_record("M", "TP8_EP2_triton", "failure", ep=2, backend="triton",
                                                  error={"type": "OOM", "message": "oom"}),
           _ok("TP2_auto"), _ok("TP16_auto")]
    c = _cmp(tmp_path, old, new)
    assert c.now_failing == [("M::TP8_EP2_triton", "OOM")] and c.failed
    assert c.only_old == ["M::TP4_auto"] and c.only_new == ["M::TP16_auto"] and c.fixed == ["M::TP2_auto"]
    md = compare.render_markdown(c)
    assert "its last attempt in NEW failed (OOM)" in md and "Only in OLD" in md and "`M::TP16_auto`" in md
    # missing keys fail the gate only when asked
    c2 = _cmp(tmp_path / "b", old[:1] + old[2:3], new[:1])
    assert not c2.failed and c2.only_old == ["M::TP4_auto"]
    c3 = _cmp(tmp_path / "c", old[:1] + old[2:3], new[:1], fail_on_missing=True)
    assert c3.failed and "missing from NEW" in compare.render_markdown(c3)


def test_a_failure_after_a_success_in_new_is_a_regression(tmp_path):
    fail = synthetic_record("M", "TP8_EP2_auto", "failure", ep=2, error={"type": "Timeout", "message": "hung"})
    c = _cmp(tmp_path, [_ok()], [_ok(), fail])
    assert c.now_failing == [("M::TP8_EP2_auto", "Timeout")] and c.failed
    assert len(c.changes) == len(compare.DEFAULT_METRICS)  # the kept success is still compared
    # the same state in OLD is not news
    assert not _cmp(tmp_path / "b", [_ok(), fail], [_ok(), fail]).failed


def test_markdown_is_a_valid_table(tmp_path):
    md = compare.render_markdown(_cmp(tmp_path, [_ok(), _ok("TP8_auto")], [_ok(scale=1.2), _ok("TP8_auto")]))
    assert "❌ 5 regressions" in md
    table = [ln for ln in md.splitlines() if ln.startswith("|")]
    assert table[1].startswith("| ---") and len(table) == 4
    assert len({ln.count(" | ") for ln in table}) == 1
    assert "🔴" in md and "7.59 → 9.11 (+20.0%)" in md


def test_bad_threshold_and_metric(tmp_path):
    with pytest.raises(ValueError):
        _cmp(tmp_path, [_ok()], [_ok()], threshold_pct=-1)
    with pytest.raises(ValueError, match="unknown metric"):
        _cmp(tmp_path / "b", [_ok()], [_ok()], metrics=("nope",))


def test_command_exit_codes_and_step_summary(tmp_path):
    old = _dir(tmp_path, "old", [_ok()])
    same = _dir(tmp_path, "same", [_ok()])
    slow = _dir(tmp_path, "slow", [_ok(scale=1.5)])
    summary = tmp_path / "summary.md"
    cp = report_cli("compare", str(old), str(same), env={"GITHUB_STEP_SUMMARY": str(summary)})
    assert cp.returncode == 0, cp.stderr
    assert "no regressions" in cp.stdout and "no regressions" in summary.read_text()
    cp = report_cli("compare", str(old), str(slow), env={"GITHUB_STEP_SUMMARY": str(summary)})
    assert cp.returncode == 1 and "regression" in cp.stdout
    assert summary.read_text().count("## moetrace compare") == 2
    cp = report_cli("compare", str(old), str(slow), "--threshold", "60", "--json")
    assert cp.returncode == 0 and json.loads(cp.stdout)["regressions"] == 0
    cp = report_cli("compare", str(old), str(slow), "-m", "ttft_ms", "-t", "40")
    assert cp.returncode == 1 and "Latency" not in cp.stdout
    cp = report_cli("compare", str(old), str(tmp_path / "nope"))
    assert cp.returncode == 2 and cp.stderr.startswith("moetrace: error:") and cp.stderr.count("\n") == 1
