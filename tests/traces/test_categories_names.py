"""The category table on names seen in real traces, and what file and step names say."""

from __future__ import annotations

import pytest

from moetrace.traces import categories as c
from moetrace.traces.categories import KERNEL, OP, RULES, classify
from moetrace.traces.names import DECODE, EXTEND, MIXED, parse_trace_name, step_stage

KERNELS = {
    # SGLang / vLLM on H100 (Qwen3-30B-A3B kernel tables, see categories.py)
    "fused_moe_kernel": c.MOE_GEMM,
    "void topkGatingSoftmax<__nv_bfloat16, 8, 128, 4, 16>": c.MOE_ROUTING,
    "void vllm::moe::topkGating<8, 128, 4, 16, 32, int, __nv_bfloat16, (vllm::moe::ScoringFunc)0>": c.MOE_ROUTING,
    "void moe_align_block_size_kernel<int>": c.MOE_PERMUTE,
    "void count_and_sort_expert_tokens_kernel<int>": c.MOE_PERMUTE,
    "void cutlass::device_kernel<flash::enable_sm90_or_later<flash::FlashAttnFwdSm90<flash::Collective"
    "MainloopFwdSm90<2, cute::tuple<cute::C<1>, cute::C<1>, cute::C<1> >>>>>": c.ATTENTION,
    "void cutlass::device_kernel<flash::FlashAttnFwdCombine<cute::tuple<cute::C<8>, cute::C<128> >, 5, 256>>":
        c.ATTENTION,
    "void flash::prepare_varlen_num_blocks_kernel<1, true>": c.ATTENTION,
    "void flashinfer::BatchDecodeWithPagedKVCacheKernel<(flashinfer::PosEncodingMode)0, 2u, 1u, 8u>": c.ATTENTION,
    "void flashinfer::norm::FusedAddRMSNormKernel<8u, __nv_bfloat16>": c.NORM_ELEMENTWISE,
    "void flashinfer::activation::act_and_mul_kernel<__nv_bfloat16, &(float silu<float>(float const&))>":
        c.NORM_ELEMENTWISE,
    "nvjet_tst_64x8_64x16_4x1_v_bz_splitK_TNT": c.GEMM,
    "void cublasLt::splitKreduce_kernel<32, 16, int, float, __nv_bfloat16, float, __nv_bfloat16>": c.GEMM,
    "void vllm::cross_device_reduce_1stage<__nv_bfloat16, 2>(vllm::RankData*, vllm::RankSignals)": c.ALLREDUCE,
    "void sglang::cross_device_reduce_1stage<__nv_bfloat16, 8>(sglang::RankData*)": c.ALLREDUCE,
    "_matmul_ogs_NNT_bf16xbf16xmxfp4_16x256x128x1_swiglu": c.MOE_GEMM,
    # our H100 traces
    "ncclDevKernel_AllReduce_Sum_bf16_RING_LL(ncclDevKernelArgsStorage<4096ul>)": c.ALLREDUCE,
    "ncclDevKernel_AllGather_RING_LL(ncclDevKernelArgsStorage<4096ul>)": c.ALLGATHER,
    "nvjet_sm90_tst_384x8_64x4_2x1_v_bz_TNT": c.GEMM,
    "_ZN7cutlass13device_kernelIN2at4cuda6detail25enable_3x_kernel_for_sm9xINS_4gemm6kernel13GemmUniversalINS5"
    "_17GroupProblemShapeIN4cute5tupleIJiiiEEEEE": c.MOE_GEMM,
    "cudnn_generated_fort_native_sdpa_sm90_flash_fprop_wgmma_f16_knob_7_64x128x128_4x1x1_cga1x1x1_kernel0_0":
        c.ATTENTION,
    "void cudnn::fusion::lean_reduction_kernel<false, false, false>(void*, float*)": c.ATTENTION,
    "void at::native::sbtopk::gatherTopK<float, unsigned int, 1, false>(at::cuda::detail::TensorInfo)":
        c.MOE_ROUTING,
    "void at::native::(anonymous namespace)::vectorized_layer_norm_kernel<c10::BFloat16, float, true>":
        c.NORM_ELEMENTWISE,
    "Memcpy DtoH (Device -> Pinned)": c.MEMCPY,
    "Memset (Device)": c.MEMCPY,
    "void at::native::reduce_kernel<512, 1, at::native::ReduceOp<float, at::native::ArgMaxOps<float>>>": c.SAMPLING,
    "deep_ep::intranode::dispatch<8, 768, 8192>": c.ALLTOALL,
}

# Names in SGLang 0.5.17 and vLLM 0.25.0 traces on H200 (/work/shared/gpu-engines/README.md), one test each.
H200_KERNELS = {
    # SGLang, Triton attention backend
    "_fwd_kernel": c.ATTENTION,
    "_fwd_grouped_kernel_stage1": c.ATTENTION,
    "_fwd_kernel_stage2": c.ATTENTION,
    "create_flashinfer_kv_indices_triton": c.ATTENTION_META,
    "get_num_kv_splits_triton": c.ATTENTION_META,
    "_router_triton_kernel": c.MOE_ROUTING,
    "_vocab_parallel_embedding_kernel": c.EMBEDDING,
    # SGLang's own custom all-reduce: its name ends in reduce_kernel, which the norm rule took before
    "void sglang::all_reduce_kernel<sglang::AllReducePushImpl<__nv_bfloat16, 2> >(sglang::AllReduceData)":
        c.ALLREDUCE,
    "all_reduce_kernel<AllReducePushImpl<c10::BFloat16, 2>>": c.ALLREDUCE,
    # FlashInfer's fused all-reduce (+ residual + RMSNorm), SGLang at TP2 on SM90
    "void flashinfer::trtllm_allreduce_fusion::allreduce_fusion_kernel_oneshot_lamport<__nv_bfloat16, 2, true>":
        c.ALLREDUCE,
    "void flashinfer::trtllm_allreduce_fusion::allreduce_fusion_kernel_twoshot_sync<__nv_bfloat16, 2, true>":
        c.ALLREDUCE,
    # vLLM custom all-reduce and NCCL
    "void vllm::cross_device_reduce_1stage<__nv_bfloat16, 2>(vllm::RankData*, vllm::RankSignals, "
    "vllm::Signal*, __nv_bfloat16*, int, int)": c.ALLREDUCE,
    "void vllm::cross_device_reduce_2stage<__nv_bfloat16, 2>(vllm::RankData*, vllm::RankSignals)": c.ALLREDUCE,
    "ncclDevKernel_AllReduce_Sum_bf16_RING_LL(ncclDevKernelArgsStorage<4096ul>)": c.ALLREDUCE,
    "ncclDevKernel_AllGather_RING_LL(ncclDevKernelArgsStorage<4096ul>)": c.ALLGATHER,
    # FA3 (vLLM 0.25.0's attention on H200)
    "void cutlass::device_kernel<flash::enable_sm90_or_later<flash::FlashAttnFwdSm90<flash::CollectiveMainloopFwd"
    "Sm90<2, cute::tuple<cute::C<1>, cute::C<1>, cute::C<1> >, cute::tuple<cute::C<128>, cute::C<176>>>>>>":
        c.ATTENTION,
    "void flash_fwd_splitkv_kernel<Flash_fwd_kernel_traits<128, 64, 128, 4>, false, true>": c.ATTENTION,
    "void flash_fwd_splitkv_combine_kernel<Flash_fwd_kernel_traits<128, 64, 128, 4>, 4, 7>": c.ATTENTION,
    # fused MoE (vLLM's TRITON unquantized backend, SGLang's triton runner)
    "fused_moe_kernel": c.MOE_GEMM,
    "void vllm::moe::moe_align_block_size_kernel<int>(int const*, int*, int*, int*, int, int, int)": c.MOE_PERMUTE,
    "void moe_align_block_size_small_batch_expert_kernel<int>(int const*, int*, int*)": c.MOE_PERMUTE,
    "void vllm::moe::topkGatingSoftmax<8, 128, 4, 16, 32, int, __nv_bfloat16>(...)": c.MOE_ROUTING,
    "void moe_fused_gate_kernel<float, 8, 128>(...)": c.MOE_ROUTING,
    "void vllm::moe::moe_sum_kernel<__nv_bfloat16, 8>(__nv_bfloat16*, __nv_bfloat16 const*, int)": c.MOE_PERMUTE,
}

# Names in the second H200 run's traces (tests/data/gpu-2: SGLang with FA3 and its triton_kernels MoE,
# DeepSeek-V3.1's MLA in both engines), which analyze had left unmatched or needed named.
H200_RUN2_KERNELS = {
    # SGLang's DeepSeek-V3 router (TensorRT-LLM's kernel), vLLM's
    "void tensorrt_llm::kernels::deepseek_v3_topk_kernel<float, float, float, int, 256, true>(float*, float*, int*, "
    "float*, long, long, long, long, long, long, double, short*)": c.MOE_ROUTING,
    "void vllm::moe::grouped_topk_fused_small_expert_count_kernel<float, float, int, (vllm::moe::ScoringFunc)1, 256, "
    "true, 8>(float*, float*, int*, float const*, long, long, long, long, long, long, bool, double)": c.MOE_ROUTING,
    # SGLang's triton_kernel MoE runner (triton_kernels: routing metadata, top-k, matmul_ogs, reduce)
    "_topk_forward": c.MOE_ROUTING,
    "_sum_bitmatrix_rows": c.MOE_PERMUTE,
    "_bitmatrix_metadata_compute_stage1": c.MOE_PERMUTE,
    "_bitmatrix_metadata_compute_stage2": c.MOE_PERMUTE,
    "_ragged_tensor_metadata_compute": c.MOE_PERMUTE,
    "_reduce": c.MOE_PERMUTE,
    "_p_matmul_ogs_NNN_bf16xbf16xbf16_128x256x64x1": c.MOE_GEMM,
    "_matmul_ogs_NNN_fp32xbf16xbf16_16x256x64x11": c.MOE_GEMM,
    "_ragged_tensor_metadata_memset": c.MEMCPY,
    # MLA: SGLang's K concat and KV write, vLLM's KV write; SGLang FA3's decode metadata, vLLM's slot mapping
    "(anonymous namespace)::concat_mla_k_kernel(__nv_bfloat16*, __nv_bfloat16 const*, __nv_bfloat16 const*, int, "
    "long, int, long, int, long)": c.ATTENTION,
    "void (anonymous namespace)::set_mla_kv_buffer_kernel<1024l, 128l, 8, true, long>((anonymous namespace)::"
    "SetMlaKVBufferParams)": c.ATTENTION,
    "set_mla_kv_buffer_kernel": c.ATTENTION,
    "void vllm::concat_and_cache_mla_kernel<__nv_bfloat16, __nv_bfloat16, (vllm::Fp8KVCacheDataType)0>(__nv_bfloat16 "
    "const*, __nv_bfloat16 const*, __nv_bfloat16*, long const*, int, int, int, int, int, int, int, float const*)":
        c.ATTENTION,
    "_fused_metadata_kernel_ps1_no_swa": c.ATTENTION_META,
    "_compute_slot_mapping_kernel": c.ATTENTION_META,
    # SGLang's batch positions: bookkeeping
    "compute_position_kernel": c.OTHER,
    "void (anonymous namespace)::clamp_position_kernel<long>(long*, long const*, unsigned long)": c.OTHER,
}

OPS = {
    "vllm::unified_attention_with_output": c.ATTENTION,
    "_C::cpu_fused_moe": c.MOE_GEMM,
    "_C::onednn_mm": c.GEMM,
    "aten::mm": c.GEMM,
    "aten::topk": c.MOE_ROUTING,
    "aten::_grouped_mm": c.MOE_GEMM,
    "aten::scaled_dot_product_attention": c.ATTENTION,
    "aten::copy_": c.MEMCPY,
    "aten::rms_norm": c.NORM_ELEMENTWISE,
    "aten::empty": c.OTHER,
    "c10d::allreduce_": c.ALLREDUCE,
    "aten::multinomial": c.SAMPLING,
    # the real vLLM CPU server (0.32)
    "_C::cpu_attention_with_kv_cache": c.ATTENTION,
    "_C::mla_decode_kvcache": c.ATTENTION,
    "vllm::unified_kv_cache_update": c.ATTENTION,
    "_C::compute_slot_mapping_kernel_impl": c.ATTENTION,
    "_C::shm_allreduce": c.ALLREDUCE,
    "_C::shm_all_gather": c.ALLGATHER,
    "## Call CompiledFxGraph None ##": c.NORM_ELEMENTWISE,
    "Pregraph bytecode": c.OTHER,
    "AOTDispatcher Runtime Wrapper Prologue": c.OTHER,
}


@pytest.mark.parametrize(("name", "category"), KERNELS.items())
def test_kernel_names(name, category):
    assert classify(name, KERNEL) == category


@pytest.mark.parametrize(("name", "category"), H200_KERNELS.items())
def test_kernel_names_of_real_gpu_engines(name, category):
    assert classify(name, KERNEL) == category


@pytest.mark.parametrize(("name", "category"), H200_RUN2_KERNELS.items())
def test_kernel_names_of_the_second_gpu_run(name, category):
    assert classify(name, KERNEL) == category


def test_the_bare_reduce_rule_takes_only_the_whole_name():
    # triton_kernels' _reduce is named by itself; names that merely contain it keep their own rules
    assert classify("_reduce_grouped", KERNEL) == c.UNMATCHED
    assert classify("void at::native::reduce_kernel<512, 1>", KERNEL) == c.NORM_ELEMENTWISE
    assert classify("void vllm::cross_device_reduce_1stage<__nv_bfloat16, 2>", KERNEL) == c.ALLREDUCE


def test_norms_and_reductions_stay_norms():
    # The new all-reduce pattern must not take torch's reductions or fused norms.
    assert classify("void at::native::reduce_kernel<512, 1, at::native::ReduceOp<float, at::native::func_wrapper_t"
                    "<float, at::native::sum_functor<float, float, float>::operator()>, unsigned int, float, 4>>",
                    KERNEL) == c.NORM_ELEMENTWISE
    assert classify("void flashinfer::norm::FusedAddRMSNormKernel<8u, __nv_bfloat16>", KERNEL) == c.NORM_ELEMENTWISE


@pytest.mark.parametrize(("name", "category"), OPS.items())
def test_host_op_names(name, category):
    assert classify(name, OP) == category


def test_unknown_names_are_unmatched_not_lumped():
    assert classify("my_new_fused_kernel_v7", KERNEL) == c.UNMATCHED
    assert classify("mylib::frobnicate", OP) == c.UNMATCHED


def test_the_table_is_complete():
    for rule in RULES:
        assert rule.category in c.CATEGORIES and rule.seen and rule.applies_to in (KERNEL, OP, c.ANY)
    grouped = {cat for cats in c.GROUPS.values() for cat in cats}
    assert grouped == set(c.CATEGORIES)


@pytest.mark.parametrize(("name", "rank", "stage", "engine", "parallel"), [
    ("1700000000.1-TP-3-EXTEND.trace.json.gz", 3, EXTEND, "sglang", {"tp": 3}),
    ("prof-1700000000-TP-1-DP-0-EP-1-DECODE.trace.json.gz", 1, DECODE, "sglang", {"tp": 1, "dp": 0, "ep": 1}),
    ("1700000000-TP-0.trace.json.gz", 0, None, "sglang", {"tp": 0}),
    ("dp0_pp0_tp2_dcp0_ep0_rank2.1776867152271917712.pt.trace.json.gz", 2, None, "vllm",
     {"dp": 0, "pp": 0, "tp": 2, "dcp": 0, "ep": 0}),
    ("worker_rank5.json", 5, None, None, {}),
    ("Qwen3-235B-tiny__TP2_auto__decode__rank1.trace.json.gz", 1, DECODE, None, {}),  # moetrace's own names
    ("Qwen3-235B-tiny__TP1_auto__extend__rank0.trace.json.gz", 0, EXTEND, None, {}),
    ("trace.json", None, None, None, {}),
])
def test_rank_and_stage_from_file_names(name, rank, stage, engine, parallel):
    t = parse_trace_name(name)
    assert (t.rank, t.stage, t.engine, t.parallel) == (rank, stage, engine, parallel)


def test_merged_sglang_trace():
    assert parse_trace_name("merged-1700000000.trace.json.gz").merged


@pytest.mark.parametrize(("name", "stage"), [
    ("step[EXTEND bs=1 toks=4096]", EXTEND),
    ("step[DECODE bs=32]", DECODE),
    ("execute_context_1(2048)_generation_0(0)", EXTEND),
    ("execute_context_0(0)_generation_1(1)", DECODE),
    ("execute_context_1(512)_generation_7(7)", MIXED),
    ("nccl:all_reduce", None),
    ("ProfilerStep#3", None),
])
def test_step_annotations(name, stage):
    assert step_stage(name) == stage
