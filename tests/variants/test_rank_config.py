"""One rank's shapes (moetrace.variants): the sharding rules of the engines, applied to the six real configs
(src/moetrace/presets/data/*.json, the models' own config.json), checked by hand for each family."""

from __future__ import annotations

import json

import pytest

from moetrace.plan.evidence import predict_weights
from moetrace.presets import get_preset
from moetrace.variants import VariantError, cut_layers, rank_config, variant_name, write_variant
from moetrace.matrix import Config


def cfg(model: str) -> dict:
    return get_preset(model).hf_config


def test_qwen3_tp8_ep2_sglang_rank():
    # SGLang --tp 8 --ep 2: moe_ep 2, moe_tp 4; KV heads 4 < TP 8: one (replicated) a rank
    c, f = rank_config(cfg("Qwen3-235B"), 8, 2)
    assert (c["num_attention_heads"], c["num_key_value_heads"], c["head_dim"]) == (8, 1, 128)
    assert (c["num_experts"], c["moe_intermediate_size"], c["num_experts_per_tok"]) == (64, 384, 4)
    assert c["vocab_size"] == 151936 // 8 and c["hidden_size"] == 4096
    assert (f["moe_ep"], f["moe_tp"], f["shared_expert_extra_params"]) == (2, 4, 0)


def test_vllm_expert_parallel_spans_the_tp_group():
    # vLLM --enable-expert-parallel: EP = TP x DP = 8; each expert whole; one local expert a token
    c, f = rank_config(cfg("Qwen3-235B"), 8, 2, ep_is_tp=True)
    assert (c["num_experts"], c["moe_intermediate_size"], c["num_experts_per_tok"]) == (16, 1536, 1)
    assert (f["moe_ep"], f["moe_tp"]) == (8, 1)


def test_deepseek_mla_groups_dense_and_the_shared_expert():
    real = cfg("DeepSeek-V3.1")
    c, f = rank_config(real, 8, 2)
    assert c["num_attention_heads"] == c["num_key_value_heads"] == 16  # MLA: heads / TP
    assert c["kv_lora_rank"] == 512 and c["q_lora_rank"] == 1536  # latent projections replicated
    assert (c["n_routed_experts"], c["moe_intermediate_size"], c["num_experts_per_tok"]) == (128, 512, 4)
    assert c["intermediate_size"] == 18432 // 8  # the three dense layers
    assert (c["n_group"], c["topk_group"]) == (8, 4)  # 16 local experts a group
    # the shared expert is moe_intermediate_size wide in this config: / moe_tp (4) here, / TP (8) in the real rank
    assert f["shared_expert_extra_params"] == 3 * 7168 * (512 - 256) * (61 - 3)
    assert c["quantization_config"] == real["quantization_config"]  # the engine builds fp8 layers as for the real one


def test_minimax_and_glm_and_kimi():
    c, _ = rank_config(cfg("MiniMax-M2"), 8, 2)
    assert (c["num_attention_heads"], c["num_key_value_heads"]) == (6, 1)
    assert (c["num_local_experts"], c["intermediate_size"], c["num_experts_per_tok"]) == (128, 384, 4)
    c, _ = rank_config(cfg("GLM-4.6"), 8, 2)
    assert (c["num_attention_heads"], c["num_key_value_heads"], c["n_routed_experts"]) == (12, 1, 80)
    c, _ = rank_config(cfg("Kimi-K2-Thinking"), 8, 1)
    assert (c["num_attention_heads"], c["n_routed_experts"], c["moe_intermediate_size"]) == (8, 384, 256)


def test_widths_that_do_not_split_are_refused():
    with pytest.raises(VariantError, match="EP must divide TP"):
        rank_config(cfg("Qwen3-235B"), 4, 3)
    with pytest.raises(VariantError, match="quantization block"):  # fp8 128-blocks: 2048 / 32 = 64
        rank_config(cfg("DeepSeek-V3.1"), 32, 1)


def test_cut_layers_keeps_the_leading_dense_layers_and_drops_mtp():
    c = cut_layers(cfg("DeepSeek-V3.1"), 5)
    assert (c["num_hidden_layers"], c["first_k_dense_replace"], c["num_nextn_predict_layers"]) == (5, 3, 0)
    assert cut_layers(cfg("DeepSeek-V3.1"), 2)["first_k_dense_replace"] == 2
    m = cut_layers(cfg("MiniMax-M2"), None)
    assert m["num_hidden_layers"] == 62 and m.get("use_mtp", False) is False
    with pytest.raises(VariantError, match="1..94"):
        cut_layers(cfg("Qwen3-235B"), 95)


def test_rank_weights_match_the_planners_per_gpu_weights_within_one_percent():
    # what one GPU of the real TP8 config holds (the planner) against what the rank-shaped model holds at TP1;
    # the gap is the shared expert (wider here) and the router (narrower here), both named in the facts
    for model in ("Qwen3-235B", "MiniMax-M2", "GLM-4.6", "DeepSeek-V3.1", "Kimi-K2-Thinking", "Qwen3-Coder-480B"):
        real = cfg(model)
        at_tp = predict_weights(real, tp=8, ep=2, engine="sglang").total
        c, f = rank_config(real, 8, 2)
        rank = predict_weights(c, tp=1, ep=1, engine="sglang").total
        bytes_per_param = 1 if get_preset(model).precision == "fp8" else (0.5 if get_preset(model).precision == "int4" else 2)
        shared = f["shared_expert_extra_params"] * bytes_per_param
        assert abs(rank - shared - at_tp) / at_tp < 0.01, (model, rank / 2**30, at_tp / 2**30)


def test_write_variant_names_what_it_stands_for(tmp_path):
    preset = get_preset("Qwen3-235B")
    d = write_variant(preset, tmp_path / "v", weights="dummy", rank_of=Config(8, 2), engine="vllm")
    meta = json.loads((d / "moetrace.json").read_text())
    assert meta["name"] == "Qwen3-235B (dummy weights, 1 rank of TP8_EP2_auto)"
    assert meta["engine_args"]["vllm"][-2:] == ["--load-format", "dummy"]
    v = meta["facts"]["variant"]
    assert v["one_rank"]["stands_for"] == "TP8_EP2_auto" and v["layers"] == [94, 94] and v["left_out"]
    c = json.loads((d / "config.json").read_text())
    assert "auto_map" not in c and c["eos_token_id"] < c["vocab_size"]
    assert sorted(p.name for p in d.iterdir()) == ["config.json", "generation_config.json", "moetrace.json",
                                                   "tokenizer.json", "tokenizer_config.json"]
    assert variant_name("M", weights="checkpoint", layers=94, full_layers=94, rank_of=None) == "M"


def test_a_cut_or_a_rank_without_dummy_weights_is_refused_in_one_line(tmp_path):
    # the variant's directory holds no weight files: without the engine's dummy loader nothing could load
    from tests.conftest import moetrace
    for extra in (["--layers", "4"], ["--one-rank"]):
        cp = moetrace("run", "Qwen3-235B", "-c", "TP8_EP2_auto", *extra, "--engine", "vllm", "--dry-run",
                      "-r", str(tmp_path / "r"), cwd=tmp_path)
        assert cp.returncode == 2 and "add --weights dummy" in cp.stderr.strip().splitlines()[-1], cp.stderr
