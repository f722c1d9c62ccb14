"""Roofline floors: each term sane, decode weight-bound at TP1, communication growing with TP."""

from __future__ import annotations

import math

import pytest

from moetrace.matrix import Config
from moetrace.plan import CommModel, efficiency, floor_fields, plan_config, plan_matrix
from moetrace.plan.hardware import GPUS
from moetrace.presets import all_presets

PRESETS = {p.name: p for p in all_presets()}


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_floors_are_positive_and_sum_their_terms(name):
    for p in plan_matrix(PRESETS[name]):
        assert p.itl_floor_ms > 0 and p.ttft_floor_ms > 0
        mem = p.decode_weights_ms + p.decode_kv_ms
        assert p.itl_floor_ms == pytest.approx(max(mem, p.decode_compute_ms) + p.decode_comm_ms)
        assert p.ttft_floor_ms == pytest.approx(max(p.prefill_compute_ms, p.prefill_weights_ms) + p.prefill_comm_ms)
        assert p.bound in ("weights", "kv_cache", "communication", "compute")
        assert p.prefill_bound in ("compute", "weights", "communication")


@pytest.mark.parametrize("name", ["MiniMax-M2", "Kimi-K2-Thinking"])
def test_tp1_decode_is_bound_by_weights_with_no_communication(name):
    p = plan_config(PRESETS[name], "TP1_auto")
    assert p.decode_comm_ms == 0 and p.prefill_comm_ms == 0 and p.collectives_per_step == 0
    assert p.bound == "weights"
    assert p.itl_floor_ms == pytest.approx((p.decode_weight_bytes + p.decode_kv_bytes) / GPUS["h200"].hbm_bytes_per_s * 1e3)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_communication_term_grows_with_tp(name):
    pr = PRESETS[name]
    comm = [plan_config(pr, Config(tp, 1, "auto")).decode_comm_ms for tp in (1, 2, 4, 8)]
    assert comm[0] == 0
    assert comm[1] < comm[2] < comm[3]
    weights = [plan_config(pr, Config(tp, 1, "auto")).decode_weights_ms for tp in (1, 2, 4, 8)]
    assert weights[0] > weights[1] > weights[2] > weights[3]


def test_decode_reads_only_top_k_experts_at_batch_1():
    ds = PRESETS["DeepSeek-V3.1"]
    p = plan_config(ds, "TP8_EP2_auto")
    routed = p.weights_by_part["routed_experts"]
    # 8 of 256 experts' worth of routed bytes at batch 1, balanced
    assert p.decode_weight_bytes < p.weights_per_gpu_bytes * 0.1
    assert p.decode_weight_bytes > routed * 8 / 256
    # a big batch touches nearly every expert: decode reads approach all the weights
    big = plan_config(ds, "TP8_EP2_auto", batch=256)
    assert big.decode_weight_bytes > 0.9 * (big.weights_per_gpu_bytes - big.weights_by_part["embedding"])


def test_compute_bound_at_large_batch():
    p = plan_config(PRESETS["Qwen3-235B"], "TP8_EP2_auto", batch=4096, input_len=128, output_len=16,
                    mem_fraction=0.9)
    assert p.decode_compute_ms > p.decode_weights_ms
    assert p.bound in ("compute", "kv_cache")


def test_prefill_is_compute_bound_and_fp8_uses_fp8_peak():
    ds = plan_config(PRESETS["DeepSeek-V3.1"], "TP8_EP2_auto")
    assert ds.prefill_bound == "compute"
    # DeepSeek's linear layers are FP8: its prefill compute at the BF16 peak would be about twice as long
    flops_ms_bf16 = ds.prefill_flops / GPUS["h200"].bf16_flops * 1e3
    assert ds.prefill_compute_ms < 0.75 * flops_ms_bf16
    q = plan_config(PRESETS["Qwen3-235B"], "TP8_EP2_auto")
    assert q.prefill_compute_ms == pytest.approx(q.prefill_flops / GPUS["h200"].bf16_flops * 1e3)


def test_prefill_flops_by_hand_for_qwen():
    q = PRESETS["Qwen3-235B"]
    p = plan_config(q, "TP1_auto", input_len=4096)   # memory verdict irrelevant here
    # 2 x tokens x active params without the embedding (LM head on the last token only) + causal attention
    from moetrace.plan.params import count_params
    c = count_params(q.hf_config)
    linear = 2 * 4096 * (c.active - c.active_parts["embedding"] - c.active_parts["lm_head"]
                         - c.parts["norms"]) + 2 * c.active_parts["lm_head"]
    attn = 94 * 64 * 4096 ** 2 * (128 + 128)
    assert p.prefill_flops == pytest.approx(linear + attn, rel=1e-3)


def test_per_collective_latency_is_a_parameter():
    q = PRESETS["Qwen3-235B"]
    slow = plan_config(q, "TP8_EP2_auto", comm=CommModel(fixed_us=20.0))
    fast = plan_config(q, "TP8_EP2_auto", comm=CommModel(fixed_us=2.0))
    assert slow.comm_latency_us == 20.0 and fast.comm_latency_us == 2.0
    assert slow.decode_comm_ms > fast.decode_comm_ms
    assert slow.bound == "communication"
    assert fast.bound == "weights"
    # MiniMax-M2 normalises Q and K over all heads: one more all-reduce per layer
    mm = plan_config(PRESETS["MiniMax-M2"], "TP8_EP2_auto")
    assert mm.collectives_per_step == 62 * 3 + 2
    assert plan_config(q, "TP8_EP2_auto").collectives_per_step == 94 * 2 + 2


def test_multi_node_adds_latency():
    q = PRESETS["Qwen3-235B"]
    one = plan_config(q, Config(8, 2, "auto"))
    two = plan_config(q, Config(16, 2, "auto", nodes=2))
    assert two.comm_latency_us > one.comm_latency_us + 10


def test_efficiency():
    assert efficiency(2.0, 10.0) == pytest.approx(0.2)
    assert efficiency(None, 10.0) is None
    assert efficiency(2.0, 0) is None
    assert efficiency(2.0, float("nan")) is None
    assert efficiency(2.0, -1.0) is None
    assert efficiency(12.0, 10.0) == pytest.approx(1.2)   # beat the floor: reported, not clipped
    p = plan_config(PRESETS["Qwen3-235B"], "TP8_EP2_auto")
    f = floor_fields(p, itl_ms=14.32, ttft_ms=257.0)
    assert f["itl_floor_ms"] == p.itl_floor_ms
    assert 0 < f["itl_efficiency"] < 1 and 0 < f["ttft_efficiency"] < 1
    assert floor_fields(p.to_dict(), itl_ms=14.32)["itl_efficiency"] == pytest.approx(
        p.to_dict()["itl_floor_ms"] / 14.32)
    assert floor_fields(None, itl_ms=3.0)["itl_efficiency"] is None
    assert all(math.isfinite(x) for x in (p.itl_floor_ms, p.ttft_floor_ms))
