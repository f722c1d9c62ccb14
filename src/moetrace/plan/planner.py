"""One plan per (model, config, GPU): does it fit, and how fast could it possibly be.

The verdict, for SGLang (``--mem-fraction-static`` = F, its default computed as SGLang does)::

    usable     = GPU memory - CUDA context (measured by SGLang after NCCL init: "total_gpu_memory")
    budget     = F x usable                    weights + KV cache pool must fit here
    reserve    = (1 - F) x usable              activations, CUDA graphs (decode and prefill), request tables
    kv_pool    = budget - weights              SGLang: "Not enough memory" when <= 0
    will_not_fit   if weights + KV(batch x (input + output)) > budget
    tight          if it fits by less than the planner's error allowance (2 GiB + 3% of the weights),
                   or the estimated activations + graphs + tables exceed the reserve
    fits           otherwise

For vLLM, F is ``--gpu-memory-utilization`` (default 0.9) of the whole GPU and covers
weights, peak activations and KV cache; the rest must hold context and CUDA graphs.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from ..matrix import Config, parse_config_name, parse_matrix
from ..results.record import DEFAULT_BATCH, DEFAULT_INPUT_LEN, DEFAULT_OUTPUT_LEN
from .budget import MEMORY_MODELS, Budget, Need
from .arch import build_arch, inventory, quant_format_for
from .floors import CommModel, compute_floors
from .hardware import GIB, GPU, resolve_gpu
from .memory import kv_bytes_per_token, weights_per_gpu
from .params import count_params

__all__ = ["Plan", "PlannerSettings", "plan_config", "plan_matrix"]

VERDICTS = ("fits", "tight", "will_not_fit")


@dataclass(frozen=True)
class PlannerSettings:
    """The planner's own allowances (documented in docs/planner.md)."""
    context_tp1_gib: float = 1.0        # CUDA context + torch + cuBLAS workspaces, one GPU
    context_tp_gib: float = 1.5         # ... plus NCCL and custom all-reduce buffers when TP > 1
    margin_gib: float = 2.0             # error allowance: fixed part
    margin_frac_of_weights: float = 0.03  # error allowance: share of the weights
    vllm_default_util: float = 0.9  # a "utilization" engine's default when its adapter gives none
    cuda_graph_mib_per_bs: float = 2.0  # SGLang's own allowance per captured batch size

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Plan:
    model: str
    config: str
    config_dict: dict[str, Any]
    gpu: str
    gpu_label: str
    engine: str
    tp: int
    ep: int
    nodes: int
    batch: int
    input_len: int
    output_len: int
    precision: str
    verdict: str
    reason: str
    # memory (bytes per GPU)
    physical_bytes: int
    context_bytes: float
    usable_bytes: float
    mem_fraction: float
    mem_fraction_source: str
    available_bytes: float         # static budget for weights + KV cache
    reserve_bytes: float           # what the memory fraction leaves for activations and graphs
    weights_per_gpu_bytes: float
    weights_by_part: dict[str, float]
    scale_bytes: float
    kv_cache_bytes: float          # KV cache the requested batch needs
    kv_bytes_per_token: int
    kv_pool_bytes: float           # what the engine would allocate for KV (budget - weights)
    activation_bytes: float
    cuda_graph_bytes: float
    req_table_bytes: float
    overhead_bytes: float          # context + activations + CUDA graphs + request tables
    headroom_bytes: float          # KV pool left after the request's KV cache
    margin_bytes: float
    needed_mem_fraction: float     # smallest memory fraction that holds weights + KV cache
    # floors
    itl_floor_ms: float
    ttft_floor_ms: float
    decode_weights_ms: float
    decode_kv_ms: float
    decode_compute_ms: float
    decode_comm_ms: float
    prefill_compute_ms: float
    prefill_weights_ms: float
    prefill_comm_ms: float
    prefill_flops: float
    decode_weight_bytes: float
    decode_kv_bytes: float
    collectives_per_step: int
    comm_latency_us: float
    bound: str
    prefill_bound: str
    # parameters
    total_params: int
    active_params: int
    problems: tuple[str, ...] = ()   # things the engine refuses regardless of memory
    notes: tuple[str, ...] = ()
    assumptions: dict[str, Any] = field(default_factory=dict)

    @property
    def fits(self) -> bool:
        return self.verdict != "will_not_fit"

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe (numbers rounded: bytes to integers, milliseconds to 4 decimals)."""
        d: dict[str, Any] = {}
        for k, v in asdict(self).items():
            if isinstance(v, float):
                v = round(v, 4) if (k.endswith("_ms") or k.endswith("_us") or "fraction" in k) else int(round(v))
            elif isinstance(v, dict) and k == "weights_by_part":
                v = {kk: int(round(vv)) for kk, vv in v.items()}
            elif isinstance(v, tuple):
                v = list(v)
            d[k] = v
        d["predicted_fit"] = self.fits
        return d


def _gib(b: float) -> str:
    return f"{b / GIB:.1f} GiB"


def _config(config: Config | dict | str) -> Config:
    if isinstance(config, Config):
        return config
    if isinstance(config, dict):
        return Config.from_dict(config)
    return parse_config_name(str(config))


def plan_config(preset: Any, config: Config | dict | str, *, gpu: str | GPU = "h200", batch: int = DEFAULT_BATCH,
                input_len: int = DEFAULT_INPUT_LEN, output_len: int = DEFAULT_OUTPUT_LEN,
                mem_fraction: float | None = None, engine: str = "sglang", gpus_per_node: int = 8,
                speculative: bool = False, context_len: int | None = None, comm: CommModel | None = None,
                settings: PlannerSettings | None = None) -> Plan:
    """Plan one config of one model. ``preset`` needs ``.name`` and ``.hf_config`` (a
    :class:`moetrace.presets.Preset`); ``mem_fraction`` is SGLang's ``--mem-fraction-static``
    (vLLM: ``--gpu-memory-utilization``), its engine default when None; ``speculative`` loads
    the MTP layers as SGLang does for EAGLE/NEXTN speculative decoding."""
    cfg = _config(config)
    g = resolve_gpu(gpu)
    s = settings or PlannerSettings()
    comm = comm or CommModel()
    eng = _planned_engine(engine)
    if batch < 1 or input_len < 1 or output_len < 0:
        raise ValueError("batch and input_len must be positive, output_len non-negative")
    hf = preset.hf_config
    a = build_arch(hf)
    scheme = quant_format_for(hf, cfg.quantization)
    tp, ep, nodes = cfg.tp, eng.ep_groups(cfg), cfg.nodes  # e.g. vLLM's EP spans the whole TP group
    notes = list(a.notes)
    if scheme.warning:
        notes.append(scheme.warning)
    problems = _problems(a, scheme, tp, ep, nodes, gpus_per_node)

    tensors = inventory(a, include_mtp=speculative, engine_extras=eng.planner_load_extras)
    w = weights_per_gpu(a, tensors, scheme, tp, ep)
    weights = w.total
    kv_tok = kv_bytes_per_token(a, tp, include_mtp=speculative)
    kv_need = float(batch * (input_len + output_len) * kv_tok)

    physical = g.memory_bytes
    context = (s.context_tp1_gib if tp == 1 else s.context_tp_gib) * GIB
    ctx_len = context_len or a.max_position or (input_len + output_len)

    knob = eng.mem_fraction_flags[0] if eng.mem_fraction_flags else "--mem-fraction"
    b = MEMORY_MODELS[eng.planner_memory].budget(Need(
        a, g, s, eng, tp, ep, batch, input_len, weights, kv_tok, kv_need, context, ctx_len, speculative, mem_fraction))
    mf, source, usable, available, reserve = b.mem_fraction, b.source, b.usable, b.available, b.reserve
    act, graphs, table, pool, outside, needed_mf = b.act, b.graphs, b.table, b.pool, b.outside, b.needed_mf
    overhead = context + act + graphs + table
    headroom = pool - kv_need
    margin = s.margin_gib * GIB + s.margin_frac_of_weights * weights

    verdict, reason = _verdict(b, weights, kv_need, headroom, margin, physical, context, knob,
                               f"{g.label} at {cfg.name}", f"one {g.label} at {cfg.name}")
    fl = compute_floors(a, w, g, tp=tp, ep=ep, nodes=nodes, batch=batch, input_len=input_len,
                        output_len=output_len, comm=comm, include_mtp=speculative)
    pc = count_params(a, include_mtp=False)
    assumptions = {
        "engine": engine, "mem_fraction": mf, "mem_fraction_source": source,
        "context_gib": context / GIB, "kv_cache_dtype": "bf16", "mtp_loaded": speculative,
        "weight_format": scheme.name, "context_len": ctx_len, "comm": comm.to_dict(),
        "settings": s.to_dict(), "gpu": g.to_dict(),
    }
    return Plan(
        model=preset.name, config=cfg.name, config_dict=cfg.to_dict(), gpu=g.key, gpu_label=g.label,
        engine=engine, tp=tp, ep=cfg.ep, nodes=nodes, batch=batch, input_len=input_len, output_len=output_len,
        precision=getattr(preset, "precision", scheme.name), verdict=verdict, reason=reason,
        physical_bytes=physical, context_bytes=context, usable_bytes=usable, mem_fraction=mf,
        mem_fraction_source=source, available_bytes=available, reserve_bytes=reserve,
        weights_per_gpu_bytes=weights, weights_by_part=dict(w.parts), scale_bytes=w.scales,
        kv_cache_bytes=kv_need, kv_bytes_per_token=kv_tok, kv_pool_bytes=pool, activation_bytes=act,
        cuda_graph_bytes=graphs, req_table_bytes=table, overhead_bytes=overhead, headroom_bytes=headroom,
        margin_bytes=margin, needed_mem_fraction=needed_mf,
        itl_floor_ms=fl.itl_floor_ms, ttft_floor_ms=fl.ttft_floor_ms, decode_weights_ms=fl.decode_weights_ms,
        decode_kv_ms=fl.decode_kv_ms, decode_compute_ms=fl.decode_compute_ms, decode_comm_ms=fl.decode_comm_ms,
        prefill_compute_ms=fl.prefill_compute_ms, prefill_weights_ms=fl.prefill_weights_ms,
        prefill_comm_ms=fl.prefill_comm_ms, prefill_flops=fl.prefill_flops,
        decode_weight_bytes=fl.decode_weight_bytes, decode_kv_bytes=fl.decode_kv_bytes,
        collectives_per_step=fl.collectives_per_step, comm_latency_us=fl.comm_latency_us,
        bound=fl.bound, prefill_bound=fl.prefill_bound, total_params=pc.total, active_params=pc.active,
        problems=tuple(problems), notes=tuple(notes), assumptions=assumptions,
    )


def _verdict(b: Budget, weights: float, kv_need: float, headroom: float, margin: float, physical: float,
             context: float, knob: str, where: str, one_gpu: str) -> tuple[str, str]:
    """(verdict, reason) of a budget: the weights alone too big, weights + KV over the budget, what the
    fraction leaves too small for the rest, a margin under the error allowance, or a fit."""
    mf, available, pool = b.mem_fraction, b.available, b.pool
    if weights > physical - context:
        return "will_not_fit", f"predicted: weights {_gib(weights)}/GPU exceed the {_gib(physical)} of {one_gpu}"
    if headroom < 0:
        hint = (f"; would need {knob} >= {b.needed_mf:.3f}" if b.needed_mf < 1 and
                (1 - b.needed_mf) * b.usable >= b.outside else "")
        return "will_not_fit", (f"predicted: weights {_gib(weights)} + KV cache {_gib(kv_need)}/GPU exceed the "
                                f"{_gib(available)} budget ({knob} {mf:.3f}) on {where}{hint}")
    if b.outside > b.reserve:
        return "tight", (f"tight: fits ({_gib(weights)} weights + {_gib(kv_need)} KV of {_gib(available)}), but "
                         f"activations + CUDA graphs + tables ~{_gib(b.outside)} exceed the {_gib(b.reserve)} the "
                         f"memory fraction {mf:.3f} leaves, on {where}")
    if headroom < margin:
        return "tight", (f"tight: weights {_gib(weights)} + KV {_gib(kv_need)} leave {_gib(headroom)} of the "
                         f"{_gib(available)} budget, under the planner's {_gib(margin)} error allowance, on {where}")
    return "fits", (f"fits: weights {_gib(weights)} + KV {_gib(kv_need)} of a {_gib(available)} budget "
                    f"(KV pool {_gib(pool)}) on {where}")


def _planned_engine(name: str) -> Any:
    """The engine's adapter, which says which memory model and defaults apply."""
    from ..engines.registry import engine_classes, get_engine
    try:
        eng = get_engine(name)
    except ValueError:
        eng = None
    if eng is None or eng.planner_memory not in MEMORY_MODELS:
        plannable = [n for n, c in engine_classes().items() if c.planner_memory in MEMORY_MODELS]
        raise ValueError(f"engine must be {' or '.join(repr(n) for n in plannable)}, got {name!r}")
    return eng


def plan_matrix(preset: Any, configs: list[Config] | None = None, **kw: Any) -> list[Plan]:
    """Plans for every config of ``configs`` (default: the preset's matrix)."""
    cfgs = configs if configs is not None else parse_matrix(preset.matrix)
    return [plan_config(preset, c, **kw) for c in cfgs]


def _problems(a, scheme, tp: int, ep: int, nodes: int, gpus_per_node: int) -> list[str]:
    """Configurations the engine refuses whatever the memory (SGLang's load-time checks)."""
    out: list[str] = []
    if tp % nodes == 0 and tp // nodes > gpus_per_node:
        out.append(f"TP{tp} on {nodes} node(s) needs {tp // nodes} GPUs per node; nodes have {gpus_per_node}")
    if a.n_heads % tp:
        out.append(f"{a.n_heads} attention heads do not divide over TP{tp}")
    if a.attn == "gqa" and a.n_kv_heads % tp and tp % a.n_kv_heads:
        out.append(f"{a.n_kv_heads} KV heads and TP{tp}: neither divides the other")
    if a.n_experts:
        if a.n_experts % ep:
            out.append(f"{a.n_experts} experts do not divide over EP{ep}")
        moe_tp = max(1, tp // ep)
        if a.moe_inter % moe_tp:
            out.append(f"expert width {a.moe_inter} does not divide over TP/EP = {moe_tp}")
        fmt = scheme.fmt
        if fmt is not None and scheme.name != "none":
            shard_i = a.moe_inter // moe_tp
            blk_n = fmt.block_rows if fmt.block_rows > 1 else 0
            blk_k = fmt.block_cols if fmt.block_cols > 1 else 0
            if blk_n and shard_i % blk_n:
                out.append(f"expert gate/up shard {shard_i} (= {a.moe_inter} / {moe_tp}) is not a multiple of the "
                           f"{fmt.name} block {blk_n}: SGLang refuses to load it")
            elif blk_k and shard_i % blk_k:
                out.append(f"expert down-projection shard {shard_i} (= {a.moe_inter} / {moe_tp}) is not a multiple "
                           f"of the {fmt.name} group {blk_k}")
    if scheme.name.startswith("fp8") and scheme.fmt and scheme.fmt.block_rows > 1:
        for what, width in (("dense MLP", a.dense_inter if a.dense_layers else 0), ("shared expert", a.shared_inter)):
            if width and (width // tp) % scheme.fmt.block_rows:
                out.append(f"{what} shard {width // tp} (= {width} / {tp}) is not a multiple of the FP8 block "
                           f"{scheme.fmt.block_rows}")
    return out
