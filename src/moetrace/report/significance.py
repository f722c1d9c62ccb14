"""Intervals and significance, as the reports show them.

- :func:`interval_text`: a value with its 95% interval, ``1.43 (1.38-1.48)`` (the record's
  ``<metric>_ci95``; measure/metrics.py says how it was made).
- :func:`pair_tests`: for each pair of configs of one model that differ in exactly one dimension (MoE
  backend, EP or TP; same engine, workload, nodes and quantization), Welch's t-test of one metric: over
  the launch means when both have two or more launches (runs of one launch share its state, so only
  launches are independent), else over the runs. Each pair is tested on its own at 5%: with many pairs,
  some "significant" ones are expected by chance (no multiple-comparison correction).
- :meth:`PairTest.text`: the verdict in words, ``TP1_triton vs TP1_auto: triton 4.0% slower than auto
  (ITL p50), within noise (Welch t over runs, 5 and 5, p=0.31)``.
"""

from __future__ import annotations

import html
import statistics
from dataclasses import dataclass
from typing import Iterable, Sequence

from ..stats import Welch, welch_t
from .data import METRIC, Row

__all__ = ["interval_text", "html_notes", "DIMENSIONS", "samples", "one_dimension_pairs", "pair_tests", "PairTest", "significance_lines",
           "SIGNIFICANCE_METRICS", "ALPHA", "CI_METHOD_WORDS"]

ALPHA = 0.05
SIGNIFICANCE_METRICS = ("itl_p50_ms", "ttft_ms")
CI_METHOD_WORDS = {"t_launch_means": "Student-t over launch means",
                   "bootstrap_runs": "bootstrap over runs (one launch)", "none": "none (one run)"}


def interval_text(value: str, ci: Sequence[float] | None, fmt=lambda x: f"{x:.2f}") -> str:
    """``value (lo-hi)`` when there is an interval, else the value as it was."""
    if not ci or len(ci) != 2 or ci[0] is None or ci[1] is None:
        return value
    sep = " to " if ci[0] < 0 else "-"  # a t interval of few launches can reach below 0: "(-0.20 to 2.90)"
    return f"{value} ({fmt(ci[0])}{sep}{fmt(ci[1])})"


def samples(r: Row, key: str, *, by_launch: bool) -> list[float]:
    """What a test compares of a row: each launch's mean of its runs (``by_launch``), else each run's value."""
    vals = [(float(m[key]), n) for m, n in zip(r.runs, r.launches or (None,) * len(r.runs)) if key in m]
    if not by_launch:
        return [v for v, _ in vals]
    per: dict[int | None, list[float]] = {}
    for v, n in vals:
        per.setdefault(n, []).append(v)
    return [statistics.fmean(v) for _, v in sorted(per.items(), key=lambda kv: kv[0] or 0)]


def _n_launches(r: Row) -> int:
    return len({n for n in r.launches if n is not None})


DIMENSIONS = ("backend", "ep", "tp")


def _dim(r: Row, dim: str) -> str | int | None:
    return r.backend if dim == "backend" else (getattr(r, dim) or 1)


def _label(r: Row, dim: str) -> str:
    return r.backend or "?" if dim == "backend" else f"{dim.upper()}{_dim(r, dim)}"


def _order(r: Row, dim: str) -> tuple:
    return (r.backend != "auto", r.backend or "") if dim == "backend" else (_dim(r, dim),)


def one_dimension_pairs(rows: Iterable[Row]) -> list[tuple[str, Row, Row]]:
    """(dimension, base, other) for successful rows of one model that differ in exactly one of MoE backend,
    EP, TP and agree on the rest (engine, workload, nodes, quantization). The base is ``auto`` for a backend
    pair (else the first by name), the smaller EP or TP otherwise."""
    ok = [r for r in rows if r.ok and r.tp is not None]
    out = []
    for i, a in enumerate(ok):
        for b in ok[i + 1:]:
            if (a.model, a.engine, a.workload, a.nodes or 1, a.quantization) != \
                    (b.model, b.engine, b.workload, b.nodes or 1, b.quantization):
                continue
            diff = [d for d in DIMENSIONS if _dim(a, d) != _dim(b, d)]
            if len(diff) != 1:
                continue
            d = diff[0]
            base, other = sorted((a, b), key=lambda r: _order(r, d))
            out.append((d, base, other))
    return out


@dataclass(frozen=True)
class PairTest:
    dimension: str            # backend | ep | tp
    metric: str
    base: Row
    other: Row
    change_pct: float | None  # (other - base) / base, in percent
    over: str                 # "launch means" | "runs"
    n: tuple[int, int]        # samples of base and other
    welch: Welch | None       # None: a side had fewer than two samples

    @property
    def significant(self) -> bool:
        return self.welch is not None and self.welch.p < ALPHA

    def text(self) -> str:
        m, d = METRIC[self.metric], self.dimension
        head = f"{self.other.config} vs {self.base.config}: "
        if self.change_pct is None:
            return head + f"no {m.label} to compare"
        if m.unit in ("s", "ms"):  # a time: more is slower
            word = "slower" if self.change_pct > 0 else "faster"
        else:
            word = "lower" if self.change_pct < 0 else "higher"
        size = f"{abs(self.change_pct):.1f}%"
        claim = f"{_label(self.other, d)} {size} {word} than {_label(self.base, d)} ({m.label})"
        if self.welch is None:
            short = self.base.config if self.n[0] < 2 else self.other.config
            return f"{head}{claim}, not tested ({short} has fewer than two runs: no spread to test against)"
        p = "p<0.001" if self.welch.p < 0.001 else f"p={self.welch.p:.2g}"
        verdict = "significant" if self.significant else "within noise"
        return f"{head}{claim}, {verdict} (Welch t over {self.over}, {self.n[0]} and {self.n[1]}, {p})"


def _test(d: str, base: Row, other: Row, key: str) -> PairTest:
    by_launch = _n_launches(base) >= 2 and _n_launches(other) >= 2
    a, b = samples(base, key, by_launch=by_launch), samples(other, key, by_launch=by_launch)
    va, vb = base.value(key), other.value(key)
    change = None if va is None or vb is None or va == 0 else 100.0 * (vb - va) / abs(va)
    return PairTest(d, key, base, other, change, "launch means" if by_launch else "runs", (len(a), len(b)),
                    welch_t(a, b))


def pair_tests(rows: Iterable[Row], metrics: Sequence[str] = SIGNIFICANCE_METRICS) -> list[PairTest]:
    """Welch's test of each metric for each one-dimension pair (:func:`one_dimension_pairs`)."""
    return [_test(d, a, b, k) for d, a, b in one_dimension_pairs(rows) for k in metrics
            if a.value(k) is not None and b.value(k) is not None]


def significance_lines(rows: Iterable[Row], metrics: Sequence[str] = SIGNIFICANCE_METRICS) -> list[str]:
    """One line per pair and metric, in words (:meth:`PairTest.text`)."""
    return [t.text() for t in pair_tests(rows, metrics)]



def html_notes(rows: Sequence[Row]) -> str:
    """The HTML report's lines under a summary table: what its intervals are, and the pairs' tests."""
    out = []
    if any(r.ci95 for r in rows):
        methods = ", ".join(dict.fromkeys(CI_METHOD_WORDS.get(r.ci_method or "", "?") for r in rows if r.ci95))
        out.append(f'<p class="muted">In parentheses and as whiskers: 95% confidence intervals '
                   f'({html.escape(methods)}).</p>')
    if lines := significance_lines(rows):
        out.append('<h3>Differences between configs one dimension apart</h3><ul class="significance">'
                   + "".join(f"<li>{html.escape(x)}</li>" for x in lines) + "</ul>")
    return "".join(out)
