"""``moetrace predict``: what one config would do on its GPUs, from one GPU's measurements.

Batch 1. For one rank of the config (all ranks of a TP group run the same shapes; the step waits
for the slowest, which EP imbalance names)::

    ITL     = max(host floor, device step + gap)
    device  = MoE layers x t_moe_layer + dense layers x t_dense_layer + collectives + outside
    t_layer = sum over kernel groups g of  f_g + (t0_g - f_g) x (bytes_g(rank) / bytes_g(base)) x HBM(base)/HBM(gpu)
              attention: fixed + KV bytes of the rank at the context / (0.5 HBM); other: as measured
    moe bytes(rank) = E[max over EP groups of the token's experts there] x one held expert's bytes
    collectives = sum over calls of latency(algorithm, TP) + bytes moved / bus bandwidth
    outside = fixed (embedding, final norm, sampling) + LM head shard / (0.85 HBM)
    TTFT    = host part of TTFT + layers x prefill layer(rank, input_len) + prefill collectives + outside
    latency = TTFT + (output_len - 1) x ITL

``t0_g`` are the base records' per-layer kernel-group times (plan/predict_evidence.py picks them),
``f_g`` the groups' fixed parts (fitted from a TP1/TP2 pair). The band re-evaluates the model
with every assumption at its optimistic and at its pessimistic end (docs/predict.md).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from ..matrix import Config, parse_config_name
from .arch import build_arch, inventory, quant_format_for
from .collectives import Collective, collectives_per_step, expected_max_hits
from .hardware import resolve_gpu
from .memory import kv_bytes_per_token, weights_per_gpu
from .predict_evidence import (GROUPS, Base, default_attention_ratio, engine_ratio, fixed_parts, host_floor_ms,
                               layer_gap_us, load_evidence, select_base, ttft_host_ms)

__all__ = ["Assumptions", "Part", "Prediction", "predict"]

STEP_GAP_MS = 0.05   # vLLM 0.25.0 H100 depth scan: ITL intercept 0.47 ms - device-busy intercept 0.42 ms
GAP_MIN_TP = 4       # kernel gaps a layer (layer_gap_us) from this TP up: the shards of TP1/TP2 hide them


@dataclass(frozen=True)
class Assumptions:
    """One end of the band (or its centre). Multipliers on the model's uncertain inputs."""
    name: str = "central"
    fixed_mult: float = 1.0       # on the fitted fixed per-layer parts
    ep: str = "uniform"           # "balanced" (k / groups) | "uniform" (expected max) | "skewed" (x1.15)
    lat_mult: float = 1.0         # collective latency
    bw_mult: float = 1.0          # collective bandwidth
    prefill_mult: float = 1.0     # prefill kernels of small shards less efficient than the base's
    host: str = "median"          # "min" | "median" | "max" of the host figures
    evidence: float = 0.0         # +- half the records' spread
    shrink: float = 1.0           # a variable part moves as (bytes ratio) ** shrink: below 1, smaller shards
                                  # reach less of the HBM bandwidth (fewer CTAs than SMs at batch 1)
    gap: str = "median"           # "min" | "median" | "max" of the kernel gaps a layer the rank records measured

    @staticmethod
    def ends() -> tuple["Assumptions", "Assumptions", "Assumptions"]:
        lo = Assumptions("optimistic", 0.5, "balanced", 0.8, 1.5, 0.9, "min", -1.0, 1.0, "min")
        hi = Assumptions("pessimistic", 1.5, "skewed", 1.5, 1.0, 1.5, "max", 1.0, 0.8, "max")
        return lo, Assumptions(), hi


@dataclass(frozen=True)
class Part:
    name: str
    ms: float
    kind: str      # "measured" | "scaled" | "modelled"
    detail: str

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["ms"] = round(self.ms, 4)
        return d


@dataclass
class Prediction:
    model: str
    config: str
    gpu: str
    gpu_label: str
    engine: str
    tp: int
    ep: int
    ep_groups: int
    input_len: int
    output_len: int
    verdict: str
    reason: str
    ttft_ms: float | None = None
    itl_ms: float | None = None
    latency_s: float | None = None
    ttft_band_ms: tuple[float, float] | None = None
    itl_band_ms: tuple[float, float] | None = None
    latency_band_s: tuple[float, float] | None = None
    decode_parts: list[Part] = field(default_factory=list)
    prefill_parts: list[Part] = field(default_factory=list)
    decode_layer_us: dict[str, dict[str, float]] = field(default_factory=dict)
    prefill_layer_us: dict[str, dict[str, float]] = field(default_factory=dict)
    collectives: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    ep_expected_max_hits: float | None = None
    floor_itl_ms: float | None = None
    evidence: dict[str, Any] = field(default_factory=dict)
    rules: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["decode_parts"] = [p.to_dict() for p in self.decode_parts]
        d["prefill_parts"] = [p.to_dict() for p in self.prefill_parts]
        for k in ("ttft_ms", "itl_ms", "latency_s", "floor_itl_ms", "ep_expected_max_hits"):
            if d[k] is not None:
                d[k] = round(d[k], 4)
        for k in ("ttft_band_ms", "itl_band_ms", "latency_band_s"):
            if d[k] is not None:
                d[k] = [round(x, 4) for x in d[k]]
        d["decode_layer_us"] = {k: {g: round(v, 2) for g, v in row.items()} for k, row in self.decode_layer_us.items()}
        d["prefill_layer_us"] = {k: {g: round(v, 1) for g, v in row.items()} for k, row in self.prefill_layer_us.items()}
        return d


@dataclass(frozen=True)
class _Shape:
    """Per-layer bytes one rank reads, from the planner's inventory."""
    attn: float
    dense_mlp: float
    shared: float
    router: float
    routed_gpu: float       # this GPU's routed-expert bytes of one MoE layer
    lm_head: float
    kv_token_layer: float   # KV bytes of one token in one layer on this GPU


def _shape(a: Any, hf: dict[str, Any], quant: str | None, tp: int, ep: int) -> _Shape:
    w = weights_per_gpu(a, inventory(a), quant_format_for(hf, quant), tp, ep)
    p = w.parts
    moe_l = max(1, a.moe_layers)
    return _Shape(attn=p.get("attention", 0.0) / a.n_layers,
                  dense_mlp=p.get("dense_mlp", 0.0) / max(1, a.dense_layers),
                  shared=p.get("shared_experts", 0.0) / moe_l, router=p.get("router", 0.0) / moe_l,
                  routed_gpu=p.get("routed_experts", 0.0) / moe_l,
                  lm_head=p.get("lm_head", 0.0) or p.get("embedding", 0.0),
                  kv_token_layer=kv_bytes_per_token(a, tp) / a.n_layers)


def _hits(a: Any, groups: int, mode: str) -> float:
    if mode == "balanced":
        return a.topk / groups
    e = expected_max_hits(a.n_experts, a.topk, groups)
    return min(a.topk, e * 1.15) if mode == "skewed" else e


def _moe_read(a: Any, s: _Shape, groups: int, mode: str, hits: float | None = None) -> float:
    """Routed-expert bytes the busiest rank reads: hits x one held expert's bytes (``hits``: the
    experts the rank computed in the base record, when it is known: a one-rank record's local top-k)."""
    return (hits if hits is not None else _hits(a, groups, mode)) * s.routed_gpu * groups / a.n_experts


def _scale(t0: float, f: float, ratio: float, gpu: float = 1.0, shrink: float = 1.0) -> float:
    f = min(f, 0.9 * t0)
    return f + (t0 - f) * (ratio ** shrink if ratio < 1 else ratio) * gpu


ROOFLINE_EFF = 0.9   # the share of datasheet HBM bandwidth a streaming kernel reaches (Qwen3 slices: 0.86-0.91)


def _gpu_factor(c: "_Ctx", t0: float, f: float, src_bytes: float) -> float:
    """GPU rule for a group's variable part: only its roofline share (the base's bytes at 0.9 of the
    base GPU's HBM) moves with the HBM ratio; the rest (a kernel slower than its bytes: FP8 kernels
    without a tuned config) is kept as measured."""
    hbm = c.base_gpu.hbm_bytes_per_s / c.gpu.hbm_bytes_per_s
    if hbm == 1.0:
        return 1.0
    var = t0 - min(f, 0.9 * t0)
    share = min(1.0, src_bytes / (ROOFLINE_EFF * c.base_gpu.hbm_bytes_per_s) * 1e6 / var) if var > 0 else 1.0
    return share * hbm + (1 - share)


@dataclass
class _Ctx:
    a: Any
    base: Base
    engine: str
    gpu: Any
    base_gpu: Any
    tp: int
    groups: int
    tgt: _Shape
    src: _Shape
    src_groups: int
    fixed: dict[str, float]
    gpu_ratio: dict[str, float]
    ratio: dict[str, float]
    ev: dict[str, Any] = field(default_factory=dict)
    src_hits: float | None = None   # experts the base's rank computed a token (one-rank records: the local top-k)
    as_one_rank: bool = False       # predict a `--one-rank --routing balanced` run: local top-k, no collectives
    gap_us: tuple[float, float, float] = (0.0, 0.0, 0.0)   # GPU idle between kernels, a layer: median, min, max
                                                            # (layer_gap_us; TP >= GAP_MIN_TP)


def _decode_layer(c: _Ctx, t0: dict[str, float], dense: bool, ctx_len: float, x: Assumptions) -> dict[str, float]:
    ev = 1 + x.evidence * c.base.spread / 2
    t0 = {g: t0.get(g, 0.0) * c.ratio.get(g, 1.0) * ev for g in GROUPS}
    f = {g: c.fixed.get(g, 0.0) * x.fixed_mult for g in GROUPS}
    if dense:
        rd_t, rd_s = c.tgt.attn + c.tgt.dense_mlp, c.src.attn + c.src.dense_mlp
        moe = 0.0
    else:
        rd_t = c.tgt.attn + c.tgt.shared + c.tgt.router
        rd_s = c.src.attn + c.src.shared + c.src.router
        mode_src = "uniform" if x.ep == "skewed" else x.ep
        src_moe = _moe_read(c.a, c.src, c.src_groups, mode_src, c.src_hits)
        moe = _scale(t0["moe"], f["moe"], _moe_read(c.a, c.tgt, c.groups, x.ep) / src_moe,
                     _gpu_factor(c, t0["moe"], f["moe"], src_moe), x.shrink)
    gemm = _scale(t0["gemm"], f["gemm"], rd_t / rd_s, _gpu_factor(c, t0["gemm"], f["gemm"], rd_s), x.shrink)
    base_ctx = c.base.input_len + c.base.output_len / 2
    kv_bw_src, kv_bw = 0.5 * c.base_gpu.hbm_bytes_per_s, 0.5 * c.gpu.hbm_bytes_per_s
    att_fixed = max(0.0, t0["attention"] - c.src.kv_token_layer * base_ctx / kv_bw_src * 1e6)
    att = att_fixed * c.gpu_ratio["attention"] + c.tgt.kv_token_layer * ctx_len / kv_bw * 1e6
    return {"attention": att, "moe": moe, "gemm": gemm, "other": t0["other"] * c.gpu_ratio["other"]}


def _prefill_layer(c: _Ctx, t0: dict[str, float] | None, dec: dict[str, float], dense: bool, length: int,
                   x: Assumptions) -> dict[str, float]:
    if not t0:
        return {g: v * length / 64 for g, v in dec.items()}   # no prefill measured: 64 tokens a decode layer's time
    s = length / c.base.input_len
    t0 = {g: t0.get(g, 0.0) * c.ratio.get(g, 1.0) for g in GROUPS}
    eff = x.prefill_mult if c.tp > c.base.tp else 1.0
    if dense:
        gemm_r = (c.tgt.attn + c.tgt.dense_mlp) / (c.src.attn + c.src.dense_mlp)
    else:
        gemm_r = (c.tgt.attn + c.tgt.shared + c.tgt.router) / (c.src.attn + c.src.shared + c.src.router)
    out = {"attention": t0["attention"] * (c.base.tp / c.tp) * s * s * eff,
           "moe": t0["moe"] * (c.base.tp / c.tp) * s * eff,
           "gemm": t0["gemm"] * gemm_r * s * eff,
           "other": t0["other"] * s}
    return {g: max(out[g], dec[g]) for g in GROUPS}


def _ctx(a: Any, hf: dict[str, Any], cfg: Config, base: Base, engine: str, gpu: Any, groups: int,
         ev: dict[str, Any], attention_backend: str | None = None) -> tuple[_Ctx, list[str]]:
    rules: list[str] = []
    fixed, why = fixed_parts(engine, gpu.key, ev)
    rules.append(why)
    src_groups = base.ep if base.engine != "vllm" or base.ep <= 1 else base.tp
    ratio = {g: 1.0 for g in GROUPS}
    if base.engine != engine:
        ratio, why = engine_ratio(base.engine, engine, base.gpu, a.attn, ev)
        rules.append(f"engine rule: {why}: " + ", ".join(f"{g} x{v:.2f}" for g, v in ratio.items()))
    elif base.departures:
        said = []
        if any(d.startswith("--attention-backend") for d in base.departures):  # back to the engine's default
            f_att, why = default_attention_ratio(base.engine, base.gpu, a.attn, ev)
            ratio["attention"] = f_att
            said.append(f"attention x{f_att:.2f} ({why})")
        if any("recorder" in d for d in base.departures) and base.decode_moe.get("other", 0) > 6:
            ratio["other"] = (base.decode_moe["other"] - 6.0) / base.decode_moe["other"]
            said.append("other - 6 us (the recorder's kernels)")
        rules.append(f"defaults rule: the base ran with {', '.join(base.departures)}; {'; '.join(said) or 'kept'}")
    if attention_backend == "triton":  # the config runs Triton attention: the engine's default -> Triton
        f_att, why = default_attention_ratio(engine, base.gpu, a.attn, ev)
        ratio["attention"] /= f_att
        rules.append(f"attention backend rule: triton: attention x{1 / f_att:.2f} ({why})")
    gpu_ratio = {"attention": 1.0, "other": 1.0}
    if base.gpu != gpu.key:
        h1 = select_base("Qwen3-235B", "vllm", gpu.key, 1, 1, ev=ev)
        h2 = select_base("Qwen3-235B", "vllm", base.gpu, 1, 1, ev=ev)
        measured = bool(h1 and h2 and h1.gpu == gpu.key and h2.gpu == base.gpu)
        if measured:
            gpu_ratio = {g: h1.decode_moe[g] / h2.decode_moe[g] for g in gpu_ratio}
        rules.append(f"GPU rule: {base.gpu.upper()} -> {gpu.key.upper()}: the roofline share of each variable part x HBM ratio "
                     f"{resolve_gpu(base.gpu).hbm_bytes_per_s / gpu.hbm_bytes_per_s:.2f}; attention x"
                     f"{gpu_ratio['attention']:.2f}, other x{gpu_ratio['other']:.2f} "
                     + ("(Qwen3-235B vLLM measured on both GPUs)" if measured else "(no record on both GPUs: kept)"))
    tgt = _shape(a, hf, cfg.quantization, cfg.tp, groups if engine == "vllm" else cfg.ep)
    src = _shape(a, hf, cfg.quantization, base.tp, src_groups)
    hits = None
    if base.one_rank:   # variants.py: local top-k = the uniform expectation; a shared expert / moe_tp, not / tp
        src_groups = int(base.one_rank.get("moe_ep") or src_groups)
        src = _shape(a, hf, cfg.quantization, base.tp, src_groups)
        hits = float((base.one_rank.get("top_k") or [0, 0])[1]) or None
        moe_tp = int(base.one_rank.get("moe_tp") or 1)
        src = replace(src, shared=src.shared * base.tp / moe_tp)
        rules.append(f"one-rank base: it computed {hits or '?'} local experts a token and no collectives; the "
                     f"busiest EP rank's expected count replaces it, the collectives are modelled")
    return _Ctx(a, base, engine, gpu, resolve_gpu(base.gpu), cfg.tp, groups, tgt, src, src_groups, fixed,
                gpu_ratio, ratio, ev, hits), rules


def _evaluate(c: _Ctx, cfg: Config, input_len: int, output_len: int, x: Assumptions) -> dict[str, Any]:
    a, base = c.a, c.base
    ctx_len = input_len + output_len / 2
    moe_l = _decode_layer(c, base.decode_moe, False, ctx_len, x)
    dense_t0 = base.decode_dense or base.decode_moe
    dense_l = _decode_layer(c, dense_t0, True, ctx_len, x) if a.dense_layers else None
    coll_d = [] if c.as_one_rank else collectives_per_step(a, c.engine, cfg.tp, 1, lat_mult=x.lat_mult, bw_mult=x.bw_mult)
    head_bw = 0.85 * c.base_gpu.hbm_bytes_per_s
    src_head = (base.vocab or a.vocab) * a.hidden * 2 / base.tp
    out_fixed = max(0.0, base.decode_outside_us - src_head / head_bw * 1e6)
    outside = out_fixed * c.gpu_ratio["other"] + c.tgt.lm_head / (0.85 * c.gpu.hbm_bytes_per_s) * 1e6
    layers_us = a.moe_layers * sum(moe_l.values()) + (a.dense_layers * sum(dense_l.values()) if dense_l else 0.0)
    gaps_us = a.n_layers * dict(zip(("median", "min", "max"), c.gap_us))[x.gap]
    comm_d = sum(k.total_us for k in coll_d)
    device_ms = (layers_us + gaps_us + comm_d + outside) / 1e3
    hf_med, hf_lo, hf_hi, _ = host_floor_ms(c.engine, c.gpu.key, 1 if c.as_one_rank else cfg.tp, c.ev)
    host = {"min": hf_lo, "median": hf_med, "max": hf_hi}[x.host]
    itl = max(host, device_ms + STEP_GAP_MS)

    pre_moe = _prefill_layer(c, base.extend_moe, moe_l, False, input_len, x)
    pre_dense = (_prefill_layer(c, base.extend_dense or base.extend_moe, dense_l, True, input_len, x)
                 if dense_l else None)
    coll_p = [] if c.as_one_rank else collectives_per_step(a, c.engine, cfg.tp, input_len, lat_mult=x.lat_mult,
                                                             bw_mult=x.bw_mult)
    pre_layers = a.moe_layers * sum(pre_moe.values()) + (a.dense_layers * sum(pre_dense.values()) if pre_dense else 0)
    th_med, th_lo, th_hi = _ttft_host(c)[:3]
    t_host = {"min": th_lo, "median": th_med, "max": th_hi}[x.host]
    pre_out = base.extend_outside_us + c.tgt.lm_head / (0.85 * c.gpu.hbm_bytes_per_s) * 1e6
    ttft = t_host + (pre_layers + sum(k.total_us for k in coll_p) + pre_out) / 1e3
    return {"itl": itl, "ttft": ttft, "latency": (ttft + max(0, output_len - 1) * itl) / 1e3,
            "moe_l": moe_l, "dense_l": dense_l, "coll_d": coll_d, "outside": outside, "device": device_ms,
            "host": host, "pre_moe": pre_moe, "pre_dense": pre_dense, "coll_p": coll_p, "t_host": t_host,
            "pre_out": pre_out, "layers_us": layers_us, "pre_layers": pre_layers, "gaps_us": gaps_us}


def _ttft_host(c: _Ctx) -> tuple[float, float, float, str]:
    """The host part of TTFT: a full-depth rank base's own (Base.ttft_host_ms), else the engine's slices'."""
    if c.base.ttft_host_ms is not None and c.base.engine == c.engine:
        return (*c.base.ttft_host_ms, f"TTFT - prefill busy over the base's {len(c.base.sources)} rank records")
    return ttft_host_ms(c.engine, c.gpu.key, c.ev)


def _stage_parts(a: Any, moe: dict[str, float], dense: dict[str, float], colls: list[Any], kind: str, per: float,
                 unit: str, msg_unit: str) -> list[Part]:
    """One stage's layer and collective parts: per-layer times in us shown per ``unit`` (``per`` us each),
    message sizes in ``msg_unit`` (KiB for decode, MiB for prefill)."""
    fmt = lambda row: ", ".join(f"{g} {v:.1f}" for g, v in row.items())   # noqa: E731
    dec = 3 if unit == "ms" else 1
    out = [Part(f"{a.moe_layers} MoE layers", a.moe_layers * sum(moe.values()) / 1e3, kind,
                f"{sum(moe.values()) / per:.{dec}f} {unit} a layer ({fmt(moe)})")]
    if dense:
        out.append(Part(f"{a.dense_layers} dense layers", a.dense_layers * sum(dense.values()) / 1e3, kind,
                        f"{sum(dense.values()) / per:.{dec}f} {unit} a layer" + (f" ({fmt(dense)})" if unit == "us" else "")))
    scale = 1024 if msg_unit == "KiB" else 2**20
    for k in colls:
        out.append(Part(k.what, k.total_us / 1e3, "modelled", f"{k.count} x {k.us_each:.{2 if unit == 'us' else 1}f} us, "
                                                                f"{k.msg_bytes / scale:.{1 if msg_unit == 'KiB' else 2}f} {msg_unit} each, {k.algorithm}"))
    return out


def _parts(p: Prediction, c: _Ctx, r: dict[str, Any], a: Any) -> None:
    kind = "measured" if c.base.how == "measured" else "scaled"
    p.decode_parts = _stage_parts(a, r["moe_l"], r["dense_l"], r["coll_d"], kind, 1, "us", "KiB")
    p.decode_parts.append(Part("outside the layers (embedding, LM head shard, sampling)", r["outside"] / 1e3, kind,
                               f"LM head {c.tgt.lm_head / 2**20:.0f} MiB a rank"))
    if r["gaps_us"]:
        p.decode_parts.append(Part("idle between kernels (small shards)", r["gaps_us"] / 1e3,
                                   "measured" if c.base.one_rank and c.base.how == "measured" else "scaled",
                                   f"{a.n_layers} x {c.gap_us[0]:.1f} us"))
    p.decode_parts.append(Part("step gap (host)", STEP_GAP_MS, "measured",
                               f"device step {r['device']:.3f} ms; host floor {r['host']:.2f} ms"
                               + (" (binds: the GPU idles)" if r["host"] > r["device"] + STEP_GAP_MS else "")))
    p.prefill_parts = [Part("host part of TTFT", r["t_host"], "measured", "request, scheduling, first token out"),
                       *_stage_parts(a, r["pre_moe"], r["pre_dense"], r["coll_p"], kind, 1e3, "ms", "MiB")]
    p.prefill_parts.append(Part("outside the layers", r["pre_out"] / 1e3, kind, "embedding, final norm, LM head"))
    p.decode_layer_us = {"moe": r["moe_l"], **({"dense": r["dense_l"]} if r["dense_l"] else {})}
    p.prefill_layer_us = {"moe": r["pre_moe"], **({"dense": r["pre_dense"]} if r["pre_dense"] else {})}
    p.collectives = {"decode": [k.to_dict() for k in r["coll_d"]], "prefill": [k.to_dict() for k in r["coll_p"]]}


def predict(preset: Any, config: Config | str, *, gpu: str = "h200", engine: str = "sglang", input_len: int = 4096,
            output_len: int = 512, evidence: dict[str, Any] | None = None,
            attention_backend: str | None = None, as_one_rank: bool = False) -> Prediction:
    """One config's batch-1 TTFT, ITL (p50) and latency, with parts, band and evidence
    (``evidence``: another evidence object than the shipped one, e.g. with records held out;
    ``attention_backend``: None for the engine's default, or ``triton``; ``as_one_rank``: what
    ``moetrace run --one-rank --routing balanced`` of the config measures on one GPU instead: each
    token's k / EP-groups local experts, no collectives (benchmarks/predict_check.py checks it))."""
    if attention_backend not in (None, "triton"):
        raise ValueError(f"attention_backend {attention_backend!r}: None (the engine's default) or 'triton'")
    ev = evidence or load_evidence()
    from ..engines.registry import get_engine
    from .planner import plan_config
    cfg = config if isinstance(config, Config) else parse_config_name(str(config))
    g = resolve_gpu(gpu)
    hf = preset.hf_config
    a = build_arch(hf)
    eng = get_engine(engine)
    groups = eng.ep_groups(cfg)
    plan = plan_config(preset, cfg, gpu=g, engine=engine, input_len=input_len, output_len=output_len)
    p = Prediction(model=preset.name, config=cfg.name, gpu=g.key, gpu_label=g.label, engine=engine, tp=cfg.tp,
                   ep=cfg.ep, ep_groups=groups, input_len=input_len, output_len=output_len, verdict=plan.verdict,
                   reason=plan.reason, floor_itl_ms=plan.itl_floor_ms, notes=list(plan.problems))
    if groups != cfg.ep:
        p.notes.append(f"{eng.label}: --enable-expert-parallel spreads experts over the whole TP group (EP{groups})")
    if not plan.fits:
        p.notes.append("not predicted: the planner says it will not fit")
        return p
    base = select_base(preset.name, engine, g.key, cfg.tp, cfg.ep, cfg.backend, ev=ev)   # records keep the config's EP
    if base is None:
        p.notes.append(f"no shipped record of {preset.name}: nothing to scale from")
        return p
    c, rules = _ctx(a, hf, cfg, base, engine, g, groups, ev, attention_backend)
    c.as_one_rank = as_one_rank
    if cfg.tp >= GAP_MIN_TP:
        med, lo, hi, why = layer_gap_us(engine, base.sources if base.one_rank else None, ev)
        c.gap_us = (med, lo, hi)
        rules.append(f"kernel gaps at TP{cfg.tp}: {c.gap_us[0]:.1f} us a layer ({why})")
    ends = Assumptions.ends()
    if as_one_rank:
        ends = tuple(replace(x, ep="balanced") for x in ends)
    mid = _evaluate(c, cfg, input_len, output_len, ends[1])
    # a fixed part's multiplier moves a scaled-down part one way and a scaled-up one (a one-rank base's
    # local top-k up to the busiest EP rank's count) the other: each end takes both and keeps its extreme
    los = [_evaluate(c, cfg, input_len, output_len, replace(ends[0], fixed_mult=m)) for m in (0.5, 1.5)]
    his = [_evaluate(c, cfg, input_len, output_len, replace(ends[2], fixed_mult=m)) for m in (0.5, 1.5)]
    p.itl_ms, p.ttft_ms, p.latency_s = mid["itl"], mid["ttft"], mid["latency"]
    p.itl_band_ms, p.ttft_band_ms, p.latency_band_s = (
        (min(r[k] for r in (*los, mid)), max(r[k] for r in (*his, mid))) for k in ("itl", "ttft", "latency"))
    p.ep_expected_max_hits = expected_max_hits(a.n_experts, a.topk, groups) if a.n_experts else None
    _parts(p, c, mid, a)
    p.rules = [f"base: {base.how}, {base.engine} {base.gpu.upper()} TP{base.tp} EP{base.ep} ({len(base.sources)} records, "
               f"spread {base.spread:.0%})"] + rules
    if cfg.tp != base.tp or groups != c.src_groups:
        p.rules.append(f"TP/EP rule: bandwidth parts x this rank's bytes / the base's (routed experts: E[max over "
                       f"{groups} EP groups] = {p.ep_expected_max_hits:.2f} of top-{a.topk}, uniform routing)")
    p.evidence = {"how": base.how, "engine": base.engine, "gpu": base.gpu, "tp": base.tp, "ep": base.ep,
                  "sources": base.sources, "host_floor": host_floor_ms(engine, g.key, cfg.tp, ev)[3],
                  "ttft_host": _ttft_host(c)[3]}
    return p
