"""Per-step kernel sequences: transformer layers (attention versus MoE) and collectives.

:class:`StepSequences` takes the device kernels of each step (one step open at a time, at most
two while a step's last kernels and the next step's first ones interleave), sorts them by start
and reduces them to running totals at once, so memory holds one step's kernels, never the trace's.

**Layers.** A layer starts with attention. Every attention run (consecutive attention kernels)
that holds a kernel doing attention itself, not only its preparation (``prepare_varlen``, KV-cache
stores, split-KV plans), is one layer: FA3's ``reshape_and_cache`` + ``FlashAttnFwdSm90`` +
``Combine``, SGLang Triton's ``fused_rope_store`` + ``_fwd_grouped_kernel_stage1`` + ``stage2``,
cuDNN's SDPA + ``lean_reduction`` (MLA's ``concat_and_cache_mla``, before its q-absorb GEMM, is a KV
store). Layer ``i`` runs from the end of layer ``i-1`` to the end of its
own MLP: the last MoE kernel before the next attention run and the collectives right after it
(for a dense layer, with no MoE kernel, up to the next attention run). Layer 0 starts after the
embedding kernel (or at its attention); what lies before layer 0 or after the last one (embedding,
final norm, LM head, sampling) is ``outside`` the layers. So a MoE layer is [norm, QKV GEMM,
attention, o_proj, all-reduce, norm, router, experts, all-reduce], and a dense layer followed by
another layer also holds the next layer's QKV projection (one GEMM).

**Collectives.** Per step, each collective call's duration in order (for matching calls across
ranks), time per kind, and the part of it that overlapped compute kernels (any non-collective
kernel, which on a device can only run beside it on another stream).
"""

from __future__ import annotations

import re
from bisect import bisect_right
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from functools import lru_cache

from .categories import (
    ALLGATHER,
    ALLREDUCE,
    ALLTOALL,
    ATTENTION,
    ATTENTION_META,
    COMM_OTHER,
    EMBEDDING,
    GEMM,
    MOE_GEMM,
    MOE_PERMUTE,
    MOE_ROUTING,
)

__all__ = ["COLLECTIVES", "CommStats", "LayerRow", "LayerStats", "StepSequences", "StepTimes", "WaitSplit",
           "kernel_role", "layer_groups", "split_wait"]

COLLECTIVES = (ALLREDUCE, ALLTOALL, ALLGATHER, COMM_OTHER)
# Attention kernels that prepare attention, not do it: they neither start nor make a layer.
_ATTN_PREP = re.compile(r"prepare_varlen|reshape_and_cache|concat_and_cache|set_kv_buffer|store_kv|kv_indices"
                        r"|num_kv_splits|fused_rope_store|slot_mapping|scheduler_metadata", re.IGNORECASE)
# roles (small ints: compared in the hot loop)
_OTHER, _EMB, _ATT, _PREP, _MOE, _GEMM, _COMM = range(7)
_GROUP_OF_ROLE = ("other", "other", "attention", "attention", "moe", "gemm", "communication")
layer_groups = ("attention", "moe", "gemm", "communication", "other")
_GI = {g: i for i, g in enumerate(layer_groups)}
_ROLE_GI = tuple(_GI[g] for g in _GROUP_OF_ROLE)


@lru_cache(maxsize=1 << 14)
def kernel_role(name: str, category: str) -> int:
    """What a kernel does in a layer (a small int, compared in the hot loop), from its name and
    category; what :meth:`StepSequences.add` takes (callers cache it by name with the category)."""
    if category in COLLECTIVES:
        return _COMM
    if category in (MOE_ROUTING, MOE_GEMM, MOE_PERMUTE):
        return _MOE
    if category == ATTENTION:
        return _PREP if _ATTN_PREP.search(name) else _ATT
    if category == ATTENTION_META:
        return _PREP
    if category == GEMM:
        return _GEMM
    if category == EMBEDDING:
        return _EMB
    return _OTHER


@dataclass(frozen=True)
class LayerRow:
    index: int | str  # layer position in the step, "mean" or "outside"
    kind: str  # "moe" (has MoE kernels), "dense", or "-"
    span_us: float  # mean, from the layer's first kernel start to its last kernel end
    group_us: dict[str, float]  # mean kernel time per group: attention, moe, gemm, communication, other


@dataclass(frozen=True)
class LayerStats:
    stage: str
    layers_per_step: int  # the most frequent count; rows are over the steps that have it
    steps: int
    layer_counts: dict[int, int]  # layers seen -> steps
    rows: list[LayerRow]
    mean: LayerRow | None  # mean over the layers of a step
    outside: LayerRow | None  # per step, kernels before the first layer and after the last


@dataclass(frozen=True)
class CommStats:
    stage: str
    steps: int
    calls: int
    total_us: float
    overlapped_us: float  # collective time during which a compute kernel ran (another stream)
    by_kind: dict[str, dict[str, float]]  # category -> {"calls", "us"}
    call_us: list[list[float]] = field(default_factory=list, repr=False)  # per step, each call in order

    @property
    def exposed_us(self) -> float:
        return self.total_us - self.overlapped_us


@dataclass(frozen=True)
class StepTimes:
    """Per-step means of one stage, from each step's own kernels (CUDA-graph replays included)."""
    stage: str
    steps: int
    extent_us: float  # first kernel start to last kernel end
    busy_us: float  # union of the kernels' intervals (all streams)
    gaps_us: float  # extent - busy: the device idle between the step's kernels
    group_us: dict[str, float]  # kernel time per group (overlapping streams counted each)


class _LayerAcc:
    def __init__(self, n: int) -> None:
        self.steps = 0
        self.sums = [[0.0] * (len(layer_groups) + 1) for _ in range(n)]  # groups..., span
        self.moe = [0] * n
        self.outside = [0.0] * (len(layer_groups) + 1)


class StepSequences:
    def __init__(self) -> None:
        self._open: dict[int, tuple[str, list]] = {}
        self._layers: dict[str, dict[int, _LayerAcc]] = defaultdict(dict)
        self._comm: dict[str, dict] = {}
        self._times: dict[str, list] = {}  # stage -> [steps, extent, busy, *group sums]
        self._last = -1

    def add(self, step: int, stage: str, start: float, end: float, role: int, category: str) -> None:
        item = self._open.get(step)
        if item is None:
            if len(self._open) >= 2:
                self._flush(min(self._open))
            item = self._open[step] = (stage, [])
        item[1].append((start, end, role, category))
        self._last = step

    def break_chain(self) -> None:
        self._last = -1

    def add_follower(self, start: float, end: float, role: int, category: str) -> None:
        """A kernel with no launching op (CUDA-graph replays, some Triton launches): it belongs to the
        step of the kernel before it (Kineto writes a device's kernels in start order), unless a kernel
        launched outside every step came in between (:meth:`break_chain`)."""
        item = self._open.get(self._last)
        if item is not None:
            item[1].append((start, end, role, category))

    def finish(self) -> None:
        for s in sorted(self._open):
            self._flush(s)

    # ---- one step ------------------------------------------------------------------------
    def _flush(self, step: int) -> None:
        stage, ks = self._open.pop(step)
        ks.sort()
        self._step_times(stage, ks)
        self._step_comm(stage, ks)
        self._step_layers(stage, ks)

    def _step_times(self, stage: str, ks: list) -> None:
        t = self._times.get(stage)
        if t is None:
            t = self._times[stage] = [0, 0.0, 0.0] + [0.0] * len(layer_groups)
        busy, cur_s, cur_e = 0.0, ks[0][0], ks[0][1]
        for s, e, r, _ in ks:
            t[3 + _ROLE_GI[r]] += e - s
            if s > cur_e:
                busy += cur_e - cur_s
                cur_s, cur_e = s, e
            elif e > cur_e:
                cur_e = e
        busy += cur_e - cur_s
        t[0] += 1
        t[1] += cur_e - ks[0][0]
        t[2] += busy

    def _step_comm(self, stage: str, ks: list) -> None:
        calls = [k for k in ks if k[2] == _COMM]
        c = self._comm.get(stage)
        if c is None:
            c = self._comm[stage] = {"steps": 0, "total": 0.0, "overlap": 0.0, "kinds": {}, "call_us": []}
        c["steps"] += 1
        c["call_us"].append([round(e - s, 3) for s, e, _, _ in calls])
        if not calls:
            return
        starts, ends = [], []  # union of compute intervals
        for s, e, r, _ in ks:
            if r == _COMM:
                continue
            if ends and s <= ends[-1]:
                ends[-1] = max(ends[-1], e)
            else:
                starts.append(s)
                ends.append(e)
        for s, e, _, cat in calls:
            c["total"] += e - s
            kind = c["kinds"].setdefault(cat, [0, 0.0])
            kind[0] += 1
            kind[1] += e - s
            i = max(bisect_right(starts, s) - 1, 0)
            while i < len(starts) and starts[i] < e:
                c["overlap"] += max(0.0, min(e, ends[i]) - max(s, starts[i]))
                i += 1

    def _step_layers(self, stage: str, ks: list) -> None:
        runs, in_run, core, first = [], False, False, 0
        for i, k in enumerate(ks):
            r = k[2]
            if r == _ATT or r == _PREP:
                if not in_run:
                    in_run, core, first = True, False, i
                core = core or r == _ATT
            elif in_run and r != _COMM:  # a collective on another stream does not end a run
                if core:
                    runs.append(first)
                in_run = False
        if in_run and core:
            runs.append(first)
        if not runs:
            return
        n = len(runs)
        start = runs[0]
        for i in range(runs[0] - 1, -1, -1):
            if ks[i][2] == _EMB:
                start = i + 1
                break
        bounds = [start]
        for j in range(n):
            stop = runs[j + 1] if j + 1 < n else len(ks)
            last_moe = -1
            for i in range(stop - 1, runs[j], -1):
                if ks[i][2] == _MOE:
                    last_moe = i
                    break
            if last_moe < 0:
                end = stop
            else:
                end = last_moe + 1
                while end < stop and ks[end][2] == _COMM:
                    end += 1
            bounds.append(end)
        acc = self._layers[stage].get(n)
        if acc is None:
            acc = self._layers[stage][n] = _LayerAcc(n)
        acc.steps += 1
        span = len(layer_groups)
        for j in range(n):
            seg = ks[bounds[j]:bounds[j + 1]]
            if not seg:
                continue
            row = acc.sums[j]
            has_moe = False
            for s, e, r, _ in seg:
                row[_ROLE_GI[r]] += e - s
                has_moe = has_moe or r == _MOE
            row[span] += max(k[1] for k in seg) - seg[0][0]
            acc.moe[j] += has_moe
        for s, e, r, _ in ks[:bounds[0]] + ks[bounds[-1]:]:
            acc.outside[_ROLE_GI[r]] += e - s

    # ---- results -------------------------------------------------------------------------
    def layer_stats(self) -> dict[str, LayerStats]:
        out = {}
        for stage, by_n in self._layers.items():
            counts = {n: a.steps for n, a in sorted(by_n.items())}
            n = max(counts, key=lambda k: (counts[k], k))
            acc = by_n[n]
            k = acc.steps
            rows = []
            for j, sums in enumerate(acc.sums):
                rows.append(LayerRow(j, "moe" if acc.moe[j] * 2 > k else "dense", sums[-1] / k,
                                     {g: sums[i] / k for i, g in enumerate(layer_groups)}))
            mean = LayerRow("mean", "-", sum(r.span_us for r in rows) / n,
                            {g: sum(r.group_us[g] for r in rows) / n for g in layer_groups})
            outside = LayerRow("outside", "-", 0.0, {g: acc.outside[i] / k for i, g in enumerate(layer_groups)})
            out[stage] = LayerStats(stage, n, k, counts, rows, mean, outside)
        return out

    def step_times(self) -> dict[str, StepTimes]:
        out = {}
        for stage, t in self._times.items():
            n = t[0]
            out[stage] = StepTimes(stage, n, t[1] / n, t[2] / n, (t[1] - t[2]) / n,
                                   {g: t[3 + i] / n for i, g in enumerate(layer_groups)})
        return out

    def comm_stats(self) -> dict[str, CommStats]:
        out = {}
        for stage, c in self._comm.items():
            calls = sum(len(x) for x in c["call_us"])
            if not calls:
                continue
            kinds = {cat: {"calls": v[0], "us": v[1]} for cat, v in sorted(c["kinds"].items())}
            out[stage] = CommStats(stage, c["steps"], calls, c["total"], c["overlap"], kinds, c["call_us"])
        return out


@dataclass(frozen=True)
class WaitSplit:
    """Collectives of one stage matched across ranks (call ``j`` of step ``i`` on every rank)."""
    ranks: list  # rank ids, in the order of the lists below
    matched_calls: int
    wait_us: list[float]  # per rank: time inside collectives spent waiting for another rank
    transfer_us: list[float]  # per rank: the rest (the shortest rank's duration of each call)
    steps: list[tuple[int, object, float]]  # per step: (index, the rank the others waited for, their wait us)
    held_steps: dict  # rank -> steps in which it held the others back


def split_wait(ranks: list, per_rank_calls: list[list[list[float]]]) -> WaitSplit | None:
    """Match collective calls across ranks by order (step by step, call by call).

    A collective ends at the same moment on every rank (none can finish before all have
    arrived), so the rank that arrived last spent only the transfer inside it: for each call,
    transfer = the shortest duration over ranks, and each rank's wait = its duration - transfer.
    Per step, the rank that waited least is the one the others waited for, by the largest
    wait among the others.
    """
    if len(per_rank_calls) < 2:
        return None
    n_steps = min(len(x) for x in per_rank_calls)
    wait = [0.0] * len(ranks)
    transfer = [0.0] * len(ranks)
    steps, held, matched = [], Counter(), 0
    for i in range(n_steps):
        calls = [x[i] for x in per_rank_calls]
        n = min(len(c) for c in calls)
        if n == 0:
            continue
        w = [0.0] * len(ranks)
        for j in range(n):
            durs = [c[j] for c in calls]
            t = min(durs)
            for r, d in enumerate(durs):
                w[r] += d - t
                transfer[r] += t
        matched += n
        for r in range(len(ranks)):
            wait[r] += w[r]
        least = min(range(len(ranks)), key=lambda r: w[r])
        by = max(w[r] for r in range(len(ranks)) if r != least)
        steps.append((i, ranks[least], by))
        held[ranks[least]] += 1
    if not matched:
        return None
    return WaitSplit(list(ranks), matched, wait, transfer, steps, dict(held))
