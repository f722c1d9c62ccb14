"""The report data layer: saved attempt records -> flat rows and chart data.

Pure: no I/O except :func:`load`, which reads a results directory through the
store. ``html``, ``plots``, ``export`` and ``compare`` all read what this module
returns, so a number means the same thing in every output.

- :class:`Row`: one attempt (success or failure), flattened.
- :func:`current`: the rows behind the store's two views (last success per key;
  last failure of a key with no later success), by the store's own rules.
- :func:`bar_chart`: one metric of one model as groups (TP/EP) of bars (one per
  MoE backend), with the spread over repetitions when there are any.
- :func:`breakdowns`: the extend/decode time breakdown per config, for stacked bars.
- :func:`load_maps`, :func:`ep_rank_bars`, :func:`expert_load_note`: a record's expert load
  (``--expert-load``) as layer x expert heat maps, tokens per EP rank, or why there is none.
"""

from __future__ import annotations

import math
import os
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

from ..matrix import parse_config_name
from ..results.flat import Flat, flat
from ..results.record import DEFAULT_WORKLOAD, Record
from ..text import clip, num

__all__ = ["Metric", "METRICS", "CHART_METRICS", "Row", "load", "rows_from_records", "current",
           "by_model", "bar_chart", "BarChart", "Bar", "breakdowns", "Breakdown", "trace_files",
           "config_sort_key", "group_label", "workload_label", "run_values", "NoResults", "DEFAULT_WORKLOAD",
           "METRIC", "backend_order", "backend_colors", "category_colors", "fmt_value", "nice_ticks", "spread",
           "row_from_record", "LoadMap", "load_maps", "ep_rank_bars", "expert_load_note", "MAX_LOAD_COLUMNS"]


class NoResults(ValueError):
    """A directory that holds no results (bad input for every report command)."""


@dataclass(frozen=True)
class Metric:
    key: str          # key in a record's ``metrics``
    label: str        # short name for a chart title or a table header
    unit: str         # "s", "ms", "tok/s", "%" (efficiency is stored as a fraction)
    better: str       # "lower" | "higher"

    @property
    def header(self) -> str:
        return f"{self.label} ({self.unit})" if self.unit else self.label

    def scale(self, v: float | None) -> float | None:
        """The stored value in this metric's display unit (fractions become percent)."""
        if v is None:
            return None
        return 100.0 * v if self.unit == "%" else v


METRICS: tuple[Metric, ...] = (
    Metric("latency_s", "Latency", "s", "lower"),
    Metric("ttft_ms", "TTFT", "ms", "lower"),
    Metric("itl_ms", "ITL", "ms", "lower"),
    Metric("itl_p50_ms", "ITL p50", "ms", "lower"),
    Metric("itl_p90_ms", "ITL p90", "ms", "lower"),
    Metric("itl_p99_ms", "ITL p99", "ms", "lower"),
    Metric("input_throughput_tok_per_s", "Input throughput", "tok/s", "higher"),
    Metric("output_throughput_tok_per_s", "Output throughput", "tok/s", "higher"),
    Metric("itl_floor_ms", "ITL floor", "ms", "lower"),
    Metric("ttft_floor_ms", "TTFT floor", "ms", "lower"),
    Metric("itl_efficiency", "ITL efficiency", "%", "higher"),
    Metric("ttft_efficiency", "TTFT efficiency", "%", "higher"),
)
METRIC = {m.key: m for m in METRICS}
#: the per-config charts of the HTML report and of ``plot``, in order
CHART_METRICS = ("latency_s", "ttft_ms", "itl_ms", "output_throughput_tok_per_s", "input_throughput_tok_per_s")


@dataclass(frozen=True)
class Row:
    """One attempt record, flattened. Paths are relative to the results directory."""

    seq: int
    key: str
    model: str
    config: str
    status: str
    tp: int | None = None
    ep: int | None = None
    backend: str | None = None
    quantization: str | None = None
    nodes: int | None = None
    batch_size: int | None = None
    input_len: int | None = None
    output_len: int | None = None
    repeat: int | None = None
    engine: str | None = None
    engine_version: str | None = None
    device: str | None = None
    finished_at: str | None = None
    attempt_id: str | None = None
    record_path: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    runs: tuple[dict[str, float], ...] = ()          # per-repetition metrics
    launches: tuple[int | None, ...] = ()            # each run's engine launch (--launches 2+), else None
    ci95: dict[str, tuple[float, float]] = field(default_factory=dict)  # metric -> 95% interval (measure/metrics.py)
    ci_method: str | None = None                     # t_launch_means | bootstrap_runs | none
    delivery: dict[str, Any] = field(default_factory=dict)  # bursts and stalls of the stream (measure/metrics.py)
    breakdown: dict[str, dict[str, float]] = field(default_factory=dict)
    decomposition: dict[str, dict[str, float]] = field(default_factory=dict)  # stage -> {part: ms}
    profile_extend: str | None = None
    profile_decode: str | None = None
    traces: dict[str, tuple[str, ...]] = field(default_factory=dict)  # stage -> all trace files
    profile_error: str | None = None
    error_type: str | None = None
    error_message: str | None = None
    error_phase: str | None = None
    error_evidence: str | None = None
    log_path: str | None = None
    expert_load: dict[str, Any] | None = None  # the record's, as measure/expert_load.py wrote it; None: not asked for
    predicted: bool = False
    imported: bool = False

    @property
    def ok(self) -> bool:
        return self.status == "success"

    def value(self, key: str) -> float | None:
        return num(self.metrics.get(key))

    @property
    def group(self) -> str:
        return group_label(self)

    @property
    def workload(self) -> tuple[int | None, int | None, int | None]:
        return (self.batch_size, self.input_len, self.output_len)


# ------------------------------------------------------------------ records -> rows
_num = num


def _int(v: Any) -> int | None:
    try:
        return int(v) if v is not None else None
    except (TypeError, ValueError):
        return None


def _str(v: Any) -> str | None:
    return None if v is None else str(v)


def row_from_record(rec: Record | Flat | dict[str, Any]) -> Row:
    """A record as a report's row: :func:`~moetrace.results.flat.flat` (the view files' flattening
    too), its numbers kept, the rest cleaned, the config's shape from its detail or its name."""
    f = rec if isinstance(rec, Flat) else flat(rec)
    detail, config = f.config_detail, str(f.config or "")
    tp, ep, nodes, backend, quant = (_int(detail.get("tp")), _int(detail.get("ep")), _int(detail.get("nodes")),
                                     _str(detail.get("backend")), _str(detail.get("quantization")))
    if tp is None:  # an imported legacy record: only the name says it
        try:
            c = parse_config_name(config)
            tp, ep, nodes, backend, quant = c.tp, c.ep, c.nodes, c.backend, c.quantization
        except ValueError:
            pass
    bs, il, ol = f.workload
    metrics = _numbers(f.metrics)
    failed = f.status != "success"
    breakdown = {}
    for stage, cats in (f.breakdown or {}).items():
        if isinstance(cats, dict):
            clean = {str(c): float(v) for c, v in cats.items() if _num(v) is not None}
            if clean:
                breakdown[str(stage)] = clean
    decomposition = {stage: d for stage, d in ((st, decomposition_parts(x))
                                               for st, x in (f.decomposition or {}).items()) if d}
    return Row(
        seq=int(f.seq or 0), key=f.key, model="" if f.model is None else str(f.model), config=config,
        status="failure" if f.status is None else str(f.status), tp=tp, ep=ep or (1 if tp else None),
        backend=backend, quantization=quant, nodes=nodes or (1 if tp else None), batch_size=bs, input_len=il,
        output_len=ol, repeat=_int(f.repeat or metrics.get("repeat")), engine=_str(f.engine),
        engine_version=_str(f.engine_version), device=_str(f.device), finished_at=_str(f.finished_at),
        attempt_id=_str(f.attempt_id), record_path=_str(f.record_path), metrics=metrics,
        runs=tuple(_numbers(m) for m, _ in f.runs), breakdown=breakdown,
        launches=tuple(_int(launch) for _, launch in f.runs), ci95=_intervals(f.metrics),
        ci_method=_str(f.metrics.get("ci_method")),
        delivery=dict(f.metrics.get("delivery") or {}), decomposition=decomposition,
        profile_extend=_str(f.profile_extend), profile_decode=_str(f.profile_decode), traces=f.traces,
        profile_error=_str(f.profile_error or f.analysis_error),
        error_type=_str(f.error_type) if failed else None, error_message=_str(f.error_message) if failed else None,
        error_phase=_str(f.error_phase), error_evidence=f.error_evidence, log_path=_str(f.error_log_path or f.log_path),
        expert_load=f.expert_load, predicted=f.predicted, imported=f.imported)


def _numbers(m: dict[str, Any]) -> dict[str, float]:
    """Every finite number of a metrics object, by name."""
    return {k: float(v) for k, v in m.items() if _num(v) is not None}


def _intervals(m: dict[str, Any]) -> dict[str, tuple[float, float]]:
    """The metrics' ``<key>_ci95: [lo, hi]`` as {key: (lo, hi)} (those that are two numbers)."""
    out = {}
    for k, v in m.items():
        if k.endswith("_ci95") and isinstance(v, (list, tuple)) and len(v) == 2 and all(_num(x) is not None for x in v):
            out[k[: -len("_ci95")]] = (float(v[0]), float(v[1]))
    return out


def rows_from_records(records: Iterable[Record | dict[str, Any]]) -> list[Row]:
    return [row_from_record(r) for r in records]


def load(root: str | os.PathLike[str], *, warn=None) -> list[Row]:
    """Every attempt of a results directory, in commit order.

    A directory with only the spec's two JSON files (written before records existed,
    e.g. by the original trace scripts) is read from those, without writing anything.
    Raises :class:`NoResults` when there is nothing to read."""
    from ..results.store import FAILURE_FILE, RECORDS, SUCCESS_FILE, ResultsStore
    root = Path(root)
    if not root.is_dir():
        raise NoResults(f"{root} is not a results directory (it does not exist)")
    if not (root / RECORDS).is_dir() and not (root / SUCCESS_FILE).exists() and not (root / FAILURE_FILE).exists():
        raise NoResults(f"{root} holds no results (no {RECORDS}/ and no {SUCCESS_FILE})")
    records = ResultsStore(root, warn=warn, readonly=True).all_records()
    if not records:
        raise NoResults(f"{root} holds no results yet")
    return rows_from_records(records)


def current(rows: Sequence[Row]) -> tuple[dict[str, Row], dict[str, Row]]:
    """(success, failure) rows keyed like the store's views, by the store's rules: a
    re-run updates a key, a success removes it from failures, and a failure never
    replaces a success."""
    success: dict[str, Row] = {}
    failure: dict[str, Row] = {}
    for r in sorted(rows, key=lambda r: r.seq):
        if r.ok:
            success[r.key] = r
            failure.pop(r.key, None)
        else:
            failure[r.key] = r
    return success, failure


# ------------------------------------------------------------------ ordering and labels
def config_sort_key(r: Row) -> tuple:
    return (r.tp if r.tp is not None else 1 << 30, r.ep or 1, r.nodes or 1, r.quantization or "",
            r.backend or "", r.config, tuple(x if x is not None else -1 for x in r.workload))


def group_label(r: Row) -> str:
    """The TP/EP group a config's bar stands in (quantization and nodes too, when set)."""
    if r.tp is None:
        return r.config
    parts = [f"TP{r.tp}"]
    if (r.ep or 1) > 1:
        parts.append(f"EP{r.ep}")
    if (r.nodes or 1) > 1:
        parts.append(f"{r.nodes} nodes")
    if r.quantization:
        parts.append(r.quantization)
    return " ".join(parts)


def workload_label(w: tuple[int | None, int | None, int | None]) -> str:
    bs, il, ol = w
    if bs is None:
        return "workload unknown"
    return f"batch {bs}, {il} in / {ol} out tokens"


def by_model(rows: Iterable[Row]) -> dict[str, list[Row]]:
    """Rows per model (models sorted), configs in TP/EP/backend order."""
    out: dict[str, list[Row]] = {}
    for r in rows:
        out.setdefault(r.model, []).append(r)
    return {m: sorted(out[m], key=config_sort_key) for m in sorted(out)}


def backend_order(rows: Iterable[Row]) -> list[str]:
    """Every backend, 'auto' first: one colour per backend across a whole report."""
    seen = {r.backend or "?" for r in rows}
    return sorted(seen, key=lambda b: (b != "auto", b))


# ------------------------------------------------------------------ chart data
def run_values(r: Row, key: str) -> list[float]:
    """The metric's value in each repetition (empty without per-run metrics)."""
    return [float(m[key]) for m in r.runs if _num(m.get(key)) is not None]


@dataclass(frozen=True)
class Bar:
    group: str
    backend: str
    config: str
    key: str
    value: float
    lo: float | None = None     # spread over repetitions (min), when repeated
    hi: float | None = None
    marks: tuple[tuple[str, float], ...] = ()   # extra points drawn on the bar, e.g. ("p50", 3.1)
    n: int = 1                  # repetitions
    interval: str = "min-max"   # what lo-hi is: "min-max" over repetitions or "95% CI" (the record's)


@dataclass(frozen=True)
class BarChart:
    title: str
    metric: Metric
    groups: tuple[str, ...]
    backends: tuple[str, ...]
    bars: tuple[Bar, ...]
    reference: float | None = None   # a horizontal line (100 % for efficiency)

    @property
    def ymax(self) -> float:
        vals = [b.hi if b.hi is not None else b.value for b in self.bars]
        vals += [v for b in self.bars for _, v in b.marks]
        if self.reference is not None:
            vals.append(self.reference)
        return max(vals, default=0.0)


def bar_chart(rows: Sequence[Row], key: str, *, title: str | None = None) -> BarChart | None:
    """One metric for successful rows of one model and workload: bars grouped by
    TP/EP, one per backend. ITL gets its p50 and p99 as marks. None when no row
    has the metric."""
    metric = METRIC[key]
    bars = []
    for r in sorted(rows, key=config_sort_key):
        v = metric.scale(r.value(key))
        if v is None:
            continue
        runs = [metric.scale(x) for x in run_values(r, key)]
        lo, hi = (min(runs), max(runs)) if len(runs) > 1 else (None, None)
        if lo is None and r.value(f"{key}_min") is not None and r.value(f"{key}_max") is not None:
            lo, hi = metric.scale(r.value(f"{key}_min")), metric.scale(r.value(f"{key}_max"))
        interval = "min-max"
        if key in r.ci95:  # the 95% interval the record states wins over the runs' range
            (lo, hi), interval = (metric.scale(x) for x in r.ci95[key]), "95% CI"
        marks: tuple[tuple[str, float], ...] = ()
        if key == "itl_ms":
            marks = tuple((lbl, r.value(k)) for lbl, k in (("p50", "itl_p50_ms"), ("p99", "itl_p99_ms"))
                          if r.value(k) is not None)
        bars.append(Bar(group=r.group, backend=r.backend or "?", config=r.config, key=r.key, value=v, lo=lo,
                        hi=hi, marks=marks, n=max(len(r.runs), int(r.value("repeat") or 1)), interval=interval))
    if not bars:
        return None
    groups = tuple(dict.fromkeys(b.group for b in bars))
    backends = tuple(b for b in backend_order(rows) if any(x.backend == b for x in bars))
    ref = 100.0 if metric.unit == "%" else None
    return BarChart(title=title or metric.header, metric=metric, groups=groups, backends=backends,
                    bars=tuple(bars), reference=ref)


@dataclass(frozen=True)
class Breakdown:
    stage: str
    categories: tuple[str, ...]                           # legend order (largest overall first)
    configs: tuple[tuple[str, str, dict[str, float]], ...]  # (config, key, {category: percent})


def breakdowns(rows: Sequence[Row]) -> list[Breakdown]:
    """Per stage (extend, decode), the time share of each category per config."""
    out = []
    for stage in ("extend", "decode"):
        items = [(r.config, r.key, r.breakdown[stage]) for r in sorted(rows, key=config_sort_key)
                 if r.breakdown.get(stage)]
        if not items:
            continue
        totals: dict[str, float] = {}
        for _, _, cats in items:
            for c, v in cats.items():
                totals[c] = totals.get(c, 0.0) + v
        cats_order = tuple(sorted(totals, key=lambda c: (c in ("other", "idle"), -totals[c], c)))
        out.append(Breakdown(stage=stage, categories=cats_order, configs=tuple(items)))
    return out


DECOMPOSITION_PARTS = ("floor", "above floor: moe", "above floor: attention", "above floor: gemm",
                       "above floor: communication", "above floor: other", "idle in steps", "host/other")


def decomposition_parts(d: Any) -> dict[str, float]:
    """A record's ``profile.decomposition[stage]`` as {part: ms} (DECOMPOSITION_PARTS; values may be
    negative: kernel time under the floor's share, or a profiled step longer than the measured one)."""
    if not isinstance(d, dict) or _num(d.get("measured_ms")) is None:
        return {}
    out = {"floor": _num(d.get("floor_ms")) or 0.0}
    above = d.get("above_floor_by_group_ms") or {}
    if above:
        for g in ("moe", "attention", "gemm", "communication", "other"):
            out[f"above floor: {g}"] = _num(above.get(g)) or 0.0
    else:  # no floor: all kernel time is above it
        out["above floor: other"] = _num(d.get("busy_ms")) or 0.0
    out["idle in steps"] = _num(d.get("idle_ms")) or 0.0
    out["host/other"] = _num(d.get("host_other_ms")) or 0.0
    out["measured"] = float(d["measured_ms"])
    return out


@dataclass(frozen=True)
class Decomposition:
    stage: str
    metric: str                                            # "ITL" or "TTFT"
    configs: tuple[tuple[str, str, dict[str, float]], ...]  # (config, key, {part: ms, "measured": ms})


def decompositions(rows: Sequence[Row]) -> list[Decomposition]:
    """Per stage (decode: ITL, extend: TTFT), each config's measured time in parts, ms."""
    out = []
    for stage, metric in (("decode", "ITL"), ("extend", "TTFT")):
        items = tuple((r.config, r.key, r.decomposition[stage]) for r in sorted(rows, key=config_sort_key)
                      if r.decomposition.get(stage))
        if items:
            out.append(Decomposition(stage, metric, items))
    return out


def trace_files(r: Row) -> list[tuple[str, str]]:
    """(stage, path) of every trace file of an attempt, relative to the results directory."""
    return [(stage, p) for stage in ("extend", "decode") for p in r.traces.get(stage, ())]


def spread(values: Sequence[float]) -> float | None:
    """Relative spread (max - min) / median of repeated values; None with fewer than two."""
    if len(values) < 2:
        return None
    med = statistics.median(values)
    return (max(values) - min(values)) / abs(med) if med else None


# ------------------------------------------------------------------ expert load
MAX_LOAD_COLUMNS = 256  # a heat map wider than this sums neighbouring experts into one column


@dataclass(frozen=True)
class LoadMap:
    """One stage of a record's expert load: tokens per expert (column) per MoE layer (row).

    With more experts than ``MAX_LOAD_COLUMNS``, each column sums ``bin`` neighbouring experts
    (column c holds experts c*bin .. min(experts, (c+1)*bin) - 1)."""

    stage: str
    layers: tuple[int, ...]                 # the model's layer index of each row
    experts: int
    bin: int
    values: tuple[tuple[int, ...], ...]     # [row][column] tokens
    tokens: int | None                      # tokens of the stage (each counted once, not top_k times)
    passes: int | None
    imbalance: tuple[float, ...]            # max/mean per layer, over single experts (not over bins)
    ep_size: int = 1

    @property
    def columns(self) -> int:
        return len(self.values[0]) if self.values else 0

    @property
    def vmax(self) -> int:
        return max((max(r) for r in self.values if r), default=0)

    def expert_range(self, col: int) -> tuple[int, int]:
        """First and last expert of a column."""
        return col * self.bin, min(self.experts, (col + 1) * self.bin) - 1


def _int_table(t: Any) -> list[list[int]] | None:
    """A JSON table of counts as ints, or None when it is not one (rows of equal length)."""
    if not isinstance(t, list) or not t or not all(isinstance(r, list) and r for r in t):
        return None
    out = [[int(v) if _num(v) is not None else 0 for v in r] for r in t]
    return out if len({len(r) for r in out}) == 1 else None


def load_maps(el: dict[str, Any] | None, *, max_columns: int = MAX_LOAD_COLUMNS) -> list[LoadMap]:
    """The heat maps of a record's expert load, extend then decode (none without counts)."""
    if not isinstance(el, dict) or not el.get("available") or el.get("error"):
        return []
    out = []
    for stage in ("extend", "decode"):
        s = (el.get("stages") or {}).get(stage)
        table = _int_table(s.get("tokens_per_expert")) if isinstance(s, dict) else None
        if table is None:
            continue
        experts = len(table[0])
        b = -(-experts // max_columns) if experts > max_columns else 1
        values = tuple(tuple(sum(r[i:i + b]) for i in range(0, experts, b)) for r in table)
        layers = el.get("moe_layers")
        if not (isinstance(layers, list) and len(layers) == len(table) and all(_int(x) is not None for x in layers)):
            layers = list(range(len(table)))
        imb = s.get("imbalance") if isinstance(s.get("imbalance"), list) else []
        out.append(LoadMap(stage=stage, layers=tuple(int(x) for x in layers), experts=experts, bin=b, values=values,
                           tokens=_int(s.get("tokens")), passes=_int(s.get("passes")),
                           imbalance=tuple(float(x) for x in imb if _num(x) is not None),
                           ep_size=_int(el.get("ep_size")) or 1))
    return out


def ep_rank_bars(el: dict[str, Any] | None) -> list[tuple[str, tuple[int, ...], float | None]]:
    """Per stage with EP > 1: (stage, tokens each EP rank's experts received summed over the MoE
    layers, the worst layer's max/mean over ranks). A token counts once per expert it picks."""
    if not isinstance(el, dict) or (_int(el.get("ep_size")) or 1) <= 1:
        return []
    out = []
    for stage in ("extend", "decode"):
        s = (el.get("stages") or {}).get(stage)
        table = _int_table(s.get("ep_rank_tokens")) if isinstance(s, dict) else None
        if table is not None:
            out.append((stage, tuple(sum(col) for col in zip(*table)), _num(s.get("ep_rank_imbalance"))))
    return out


def _short(text: Any, n: int = 60) -> str:
    """The head of a reason: up to its first parenthesis, colon or semicolon, clipped."""
    t = " ".join(str(text or "").split())
    for sep in (" (", ": ", "; "):
        if sep in t:
            t = t.split(sep, 1)[0]
    return clip(t, n)


def expert_load_note(el: dict[str, Any] | None, *, short: bool = True) -> str | None:
    """Why a record that asked for expert load has no numbers: "n/a (the engine's reason)" or
    "failed (what went wrong)"; None when it has them (or did not ask). ``short``: the reason's
    head only, for a table cell."""
    if not isinstance(el, dict):
        return None
    f = _short if short else (lambda t: " ".join(str(t or "").split()))
    if not el.get("available"):
        return f"n/a ({f(el.get('reason') or 'not exposed by the engine')})"
    if el.get("error"):
        return f"failed ({f(el['error'])})"
    return None


# ------------------------------------------------------------------ presentation helpers shared by html and plots
#: Okabe-Ito, distinguishable with colour-blindness; fixed colours for the common backends
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000")
_FIXED_BACKENDS = {"auto": 0, "triton": 1, "triton_kernel": 2, "deep_gemm": 3}
CATEGORY_PALETTE = ("#4E79A7", "#F28E2B", "#59A14F", "#E15759", "#76B7B2", "#EDC948", "#B07AA1", "#FF9DA7",
                    "#9C755F", "#BAB0AC")


def backend_colors(backends: Iterable[str]) -> dict[str, str]:
    """One colour per backend, stable across a report and its figures."""
    out: dict[str, str] = {}
    used = set()
    rest = []
    for b in backends:
        if b in _FIXED_BACKENDS:
            out[b] = PALETTE[_FIXED_BACKENDS[b]]
            used.add(_FIXED_BACKENDS[b])
        else:
            rest.append(b)
    free = [i for i in range(len(PALETTE)) if i not in used] or list(range(len(PALETTE)))
    for j, b in enumerate(rest):
        out[b] = PALETTE[free[j % len(free)]]
    return out


def category_colors(categories: Iterable[str]) -> dict[str, str]:
    """One colour per breakdown category ('other' and 'idle' grey)."""
    out: dict[str, str] = {}
    i = 0
    for c in categories:
        if c in out:
            continue
        if c in ("other", "idle"):
            out[c] = "#BAB0AC" if c == "other" else "#DDDDDD"
        else:
            out[c] = CATEGORY_PALETTE[i % (len(CATEGORY_PALETTE) - 1)]
            i += 1
    return out


def fmt_value(v: float | None) -> str:
    """A number for a label: three significant digits, thousands grouped."""
    if v is None:
        return "-"
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    if v == 0:
        return "0"
    return f"{v:.3g}"


def nice_ticks(vmax: float, n: int = 5) -> list[float]:
    """Round tick values from 0 to at least vmax."""
    if not vmax or vmax <= 0 or not math.isfinite(vmax):
        return [0.0, 1.0]
    raw = vmax / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    ticks = [0.0]
    while ticks[-1] < vmax - 1e-12 * vmax:
        ticks.append(round(ticks[-1] + step, 12))
    return ticks
