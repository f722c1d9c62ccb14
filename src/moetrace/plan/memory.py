"""Bytes per GPU: weights as an engine shards them, KV cache, and what the engine needs besides.

Sharding follows SGLang (the primary engine):

* attention, dense MLP and shared experts: tensor parallel over all ``tp`` ranks (column-parallel
  in-projections, row-parallel out-projections); KV heads replicated when ``tp`` exceeds them;
  MLA's low-rank ``q_a_proj`` / ``kv_a_proj_with_mqa`` replicated on every rank;
* embeddings and LM head: split by vocabulary over ``tp`` (vocabulary padded to 64);
* routed experts: split into ``ep`` groups of ``n_experts / ep`` experts, and each expert's
  intermediate dimension split over the ``tp / ep`` ranks of a group (SGLang's ``moe_tp_size``);
* router, its bias, norms: replicated.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from .arch import Arch, QuantScheme, Tensor

__all__ = ["ShardedTensor", "WeightsPerGPU", "activation_bytes", "kv_bytes_per_token", "req_to_token_bytes",
           "shard", "sglang_defaults", "prefill_graph_sizes", "weights_per_gpu"]

VOCAB_PAD = 64


def shard(t: Tensor, a: Arch, tp: int, ep: int) -> tuple[int, int, float]:
    """(rows, cols, copies) of ``t`` held by one GPU."""
    moe_tp = max(1, tp // ep)
    if t.shard == "replicated":
        return t.rows, t.cols, t.count
    if t.shard == "column":
        return math.ceil(t.rows / tp), t.cols, t.count
    if t.shard == "row":
        return t.rows, math.ceil(t.cols / tp), t.count
    if t.shard == "column_kv":
        per_head = t.rows // a.n_kv_heads
        heads = max(1, math.ceil(a.n_kv_heads / tp))
        return per_head * heads, t.cols, t.count
    if t.shard == "vocab":
        padded = math.ceil(t.rows / VOCAB_PAD) * VOCAB_PAD
        return math.ceil(padded / tp), t.cols, t.count
    if t.shard == "expert_column":
        return math.ceil(t.rows / moe_tp), t.cols, t.count / ep
    if t.shard == "expert_row":
        return t.rows, math.ceil(t.cols / moe_tp), t.count / ep
    raise ValueError(f"unknown shard rule {t.shard!r}")


@dataclass(frozen=True)
class ShardedTensor:
    tensor: Tensor
    rows: int
    cols: int
    copies: float
    fmt_name: str
    compute: str          # "fp8" or "bf16"
    nbytes: float         # bytes on one GPU, scales included
    scale_nbytes: float

    @property
    def params(self) -> float:
        return self.rows * self.cols * self.copies


@dataclass(frozen=True)
class WeightsPerGPU:
    total: float
    parts: dict[str, float]
    scales: float
    engine_extra: float
    tensors: tuple[ShardedTensor, ...] = field(repr=False, default=())


def weights_per_gpu(a: Arch, tensors: list[Tensor], scheme: QuantScheme, tp: int, ep: int) -> WeightsPerGPU:
    parts: dict[str, float] = {}
    out: list[ShardedTensor] = []
    scales = extra = 0.0
    for t in tensors:
        r, c, n = shard(t, a, tp, ep)
        fmt = scheme.format_for(t)
        nb = fmt.nbytes(r, c) * n if t.stored else 0.0
        sb = fmt.scale_nbytes(r, c) * n if t.stored else 0.0
        st = ShardedTensor(t, r, c, n, fmt.name, fmt.compute, nb, sb)
        out.append(st)
        key = "mtp" if t.mtp else ("engine_extra" if t.engine_extra else t.part)
        parts[key] = parts.get(key, 0.0) + nb
        scales += sb
        if t.engine_extra:
            extra += nb
    return WeightsPerGPU(sum(parts.values()), parts, scales, extra, tuple(out))


def kv_bytes_per_token(a: Arch, tp: int, *, include_mtp: bool = False, dtype_bytes: int = 2) -> int:
    """KV cache bytes one token occupies on one GPU (all layers). GQA: K and V of this GPU's KV
    heads (replicated when tp > KV heads). MLA: the compressed latent (kv_lora_rank + rope dims),
    which every TP rank holds in full."""
    layers = a.n_layers + (a.mtp_layers if include_mtp else 0)
    if a.attn == "mla":
        return (a.kv_lora_rank + a.qk_rope_dim) * dtype_bytes * layers
    heads = max(1, math.ceil(a.n_kv_heads / tp))
    return heads * (a.head_dim + a.v_head_dim) * dtype_bytes * layers


def prefill_graph_sizes(max_tokens: int) -> list[int]:
    """The token counts SGLang 0.5.23 captures prefill CUDA graphs for, up to ``max_tokens``
    (``generate_prefill_cuda_graph_batch_sizes``, sglang/srt/arg_groups/cuda_graph_hook.py:480)."""
    sizes = [*range(4, 33, 4), *range(48, 257, 16), *range(288, 513, 32), *range(576, 1025, 64),
             *range(1280, 4097, 256), *range(4608, max_tokens + 1, 512)]
    return [x for x in sizes if x <= max_tokens]


def sglang_defaults(gpu_mem_mib: int, tp: int, *, pp: int = 1, chunked_prefill_size: int | None = None,
                    cuda_graph_max_bs: int | None = None, speculative: bool = False, mla: bool = False,
                    prefill_cuda_graph: bool = True) -> dict[str, float]:
    """SGLang's own defaults for a GPU of ``gpu_mem_mib`` MiB: chunked prefill size, CUDA-graph
    max batch size and ``--mem-fraction-static``, as SGLang 0.5.23's ``handle_gpu_memory_settings``
    computes them (sglang/srt/arg_groups/memory_hook.py:47; the formula of SGLang PR #10975,
    v0.5.3 on, plus the prefill CUDA-graph reserve; DP attention, DeepEP and post-capture KV
    sizing not modelled)::

        reserved_mib = 512 + max(chunked_prefill_size, 2048) * 1.5 + tp * pp / 8 * 1024
                       + cuda_graph_max_bs * 2                    decode CUDA graphs
                       + prefill CUDA graphs: 8 per captured token count (MLA: 1536)
                       (at least 10240 on GPUs over 60 GiB)
                       + 2048 with EAGLE/MTP speculative decoding
        mem_fraction_static = round((gpu_mem_mib - reserved_mib) / gpu_mem_mib, 3)

    The prefill graphs (``reserve_for_graph_mb``, memory_hook.py:357) are SGLang 0.5.23's
    breakable prefill CUDA graph, on by default on CUDA (``--disable-prefill-cuda-graph``); earlier
    0.5.x releases reserved the same 8 MiB per captured size for their piecewise CUDA graph
    (``len(piecewise_cuda_graph_tokens) * 8``). Captured sizes run up to the chunked prefill size
    (MLA: at most 8192, memory_hook.py:233)."""
    if gpu_mem_mib < 20 * 1024:
        cps, bs = 2048, 8
    elif gpu_mem_mib < 35 * 1024:
        cps, bs = 2048, (24 if tp < 4 else 80)
    elif gpu_mem_mib < 60 * 1024:
        cps, bs = 4096, (32 if tp < 4 else 160)
    elif gpu_mem_mib < 160 * 1024:   # H100, A100 80G, H20, H200
        cps, bs = 8192, (256 if tp < 4 else 512)
    else:                            # B200, MI300
        cps, bs = 16384, 512
    cps = chunked_prefill_size or cps
    bs = cuda_graph_max_bs or bs
    prefill_graphs = 0.0
    if prefill_cuda_graph:
        prefill_graphs = 1536.0 if mla else 8.0 * len(prefill_graph_sizes(min(8192, cps) if mla else cps))
    reserved = 512 + max(cps, 2048) * 1.5 + bs * 2 + prefill_graphs + tp * pp / 8 * 1024
    if gpu_mem_mib > 60 * 1024:
        reserved = max(reserved, 10 * 1024)
    if speculative:
        reserved += 2 * 1024
    mf = round((gpu_mem_mib - reserved) / gpu_mem_mib, 3)
    return {"chunked_prefill_size": cps, "cuda_graph_max_bs": bs, "prefill_graph_mib": prefill_graphs,
            "reserved_mib": reserved, "mem_fraction_static": mf}


def activation_bytes(a: Arch, tp: int, ep: int, tokens: int) -> float:
    """Peak activation memory of one forward pass over ``tokens`` tokens (a prefill chunk), BF16.

    Per token: the residual stream and layer input/output (3 x hidden), plus the largest of
    the sub-layer workspaces: the fused-MoE caches (top-k copies of gate/up output, activated
    intermediate and down output, as SGLang's Triton fused MoE allocates them), the dense MLP
    intermediates, the attention projections (MLA prefill expands K and V per head)."""
    moe_tp = max(1, tp // ep)
    heads = max(1, a.n_heads // tp)
    moe = a.topk * (3 * math.ceil(a.moe_inter / moe_tp) + a.hidden) if a.moe_layers else 0
    dense = 3 * math.ceil(max(a.dense_inter, a.shared_inter) / tp) if (a.dense_layers or a.shared_inter) else 0
    if a.attn == "mla":
        attn = heads * (2 * a.head_dim + 2 * a.v_head_dim) + a.kv_lora_rank + a.qk_rope_dim
    else:
        kvh = max(1, math.ceil(a.n_kv_heads / tp))
        attn = heads * (a.head_dim + a.v_head_dim) + kvh * (a.head_dim + a.v_head_dim)
    per_token = 2 * (3 * a.hidden + max(moe, dense, attn))
    return tokens * per_token


def req_to_token_bytes(context_len: int, pool_tokens: float) -> float:
    """SGLang's request-to-token table (int32): ``max_num_reqs x (context_len + 4)``, with
    max_num_reqs = clamp(pool_tokens / context_len * 512, 2048, 4096) when not given."""
    if context_len <= 0:
        return 0.0
    reqs = int(min(max(pool_tokens / context_len * 512, 2048), 4096))
    return (reqs + 1) * (context_len + 4) * 4.0
