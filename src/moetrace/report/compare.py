"""``moetrace compare OLD NEW``: what changed between two results directories, per key.

For every key with a current success in both, and for each compared metric, the
relative change NEW vs OLD and a *noise band* from the repetitions:

    band = (half the min-max range of OLD's runs + half that of NEW's runs) / OLD's median

i.e. the change that two overlapping min-max ranges can explain. A change in the
worse direction (slower latency/TTFT/ITL, lower throughput) is a **regression**
when it exceeds the threshold *and* the noise band (the band is unknown without
repetitions, so then the threshold alone decides). A key that succeeded in OLD and
whose last attempt in NEW failed is a regression too. Keys missing from NEW are listed, and count
only with ``fail_on_missing``.

Beside the band, each change has Welch's t-test of OLD against NEW (``p_value``, ``test``: over launch
means when both have two or more launches, else over runs; report/significance.py), for the reader:
the verdict stays the band's. And the configs of NEW one dimension apart (MoE backend, EP, TP) are
tested against each other (``differences``), in words.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

from ..results.record import split_key
from ..stats import welch_t
from .data import METRIC, Metric, Row, current, fmt_value, run_values
from .significance import samples, significance_lines

__all__ = ["Change", "Comparison", "compare_rows", "render_markdown", "to_json", "DEFAULT_METRICS"]

DEFAULT_METRICS = ("latency_s", "ttft_ms", "itl_ms", "input_throughput_tok_per_s", "output_throughput_tok_per_s")


@dataclass(frozen=True)
class Change:
    key: str
    model: str
    config: str
    metric: str
    old: float
    new: float
    change_pct: float              # (new - old) / old, signed, in percent
    worse_pct: float               # change in the worse direction (negative: better)
    noise_pct: float | None        # None: no repetitions on either side
    verdict: str                   # regression | improvement | noise | ok
    p_value: float | None = None   # Welch's t-test of OLD against NEW; None: a side has one sample
    test: str | None = None        # what it compared: "launch means" | "runs"

    @property
    def flagged(self) -> bool:
        return self.verdict == "regression"


@dataclass
class Comparison:
    old: str
    new: str
    threshold_pct: float
    metrics: tuple[str, ...]
    changes: list[Change] = field(default_factory=list)
    now_failing: list[tuple[str, str]] = field(default_factory=list)   # (key, NEW's error type)
    fixed: list[str] = field(default_factory=list)                     # failed in OLD, succeeds in NEW
    only_old: list[str] = field(default_factory=list)
    only_new: list[str] = field(default_factory=list)
    fail_on_missing: bool = False
    differences: list[str] = field(default_factory=list)               # NEW's configs one dimension apart

    @property
    def regressions(self) -> list[Change]:
        return [c for c in self.changes if c.flagged]

    @property
    def failed(self) -> bool:
        """Whether a nightly gate should fail."""
        return bool(self.regressions or self.now_failing or (self.fail_on_missing and self.only_old))

    @property
    def compared_keys(self) -> list[str]:
        return list(dict.fromkeys(c.key for c in self.changes))


def _half_range(r: Row, key: str) -> float | None:
    vals = run_values(r, key)
    if len(vals) > 1:
        return (max(vals) - min(vals)) / 2
    lo, hi = r.value(f"{key}_min"), r.value(f"{key}_max")
    if lo is not None and hi is not None:
        return (hi - lo) / 2
    return None


def _change(o: Row, n: Row, m: Metric, threshold: float) -> Change | None:
    a, b = o.value(m.key), n.value(m.key)
    if a is None or b is None or a == 0:
        return None
    pct = 100.0 * (b - a) / abs(a)
    worse = pct if m.better == "lower" else -pct
    ho, hn = _half_range(o, m.key), _half_range(n, m.key)
    noise = None if ho is None and hn is None else 100.0 * ((ho or 0.0) + (hn or 0.0)) / abs(a)
    beyond_noise = noise is None or abs(pct) > noise
    if worse > threshold and beyond_noise:
        verdict = "regression"
    elif -worse > threshold and beyond_noise:
        verdict = "improvement"
    elif noise is not None and abs(pct) <= noise and abs(pct) > threshold:
        verdict = "noise"
    else:
        verdict = "ok"
    by_launch = all(len({x for x in r.launches if x is not None}) >= 2 for r in (o, n))
    w = welch_t(samples(o, m.key, by_launch=by_launch), samples(n, m.key, by_launch=by_launch))
    return Change(key=n.key, model=n.model, config=n.config, metric=m.key, old=a, new=b, change_pct=pct,
                  worse_pct=worse, noise_pct=noise, verdict=verdict, p_value=None if w is None else w.p,
                  test="launch means" if by_launch else "runs")


def compare_rows(old: Sequence[Row], new: Sequence[Row], *, threshold_pct: float = 5.0,
                 metrics: Sequence[str] = DEFAULT_METRICS, old_name: str = "OLD", new_name: str = "NEW",
                 fail_on_missing: bool = False) -> Comparison:
    if threshold_pct < 0:
        raise ValueError(f"threshold must be at least 0, got {threshold_pct}")
    unknown = [k for k in metrics if k not in METRIC]
    if unknown:
        raise ValueError(f"unknown metric(s) {', '.join(unknown)}; known: {', '.join(METRIC)}")
    os_, of = current(old)
    ns, nf = current(new)
    cmp = Comparison(old=old_name, new=new_name, threshold_pct=threshold_pct, metrics=tuple(metrics),
                     fail_on_missing=fail_on_missing)
    for key in sorted(os_):
        if key in nf and key not in of:  # NEW's last attempt failed (even with an earlier success kept)
            cmp.now_failing.append((key, nf[key].error_type or "Unknown"))
        if key in ns:
            for k in metrics:
                c = _change(os_[key], ns[key], METRIC[k], threshold_pct)
                if c is not None:
                    cmp.changes.append(c)
        elif key not in nf:
            cmp.only_old.append(key)
    cmp.differences = significance_lines(ns.values())
    cmp.fixed = sorted(k for k in of if k not in os_ and k in ns)
    cmp.only_new = sorted(k for k in ns if k not in os_ and k not in of)
    return cmp


# ------------------------------------------------------------------ output
_MARK = {"regression": "🔴", "improvement": "🟢", "noise": "〰️", "ok": ""}


def _cell(c: Change | None) -> str:
    if c is None:
        return "-"
    band = f" ±{c.noise_pct:.1f}" if c.noise_pct is not None else ""
    p = "" if c.p_value is None else ", p<0.001" if c.p_value < 0.001 else f", p={c.p_value:.2g}"
    mark = _MARK[c.verdict]
    return f"{fmt_value(c.old)} → {fmt_value(c.new)} ({c.change_pct:+.1f}%{band}{p}){' ' + mark if mark else ''}"


def _n(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def render_markdown(cmp: Comparison) -> str:
    """For a terminal and for $GITHUB_STEP_SUMMARY (GitHub markdown)."""
    from .tables import _md
    regs = cmp.regressions
    lines = ["## moetrace compare", "",
             f"OLD `{cmp.old}` → NEW `{cmp.new}`: {_n(len(cmp.compared_keys), 'key')} compared; regression threshold "
             f"{cmp.threshold_pct:g}%, beyond the noise band of the repetitions where there are any.", ""]
    n_bad = len(regs) + len(cmp.now_failing) + (len(cmp.only_old) if cmp.fail_on_missing else 0)
    if n_bad:
        lines.append(f"**❌ {n_bad} regression{'s' if n_bad != 1 else ''}**")
        lines.append("")
        for c in regs:
            band = f", noise ±{c.noise_pct:.1f}%" if c.noise_pct is not None else ", no repetitions"
            lines.append(f"- `{c.key}` {METRIC[c.metric].label}: {fmt_value(c.old)} → {fmt_value(c.new)} "
                         f"{METRIC[c.metric].unit} ({c.change_pct:+.1f}%{band})")
        for key, et in cmp.now_failing:
            lines.append(f"- `{key}`: succeeded in OLD, its last attempt in NEW failed ({et})")
        if cmp.fail_on_missing:
            for key in cmp.only_old:
                lines.append(f"- `{key}`: succeeded in OLD, missing from NEW")
    else:
        lines.append("**✅ no regressions**")
    lines.append("")
    if cmp.changes:
        by_key: dict[str, dict[str, Change]] = {}
        for c in cmp.changes:
            by_key.setdefault(c.key, {})[c.metric] = c
        header = ["model", "config"] + [METRIC[k].header for k in cmp.metrics] + ["verdict"]
        rows = []
        for key, cs in by_key.items():
            any_c = next(iter(cs.values()))
            verdicts = {c.verdict for c in cs.values()}
            verdict = ("regression" if "regression" in verdicts else "improvement" if "improvement" in verdicts
                       else "within noise" if "noise" in verdicts else "unchanged")
            suffix = split_key(key)[2]
            rows.append([any_c.model, any_c.config + (f" ({suffix})" if suffix else "")]
                        + [_cell(cs.get(k)) for k in cmp.metrics] + [verdict])
        lines.append(_md(header, rows))
        lines.append("")
        lines.append("Cells: OLD → NEW (change ±noise band, Welch's t-test p where both have repetitions). "
                     "🔴 regression, 🟢 improvement, 〰️ beyond the threshold but within noise.")
        lines.append("")
    if cmp.differences:
        lines += ["NEW: configs one dimension apart (Welch's t-test, 5%):", *(f"- {x}" for x in cmp.differences), ""]
    for title, keys in (("Fixed (failed in OLD, succeed in NEW)", cmp.fixed),
                        ("Only in OLD (not run in NEW)", cmp.only_old), ("New in NEW", cmp.only_new)):
        if keys:
            lines.append(f"{title}: " + ", ".join(f"`{k}`" for k in keys))
            lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def to_json(cmp: Comparison) -> str:
    d: dict[str, Any] = {k: v for k, v in asdict(cmp).items() if k != "changes"}
    d["changes"] = [asdict(c) | {"flagged": c.flagged} for c in cmp.changes]
    d["regressions"] = len(cmp.regressions)
    d["failed"] = cmp.failed
    return json.dumps(d, indent=2) + "\n"
