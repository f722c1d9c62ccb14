"""Resuming a sweep: which configs plan_jobs keeps, and fallbacks run only after a failure."""

from __future__ import annotations

from moetrace.matrix import parse_matrix
from moetrace.presets import get_preset
from moetrace.attempt import RunOptions
from moetrace.sweep import plan_jobs


def _rec(key: str, status: str) -> dict:
    model, _, config = key.partition("::")
    r = {"model": model, "config": config, "key": key, "status": status,
         "workload": {"batch_size": 1, "input_len": 4096, "output_len": 512}, "metrics": {"latency_s": 1.0}}
    if status == "failure":
        r["error"] = {"type": "OOM", "message": "m"}
    return r


def _names(jobs):
    return [j.config.name for j in jobs]


def test_skip_succeeded_and_only_failed(store):
    p = get_preset("GLM-4.6")
    configs = parse_matrix([(8, 2, ["auto", "triton"]), (4, 1, ["auto"])])
    store.commit(_rec("GLM-4.6::TP8_EP2_auto", "success"))
    store.commit(_rec("GLM-4.6::TP8_EP2_triton", "failure"))
    notes: list[str] = []
    opts = RunOptions(device="cpu")
    assert _names(plan_jobs([(p, configs)], opts, store, note=notes.append)) == \
        ["TP8_EP2_auto", "TP8_EP2_triton", "TP4_auto"]
    jobs = plan_jobs([(p, configs)], opts, store, skip_succeeded=True, note=notes.append)
    assert _names(jobs) == ["TP8_EP2_triton", "TP4_auto"] and [j.index for j in jobs] == [1, 2]
    assert _names(plan_jobs([(p, configs)], opts, store, only_failed=True, note=notes.append)) == ["TP8_EP2_triton"]
    assert any("already succeeded" in n for n in notes) and any("not in failures" in n for n in notes)


def test_a_different_workload_is_not_the_spec_key(store):
    p = get_preset("GLM-4.6")
    configs = parse_matrix([(8, 2, ["auto"])])
    store.commit(_rec("GLM-4.6::TP8_EP2_auto", "success"))
    opts = RunOptions(device="cpu", batch_sizes=(8,))
    assert _names(plan_jobs([(p, configs)], opts, store, skip_succeeded=True, note=lambda s: None)) == ["TP8_EP2_auto"]


def test_gpu_plan_attached_when_a_gpu_type_is_given(store):
    p = get_preset("DeepSeek-V3.1")
    jobs = plan_jobs([(p, parse_matrix(p.matrix))], RunOptions(gpu="h200"), store, note=lambda s: None)
    verdicts = {j.config.name: j.plan["verdict"] for j in jobs}
    assert verdicts["TP4_auto"] == "will_not_fit" and verdicts["TP8_EP2_auto"] == "fits"


def test_the_plan_uses_the_fraction_the_engine_is_given():
    """Issue 11 §4: with --engine-arg=--gpu-memory-utilization=0.5 the plan used vLLM's default 0.9."""
    from moetrace.sweep import plan_for
    p = get_preset("Qwen3-235B")
    (c,) = parse_matrix([(8, 2, ["auto"])])

    def fraction(engine, extra=(), mem_fraction=None):
        opts = RunOptions(engine=engine, gpu="h200", extra_args=tuple(extra), mem_fraction=mem_fraction)
        return plan_for(p, c, opts)["mem_fraction"]

    assert fraction("vllm") == 0.9
    # --engine-arg=--gpu-memory-utilization=0.5 and --engine-arg '--gpu-memory-utilization 0.5', split by the CLI
    assert fraction("vllm", ["--gpu-memory-utilization", "0.5"]) == 0.5
    assert fraction("vllm", ["--gpu-memory-utilization=0.5"]) == 0.5
    assert fraction("vllm", ["--gpu_memory_utilization", "0.45"]) == 0.45
    assert fraction("sglang", ["--mem-fraction-static", "0.8", "--load-format", "dummy"]) == 0.8
    assert fraction("sglang", ["--gpu-memory-utilization", "0.5"]) != 0.5  # another engine's flag
    assert fraction("sglang", mem_fraction=0.85) == 0.85
    # both: the engine argument comes last in the command, so the engine (and the plan) takes it
    assert fraction("sglang", ["--mem-fraction-static", "0.8"], mem_fraction=0.85) == 0.8
