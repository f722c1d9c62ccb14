"""``moetrace plot``: the HTML report's charts as static PNG and SVG figures (matplotlib).

Per model (and workload): ``<model>__metrics`` (latency, TTFT, ITL with p50/p99,
output and input throughput), ``<model>__efficiency`` (when the records have
planner floors) and ``<model>__breakdown`` (extend and decode, stacked). The data
and the colours come from :mod:`.data`, as in the HTML report.

The SVGs are reproducible: no date in the metadata and a fixed hash salt.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Sequence

from .data import (CHART_METRICS, BarChart, Breakdown, Row, backend_colors, backend_order, bar_chart, breakdowns,
                   by_model, category_colors, current, fmt_value, workload_label)

__all__ = ["write_plots", "PlotError", "FORMATS"]

FORMATS = ("png", "svg")


class PlotError(ValueError):
    pass


def _mpl():
    try:
        import matplotlib
    except ImportError:
        raise PlotError("plots need matplotlib: pip install 'moetrace[plots]'") from None
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt
    return matplotlib, plt


def _slug(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9.+-]+", "-", s).strip("-.") or "model"


def _draw_bars(ax, chart: BarChart, colors: dict[str, str]) -> None:
    groups = list(chart.groups)
    for gi, g in enumerate(groups):
        gbars = [b for b in chart.bars if b.group == g]
        bw = min(0.8 / max(1, len(gbars)), 0.35)
        x0 = gi - bw * len(gbars) / 2 + bw / 2
        for bi, b in enumerate(gbars):
            x = x0 + bi * bw
            ax.bar(x, b.value, width=bw * 0.92, color=colors.get(b.backend, "#888888"), zorder=2)
            if b.lo is not None and b.hi is not None:
                # a 95% interval need not hold the median (a t interval is about the launch means): clamp
                ax.errorbar([x], [b.value], yerr=[[max(0.0, b.value - b.lo)], [max(0.0, b.hi - b.value)]], fmt="none",
                            ecolor="#222222", elinewidth=1, capsize=3, zorder=3)
            for lbl, v in b.marks:
                ax.plot([x], [v], marker="^" if lbl == "p99" else "o", markersize=5,
                        markerfacecolor="#222222" if lbl == "p99" else "white", markeredgecolor="#222222",
                        linestyle="none", zorder=4)
            top = b.hi if b.hi is not None else b.value
            ax.annotate(fmt_value(b.value), (x, top), xytext=(0, 2), textcoords="offset points", ha="center",
                        va="bottom", fontsize=7)
    if chart.reference is not None:
        ax.axhline(chart.reference, color="#444444", linestyle="--", linewidth=1, zorder=1)
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels(groups, fontsize=8)
    ax.set_xlim(-0.6, len(groups) - 0.4)
    ax.set_title(chart.title, fontsize=10)
    ax.set_ylim(0, chart.ymax * 1.15 if chart.ymax > 0 else 1)
    ax.grid(axis="y", color="#eeeeee", zorder=0)
    ax.tick_params(axis="y", labelsize=8)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)


def _legend(fig, backends: Sequence[str], colors: dict[str, str], marks: bool) -> None:
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch
    handles = [Patch(color=colors[b], label=b) for b in backends]
    if marks:
        handles += [Line2D([], [], marker="o", markerfacecolor="white", markeredgecolor="#222222", linestyle="none",
                           label="ITL p50"),
                    Line2D([], [], marker="^", color="#222222", linestyle="none", label="ITL p99")]
    fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 6), fontsize=8, frameon=False,
               title="MoE backend", title_fontsize=8)


def _save(fig, base: Path, formats: Sequence[str]) -> list[Path]:
    out = []
    for fmt in formats:
        p = base.with_name(f"{base.name}.{fmt}")
        kw = {"metadata": {"Date": None}} if fmt == "svg" else {"metadata": {"Software": None}}
        fig.savefig(p, format=fmt, dpi=150, bbox_inches="tight", **kw)
        out.append(p)
    return out


def _breakdown_ax(ax, bd: Breakdown, colors: dict[str, str]) -> None:
    labels = [c for c, _, _ in bd.configs]
    y = list(range(len(labels)))
    left = [0.0] * len(labels)
    for cat in bd.categories:
        vals = [cats.get(cat, 0.0) for _, _, cats in bd.configs]
        ax.barh(y, vals, left=left, color=colors.get(cat, "#888888"), label=cat, height=0.7, zorder=2)
        for i, v in enumerate(vals):
            if v >= 8:
                ax.text(left[i] + v / 2, i, f"{v:.0f}%", ha="center", va="center", fontsize=7, color="white")
        left = [a + b for a, b in zip(left, vals)]
    ax.set_yticks(y)
    ax.set_yticklabels(labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, max(100.0, max(left, default=100.0)))
    ax.set_xlabel("share of time (%)", fontsize=8)
    ax.set_title(f"{bd.stage.capitalize()} time breakdown", fontsize=10)
    ax.grid(axis="x", color="#eeeeee", zorder=0)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)


def write_plots(rows: Sequence[Row], out_dir: Path, *, formats: Sequence[str] = FORMATS) -> list[Path]:
    """Write every figure; returns the files written."""
    bad = [f for f in formats if f not in FORMATS]
    if bad:
        raise PlotError(f"unknown format(s) {', '.join(bad)}; choose from {', '.join(FORMATS)}")
    matplotlib, plt = _mpl()
    matplotlib.rcParams["svg.hashsalt"] = "moetrace"
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    success, _ = current(rows)
    colors = backend_colors(backend_order(rows))
    cat_colors = category_colors(c for r in rows for st in ("extend", "decode") for c in
                                 sorted(r.breakdown.get(st, {}), key=lambda c, r=r, st=st: -r.breakdown[st][c]))
    written: list[Path] = []
    for model, mrows in by_model(success.values()).items():
        workloads = list(dict.fromkeys(r.workload for r in mrows))
        for w in workloads:
            wrows = [r for r in mrows if r.workload == w]
            stem = _slug(model) + ("" if len(workloads) == 1 else f"__bs{w[0]}_in{w[1]}_out{w[2]}")
            title = f"{model} — {workload_label(w)}"
            backends = backend_order(wrows)
            charts = [c for c in (bar_chart(wrows, k) for k in CHART_METRICS) if c is not None]
            if charts:
                ncol = 3
                nrow = (len(charts) + ncol - 1) // ncol
                fig, axes = plt.subplots(nrow, ncol, figsize=(4.2 * ncol, 3.2 * nrow + 0.8), squeeze=False)
                for ax, chart in zip(axes.flat, charts):
                    _draw_bars(ax, chart, colors)
                for ax in list(axes.flat)[len(charts):]:
                    ax.axis("off")
                fig.suptitle(title, fontsize=11)
                _legend(fig, backends, colors, marks=any(b.marks for c in charts for b in c.bars))
                fig.tight_layout(rect=(0, 0.08, 1, 0.96))
                written += _save(fig, out_dir / f"{stem}__metrics", formats)
                plt.close(fig)
            eff = [c for c in (bar_chart(wrows, k) for k in ("itl_efficiency", "ttft_efficiency")) if c is not None]
            if eff:
                fig, axes = plt.subplots(1, len(eff), figsize=(4.2 * len(eff), 4.0), squeeze=False)
                for ax, chart in zip(axes.flat, eff):
                    _draw_bars(ax, chart, colors)
                fig.suptitle(f"{title}: efficiency against the planner's floor (100% = at the floor)", fontsize=10)
                _legend(fig, backends, colors, marks=False)
                fig.tight_layout(rect=(0, 0.1, 1, 0.94))
                written += _save(fig, out_dir / f"{stem}__efficiency", formats)
                plt.close(fig)
            bds = breakdowns(wrows)
            if bds:
                n = max(len(b.configs) for b in bds)
                fig, axes = plt.subplots(1, len(bds), figsize=(5.5 * len(bds), 1.2 + 0.45 * n + 0.9), squeeze=False)
                for ax, bd in zip(axes.flat, bds):
                    _breakdown_ax(ax, bd, cat_colors)
                cats = list(dict.fromkeys(c for bd in bds for c in bd.categories))
                cats.sort(key=lambda c: c in ("other", "idle"))  # stable: the grey ones last
                from matplotlib.patches import Patch
                fig.legend(handles=[Patch(color=cat_colors[c], label=c) for c in cats], loc="lower center",
                           ncol=min(len(cats), 5), fontsize=8, frameon=False)
                fig.suptitle(title, fontsize=11)
                fig.tight_layout(rect=(0, 0.08 + 0.04 * ((len(cats) - 1) // 5), 1, 0.92))
                written += _save(fig, out_dir / f"{stem}__breakdown", formats)
                plt.close(fig)
    return written
