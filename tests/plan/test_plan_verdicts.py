"""Memory verdicts: the spec's notes on H200, the engine's memory fraction as an input,
and what a plan carries into a record."""

from __future__ import annotations

import json

import pytest

from moetrace.matrix import Config, parse_matrix
from moetrace.plan import format_plan_table, plan_config, plan_matrix
from moetrace.plan.hardware import GIB, custom_gpu
from moetrace.plan.memory import sglang_defaults
from moetrace.presets import all_presets

PRESETS = {p.name: p for p in all_presets()}


def _verdicts(name, gpu="h200"):
    return {p.config: p.verdict for p in plan_matrix(PRESETS[name], gpu=gpu)}


@pytest.mark.parametrize("name", ["DeepSeek-V3.1", "Qwen3-Coder-480B"])
def test_spec_tp4_of_the_large_models_will_not_fit_on_h200(name):
    v = _verdicts(name)
    assert v["TP4_auto"] == v["TP4_triton"] == "will_not_fit"


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_spec_tp8_ep2_fits_for_all_six_on_h200(name):
    v = _verdicts(name)
    assert v["TP8_EP2_auto"] == v["TP8_EP2_triton"] == "fits"


def test_single_and_dual_gpu_configs_are_decided_by_the_arithmetic():
    # not stated by the spec: 214 GiB of FP8 MiniMax-M2 and 554 GiB of INT4 Kimi-K2 on one 140 GiB H200
    assert _verdicts("MiniMax-M2")["TP1_auto"] == "will_not_fit"
    assert _verdicts("MiniMax-M2")["TP2_auto"] == "fits"
    assert _verdicts("Kimi-K2-Thinking")["TP1_auto"] == "will_not_fit"
    assert _verdicts("Kimi-K2-Thinking")["TP2_auto"] == "will_not_fit"
    assert _verdicts("Qwen3-235B")["TP4_auto"] == "fits"


def test_backend_does_not_change_memory():
    plans = plan_matrix(PRESETS["Qwen3-235B"])
    by = {}
    for p in plans:
        by.setdefault((p.tp, p.ep), set()).add(round(p.weights_per_gpu_bytes))
    assert all(len(v) == 1 for v in by.values())


def test_smaller_gpu_changes_the_verdict():
    ds = PRESETS["DeepSeek-V3.1"]
    assert plan_config(ds, "TP8_EP2_auto", gpu="h200").verdict == "fits"
    assert plan_config(ds, "TP8_EP2_auto", gpu="h100").verdict == "will_not_fit"   # ~79.5 GiB on 79.6 GiB
    assert plan_config(ds, "TP8_EP2_auto", gpu="b200").verdict == "fits"


def test_will_not_fit_reason_carries_the_numbers():
    p = plan_config(PRESETS["DeepSeek-V3.1"], "TP4_auto")
    assert p.reason.startswith("predicted:")
    assert "GiB" in p.reason and "H200" in p.reason and "TP4" in p.reason
    assert p.weights_per_gpu_bytes > p.physical_bytes - p.context_bytes


def test_mem_fraction_is_an_input():
    coder = PRESETS["Qwen3-Coder-480B"]
    default = plan_config(coder, "TP8_EP2_auto")
    assert default.mem_fraction == sglang_defaults(143771, 8)["mem_fraction_static"] == 0.893
    low = plan_config(coder, "TP8_EP2_auto", mem_fraction=0.80)
    assert low.verdict == "will_not_fit" and low.mem_fraction_source == "given"
    assert "mem-fraction-static >=" in low.reason      # says what fraction would do
    assert low.needed_mem_fraction == pytest.approx(default.needed_mem_fraction)
    # a fraction that leaves less than the planner's error allowance: tight
    usable = default.usable_bytes
    edge = (default.weights_per_gpu_bytes + default.kv_cache_bytes + default.margin_bytes / 2) / usable
    assert plan_config(coder, "TP8_EP2_auto", mem_fraction=edge).verdict == "tight"


def test_a_fraction_that_starves_activations_is_tight():
    q = PRESETS["Qwen3-235B"]
    p = plan_config(q, "TP8_EP2_auto", mem_fraction=0.995)
    assert p.verdict == "tight"
    assert "activations" in p.reason


def test_sglang_default_fraction_table():
    """SGLang 0.5.23's handle_gpu_memory_settings (arg_groups/memory_hook.py), with the prefill
    CUDA-graph reserve: 8 MiB for each of the 58 token counts it captures up to 8192 (MLA: 1.5 GiB)."""
    assert sglang_defaults(143771, 1)["mem_fraction_static"] == 0.903
    assert sglang_defaults(143771, 2)["mem_fraction_static"] == 0.902
    assert sglang_defaults(143771, 4)["mem_fraction_static"] == 0.897
    assert sglang_defaults(143771, 8)["mem_fraction_static"] == 0.893
    assert sglang_defaults(143771, 8, mla=True)["mem_fraction_static"] == 0.886
    assert sglang_defaults(81559, 8)["mem_fraction_static"] == 0.812
    d = sglang_defaults(143771, 8)
    assert d["chunked_prefill_size"] == 8192 and d["cuda_graph_max_bs"] == 512 and d["prefill_graph_mib"] == 58 * 8
    # --disable-prefill-cuda-graph (or a release before it): the PR #10975 figure
    assert sglang_defaults(143771, 8, prefill_cuda_graph=False)["mem_fraction_static"] == 0.897


def test_planner_counts_the_prefill_graph_reserve():
    ds, q = PRESETS["DeepSeek-V3.1"], PRESETS["Qwen3-235B"]
    p = plan_config(ds, "TP8_EP2_auto")   # MLA
    assert p.mem_fraction == 0.886 and p.cuda_graph_bytes == (512 * 2 + 1536) * 2**20
    p = plan_config(q, "TP8_EP2_auto")
    assert p.mem_fraction == 0.893 and p.cuda_graph_bytes == (512 * 2 + 58 * 8) * 2**20


def test_batch_and_lengths_grow_the_kv_cache():
    q = PRESETS["Qwen3-235B"]
    one = plan_config(q, "TP8_EP2_auto")
    many = plan_config(q, "TP8_EP2_auto", batch=64, input_len=32768, output_len=4096)
    assert many.kv_cache_bytes == pytest.approx(one.kv_cache_bytes * 64 * (32768 + 4096) / (4096 + 512))
    assert many.weights_per_gpu_bytes == one.weights_per_gpu_bytes
    # 64 x 36864 tokens x 47 KiB ~ 106 GiB of KV on top of 55 GiB of weights
    assert many.verdict == "will_not_fit"


def test_speculative_decoding_loads_mtp():
    ds = PRESETS["DeepSeek-V3.1"]
    plain = plan_config(ds, "TP8_EP2_auto")
    spec = plan_config(ds, "TP8_EP2_auto", speculative=True)
    assert spec.weights_by_part.get("mtp", 0) > 1 * GIB
    assert spec.weights_per_gpu_bytes > plain.weights_per_gpu_bytes
    assert spec.mem_fraction < plain.mem_fraction   # SGLang reserves 2 GiB more for the draft


def test_problem_configs_are_flagged():
    mm = PRESETS["MiniMax-M2"]
    # TP8 without EP: expert width 1536 / 8 = 192, not a multiple of the 128 FP8 block
    p = plan_config(mm, Config(8, 1, "auto"))
    assert any("192" in x and "128" in x for x in p.problems)
    assert not plan_config(mm, "TP8_EP2_auto").problems
    assert plan_config(mm, Config(16, 2, "auto", nodes=1)).problems   # 16 GPUs on an 8-GPU node


def test_config_forms_and_custom_gpu():
    q = PRESETS["Qwen3-235B"]
    a = plan_config(q, "TP8_EP2_auto")
    b = plan_config(q, {"tp": 8, "ep": 2, "backend": "auto"})
    c = plan_config(q, parse_matrix([(8, 2, ["auto"])])[0])
    assert a.weights_per_gpu_bytes == b.weights_per_gpu_bytes == c.weights_per_gpu_bytes
    g = custom_gpu(memory_gib=40, hbm_tbps=2.0, bf16_tflops=300)
    p = plan_config(q, "TP8_EP2_auto", gpu=g)
    assert p.gpu == "custom" and p.verdict == "will_not_fit"


def test_vllm_engine_budget():
    q = PRESETS["Qwen3-235B"]
    p = plan_config(q, "TP8_EP2_auto", engine="vllm")
    assert p.mem_fraction == 0.9 and p.verdict == "fits"
    with pytest.raises(ValueError):
        plan_config(q, "TP8_EP2_auto", engine="trt")


def test_to_dict_is_json_safe_and_complete():
    p = plan_config(PRESETS["Kimi-K2-Thinking"], "TP1_auto")
    d = json.loads(json.dumps(p.to_dict()))
    for k in ("verdict", "reason", "weights_per_gpu_bytes", "kv_cache_bytes", "overhead_bytes", "available_bytes",
              "itl_floor_ms", "ttft_floor_ms", "decode_weights_ms", "decode_comm_ms", "prefill_compute_ms",
              "bound", "mem_fraction", "predicted_fit", "assumptions", "weights_by_part"):
        assert k in d, k
    assert d["verdict"] == "will_not_fit" and d["predicted_fit"] is False
    assert isinstance(d["weights_per_gpu_bytes"], int)


def test_table_lists_every_config_and_the_assumptions():
    plans = [p for pr in all_presets() for p in plan_matrix(pr)]
    text = format_plan_table(plans, detail=True)
    assert text.count("\n| ") >= len(plans)
    assert "will not fit" in text and "fits" in text
    assert "Assumptions:" in text and "Per-collective latency" in text
    for p in plans:
        assert f"| {p.model} | {p.config} |" in text
    assert format_plan_table([]).strip()
