"""report, export, compare and plot on the results of the REAL CPU sweep (the session's
``cpu_sweep`` fixture: vLLM's CPU engine, tiny models, real traces and real failures).

These tests only read the sweep's directory; what they write goes to tmp_path.
"""

from __future__ import annotations

import csv
import io
import json
import re
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path
from urllib.parse import unquote

import pytest

from moetrace.report import data
from moetrace.report.html import esc
from moetrace.results.store import ResultsStore

from .browser import count_colour, hex_rgb, non_white_fraction, open_page
from .conftest import report_cli

pytestmark = pytest.mark.engine


def _records(root: Path) -> list[dict]:
    return ResultsStore(root).records()


def test_cpu_sweep_report_loads_in_chromium_without_errors_and_draws(real_results, tmp_path):
    out = tmp_path / "out" / "report.html"
    cp = report_cli("report", "-r", str(real_results), "--out", str(out))
    assert cp.returncode == 0, cp.stderr
    page = out.read_text()
    recs = _records(real_results)
    success, failure = ResultsStore(real_results).views()
    assert success, "the sweep produced no success"
    for m in {r["model"] for r in recs}:
        assert esc(m) in page
    for f in failure.values():
        assert f'cls">{esc(f["error_type"])}<' in page
    if any((e.get("breakdown") or {}) for e in success.values()):  # the trace analyzer ran
        assert 'class="chart breakdown"' in page
    # every trace file of every record is linked, relative to the report, and exists
    traces = {p for r in recs for st in ("extend", "decode") for p in (r.get("profile") or {}).get(f"{st}_all") or []}
    assert traces, "the sweep captured no trace"
    links = {unquote(h) for h in re.findall(r'href="([^"#]+)"', page) if ".trace." in h}
    assert len(links) == len(traces)
    for h in links:
        assert (out.parent / h).resolve().is_file(), h

    res = open_page(out, tmp_path / "chromium")
    assert res.console == [], res.console  # no console message at all: no error, no blocked fetch
    assert res.status == "ok", res.status
    drawn, total = map(int, res.charts.split("/"))
    assert drawn == total >= 5
    assert count_colour(res.screenshot, hex_rgb(data.PALETTE[0])) > 3000  # the 'auto' bars
    assert non_white_fraction(res.screenshot) > 0.05


def test_cpu_sweep_export_csv_and_parquet_have_every_attempt_and_metric(real_results, tmp_path):
    recs = _records(real_results)
    cp = report_cli("export", "-r", str(real_results), "-f", "csv")
    assert cp.returncode == 0, cp.stderr
    rows = list(csv.DictReader(io.StringIO(cp.stdout)))
    assert len(rows) == len(recs)
    header = set(rows[0])
    for rec, row in zip(recs, rows):
        assert (row["key"], row["status"]) == (rec["key"], rec["status"])
        for k, v in (rec.get("metrics") or {}).items():
            if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "repeat":
                assert k in header
                assert float(row[k]) == pytest.approx(v), k
        if rec["status"] != "success":
            assert row["error_type"] == rec["error"]["type"] and row["latency_s"] == ""
    pq = pytest.importorskip("pyarrow.parquet")
    out = tmp_path / "attempts.parquet"
    cp = report_cli("export", "-r", str(real_results), "-f", "parquet", "-o", str(out))
    assert cp.returncode == 0, cp.stderr
    t = pq.read_table(out)
    assert t.num_rows == len(recs) and set(t.column_names) == header
    assert t.column("key").to_pylist() == [r["key"] for r in recs]


def test_cpu_sweep_export_latex_and_markdown(real_results):
    success, _ = ResultsStore(real_results).views()
    models = {e["model"] for e in success.values()}
    cp = report_cli("export", "-r", str(real_results), "-f", "latex")
    assert cp.returncode == 0, cp.stderr
    tex = cp.stdout
    assert tex.count("\\begin{table}") >= len(models) and tex.count("\\toprule") == tex.count("\\bottomrule")
    assert "Latency (s)" in tex and "TTFT (ms)" in tex and "Output (tok/s)" in tex
    assert "_" not in re.sub(r"\\_", "", re.sub(r"^%.*$", "", tex, flags=re.M))  # every underscore escaped
    cp = report_cli("export", "-r", str(real_results), "-f", "latex", "--combined")
    assert cp.returncode == 0 and cp.stdout.count("\\begin{table}") == 1
    cp = report_cli("export", "-r", str(real_results), "-f", "markdown")
    assert cp.returncode == 0 and all(f"### {m}" in cp.stdout for m in models)


def _slowed_copy(src: Path, dst: Path, key: str, factor: float) -> None:
    """A copy of the real records where one key's last success was made slower (an
    ALTERED copy: the regression compare must find)."""
    (dst / "records").mkdir(parents=True)
    last = None
    for p in sorted((src / "records").glob("*.json")):
        rec = json.loads(p.read_text())
        if rec["key"] == key and rec["status"] == "success":
            last = p.name
        shutil.copy(p, dst / "records" / p.name)
    p = dst / "records" / last
    rec = json.loads(p.read_text())
    for m in [rec["metrics"]] + [r["metrics"] for r in rec.get("runs", [])]:
        for k in list(m):
            if isinstance(m[k], float) and k.startswith(("latency_s", "ttft_ms", "itl_")):
                m[k] *= factor
    p.write_text(json.dumps(rec))
    ResultsStore(dst).rebuild()


def test_cpu_sweep_compare_gates_on_a_regression(real_results, tmp_path):
    cp = report_cli("compare", str(real_results), str(real_results))
    assert cp.returncode == 0, cp.stdout + cp.stderr
    assert "no regressions" in cp.stdout
    success, _ = ResultsStore(real_results).views()
    key = sorted(success)[0]
    slow = tmp_path / "slow"
    _slowed_copy(real_results, slow, key, 3.0)
    summary = tmp_path / "summary.md"
    cp = report_cli("compare", str(real_results), str(slow), env={"GITHUB_STEP_SUMMARY": str(summary)})
    assert cp.returncode == 1, cp.stdout + cp.stderr
    assert f"`{key}` Latency" in cp.stdout and "❌" in summary.read_text()


def test_cpu_sweep_plot(real_results, tmp_path):
    pytest.importorskip("matplotlib")
    success, _ = ResultsStore(real_results).views()
    cp = report_cli("plot", "-r", str(real_results), "-o", str(tmp_path / "fig"))
    assert cp.returncode == 0, cp.stderr
    pngs = sorted((tmp_path / "fig").glob("*__metrics.png"))
    assert len(pngs) >= len({e["model"] for e in success.values()})
    for p in pngs:
        assert non_white_fraction(p) > 0.02
        ET.parse(p.with_suffix(".svg"))
