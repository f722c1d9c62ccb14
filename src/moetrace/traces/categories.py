"""The one rule table that names what each kernel or op of a trace is doing.

A rule is (category, applies to, regular expression, where the names were seen). Rules are tried
in order and the first whose pattern is found in the name (case-insensitive) wins, so specific
rules come before generic ones (FA3 runs inside ``cutlass::device_kernel``, SGLang's custom
all-reduce is called ``cross_device_reduce``, so both precede GEMM and reduction rules).
``KERNEL`` rules match device activity (CUDA kernels, memcpy, memset); ``OP`` rules match host
ops (``cpu_op`` events), which are what a CPU-only trace (vLLM's CPU build) has.
A name no rule matches is ``UNMATCHED`` and is reported by name, never folded into another group.

Where the names come from:
- [h100] our own traces on an H100 80GB HBM3 (torch 2.11.0+cu130, cuDNN 9.19, NCCL 2.28.9):
  tests/data/traces/gpu/ (benchmarks/gpu/moe_layer_trace.py).
- [cpu] our own PyTorch 2.13 CPU traces: tests/data/traces/cpu/.
- [sgl] kernel tables of SGLang and vLLM traces of Qwen3-30B-A3B on H100 in the validation report
  of the sglang-torch-profiler-analysis skill (BBuf/AI-Infra-Auto-Driven-SKILLS) and sglang PR
  #22440 ("Upgrade sglang-torch-profiler-analysis SKILLS"): fused_moe_kernel, topkGatingSoftmax,
  moe_align_block_size_kernel, count_and_sort_expert_tokens_kernel, FlashAttnFwdSm90,
  FlashAttnFwdCombine, prepare_varlen_num_blocks_kernel, FusedAddRMSNormKernel, act_and_mul_kernel,
  fused_rope_store_kernel, fused_qknorm_warp, nvjet_tst_*, cublasLt::splitKreduce_kernel,
  vllm::moe::topkGating, _matmul_ogs_* (triton_kernels MoE).
- [ar] ``vllm::cross_device_reduce_1stage<__nv_bfloat16, 2>`` and
  ``sglang::cross_device_reduce_1stage<__nv_bfloat16, 8>`` in public kernel-share tables
  (vLLM/SGLang custom all-reduce); FlashInfer ``BatchDecodeWithPagedKVCacheKernel`` /
  ``PersistentVariableLengthMergeStates`` in FlashInfer benchmark write-ups.
- [doc] /work/shared/docs/engines.md (vLLM CPU op names), DeepEP and DeepGEMM kernel namespaces.
- [h200] kernel names in SGLang 0.5.17 and vLLM 0.25.0 traces on H200 (Qwen3-235B-mid, TP1, TP2,
  TP2 with EP2; /work/shared/gpu-engines/README.md): SGLang's Triton attention ``_fwd_kernel``,
  ``_fwd_grouped_kernel_stage1`` / ``_fwd_kernel_stage2``, ``_router_triton_kernel``,
  ``create_flashinfer_kv_indices_triton``, ``get_num_kv_splits_triton``,
  ``_vocab_parallel_embedding_kernel``, SGLang's custom ``all_reduce_kernel<AllReducePushImpl<...>>``,
  FlashInfer's ``allreduce_fusion_kernel_oneshot_lamport``, vLLM's ``cross_device_reduce_1stage``,
  ``ncclDevKernel_AllReduce_Sum_bf16_RING_LL``, ``ncclDevKernel_AllGather_RING_LL``.
- [h200-2] kernel names in the second H200 run's traces (SGLang 0.5.17 with sglang-kernel 0.4.5 and vLLM
  0.25.0, Qwen3-235B and DeepSeek-V3.1 slices; tests/data/gpu-2/): SGLang's DeepSeek router
  ``tensorrt_llm::kernels::deepseek_v3_topk_kernel``, its triton_kernels MoE (``--moe-runner-backend
  triton_kernel``: ``_topk_forward``, ``_sum_bitmatrix_rows``, ``_bitmatrix_metadata_compute_stage1/2``,
  ``_ragged_tensor_metadata_compute``, ``_reduce``), its FA3 backend's ``_fused_metadata_kernel_ps1_no_swa``,
  ``compute_position_kernel`` / ``clamp_position_kernel``; vLLM's ``_compute_slot_mapping_kernel``.
- [vcpu] traces of the real vLLM CPU server (0.32, tiny Qwen3-235B and DeepSeek-V3.1 variants, TP1
  and TP2) from this project's end-to-end sweep on 2026-11-26.

Generic PyTorch kernels carry no meaning of their own (a sort, a histogram, a top-k); where the
table gives them a MoE category it says so in the rule's note: in the MoE decoders this tool
profiles that is their role (the engines sample with FlashInfer's named kernels).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Final

__all__ = [
    "ALLGATHER", "ALLREDUCE", "ALLTOALL", "ATTENTION", "ATTENTION_META", "CATEGORIES", "COMM_OTHER", "EMBEDDING",
    "GEMM", "GROUPS",
    "IDLE", "KERNEL", "MEMCPY", "MOE_GEMM", "MOE_PERMUTE", "MOE_ROUTING", "NORM_ELEMENTWISE", "OP", "OTHER",
    "RULES", "Rule", "SAMPLING", "UNMATCHED", "classify", "group_of",
]

MOE_ROUTING: Final = "moe_routing"
MOE_GEMM: Final = "moe_gemm"
MOE_PERMUTE: Final = "moe_permute"
ATTENTION: Final = "attention"
ATTENTION_META: Final = "attention_metadata"
EMBEDDING: Final = "embedding"
GEMM: Final = "gemm"
ALLREDUCE: Final = "comm_allreduce"
ALLTOALL: Final = "comm_alltoall"
ALLGATHER: Final = "comm_allgather"
COMM_OTHER: Final = "comm_other"
NORM_ELEMENTWISE: Final = "norm_elementwise"
SAMPLING: Final = "sampling"
MEMCPY: Final = "memcpy"
OTHER: Final = "other"  # matched, but bookkeeping: allocation, views, syncs, asserts
IDLE: Final = "idle"  # not a rule: gaps on the device timeline inside steps
UNMATCHED: Final = "unmatched"

CATEGORIES: Final = {
    MOE_ROUTING: "MoE routing (gate, top-k)",
    MOE_GEMM: "MoE expert GEMMs",
    MOE_PERMUTE: "MoE permute/align/unpermute",
    ATTENTION: "attention",
    ATTENTION_META: "attention metadata (KV indices, split counts)",
    EMBEDDING: "embedding lookup",
    GEMM: "dense GEMM",
    ALLREDUCE: "all-reduce",
    ALLTOALL: "all-to-all",
    ALLGATHER: "all-gather",
    COMM_OTHER: "other communication",
    NORM_ELEMENTWISE: "norms and elementwise",
    SAMPLING: "sampling",
    MEMCPY: "memory copies",
    OTHER: "other (bookkeeping)",
    IDLE: "idle (device gaps in steps)",
    UNMATCHED: "unmatched",
}

# The coarse groups of a short breakdown (a record's "decode: MoE 41%, attention 22%, ...").
GROUPS: Final = {
    "moe": (MOE_ROUTING, MOE_GEMM, MOE_PERMUTE),
    "attention": (ATTENTION, ATTENTION_META),
    "gemm": (GEMM,),
    "communication": (ALLREDUCE, ALLTOALL, ALLGATHER, COMM_OTHER),
    "other": (NORM_ELEMENTWISE, EMBEDDING, SAMPLING, MEMCPY, OTHER, UNMATCHED),
    "idle": (IDLE,),
}
_GROUP_OF: Final = {cat: group for group, cats in GROUPS.items() for cat in cats}

KERNEL: Final = "kernel"
OP: Final = "op"
ANY: Final = "any"


@dataclass(frozen=True)
class Rule:
    category: str
    applies_to: str  # KERNEL, OP or ANY
    pattern: str
    seen: str  # where such names were seen, or why a generic name gets this category


_ATEN_VIEWS = (r"empty|empty_strided|empty_like|new_empty|view|_unsafe_view|as_strided|slice|select|transpose|t|"
               r"reshape|unsqueeze|squeeze|permute|expand|expand_as|flatten|unflatten|split|split_with_sizes|chunk|"
               r"narrow|unbind|detach|detach_|lift_fresh|alias|resolve_conj|resolve_neg|result_type|contiguous|"
               r"resize_|set_|is_nonzero|item|_local_scalar_dense|numel|size|stride|record_stream|"
               r"_assert_async|_functional_assert_async|is_same_size|broadcast_tensors|_reshape_alias|as_strided_|"
               r"view_as|lift_fresh_copy|movedim|moveaxis|view_as_real|view_as_complex")
_ATEN_ELEMENTWISE = (r"add|add_|sub|sub_|rsub|mul|mul_|div|div_|floor_divide|remainder|pow|rsqrt|sqrt|exp|log|neg|"
                     r"abs|reciprocal|cos|sin|tanh|sigmoid|silu|silu_|gelu|relu|clamp|clamp_|clamp_min|maximum|"
                     r"minimum|where|masked_fill|masked_fill_|mean|sum|max|min|amax|amin|prod|norm|cumsum|cat|stack|"
                     r"softmax|_softmax|log_softmax|_log_softmax|rms_norm|_fused_rms_norm|layer_norm|"
                     r"native_layer_norm|group_norm|type_as|eq|ne|lt|le|gt|ge|logical_not|logical_and|"
                     r"bitwise_and|bitwise_not|bitwise_or|arange|linspace|zeros|zeros_like|ones|ones_like|full|"
                     r"full_like|fill_|zero_|index|index_put_|gather|scatter|scatter_|embedding|repeat|"
                     r"repeat_interleave|tril|triu|roll|flip|erf|square|lerp|addcmul|any|all|isnan|nan_to_num|sort|"
                     r"scatter_add|scatter_add_|aminmax|scalar_tensor|subtract|multiply|divide|true_divide")

RULES: Final[tuple[Rule, ...]] = (
    # ---- communication (first: names like cross_device_reduce or AllReduce must not fall to generic rules)
    Rule(ALLREDUCE, KERNEL, r"ncclDevKernel_AllReduce|ncclKernel_AllReduce|cross_device_reduce|custom_?all_?reduce"
         r"|quickreduce|allreduce_fusion|one_?shot_?all_?reduce|two_?shot_?all_?reduce|trtllm.*allreduce"
         r"|all_?reduce_kernel|AllReduce(?:Push|Pull|OneShot|TwoShot)\w*Impl|\ball_?reduce",
         "[h100] ncclDevKernel_AllReduce_Sum_bf16_RING_LL; [ar] vllm::/sglang::cross_device_reduce_1stage; "
         "[h200] SGLang's all_reduce_kernel<AllReducePushImpl<...>> (its name ends in reduce_kernel: must "
         "precede the norm rule), FlashInfer's allreduce_fusion_kernel_oneshot_lamport / twoshot"),
    Rule(ALLGATHER, KERNEL, r"ncclDevKernel_AllGather|ncclKernel_AllGather|all_?gather",
         "[h100] ncclDevKernel_AllGather_RING_LL (TP logits gather)"),
    Rule(ALLTOALL, KERNEL, r"deep_?ep::|all_?to_?all|AllToAll|ncclDevKernel_AlltoAll",
         "[doc] DeepEP dispatch/combine kernels live in namespace deep_ep::"),
    Rule(COMM_OTHER, KERNEL, r"nccl|ReduceScatter|reduce_scatter|Broadcast|SendRecv",
         "other NCCL collectives and send/recv (pipeline p2p, or an all-to-all done as send/recv)"),
    Rule(ALLREDUCE, OP, r"all_reduce|allreduce", "[h100] c10d::allreduce_, nccl:all_reduce; [cpu] gloo:all_reduce"),
    Rule(ALLGATHER, OP, r"all_gather|allgather", "[h100] c10d::allgather_; [cpu] gloo:all_gather"),
    Rule(ALLTOALL, OP, r"all_to_all|alltoall", "c10d::alltoall_base_"),
    Rule(COMM_OTHER, OP, r"^c10d::|^nccl:|^gloo:|reduce_scatter|broadcast|barrier|record_param_comms",
         "[cpu] c10d::barrier, gloo:barrier; record_param_comms wraps every c10d collective"),
    # ---- FlashAttention by name, before the MoE rules (whose generic combine_kernel would take FA2/FA3's
    # flash_fwd_splitkv_combine_kernel)
    Rule(ATTENTION, KERNEL, r"flash_fwd|flash::|FlashAttn", "[h200] vLLM 0.25.0's FA3 flash::FlashAttnFwdSm90; "
         "FA2's flash_fwd_splitkv_kernel and flash_fwd_splitkv_combine_kernel"),
    # ---- MoE routing
    Rule(MOE_ROUTING, KERNEL, r"topkGating|topk_?gating|topk_softmax|topk_sigmoid|moe_fused_gate|grouped_topk"
         r"|fused_topk|kimi_k2_moe_fused_gate",
         "[sgl] topkGatingSoftmax<__nv_bfloat16, 8, 128, 4, 16>, vllm::moe::topkGating<8, 128, ...>"),
    Rule(MOE_ROUTING, KERNEL, r"_router_triton_kernel|moe_router|router_gemm|fused_moe_router",
         "[h200] SGLang's _router_triton_kernel (the router's fused gate and top-k, Triton)"),
    Rule(MOE_ROUTING, KERNEL, r"deepseek_v3_topk|(?:^|\W)_topk_forward\b",
         "[h200-2] SGLang's DeepSeek-V3 router tensorrt_llm::kernels::deepseek_v3_topk_kernel (grouped top-k with "
         "the correction bias); triton_kernels' _topk_forward (the router's top-k of the triton_kernel MoE backend)"),
    Rule(MOE_ROUTING, KERNEL, r"sbtopk|gatherTopK|bitonicSortKVInPlace",
         "[h100] torch.topk's kernels (sbtopk::gatherTopK, bitonicSortKVInPlace): the router's top-k"),
    Rule(MOE_ROUTING, OP, r"topk|moe_fused_gate|grouped_topk|fused_gate",
         "aten::topk, _moe_C::topk_softmax, sgl_kernel::topk_softmax"),
    # ---- MoE permute / align / unpermute
    Rule(MOE_PERMUTE, KERNEL, r"moe_align_block_size|count_and_sort_expert_tokens|moe_sum|moe_permute"
         r"|moe_unpermute|expand_and_permute|shuffle_rows|compute_expert_offsets|moe_reduce|combine_kernel",
         "[sgl] moe_align_block_size_kernel<int>, count_and_sort_expert_tokens_kernel<int>"),
    Rule(MOE_PERMUTE, KERNEL, r"radixSortKVInPlace|RadixSort|kernelHistogram1D|indexSelect(Small|Large)Index"
         r"|indexFunc(Small|Large)Index",
         "[h100] torch.argsort / bincount / index_select / index_add_: token permute and unpermute"),
    Rule(MOE_PERMUTE, KERNEL, r"_sum_bitmatrix_rows|_bitmatrix_metadata_compute|_ragged_tensor_metadata_compute"
         r"|^_reduce$",
         "[h200-2] triton_kernels' routing metadata (tokens per expert from the top-k bitmatrix, the ragged "
         "block schedule: what moe_align_block_size is to fused_moe) and its reduce.py _reduce: the sum over "
         "each token's top-k expert outputs and, where a matmul_ogs runs split-K (the decode GEMM "
         "_matmul_ogs_NNN_fp32xbf16xbf16_16x256x64x11), its split-K sum; the bare name only as the whole name"),
    Rule(MOE_PERMUTE, OP, r"moe_align|moe_sum|permute_|sort_expert|argsort|bincount|index_select|index_add",
         "_moe_C::moe_align_block_size, aten::argsort, aten::bincount, aten::index_select, aten::index_add_"),
    # ---- MoE expert GEMMs
    Rule(MOE_GEMM, KERNEL, r"fused_moe|_matmul_ogs_|GroupProblemShape|grouped_?gemm|group_?gemm|prepare_grouped_gemm"
         r"|cutlass_moe|moe_mm|m_grouped|marlin_moe|moe_wna16|MoeGemm|expert_gemm",
         "[sgl] fused_moe_kernel, _matmul_ogs_*; [h100] CUTLASS GemmUniversal<GroupProblemShape> of torch._grouped_mm"),
    Rule(MOE_GEMM, OP, r"fused_moe|fused_experts|_grouped_mm|moe_forward|moe_mm|cutlass_moe|MoE",
         "[doc] _C::cpu_fused_moe; vllm::moe_forward; [cpu] aten::_grouped_mm"),
    # ---- attention
    Rule(ATTENTION_META, KERNEL, r"create_flashinfer_kv_indices|get_num_kv_splits|kv_indices|num_kv_splits",
         "[h200] SGLang's create_flashinfer_kv_indices_triton, get_num_kv_splits_triton (the page table and "
         "split-KV plan of its attention backends)"),
    Rule(ATTENTION_META, KERNEL, r"_compute_slot_mapping|_fused_metadata_kernel",
         "[h200-2] vLLM's _compute_slot_mapping_kernel (each token's slot in the paged KV cache); SGLang FA3 "
         "backend's _fused_metadata_kernel_ps1_no_swa (cache_seqlens, cu_seqlens_k and page table of a decode "
         "batch, page size 1)"),
    Rule(ATTENTION, KERNEL, r"(?:^|\W)_fwd_(?:grouped_)?kernel",
         "[h200] SGLang's Triton attention: _fwd_kernel (extend, prefill), _fwd_grouped_kernel_stage1 and "
         "_fwd_kernel_stage2 (split-KV decode)"),
    Rule(ATTENTION, KERNEL, r"flash::|FlashAttn|flash_fwd|flash_attn|fmha|sdpa|attention|attn_|_attn|"
         r"BatchPrefillWith|BatchDecodeWith|SinglePrefillWith|MergeStates|flashmla|mla_decode|_mla_|"
         r"paged_attention|reshape_and_cache|set_kv_buffer|store_kvcache|fused_rope_store|lean_reduction",
         "[sgl] FlashAttnFwdSm90, FlashAttnFwdCombine, prepare_varlen_num_blocks; [h100] cuDNN "
         "cudnn_generated_fort_native_sdpa_*, cudnn::fusion::lean_reduction_kernel (cuDNN SDPA's split-KV reduce); "
         "FlashInfer Batch*With*KVCacheKernel; fused_rope_store_kernel writes the KV cache"),
    Rule(ATTENTION, OP, r"attention|attn|flash|sdpa|^sgl_kernel::fwd|_fa3_C|_fa2_C|flashinfer|paged_|mla|kv_cache"
         r"|slot_mapping|scheduler_metadata",
         "[doc] vllm::unified_attention_with_output; aten::scaled_dot_product_attention; _vllm_fa3_C::fwd; "
         "[vcpu] _C::cpu_attention_with_kv_cache, vllm::unified_kv_cache_update, _C::get_scheduler_metadata, "
         "_C::compute_slot_mapping_kernel_impl"),
    # ---- embedding (before the generic index/gather rules)
    Rule(EMBEDDING, KERNEL, r"embedding", "[h200] SGLang's _vocab_parallel_embedding_kernel (Triton)"),
    # ---- sampling (before GEMM/elementwise: argmax reductions and RNG kernels)
    Rule(SAMPLING, KERNEL, r"sampling|Sampling|multinomial|TopKTopP|TopPRenorm|TopKRenorm|top_p|ArgMaxOps"
         r"|distribution_elementwise|sampleMultinomial",
         "FlashInfer TopKTopPSamplingFromProbKernel; [h100] torch.multinomial's RNG and argmax"),
    Rule(SAMPLING, OP, r"multinomial|argmax|exponential_|sampl", "aten::multinomial, aten::argmax"),
    # ---- dense GEMM
    Rule(GEMM, KERNEL, r"nvjet|gemm|gemv|cublas|xmma|cutlass|s16816|s1688|wgmma|splitKreduce|matmul|sm90_|sm80_"
         r"|ampere_|hopper_|deep_gemm|Cijk_",
         "[h100][sgl] nvjet_sm90_tst_*, nvjet_tst_*, cublasLt::splitKreduce_kernel; cutlass/xmma GEMMs"),
    Rule(GEMM, OP, r"^aten::(mm|addmm|bmm|baddbmm|matmul|linear|_scaled_mm|addmv|mv|dot)$|onednn_mm|onednn_scaled_mm"
         r"|_C::.*(gemm|_mm)\b|scaled_mm|int8_gemm", "[doc] _C::onednn_mm; aten::mm/addmm/linear"),
    # ---- memory copies
    Rule(MEMCPY, KERNEL, r"^Memcpy|^Memset|memcpy|memset|direct_copy_kernel|CatArrayBatchedCopy|copy_kernel",
         "[h100] Memcpy HtoD/DtoH/DtoD, Memset (Device); direct_copy_kernel_cuda, CatArrayBatchedCopy"),
    Rule(MEMCPY, OP, r"^aten::(copy_|to|_to_copy|clone|_copy_from|_copy_from_and_resize|index_copy_?)$",
         "[cpu] aten::copy_, aten::to, aten::_to_copy"),
    # ---- norms and elementwise
    Rule(NORM_ELEMENTWISE, KERNEL, r"norm|elementwise|Functor|act_and_mul|silu|gelu|activation|rotary|rope|softmax"
         r"|SoftMax|reduce_kernel|fill|index_|gather|arange|quant|qknorm|triton_(poi|per|red)_|DeviceScan|scan|where|cat",
         "[h100] vectorized_layer_norm_kernel (rms_norm), elementwise_kernel, reduce_kernel, softmax_warp_forward; "
         "[sgl] FusedAddRMSNormKernel, act_and_mul_kernel, fused_qknorm_warp"),
    Rule(NORM_ELEMENTWISE, OP, rf"^aten::({_ATEN_ELEMENTWISE})$|rms_norm|layer_norm|silu_and_mul|act_and_mul|rotary",
         "[cpu] aten::rms_norm, aten::mul, aten::add, aten::silu, aten::softmax ..."),
    Rule(NORM_ELEMENTWISE, OP, r"CompiledFxGraph",
         "[vcpu] '## Call CompiledFxGraph ##': torch.compile's graph; its self time is Inductor's generated "
         "fused kernels (norms, activations, residual adds) between the ops it calls"),
    # ---- bookkeeping
    Rule(OTHER, KERNEL, r"_assert_async|assert", "[h100] _assert_async_cuda_kernel"),
    Rule(OTHER, KERNEL, r"compute_position_kernel|clamp_position_kernel",
         "[h200-2] SGLang's positions of a batch (compute_position_kernel for extend, "
         "clamp_position_kernel<long> in CUDA-graph decode): batch bookkeeping"),
    Rule(OTHER, OP, rf"^aten::({_ATEN_VIEWS})$|^cuda|^Optimizer|^profiler::",
         "[cpu] tensor views, allocation and scalar reads (aten::empty, aten::view, aten::item ...)"),
    Rule(OTHER, OP, r"Pregraph bytecode|AOTDispatcher|Torch-Compiled Region|TorchDynamo|CompiledFunction",
         "[vcpu] torch.compile's runtime wrappers ('Pregraph bytecode', 'AOTDispatcher Runtime Wrapper Prologue')"),
)

_COMPILED: Final = {
    kind: tuple((re.compile(r.pattern, re.IGNORECASE), r.category) for r in RULES if r.applies_to in (kind, ANY))
    for kind in (KERNEL, OP)
}


@lru_cache(maxsize=1 << 16)
def classify(name: str, kind: str = KERNEL) -> str:
    """The category of a kernel (``kind=KERNEL``) or host op (``kind=OP``) name; ``UNMATCHED`` if none."""
    for pattern, category in _COMPILED[kind]:
        if pattern.search(name):
            return category
    return UNMATCHED


def group_of(category: str) -> str:
    """The coarse group (moe, attention, gemm, communication, other, idle) of a category."""
    return _GROUP_OF.get(category, "other")
