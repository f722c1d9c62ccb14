"""moetrace predict: parts add up, collectives by hand, EP imbalance against enumeration and Monte Carlo,
the CLI's JSON keys, and every spec config of the six presets answers on both GPUs and engines."""

from __future__ import annotations

import json
import math
import random

import pytest
from click.testing import CliRunner

from moetrace.cli import main
from moetrace.matrix import parse_matrix
from moetrace.plan.arch import build_arch
from moetrace.plan.collectives import collectives_per_step, expected_max_hits, hits_distribution
from moetrace.plan.predict import predict
from moetrace.plan.predict_evidence import fixed_parts, load_evidence
from moetrace.presets import all_presets, get_preset

SIX = ("Qwen3-235B", "Qwen3-Coder-480B", "DeepSeek-V3.1", "MiniMax-M2", "Kimi-K2-Thinking", "GLM-4.6")


def test_the_parts_add_up():
    p = predict(get_preset("Qwen3-235B"), "TP8_EP2_auto", gpu="h200", engine="sglang")
    device = sum(q.ms for q in p.decode_parts if q.name != "step gap (host)")
    gap = next(q.ms for q in p.decode_parts if q.name == "step gap (host)")
    assert p.itl_ms == pytest.approx(device + gap)          # device-bound at full depth: the host floor does not bind
    assert p.ttft_ms == pytest.approx(sum(q.ms for q in p.prefill_parts))
    assert p.latency_s == pytest.approx((p.ttft_ms + (p.output_len - 1) * p.itl_ms) / 1e3)
    assert p.itl_band_ms[0] <= p.itl_ms <= p.itl_band_ms[1]
    assert p.ttft_band_ms[0] <= p.ttft_ms <= p.ttft_band_ms[1]
    layer = sum(p.decode_layer_us["moe"].values())
    assert p.decode_parts[0].ms == pytest.approx(94 * layer / 1e3)


def test_collective_bytes_by_hand_qwen3_tp8():
    a = build_arch(get_preset("Qwen3-235B").hf_config)
    calls = collectives_per_step(a, "vllm", 8, 1)
    per_layer = [c for c in calls if c.per_layer]
    assert [c.count for c in per_layer] == [94, 94]                  # two all-reduces a layer, 94 layers
    assert all(c.msg_bytes == 4096 * 2 == 8 * 1024 for c in per_layer)   # hidden 4096 x bf16 = 8 KiB
    assert all(c.algorithm == "vllm_oneshot" for c in per_layer)
    gather = next(c for c in calls if c.kind == "allgather")
    assert gather.msg_bytes == math.ceil(151936 / 8) * 2
    prefill = collectives_per_step(a, "sglang", 8, 4096)
    assert prefill[0].msg_bytes == 4096 * 4096 * 2 and prefill[0].algorithm == "nccl_ring"
    assert collectives_per_step(a, "vllm", 1, 1) == []


def test_minimax_adds_its_qk_norm_all_reduce():
    a = build_arch(get_preset("MiniMax-M2").hf_config)
    calls = collectives_per_step(a, "sglang", 8, 1)
    assert sum(c.count for c in calls if c.per_layer) == 3 * a.n_layers


@pytest.mark.parametrize("n,k,groups", [(8, 3, 2), (12, 4, 3), (16, 4, 4)])
def test_ep_imbalance_exact_against_enumeration(n, k, groups):
    from itertools import combinations
    size = n // groups
    total = acc = 0
    for chosen in combinations(range(n), k):
        counts = [0] * groups
        for e in chosen:
            counts[e // size] += 1
        acc += max(counts)
        total += 1
    assert expected_max_hits(n, k, groups) == pytest.approx(acc / total)
    assert sum(p for _, p in hits_distribution(n, k, groups)) == pytest.approx(1.0)


def test_ep_imbalance_against_monte_carlo_qwen3_shapes():
    rng = random.Random(1234)
    for groups in (2, 8):
        size = 128 // groups
        trials = 20000
        acc = 0
        for _ in range(trials):
            counts = [0] * groups
            for e in rng.sample(range(128), 8):
                counts[e // size] += 1
            acc += max(counts)
        assert expected_max_hits(128, 8, groups) == pytest.approx(acc / trials, rel=0.02)
    assert expected_max_hits(128, 8, 1) == 8
    assert 4 < expected_max_hits(128, 8, 2) < 5.5


def test_cli_json_keys():
    r = CliRunner().invoke(main, ["predict", "Qwen3-235B", "-c", "TP8_EP2_auto", "--gpu", "h100", "--engine", "vllm",
                                  "--input-len", "2048", "--output-len", "256", "--json"])
    assert r.exit_code == 0, r.output
    d = json.loads(r.output)
    for k in ("ttft_ms", "itl_ms", "latency_s", "decode_parts", "prefill_parts", "collectives", "itl_band_ms",
              "evidence", "rules", "verdict"):
        assert k in d
    assert d["input_len"] == 2048 and d["output_len"] == 256 and d["gpu"] == "h100"
    assert {q["kind"] for q in d["decode_parts"]} <= {"measured", "scaled", "modelled"}
    text = CliRunner().invoke(main, ["predict", "Qwen3-235B", "-c", "TP8_EP2_auto"]).output
    assert "ITL p50" in text and "band" in text and "evidence" in text
    bad = CliRunner().invoke(main, ["predict", "Qwen3-235B", "--input-len", "0"])
    assert bad.exit_code == 2 and "--input-len" in bad.output


def test_cli_reads_an_evidence_file(tmp_path):
    """--evidence: a file benchmarks/predict_evidence.py wrote (run 4's, before it is committed)."""
    ev = dict(load_evidence())
    ev["records"] = [r for r in ev["records"] if r["engine"] == "vllm"]
    path = tmp_path / "ev.json"
    path.write_text(json.dumps(ev))
    r = CliRunner().invoke(main, ["predict", "Qwen3-235B", "-c", "TP8_EP2_auto", "--engine", "sglang",
                                  "--evidence", str(path), "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["evidence"]["engine"] == "vllm"     # no SGLang record left: the engine rule


def test_context_length_moves_itl_and_ttft():
    pre = get_preset("DeepSeek-V3.1")
    short = predict(pre, "TP8_EP2_auto", input_len=1024, output_len=128)
    long = predict(pre, "TP8_EP2_auto", input_len=32768, output_len=128)
    assert long.itl_ms > short.itl_ms and long.ttft_ms > 4 * short.ttft_ms


def test_every_spec_config_answers():
    names = {p.name for p in all_presets()}
    assert set(SIX) <= names
    for m in SIX:
        pre = get_preset(m)
        for cfg in parse_matrix(pre.matrix):
            for gpu in ("h100", "h200"):
                for engine in ("sglang", "vllm"):
                    p = predict(pre, cfg, gpu=gpu, engine=engine)
                    if p.verdict == "will_not_fit":
                        assert p.itl_ms is None and "will not fit" in " ".join(p.notes)
                    else:
                        assert p.itl_ms > 0 and p.ttft_ms > 0 and p.latency_s > 0, (m, cfg.name, gpu, engine)
                        assert p.evidence["sources"] and p.rules


def test_shipped_evidence_names_its_sources():
    ev = load_evidence()
    assert ev["records"] and all(r["source"].startswith("tests/data/") for r in ev["records"])
    assert all("2026-12-06" in d["source"] for d in ev["depth_scans"])


def test_a_one_rank_record_of_the_config_is_used_as_measured():
    """Run 4's one-rank records: same model, engine, GPU, TP and EP -> the layers are measured, not scaled."""
    import copy
    ev = copy.deepcopy(load_evidence())
    rec = next(r for r in ev["records"] if (r["model"], r["engine"], r["gpu"], r["tp"]) == ("Qwen3-235B", "vllm", "h200", 1))
    one_rank = copy.deepcopy(rec)
    one_rank.update(config="TP8_EP2_auto", tp=8, ep=2, source="tests/data/gpu-4/synthetic.json", shape={},
                    one_rank={"moe_ep": 8, "moe_tp": 1, "top_k": [8, 1]})     # vLLM: EP over the TP group
    one_rank["stages"]["decode"]["layer_moe_us"] = {"attention": 15.0, "moe": 40.0, "gemm": 25.0, "communication": 0.0,
                                                    "other": 9.0}
    ev["records"].append(one_rank)
    p = predict(get_preset("Qwen3-235B"), "TP8_EP2_auto", gpu="h200", engine="vllm", evidence=ev)
    assert p.evidence["how"] == "measured" and p.evidence["sources"] == ["tests/data/gpu-4/synthetic.json"]
    assert p.decode_parts[0].kind == "measured"
    lay = p.decode_layer_us["moe"]
    f_moe = fixed_parts("vllm", "h200", ev)[0]["moe"]
    # the rank computed 1 local expert (variants.py); the busiest of 8 EP ranks computes E_max = 2.53
    assert lay["moe"] == pytest.approx(f_moe + (40.0 - f_moe) * expected_max_hits(128, 8, 8), rel=1e-6)
    assert lay["gemm"] == pytest.approx(25.0) and lay["other"] == pytest.approx(9.0)   # vLLM EP8: moe_tp 1, shared none
    assert lay["attention"] == pytest.approx(15.0, rel=0.01)        # same context as the record: the KV term cancels
    assert any(q.kind == "modelled" for q in p.decode_parts)        # collectives stay modelled


def test_held_out_depth_scan_is_predicted_within_five_percent():
    """The H100 depth scan (Qwen3-235B, 10-14 layers) from the H200 slices alone (docs/predict.md, section 8)."""
    import copy
    import dataclasses
    ev = copy.deepcopy(load_evidence())
    scan = next(d for d in ev["depth_scans"] if d["model"] == "Qwen3-235B")
    ev["depth_scans"] = []
    pre = get_preset("Qwen3-235B")
    for n, itl in zip(scan["depths"], scan["itl_p50_ms"]):
        if n < 10:
            continue
        p = predict(dataclasses.replace(pre, hf_config={**pre.hf_config, "num_hidden_layers": n}), "TP1_auto",
                    gpu="h100", engine="vllm", evidence=ev)
        assert p.itl_ms == pytest.approx(itl, rel=0.05)


def test_the_builder_reads_a_one_rank_record_as_the_config_it_stands_for():
    """benchmarks/predict_evidence.py: a variant record (main's variants.py) names the rank it stands for."""
    import importlib.util
    from pathlib import Path
    path = Path(__file__).resolve().parents[2] / "benchmarks" / "predict_evidence.py"
    spec = importlib.util.spec_from_file_location("predict_evidence_builder", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    e = {"model": "Qwen3-235B (dummy weights, 1 rank of TP8_EP2_auto)", "config": "TP1_auto", "tp": 1, "ep": 1,
         "shape": {}}
    rec = {"config": "TP1_auto", "options": {"routing": "balanced"},
           "model_detail": {"of": "Qwen3-235B", "weights": "dummy", "layers": [94, 94], "left_out": ["collectives"],
                            "one_rank": {"stands_for": "TP8_EP2_auto", "tp": 8, "ep": 2, "moe_ep": 2, "moe_tp": 4,
                                         "top_k": [8, 4], "shared_expert_extra_params": 0}}}
    mod._variant(e, rec)
    assert (e["model"], e["config"], e["tp"], e["ep"], e["run_config"]) == ("Qwen3-235B", "TP8_EP2_auto", 8, 2, "TP1_auto")
    assert e["one_rank"]["top_k"] == [8, 4] and e["routing"] == "balanced" and e["shape"] == {"layers": [94, 94]}


def test_triton_attention_is_predicted_from_the_measured_pair():
    """--attention-backend triton scales the attention group by the default/Triton pair SGLang ran on one H200
    (runs 2-3: FA3 and Triton on the Qwen3-235B slice); the other groups do not move, and the rule says so."""
    qwen = get_preset("Qwen3-235B")
    dflt = predict(qwen, "TP8_EP2_auto", gpu="h200", engine="sglang")
    trit = predict(qwen, "TP8_EP2_auto", gpu="h200", engine="sglang", attention_backend="triton")
    ratio = trit.decode_layer_us["moe"]["attention"] / dflt.decode_layer_us["moe"]["attention"]
    assert 2.0 < ratio < 4.0  # FA3 decode attention ~a third of Triton's on that pair
    for g in ("moe", "gemm", "other"):
        assert trit.decode_layer_us["moe"][g] == pytest.approx(dflt.decode_layer_us["moe"][g])
    assert trit.itl_ms > dflt.itl_ms
    assert any(r.startswith("attention backend rule: triton") for r in trit.rules)
    assert not any(r.startswith("attention backend rule") for r in dflt.rules)
    res = CliRunner().invoke(main, ["predict", "Qwen3-235B", "-c", "TP8_EP2_auto", "--attention-backend", "triton",
                                    "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["itl_ms"] == pytest.approx(trit.itl_ms, abs=1e-4)  # --json rounds to 4 places


def test_predict_accepts_the_configs_run_accepts():
    """`TP8_fp8` names a MoE backend called fp8, which no engine has: `run` refuses it, so `predict` does too, rather
    than answer for BF16 weights (FP8 is `TP8_fp8_auto`)."""
    res = CliRunner().invoke(main, ["predict", "GLM-4.6", "-c", "TP8_fp8", "--engine", "sglang"])
    assert res.exit_code != 0 and "MoE backend 'fp8' is not accepted by sglang" in res.output
    res = CliRunner().invoke(main, ["predict", "GLM-4.6", "-c", "TP8_fp8_auto", "--engine", "sglang"])
    assert res.exit_code == 0 and "TP8_fp8_auto" in res.output


def test_triton_attention_is_sglangs_only():
    res = CliRunner().invoke(main, ["predict", "Qwen3-235B", "-c", "TP8_EP2_auto", "--engine", "vllm",
                                    "--attention-backend", "triton"])
    assert res.exit_code != 0 and "SGLang's" in res.output
    with pytest.raises(ValueError, match="attention_backend"):
        predict(get_preset("Qwen3-235B"), "TP8_EP2_auto", attention_backend="flashinfer")
