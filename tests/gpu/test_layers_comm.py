"""Per-layer and communication answers on the real traces: vLLM 0.25.0 and SGLang 0.5.17 on H200
(tests/data/gpu/, real-width slices of 1-2 layers) and the H100 PyTorch MoE decoder (4 layers,
tests/data/traces/gpu/). The layer counts are checked against each slice's config.json."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from moetrace.traces.analyze import analyze_trace, analyze_traces
from moetrace.traces.report import format_summary
from moetrace.traces.layers import split_wait

ROOT = Path(__file__).resolve().parents[1] / "data"
GPU = ROOT / "gpu"
H100 = ROOT / "traces" / "gpu"
SLICES = {"Qwen3-235B-slice": "qwen3-235b", "Qwen3-Coder-480B-slice": "qwen3-coder-480b", "GLM-4.6-slice": "glm-4.6",
          "MiniMax-M2-slice": "minimax-m2", "Kimi-K2-Thinking-slice": "kimi-k2-thinking"}
H200_TRACES = sorted(GPU.glob("results/attempts/*/traces/*__rank*.trace.json.gz"))
TP2 = sorted({p.parent for p in H200_TRACES if "TP2" in p.name})


def _config(trace: Path) -> dict:
    return json.loads((GPU / "slices" / SLICES[trace.name.split("__")[0]] / "config.json").read_text())


def _dense_layers(cfg: dict) -> int:
    return int(cfg.get("first_k_dense_replace", 0))


@pytest.mark.parametrize("trace", H200_TRACES, ids=lambda p: f"{p.parent.parent.name[-6:]}-{p.name.split('.')[0]}")
def test_layers_per_step_match_the_slice_config(trace):
    cfg = _config(trace)
    s = analyze_trace(trace)
    stage = s.stage
    stats = s.layers[stage]
    assert stats.layers_per_step == cfg["num_hidden_layers"]
    assert set(stats.layer_counts) == {cfg["num_hidden_layers"]}  # every step, not only most
    kinds = [r.kind for r in stats.rows]
    dense = _dense_layers(cfg)
    assert kinds == ["dense"] * dense + ["moe"] * (cfg["num_hidden_layers"] - dense)
    for r in stats.rows:
        assert r.group_us["attention"] > 0
        assert (r.group_us["moe"] > 0) == (r.kind == "moe")
        assert r.span_us > 0  # kernel time may exceed it: vLLM runs GLM's shared expert on a second stream
    assert sum(r.span_us for r in stats.rows) <= s.stages[stage].steps.mean_us
    # the layers plus what lies outside them are the step's kernel time
    in_layers = sum(sum(r.group_us.values()) for r in stats.rows) + sum(stats.outside.group_us.values())
    busy = sum(v for k, v in s.stages[stage].category_us.items() if k != "idle") / stats.steps
    assert in_layers <= busy * 1.001
    assert in_layers >= 0.9 * busy


@pytest.mark.parametrize("trace", sorted(H100.glob("*/*.trace.json.gz")), ids=lambda p: p.name[:40])
def test_h100_decoder_has_four_moe_layers(trace):
    s = analyze_trace(trace)
    for stats in s.layers.values():
        assert stats.layers_per_step == 4
        assert [r.kind for r in stats.rows] == ["moe"] * 4
        assert stats.mean.group_us["moe"] > stats.mean.group_us["attention"]


def test_layer_table_and_comm_line_are_printed():
    d = next(p for p in TP2 if "TP2_auto" in str(p) and "052907" in str(p))
    text = format_summary(analyze_traces(sorted(d.glob("*decode__rank*"))))
    assert "| layer | kind | span | attention | moe | gemm | communication | other |" in text
    assert "decode collectives: 42 calls in 7 steps" in text
    assert "rank 1 held the others back in 7 of 7 steps" in text


@pytest.mark.parametrize("folder", TP2, ids=lambda p: p.parent.name[-20:])
@pytest.mark.parametrize("stage", ["extend", "decode"])
def test_tp2_wait_is_split_from_transfer(folder, stage):
    paths = sorted(folder.glob(f"*__{stage}__rank*"))
    assert len(paths) == 2
    m = analyze_traces(paths)
    (g,) = [g for g in m.groups if g.stage == stage.upper()]
    w = g.wait
    assert w is not None and w.ranks == [0, 1]
    comm = [t.comm[g.stage] for t in m.traces]
    assert comm[0].calls == comm[1].calls == w.matched_calls  # same calls on both ranks, in the same order
    # transfer is the same on both ranks (the shorter of each pair), wait + transfer = time in collectives
    assert w.transfer_us[0] == pytest.approx(w.transfer_us[1])
    for r in range(2):
        assert w.wait_us[r] + w.transfer_us[r] == pytest.approx(comm[r].total_us, rel=1e-3, abs=0.1)
        assert 0 <= comm[r].overlapped_us <= comm[r].total_us
    # rank 0 waits (host-bound rank 1 arrives last): the one that holds the others back is rank 1
    assert w.wait_us[0] > 5 * w.wait_us[1]
    assert g.bottleneck_rank == 1
    assert max(w.held_steps, key=w.held_steps.get) == 1
    # an all-reduce of a few KB on NVLink: microseconds a call, not the hundreds the waiting rank shows
    assert w.transfer_us[0] / w.matched_calls < 150.0
    assert all(us >= 0 for _, _, us in w.steps)


def test_vllm_tp2_decode_figures():
    """vLLM 0.25.0, Qwen3-235B slice, TP2: rank 0 spends 13.6 ms of 7 decode steps waiting for rank 1
    inside 42 collectives whose transfer is 0.18 ms."""
    d = next(p for p in TP2 if "052907" in str(p))
    g = next(g for g in analyze_traces(sorted(d.glob("*decode__rank*"))).groups if g.stage == "DECODE")
    assert g.wait.matched_calls == 42
    assert g.wait.wait_us[0] == pytest.approx(13598, rel=0.01)
    assert g.wait.transfer_us[0] == pytest.approx(179, rel=0.02)
    assert g.wait.held_steps == {1: 7}


def test_h100_tp2_wait_split():
    m = analyze_traces(sorted((H100 / "tp2_sglang").glob("*.trace.json.gz")))
    for g in m.groups:
        assert g.wait is not None and g.bottleneck_rank == 1
        assert g.wait.wait_us[0] > 100 * g.wait.transfer_us[0]


def test_split_wait_by_order():
    # two steps; rank 1 arrives last in step 0, rank 0 in step 1
    w = split_wait([0, 1], [[[10.0, 3.0], [2.0]], [[2.0, 3.0], [9.0]]])
    assert w.matched_calls == 3
    assert w.transfer_us == [7.0, 7.0]
    assert w.wait_us == [8.0, 7.0]
    assert w.steps == [(0, 1, 8.0), (1, 0, 7.0)]
    assert w.held_steps == {1: 1, 0: 1}
    assert split_wait([0], [[[1.0]]]) is None
