"""export on SYNTHETIC records: CSV/Parquet rows, LaTeX booktabs and escaping, markdown."""

from __future__ import annotations

import csv
import io
import re

import pytest

from moetrace.report import data, export
from moetrace.results.store import ResultsStore

from .conftest import WEIRD_MODEL, report_cli


def test_csv_has_one_row_per_attempt_with_every_metric(synthetic):
    rows = data.load(synthetic)
    text = export.write_csv(rows)
    got = list(csv.DictReader(io.StringIO(text)))
    assert len(got) == len(ResultsStore(synthetic).records()) == len(rows)
    header = text.splitlines()[0].split(",")
    assert len(header) == len(set(header))
    for k in ("latency_s", "ttft_ms", "itl_ms", "itl_p50_ms", "itl_p99_ms", "input_throughput_tok_per_s",
              "output_throughput_tok_per_s", "itl_floor_ms", "itl_efficiency", "latency_s_min", "latency_s_max",
              "decode_moe_pct", "extend_attention_pct", "error_type", "error_message", "tp", "ep", "backend"):
        assert k in header, k
    by_seq = {int(r["seq"]): r for r in got}
    assert [int(r["seq"]) for r in got] == sorted(by_seq)
    first_ok = next(r for r in got if r["status"] == "success" and r["config"] == "TP8_EP2_auto")
    assert float(first_ok["itl_ms"]) == pytest.approx(14.32) and first_ok["decode_moe_pct"] == "50.0"
    oom = next(r for r in got if r["error_type"] == "OOM")
    assert oom["latency_s"] == "" and oom["current"] == "true"  # missing stays missing, never 0
    # the failure after a success is an attempt too, and still current in the failures view
    timeouts = [r for r in got if r["error_type"] == "Timeout"]
    assert len(timeouts) == 1 and timeouts[0]["current"] == "true"
    assert any(r["model"] == WEIRD_MODEL for r in got)


def test_parquet_round_trips(synthetic, tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")
    path = export.write_parquet(data.load(synthetic), tmp_path / "x.parquet")
    t = pq.read_table(path)
    columns, rows = export.attempt_table(data.load(synthetic))
    assert t.column_names == columns and t.num_rows == len(rows)
    assert str(t.schema.field("latency_s").type) == "double"
    assert str(t.schema.field("tp").type) == "int64"
    assert str(t.schema.field("current").type) == "bool"
    lat = t.column("latency_s").to_pylist()
    assert lat[0] is None and lat[1] == pytest.approx(7.59)


@pytest.mark.parametrize("raw,want", [
    ("TP8_EP2_auto", r"TP8\_EP2\_auto"),
    ("a & b", r"a \& b"),
    ("100% #1 $x$", r"100\% \#1 \$x\$"),
    ("{x}~^\\", r"\{x\}\textasciitilde{}\textasciicircum{}\textbackslash{}"),
    ('Mo<E> "q"', r'Mo\textless{}E\textgreater{} "q"'),
])
def test_latex_escape(raw, want):
    assert export.latex_escape(raw) == want


def _balanced(tex: str) -> bool:
    depth = 0
    for i, ch in enumerate(tex):
        if ch in "{}" and (i == 0 or tex[i - 1] != "\\"):
            depth += 1 if ch == "{" else -1
            if depth < 0:
                return False
    return depth == 0


def test_latex_tables_per_model(synthetic):
    tables = export.paper_tables(data.load(synthetic))
    tex = export.render_latex(tables, source="results")
    assert tex.count("\\begin{table}") == 2 == tex.count("\\end{tabular}")
    for rule in ("\\toprule", "\\midrule", "\\bottomrule"):
        assert rule in tex
    assert "Latency (s) & TTFT (ms) & ITL (ms) & ITL p99 (ms) & Input (tok/s) & Output (tok/s)" in tex
    assert "ITL eff. (\\%)" in tex  # a record has planner floors
    assert "\\multicolumn{8}{c}{\\emph{OOM}}" in tex  # TP4 never succeeded
    assert WEIRD_MODEL not in tex and "Mo\\textless{}E\\textgreater{} \\& " in tex
    assert "\\label{tab:moetrace-qwen3-235b}" in tex
    assert _balanced(tex)
    # every body row has as many cells as its table's header (multicolumn spans the metrics)
    for table in re.findall(r"\\toprule\n(.*?)\\bottomrule", tex, re.S):
        head, *body = [ln for ln in table.strip().splitlines() if ln != "\\midrule"]
        n = head.count(" & ")
        for line in body:
            span = re.search(r"\\multicolumn\{(\d+)\}", line)
            assert line.count(" & ") + (int(span.group(1)) - 1 if span else 0) == n, line
    qwen = tex[tex.index("caption{Qwen3-235B"):]
    assert "Batch &" in qwen  # two workloads in this model's records


def test_latex_combined_and_without_failures(synthetic):
    tex = export.render_latex(export.paper_tables(data.load(synthetic), combined=True, failures=False))
    assert tex.count("\\begin{table}") == 1 and "Model & TP & EP" in tex
    assert "OOM" not in tex and "\\emph{" not in tex
    assert tex.count("Qwen3-235B") == 1  # the model's name on its first row only


def test_markdown_tables(synthetic):
    md = export.render_markdown(export.paper_tables(data.load(synthetic)))
    assert "### Qwen3-235B" in md and "| TP | EP | Backend |" in md
    assert "_OOM_" in md
    for table in md.split("### ")[1:]:
        lines = [ln for ln in table.splitlines() if ln.startswith("|")]
        assert len({ln.count(" | ") for ln in lines}) == 1, table


def test_export_command(synthetic, tmp_path):
    cp = report_cli("export", "-r", str(synthetic), "-f", "csv")
    assert cp.returncode == 0, cp.stderr
    assert len(cp.stdout.strip().splitlines()) == 1 + len(ResultsStore(synthetic).records())
    out = tmp_path / "t" / "tables.tex"
    cp = report_cli("export", "-r", str(synthetic), "-f", "latex", "--combined", "-o", str(out))
    assert cp.returncode == 0, cp.stderr
    assert "\\toprule" in out.read_text()
    cp = report_cli("export", "-r", str(synthetic), "-f", "parquet")
    assert cp.returncode == 2 and cp.stderr.strip().count("\n") == 0 and "--out" in cp.stderr
