"""Intervals and significance in the reports, on REAL records (tests/data/gpu: vLLM and SGLang on an
H200, Qwen3-235B slice TP1 auto/triton, TP2, TP2_EP2; tests/data/gpu-3: SGLang Qwen3 TP1_auto launched
three times with and three times without the expert recorder, in turns)."""

from __future__ import annotations

import csv
import io
import json
import shutil
import statistics
from pathlib import Path

import pytest

from moetrace.measure.metrics import aggregate_runs, by_launch
from moetrace.report import compare, data, export, significance as sig
from moetrace.report.html import render_html
from moetrace.report.tables import model_tables
from moetrace.results.flat import success_entry
from moetrace.stats import t_interval, welch_t

DATA = Path(__file__).resolve().parents[1] / "data"


def _gpu1_rows(tmp_path, engine="vllm"):
    shutil.copytree(DATA / "gpu" / "results", tmp_path / "r")
    return [r for r in data.load(tmp_path / "r") if r.engine == engine and r.model == "Qwen3-235B-slice" and r.ok]


def _launches(prefix: str, *, config: str = "TP1_auto", backend: str = "auto") -> dict:
    """gpu-3's three records of one turn (recoff or recon) as one record of three launches, its metrics
    aggregated as the runner does (aggregate_runs, then by_launch)."""
    recs = [json.loads(next((DATA / "gpu-3" / f"results-sglang-{prefix}-{i}" / "records").glob("*.json")).read_text())
            for i in (1, 2, 3)]
    rec = json.loads(json.dumps(recs[0]))
    runs = [dict(run, launch=i) for i, r in enumerate(recs, 1) for run in r["runs"]]
    ms = [r["metrics"] for r in runs]
    agg = aggregate_runs(ms)
    agg.update(by_launch(ms, [r["launch"] for r in runs]))
    rec.update(runs=runs, metrics=agg, config=config, key=f"{rec['model']}::{config}")
    rec["config_detail"]["backend"] = backend
    rec["workload"]["launches"] = 3
    return rec


def test_one_dimension_pairs_of_real_configs(tmp_path):
    rows = _gpu1_rows(tmp_path)
    pairs = {(d, a.config, b.config) for d, a, b in sig.one_dimension_pairs(rows)}
    # TP1_auto and TP2_EP2_auto differ in two dimensions: no pair
    assert pairs == {("backend", "TP1_auto", "TP1_triton"), ("tp", "TP1_auto", "TP2_auto"),
                     ("ep", "TP2_auto", "TP2_EP2_auto")}


def test_welch_over_runs_in_words(tmp_path):
    rows = {r.config: r for r in _gpu1_rows(tmp_path)}
    tests = {(t.base.config, t.other.config, t.metric): t for t in sig.pair_tests(rows.values())}
    t = tests[("TP1_auto", "TP1_triton", "itl_p50_ms")]
    auto, triton = data.run_values(rows["TP1_auto"], "itl_p50_ms"), data.run_values(rows["TP1_triton"], "itl_p50_ms")
    assert len(auto) == len(triton) == 3 and t.welch == welch_t(auto, triton) and t.over == "runs"
    change = 100 * (rows["TP1_triton"].value("itl_p50_ms") / rows["TP1_auto"].value("itl_p50_ms") - 1)
    assert t.change_pct == pytest.approx(change)
    verdict = "significant" if t.welch.p < 0.05 else "within noise"
    p = f"p={t.welch.p:.2g}" if t.welch.p >= 0.001 else "p<0.001"
    word = "slower" if change > 0 else "faster"
    assert t.text() == (f"TP1_triton vs TP1_auto: triton {abs(change):.1f}% {word} than auto (ITL p50), {verdict} "
                        f"(Welch t over runs, 3 and 3, {p})")
    ep = tests[("TP2_auto", "TP2_EP2_auto", "ttft_ms")]
    assert ep.text().startswith("TP2_EP2_auto vs TP2_auto: EP2 ") and "than EP1 (TTFT)" in ep.text()


def test_welch_over_launch_means_when_both_have_launches():
    """The recorder's turns relabelled as another backend, to make a one-dimension pair of two
    three-launch records: the test runs over the three launch means of each side."""
    off = data.row_from_record(_launches("recoff"))
    on = data.row_from_record(_launches("recon", config="TP1_triton", backend="triton"))
    (t,) = [x for x in sig.pair_tests([off, on]) if x.metric == "itl_p50_ms"]
    a, b = sig.samples(off, "itl_p50_ms", by_launch=True), sig.samples(on, "itl_p50_ms", by_launch=True)
    assert len(a) == len(b) == 3 and t.over == "launch means" and t.n == (3, 3) and t.welch == welch_t(a, b)
    assert a[0] == pytest.approx(statistics.fmean(r["itl_p50_ms"] for r, n in zip(off.runs, off.launches) if n == 1))
    assert "within noise (Welch t over launch means, 3 and 3, p=" in t.text()
    # the record's interval is the t interval of the same launch means
    assert off.ci_method == "t_launch_means" and off.ci95["itl_p50_ms"] == pytest.approx(t_interval(a))


def test_one_run_is_not_tested(tmp_path):
    rows = {r.config: r for r in _gpu1_rows(tmp_path)}
    one = data.Row(**{**rows["TP1_triton"].__dict__, "runs": rows["TP1_triton"].runs[:1], "launches": (None,)})
    (t,) = [x for x in sig.pair_tests([rows["TP1_auto"], one], ["itl_p50_ms"])]
    assert t.welch is None and t.text().endswith("not tested (TP1_triton has fewer than two runs: no spread to test against)")


def test_tables_show_intervals_only_where_there_are_some(tmp_path):
    rows = _gpu1_rows(tmp_path)
    entries = {r.key: success_entry(json.loads((tmp_path / "r" / r.record_path).read_text())) for r in rows}
    plain = model_tables(entries, base=tmp_path / "r")
    e = entries["Qwen3-235B-slice::TP1_auto"]
    cells = " | ".join(f"{e[k]:.2f}" for k in ("latency_s", "input_throughput_tok_per_s", "output_throughput_tok_per_s",
                                                 "itl_ms"))
    assert f"| TP1_auto | 1 | 4096 | {cells} |" in plain  # records without intervals: the spec's cells, unchanged
    assert "In parentheses" not in plain
    assert "- TP1_triton vs TP1_auto: triton " in plain and "(Welch t over runs, 3 and 3, " in plain
    e = success_entry(_launches("recoff"))
    lo, hi = e["itl_ms_ci95"]
    text = model_tables({e["model"]: e}, extra=("ttft",))
    assert f"| {e['itl_ms']:.2f} ({lo:.2f}-{hi:.2f}) |" in text
    assert f"{e['ttft_ms']:.2f} ({e['ttft_ms_ci95'][0]:.2f}-{e['ttft_ms_ci95'][1]:.2f})" in text
    assert "In parentheses: 95% confidence intervals (Student-t over launch means; docs/fidelity.md)." in text


def test_export_has_lo_and_hi(tmp_path):
    row = data.row_from_record(_launches("recoff"))
    got = list(csv.DictReader(io.StringIO(export.write_csv([row]))))[0]
    assert float(got["itl_p50_ms_ci95_lo"]) == pytest.approx(row.ci95["itl_p50_ms"][0])
    assert float(got["itl_p50_ms_ci95_hi"]) == pytest.approx(row.ci95["itl_p50_ms"][1])
    assert got["ci_method"] == "t_launch_means"
    tables = export.paper_tables([row])
    lo, hi = row.ci95["ttft_ms"]
    assert f"({export._num(lo)}--{export._num(hi)})" in export.render_latex(tables)
    md = export.render_markdown(tables)
    assert f"({export._num(lo)}–{export._num(hi)})" in md and "95% confidence intervals (Student-t over" in md


def test_html_draws_intervals_and_says_what_differs(tmp_path):
    off = data.row_from_record(_launches("recoff"))
    on = data.row_from_record(_launches("recon", config="TP1_triton", backend="triton"))
    page = render_html([off, on], root=tmp_path, out_dir=tmp_path)
    assert "whiskers: 95% confidence interval" in page and "title=\"95% confidence interval " in page
    assert "Differences between configs one dimension apart" in page and "over launch means" in page


def test_compare_tests_old_against_new(tmp_path):
    old = [data.row_from_record(_launches("recoff"))]
    new = [data.row_from_record(_launches("recon"))]
    cmp = compare.compare_rows(old, new, metrics=["itl_p50_ms"])
    (c,) = cmp.changes
    a, b = sig.samples(old[0], "itl_p50_ms", by_launch=True), sig.samples(new[0], "itl_p50_ms", by_launch=True)
    assert c.test == "launch means" and c.p_value == pytest.approx(welch_t(a, b).p)
    assert f"p={c.p_value:.2g}" in compare.render_markdown(cmp)
    assert json.loads(compare.to_json(cmp))["changes"][0]["p_value"] == pytest.approx(c.p_value)


def test_interval_text():
    assert sig.interval_text("1.43", [1.381, 1.476]) == "1.43 (1.38-1.48)"
    assert sig.interval_text("1.43", [-0.2, 2.9]) == "1.43 (-0.20 to 2.90)"
    assert sig.interval_text("1.43", None) == "1.43"
