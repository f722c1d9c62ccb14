"""Run 4, kept as evidence (tests/data/gpu-4/, README there): one rank of the spec's TP8_EP2_auto at full
depth on one NVIDIA H100 with vLLM 0.25.0's dummy loader (`moetrace run ... --weights dummy --one-rank
--routing balanced`, benchmarks/gpu/ranks.py), the spec's expected OOMs as real engine OOMs, and a depth
scan of one rank. These tests read the records, server logs, traces and telemetry as they came back;
nothing here was written by hand. No GPU is needed."""

from __future__ import annotations

import copy
import csv
import json
from pathlib import Path

import pytest

from moetrace.plan.predict import predict
from moetrace.plan.predict_evidence import load_evidence
from moetrace.presets import get_preset
from moetrace.results.classify import classify
from moetrace.results.flat import failure_entry, success_entry
from moetrace.results.record import Record
from moetrace.traces.analyze import analyze_trace

from .test_gpu_evidence import _log, assert_traces_named

DATA = Path(__file__).resolve().parents[1] / "data" / "gpu-4"
RECORDS = [(results, json.loads(p.read_text()))   # the queue's three results directories (benchmarks/gpu/ranks.py)
           for results in (DATA / "results-vllm", DATA / "results-vllm" / "oom", DATA / "results-vllm" / "router")
           for p in sorted((results / "records").glob("*.json"))]
SUCCESSES = [(r, rec) for r, rec in RECORDS if rec["status"] == "success"]
FAILURES = [(r, rec) for r, rec in RECORDS if rec["status"] == "failure"]
H100 = "NVIDIA H100 80GB HBM3"


def _id(item: tuple[Path, dict]) -> str:
    r, rec = item
    return f"{r.name}-{rec['model']}-{rec['seq']}"


def _stands(rec: dict) -> tuple[str, str, int]:
    md = rec["model_detail"]
    return md["of"], md["one_rank"]["stands_for"], md["layers"][0]


def test_the_evidence_is_all_there():
    """4 measured ranks (Qwen3-235B at 94, 24 and 48 layers, MiniMax-M2) and the model-router arm; 4 ranks
    the planner kept off an H100; 4 of the spec's OOMs as real engine OOMs (README of tests/data/gpu-4)."""
    got = sorted((r.name, *_stands(rec)) for r, rec in SUCCESSES)
    assert got == sorted([("results-vllm", "Qwen3-235B", "TP8_EP2_auto", n) for n in (94, 24, 48)]
                         + [("results-vllm", "MiniMax-M2", "TP8_EP2_auto", 62),
                            ("router", "Qwen3-235B", "TP8_EP2_auto", 94)])
    got = sorted((r.name, *_stands(rec)[:2], rec["error"]["type"], rec["error"]["phase"]) for r, rec in FAILURES)
    assert got == sorted([("results-vllm", m, "TP8_EP2_auto", "OOM", "plan")
                          for m in ("DeepSeek-V3.1", "Kimi-K2-Thinking", "GLM-4.6", "Qwen3-Coder-480B")]
                         + [("oom", m, c, "OOM", "launch") for m, c in (
                             ("MiniMax-M2", "TP1_auto"), ("DeepSeek-V3.1", "TP4_auto"),
                             ("Qwen3-Coder-480B", "TP4_auto"), ("Kimi-K2-Thinking", "TP1_auto"))])


@pytest.mark.parametrize("item", RECORDS, ids=_id)
def test_every_record_says_engine_gpu_command_and_what_it_stands_for(item):
    results, rec = item
    assert all(g["name"] == H100 and g["driver"] == "580.159.04" for g in rec["host"]["gpus"])
    md = rec["model_detail"]
    assert md["weights"] == "dummy" and md["one_rank"]["tp"] >= 1 and md["left_out"]
    assert rec["model"].startswith(f"{md['of']} (dummy weights") and md["one_rank"]["stands_for"] in rec["model"]
    assert rec["config"] == "TP1_auto"   # a rank runs at TP1 the shapes of the config it stands for
    if rec["status"] == "failure" and rec["error"]["phase"] == "plan":
        assert "predicted" in rec["error"]["message"] and "H100" in rec["error"]["message"]
        return
    cmd = rec["engine"]["command"]
    assert cmd[0] == "/tmp/engines/vllm-0_25_0/bin/python" and cmd[cmd.index("--load-format") + 1] == "dummy"
    assert cmd[cmd.index("--tensor-parallel-size") + 1] == "1"
    assert _log(results, rec).splitlines()[0] == "$ " + " ".join(cmd)
    assert rec["engine"]["version"] == "0.25.0"
    # the engines' own uniform routing (docs/ranks.md): the model-router arm leaves it off
    routed = rec["engine"]["env"].get("VLLM_MOE_ROUTING_SIMULATION_STRATEGY")
    assert routed == (None if results.name == "router" else "uniform_random")


@pytest.mark.parametrize("item", SUCCESSES, ids=_id)
def test_every_measured_rank_carries_its_gpu_telemetry(item):
    """Issue 23: the GPU's clocks and power beside each measured run (NVML on the node), none throttled."""
    results, rec = item
    t = rec["telemetry"]
    assert t["source"] == "nvml" and t["runs_sampled"] == rec["options"]["repeat"] == 3
    assert t["throttled_runs"] == [] and not t["why"]
    assert 1000 < min(t["sm_clock_mhz"]) <= max(t["sm_clock_mhz"]) < 2100 and 50 < min(t["power_w"]) < 700
    rows = list(csv.DictReader((results / t["samples_path"]).open()))
    assert len(rows) >= 3


@pytest.mark.parametrize("item", SUCCESSES, ids=_id)
def test_every_rank_trace_names_attention_and_moe(item):
    assert_traces_named(*item, gpu=H100)


@pytest.mark.parametrize("item", [x for x in FAILURES if x[1]["error"]["phase"] == "launch"], ids=_id)
def test_the_spec_ooms_are_real_engine_ooms_the_planner_foresaw(item):
    """The load of a rank too big for 80 GB fails in vLLM's own words, classified OOM from the real log; the
    planner had said so (`--no-skip-predicted` launched it anyway)."""
    results, rec = item
    log = _log(results, rec)
    assert "Failed to load model - not enough GPU memory" in log and "CUDA out of memory" in log
    assert classify(log_text=log, phase="launch").error_type == "OOM"
    assert rec["plan"]["verdict"] == "will_not_fit"


def test_a_ranks_layer_time_does_not_move_with_depth():
    """The analyzer splits the same decode layer out of the 24-, 48- and 94-layer runs of one rank."""
    rows = {}
    for results, rec in SUCCESSES:
        if results.name == "results-vllm" and rec["model_detail"]["of"] == "Qwen3-235B":
            (f,) = [results / p for p in rec["profile"]["decode_all"] if "__rank0" in p]
            s = analyze_trace(f)
            rows[rec["model_detail"]["layers"][0]] = rec["profile"]["step_times"]["decode"]["busy_ms"]
            assert s.has_device
    per_layer = {n: busy / n for n, busy in rows.items()}
    assert sorted(per_layer) == [24, 48, 94]
    assert max(per_layer.values()) / min(per_layer.values()) < 1.1, per_layer


def _held(drop_model: str | None = None) -> dict:
    ev = copy.deepcopy(load_evidence())
    ev["records"] = [r for r in ev["records"]
                     if not (r.get("one_rank") and (drop_model is None or r["model"] == drop_model))]
    return ev


def test_the_shipped_evidence_holds_the_ranks():
    srcs = {r["source"] for r in load_evidence()["records"] if r.get("one_rank")}
    assert srcs == {f"tests/data/gpu-4/results-vllm/records/0000000{i}.json" for i in (1, 2, 7, 8)}


@pytest.mark.parametrize("model,layers", [("Qwen3-235B", 94), ("MiniMax-M2", 62)])
def test_a_full_depth_rank_is_predicted_from_the_slices_and_the_other_rank(model, layers):
    """Held out: the rank's layer from the 2-layer H200 slices alone, within 5%; its ITL p50 with the kernel gaps
    of the other model's rank, within 10% (docs/predict.md, section 8)."""
    (rec,) = [r for r in load_evidence()["records"]
              if r.get("one_rank") and r["model"] == model and r["shape"]["layers"][0] == layers]
    measured = sum(v for g, v in rec["stages"]["decode"]["layer_moe_us"].items() if g != "communication")
    p = predict(get_preset(model), "TP8_EP2_auto", gpu="h100", engine="vllm", evidence=_held(), as_one_rank=True)
    assert abs(sum(p.decode_layer_us["moe"].values()) / measured - 1) < 0.05
    assert p.evidence["sources"] and not any("gpu-4" in s for s in p.evidence["sources"])
    q = predict(get_preset(model), "TP8_EP2_auto", gpu="h100", engine="vllm", evidence=_held(model), as_one_rank=True)
    assert any("kernel gaps" in r and "one-rank records" in r for r in q.rules)
    assert abs(q.itl_ms / rec["metrics"]["itl_p50_ms"] - 1) < 0.10


def test_a_measured_rank_is_the_base_of_its_config_and_adds_what_it_left_out():
    p = predict(get_preset("Qwen3-235B"), "TP8_EP2_auto", gpu="h100", engine="vllm")
    assert p.evidence["how"] == "measured" and all("gpu-4" in s for s in p.evidence["sources"])
    names = [x.name for x in p.decode_parts]
    assert any("all-reduce" in n for n in names) and "idle between kernels (small shards)" in names
    assert p.itl_band_ms[0] <= p.itl_ms <= p.itl_band_ms[1] and p.itl_band_ms[1] > p.itl_ms
    # the busiest of 8 EP ranks reads 2.53 experts a token where the measured rank read 1
    assert p.decode_layer_us["moe"]["moe"] > load_evidence_moe("Qwen3-235B") * 1.3


def load_evidence_moe(model: str) -> float:
    (rec,) = [r for r in load_evidence()["records"]
              if r.get("one_rank") and r["model"] == model and r["shape"]["layers"][0] == r["shape"]["layers"][1]]
    return rec["stages"]["decode"]["layer_moe_us"]["moe"]


@pytest.mark.parametrize("results", sorted({r for r, _ in RECORDS}), ids=lambda p: p.name)
def test_the_views_the_node_wrote_are_the_records_flattened_today(results):
    """success_results.json / failure_results.json as the store wrote them on the node: each entry is what
    today's one flattening (results/flat.py) makes of the record it names."""
    seen = 0
    for view, make in (("success_results.json", success_entry), ("failure_results.json", failure_entry)):
        for key, entry in json.loads((results / view).read_text()).items():
            rec = Record.from_dict(json.loads((results / entry["record"]).read_text()))
            assert rec.key == key and json.dumps(make(rec)) == json.dumps(entry), (view, key)
            seen += 1
    assert seen == len({rec["key"] for r, rec in RECORDS if r == results})   # one entry a key, none lost


def test_the_queue_logged_each_entry():
    done = [json.loads(line) for line in (DATA / "done.jsonl").read_text().splitlines()]
    assert [d["entry"] for d in done][:2] == ["vllm-Qwen3-235B-TP8_EP2_auto", "vllm-MiniMax-M2-TP1_auto-oom"]
    assert {d["exit"] for d in done if d["entry"].endswith("-oom")} == {3}   # moetrace's exit code for failures
    assert "NVIDIA H100 80GB HBM3" in (DATA / "node-facts.txt").read_text()
