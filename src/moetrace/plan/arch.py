"""From a Hugging Face ``config.json`` to an inventory of weight tensors.

Every weight of the model is listed once as a :class:`Tensor` (shape, how many copies,
which part of the model it belongs to, how an engine shards it across GPUs, and whether
the checkpoint stores it quantized). Parameter counts, per-GPU bytes and roofline floors
are all computed from this one inventory, so they cannot disagree with each other.

Families understood: DeepSeek-V2/V3 and Kimi-K2 (MLA), Qwen2/Qwen3-MoE, GLM-4.5/4.6
(``glm4_moe``), MiniMax-M2, Mixtral, and dense Llama-like models. Anything else is read
with the generic GQA rules and a warning.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Arch", "QuantFormat", "Tensor", "build_arch", "checkpoint_tensors", "inventory", "quant_format_for"]

PARTS = ("embedding", "lm_head", "attention", "dense_mlp", "router", "routed_experts",
         "shared_experts", "norms")


@dataclass(frozen=True)
class QuantFormat:
    """How a stored weight is encoded: ``bits`` per element plus one scale of ``scale_bytes``
    per block of ``block_rows`` x ``block_cols`` elements (0 means the whole dimension)."""
    name: str          # "bf16", "fp8_block128x128", "int4_g32", ...
    bits: float
    block_rows: int = 0
    block_cols: int = 0
    scale_bytes: int = 0
    compute: str = "bf16"   # precision the GEMM runs in: "fp8" for W8A8 FP8, else "bf16"

    def nbytes(self, rows: int, cols: int) -> float:
        """Bytes of one rows x cols matrix, scales included."""
        b = rows * cols * self.bits / 8
        if self.scale_bytes:
            br = self.block_rows or rows
            bc = self.block_cols or cols
            b += math.ceil(rows / br) * math.ceil(cols / bc) * self.scale_bytes
        return b

    def scale_nbytes(self, rows: int, cols: int) -> float:
        return self.nbytes(rows, cols) - rows * cols * self.bits / 8


BF16 = QuantFormat("bf16", 16)
FP32 = QuantFormat("fp32", 32)


@dataclass(frozen=True)
class Tensor:
    """One weight (or ``count`` identical weights: one per layer, per expert)."""
    name: str            # representative HF module name, for quantization ignore lists
    part: str            # one of PARTS
    rows: int            # output features (or vector length)
    cols: int            # input features (1 for a vector)
    count: int           # copies in the model (layers x experts)
    shard: str           # replicated | column | row | column_kv | vocab | expert_column | expert_row
    linear: bool = True  # an nn.Linear (a target for quantization); False for norms, biases, embeddings
    dtype: str = "bf16"  # unquantized storage: "bf16" or "fp32"
    router: bool = False
    routed: bool = False     # a routed expert weight: used by top-k of n_experts per token
    decode: bool = True      # read by a decode step
    prefill: bool = True     # used by prefill
    mtp: bool = False
    engine_extra: bool = False  # created by the engine at load time, not in the checkpoint
    stored: bool = True      # False for a tied lm_head: read every step, stored once (as the embedding)

    @property
    def params(self) -> int:
        return self.rows * self.cols * self.count if self.stored else 0


@dataclass(frozen=True)
class Arch:
    model_type: str
    hidden: int
    vocab: int
    n_layers: int
    tie_embeddings: bool
    attn: str                  # "gqa" | "mla"
    n_heads: int
    n_kv_heads: int
    head_dim: int              # q/k head dim (GQA); qk_nope + qk_rope (MLA)
    v_head_dim: int
    qkv_bias: bool
    qk_norm: str               # "none" | "head" (per head_dim) | "full" (over all heads: needs a TP all-reduce)
    q_lora_rank: int | None
    kv_lora_rank: int
    qk_nope_dim: int
    qk_rope_dim: int
    dense_layers: int
    dense_inter: int
    moe_layers: int
    n_experts: int
    topk: int
    moe_inter: int
    shared_inter: int          # total width of the shared expert(s), 0 if none
    shared_gate: bool          # Qwen2-MoE's sigmoid gate on the shared expert
    router_bias: bool          # e_score_correction_bias (noaux_tc routing)
    mtp_layers: int
    max_position: int
    moe_prefix: str = "mlp"
    expert_names: tuple[str, str, str] = ("gate_proj", "up_proj", "down_proj")
    first_moe_layer: int = 0
    moe_layer_ids: tuple[int, ...] = ()   # the MoE layers, by index (the others are dense)
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def kv_bytes_per_token_layer_full(self) -> int:
        """Bytes of KV cache per token per layer before any TP sharding (BF16 cache)."""
        if self.attn == "mla":
            return (self.kv_lora_rank + self.qk_rope_dim) * 2
        return self.n_kv_heads * (self.head_dim + self.v_head_dim) * 2


def _get(cfg: dict[str, Any], *keys: str, default: Any = None) -> Any:
    for k in keys:
        v = cfg.get(k)
        if v is not None:
            return v
    return default


def routed_experts(cfg: dict[str, Any]) -> int:
    """The model's routed experts (0 for a dense model), under each architecture's name for them."""
    if "text_config" in cfg and "hidden_size" not in cfg:
        cfg = cfg["text_config"]
    return int(_get(cfg, "n_routed_experts", "num_experts", "num_local_experts", default=0) or 0)


def build_arch(cfg: dict[str, Any]) -> Arch:
    """Read the size-determining fields of an HF config (the text config of a multimodal one)."""
    if "text_config" in cfg and "hidden_size" not in cfg:
        cfg = {**cfg["text_config"], "quantization_config": cfg.get("quantization_config")}
    mt = str(cfg.get("model_type", "")).lower()
    notes: list[str] = []
    hidden = int(cfg["hidden_size"])
    n_layers = int(cfg["num_hidden_layers"])
    n_heads = int(cfg["num_attention_heads"])
    vocab = int(cfg["vocab_size"])

    mla = cfg.get("kv_lora_rank") is not None
    if mla:
        nope, rope = int(cfg["qk_nope_head_dim"]), int(cfg["qk_rope_head_dim"])
        v_dim = int(cfg["v_head_dim"])
        head_dim, n_kv = nope + rope, n_heads
        q_lora = cfg.get("q_lora_rank")
        q_lora = int(q_lora) if q_lora else None
        kv_lora = int(cfg["kv_lora_rank"])
    else:
        nope = rope = kv_lora = 0
        q_lora = None
        head_dim = int(_get(cfg, "head_dim", default=hidden // n_heads))
        v_dim = head_dim
        n_kv = int(_get(cfg, "num_key_value_heads", default=n_heads))

    if mt in ("qwen2", "qwen2_moe"):
        qkv_bias = True
    else:
        qkv_bias = bool(_get(cfg, "attention_bias", "qkv_bias", default=False)) and not mla

    if mt in ("qwen3", "qwen3_moe"):
        qk_norm = "head"
    elif mt == "minimax_m2":
        qk_norm = "full" if cfg.get("use_qk_norm", True) and cfg.get("qk_norm_type", "per_layer") == "per_layer" else (
            "head" if cfg.get("use_qk_norm") else "none")
    elif cfg.get("use_qk_norm"):
        qk_norm = "head"
    else:
        qk_norm = "none"

    n_experts = routed_experts(cfg)
    topk = int(_get(cfg, "num_experts_per_tok", "moe_topk", default=0) or 0)
    moe = _moe_layout(cfg, mt, n_layers, n_experts, notes)
    mtp = int(cfg.get("num_nextn_predict_layers") or 0)
    return Arch(
        model_type=mt, hidden=hidden, vocab=vocab, n_layers=n_layers,
        tie_embeddings=bool(cfg.get("tie_word_embeddings", False)),
        attn="mla" if mla else "gqa", n_heads=n_heads, n_kv_heads=n_kv, head_dim=head_dim, v_head_dim=v_dim,
        qkv_bias=qkv_bias, qk_norm=qk_norm, q_lora_rank=q_lora, kv_lora_rank=kv_lora,
        qk_nope_dim=nope, qk_rope_dim=rope, n_experts=n_experts, topk=topk, mtp_layers=mtp,
        max_position=int(cfg.get("max_position_embeddings") or 0), notes=tuple(notes), **moe,
    )

def _moe_layout(cfg: dict[str, Any], mt: str, n_layers: int, n_experts: int, notes: list[str]) -> dict[str, Any]:
    """Which layers are MoE and how wide their experts are, by family: the MoE fields of :class:`Arch`."""
    moe_prefix, expert_names = "mlp", ("gate_proj", "up_proj", "down_proj")
    shared_gate = False
    router_bias = False
    first_moe = 0
    moe_ids: list[int] = []
    if n_experts == 0:
        dense_layers, moe_layers, moe_inter = n_layers, 0, 0
        dense_inter = int(cfg["intermediate_size"])
        shared_inter = 0
    elif mt in ("minimax_m2", "mixtral", "minimax", "minimax_m1"):
        # every layer is MoE; intermediate_size is the per-expert width
        dense_layers, moe_layers = 0, n_layers
        moe_ids = list(range(n_layers))
        moe_inter = int(cfg["intermediate_size"])
        dense_inter = 0
        shared_inter = int(cfg.get("shared_intermediate_size") or 0)
        moe_prefix, expert_names = "block_sparse_moe", ("w1", "w3", "w2")
        router_bias = bool(cfg.get("use_routing_bias", False))
        if mt == "minimax_m2" and cfg.get("use_mtp"):
            notes.append("config declares MTP modules (num_mtp_modules) but the released "
                         "checkpoint ships no MTP weights; none counted")
    elif mt in ("qwen2_moe", "qwen3_moe") or "decoder_sparse_step" in cfg:
        step = int(cfg.get("decoder_sparse_step", 1) or 1)
        mlp_only = set(cfg.get("mlp_only_layers") or [])
        moe_ids = [i for i in range(n_layers) if i not in mlp_only and (i + 1) % step == 0]
        moe_layers = len(moe_ids)
        dense_layers = n_layers - moe_layers
        first_moe = moe_ids[0] if moe_ids else 0
        moe_inter = int(cfg["moe_intermediate_size"])
        dense_inter = int(cfg["intermediate_size"])
        shared_inter = int(cfg.get("shared_expert_intermediate_size") or 0)
        shared_gate = shared_inter > 0
    else:
        # DeepSeek-V2/V3, Kimi-K2, GLM-4.x MoE: first_k_dense_replace dense layers, then MoE every moe_layer_freq
        k = int(cfg.get("first_k_dense_replace", 0) or 0)
        freq = int(cfg.get("moe_layer_freq", 1) or 1)
        moe_ids = [i for i in range(n_layers) if i >= k and i % freq == 0]
        moe_layers = len(moe_ids)
        dense_layers = n_layers - moe_layers
        first_moe = moe_ids[0] if moe_ids else 0
        moe_inter = int(cfg["moe_intermediate_size"])
        dense_inter = int(cfg["intermediate_size"])
        shared_inter = int(cfg.get("n_shared_experts") or 0) * moe_inter
        router_bias = cfg.get("topk_method") == "noaux_tc" or mt == "glm4_moe"
        if mt not in ("deepseek_v2", "deepseek_v3", "kimi_k2", "glm4_moe"):
            notes.append(f"model_type {mt!r} read with the DeepSeek/GLM MoE rules")

    return dict(dense_layers=dense_layers, dense_inter=dense_inter, moe_layers=moe_layers, moe_inter=moe_inter,
                shared_inter=shared_inter, shared_gate=shared_gate, router_bias=router_bias, moe_prefix=moe_prefix,
                expert_names=expert_names, first_moe_layer=first_moe, moe_layer_ids=tuple(moe_ids))


def _attention(a: Arch, pre: str, n: int, mtp: bool) -> list[Tensor]:
    h = a.hidden
    t: list[Tensor] = []
    T = lambda name, rows, cols, shard, **kw: t.append(  # noqa: E731
        Tensor(f"{pre}.self_attn.{name}", kw.pop("part", "attention"), rows, cols, n, shard, mtp=mtp, **kw))
    if a.attn == "mla":
        qk = a.qk_nope_dim + a.qk_rope_dim
        if a.q_lora_rank:
            T("q_a_proj", a.q_lora_rank, h, "replicated")
            T("q_a_layernorm", a.q_lora_rank, 1, "replicated", linear=False, part="norms")
            T("q_b_proj", a.n_heads * qk, a.q_lora_rank, "column")
        else:
            T("q_proj", a.n_heads * qk, h, "column")
        T("kv_a_proj_with_mqa", a.kv_lora_rank + a.qk_rope_dim, h, "replicated")
        T("kv_a_layernorm", a.kv_lora_rank, 1, "replicated", linear=False, part="norms")
        # kv_b_proj serves prefill (MHA form); decode uses the absorbed copies below
        T("kv_b_proj", a.n_heads * (a.qk_nope_dim + a.v_head_dim), a.kv_lora_rank, "column", decode=False)
        T("o_proj", h, a.n_heads * a.v_head_dim, "row")
    else:
        T("q_proj", a.n_heads * a.head_dim, h, "column")
        T("k_proj", a.n_kv_heads * a.head_dim, h, "column_kv")
        T("v_proj", a.n_kv_heads * a.v_head_dim, h, "column_kv")
        if a.qkv_bias:
            T("q_proj.bias", a.n_heads * a.head_dim, 1, "column", linear=False)
            T("k_proj.bias", a.n_kv_heads * a.head_dim, 1, "column_kv", linear=False)
            T("v_proj.bias", a.n_kv_heads * a.v_head_dim, 1, "column_kv", linear=False)
        T("o_proj", h, a.n_heads * a.v_head_dim, "row")
        if a.qk_norm == "head":
            T("q_norm", a.head_dim, 1, "replicated", linear=False, part="norms")
            T("k_norm", a.head_dim, 1, "replicated", linear=False, part="norms")
        elif a.qk_norm == "full":
            T("q_norm", a.n_heads * a.head_dim, 1, "column", linear=False, part="norms")
            T("k_norm", a.n_kv_heads * a.head_dim, 1, "column_kv", linear=False, part="norms")
    t.append(Tensor(f"{pre}.input_layernorm", "norms", h, 1, n, "replicated", linear=False, mtp=mtp))
    t.append(Tensor(f"{pre}.post_attention_layernorm", "norms", h, 1, n, "replicated", linear=False, mtp=mtp))
    return t


def _dense_mlp(a: Arch, pre: str, n: int) -> list[Tensor]:
    h, i = a.hidden, a.dense_inter
    return [Tensor(f"{pre}.mlp.gate_proj", "dense_mlp", i, h, n, "column"),
            Tensor(f"{pre}.mlp.up_proj", "dense_mlp", i, h, n, "column"),
            Tensor(f"{pre}.mlp.down_proj", "dense_mlp", h, i, n, "row")]


def _experts(a: Arch, mp: str, count: int, mtp: bool, e: int = 0) -> list[Tensor]:
    """Routed expert ``e``'s three weights (``count`` copies: one per layer and expert in the inventory)."""
    h, i = a.hidden, a.moe_inter
    g, u, d = a.expert_names
    return [Tensor(f"{mp}.experts.{e}.{g}", "routed_experts", i, h, count, "expert_column", routed=True, mtp=mtp),
            Tensor(f"{mp}.experts.{e}.{u}", "routed_experts", i, h, count, "expert_column", routed=True, mtp=mtp),
            Tensor(f"{mp}.experts.{e}.{d}", "routed_experts", h, i, count, "expert_row", routed=True, mtp=mtp)]


def _moe(a: Arch, pre: str, n: int, mtp: bool) -> list[Tensor]:
    h, e = a.hidden, a.n_experts
    mp = f"{pre}.{a.moe_prefix}"
    t = [Tensor(f"{mp}.gate", "router", e, h, n, "replicated", router=True, mtp=mtp)]
    if a.router_bias:
        # MiniMax keeps the selection bias on the MoE block, the DeepSeek/GLM families on the gate
        # (the checkpoints' names, as vLLM and SGLang load them; docs/tiny.md)
        owner = mp if a.moe_prefix == "block_sparse_moe" else f"{mp}.gate"
        t.append(Tensor(f"{owner}.e_score_correction_bias", "router", e, 1, n, "replicated",
                        linear=False, dtype="fp32", router=True, mtp=mtp))
    t += _experts(a, mp, n * e, mtp)
    if a.shared_inter:
        s = a.shared_inter
        name = "shared_expert" if a.shared_gate else "shared_experts"
        t += [Tensor(f"{mp}.{name}.gate_proj", "shared_experts", s, h, n, "column", mtp=mtp),
              Tensor(f"{mp}.{name}.up_proj", "shared_experts", s, h, n, "column", mtp=mtp),
              Tensor(f"{mp}.{name}.down_proj", "shared_experts", h, s, n, "row", mtp=mtp)]
        if a.shared_gate:
            t.append(Tensor(f"{mp}.shared_expert_gate", "shared_experts", 1, h, n, "replicated", mtp=mtp))
    return t


def _embedding(a: Arch) -> list[Tensor]:
    return [Tensor("model.embed_tokens", "embedding", a.vocab, a.hidden, 1, "vocab", linear=False, decode=False)]


def _final(a: Arch) -> list[Tensor]:
    # tied: the head reads the embedding matrix; no extra storage
    return [Tensor("model.norm", "norms", a.hidden, 1, 1, "replicated", linear=False),
            Tensor("lm_head", "lm_head", a.vocab, a.hidden, 1, "vocab", stored=not a.tie_embeddings)]


def checkpoint_tensors(a: Arch) -> list[Tensor]:
    """Every stored tensor of the checkpoint, one by one (``count`` 1), in file order: layer by
    layer, routed experts expanded to ``experts.{e}``. Built by the same helpers as
    :func:`inventory` (which lists each kind once with a count), so a checkpoint written from
    this list (``moetrace.tiny``) has exactly the planner's bytes. MTP layers and tensors an
    engine builds at load time are not included."""
    t = _embedding(a)
    for i in range(a.n_layers):
        pre = f"model.layers.{i}"
        t += _attention(a, pre, 1, False)
        if i not in a.moe_layer_ids:
            t += _dense_mlp(a, pre, 1)
            continue
        moe = _moe(a, pre, 1, False)
        k = next(j for j, x in enumerate(moe) if x.routed)   # expert 0's three weights stand for all
        mp = f"{pre}.{a.moe_prefix}"
        t += moe[:k] + [x for e in range(a.n_experts) for x in _experts(a, mp, 1, False, e)] + moe[k + 3:]
    return t + [x for x in _final(a) if x.stored]


def inventory(a: Arch, *, include_mtp: bool = False, engine_extras: bool = False) -> list[Tensor]:
    """All weights of the model. ``include_mtp`` adds the multi-token-prediction layers
    (as engines load them for speculative decoding: their embedding and head are shared with
    the main model). ``engine_extras`` adds tensors an engine builds at load time (SGLang's
    absorbed MLA matrices w_kc / w_vc, BF16 copies of kv_b_proj)."""
    h = a.hidden
    t = _embedding(a)
    if a.dense_layers:
        pre = "model.layers.0"
        t += _attention(a, pre, a.dense_layers, False)
        t += _dense_mlp(a, pre, a.dense_layers)
    if a.moe_layers:
        pre = f"model.layers.{a.first_moe_layer}"
        t += _attention(a, pre, a.moe_layers, False)
        t += _moe(a, pre, a.moe_layers, False)
    t += _final(a)
    if include_mtp and a.mtp_layers:
        n = a.mtp_layers
        pre = f"model.layers.{a.n_layers}"
        t += [Tensor(f"{pre}.enorm", "norms", h, 1, n, "replicated", linear=False, mtp=True),
              Tensor(f"{pre}.hnorm", "norms", h, 1, n, "replicated", linear=False, mtp=True),
              Tensor(f"{pre}.eh_proj", "attention", h, 2 * h, n, "replicated", linear=False, mtp=True),
              Tensor(f"{pre}.shared_head.norm", "norms", h, 1, n, "replicated", linear=False, mtp=True)]
        t += _attention(a, pre, n, True)
        t += _moe(a, pre, n, True) if a.n_experts else _dense_mlp(a, pre, n)
    if engine_extras and a.attn == "mla":
        layers = a.n_layers + (a.mtp_layers if include_mtp else 0)
        t += [Tensor("engine.w_kc", "attention", a.n_heads * a.qk_nope_dim, a.kv_lora_rank, layers, "column",
                     linear=False, prefill=False, engine_extra=True),
              Tensor("engine.w_vc", "attention", a.n_heads * a.v_head_dim, a.kv_lora_rank, layers, "column",
                     linear=False, prefill=False, engine_extra=True)]
    return t


# ---------------------------------------------------------------------------------------------
# Quantization: which tensors the checkpoint stores quantized, and how


def _ct_matches(name: str, target: str) -> bool:
    if target.startswith("re:"):
        return re.match(target[3:], name) is not None
    return name == target or name.endswith("." + target)


@dataclass(frozen=True)
class QuantScheme:
    name: str                      # "none", "fp8_block", "fp8_channel", "fp8_tensor", "compressed-tensors", ...
    fmt: QuantFormat | None        # format of quantized tensors
    not_converted: tuple[str, ...] = ()   # fp8: modules_to_not_convert
    targets: tuple[str, ...] = ()         # compressed-tensors targets
    ignore: tuple[str, ...] = ()          # compressed-tensors ignore list
    warning: str | None = None

    def format_for(self, t: Tensor) -> QuantFormat:
        base = FP32 if t.dtype == "fp32" else BF16
        if self.fmt is None or not t.linear or t.router or t.engine_extra:
            return base   # engines never quantize routers; norms, biases, embeddings stay in their dtype
        if self.name.startswith("fp8"):
            if t.part == "lm_head":
                return base
            if any(t.name == m or t.name.endswith("." + m) or f".{m}." in f".{t.name}."
                   for m in self.not_converted):
                return base
            return self.fmt
        if self.name == "compressed-tensors":
            if any(_ct_matches(t.name, ig) for ig in self.ignore):
                return base
            if self.targets and not any(tg == "Linear" or _ct_matches(t.name, tg) for tg in self.targets):
                return base
            return self.fmt
        return self.fmt if t.part != "lm_head" else base


def quant_format_for(cfg: dict[str, Any], online: str | None = None) -> QuantScheme:
    """The storage scheme of a checkpoint from its ``quantization_config``; ``online`` is an
    engine ``--quantization`` applied to a BF16 checkpoint (only FP8 is modelled)."""
    q = cfg.get("quantization_config") or {}
    method = str(q.get("quant_method", "")).lower()
    if method == "fp8":
        blk = q.get("weight_block_size")
        not_conv = tuple(q.get("modules_to_not_convert") or ())
        if blk:
            fmt = QuantFormat(f"fp8_block{blk[0]}x{blk[1]}", 8, int(blk[0]), int(blk[1]), 4, compute="fp8")
            return QuantScheme("fp8_block", fmt, not_converted=not_conv)
        return QuantScheme("fp8_tensor", QuantFormat("fp8_tensor", 8, 0, 0, 4, compute="fp8"), not_converted=not_conv)
    if method == "compressed-tensors":
        groups = q.get("config_groups") or {}
        if not groups:
            return QuantScheme("none", None, warning="compressed-tensors config without config_groups: BF16 assumed")
        g = next(iter(groups.values()))
        w = g.get("weights") or {}
        bits = int(w.get("num_bits", 16))
        strategy = w.get("strategy", "tensor")
        kind = w.get("type", "int")
        warning = None
        if len(groups) > 1:
            warning = "compressed-tensors with several config groups: the first group's scheme applied to all targets"
        scale_bytes = 2 if kind == "int" else 4   # int weight-only schemes store scales in the model dtype
        if strategy == "group":
            gs = int(w.get("group_size") or 128)
            fmt = QuantFormat(f"{kind}{bits}_g{gs}", bits, 1, gs, scale_bytes)
        elif strategy == "channel":
            fmt = QuantFormat(f"{kind}{bits}_channel", bits, 1, 0, scale_bytes)
        elif strategy == "block":
            blk = w.get("block_structure") or [128, 128]
            fmt = QuantFormat(f"{kind}{bits}_block", bits, int(blk[0]), int(blk[1]), scale_bytes)
        else:
            fmt = QuantFormat(f"{kind}{bits}_tensor", bits, 0, 0, scale_bytes)
        if kind == "float" and bits == 8 and (g.get("input_activations") or {}).get("num_bits") == 8:
            fmt = QuantFormat(fmt.name, fmt.bits, fmt.block_rows, fmt.block_cols, fmt.scale_bytes, compute="fp8")
        return QuantScheme("compressed-tensors", fmt, targets=tuple(g.get("targets") or ("Linear",)),
                           ignore=tuple(q.get("ignore") or ()), warning=warning)
    if method in ("gptq", "awq"):
        bits = int(q.get("bits", q.get("w_bit", 4)))
        gs = int(q.get("group_size", q.get("q_group_size", 128)))
        return QuantScheme(method, QuantFormat(f"{method}{bits}_g{gs}", bits, 1, gs, 2),
                           not_converted=tuple(q.get("modules_to_not_convert") or ()))
    if method:
        return QuantScheme("none", None, warning=f"quantization {method!r} not modelled: weights counted as BF16")
    if online:
        o = online.lower()
        if o in ("fp8", "w8a8_fp8", "modelopt_fp8"):
            # online FP8 of a BF16 checkpoint: per-output-channel (or per-tensor) scales, W8A8
            return QuantScheme("fp8_channel", QuantFormat("fp8_channel", 8, 1, 0, 4, compute="fp8"))
        return QuantScheme("none", None, warning=f"--quantization {online!r} not modelled: native precision assumed")
    return QuantScheme("none", None)
