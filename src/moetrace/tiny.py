"""Tiny random-weight checkpoints of the presets' architectures.

``write_tiny_checkpoint(preset, out_dir)`` writes a Hugging Face style checkpoint
directory (``config.json``, ``model.safetensors``, ``tokenizer.json``,
``tokenizer_config.json``, ``generation_config.json``, ``moetrace.json``) of a
scaled-down variant of the preset's model: the same ``architectures`` and
``model_type``, the same attention kind (GQA or MLA), the same router kind, with
few layers, experts and little width. The CPU build of an engine can serve it, so
the harness can be exercised end to end without the real weights.

``tiny_hf_config(hf_config)`` is the pure part: the real config in, the tiny config
out (every real key kept, sizes scaled down). ``tensor_specs(config)`` lists the
tensors a loader expects for a config, with the names and shapes of the real
checkpoints (checked against vLLM 0.32's model code; see docs/tiny.md).

Only numpy and ``tokenizers`` are needed (no torch, no transformers): the
safetensors file is written here directly (the format is an 8-byte header length,
a JSON header, raw little-endian data), with bf16 and fp8-e4m3 conversion in numpy.
"""

from __future__ import annotations

import copy
import json
import math
import os
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

from moetrace.plan.arch import Tensor, build_arch, checkpoint_tensors
from moetrace.tensorfile import read_safetensors_header, to_bf16_bits, to_e4m3_bits, write_safetensors

__all__ = [
    "TinyError",
    "TensorSpec",
    "family_of",
    "tiny_hf_config",
    "tensor_specs",
    "write_tiny_checkpoint",
    "build_tokenizer",
    "write_safetensors",
    "read_safetensors_header",
    "SPECIAL_TOKENS",
    "TINY_PRECISIONS",
    "parse_overrides",
    "vllm_cpu_blocker",
]


class TinyError(ValueError):
    """An architecture or option the tiny generator cannot handle; the message says why."""


# Architectures this module knows, by the config's first ``architectures`` entry.
_FAMILIES = {
    "Qwen3MoeForCausalLM": "qwen3_moe",
    "DeepseekV3ForCausalLM": "deepseek_v3",  # DeepSeek-V3.x and Kimi-K2 (model_type kimi_k2)
    "Glm4MoeForCausalLM": "glm4_moe",
    "MiniMaxM2ForCausalLM": "minimax_m2",
}

# The tiny sizes. Width is a multiple of 128 everywhere an fp8 128x128 block
# quantization has to tile it. MLA keeps kv_lora_rank 512 + qk_rope_head_dim 64:
# vLLM's CPU MLA kernel compiles only for a 576-wide latent cache.
_COMMON = {
    "hidden_size": 256,
    "num_attention_heads": 8,
    "vocab_size": 4096,
    "max_position_embeddings": 32768,  # an upper bound: min(real, this)
    "experts": 16,
    "top_k": 4,
    "moe_intermediate_size": 128,
    "intermediate_size": 512,  # dense MLP width (MiniMax: mlp_intermediate_size)
}

# Generic override names -> the config key each family uses for them.
_ALIASES = {
    "hidden": "hidden_size",
    "layers": "num_hidden_layers",
    "vocab": "vocab_size",
    "heads": "num_attention_heads",
    "kv_heads": "num_key_value_heads",
}

TINY_PRECISIONS = ("bf16", "fp8", "int4")

# Token strings of the tiny tokenizer's special tokens, in id order (ids 0..).
SPECIAL_TOKENS = ("<unk>", "<|bos|>", "<|eos|>", "<|pad|>", "<|eot|>", "<|eom|>", "<|user|>", "<|assistant|>")
_UNK, _BOS, _EOS, _PAD, _EOT, _EOM = 0, 1, 2, 3, 4, 5


def family_of(hf_config: dict[str, Any]) -> str:
    archs = hf_config.get("architectures") or []
    for a in archs:
        if a in _FAMILIES:
            return _FAMILIES[a]
    raise TinyError(
        f"no tiny variant for architectures {archs!r} (model_type {hf_config.get('model_type')!r}); "
        f"known: {', '.join(_FAMILIES)}"
    )


def _moe_keys(fam: str) -> tuple[str, str]:
    """(experts key, per-expert width key) of a family."""
    return {
        "qwen3_moe": ("num_experts", "moe_intermediate_size"),
        "deepseek_v3": ("n_routed_experts", "moe_intermediate_size"),
        "glm4_moe": ("n_routed_experts", "moe_intermediate_size"),
        "minimax_m2": ("num_local_experts", "intermediate_size"),
    }[fam]


def _remap_token_id(v: Any, tiny_id: int) -> Any:
    if v is None:
        return tiny_id
    if isinstance(v, list):  # e.g. GLM's three end tokens: eos, eot, eom
        ids = (tiny_id, _EOT, _EOM) if tiny_id == _EOS else (tiny_id,)
        return [ids[i % len(ids)] for i in range(len(v))]
    return tiny_id


def tiny_hf_config(hf_config: dict[str, Any], **overrides: Any) -> dict[str, Any]:
    """The tiny variant of a real Hugging Face config (pure: the input is not changed).

    Every key of the real config is kept; sizes are scaled down, MTP layers are
    dropped (``num_nextn_predict_layers`` 0, MiniMax ``use_mtp`` false),
    ``auto_map`` is removed (no remote code ships with a tiny checkpoint: vLLM has
    these architectures natively) and ``quantization_config`` is removed (a tiny
    checkpoint is bf16 unless written with another precision by
    ``write_tiny_checkpoint``). Token ids are those of the tiny tokenizer.

    ``overrides`` are config keys (``hidden_size=128``, ``num_hidden_layers=4``) or
    the generic names ``experts``, ``top_k``, ``dense_layers``, ``layers``,
    ``hidden``, ``heads``, ``kv_heads``, ``vocab``, ``moe_width``; they are applied
    last, so they win. ``None`` leaves a value as computed.
    """
    fam = family_of(hf_config)
    real = hf_config
    cfg = copy.deepcopy(hf_config)
    ov = {k: v for k, v in overrides.items() if v is not None}

    def take(name: str, default: Any) -> Any:
        return ov.pop(name, default)

    experts_key, width_key = _moe_keys(fam)
    hidden = take("hidden", take("hidden_size", _COMMON["hidden_size"]))
    heads = take("heads", take("num_attention_heads", _COMMON["num_attention_heads"]))
    vocab = take("vocab", take("vocab_size", _COMMON["vocab_size"]))
    experts = take("experts", take(experts_key, _COMMON["experts"]))
    top_k = take("top_k", take("num_experts_per_tok", _COMMON["top_k"]))
    moe_width = take("moe_width", take(width_key, _COMMON["moe_intermediate_size"]))
    if vocab < len(SPECIAL_TOKENS) + 256:
        raise TinyError(f"vocab_size {vocab} too small: the tiny tokenizer needs at least {len(SPECIAL_TOKENS) + 256}")
    if not 1 <= top_k <= experts:
        raise TinyError(f"top_k {top_k} must be between 1 and the number of experts {experts}")

    cfg.pop("auto_map", None)
    cfg.pop("quantization_config", None)
    cfg["hidden_size"] = hidden
    cfg["num_attention_heads"] = heads
    cfg["vocab_size"] = vocab
    cfg["num_experts_per_tok"] = top_k
    cfg[experts_key] = experts
    cfg[width_key] = moe_width
    cfg["max_position_embeddings"] = take(
        "max_position_embeddings", min(int(real.get("max_position_embeddings") or 8192), _COMMON["max_position_embeddings"])
    )
    rs = cfg.get("rope_scaling")
    if isinstance(rs, dict) and rs.get("type", rs.get("rope_type")) == "yarn" and rs.get("original_max_position_embeddings"):
        # YaRN's factor is the ratio of the two context lengths; keep it consistent
        # with the shortened context (transformers warns otherwise).
        rs["factor"] = max(1.0, cfg["max_position_embeddings"] / rs["original_max_position_embeddings"])
    cfg["torch_dtype"] = "bfloat16"
    cfg["tie_word_embeddings"] = bool(real.get("tie_word_embeddings", False))
    for key, tid in (("bos_token_id", _BOS), ("eos_token_id", _EOS), ("pad_token_id", _PAD)):
        if key in real:
            cfg[key] = _remap_token_id(real[key], tid)

    _scale_family(fam, real, cfg, take, heads=heads, experts=experts, moe_width=moe_width)

    cfg.update(ov)  # anything else: raw config keys, applied as given
    if fam in ("deepseek_v3", "glm4_moe") and cfg["first_k_dense_replace"] > cfg["num_hidden_layers"]:
        raise TinyError("first_k_dense_replace exceeds num_hidden_layers")
    return cfg


def _scale_family(fam: str, real: dict[str, Any], cfg: dict[str, Any], take: Callable[[str, Any], Any], *,
                  heads: int, experts: int, moe_width: int) -> None:
    """The keys one family's configs have (layers, attention shape, routing groups, MTP), scaled into ``cfg``;
    ``take(name, default)``: an override of that name, else the default."""
    if fam in ("qwen3_moe", "glm4_moe", "minimax_m2"):  # GQA
        cfg["num_key_value_heads"] = take("kv_heads", take("num_key_value_heads", max(1, heads // 4)))
        cfg["head_dim"] = take("head_dim", 64)
    if fam == "qwen3_moe":
        layers = take("layers", take("num_hidden_layers", 2))
        cfg["num_hidden_layers"] = layers
        cfg["intermediate_size"] = take("intermediate_size", _COMMON["intermediate_size"])
        if "max_window_layers" in real:
            cfg["max_window_layers"] = layers
        cfg["mlp_only_layers"] = [i for i in real.get("mlp_only_layers", []) if i < layers]
    elif fam in ("deepseek_v3", "glm4_moe"):
        dense = take("dense_layers", take("first_k_dense_replace", min(1, real.get("first_k_dense_replace", 0))))
        layers = take("layers", take("num_hidden_layers", dense + 2))
        cfg["first_k_dense_replace"] = dense
        cfg["num_hidden_layers"] = layers
        cfg["intermediate_size"] = take("intermediate_size", _COMMON["intermediate_size"])
        cfg["num_nextn_predict_layers"] = 0
        n_group = int(real.get("n_group") or 1)
        # Keep group-limited routing where the real model has it, with >= 2 experts a
        # group (noaux_tc scores a group by its top-2 experts).
        while n_group > 1 and (experts % n_group or experts // n_group < 2):
            n_group //= 2
        cfg["n_group"] = take("n_group", n_group)
        cfg["topk_group"] = take("topk_group", max(1, min(int(real.get("topk_group") or 1), cfg["n_group"])))
    if fam == "deepseek_v3":  # MLA
        cfg["num_key_value_heads"] = heads  # MLA configs carry kv heads == heads
        cfg["q_lora_rank"] = take("q_lora_rank", 256 if real.get("q_lora_rank") is not None else None)
        cfg["kv_lora_rank"] = take("kv_lora_rank", 512)
        cfg["qk_rope_head_dim"] = take("qk_rope_head_dim", 64)
        cfg["qk_nope_head_dim"] = take("qk_nope_head_dim", 64)
        cfg["v_head_dim"] = take("v_head_dim", 64)
    if fam == "minimax_m2":
        layers = take("layers", take("num_hidden_layers", 2))
        cfg["num_hidden_layers"] = layers
        cfg["rotary_dim"] = take("rotary_dim", cfg["head_dim"] * real.get("rotary_dim", 64) // real.get("head_dim", 128))
        cfg["mlp_intermediate_size"] = take("mlp_intermediate_size", _COMMON["intermediate_size"])
        if "attn_type_list" in real:
            cfg["attn_type_list"] = (list(real["attn_type_list"]) * layers)[:layers]
        cfg["use_mtp"] = False
        cfg["num_mtp_modules"] = 0
        if "shared_intermediate_size" in real:
            cfg["shared_intermediate_size"] = 0 if not real["shared_intermediate_size"] else moe_width


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[int, ...]
    kind: str  # "linear" (quantizable), "router", "embed", "norm", "bias", "ebias"
    module: str = ""  # the Linear module of a linear/bias tensor ("model.layers.0.self_attn.q_proj")
    expert: bool = False  # a routed expert's weight (int4 in Kimi-K2)


def tensor_specs(cfg: dict[str, Any]) -> list[TensorSpec]:
    """The tensors of a checkpoint of this (tiny) config, in the real checkpoints'
    names and shapes, in a fixed order: the planner's layout
    (``moetrace.plan.arch.checkpoint_tensors``), so the written bytes are the planned ones.
    MTP layers are not included."""
    family_of(cfg)  # only the families checked against the engines (docs/tiny.md)
    return [_spec(t) for t in checkpoint_tensors(build_arch(cfg))]


def _spec(t: Tensor) -> TensorSpec:
    shape = (t.rows,) if t.cols == 1 and not t.linear else (t.rows, t.cols)  # vectors are 1-D on disk
    if t.part in ("embedding", "lm_head"):
        return TensorSpec(f"{t.name}.weight", shape, "embed")
    if t.router:
        return TensorSpec(f"{t.name}.weight", shape, "router") if t.linear else TensorSpec(t.name, shape, "ebias")
    if t.part == "norms":
        return TensorSpec(f"{t.name}.weight", shape, "norm")
    if t.name.endswith(".bias"):
        return TensorSpec(t.name, shape, "bias", t.name[: -len(".bias")])
    return TensorSpec(f"{t.name}.weight", shape, "linear", t.name, t.routed)


# ---------------------------------------------------------------- tokenizer

def _merge_alphabet() -> list[str]:
    from tokenizers import pre_tokenizers

    alphabet = set(pre_tokenizers.ByteLevel.alphabet())
    chars = ["\u0120"] + [chr(c) for c in range(ord("a"), ord("z") + 1)]
    chars += [chr(c) for c in range(ord("A"), ord("Z") + 1)] + [chr(c) for c in range(ord("0"), ord("9") + 1)]
    assert all(c in alphabet for c in chars)
    return chars


def build_tokenizer(vocab_size: int):
    """A byte-level BPE tokenizer of exactly ``vocab_size`` tokens, built offline:
    the special tokens (ids 0..7), the 256 byte symbols, then two-symbol merges of
    space/letters/digits. Any text encodes; ids decode to text."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors

    byte_syms = sorted(pre_tokenizers.ByteLevel.alphabet(), key=lambda c: ord(c))
    vocab: dict[str, int] = {}
    for t in SPECIAL_TOKENS + tuple(byte_syms):
        vocab[t] = len(vocab)
    chars = _merge_alphabet()
    merges: list[tuple[str, str]] = []
    want = vocab_size - len(vocab)
    if want < 0:
        raise TinyError(f"vocab_size {vocab_size} below {len(vocab)}")
    for a in chars:
        for b in chars:
            if len(merges) == want:
                break
            merges.append((a, b))
            vocab[a + b] = len(vocab)
    i = 0
    while len(vocab) < vocab_size:  # beyond 63*63 two-symbol merges: three-symbol ones
        a, b = merges[i // len(chars)][0] + merges[i // len(chars)][1], chars[i % len(chars)]
        if a + b not in vocab:
            merges.append((a, b))
            vocab[a + b] = len(vocab)
        i += 1
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token=None, fuse_unk=False))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    tok.add_special_tokens(list(SPECIAL_TOKENS))
    assert tok.get_vocab_size() == vocab_size, (tok.get_vocab_size(), vocab_size)
    return tok


_CHAT_TEMPLATE = (
    "{% for m in messages %}{{ '<|' + m['role'] + '|>' if m['role'] in ['user', 'assistant'] else '' }}"
    "{{ m['content'] }}{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def _tokenizer_config(max_len: int) -> dict[str, Any]:
    return {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": SPECIAL_TOKENS[_BOS],
        "eos_token": SPECIAL_TOKENS[_EOS],
        "pad_token": SPECIAL_TOKENS[_PAD],
        "unk_token": SPECIAL_TOKENS[_UNK],
        "add_bos_token": False,
        "add_eos_token": False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": max_len,
        "chat_template": _CHAT_TEMPLATE,
    }


# ---------------------------------------------------------------- weights

def _rng(seed: int, name: str):
    import numpy as np

    return np.random.default_rng([seed, zlib.crc32(name.encode())])


# The selection bias that plants a skewed router (``hot_experts``): sigmoid scores lie in (0, 1), so an
# expert whose ``e_score_correction_bias`` is raised by 10 wins every token's top-k (and its group's).
HOT_EXPERT_BIAS = 10.0


def _values(spec: TensorSpec, seed: int, hot_experts: int = 0):
    """float32 values of one tensor; each tensor has its own stream, so a tensor's
    values depend only on the seed and its name (and, for router biases, ``hot_experts``)."""
    import numpy as np

    r = _rng(seed, spec.name)
    x = r.standard_normal(spec.shape, dtype=np.float32)
    if spec.kind == "norm":
        return 1.0 + np.float32(0.05) * x
    if spec.kind == "ebias":
        x = np.float32(0.01) * x
        x[:hot_experts] += np.float32(HOT_EXPERT_BIAS)
        return x
    if spec.kind == "bias":
        return np.float32(0.02) * x
    std = 0.02 if spec.kind in ("embed", "router") else 1.0 / math.sqrt(spec.shape[-1])
    x *= np.float32(std)
    return x


def _fp8_block(w, block: tuple[int, int], ue8m0: bool):
    """Block-quantize a 2-D float32 weight to e4m3 with one float32 scale a block
    (``weight_scale_inv``: dequantized = fp8 value * scale)."""
    import numpy as np

    bn, bk = block
    n, k = w.shape
    sn, sk = -(-n // bn), -(-k // bk)
    pad = np.zeros((sn * bn, sk * bk), np.float32)
    pad[:n, :k] = w
    blocks = np.abs(pad.reshape(sn, bn, sk, bk)).max(axis=(1, 3))
    scale = np.maximum(blocks, 1e-12) / 448.0
    if ue8m0:  # power-of-two scales (DeepSeek-V3.1's scale_fmt)
        scale = np.exp2(np.ceil(np.log2(scale)))
    scale = scale.astype(np.float32)
    q = (pad.reshape(sn, bn, sk, bk) / scale[:, None, :, None]).reshape(sn * bn, sk * bk)[:n, :k]
    return to_e4m3_bits(q), scale


def _int4_pack(w, group: int):
    """Symmetric int4 group quantization, compressed-tensors 'pack-quantized' layout:
    weight_packed int32 [out, in/8] (8 nibbles a word, first in the low bits, stored
    as value+8), weight_scale [out, in/group]."""
    import numpy as np

    n, k = w.shape
    if k % group or k % 8:
        raise TinyError(f"int4 packing needs the input width {k} to be a multiple of {group} and 8")
    g = w.reshape(n, k // group, group)
    scale = (np.maximum(np.abs(g).max(axis=2), 1e-12) / 7.0).astype(np.float32)
    q = np.clip(np.rint(g / scale[:, :, None]), -8, 7).astype(np.int32).reshape(n, k)
    u = (q + 8).astype(np.uint32).reshape(n, k // 8, 8)
    packed = np.zeros((n, k // 8), np.uint32)
    for j in range(8):
        packed |= u[:, :, j] << np.uint32(4 * j)
    return packed.view(np.int32), scale


def _quant_plan(real_cfg: dict[str, Any], precision: str, fam: str) -> dict[str, Any] | None:
    """The tiny quantization_config for a precision (None: plain bf16)."""
    if precision == "bf16":
        return None
    q = copy.deepcopy(real_cfg.get("quantization_config") or {})
    if precision == "fp8":
        if q.get("quant_method") != "fp8":
            q = {"activation_scheme": "dynamic", "fmt": "e4m3", "quant_method": "fp8", "weight_block_size": [128, 128]}
        return q
    if precision == "int4":
        if q.get("quant_method") != "compressed-tensors":
            raise TinyError("int4 tiny checkpoints follow the real model's compressed-tensors config; this model has none")
        return q
    raise TinyError(f"unknown precision {precision!r}; use one of {', '.join(TINY_PRECISIONS)}")


def _fp8_skip(spec: TensorSpec, q: dict[str, Any]) -> bool:
    skip = q.get("modules_to_not_convert") or q.get("ignored_layers") or []
    parts = spec.module.split(".")
    return any(s in parts or spec.module.endswith(s) for s in skip)


def _encode(specs: list[TensorSpec], seed: int, q: dict[str, Any] | None, hot_experts: int = 0):
    """Yield (name, dtype, shape, bytes) of every tensor, quantized as ``q`` says."""
    import numpy as np

    method = (q or {}).get("quant_method")

    def one(spec: TensorSpec) -> list[tuple[str, str, tuple[int, ...], bytes]]:
        w = _values(spec, seed, hot_experts)
        if spec.kind == "ebias":
            return [(spec.name, "F32", spec.shape, w.astype("<f4").tobytes())]
        if spec.kind == "linear" and method == "fp8" and not _fp8_skip(spec, q):
            block = tuple(q.get("weight_block_size") or (128, 128))
            codes, scale = _fp8_block(w, block, q.get("scale_fmt") == "ue8m0")
            return [(spec.name, "F8_E4M3", spec.shape, codes.tobytes()),
                    (spec.module + ".weight_scale_inv", "F32", scale.shape, scale.astype("<f4").tobytes())]
        if spec.kind == "linear" and method == "compressed-tensors" and spec.expert:
            grp = q["config_groups"]["group_0"]["weights"]["group_size"]
            packed, scale = _int4_pack(w, grp)
            return [(spec.module + ".weight_packed", "I32", packed.shape, packed.astype("<i4").tobytes()),
                    (spec.module + ".weight_scale", "BF16", scale.shape, to_bf16_bits(scale).astype("<u2").tobytes()),
                    (spec.module + ".weight_shape", "I64", (2,), np.array(spec.shape, "<i8").tobytes())]
        return [(spec.name, "BF16", spec.shape, to_bf16_bits(w).astype("<u2").tobytes())]

    # Each tensor depends only on the seed and its name, so tensors are made in parallel (numpy
    # releases the GIL) and written in order: real-width slices of many GB take seconds, not minutes.
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=min(32, os.cpu_count() or 1)) as pool:
        for out in pool.map(one, specs):
            yield from out


def _native_precision(preset_precision: str) -> str:
    return preset_precision if preset_precision in TINY_PRECISIONS else "bf16"


# What the CPU engine can run on a small machine: the spec's {auto, triton} at TP1 (triton is
# refused by vLLM's CPU build: a real UnsupportedConfig), and TP2 (two CPU workers). TP2 with
# expert parallelism segfaults in vLLM 0.32's CPU fused-MoE kernel
# (tests/data/logs/vllm_cpu_tp2_ep2_segfault.log), so it is not in the default.
TINY_MATRIX = [[1, 1, ["auto", "triton"]], [2, 1, ["auto"]]]


def write_tiny_checkpoint(preset: Any, out_dir: Path | str, *, seed: int = 0, precision: str = "bf16",
                          name: str | None = None, matrix: list | None = None, hot_experts: int = 0,
                          **overrides: Any) -> Path:
    """Write the tiny checkpoint of ``preset`` (a ``moetrace.presets.Preset``) into
    ``out_dir`` (created; existing files of the same names are replaced) and return it.

    ``precision``: ``"bf16"`` (default; what every tiny variant loads with in vLLM CPU
    0.32), ``"native"`` (the preset's own precision: fp8 128x128 blocks for
    DeepSeek-V3.1 and MiniMax-M2, compressed-tensors int4 experts for Kimi-K2), or one
    of ``fp8``/``int4`` explicitly. ``name`` and ``matrix`` go to ``moetrace.json`` (the
    model name records carry, default ``<preset>-tiny``, and its default config matrix, default
    the CPU engine's). ``overrides`` go to ``tiny_hf_config``. The output
    depends only on the preset's config, the seed, the precision, the overrides and ``hot_experts``.

    ``hot_experts=h`` plants a skewed router: routed experts ``0..h-1`` of every MoE layer get
    ``HOT_EXPERT_BIAS`` added to their selection bias (``e_score_correction_bias``), so each of them
    receives every token and the other top_k - h slots go to the rest. The planted load (in
    ``moetrace.json`` under ``router``) is what an expert-load measurement must find: per layer,
    max/mean = experts / top_k. Only routers with a selection bias can be skewed this way
    (DeepSeek-V3.1, Kimi-K2, GLM-4.6, MiniMax-M2; not Qwen3).
    """
    out = Path(out_dir)
    if precision == "native":
        precision = _native_precision(preset.precision)
    cfg = tiny_hf_config(preset.hf_config, **overrides)
    fam = family_of(cfg)
    q = _quant_plan(preset.hf_config, precision, fam)
    if q is not None:
        cfg["quantization_config"] = q
    specs = tensor_specs(cfg)
    router = _planted_router(cfg, fam, specs, hot_experts)
    out.mkdir(parents=True, exist_ok=True)
    write_safetensors(out / "model.safetensors", _encode(specs, seed, q, hot_experts), metadata={"format": "pt"})
    (out / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
    gen = {"bos_token_id": _BOS, "eos_token_id": cfg.get("eos_token_id", _EOS), "do_sample": False}
    (out / "generation_config.json").write_text(json.dumps(gen, indent=2) + "\n")
    tok = build_tokenizer(cfg["vocab_size"])
    tok.save(str(out / "tokenizer.json"))
    (out / "tokenizer_config.json").write_text(json.dumps(_tokenizer_config(cfg["max_position_embeddings"]), indent=2) + "\n")
    meta = {
        "name": name or f"{preset.name}-tiny",
        "precision": precision,
        "tiny_of": preset.name,
        "matrix": matrix or TINY_MATRIX,
        "seed": seed,
    }
    if router:
        meta["router"] = router
    (out / "moetrace.json").write_text(json.dumps(meta, indent=2) + "\n")
    return out


def _planted_router(cfg: dict[str, Any], fam: str, specs: list[TensorSpec], hot: int) -> dict[str, Any] | None:
    """What ``hot_experts`` plants, for moetrace.json (None when nothing is planted)."""
    if not hot:
        return None
    experts_key, _ = _moe_keys(fam)
    E, k = cfg[experts_key], cfg["num_experts_per_tok"]
    if not any(s.kind == "ebias" for s in specs):
        raise TinyError(f"{cfg['architectures'][0]} has no router selection bias (e_score_correction_bias) "
                        "to plant hot experts in")
    group = E // (cfg.get("n_group") or 1)
    if not 0 < hot <= min(k, group):
        raise TinyError(f"hot_experts must be 1..{min(k, group)} (top-k {k}, {group} experts a router group), not {hot}")
    return {"hot_experts": list(range(hot)), "bias": HOT_EXPERT_BIAS, "experts": E, "top_k": k,
            "expected": f"each hot expert gets every token of every MoE layer; max/mean per layer = {E}/{k}"}


def parse_overrides(items: Iterable[str]) -> dict[str, Any]:
    """``["experts=8", "rope_theta=1e6", "scoring_func=softmax"]`` -> overrides for
    ``tiny_hf_config`` (values parsed as JSON where they parse, else kept as text)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, val = item.partition("=")
        if not sep or not key.strip():
            raise TinyError(f"override {item!r} is not KEY=VALUE")
        try:
            out[key.strip()] = json.loads(val)
        except json.JSONDecodeError:
            out[key.strip()] = val
    return out


def vllm_cpu_blocker(cfg: dict[str, Any], *, amx: bool = False) -> str | None:
    """Why vLLM's CPU build (0.32.0) cannot serve a checkpoint of this config, or None.

    Known from running the six tiny variants (docs/tiny.md): the CPU MoE router
    handles sigmoid scoring only through grouped top-k, which MiniMax-M2 does not
    use; fp8 block-scaled linears and int4 MoE experts need AMX tiles (Sapphire
    Rapids or newer); the CPU MLA kernel needs kv_lora_rank + qk_rope_head_dim == 576.
    """
    fam = family_of(cfg)
    if fam == "minimax_m2" and cfg.get("scoring_func", "softmax") != "softmax":
        return (
            "vLLM CPU routes sigmoid-scored experts only via grouped top-k; MiniMax-M2's router "
            "fails with AssertionError `assert self.scoring_func == \"softmax\"` (cpu_router.py)"
        )
    if fam == "deepseek_v3" and cfg.get("kv_lora_rank", 0) + cfg.get("qk_rope_head_dim", 0) != 576:
        return "vLLM's CPU MLA kernel supports only kv_lora_rank + qk_rope_head_dim == 576"
    q = cfg.get("quantization_config") or {}
    if not amx and q.get("quant_method") == "fp8":
        return "fp8 block-scaled linears on vLLM CPU need AMX tiles (CPUFp8BlockScaledMMKernel)"
    if q.get("quant_method") == "compressed-tensors":
        if not amx:
            return "int4 MoE experts on vLLM CPU need AMX tiles (CPUExpertsInt4)"
        if fam == "deepseek_v3":
            return "vLLM CPU int4 MoE experts support only softmax/renormalize routing, not noaux_tc"
    return None
