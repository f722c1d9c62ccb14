"""Which collectives a step of one TP rank makes, their bytes, and each engine's algorithm at that size.

Used by ``moetrace predict`` (plan/predict.py). Every parameter says where it came from.

Per forward at TP > 1 (SGLang and vLLM, DP1, no DeepEP, no DP attention, the spec's TPx_EPy configs):

* two all-reduces per layer of ``tokens x hidden`` BF16 (after attention, after the MLP/MoE);
  with EP the MoE output is still combined by that TP all-reduce: vLLM 0.25.0 at TP2_EP2 ran no
  all-to-all (tests/data/gpu/README.md, run 1), nor does SGLang without ``--moe-a2a-backend``;
* one more per layer for MiniMax-M2 (its QK-norm over all heads all-reduces 2 floats a token);
* the vocabulary-parallel embedding's all-reduce (one per forward);
* the logits all-gather (``vocab / tp`` a rank, last token of each sequence).

Algorithms: a decode all-reduce (8-14 KiB at batch 1) runs as the engine's one-shot kernel
(vLLM ``cross_device_reduce_1stage``, SGLang FlashInfer ``allreduce_fusion_kernel_oneshot_lamport``,
fused with the RMSNorm); a prefill all-reduce (tens of MiB) as NCCL's ring; the logits gather as
NCCL ring all-gather. Time of one call: ``latency(tp) + bytes moved / bandwidth``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Any

__all__ = ["ALGORITHMS", "Algorithm", "Collective", "algorithm_for", "collectives_per_step",
           "expected_max_hits", "hits_distribution"]

ONE_SHOT_MAX_BYTES = 512 * 1024   # vLLM's custom all-reduce takes the 1-stage path below 512 KiB at TP <= 8


@dataclass(frozen=True)
class Algorithm:
    key: str
    label: str
    latency_us_tp2: float       # one call at TP2, the fastest rank (the others wait in it)
    per_peer_us: float          # added per GPU beyond two
    bus_gbps: float             # bus bandwidth (nccl-tests' busbw) for the bytes term
    source: str
    latency_band: tuple[float, float] = (0.8, 1.5)   # multipliers the band allows on the latency
    bus_band: tuple[float, float] = (1.0, 1.0)       # and on the bandwidth (low = faster)

    def time_us(self, tp: int, msg_bytes: float, kind: str = "allreduce", *, lat_mult: float = 1.0,
                bw_mult: float = 1.0) -> float:
        if tp <= 1:
            return 0.0
        lat = (self.latency_us_tp2 + self.per_peer_us * (tp - 2)) * lat_mult
        if kind == "allgather":
            moved = (tp - 1) / tp * msg_bytes * tp        # each rank receives the others' shards
        else:
            moved = 2 * (tp - 1) / tp * msg_bytes         # ring all-reduce bus bytes (nccl-tests' busbw rule)
        return lat + moved / (self.bus_gbps * 1e9 * bw_mult) * 1e6

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


_PEER = ("per-peer growth from SGLang PR #2904 (custom all-reduce on H100, no CUDA graph: 3.7-4.8 us at "
         "TP2/TP4, 5.7-7.8 us at TP8, i.e. about +0.4 us a GPU)")
ALGORITHMS: dict[str, Algorithm] = {
    "vllm_oneshot": Algorithm(
        "vllm_oneshot", "vLLM custom one-shot all-reduce (cross_device_reduce_1stage)", 3.95, 0.4, 450.0,
        "3.95 us: median per call, fastest rank, vLLM 0.25.0 decode at TP2 on 2x H200 NV18, 8 KiB "
        "(tests/data/gpu/ and gpu-2/ TP2 records, 150 calls); " + _PEER + "; bytes at NVLink 450 GB/s"),
    "flashinfer_oneshot": Algorithm(
        "flashinfer_oneshot", "FlashInfer one-shot Lamport all-reduce + RMSNorm fusion (SGLang)", 4.5, 0.4, 450.0,
        "4.4-4.6 us: median per call, fastest rank, SGLang 0.5.17 decode at TP2 on 2x H200 "
        "(tests/data/gpu/ TP2_auto, gpu-2/results-load TP2_EP2); " + _PEER),
    "nccl_ring": Algorithm(
        "nccl_ring", "NCCL ring all-reduce (ncclDevKernel_AllReduce_Sum_bf16_RING_LL)", 8.0, 1.0, 248.0,
        "248 GB/s bus bandwidth: 32 MiB in 135 us at TP2 on 2x H200 (vLLM 0.25.0 and SGLang 0.5.17 prefill, "
        "tests/data/gpu*/ TP2 records, NCCL 2.28.9, NVLS off); nccl-tests on 8x H100/H200 NVLink reach "
        "~360-480 GB/s busbw at large sizes (NVLS on for the upper figure), so the band allows 1.5x faster; "
        "latency 8 us + 1 us a peer (assumed: NCCL LL small-message latency)",
        latency_band=(0.5, 2.0), bus_band=(1.5, 1.0)),
    "nccl_allgather": Algorithm(
        "nccl_allgather", "NCCL ring all-gather (logits)", 10.0, 1.0, 248.0,
        "10.6 us a call for 32768 x 2 logits at TP2 on 2x H200 (vLLM 0.25.0 decode, tests/data/gpu-2 TP2_EP2: "
        "117 us in 11 calls); bandwidth as the ring all-reduce", latency_band=(0.6, 2.0)),
}


def algorithm_for(engine: str, msg_bytes: float, kind: str = "allreduce") -> Algorithm:
    if kind == "allgather":
        return ALGORITHMS["nccl_allgather"]
    if msg_bytes <= ONE_SHOT_MAX_BYTES:
        return ALGORITHMS["flashinfer_oneshot" if engine == "sglang" else "vllm_oneshot"]
    return ALGORITHMS["nccl_ring"]


@dataclass(frozen=True)
class Collective:
    what: str          # "all-reduce after attention", ...
    kind: str          # "allreduce" | "allgather"
    count: int         # calls per step
    msg_bytes: float   # bytes of one call's message (per rank)
    algorithm: str
    us_each: float
    per_layer: bool

    @property
    def total_us(self) -> float:
        return self.count * self.us_each

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["total_us"] = round(self.total_us, 3)
        d["us_each"] = round(self.us_each, 3)
        return d


def collectives_per_step(a: Any, engine: str, tp: int, tokens: int, *, lat_mult: float = 1.0,
                         bw_mult: float = 1.0) -> list[Collective]:
    """The collectives one forward of ``tokens`` tokens (batch 1: 1 in decode, the prompt in prefill)
    makes on one rank of a TP group, with their modelled time."""
    if tp <= 1:
        return []
    out: list[Collective] = []

    def add(what: str, kind: str, count: int, nbytes: float, per_layer: bool) -> None:
        alg = algorithm_for(engine, nbytes, kind)
        t = alg.time_us(tp, nbytes, kind, lat_mult=lat_mult, bw_mult=bw_mult)
        out.append(Collective(what, kind, count, nbytes, alg.key, t, per_layer))

    hid = tokens * a.hidden * 2
    add("all-reduce after attention", "allreduce", a.n_layers, hid, True)
    add("all-reduce after MLP/MoE (also combines EP groups)", "allreduce", a.n_layers, hid, True)
    if a.qk_norm == "full":
        add("all-reduce of QK-norm variance (MiniMax-M2)", "allreduce", a.n_layers, tokens * 2 * 4, True)
    add("embedding all-reduce (vocab-parallel)", "allreduce", 1, hid, False)
    vocab_shard = math.ceil(a.vocab / tp)
    add("logits all-gather (last token)", "allgather", 1, vocab_shard * 2, False)
    return out


@lru_cache(maxsize=256)
def hits_distribution(n_experts: int, topk: int, groups: int) -> tuple[tuple[tuple[int, ...], float], ...]:
    """Exact distribution of how a token's top-k distinct experts (uniform over the n) fall on
    ``groups`` EP groups of n/groups experts each: multivariate hypergeometric, over all
    compositions of k into ``groups`` parts."""
    size = n_experts // groups
    total = math.comb(n_experts, topk)
    out = []

    def rec(prefix: tuple[int, ...], left: int) -> None:
        if len(prefix) == groups - 1:
            parts = (*prefix, left)
            p = math.prod(math.comb(size, x) for x in parts) / total
            if p > 0:
                out.append((parts, p))
            return
        for x in range(min(left, size) + 1):
            rec((*prefix, x), left - x)

    rec((), topk)
    return tuple(out)


def expected_max_hits(n_experts: int, topk: int, groups: int) -> float:
    """E[max over EP groups of the token's experts on that group] at batch 1: the experts the
    busiest EP group computes, which the step waits for. 1 group: k. Uniform routing assumed."""
    if groups <= 1 or n_experts <= 0 or topk <= 0:
        return float(topk)
    if groups > 16 or n_experts % groups:
        raise ValueError(f"EP imbalance: {n_experts} experts over {groups} groups not modelled")
    return sum(max(parts) * p for parts, p in hits_distribution(n_experts, topk, groups))
