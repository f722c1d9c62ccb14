"""The planner's memory models: how an engine splits a GPU's memory between weights + KV cache
(its budget) and everything else. An adapter names the model that fits it (``Engine.planner_memory``)
and gives its default fraction; adding a model is one entry of :data:`MEMORY_MODELS`.

- ``static`` (SGLang's ``--mem-fraction-static``): the fraction is of the memory left after the CUDA
  context; activations, CUDA graphs and request tables live in the rest. Its default is computed as
  SGLang 0.5.23 computes it (``memory.sglang_defaults``).
- ``utilization`` (vLLM's ``--gpu-memory-utilization``): the fraction is of the whole GPU and holds
  the peak activations too; the context and CUDA graphs live in the rest.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from .memory import activation_bytes, req_to_token_bytes, sglang_defaults


@dataclass(frozen=True)
class Need:
    """What the budget is asked to hold, and where (the planner's inputs to a memory model)."""
    arch: Any
    gpu: Any
    settings: Any
    engine: Any          # the adapter: its label and default fraction
    tp: int
    ep: int
    batch: int
    input_len: int
    weights: float
    kv_tok: float
    kv_need: float
    context: float       # CUDA context bytes
    ctx_len: int
    speculative: bool
    mem_fraction: float | None  # given, or None for the engine's default


@dataclass(frozen=True)
class Budget:
    """A memory model's split of one GPU (bytes, except the fractions)."""
    mem_fraction: float
    source: str          # "given", or where the default came from
    usable: float        # what the fraction is of
    available: float     # weights + KV cache must fit here
    reserve: float       # what the fraction leaves
    act: float
    graphs: float
    table: float
    pool: float          # the KV pool: available - weights
    outside: float       # what must fit in the reserve
    needed_mf: float     # the fraction at which weights + KV would just fit


def static_budget(n: Need) -> Budget:
    d = sglang_defaults(n.gpu.memory_mib, n.tp, speculative=n.speculative, mla=(n.arch.attn == "mla"))
    default = n.engine.default_mem_fraction if n.engine.default_mem_fraction is not None else d["mem_fraction_static"]
    mf = n.mem_fraction if n.mem_fraction is not None else default
    source = "given" if n.mem_fraction is not None else (
        f"{n.engine.label} default for {n.gpu.memory_mib} MiB at TP{n.tp} (reserve {d['reserved_mib']:.0f} MiB)")
    usable = n.gpu.memory_bytes - n.context
    available = mf * usable
    chunk = min(int(d["chunked_prefill_size"]), n.batch * n.input_len)
    act = activation_bytes(n.arch, n.tp, n.ep, chunk) + 512 * 2**20   # + SGLang's constant metadata allowance
    graphs = (d["cuda_graph_max_bs"] * n.settings.cuda_graph_mib_per_bs + d["prefill_graph_mib"]) * 2**20
    pool = available - n.weights
    table = req_to_token_bytes(n.ctx_len, max(pool, 0.0) / n.kv_tok if n.kv_tok else 0.0)
    return Budget(mf, source, usable, available, usable - available, act, graphs, table, pool,
                  outside=act + graphs + table, needed_mf=(n.weights + n.kv_need) / usable)


def utilization_budget(n: Need) -> Budget:
    physical = n.gpu.memory_bytes
    default = n.engine.default_mem_fraction if n.engine.default_mem_fraction is not None \
        else n.settings.vllm_default_util
    mf = n.mem_fraction if n.mem_fraction is not None else default
    knob = n.engine.mem_fraction_flags[0] if n.engine.mem_fraction_flags else "--mem-fraction"
    source = "given" if n.mem_fraction is not None else f"{n.engine.label} default {knob}"
    act = activation_bytes(n.arch, n.tp, n.ep, min(8192, n.batch * n.input_len)) + 512 * 2**20
    graphs = 512 * n.settings.cuda_graph_mib_per_bs * 2**20
    available = mf * physical - act           # vLLM profiles peak activations inside its budget
    return Budget(mf, source, physical, available, physical - mf * physical, act, graphs, 0.0,
                  pool=available - n.weights, outside=n.context + graphs,
                  needed_mf=(n.weights + n.kv_need + act) / physical)


@dataclass(frozen=True)
class MemoryModel:
    budget: Callable[[Need], Budget]
    note: str  # the plan table's assumption line for it


MEMORY_MODELS: dict[str, MemoryModel] = {
    "static": MemoryModel(static_budget, (
        "Budget for weights + KV = fraction x (GPU memory - CUDA context); SGLang's default fraction is its own "
        "heuristic (reserve = 512 MiB + 1.5 MiB x chunked-prefill tokens + 2 MiB x CUDA-graph max batch + "
        "prefill CUDA graphs (8 MiB per captured size; MLA 1.5 GiB) + TP/8 GiB, at least 10 GiB; SGLang 0.5.23).")),
    "utilization": MemoryModel(utilization_budget,
                               "vLLM budget = utilization x GPU memory, holding weights, peak activations and KV cache."),
}
