"""Tiny checkpoints: configs, tensor names and shapes, files, determinism (no engine needed)."""

from __future__ import annotations

import copy
import json
import math

import pytest

np = pytest.importorskip("numpy")
pytest.importorskip("tokenizers")

from moetrace.matrix import parse_matrix
from moetrace.presets import all_presets, get_preset, preset_from_checkpoint  # noqa: E402
from moetrace.tensorfile import (  # noqa: E402
    e4m3_to_float,
    to_bf16_bits,
    to_bf16_bits_numpy,
    to_e4m3_bits,
    to_e4m3_bits_numpy,
)
from moetrace.tiny import (  # noqa: E402
    SPECIAL_TOKENS,
    TinyError,
    family_of,
    read_safetensors_header,
    tensor_specs,
    tiny_hf_config,
    write_tiny_checkpoint,
)

PRESETS = all_presets()
IDS = [p.slug for p in PRESETS]


def _raw(path, name):
    """One tensor of a safetensors file as a numpy array (bf16 and fp8 as float32)."""
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(n))
        e = header[name]
        a, b = e["data_offsets"]
        f.seek(8 + n + a)
        buf = f.read(b - a)
    dt, shape = e["dtype"], e["shape"]
    if dt == "BF16":
        return (np.frombuffer(buf, "<u2").astype(np.uint32) << 16).view(np.float32).reshape(shape)
    if dt == "F8_E4M3":
        return e4m3_to_float(np.frombuffer(buf, np.uint8)).reshape(shape)
    return np.frombuffer(buf, {"F32": "<f4", "I32": "<i4", "I64": "<i8"}[dt]).reshape(shape)


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """Each preset's tiny checkpoint, written once for the module (bf16)."""
    root = tmp_path_factory.mktemp("tiny")
    return {p.slug: write_tiny_checkpoint(p, root / p.slug) for p in PRESETS}


# ---------------------------------------------------------------- configs

@pytest.mark.parametrize("preset", PRESETS, ids=IDS)
def test_tiny_config_keeps_architecture_and_keys(preset):
    real = preset.hf_config
    tiny = tiny_hf_config(real)
    assert tiny["architectures"] == real["architectures"]
    assert tiny["model_type"] == real["model_type"]
    assert set(real) - {"auto_map", "quantization_config"} <= set(tiny)
    assert "auto_map" not in tiny and "quantization_config" not in tiny
    assert tiny["hidden_size"] <= 256 and 2 <= tiny["num_hidden_layers"] <= 3
    assert 2048 <= tiny["vocab_size"] <= 4096
    assert tiny["max_position_embeddings"] >= 8192
    assert 2 <= tiny["num_experts_per_tok"] <= 4
    fam = family_of(real)
    experts = {"qwen3_moe": "num_experts", "minimax_m2": "num_local_experts"}.get(fam, "n_routed_experts")
    assert 8 <= tiny[experts] <= 16
    if real.get("first_k_dense_replace"):
        assert tiny["first_k_dense_replace"] == 1 < tiny["num_hidden_layers"]
    if "num_nextn_predict_layers" in real:
        assert tiny["num_nextn_predict_layers"] == 0
    if fam == "minimax_m2":
        assert tiny["use_mtp"] is False and len(tiny["attn_type_list"]) == tiny["num_hidden_layers"]


@pytest.mark.parametrize("preset", PRESETS, ids=IDS)
def test_tiny_config_keeps_attention_kind(preset):
    real, tiny = preset.hf_config, tiny_hf_config(preset.hf_config)
    if "kv_lora_rank" in real:  # MLA; vLLM's CPU MLA kernel needs a 576-wide latent
        assert tiny["kv_lora_rank"] + tiny["qk_rope_head_dim"] == 576
        assert tiny["q_lora_rank"] is not None
        assert "head_dim" not in tiny or tiny["head_dim"] == real.get("head_dim")
    else:  # GQA
        assert tiny["num_key_value_heads"] < tiny["num_attention_heads"]
        assert tiny["num_attention_heads"] % tiny["num_key_value_heads"] == 0


def test_tiny_config_is_pure_and_takes_overrides():
    real = get_preset("DeepSeek-V3.1").hf_config
    before = copy.deepcopy(real)
    tiny = tiny_hf_config(real, experts=8, top_k=2, layers=4, hidden_size=128, rope_theta=1234)
    assert real == before
    assert (tiny["n_routed_experts"], tiny["num_experts_per_tok"], tiny["num_hidden_layers"]) == (8, 2, 4)
    assert tiny["hidden_size"] == 128 and tiny["rope_theta"] == 1234
    assert tiny["n_group"] == 4  # 8 experts: group-limited routing kept with 2 experts a group
    assert tiny_hf_config(real) == tiny_hf_config(real)


def test_tiny_config_errors():
    with pytest.raises(TinyError, match="no tiny variant"):
        tiny_hf_config({"architectures": ["LlamaForCausalLM"], "model_type": "llama"})
    with pytest.raises(TinyError, match="top_k"):
        tiny_hf_config(get_preset("Qwen3-235B").hf_config, experts=4, top_k=8)
    with pytest.raises(TinyError, match="vocab_size"):
        tiny_hf_config(get_preset("Qwen3-235B").hf_config, vocab=100)


def test_yarn_factor_follows_the_shortened_context():
    tiny = tiny_hf_config(get_preset("Kimi-K2-Thinking").hf_config)
    rs = tiny["rope_scaling"]
    assert rs["type"] == "yarn"
    assert rs["factor"] * rs["original_max_position_embeddings"] == tiny["max_position_embeddings"]


# ---------------------------------------------------------------- tensor names

def _names(preset_name):
    return {s.name: s.shape for s in tensor_specs(tiny_hf_config(get_preset(preset_name).hf_config))}


def test_qwen3_moe_tensors():
    n = _names("Qwen3-235B")
    assert n["model.layers.0.self_attn.q_proj.weight"] == (8 * 64, 256)
    assert n["model.layers.0.self_attn.k_proj.weight"] == (2 * 64, 256)
    assert n["model.layers.1.self_attn.q_norm.weight"] == (64,)
    assert n["model.layers.1.self_attn.k_norm.weight"] == (64,)
    assert n["model.layers.0.mlp.gate.weight"] == (16, 256)
    assert n["model.layers.0.mlp.experts.15.down_proj.weight"] == (256, 128)
    assert not any("e_score_correction_bias" in k or "bias" in k.split(".")[-1] for k in n)
    assert n["lm_head.weight"] == (4096, 256)


@pytest.mark.parametrize("name", ["DeepSeek-V3.1", "Kimi-K2-Thinking"])
def test_deepseek_v3_mla_tensors(name):
    n = _names(name)
    a = "model.layers.0.self_attn"
    assert n[f"{a}.q_a_proj.weight"] == (256, 256)
    assert n[f"{a}.q_a_layernorm.weight"] == (256,)
    assert n[f"{a}.q_b_proj.weight"] == (8 * (64 + 64), 256)
    assert n[f"{a}.kv_a_proj_with_mqa.weight"] == (512 + 64, 256)
    assert n[f"{a}.kv_a_layernorm.weight"] == (512,)
    assert n[f"{a}.kv_b_proj.weight"] == (8 * (64 + 64), 512)
    assert n[f"{a}.o_proj.weight"] == (256, 8 * 64)
    # layer 0 dense (first_k_dense_replace), layers 1-2 MoE with the noaux_tc bias
    assert n["model.layers.0.mlp.gate_proj.weight"] == (512, 256)
    assert "model.layers.0.mlp.gate.weight" not in n
    for i in (1, 2):
        assert n[f"model.layers.{i}.mlp.gate.e_score_correction_bias"] == (16,)
        assert n[f"model.layers.{i}.mlp.shared_experts.up_proj.weight"] == (128, 256)
        assert n[f"model.layers.{i}.mlp.experts.0.gate_proj.weight"] == (128, 256)
    assert not any(k.startswith("model.layers.3.") for k in n)  # no MTP layer


def test_glm4_moe_tensors():
    n = _names("GLM-4.6")
    a = "model.layers.2.self_attn"
    assert n[f"{a}.q_proj.bias"] == (8 * 64,) and n[f"{a}.k_proj.bias"] == (2 * 64,)
    assert n[f"{a}.q_norm.weight"] == (64,)
    assert "model.layers.0.mlp.down_proj.weight" in n
    assert n["model.layers.1.mlp.gate.e_score_correction_bias"] == (16,)
    assert "model.layers.1.mlp.shared_experts.down_proj.weight" in n
    assert not any(k.startswith("model.layers.3.") for k in n)


def test_minimax_m2_tensors():
    n = _names("MiniMax-M2")
    m = "model.layers.1.block_sparse_moe"
    assert n[f"{m}.gate.weight"] == (16, 256)
    assert n[f"{m}.e_score_correction_bias"] == (16,)
    assert n[f"{m}.experts.3.w1.weight"] == (128, 256)
    assert n[f"{m}.experts.3.w3.weight"] == (128, 256)
    assert n[f"{m}.experts.3.w2.weight"] == (256, 128)
    assert n["model.layers.0.self_attn.q_norm.weight"] == (8 * 64,)  # over all heads
    assert n["model.layers.0.self_attn.k_norm.weight"] == (2 * 64,)
    assert not any(".mlp." in k for k in n)


# ---------------------------------------------------------------- written files

@pytest.mark.parametrize("preset", PRESETS, ids=IDS)
def test_checkpoint_files_load_back(preset, written):
    safe_open = pytest.importorskip("safetensors").safe_open

    d = written[preset.slug]
    cfg = json.loads((d / "config.json").read_text())
    specs = tensor_specs(cfg)
    with safe_open(str(d / "model.safetensors"), "numpy") as f:
        assert set(f.keys()) == {s.name for s in specs}
        for s in specs:
            sl = f.get_slice(s.name)
            assert tuple(sl.get_shape()) == s.shape, s.name
            assert sl.get_dtype() == ("F32" if s.kind == "ebias" else "BF16"), s.name
            if s.kind == "ebias":  # F32: numpy reads it directly
                np.testing.assert_array_equal(f.get_tensor(s.name), _raw(d / "model.safetensors", s.name))
    emb = _raw(d / "model.safetensors", "model.embed_tokens.weight")
    assert abs(float(emb.std()) - 0.02) < 0.002 and np.isfinite(emb).all()
    assert cfg == tiny_hf_config(preset.hf_config)


@pytest.mark.parametrize("preset", PRESETS, ids=IDS)
def test_tokenizer_matches_config(preset, written):
    from tokenizers import Tokenizer

    d = written[preset.slug]
    cfg = json.loads((d / "config.json").read_text())
    tok = Tokenizer.from_file(str(d / "tokenizer.json"))
    assert tok.get_vocab_size() == cfg["vocab_size"]
    tc = json.loads((d / "tokenizer_config.json").read_text())
    eos = cfg.get("eos_token_id")
    eos = eos[0] if isinstance(eos, list) else eos
    assert tok.token_to_id(tc["eos_token"]) == eos == SPECIAL_TOKENS.index("<|eos|>")
    text = "Hello world, 42 experts route tokens!"
    ids = tok.encode(text).ids
    assert tok.decode(ids) == text and max(ids) < cfg["vocab_size"]
    assert "<|eos|>" in tok.decode(list(range(0, 12)), skip_special_tokens=False)


@pytest.mark.parametrize("preset", PRESETS, ids=IDS)
def test_moetrace_json_makes_a_preset(preset, written):
    d = written[preset.slug]
    p = preset_from_checkpoint(d)
    assert p.name == f"{preset.name}-tiny"
    assert p.precision == "bf16"
    assert [c.name for c in parse_matrix(p.matrix)] == ["TP1_auto", "TP1_triton", "TP2_auto"]
    assert json.loads((d / "moetrace.json").read_text())["tiny_of"] == preset.name
    assert get_preset(str(d)).name == p.name


def test_deterministic_given_the_seed(tmp_path):
    p = get_preset("MiniMax-M2")
    a = write_tiny_checkpoint(p, tmp_path / "a", seed=7)
    b = write_tiny_checkpoint(p, tmp_path / "b", seed=7)
    c = write_tiny_checkpoint(p, tmp_path / "c", seed=8)
    for f in ("model.safetensors", "config.json", "tokenizer.json", "tokenizer_config.json"):
        assert (a / f).read_bytes() == (b / f).read_bytes(), f
    assert (a / "model.safetensors").read_bytes() != (c / "model.safetensors").read_bytes()
    assert (a / "config.json").read_bytes() == (c / "config.json").read_bytes()


def test_a_tensor_depends_only_on_seed_and_name(tmp_path):
    p = get_preset("Qwen3-235B")
    a = write_tiny_checkpoint(p, tmp_path / "a")
    b = write_tiny_checkpoint(p, tmp_path / "b", layers=3)
    name = "model.layers.1.mlp.experts.5.up_proj.weight"
    np.testing.assert_array_equal(_raw(a / "model.safetensors", name), _raw(b / "model.safetensors", name))


# ---------------------------------------------------------------- number formats and quantized variants

def test_bf16_rounding():
    x = np.array([1.0, -2.5, 0.0, 1.00390625, 1.01171875, 3.0e38], np.float32)
    bits = to_bf16_bits(x)
    assert list(bits[:3]) == [0x3F80, 0xC020, 0x0000]
    assert bits[3] == 0x3F80  # halfway, rounds to even (down)
    assert bits[4] == 0x3F82  # halfway, rounds to even (up)
    back = (bits.astype(np.uint32) << 16).view(np.float32)
    assert abs(back[5] - x[5]) / x[5] < 2**-8


def test_e4m3_codes():
    x = np.array([0.0, 1.0, -2.0, 448.0, 1000.0, 2.0**-9, -0.0, 0.3], np.float32)
    codes = to_e4m3_bits(x)
    assert list(codes[:7]) == [0x00, 0x38, 0xC0, 0x7E, 0x7E, 0x01, 0x00]
    assert abs(e4m3_to_float(codes)[7] - 0.3) < 0.3 / 16
    import ml_dtypes as ml  # the dev extra installs it: an independent float8_e4m3fn, never skipped
    r = np.random.default_rng(0).standard_normal(4096).astype(np.float32) * 50
    np.testing.assert_array_equal(to_e4m3_bits_numpy(r), r.astype(ml.float8_e4m3fn).view(np.uint8))
    np.testing.assert_array_equal(to_e4m3_bits_numpy(x[:6]), to_e4m3_bits(x[:6]))
    np.testing.assert_array_equal(to_bf16_bits_numpy(r), r.astype(ml.bfloat16).view(np.uint16))
    np.testing.assert_array_equal(to_bf16_bits_numpy(r), to_bf16_bits(r))


def test_fp8_checkpoint(tmp_path):
    p = get_preset("DeepSeek-V3.1")
    d = write_tiny_checkpoint(p, tmp_path / "fp8", precision="native")
    cfg = json.loads((d / "config.json").read_text())
    assert cfg["quantization_config"]["quant_method"] == "fp8"
    assert json.loads((d / "moetrace.json").read_text())["precision"] == "fp8"
    h = read_safetensors_header(d / "model.safetensors")
    w = "model.layers.1.self_attn.kv_a_proj_with_mqa"
    assert h[f"{w}.weight"]["dtype"] == "F8_E4M3"
    assert h[f"{w}.weight_scale_inv"]["shape"] == [math.ceil(576 / 128), math.ceil(256 / 128)]
    assert h["model.layers.1.mlp.gate.weight"]["dtype"] == "BF16"  # router stays bf16
    assert h["lm_head.weight"]["dtype"] == "BF16"
    scale = _raw(d / "model.safetensors", f"{w}.weight_scale_inv")
    assert np.all(np.log2(scale) == np.round(np.log2(scale)))  # ue8m0: powers of two
    q = _raw(d / "model.safetensors", f"{w}.weight")
    deq = q * np.repeat(np.repeat(scale, 128, 0), 128, 1)[:576, :256]
    ref = _raw(write_tiny_checkpoint(p, tmp_path / "bf16") / "model.safetensors", f"{w}.weight")
    assert np.abs(deq - ref).max() <= 0.13 * np.abs(ref).max()


def test_int4_checkpoint(tmp_path):
    p = get_preset("Kimi-K2-Thinking")
    d = write_tiny_checkpoint(p, tmp_path / "int4", precision="native")
    cfg = json.loads((d / "config.json").read_text())
    assert cfg["quantization_config"]["quant_method"] == "compressed-tensors"
    h = read_safetensors_header(d / "model.safetensors")
    e = "model.layers.1.mlp.experts.2.down_proj"
    assert h[f"{e}.weight_packed"] == {**h[f"{e}.weight_packed"], "dtype": "I32", "shape": [256, 128 // 8]}
    assert h[f"{e}.weight_scale"]["shape"] == [256, 128 // 32]
    assert list(_raw(d / "model.safetensors", f"{e}.weight_shape")) == [256, 128]
    assert f"{e}.weight" not in h
    assert h["model.layers.1.mlp.shared_experts.down_proj.weight"]["dtype"] == "BF16"
    assert h["model.layers.0.self_attn.q_a_proj.weight"]["dtype"] == "BF16"
    packed = _raw(d / "model.safetensors", f"{e}.weight_packed").view(np.uint32)
    nib = np.stack([(packed >> (4 * j)) & 0xF for j in range(8)], -1).reshape(256, 128).astype(np.int32) - 8
    scale = _raw(d / "model.safetensors", f"{e}.weight_scale")
    deq = nib * np.repeat(scale, 32, 1)
    ref = _raw(write_tiny_checkpoint(p, tmp_path / "bf16") / "model.safetensors", f"{e}.weight")
    assert np.abs(deq - ref).max() <= np.abs(ref).max() / 7


def test_unknown_precision(tmp_path):
    with pytest.raises(TinyError, match="precision"):
        write_tiny_checkpoint(get_preset("GLM-4.6"), tmp_path, precision="fp4")
    with pytest.raises(TinyError, match="compressed-tensors"):
        write_tiny_checkpoint(get_preset("GLM-4.6"), tmp_path, precision="int4")


def test_parse_overrides():
    from moetrace.tiny import parse_overrides

    assert parse_overrides(["experts=8", "rope_theta=1e6", "scoring_func=softmax", "mlp_only_layers=[0]"]) == {
        "experts": 8, "rope_theta": 1e6, "scoring_func": "softmax", "mlp_only_layers": [0]}
    with pytest.raises(TinyError, match="KEY=VALUE"):
        parse_overrides(["experts"])


@pytest.mark.parametrize("preset", PRESETS, ids=IDS)
def test_vllm_cpu_blocker_matches_what_was_seen(preset):
    """docs/tiny.md: in vLLM CPU 0.32.0 every bf16 tiny variant but MiniMax-M2 serves."""
    from moetrace.tiny import vllm_cpu_blocker

    reason = vllm_cpu_blocker(tiny_hf_config(preset.hf_config))
    assert (reason is not None) == (preset.name == "MiniMax-M2")
    if preset.name == "MiniMax-M2":
        assert vllm_cpu_blocker(tiny_hf_config(preset.hf_config, scoring_func="softmax")) is None


def _tensor(path, name):
    import numpy as np

    header = read_safetensors_header(path)
    n = 8 + int.from_bytes(path.read_bytes()[:8], "little")
    a, b = header[name]["data_offsets"]
    assert header[name]["dtype"] == "F32"
    return np.frombuffer(path.read_bytes()[n + a:n + b], "<f4")


@pytest.mark.parametrize("name", ["GLM-4.6", "DeepSeek-V3.1", "MiniMax-M2"])
def test_hot_experts_plant_a_skewed_router(tmp_path, name):
    from moetrace.tiny import HOT_EXPERT_BIAS, tensor_specs

    out = write_tiny_checkpoint(get_preset(name), tmp_path / "hot", hot_experts=2)
    plain = write_tiny_checkpoint(get_preset(name), tmp_path / "plain")
    cfg = json.loads((out / "config.json").read_text())
    biases = [s.name for s in tensor_specs(cfg) if s.kind == "ebias"]
    assert biases
    for b in biases:  # experts 0 and 1 raised by the planted bias, every other value as without it
        hot, base = _tensor(out / "model.safetensors", b), _tensor(plain / "model.safetensors", b)
        assert (hot[:2] - base[:2] == pytest.approx(HOT_EXPERT_BIAS)) and (hot[2:] == base[2:]).all()
        assert abs(base).max() < 0.1
    router = json.loads((out / "moetrace.json").read_text())["router"]
    assert router["hot_experts"] == [0, 1] and router["top_k"] == cfg["num_experts_per_tok"]
    assert preset_from_checkpoint(out).facts["router"] == router  # what the runner checks a measurement against
    assert "router" not in json.loads((plain / "moetrace.json").read_text())


def test_hot_experts_need_a_router_bias_and_fit_in_top_k(tmp_path):
    with pytest.raises(TinyError, match="no router selection bias"):
        write_tiny_checkpoint(get_preset("Qwen3-235B"), tmp_path / "q", hot_experts=2)
    with pytest.raises(TinyError, match="hot_experts must be"):
        write_tiny_checkpoint(get_preset("GLM-4.6"), tmp_path / "g", hot_experts=99)
