"""Analyze engine traces: steps, time per category, device idle, top kernels or ops, unmatched names.

Library use::

    from moetrace.traces.analyze import analyze_trace, analyze_traces, short_breakdown
    from moetrace.traces.report import format_summary
    s = analyze_trace("run/1700000000-TP-0-DECODE.trace.json.gz")
    short_breakdown(s, "DECODE")  # {"moe": 41.2, "attention": 22.0, "communication": 18.1, ...}

One pass per file, streaming (see :mod:`moetrace.traces.reader`); nothing here keeps events.
On traces with device activity (CUDA kernels, memcpy, memset) the categories come from the
device; on CPU-only traces (vLLM's CPU build) from the self time of host ops.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from itertools import chain
from pathlib import Path
from typing import Any

from ..stats import percentile
from .accumulate import OUTSIDE, DeviceTimeline, HostOps, NameTotals, Steps
from .categories import GROUPS, IDLE, KERNEL, UNMATCHED, classify
from .layers import CommStats, LayerStats, StepSequences, StepTimes, WaitSplit, kernel_role, split_wait
from .names import TraceName, parse_trace_name, step_stage
from .reader import DEFAULT_MAX_BYTES, Span, TraceError, TraceStream

__all__ = [
    "DEFAULT_MAX_BYTES", "MultiSummary", "OpStat", "RankRow", "StageGroup", "StageSummary", "StepStats",
    "TraceError", "TraceSummary", "analyze_trace", "analyze_traces", "group_stages",
    "short_breakdown", "step_count",
]

_DEVICE_CATS = frozenset({"kernel", "gpu_memcpy", "gpu_memset", "Kernel", "Memcpy", "Memset"})
_HOST_OP_CATS = frozenset({"cpu_op", "Operator"})
_ANNOTATION_CATS = frozenset({"user_annotation", "gpu_user_annotation"})
_UNMATCHED_LISTED = 25


@dataclass(frozen=True)
class StepStats:
    count: int
    mean_us: float
    p50_us: float
    p99_us: float
    total_us: float
    source: str  # "device" (gpu_user_annotation spans) or "host" (the annotation on the CPU)

    @staticmethod
    def of(durations: Sequence[float], source: str) -> StepStats:
        xs = sorted(durations)
        return StepStats(len(xs), sum(xs) / len(xs), percentile(xs, 50), percentile(xs, 99), sum(xs), source)


@dataclass(frozen=True)
class OpStat:
    name: str
    category: str
    count: int
    total_us: float
    share: float  # of the trace's busy time (kernel time on a device, op time on a CPU)


@dataclass(frozen=True)
class StageSummary:
    stage: str
    steps: StepStats | None
    category_us: dict[str, float]  # includes "idle" on device traces

    def shares(self) -> dict[str, float]:
        return _shares(self.category_us)


@dataclass(frozen=True)
class TraceSummary:
    path: str
    engine: str | None  # "sglang" / "vllm", from the file name's form
    rank: int | None
    parallel: dict[str, int]  # sizes/indices written in the file name (tp, dp, pp, ep ...)
    stage: str | None  # EXTEND / DECODE when the file holds one stage (SGLang profile_by_stage)
    has_device: bool  # device kernels present (else only host ops: a CPU-only trace)
    devices: list[str]
    category_us: dict[str, float]  # whole trace; "idle" = device gaps inside steps
    idle_us: float
    idle_between_steps_us: float
    busy_us: float  # device busy time (union over streams), or host op time on CPU traces
    stages: dict[str, StageSummary]
    top_ops: list[OpStat]
    unmatched: list[OpStat]  # the largest unmatched names (all are counted in unmatched_us)
    unmatched_us: float
    unmatched_names: int
    events: int
    bytes_read: int
    header: dict[str, Any] = field(default_factory=dict)  # distributedInfo, GPU name, versions
    layers: dict[str, LayerStats] = field(default_factory=dict)  # per stage: transformer layers (layers.py)
    comm: dict[str, CommStats] = field(default_factory=dict)  # per stage: collectives, overlap, per-call times
    step_times: dict[str, StepTimes] = field(default_factory=dict)  # per stage: busy and gaps inside each step

    @property
    def source(self) -> str:
        return "device" if self.has_device else "host"

    def shares(self) -> dict[str, float]:
        """Category -> fraction of (category time + idle)."""
        return _shares(self.category_us)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["source"] = self.source
        d["shares"] = self.shares()
        d["short_breakdown"] = {stage: short_breakdown(self, stage) for stage in self.stages}
        return _rounded(d)


@dataclass(frozen=True)
class RankRow:
    rank: int | None
    path: str
    step_mean_us: float | None
    busy_us: float  # category time, idle excluded
    breakdown: dict[str, float]
    collective_us: float = 0.0  # time inside collectives (all-reduce, all-gather, all-to-all, other comm.)
    compute_us: float = 0.0  # busy time excluding collectives
    wait_us: float | None = None  # of collective_us: waiting for another rank (calls matched across ranks)
    transfer_us: float | None = None  # of collective_us: the rest (the shortest rank's time of each call)


@dataclass(frozen=True)
class StageGroup:
    stage: str
    rows: list[RankRow]
    slowest_rank: int | None  # the longest mean step: with collectives, waiting for others counts in it
    slowest_path: str
    spread: float | None  # slowest / fastest mean step time
    category_us: dict[str, float]  # summed over ranks
    breakdown: dict[str, float]  # short breakdown of the sum
    # The rank the others wait for: the least time inside collectives (a rank that reaches a
    # collective first waits in it for the last one); ties: the most busy time outside them.
    # Without collectives: the slowest rank.
    bottleneck_rank: int | None = None
    bottleneck_path: str = ""
    # Collective calls matched across ranks: wait and transfer per rank, and per step the rank the
    # others waited for and by how much (see layers.split_wait). When present it names bottleneck_rank.
    wait: WaitSplit | None = None


@dataclass(frozen=True)
class MultiSummary:
    traces: list[TraceSummary]
    groups: list[StageGroup]

    def to_dict(self) -> dict[str, Any]:
        return _rounded({"traces": [t.to_dict() for t in self.traces], "groups": [asdict(g) for g in self.groups]})


# ---- analysis ---------------------------------------------------------------------------------
class _Analysis:
    """The state of one pass over one trace."""

    def __init__(self, file_stage: str | None, host_ops: bool) -> None:
        self.file_stage = file_stage
        self.default_stage = file_stage or OUTSIDE
        self.steps = Steps()
        self.device = NameTotals()
        self.host = NameTotals()
        self.host_ops = HostOps(self.host) if host_ops else None
        self.timeline = DeviceTimeline()
        self.seq = StepSequences()
        self.events = 0
        self._kinds: dict[str, tuple[str, int]] = {}  # kernel name -> (category, role): names repeat every step

    def feed(self, spans: Iterable[Span], path: Path) -> None:
        """Account the reader's spans (:meth:`TraceStream.spans`: kernels, memcpys, memsets, ops and
        annotations), in file order."""
        device, host_op, annotation, note_op = self._device, self._host_op, self._annotation, self.steps.note_op
        host_ops = self.host_ops is not None
        n = 0
        span = None
        try:
            for span in spans:
                n += 1
                cat = span.cat
                if cat in _HOST_OP_CATS:
                    if host_ops:
                        host_op(span)
                    else:  # a GPU trace: host ops only say which External ids a step's host work reached
                        note_op(span.pid, span.ts, span.args.ext)
                elif cat in _DEVICE_CATS:
                    device(span)
                else:
                    annotation(span)
        except (KeyError, TypeError, ValueError) as e:  # a pid that is a list...
            raise TraceError(f"{path}: malformed event ({type(e).__name__}: {e}): {str(span)[:200]}") from None
        finally:
            self.events += n

    def _annotation(self, span: Span) -> None:
        stage = step_stage(span.name)
        if stage is None:
            return
        ts, ext = span.ts, span.args.ext
        if span.cat == "gpu_user_annotation":
            self.steps.add_device_span(stage, ext if ext is not None else (span.tid, ts), ts, ts + span.dur)
        else:
            self.steps.add(stage, span.pid, ts, span.dur, ext)
            self.timeline.has_steps = True

    def _stage(self, step: int | None) -> str:
        return self.default_stage if step is None else self.steps.items[step].stage

    def _host_op(self, span: Span) -> None:  # a CPU trace: the host ops are the work
        pid, ts = span.pid, span.ts
        step = self.steps.note_op(pid, ts, span.args.ext)
        self.host_ops.add((pid, span.tid), span.name, ts, span.dur, self._stage(step))

    def _device(self, span: Span) -> None:
        name, ts, dur, ext = span.name, span.ts, span.dur, span.args.ext
        end = ts + dur
        step = self.steps.of_external_id(ext) if ext is not None else None
        stage = self._stage(step)
        kind = self._kinds.get(name)
        if kind is None:
            category = classify(name, KERNEL)
            kind = self._kinds[name] = (category, kernel_role(name, category))
        category, role = kind
        self.device.add(name, category, stage, dur)
        self.timeline.add(span.device, ts, end, step, stage)
        if step is not None:
            self.seq.add(step, stage, ts, end, role, category)
        elif ext is None:  # a CUDA-graph replay's or Triton's kernel: no launching op recorded
            self.seq.add_follower(ts, end, role, category)
        else:  # launched outside every step: the kernels after it no longer follow the last step
            self.seq.break_chain()

    def finish(self) -> None:
        if self.host_ops is not None:
            self.host_ops.finish()
        self.timeline.finish()
        self.seq.finish()

    @property
    def has_device(self) -> bool:
        return bool(self.device.by_name)


def _run(path: Path, max_bytes: int, file_stage: str | None, host_ops: bool | None) -> tuple[_Analysis, TraceStream]:
    """One pass. ``host_ops=None``: account host ops unless the header lists GPUs (Kineto's
    ``deviceProperties``, written before the events), which saves most of the work on GPU traces."""
    stream = TraceStream(path, max_bytes=max_bytes)
    spans = stream.spans(_DEVICE_CATS | _HOST_OP_CATS | _ANNOTATION_CATS)  # feed() reads nothing else
    first = next(spans, None)
    if host_ops is None:
        host_ops = not stream.header.get("deviceProperties")
    a = _Analysis(file_stage, host_ops)
    if first is not None:
        a.feed(chain((first,), spans), path)
    a.finish()
    return a, stream


def analyze_trace(path: str | Path, *, top_n: int = 15, max_bytes: int = DEFAULT_MAX_BYTES) -> TraceSummary:
    """Summarize one trace file (``.json`` or ``.json.gz``); raises :class:`TraceError` naming the file."""
    path = Path(path)
    name = parse_trace_name(path.name)
    a, stream = _run(path, max_bytes, name.stage, host_ops=None)
    if not a.has_device and a.host_ops is None:  # GPUs listed, yet no kernels: a CPU-activity-only profile
        a, stream = _run(path, max_bytes, name.stage, host_ops=True)
    header = stream.header
    if name.rank is None and isinstance(header.get("distributedInfo"), dict):
        name = replace(name, rank=header["distributedInfo"].get("rank"))
    return _summarize(path, name, a, header, stream, top_n)


def _summarize(path: Path, name: TraceName, a: _Analysis, header: dict, stream: TraceStream,
               top_n: int) -> TraceSummary:
    totals = a.device if a.has_device else a.host
    category_us = dict(totals.by_category)
    busy = sum(a.timeline.busy_us.values()) if a.has_device else sum(category_us.values())
    idle = sum(a.timeline.idle_by_stage.values()) if a.has_device else 0.0
    if a.has_device:
        category_us[IDLE] = idle
    work = sum(v for k, v in category_us.items() if k != IDLE) or 1.0
    rows = sorted(totals.by_name.items(), key=lambda kv: -kv[1][1])
    top = [OpStat(n, c, k, us, us / work) for n, (k, us, c) in rows[:top_n]]
    unmatched_rows = [(n, r) for n, r in rows if r[2] == UNMATCHED]
    unmatched = [OpStat(n, c, k, us, us / work) for n, (k, us, c) in unmatched_rows[:_UNMATCHED_LISTED]]
    return TraceSummary(
        path=str(path), engine=name.engine, rank=name.rank, parallel=dict(name.parallel), stage=name.stage,
        has_device=a.has_device, devices=sorted(str(d) for d in a.timeline.busy_us),
        category_us=category_us, idle_us=idle, idle_between_steps_us=a.timeline.idle_between_steps_us,
        busy_us=busy, stages=_stages(a, totals), top_ops=top, unmatched=unmatched,
        unmatched_us=sum(r[1] for _, r in unmatched_rows), unmatched_names=len(unmatched_rows),
        events=a.events + stream.skipped, bytes_read=stream.bytes_read, header=_header_facts(header),
        layers=a.seq.layer_stats() if a.has_device else {}, comm=a.seq.comm_stats() if a.has_device else {},
        step_times=a.seq.step_times() if a.has_device else {},
    )


def _stages(a: _Analysis, totals: NameTotals) -> dict[str, StageSummary]:
    host_durs = a.steps.host_durations()
    device_durs = a.steps.device_durations
    out: dict[str, StageSummary] = {}
    names = set(totals.by_stage) | set(host_durs) | set(a.timeline.idle_by_stage if a.has_device else ())
    for stage in sorted(names, key=_stage_order):
        cats = dict(totals.by_stage.get(stage, {}))
        if a.has_device:
            cats[IDLE] = a.timeline.idle_by_stage.get(stage, 0.0)
        dev = device_durs.get(stage) if a.has_device else None
        steps = StepStats.of(dev, "device") if dev else (
            StepStats.of(host_durs[stage], "host") if host_durs.get(stage) else None)
        out[stage] = StageSummary(stage, steps, cats)
    return out


def _header_facts(header: dict) -> dict[str, Any]:
    facts: dict[str, Any] = {}
    info = header.get("distributedInfo")
    if isinstance(info, dict):
        facts["distributed"] = {k: info[k] for k in ("backend", "rank", "world_size", "nccl_version") if k in info}
    props = header.get("deviceProperties")
    if isinstance(props, list) and props:
        facts["device_names"] = sorted({str(p.get("name")) for p in props if isinstance(p, dict)})
    for k in ("cuda_runtime_version", "cuda_driver_version", "cupti_version"):
        if k in header:
            facts[k] = header[k]
    return facts


def analyze_traces(paths: Iterable[str | Path], *, top_n: int = 15,
                   max_bytes: int = DEFAULT_MAX_BYTES) -> MultiSummary:
    """Summarize several traces (ranks of one config): per rank, and across ranks per stage."""
    traces = [analyze_trace(p, top_n=top_n, max_bytes=max_bytes) for p in paths]
    return MultiSummary(traces, group_stages(traces))


def group_stages(traces: Sequence[TraceSummary]) -> list[StageGroup]:
    """Per stage, one row per rank (of summaries already made), in stage order."""
    by_stage: dict[str, list[tuple[TraceSummary, StageSummary]]] = defaultdict(list)
    for t in traces:
        for stage, s in t.stages.items():
            by_stage[stage].append((t, s))
    return [_group(stage, members) for stage, members in sorted(by_stage.items(), key=lambda kv: _stage_order(kv[0]))]


def step_count(summary: TraceSummary, stage: str) -> int:
    """How many steps of ``stage`` (EXTEND, DECODE) the trace holds; 0 for a trace of nothing."""
    s = summary.stages.get(stage.upper())
    return s.steps.count if s is not None and s.steps is not None else 0


def _collective_us(category_us: dict[str, float]) -> float:
    return sum(category_us.get(c, 0.0) for c in GROUPS["communication"])


def _group(stage: str, members: list[tuple[TraceSummary, StageSummary]]) -> StageGroup:
    rows = []
    for t, s in members:
        busy = sum(v for k, v in s.category_us.items() if k != IDLE)
        coll = _collective_us(s.category_us)
        rows.append(RankRow(t.rank, t.path, s.steps.mean_us if s.steps else None, busy, _short(s.category_us),
                            coll, busy - coll))
    rows.sort(key=lambda r: (r.rank is None, r.rank if r.rank is not None else 0, r.path))
    timed = [r for r in rows if r.step_mean_us is not None]
    key = (lambda r: r.step_mean_us) if timed else (lambda r: r.busy_us)
    slowest = max(timed or rows, key=key)
    fastest = min(timed or rows, key=key)
    spread = key(slowest) / key(fastest) if key(fastest) else None
    summed: dict[str, float] = defaultdict(float)
    for _, s in members:
        for k, v in s.category_us.items():
            summed[k] += v
    wait = _wait_split(stage, rows, members)
    if wait is not None:
        for i, r in enumerate(rows):
            rows[i] = replace(r, wait_us=wait.wait_us[i], transfer_us=wait.transfer_us[i])
        # the rank the others waited for in most steps; ties: the one that waited least in all
        held = min(rows, key=lambda r: (-wait.held_steps.get(r.rank, 0), r.wait_us))
    elif len(rows) > 1 and any(r.collective_us > 0 for r in rows):
        held = min(rows, key=lambda r: (r.collective_us, -r.compute_us))
    else:
        held = slowest
    return StageGroup(stage, rows, slowest.rank, slowest.path, spread, dict(summed), _short(summed),
                      held.rank, held.path, wait)


def _wait_split(stage: str, rows: list[RankRow], members: list[tuple[TraceSummary, StageSummary]]) -> WaitSplit | None:
    """Wait versus transfer inside collectives, calls matched across ranks (rows' order)."""
    if len(rows) < 2 or len({r.rank for r in rows}) != len(rows):
        return None
    by_path = {t.path: t for t, _ in members}
    calls = []
    for r in rows:
        c = by_path[r.path].comm.get(stage)
        if c is None:
            return None
        calls.append(c.call_us)
    return split_wait([r.rank for r in rows], calls)


# ---- views ------------------------------------------------------------------------------------
def short_breakdown(summary: TraceSummary, stage: str | None = None) -> dict[str, float]:
    """Percent per coarse group (moe, attention, gemm, communication, other, idle) for a record.

    ``stage`` picks one stage (EXTEND, DECODE, MIXED); by default the file's own stage if it has
    one, else the whole trace. Groups with no time are left out.
    """
    stage = (stage or summary.stage or "").upper()  # "decode" and "DECODE" alike
    cats = summary.stages[stage].category_us if stage in summary.stages else summary.category_us
    return _short(cats)


def _short(category_us: dict[str, float]) -> dict[str, float]:
    total = sum(category_us.values())
    if total <= 0:
        return {}
    out = {g: round(100.0 * sum(category_us.get(c, 0.0) for c in cats) / total, 1) for g, cats in GROUPS.items()}
    return {g: v for g, v in out.items() if v > 0}


def _shares(category_us: dict[str, float]) -> dict[str, float]:
    total = sum(category_us.values())
    return {k: v / total for k, v in category_us.items()} if total > 0 else {}


# ---- small helpers ----------------------------------------------------------------------------
def _stage_order(stage: str) -> tuple[int, str]:
    return ({"EXTEND": 0, "MIXED": 1, "DECODE": 2}.get(stage, 3), stage)


def _rounded(x: Any) -> Any:
    if isinstance(x, float):
        return round(x, 4)
    if isinstance(x, dict):
        return {k: _rounded(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_rounded(v) for v in x]
    return x

