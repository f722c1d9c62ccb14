"""Plans as GitHub markdown: one row per config, the terms of each floor, then the assumptions."""

from __future__ import annotations

from typing import Iterable

from .budget import MEMORY_MODELS
from .hardware import GIB
from .planner import Plan

__all__ = ["format_plan_table", "format_assumptions"]

VERDICT_TEXT = {"fits": "fits", "tight": "tight", "will_not_fit": "will not fit"}
PART_ORDER = ("embedding", "lm_head", "attention", "dense_mlp", "router", "routed_experts", "shared_experts",
              "norms", "engine_extra", "mtp")


def _g(b: float) -> str:
    return f"{b / GIB:.1f}"


def _ms(x: float) -> str:
    return f"{x:.2f}" if x < 100 else f"{x:.0f}"


def format_plan_table(plans: Iterable[Plan], *, detail: bool = False, assumptions: bool = True) -> str:
    plans = list(plans)
    if not plans:
        return "_no configs to plan_\n"
    lines = [
        "| Model | Config | GPU | Weights/GPU GiB | KV GiB | Overhead GiB | Budget GiB (fraction) | Verdict "
        "| ITL floor ms = weights + KV + comm | TTFT floor ms = max(compute, weights) + comm | Bound |",
        "|---|---|---|---:|---:|---:|---:|---|---:|---:|---|",
    ]
    for p in plans:
        verdict = VERDICT_TEXT.get(p.verdict, p.verdict)
        if p.problems:
            verdict += " ⚠"
        itl = (f"{_ms(p.itl_floor_ms)} = {_ms(p.decode_weights_ms)} + {_ms(p.decode_kv_ms)} + "
               f"{_ms(p.decode_comm_ms)}")
        if p.decode_compute_ms > p.decode_weights_ms + p.decode_kv_ms:
            itl = f"{_ms(p.itl_floor_ms)} = compute {_ms(p.decode_compute_ms)} + {_ms(p.decode_comm_ms)}"
        ttft = (f"{_ms(p.ttft_floor_ms)} = max({_ms(p.prefill_compute_ms)}, {_ms(p.prefill_weights_ms)}) + "
                f"{_ms(p.prefill_comm_ms)}")
        bound = p.bound if p.bound == p.prefill_bound else f"{p.bound} (prefill: {p.prefill_bound})"
        lines.append(
            f"| {p.model} | {p.config} | {p.gpu.upper()} | {_g(p.weights_per_gpu_bytes)} | "
            f"{p.kv_cache_bytes / GIB:.2f} | {_g(p.overhead_bytes)} | {_g(p.available_bytes)} ({p.mem_fraction:.3f}) | "
            f"{verdict} | {itl} | {ttft} | {bound} |")
    out = "\n".join(lines) + "\n"
    if detail:
        out += "\n" + _detail_table(plans)
    if assumptions:
        out += "\n" + format_assumptions(plans)
    return out


def _detail_table(plans: list[Plan]) -> str:
    parts = [k for k in PART_ORDER if any(p.weights_by_part.get(k) for p in plans)]
    head = "| Model | Config | " + " | ".join(parts) + " | of which scales | decode reads GiB | collectives/step | µs each |"
    lines = [head, "|---|---|" + "---:|" * (len(parts) + 4)]
    for p in plans:
        cells = [_g(p.weights_by_part.get(k, 0.0)) for k in parts]
        lines.append(f"| {p.model} | {p.config} | " + " | ".join(cells) +
                     f" | {p.scale_bytes / GIB:.2f} | {(p.decode_weight_bytes + p.decode_kv_bytes) / GIB:.2f} | "
                     f"{p.collectives_per_step} | {p.comm_latency_us:.1f} |")
    return "Weights per GPU by part (GiB):\n\n" + "\n".join(lines) + "\n"


def format_assumptions(plans: list[Plan]) -> str:
    p0 = plans[0]
    a = p0.assumptions
    gpu = a.get("gpu", {})
    comm = a.get("comm", {})
    s = a.get("settings", {})
    fractions = sorted({(p.engine, p.tp, p.mem_fraction, p.mem_fraction_source == "given") for p in plans})
    frac_txt = ", ".join(f"TP{tp} {mf:.3f}{' (given)' if given else ''}" for _, tp, mf, given in fractions)
    batch = sorted({(p.batch, p.input_len, p.output_len) for p in plans})
    req = "; ".join(f"batch {b}, {i} in + {o} out" for b, i, o in batch)
    lines = [
        "Assumptions:",
        f"- Request: {req}. KV cache BF16 for batch x (input + output) tokens; MLA models keep the compressed "
        "latent (kv_lora_rank + rope dims) on every TP rank; GQA KV heads are replicated when TP exceeds them.",
        f"- Engine: {p0.engine}. Memory fraction per config: {frac_txt}. "
        + MEMORY_MODELS[_engine(p0.engine).planner_memory].note,
        f"- CUDA context: {s.get('context_tp1_gib', 1.0)} GiB at TP1, {s.get('context_tp_gib', 1.5)} GiB with NCCL "
        "at TP>1. Overhead = context + activations of one prefill chunk (fused-MoE caches, attention, MLP) + "
        f"{s.get('cuda_graph_mib_per_bs', 2.0):g} MiB per CUDA-graph batch size + SGLang's prefill-graph reserve + "
        "SGLang's request-to-token table.",
        f"- Verdict: will not fit when weights + KV exceed the budget; tight when the margin is under "
        f"{s.get('margin_gib', 2.0):g} GiB + {100 * s.get('margin_frac_of_weights', 0.03):g}% of the weights, or the "
        "overhead exceeds what the fraction leaves; fits otherwise.",
        "- Weights in native precision from the shipped config: FP8 block 128x128 with FP32 scales, INT4 group-32 "
        "with BF16 scales; routers, norms, embeddings, LM head unquantized. Experts split over EP groups and within a "
        "group over TP/EP; the rest over TP. MTP layers not loaded (no speculative decoding)"
        + ("; SGLang's absorbed MLA copies (w_kc, w_vc, BF16) counted." if _engine(p0.engine).planner_load_extras else "."),
        f"- Floors on {gpu.get('label', p0.gpu)}: HBM {gpu.get('hbm_bytes_per_s', 0) / 1e12:.2f} TB/s, dense BF16 "
        f"{gpu.get('bf16_flops', 0) / 1e12:.0f} / FP8 {gpu.get('fp8_flops', 0) / 1e12:.0f} TFLOP/s (datasheet), "
        f"NVLink {gpu.get('nvlink_bytes_per_s', 0) / 1e9:.0f} GB/s per direction. Decode reads top-k experts of "
        "balanced routing, all other weights of the GPU's shard, and the KV cache at mean context. "
        + (f"Per-collective latency {comm['fixed_us']} us (given)." if comm.get("fixed_us") is not None else
           f"Per-collective latency {comm.get('base_us', 3.5)} + {comm.get('per_peer_us', 0.5)} x (TP-1) us "
           f"(+{comm.get('internode_us', 20.0)} us across nodes)."),
    ]
    extra: list[str] = []
    for p in plans:
        for msg in p.problems:
            extra.append(f"- ⚠ {p.model} {p.config}: {msg}")
        for msg in p.notes:
            line = f"- {p.model}: {msg}"
            if line not in extra:
                extra.append(line)
    return "\n".join(lines + extra) + "\n"


def _engine(name: str):
    """The engine's adapter: which memory model the planner used for it."""
    from ..engines.registry import get_engine
    return get_engine(name)
