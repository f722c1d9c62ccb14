"""``moetrace export``: the records as CSV, Parquet, LaTeX or markdown.

- CSV and Parquet: one row per attempt (every record, successes and failures, in
  commit order) with every metric any record has, the breakdown shares, and the
  failure's class and message. ``current`` says whether the attempt is the one the
  views show for its key.
- LaTeX (booktabs) and markdown: the current results as paper tables, units in the
  headers, one table per model or one combined table (``--combined``).
- Intervals (measure/metrics.py): CSV and Parquet get ``<metric>_ci95_lo`` and ``_hi`` columns and
  ``ci_method``; a paper table's cell reads ``value (lo-hi)``, its caption says how they were made.
"""

from __future__ import annotations

import csv
import io
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from .data import METRIC, METRICS, Row, by_model, current, workload_label
from .significance import CI_METHOD_WORDS

__all__ = ["attempt_table", "write_csv", "write_parquet", "paper_tables", "render_latex", "render_markdown",
           "latex_escape", "ExportError"]


class ExportError(ValueError):
    pass


# ------------------------------------------------------------------ one row per attempt
LEAD = ("seq", "key", "model", "config", "status", "current", "tp", "ep", "nodes", "backend", "quantization",
        "batch_size", "input_len", "output_len", "repeat", "engine", "engine_version", "device", "finished_at",
        "attempt_id")
TAIL = ("error_type", "error_phase", "error_message", "predicted", "log_path", "profile_extend", "profile_decode",
        "trace_files", "record_path")
INT_COLUMNS = {"seq", "tp", "ep", "nodes", "batch_size", "input_len", "output_len", "repeat"}
BOOL_COLUMNS = {"current", "predicted"}


def _metric_columns(rows: Sequence[Row]) -> list[str]:
    seen = {k for r in rows for k in r.metrics} - set(LEAD)
    known = [m.key for m in METRICS if m.key in seen]
    rest = sorted(seen - set(known))
    return known + rest


def _ci_columns(rows: Sequence[Row], mcols: Sequence[str]) -> list[str]:
    """``<metric>_ci95_lo``, ``<metric>_ci95_hi`` for each metric some row has an interval of, then
    ``ci_method`` (measure/metrics.py)."""
    have = {k for r in rows for k in r.ci95}
    cols = [f"{k}_ci95_{end}" for k in mcols if k in have for end in ("lo", "hi")]
    return cols + ["ci_method"] if cols else []


def _breakdown_columns(rows: Sequence[Row]) -> list[tuple[str, str, str]]:
    out = []
    for stage in ("extend", "decode"):
        cats = sorted({c for r in rows for c in r.breakdown.get(stage, {})})
        out += [(f"{stage}_{re.sub(r'[^A-Za-z0-9]+', '_', c).strip('_').lower()}_pct", stage, c) for c in cats]
    return out


def attempt_table(rows: Sequence[Row]) -> tuple[list[str], list[dict[str, Any]]]:
    """(columns, one dict per attempt). Missing values are None, never 0."""
    success, failure = current(rows)
    current_seqs = {r.seq for r in success.values()} | {r.seq for r in failure.values()}
    mcols = _metric_columns(rows)
    bcols = _breakdown_columns(rows)
    ccols = _ci_columns(rows, mcols)
    columns = list(LEAD) + mcols + ccols + [c for c, _, _ in bcols] + list(TAIL)
    out = []
    for r in sorted(rows, key=lambda r: r.seq):
        d: dict[str, Any] = {c: getattr(r, c, None) for c in LEAD if c != "current"}
        d["current"] = r.seq in current_seqs
        for k in mcols:
            d[k] = r.value(k)
        for c in ccols:
            k, _, end = c.rpartition("_ci95_")
            d[c] = r.ci_method if c == "ci_method" else (r.ci95[k][end == "hi"] if k in r.ci95 else None)
        for col, stage, cat in bcols:
            d[col] = r.breakdown.get(stage, {}).get(cat)
        for c in TAIL:
            d[c] = getattr(r, c, None)
        d["trace_files"] = ";".join(p for ps in r.traces.values() for p in ps) or None
        out.append(d)
    return columns, out


def _csv_value(v: Any) -> Any:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return repr(v)
    return v


def write_csv(rows: Sequence[Row], out: io.TextIOBase | None = None) -> str:
    columns, data = attempt_table(rows)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(columns)
    for d in data:
        w.writerow([_csv_value(d[c]) for c in columns])
    text = buf.getvalue()
    if out is not None:
        out.write(text)
    return text


def write_parquet(rows: Sequence[Row], path: Path) -> Path:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise ExportError("Parquet needs pyarrow: pip install 'moetrace[parquet]'") from None
    columns, data = attempt_table(rows)
    fields = []
    for c in columns:
        if c in INT_COLUMNS:
            t = pa.int64()
        elif c in BOOL_COLUMNS:
            t = pa.bool_()
        elif c in METRIC or c.endswith(("_pct", "_ci95_lo", "_ci95_hi")) or any(isinstance(d[c], float) for d in data):
            t = pa.float64()
        else:
            t = pa.string()
        fields.append(pa.field(c, t))
    schema = pa.schema(fields)
    arrays = {}
    for f in fields:
        vals = [d[f.name] for d in data]
        if f.type == pa.string():
            vals = [None if v is None else str(v) for v in vals]
        arrays[f.name] = pa.array(vals, type=f.type)
    table = pa.table(arrays, schema=schema)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)
    return path


# ------------------------------------------------------------------ paper tables
PAPER_METRICS = ("latency_s", "ttft_ms", "itl_ms", "itl_p99_ms", "input_throughput_tok_per_s",
                 "output_throughput_tok_per_s")
SHORT_HEADER = {"input_throughput_tok_per_s": ("Input", "tok/s"), "output_throughput_tok_per_s": ("Output", "tok/s"),
                "itl_efficiency": ("ITL eff.", "%"), "ttft_efficiency": ("TTFT eff.", "%")}


@dataclass
class PaperTable:
    title: str                          # model name, or "all models"
    caption: str
    label: str
    header: list[tuple[str, str]]       # (name, unit or "")
    align: str                          # LaTeX column spec
    blocks: list[list[list[Any]]] = field(default_factory=list)  # rows, split where a \midrule goes
    n_text: int = 0                     # leading text columns (config, etc.)


def _header(key: str) -> tuple[str, str]:
    m = METRIC[key]
    return SHORT_HEADER.get(key, (m.label, m.unit))


@dataclass(frozen=True)
class Estimate:
    """A cell with its 95% interval: ``value (lo-hi)``."""

    value: float
    lo: float
    hi: float


def _estimate(r: Row, key: str) -> Estimate | float | None:
    """A paper table's metric cell: the value in its display unit, with its interval where it has one."""
    m, v = METRIC[key], r.value(key)
    if v is None or key not in r.ci95:
        return m.scale(v)
    lo, hi = r.ci95[key]
    return Estimate(m.scale(v), m.scale(lo), m.scale(hi))


class Failed(str):
    """A cell that says why a config has no numbers (spans the metric columns)."""


def paper_tables(rows: Sequence[Row], *, combined: bool = False, failures: bool = True) -> list[PaperTable]:
    """The current results as tables: per model (or one combined), a row per config.
    Each table has the columns its own rows need (efficiency only with planner floors,
    quantization and batch only when they vary)."""
    success, failure = current(rows)
    chosen = list(success.values()) + ([r for k, r in failure.items() if k not in success] if failures else [])
    models = by_model(chosen)
    if combined:
        return [_paper_table(models, "All models", "tab:moetrace-all", model_col=True)] if models else []
    return [_paper_table({m: mrows}, m, f"tab:moetrace-{_slug(m)}", model_col=False) for m, mrows in models.items()]


def _paper_table(models: dict[str, list[Row]], title: str, label: str, *, model_col: bool) -> PaperTable:
    rows = [r for mrows in models.values() for r in mrows]
    ok = [r for r in rows if r.ok]
    metrics = list(PAPER_METRICS) + [k for k in ("itl_efficiency", "ttft_efficiency")
                                     if any(r.value(k) is not None for r in ok)]
    quant = any(r.quantization for r in rows)
    workloads = {r.workload for r in ok}
    multi_w = len(workloads) > 1
    text_cols: list[tuple[str, str]] = [("TP", ""), ("EP", ""), ("Backend", "")]
    if quant:
        text_cols.insert(2, ("Quant.", ""))
    if multi_w:
        text_cols.append(("Batch", ""))
    repeats = sorted({r.repeat or 1 for r in ok})
    stat = ("median of " + "/".join(str(x) for x in repeats) + " runs") if repeats not in ([1], []) else "one run"
    wl = f"{workload_label(next(iter(workloads)))}; " if len(workloads) == 1 else ""

    def line(r: Row) -> list[Any]:
        cells: list[Any] = [r.tp if r.tp is not None else r.config, r.ep or 1]
        if quant:
            cells.append(r.quantization or "native")
        cells.append(r.backend or "?")
        if multi_w:
            cells.append(r.batch_size)
        if r.ok:
            cells += [_estimate(r, k) for k in metrics]
        else:
            cells.append(Failed(r.error_type or "failed"))
        return cells

    blocks = [[([m if i == 0 else ""] if model_col else []) + line(r) for i, r in enumerate(mrows)]
              for m, mrows in models.items()]
    header = ([("Model", "")] if model_col else []) + text_cols + [_header(k) for k in metrics]
    n_text = len(text_cols) + (1 if model_col else 0)
    methods = list(dict.fromkeys(CI_METHOD_WORDS.get(r.ci_method or "", "?") for r in ok if r.ci95))
    ci = f"; in parentheses, 95% confidence intervals ({', '.join(methods)})" if methods else ""
    return PaperTable(title=title, caption=f"{title}: {wl}{stat}{ci}.", label=label, header=header,
                      align="l" * n_text + "r" * len(metrics), blocks=blocks, n_text=n_text)


def _slug(s: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", s.lower()).strip("-") or "model"


_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
                  "<": r"\textless{}", ">": r"\textgreater{}", "|": r"\textbar{}"}


def latex_escape(text: Any) -> str:
    """Text safe inside a LaTeX table cell (all ten specials, and < > |)."""
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in str(text))


def _num(v: Any, dash: str = "–") -> str:
    """A number for a paper table: 3 significant digits, no thousands separator; an :class:`Estimate`
    as ``value (lo-hi)`` with ``dash`` between (LaTeX: ``--``)."""
    if isinstance(v, Estimate):
        return f"{_num(v.value)} ({_num(v.lo)}{dash}{_num(v.hi)})"
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "--"
    if isinstance(v, int):
        return str(v)
    if abs(v) >= 100:
        return f"{v:.0f}"
    return f"{v:.3g}" if v else "0"


def _latex_unit(u: str) -> str:
    return latex_escape(u)


def render_latex(tables: Sequence[PaperTable], *, source: str = "") -> str:
    """booktabs tables, each in a ``table`` float, ready to paste (needs \\usepackage{booktabs})."""
    out = [f"% Generated by moetrace export --format latex{' from ' + source if source else ''}.",
           "% Needs \\usepackage{booktabs} in the preamble."]
    for t in tables:
        n_metric = len(t.header) - t.n_text
        head = " & ".join(latex_escape(n) + (f" ({_latex_unit(u)})" if u else "") for n, u in t.header)
        out += ["", "\\begin{table}[t]", "\\centering", "\\small",
                f"\\caption{{{latex_escape(t.caption)}}}", f"\\label{{{t.label}}}",
                f"\\begin{{tabular}}{{@{{}}{t.align}@{{}}}}", "\\toprule", head + " \\\\", "\\midrule"]
        for bi, block in enumerate(t.blocks):
            if bi:
                out.append("\\midrule")
            for cells in block:
                text = [latex_escape(c) if isinstance(c, str) else _num(c) for c in cells[: t.n_text]]
                rest = cells[t.n_text:]
                if rest and isinstance(rest[0], Failed):
                    text.append(f"\\multicolumn{{{n_metric}}}{{c}}{{\\emph{{{latex_escape(rest[0])}}}}}")
                else:
                    text += [_num(c, "--") for c in rest]
                out.append(" & ".join(text) + " \\\\")
        out += ["\\bottomrule", "\\end{tabular}", "\\end{table}"]
    return "\n".join(out) + "\n"


def render_markdown(tables: Sequence[PaperTable]) -> str:
    from .tables import _md
    parts = []
    for t in tables:
        header = [n + (f" ({u})" if u else "") for n, u in t.header]
        n_metric = len(t.header) - t.n_text
        body = []
        for block in t.blocks:
            for cells in block:
                row = [c if isinstance(c, str) else _num(c) for c in cells[: t.n_text]]
                rest = cells[t.n_text:]
                if rest and isinstance(rest[0], Failed):
                    row += [f"_{rest[0]}_"] + [""] * (n_metric - 1)
                else:
                    row += [_num(c) for c in rest]
                body.append(row)
        parts.append(f"### {t.title}\n\n{_md(header, body)}\n\n{t.caption}")
    return "\n\n".join(parts) + "\n"
