"""Streaming accumulators: each takes one event at a time and keeps only running totals.

Memory is bounded by the number of steps, distinct op/kernel names, the nesting depth of host
ops and a fixed reorder window of device intervals, never by the number of events.

- :class:`Steps`: step annotations, their windows and External-id ranges (to attribute kernels).
- :class:`HostOps`: self time of host ops (CPU-only traces), each attributed to its category or to
  the category of the outermost MoE/attention/communication/sampling op it runs inside, so that
  ``aten::mm`` inside ``_C::cpu_fused_moe`` counts as MoE and nested ops are never counted twice.
- :class:`DeviceTimeline`: busy union per device and the gaps between kernels, split into idle
  inside steps (by stage) and idle between steps.
"""

from __future__ import annotations

import heapq
from bisect import bisect_right
from collections import defaultdict
from dataclasses import dataclass, field

from .categories import (
    ALLGATHER,
    ALLREDUCE,
    ALLTOALL,
    ATTENTION,
    COMM_OTHER,
    MOE_GEMM,
    MOE_PERMUTE,
    MOE_ROUTING,
    OP,
    SAMPLING,
    classify,
)

__all__ = ["OUTSIDE", "DeviceTimeline", "HostOps", "NameTotals", "Step", "Steps"]

OUTSIDE = "OUTSIDE"  # the stage key of work outside any step annotation (and not told by the file name)
# Categories that own the ops nested in them (a GEMM inside a fused-MoE op is MoE time).
_DOMAIN = frozenset({MOE_ROUTING, MOE_GEMM, MOE_PERMUTE, ATTENTION, ALLREDUCE, ALLTOALL, ALLGATHER, COMM_OTHER,
                     SAMPLING})
_REORDER_WINDOW = 4096  # device intervals held back to merge slightly out-of-order events


@dataclass
class Step:
    stage: str
    start: float
    end: float
    ext: int | None  # External id of the annotation: kernels launched inside have larger ones
    ext_max: int | None = None  # largest External id of a host op seen inside the window


class Steps:
    """Host step annotations, in the order the trace gives them (Kineto: by start time)."""

    def __init__(self) -> None:
        self.items: list[Step] = []
        # from gpu_user_annotation: one span per stream a step ran on (vLLM runs GLM's shared expert on a
        # second stream), keyed by the host annotation's External id, merged into one span per step
        self._device_spans: dict[str, dict[object, list[float]]] = defaultdict(dict)
        self._by_pid: dict[object, tuple[list[float], list[int]]] = {}
        self._ext_starts: list[int] = []
        self._ext_steps: list[int] = []
        self._cached: tuple = (object(), 0.0, -1.0, -1)  # (pid, start, end, index) of the last step found

    def add(self, stage: str, pid: object, start: float, dur: float, ext: int | None) -> None:
        idx = len(self.items)
        self.items.append(Step(stage, start, start + dur, ext, ext))
        starts, idxs = self._by_pid.setdefault(pid, ([], []))
        pos = bisect_right(starts, start)
        starts.insert(pos, start)
        idxs.insert(pos, idx)
        if ext is not None:
            pos = bisect_right(self._ext_starts, ext)
            self._ext_starts.insert(pos, ext)
            self._ext_steps.insert(pos, idx)

    def add_device_span(self, stage: str, key: object, start: float, end: float) -> None:
        span = self._device_spans[stage].get(key)
        if span is None:
            self._device_spans[stage][key] = [start, end]
        else:
            span[0], span[1] = min(span[0], start), max(span[1], end)

    @property
    def device_durations(self) -> dict[str, list[float]]:
        return {stage: [e - s for s, e in spans.values()] for stage, spans in self._device_spans.items()}

    def at(self, pid: object, ts: float) -> int | None:
        """Index of the step of process ``pid`` whose window holds ``ts``."""
        c_pid, c_start, c_end, c_idx = self._cached
        if pid == c_pid and c_start <= ts <= c_end:
            return c_idx
        found = self._by_pid.get(pid)
        if not found:
            return None
        starts, idxs = found
        pos = bisect_right(starts, ts) - 1
        if pos < 0 or ts > self.items[idxs[pos]].end:
            return None
        s = self.items[idxs[pos]]
        self._cached = (pid, s.start, s.end, idxs[pos])
        return idxs[pos]

    def note_op(self, pid: object, ts: float, ext: int | None) -> int | None:
        """Record a host op: extends its step's External-id range; returns the step index."""
        c_pid, c_start, c_end, idx = self._cached  # at(), its usual case inline (once per host op)
        if not (pid == c_pid and c_start <= ts <= c_end):
            idx = self.at(pid, ts)
        if idx is not None and ext is not None:
            s = self.items[idx]
            if s.ext_max is None or ext > s.ext_max:
                s.ext_max = ext
        return idx

    def of_external_id(self, ext: int) -> int | None:
        """The step a kernel belongs to, from the External id of the op that launched it."""
        pos = bisect_right(self._ext_starts, ext) - 1
        if pos < 0:
            return None
        s = self.items[self._ext_steps[pos]]
        return self._ext_steps[pos] if s.ext_max is not None and ext <= s.ext_max else None

    def host_durations(self) -> dict[str, list[float]]:
        out: dict[str, list[float]] = defaultdict(list)
        for s in self.items:
            out[s.stage].append(s.end - s.start)
        return out


@dataclass
class NameTotals:
    """Per-name count and time, and per-category and per-stage time."""

    by_name: dict[str, list] = field(default_factory=dict)  # name -> [count, us, category]
    by_category: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    by_stage: dict[str, dict[str, float]] = field(default_factory=lambda: defaultdict(lambda: defaultdict(float)))

    def add(self, name: str, category: str, stage: str, us: float, count: int = 1) -> None:
        row = self.by_name.get(name)
        if row is None:
            self.by_name[name] = [count, us, category]
        else:
            row[0] += count
            row[1] += us
        self.by_category[category] += us
        self.by_stage[stage][category] += us


class HostOps:
    """Self time of host ops per (pid, tid) call stack; events must come in start order per thread."""

    def __init__(self, totals: NameTotals) -> None:
        self.totals = totals
        # frame: [end, owner category, self us, owner name, stage, counts as a call]
        self._stacks: dict[tuple, list[list]] = defaultdict(list)

    def add(self, key: tuple, name: str, ts: float, dur: float, stage: str) -> None:
        stack = self._stacks[key]
        while stack and stack[-1][0] <= ts:
            self._close(stack.pop())
        own = classify(name, OP)
        if stack:
            parent = stack[-1]
            parent[2] -= min(dur, parent[0] - ts)
            if own not in _DOMAIN and parent[1] in _DOMAIN:  # generic work inside a MoE/attention/... op
                stack.append([ts + dur, parent[1], dur, parent[3], stage, False])
                return
        stack.append([ts + dur, own, dur, name, stage, True])

    def _close(self, frame: list) -> None:
        _, category, self_us, name, stage, is_call = frame
        self.totals.add(name, category, stage, max(self_us, 0.0), 1 if is_call else 0)

    def finish(self) -> None:
        for stack in self._stacks.values():
            while stack:
                self._close(stack.pop())


class DeviceTimeline:
    """Union of busy intervals per device, from kernels given in roughly start order.

    A small heap puts intervals back in order before merging; a gap between two merged busy
    intervals is idle inside a step when both sides belong to the same step (else between steps).
    With no step annotations at all every gap counts, under the stage of the interval after it.
    """

    def __init__(self) -> None:
        self._heaps: dict[object, list] = defaultdict(list)
        # device -> [first start, merged end, step of the merged end, its stage, last start merged]
        self._state: dict[object, list] = {}
        self.busy_us: dict[object, float] = defaultdict(float)
        self.idle_by_stage: dict[str, float] = defaultdict(float)
        self.idle_between_steps_us = 0.0
        self.late_intervals = 0  # arrived after the window had moved past them (counted as overlap)
        self.has_steps = False

    def add(self, device: object, start: float, end: float, step: int | None, stage: str) -> None:
        heap = self._heaps[device]
        item = (start, end, -1 if step is None else step, stage)
        if len(heap) < _REORDER_WINDOW:
            heapq.heappush(heap, item)
        else:  # push, then merge the earliest
            self._merge(device, heapq.heappushpop(heap, item))

    def _merge(self, device: object, item: tuple) -> None:
        start, end, step, stage = item
        st = self._state.get(device)
        if st is None:
            self._state[device] = [start, end, step, stage, start]
            self.busy_us[device] += end - start
            return
        if start > st[1]:
            gap = start - st[1]
            if not self.has_steps or (step == st[2] and step >= 0):
                self.idle_by_stage[stage] += gap
            else:
                self.idle_between_steps_us += gap
            self.busy_us[device] += end - start
            st[1], st[2], st[3] = end, step, stage
        else:
            if start < st[4]:
                self.late_intervals += 1
            if end > st[1]:
                self.busy_us[device] += end - st[1]
                st[1], st[2], st[3] = end, step, stage
        st[4] = start

    def finish(self) -> None:
        for device, heap in self._heaps.items():
            while heap:
                self._merge(device, heapq.heappop(heap))

    def span_us(self) -> dict[object, float]:
        return {d: st[1] - st[0] for d, st in self._state.items()}
