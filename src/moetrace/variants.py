"""Model variants that run without a checkpoint: dummy weights, a cut depth, one rank of a multi-GPU config.

The spec's models are 235B-1T parameters over 8 GPUs. One GPU holds **one rank** of each TP8 config at
full depth, and the engines can fill weights themselves (vLLM's and SGLang's ``--load-format dummy``).
This module writes the weightless model directory such a run loads:

- ``config.json``: the model's real config, or the per-rank shapes of a TP x EP config
  (:func:`rank_config`), cut to ``layers`` (:func:`cut_layers`); ``quantization_config`` kept (the
  engine builds fp8 / int4 layers as for the real checkpoint), ``auto_map`` dropped (no remote code
  ships; both engines implement these architectures);
- a tokenizer with the config's vocabulary size (moetrace's own, as for tiny checkpoints);
- ``moetrace.json``: the name records carry, the precision, and ``facts.variant``: what the run stands
  for and what it leaves out (the runner writes it into every record as ``model_detail``).

:func:`rank_config` and :func:`cut_layers` are pure. Sharding rules (per engine; ``ep_is_tp`` is the
adapter's ``planner_ep_is_tp``):

- attention: query heads / TP; GQA KV heads / TP, replicated (1 a rank) where TP exceeds them; MLA
  (DeepSeek, Kimi): heads / TP, the latent projections replicated, as both engines shard them;
- MoE: ``moe_ep`` = EP (SGLang ``--ep``), or TP when EP > 1 on an engine whose EP spans the TP group
  (vLLM ``--enable-expert-parallel``); ``moe_tp`` = TP / ``moe_ep``. A rank holds experts / ``moe_ep``
  local experts, each of width / ``moe_tp``; a token activates top_k / ``moe_ep`` of them (the expected
  number of local experts under uniform routing, rounded, at least 1);
- dense MLP layers / TP; the vocabulary (embedding, LM head) / TP;
- a shared expert is as wide as ``n_shared_experts`` x the routed width in these configs, so it is
  / ``moe_tp`` here, where the real rank holds it / TP: :func:`rank_config` reports the extra bytes.

Left out of a one-rank run, and said so in the record: the collectives (TP all-reduces, EP
dispatch/combine, the logits gather), the wait for the slowest EP rank in each step, and the
router's full width (a rank's router scores only its local experts).
"""

from __future__ import annotations

import copy
import json
import math
import os
import shutil
from pathlib import Path
from typing import Any

__all__ = ["VariantError", "cut_layers", "rank_config", "write_variant", "variant_name"]


class VariantError(ValueError):
    """A variant that cannot be made (a width that does not divide, a depth out of range)."""


# (attention kind, experts key, expert width key, dense MLP width key) of each family (tiny.family_of)
_KEYS = {
    "qwen3_moe": ("gqa", "num_experts", "moe_intermediate_size", "intermediate_size"),
    "deepseek_v3": ("mla", "n_routed_experts", "moe_intermediate_size", "intermediate_size"),
    "glm4_moe": ("gqa", "n_routed_experts", "moe_intermediate_size", "intermediate_size"),
    "minimax_m2": ("gqa", "num_local_experts", "intermediate_size", None),
}


def _family(cfg: dict[str, Any]) -> str:
    from .tiny import family_of
    return family_of(cfg)


def cut_layers(cfg: dict[str, Any], layers: int | None) -> dict[str, Any]:
    """The config with ``layers`` decoder layers (None: as it is) and no MTP layers, whatever the depth.

    DeepSeek, Kimi and GLM keep their leading dense layers (``first_k_dense_replace``, capped at the
    depth); Qwen3's ``mlp_only_layers`` and ``max_window_layers`` and MiniMax's ``attn_type_list`` are
    cut to match."""
    out = copy.deepcopy(cfg)
    full = int(cfg["num_hidden_layers"])
    n = full if layers is None else int(layers)
    if not 1 <= n <= full:
        raise VariantError(f"--layers {layers}: the model has 1..{full} decoder layers")
    out["num_hidden_layers"] = n
    if "first_k_dense_replace" in out:
        out["first_k_dense_replace"] = min(int(out["first_k_dense_replace"]), n)
    if "mlp_only_layers" in out:
        out["mlp_only_layers"] = [i for i in out["mlp_only_layers"] if i < n]
    if "max_window_layers" in out:
        out["max_window_layers"] = min(int(out["max_window_layers"]), n)
    for key in ("attn_type_list", "layer_types"):
        if isinstance(out.get(key), list):
            out[key] = out[key][:n]
    if "num_nextn_predict_layers" in out:  # MTP layers never load
        out["num_nextn_predict_layers"] = 0
    if "use_mtp" in out:
        out["use_mtp"] = False
    if "num_mtp_modules" in out:
        out["num_mtp_modules"] = 0
    return out


def _div(value: int, by: int, what: str) -> int:
    if by < 1 or value % by:
        raise VariantError(f"{what} {value} does not split evenly over {by}")
    return value // by


def _block(cfg: dict[str, Any]) -> int:
    """The width every quantized weight's sharded dimension must keep a multiple of."""
    q = cfg.get("quantization_config") or {}
    if q.get("weight_block_size"):
        return int(q["weight_block_size"][0])
    groups = [g.get("weights", {}).get("group_size") for g in (q.get("config_groups") or {}).values()]
    return max([int(g) for g in groups if g] or [1])


def rank_config(cfg: dict[str, Any], tp: int, ep: int = 1, *, ep_is_tp: bool = False) -> tuple[dict[str, Any], dict[str, Any]]:
    """(config of one rank's shapes, what was sharded how) for TP ``tp`` x EP ``ep`` on one engine.

    Pure. The returned facts name each sharded size (real and per rank), ``moe_ep``/``moe_tp``,
    the local top-k, and ``shared_expert_extra_params``: parameters the rank's shared expert holds
    beyond the real rank's (see the module docstring)."""
    fam = _family(cfg)
    attn, experts_key, width_key, dense_key = _KEYS[fam]
    out = copy.deepcopy(cfg)
    if tp < 1 or ep < 1 or tp % ep:
        raise VariantError(f"TP{tp} EP{ep}: EP must divide TP")
    moe_ep = tp if (ep > 1 and ep_is_tp) else ep
    moe_tp = tp // moe_ep
    block = _block(cfg)
    heads = int(cfg["num_attention_heads"])
    out["num_attention_heads"] = _div(heads, tp, "attention heads")
    if attn == "mla":
        out["num_key_value_heads"] = out["num_attention_heads"]  # MLA configs carry kv heads == heads
    else:
        kv = int(cfg.get("num_key_value_heads") or heads)
        out["num_key_value_heads"] = max(1, kv // tp) if kv >= tp else 1
        out.setdefault("head_dim", int(cfg["hidden_size"]) // heads)  # keep the real head size
    experts, width, top_k = int(cfg[experts_key]), int(cfg[width_key]), int(cfg["num_experts_per_tok"])
    out[experts_key] = _div(experts, moe_ep, "routed experts")
    out[width_key] = _div(width, moe_tp, "expert width")
    if out[width_key] % block:
        raise VariantError(f"expert width {width} / {moe_tp} = {out[width_key]} is not a multiple of the "
                           f"quantization block {block}")
    local_k = max(1, round(top_k / moe_ep))
    out["num_experts_per_tok"] = local_k
    if dense_key and cfg.get(dense_key) and fam != "minimax_m2":
        out[dense_key] = _div(int(cfg[dense_key]), tp, "dense MLP width")
    n_group = int(cfg.get("n_group") or 1)
    if n_group > 1:  # group-limited routing: keep the groups, each with fewer local experts
        while n_group > 1 and (out[experts_key] % n_group or out[experts_key] // n_group < 2):
            n_group //= 2
        out["n_group"] = n_group
        out["topk_group"] = min(int(cfg.get("topk_group") or 1), n_group)
    vocab = int(cfg["vocab_size"])
    out["vocab_size"] = math.ceil(vocab / tp)
    shared = int(cfg.get("n_shared_experts") or 0)
    hidden = int(cfg["hidden_size"])
    extra = shared * 3 * hidden * (out[width_key] - width // tp) if shared else 0
    facts = {
        "tp": tp, "ep": ep, "moe_ep": moe_ep, "moe_tp": moe_tp,
        "attention_heads": [heads, out["num_attention_heads"]],
        "kv_heads": [int(cfg.get("num_key_value_heads") or heads), out["num_key_value_heads"]],
        "routed_experts": [experts, out[experts_key]], "expert_width": [width, out[width_key]],
        "top_k": [top_k, local_k], "vocab": [vocab, out["vocab_size"]],
        "shared_expert_extra_params": extra * _moe_layers(cfg),
    }
    if dense_key and cfg.get(dense_key) and fam != "minimax_m2":
        facts["dense_width"] = [int(cfg[dense_key]), out[dense_key]]
    return out, facts


def _moe_layers(cfg: dict[str, Any]) -> int:
    n = int(cfg["num_hidden_layers"])
    return n - min(int(cfg.get("first_k_dense_replace") or 0), n) - len(cfg.get("mlp_only_layers") or [])


LEFT_OUT = ("the collectives (TP all-reduce after attention and after the MoE, EP dispatch/combine, the logits "
            "gather)", "the wait for the busiest EP rank in each step (per-step expert imbalance)",
            "the router's full width (a rank scores only its local experts)")


def variant_name(model: str, *, weights: str, layers: int | None, full_layers: int, rank_of: str | None) -> str:
    """The model name records carry: never a real-weight model's name, so never its result keys."""
    parts = [weights + " weights"] if weights != "checkpoint" else []
    if layers is not None and layers != full_layers:
        parts.append(f"{layers} of {full_layers} layers")
    if rank_of:
        parts.append(f"1 rank of {rank_of}")
    return f"{model} ({', '.join(parts)})" if parts else model


def write_variant(preset: Any, out_dir: Path, *, weights: str = "dummy", layers: int | None = None,
                  rank_of: Any = None, engine: str = "vllm") -> Path:
    """Write the weightless model directory of ``preset`` (all or nothing) and return it.

    ``rank_of``: a :class:`moetrace.matrix.Config` whose one rank to shape (None: the whole model);
    ``engine``: whose sharding rules and dummy-load flags to use."""
    from .engines.registry import engine_classes
    from .plan.evidence import predict_weights
    from .tiny import _remap_token_id, _tokenizer_config, build_tokenizer, _BOS, _EOS, _PAD
    eng = engine_classes()[engine]
    real = preset.hf_config
    cfg = cut_layers(real, layers)
    cfg.pop("auto_map", None)
    for key, tid in (("bos_token_id", _BOS), ("eos_token_id", _EOS), ("pad_token_id", _PAD)):
        if key in cfg:  # the ids of moetrace's tokenizer (the real ones may lie past a rank's vocabulary)
            cfg[key] = _remap_token_id(cfg[key], tid)
    variant: dict[str, Any] = {"of": preset.name, "weights": weights, "engine_rules": engine,
                               "layers": [cfg["num_hidden_layers"], int(real["num_hidden_layers"])]}
    if rank_of is not None:
        depth_cut = copy.deepcopy(cfg)
        cfg, shards = rank_config(cfg, rank_of.tp, rank_of.ep, ep_is_tp=eng.planner_ep_is_tp)
        per_gpu = predict_weights(depth_cut, tp=rank_of.tp, ep=rank_of.ep, engine=engine)
        variant["one_rank"] = {"stands_for": rank_of.name, **shards,
                               "planner_weights_gib_at_tp": round(per_gpu.total / 2**30, 3)}
        variant["left_out"] = list(LEFT_OUT)
    name = variant_name(preset.name, weights=weights, layers=cfg["num_hidden_layers"],
                        full_layers=int(real["num_hidden_layers"]), rank_of=rank_of.name if rank_of else None)
    engine_args = {n: [*preset.engine_args.get(n, ()), *(c.dummy_load_args if weights == "dummy" else ())]
                   for n, c in engine_classes().items()}
    meta = {"name": name, "precision": preset.precision, "matrix": [[1, 1, ["auto"]]],
            "engine_args": engine_args, "facts": {**preset.facts, "variant": variant}}
    tmp = out_dir.with_name(f".{out_dir.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    (tmp / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
    gen = {"bos_token_id": _BOS, "eos_token_id": cfg.get("eos_token_id", _EOS), "do_sample": False}
    (tmp / "generation_config.json").write_text(json.dumps(gen, indent=2) + "\n")
    build_tokenizer(int(cfg["vocab_size"])).save(str(tmp / "tokenizer.json"))
    max_len = int(cfg.get("max_position_embeddings") or 8192)
    (tmp / "tokenizer_config.json").write_text(json.dumps(_tokenizer_config(max_len), indent=2) + "\n")
    (tmp / "moetrace.json").write_text(json.dumps(meta, indent=2) + "\n")
    shutil.rmtree(out_dir, ignore_errors=True)
    os.replace(tmp, out_dir)
    return out_dir


def variant_targets(preset: Any, configs: list[Any], *, weights: str, layers: int | None, one_rank: bool,
                    engine: str, cache: Path) -> list[tuple[Any, list[Any]]]:
    """(preset, configs) pairs to run for ``--weights``/``--layers``/``--one-rank``: with ``one_rank`` each
    config becomes its own rank-shaped model launched at TP1 (same backend and quantization), else one
    variant runs the configs as given."""
    from dataclasses import replace
    from .presets import preset_from_checkpoint
    if weights != "dummy":  # the directory written holds no weights: only the engine's dummy loader fills it
        raise VariantError("--layers and --one-rank run without weight files: add --weights dummy")

    def one(rank_of: Any) -> Any:
        depth = f"L{layers}" if layers else "full"
        tag = f"{preset.slug}-{weights}-{depth}" + (f"-{rank_of.name}-{engine}" if rank_of else "")
        return preset_from_checkpoint(write_variant(preset, cache / tag, weights=weights, layers=layers,
                                                    rank_of=rank_of, engine=engine))

    if not one_rank:
        return [(one(None), list(configs))]
    out = []
    for c in configs:
        if c.fallback:
            raise VariantError(f"{c.name}: --one-rank runs no fallback configs")
        out.append((one(c), [replace(c, tp=1, ep=1, nodes=1)]))
    return out
