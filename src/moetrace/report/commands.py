"""Click commands of the reports: ``report``, ``export``, ``compare``, ``plot``.

Registered in ``moetrace.cli`` with ``main.add_command(...)``. Parse, call, print:
the work is in :mod:`.data`, :mod:`.html`, :mod:`.export`, :mod:`.compare` and
:mod:`.plots`. Bad input prints one line and exits 2; ``compare`` exits 1 when it
finds a regression.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Sequence

import click

from ..cli_common import BadInput, bad_input, results_option
from .data import METRIC, Row, load

__all__ = ["report", "export", "compare", "plot"]


def _warn(msg: str) -> None:
    click.echo(f"moetrace: warning: {msg}", err=True)


def _rows(results: str) -> list[Row]:
    return load(Path(results), warn=_warn)


# ---------------------------------------------------------------- report
@click.command("report")
@results_option
@click.option("--out", "-o", default=None, help="HTML file to write [default: <results>/report.html]")
@click.option("--title", default="moetrace report", show_default=True)
@bad_input
def report(results: str, out: str | None, title: str) -> None:
    """One self-contained HTML report (charts, failures, trace links) that opens offline."""
    from .html import write_html
    rows = _rows(results)
    path = write_html(rows, root=Path(results), out=Path(out) if out else Path(results) / "report.html",
                      title=title)
    click.echo(str(path))


# ---------------------------------------------------------------- export
@click.command("export")
@results_option
@click.option("--format", "-f", "fmt", type=click.Choice(["csv", "parquet", "latex", "markdown"]), default="csv",
              show_default=True)
@click.option("--out", "-o", default="-", show_default=True,
              help="file to write ('-' = standard output; Parquet needs a file)")
@click.option("--combined", is_flag=True, help="latex/markdown: one table for all models, not one per model")
@click.option("--no-failures", is_flag=True, help="latex/markdown: leave out configs that only failed")
@bad_input
def export(results: str, fmt: str, out: str, combined: bool, no_failures: bool) -> None:
    """Export the results: CSV or Parquet (one row per attempt, every metric), LaTeX
    (booktabs) or markdown tables."""
    from . import export as ex
    if fmt == "parquet" and out == "-":
        raise BadInput("Parquet is binary: give --out FILE.parquet")
    rows = _rows(results)
    if fmt == "parquet":
        click.echo(str(ex.write_parquet(rows, Path(out))))
        return
    if fmt == "csv":
        text = ex.write_csv(rows)
    else:
        tables = ex.paper_tables(rows, combined=combined, failures=not no_failures)
        if not tables:
            raise BadInput(f"{results} has no results to put in a table")
        text = (ex.render_latex(tables, source=str(results)) if fmt == "latex" else ex.render_markdown(tables))
    if out == "-":
        click.echo(text, nl=False)
    else:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(text, encoding="utf-8")
        click.echo(out, err=True)


# ---------------------------------------------------------------- compare
@click.command("compare")
@click.argument("old")
@click.argument("new")
@click.option("--threshold", "-t", type=float, default=5.0, show_default=True,
              help="percent change in the worse direction that counts as a regression (beyond the noise band)")
@click.option("--metric", "-m", "metrics", multiple=True, type=click.Choice(sorted(METRIC)),
              help="metrics to compare [default: latency, TTFT, ITL, input and output throughput]")
@click.option("--fail-on-missing", is_flag=True, help="a key that succeeded in OLD and is missing from NEW fails too")
@click.option("--json", "as_json", is_flag=True, help="print JSON instead of markdown")
@click.option("--no-step-summary", is_flag=True, help="do not append the markdown to $GITHUB_STEP_SUMMARY")
@bad_input
def compare(old: str, new: str, threshold: float, metrics: Sequence[str], fail_on_missing: bool, as_json: bool,
            no_step_summary: bool) -> None:
    """Compare two results directories per key; exit 1 when anything regressed."""
    from . import compare as cmp_mod
    from .tables import append_step_summary
    cmp = cmp_mod.compare_rows(_rows(old), _rows(new), threshold_pct=threshold,
                               metrics=tuple(metrics) or cmp_mod.DEFAULT_METRICS, old_name=old, new_name=new,
                               fail_on_missing=fail_on_missing)
    md = cmp_mod.render_markdown(cmp)
    click.echo(cmp_mod.to_json(cmp) if as_json else md, nl=False)
    if not no_step_summary:
        append_step_summary(md)
    if cmp.failed:
        sys.exit(1)


# ---------------------------------------------------------------- plot
@click.command("plot")
@results_option
@click.option("--out", "-o", default=None, help="folder for the figures [default: <results>/figures]")
@click.option("--format", "-f", "formats", multiple=True, type=click.Choice(["png", "svg"]),
              help="figure formats [default: png and svg]")
@bad_input
def plot(results: str, out: str | None, formats: Sequence[str]) -> None:
    """Static PNG and SVG figures of the report's charts (matplotlib), for a paper."""
    from .plots import PlotError, write_plots
    rows = _rows(results)
    try:
        files = write_plots(rows, Path(out) if out else Path(results) / "figures", formats=tuple(formats) or
                            ("png", "svg"))
    except PlotError as e:
        raise BadInput(str(e)) from None
    if not files:
        raise BadInput(f"{results} has no successful results to plot")
    for f in files:
        click.echo(str(f))


#: the four commands as one group, for ``python -m moetrace.report.commands`` (before or without cli.py)
group = click.Group("moetrace-report", commands=[report, export, compare, plot],
                    help="moetrace's report commands (also registered in the main `moetrace` CLI).")

if __name__ == "__main__":  # pragma: no cover
    group(prog_name="moetrace")
