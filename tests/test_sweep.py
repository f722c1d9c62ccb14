"""Resuming a sweep: which configs plan_jobs keeps, and fallbacks run only after a failure."""

from __future__ import annotations

from moetrace.matrix import parse_matrix
from moetrace.presets import get_preset
from moetrace.runner import RunOptions
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
