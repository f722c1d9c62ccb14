"""Roofline floors of a result: the fastest a config could possibly be on a GPU's datasheet.

Decode (inter-token latency, batch ``b``)::

    itl_floor = max(bytes_read / HBM_bandwidth, decode_flops / peak) + collectives x (latency + bytes / link)

bytes_read per GPU per step: this GPU's shard of every weight a step reads (attention, dense
MLP, router, shared experts, LM head; of the routed experts only those the batch selects:
a fraction 1 - (1 - k/n)^b of each GPU's experts, i.e. top-k of n at batch 1, assuming
balanced routing), plus the KV cache of the batch at its mean decode context
(input + output / 2).

Prefill (time to first token of ``b`` prompts of ``L`` tokens)::

    ttft_floor = max(prefill_flops / peak, weights / HBM_bandwidth) + collectives x (latency + bytes / link)

prefill_flops per GPU: 2 x tokens x (this GPU's shard of the active parameters, the input
embedding excluded, the LM head applied to the last token only) + causal attention
(b x layers x heads/GPU x L^2 x (d_qk + d_v)). GEMMs on FP8-stored weights count at the
FP8 peak, all others (BF16, INT4 weight-only) and attention at the BF16 peak.

Collectives per forward (TP > 1, SGLang without DP attention or DeepEP): two all-reduces
per layer (after attention, after the MLP/MoE; with EP the MoE output is still all-reduced
over the TP group), one more per layer for MiniMax-M2's QK-norm over the full head width,
plus the vocabulary-parallel embedding all-reduce and the logits all-gather.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from .arch import Arch
from .hardware import GPU
from .memory import WeightsPerGPU, kv_bytes_per_token

__all__ = ["CommModel", "Floors", "collectives_per_forward", "compute_floors"]


@dataclass(frozen=True)
class CommModel:
    """Per-collective latency: ``base_us + per_peer_us * (tp - 1)`` within a node, plus
    ``internode_us`` when the group spans nodes; ``fixed_us`` replaces the model when set.
    Defaults fit SGLang's custom all-reduce on H100 for 0.5-32 KB messages (SGLang PR #2904:
    3.7-4.8 us at TP2/TP4, 5.7-7.8 us at TP8, no CUDA graph). Link bandwidth is the GPU's
    NVLink per direction, or ``internode_gbps`` across nodes."""
    base_us: float = 3.5
    per_peer_us: float = 0.5
    internode_us: float = 20.0
    internode_gbps: float = 50.0   # one 400 Gb/s NIC per GPU
    fixed_us: float | None = None

    def latency_s(self, tp: int, nodes: int = 1) -> float:
        if tp <= 1:
            return 0.0
        if self.fixed_us is not None:
            return self.fixed_us * 1e-6
        us = self.base_us + self.per_peer_us * (tp - 1)
        if nodes > 1:
            us += self.internode_us
        return us * 1e-6

    def link_bytes_per_s(self, gpu: GPU, nodes: int = 1) -> float:
        return self.internode_gbps * 1e9 if nodes > 1 else gpu.nvlink_bytes_per_s

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def collectives_per_forward(a: Arch, tp: int) -> int:
    if tp <= 1:
        return 0
    per_layer = 2 + (1 if a.qk_norm == "full" else 0)
    return a.n_layers * per_layer + 2


def _allreduce_bytes(a: Arch, tokens: int, tp: int, last_tokens: int) -> float:
    """Bytes one GPU moves through its links for one forward's collectives (lower bound:
    (tp-1)/tp of each message), BF16 hidden states."""
    if tp <= 1:
        return 0.0
    frac = (tp - 1) / tp
    hidden_msgs = (2 * a.n_layers + 1) * tokens * a.hidden * 2
    qk = a.n_layers * tokens * 2 * 4 if a.qk_norm == "full" else 0
    logits = last_tokens * a.vocab * 2
    return frac * (hidden_msgs + qk + logits)


@dataclass(frozen=True)
class Floors:
    # decode
    itl_floor_ms: float
    decode_weights_ms: float
    decode_kv_ms: float
    decode_compute_ms: float
    decode_comm_ms: float
    decode_weight_bytes: float
    decode_kv_bytes: float
    decode_flops: float
    # prefill
    ttft_floor_ms: float
    prefill_compute_ms: float
    prefill_weights_ms: float
    prefill_comm_ms: float
    prefill_flops: float
    prefill_attention_flops: float
    # communication
    collectives_per_step: int
    comm_latency_us: float
    # what bounds them
    bound: str              # decode: "weights" | "kv_cache" | "communication" | "compute"
    prefill_bound: str      # "compute" | "weights" | "communication"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def compute_floors(a: Arch, w: WeightsPerGPU, gpu: GPU, *, tp: int, ep: int, nodes: int, batch: int,
                   input_len: int, output_len: int, comm: CommModel, include_mtp: bool = False) -> Floors:
    k_over_n = a.topk / a.n_experts if a.n_experts else 0.0
    b = max(1, batch)
    hbm = gpu.hbm_bytes_per_s

    # ---- decode step
    touched = 1 - (1 - k_over_n) ** b
    dec_bytes = 0.0
    dec_fl = {"fp8": 0.0, "bf16": 0.0}
    for st in w.tensors:
        t = st.tensor
        if not t.decode or (t.mtp and not include_mtp):
            continue
        # a tied LM head reads the embedding matrix: size it as the embedding shard
        nbytes = st.nbytes if t.stored else st.rows * st.cols * 2.0
        dec_bytes += nbytes * (touched if t.routed else 1.0)
        if t.linear or t.engine_extra:
            per_tok = st.params * (k_over_n if t.routed else 1.0)
            dec_fl[st.compute] += 2 * b * per_tok
    ctx = input_len + output_len / 2
    kv_tok = kv_bytes_per_token(a, tp, include_mtp=include_mtp)
    kv_bytes = b * ctx * kv_tok
    heads = max(1, a.n_heads // tp)
    if a.attn == "mla":   # absorbed decode: scores over the latent + rope, output in the latent
        d_qk, d_v = a.kv_lora_rank + a.qk_rope_dim, a.kv_lora_rank
    else:
        d_qk, d_v = a.head_dim, a.v_head_dim
    dec_attn = 2 * b * ctx * heads * (d_qk + d_v) * a.n_layers
    dec_fl["bf16"] += dec_attn
    dec_compute = dec_fl["fp8"] / gpu.fp8_flops + dec_fl["bf16"] / gpu.bf16_flops
    n_coll = collectives_per_forward(a, tp)
    lat = comm.latency_s(tp, nodes)
    link = comm.link_bytes_per_s(gpu, nodes)
    dec_comm = n_coll * lat + _allreduce_bytes(a, b, tp, b) / link
    dec_mem_w = dec_bytes / hbm
    dec_mem_kv = kv_bytes / hbm
    itl = max(dec_mem_w + dec_mem_kv, dec_compute) + dec_comm

    # ---- prefill
    tokens = b * input_len
    touched_p = 1 - (1 - k_over_n) ** tokens
    pre_bytes = 0.0
    pre_fl = {"fp8": 0.0, "bf16": 0.0}
    for st in w.tensors:
        t = st.tensor
        if not t.prefill or t.mtp or t.part == "embedding":
            continue
        pre_bytes += (st.nbytes if t.stored else st.rows * st.cols * 2.0) * (touched_p if t.routed else 1.0)
        if t.linear:
            n_tok = b if t.part == "lm_head" else tokens
            pre_fl[st.compute] += 2 * n_tok * st.params * (k_over_n if t.routed else 1.0)
    p_qk, p_v = a.head_dim, a.v_head_dim   # MLA prefill runs in MHA form: d_qk = nope + rope
    attn_fl = b * a.n_layers * heads * input_len ** 2 * (p_qk + p_v)
    pre_fl["bf16"] += attn_fl
    pre_compute = pre_fl["fp8"] / gpu.fp8_flops + pre_fl["bf16"] / gpu.bf16_flops
    pre_w = pre_bytes / hbm
    pre_comm = n_coll * lat + _allreduce_bytes(a, tokens, tp, b) / link
    ttft = max(pre_compute, pre_w) + pre_comm

    dec_terms = {"weights": dec_mem_w, "kv_cache": dec_mem_kv, "communication": dec_comm,
                 "compute": dec_compute}
    pre_terms = {"compute": pre_compute, "weights": pre_w, "communication": pre_comm}
    return Floors(
        itl_floor_ms=itl * 1e3, decode_weights_ms=dec_mem_w * 1e3, decode_kv_ms=dec_mem_kv * 1e3,
        decode_compute_ms=dec_compute * 1e3, decode_comm_ms=dec_comm * 1e3, decode_weight_bytes=dec_bytes,
        decode_kv_bytes=kv_bytes, decode_flops=dec_fl["fp8"] + dec_fl["bf16"],
        ttft_floor_ms=ttft * 1e3, prefill_compute_ms=pre_compute * 1e3, prefill_weights_ms=pre_w * 1e3,
        prefill_comm_ms=pre_comm * 1e3, prefill_flops=pre_fl["fp8"] + pre_fl["bf16"],
        prefill_attention_flops=attn_fl, collectives_per_step=n_coll, comm_latency_us=lat * 1e6,
        bound=max(dec_terms, key=dec_terms.get), prefill_bound=max(pre_terms, key=pre_terms.get),
    )
