"""The analyzer on the real fixtures (H100 and CPU runs) and on small synthetic traces with known answers."""

from __future__ import annotations

import json

import pytest

from moetrace.traces import analyze_trace, analyze_traces, format_summary, short_breakdown
from moetrace.traces import categories as c
from moetrace.traces.names import DECODE, EXTEND

from .conftest import CPU, GPU, VLLM_CPU, files, kernel, op

TP1 = GPU / "tp1_sglang"
TP2 = GPU / "tp2_sglang"


def one(folder, pattern):
    (path,) = files(folder, pattern)
    return path


# ---- real GPU traces -----------------------------------------------------------------------------
def test_prefill_of_4096_tokens_on_h100():
    s = analyze_trace(one(TP1, "*EXTEND*"))
    assert (s.rank, s.stage, s.engine, s.has_device) == (0, EXTEND, "sglang", True)
    assert s.header["device_names"] == ["NVIDIA H100 80GB HBM3"]
    assert s.stages[EXTEND].steps.count == 1 and s.stages[EXTEND].steps.source == "device"
    assert s.unmatched_names == 0
    shares = s.shares()
    # the expert GEMMs (CUTLASS grouped GEMM) are the largest category of a 4096-token prefill
    assert max(shares, key=shares.get) == c.MOE_GEMM and shares[c.MOE_GEMM] > 0.25
    assert shares[c.ATTENTION] > 0.03 and shares[c.GEMM] > 0.05 and shares[c.MOE_PERMUTE] > 0.05
    assert s.top_ops[0].category == c.MOE_GEMM
    kernel_time = sum(v for k, v in s.category_us.items() if k != c.IDLE)
    assert s.top_ops[0].share == pytest.approx(s.top_ops[0].total_us / kernel_time)
    bd = short_breakdown(s)
    assert set(bd) <= set(c.GROUPS) and bd["moe"] > 40 and sum(bd.values()) == pytest.approx(100, abs=0.5)


def test_decode_steps_on_h100_are_host_bound():
    s = analyze_trace(one(TP1, "*DECODE*"))
    st = s.stages[DECODE].steps
    assert st.count == 3 and st.p50_us <= st.p99_us and st.source == "device"
    # eager decode under the profiler: the GPU waits for the host most of each step
    assert short_breakdown(s, "decode")["idle"] > 50
    assert s.idle_us < sum(s.stages[DECODE].category_us.values())
    assert s.unmatched_names == 0


def test_tensor_parallel_two_gpus_nccl():
    m = analyze_traces(files(TP2))
    assert [g.stage for g in m.groups] == [EXTEND, DECODE]
    for g in m.groups:
        assert [r.rank for r in g.rows] == [0, 1]
        assert g.slowest_rank in (0, 1) and g.spread >= 1.0
        assert g.category_us[c.ALLREDUCE] > 0 and g.category_us[c.ALLGATHER] > 0
    for t in m.traces:
        assert t.header["distributed"]["world_size"] == 2 and t.unmatched_names == 0
        nccl = [o for o in t.top_ops if o.name.startswith("ncclDevKernel_AllReduce")]
        assert nccl and nccl[0].category == c.ALLREDUCE
    text = format_summary(m)
    assert "longest mean step" in text and "all-reduce" in text


def test_the_rank_others_wait_for_is_not_the_waiting_one():
    # Real H100 TP2 traces: rank 0 reaches each all-reduce first and waits in NCCL for rank 1, so its
    # steps are the longest (282 ms against 25 ms in the prefill) and its device time is mostly
    # all-reduce. Rank 1 is the one holding rank 0 back: the least time inside collectives.
    m = analyze_traces(files(TP2))
    for g in m.groups:
        r0, r1 = g.rows
        assert r0.collective_us > r1.collective_us > 0
        assert g.slowest_rank == 0 and g.bottleneck_rank == 1, g.stage
        assert abs(r0.compute_us + r0.collective_us - r0.busy_us) < 1e-6
    text = format_summary(m)
    assert "rank 1 holds the others back" in text and "in collectives ms" in text
    assert m.to_dict()["groups"][0]["bottleneck_rank"] == 1


def test_vllm_style_file_with_both_stages():
    s = analyze_trace(files(GPU / "tp1_vllm")[0])
    assert (s.engine, s.rank, s.stage) == ("vllm", 0, None)
    assert s.stages[EXTEND].steps.count == 2 and s.stages[DECODE].steps.count == 2
    assert short_breakdown(s, EXTEND)["moe"] > short_breakdown(s, DECODE)["moe"]


def test_records_are_json():
    s = analyze_trace(one(TP1, "*EXTEND*"))
    d = json.loads(json.dumps(s.to_dict()))
    assert d["source"] == "device" and d["short_breakdown"][EXTEND]["moe"] > 0
    assert abs(sum(d["shares"].values()) - 1) < 1e-2


# ---- real CPU traces -------------------------------------------------------------------------------
def test_cpu_trace_categories_from_host_ops():
    s = analyze_trace(files(CPU)[0])
    assert not s.has_device and s.source == "host" and s.idle_us == 0
    assert s.stages[EXTEND].steps.count == 2 and s.stages[DECODE].steps.count == 3
    assert s.stages[EXTEND].steps.source == "host"
    shares = s.shares()
    assert shares[c.ATTENTION] > 0.2 and shares[c.MOE_GEMM] > 0.05 and s.unmatched_names == 0
    # self times: no op is counted twice, so the total fits inside the profiled span
    steps = sum(st.steps.total_us for st in s.stages.values() if st.steps)
    assert sum(s.category_us.values()) <= steps * 1.05
    assert {o.name for o in s.top_ops} >= {"aten::_scaled_dot_product_flash_attention_for_cpu", "aten::_grouped_mm"}


VLLM_CPU_RANKS = sorted(VLLM_CPU.rglob("*rank*.trace.json.gz")) if VLLM_CPU.exists() else []


@pytest.mark.skipif(not VLLM_CPU_RANKS, reason="no real vLLM CPU traces in tests/data/traces/vllm_cpu yet")
@pytest.mark.parametrize("path", VLLM_CPU_RANKS, ids=lambda p: p.name)
def test_real_vllm_cpu_traces(path):
    s = analyze_trace(path)
    assert not s.has_device and s.rank is not None
    assert s.category_us.get(c.ATTENTION, 0) > 0 and s.category_us.get(c.MOE_GEMM, 0) > 0
    assert sum(st.steps.count for st in s.stages.values() if st.steps) > 0
    assert s.unmatched_us <= 0.05 * s.busy_us, [u.name for u in s.unmatched]


# ---- synthetic traces with known answers ----------------------------------------------------------
def test_nested_host_ops_are_not_double_counted(write_trace):
    events = [
        op("execute_context_0(0)_generation_1(1)", 0, 1000, 1, cat="user_annotation"),
        op("_C::cpu_fused_moe", 100, 400, 2),
        op("aten::mm", 150, 200, 3),         # inside the MoE op: MoE time
        op("aten::empty", 160, 10, 4),       # inside that: MoE time too
        op("aten::topk", 400, 50, 5),        # a routing op keeps its own category
        op("vllm::unified_attention_with_output", 600, 300, 6),
        op("aten::copy_", 650, 100, 7),      # inside attention
        op("aten::mm", 920, 50, 8),          # on its own: dense GEMM
        op("mylib::mystery", 975, 20, 9),
    ]
    s = analyze_trace(write_trace(events, name="dp0_pp0_tp0_dcp0_ep0_rank0.1.pt.trace.json.gz"))
    assert s.category_us == pytest.approx({c.MOE_GEMM: 350, c.MOE_ROUTING: 50, c.ATTENTION: 300, c.GEMM: 50,
                                           c.UNMATCHED: 20})
    assert [u.name for u in s.unmatched] == ["mylib::mystery"]
    assert s.stages[DECODE].steps.count == 1
    top = {o.name: o for o in s.top_ops}
    assert top["_C::cpu_fused_moe"].total_us == 350 and top["_C::cpu_fused_moe"].count == 1


def test_device_idle_inside_and_between_steps(write_trace):
    # two decode steps; kernels launched by ops inside them (External ids link them)
    events = [op("step[DECODE bs=1]", 0, 100, 1, cat="user_annotation"), op("aten::mm", 10, 5, 2),
              op("aten::add", 20, 5, 3),
              op("step[DECODE bs=1]", 200, 100, 10, cat="user_annotation"), op("aten::mm", 210, 5, 11),
              kernel("nvjet_sm90_tst_a", 1000, 10, 2), kernel("vectorized_elementwise_kernel<add>", 1015, 5, 3),
              kernel("nvjet_sm90_tst_a", 1100, 10, 11),
              kernel("ncclDevKernel_AllReduce_Sum_bf16_RING_LL", 1105, 20, 11, stream=9),  # overlaps
              kernel("Memcpy DtoH (Device -> Pinned)", 1130, 2, 11, cat="gpu_memcpy"),
              op("step[DECODE bs=1]", 1000, 20, 1, cat="gpu_user_annotation"),
              op("step[DECODE bs=1]", 1100, 32, 10, cat="gpu_user_annotation")]
    s = analyze_trace(write_trace(events, name="x-TP-0-DECODE.trace.json.gz"))
    assert s.idle_us == pytest.approx(5 + 5)  # 1010..1015 in step 1, 1125..1130 in step 2
    assert s.idle_between_steps_us == pytest.approx(80)  # 1020..1100
    assert s.busy_us == pytest.approx(15 + 25 + 2)
    st = s.stages[DECODE].steps
    assert (st.count, st.mean_us, st.source) == (2, 26, "device")
    assert s.category_us[c.ALLREDUCE] == 20 and s.category_us[c.MEMCPY] == 2


def test_kernels_out_of_order_in_the_file(write_trace):
    ks = [kernel("nvjet_sm90_tst_a", t, 5, None) for t in (30, 0, 10, 20)]  # gaps of 5 each
    s = analyze_trace(write_trace(ks, name="a-TP-0-DECODE.trace.json.gz"))
    assert s.idle_us == pytest.approx(15) and s.busy_us == pytest.approx(20)


def test_breakdown_groups_sum_to_100(write_trace):
    ks = [kernel("fused_moe_kernel", 0, 40, None), kernel("BatchDecodeWithPagedKVCacheKernel", 40, 20, None),
          kernel("cross_device_reduce_1stage", 60, 20, None), kernel("nvjet_tst_x", 90, 10, None)]
    s = analyze_trace(write_trace(ks, name="a-TP-0-DECODE.trace.json.gz"))
    assert short_breakdown(s) == {"moe": 40.0, "attention": 20.0, "communication": 20.0, "gemm": 10.0, "idle": 10.0}


def test_command_line(capsys, tmp_path):
    from moetrace.traces.__main__ import main

    assert main([str(p) for p in files(TP2, "*EXTEND*")]) == 0
    assert "## Across ranks" in capsys.readouterr().out
    assert main([str(one(TP1, "*EXTEND*")), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["traces"][0]["rank"] == 0
    assert main([str(tmp_path / "missing.trace.json.gz")]) == 2
    assert "missing.trace.json.gz" in capsys.readouterr().err


@pytest.mark.skipif(not VLLM_CPU_RANKS, reason="no real vLLM CPU traces in tests/data/traces/vllm_cpu yet")
@pytest.mark.parametrize("path", VLLM_CPU_RANKS, ids=lambda p: p.name)
def test_each_vllm_window_holds_only_its_stage(path):
    """vLLM has no by-stage profiling: moetrace opens one window per stage. The analyzer shows
    that each recorded window holds only its own stage's steps (empty IDLE steps aside)."""
    s = analyze_trace(path)
    working = {k for k, v in s.stages.items() if v.steps and v.steps.count and k != "IDLE"}
    assert working == {"EXTEND" if "__extend__" in path.name else "DECODE"}, s.stages
