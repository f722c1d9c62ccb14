"""``--weights dummy --one-rank`` on a real engine: the vLLM CPU build serves one rank of the tiny Qwen3's
TP2_EP2 config, shaped by moetrace, with vLLM's own dummy loader (``--load-format dummy``: no weight file is
read, none is written). The same code path as the GPU runs of the real models' ranks (tests/data/gpu-4)."""

from __future__ import annotations

import json

import pytest

from tests.conftest import moetrace, require_engine

pytestmark = pytest.mark.engine


def test_one_rank_with_dummy_weights_runs_and_says_what_it_stands_for(tiny_dir, tmp_path):
    require_engine()
    results = tmp_path / "results"
    cp = moetrace("run", "Qwen3-235B", "--tiny", "--tiny-dir", str(tiny_dir), "-c", "TP2_EP2_auto", "--weights",
                  "dummy", "--one-rank", "--engine", "vllm", "--results", str(results), "--input-len", "64",
                  "--output-len", "16", "--max-model-len", "8192", "--profile-steps", "2",
                  "--engine-arg=--gpu-memory-utilization=0.15", cwd=tmp_path)
    assert cp.returncode == 0, cp.stdout + cp.stderr
    (key, entry), = json.loads((results / "success_results.json").read_text()).items()
    assert key == "Qwen3-235B-tiny (dummy weights, 1 rank of TP2_EP2_auto)::TP1_auto::bs1_in64_out16"  # never a real model's key
    rec = json.loads(next((results / "records").glob("*.json")).read_text())
    detail = rec["model_detail"]
    assert detail["weights"] == "dummy" and detail["one_rank"]["stands_for"] == "TP2_EP2_auto"
    assert detail["one_rank"]["routed_experts"] == [16, 8] and detail["one_rank"]["top_k"] == [4, 2]  # vLLM: EP = TP
    assert any("collectives" in x for x in detail["left_out"])
    cmd = rec["engine"]["command"]
    assert cmd[cmd.index("--load-format") + 1] == "dummy" and cmd[cmd.index("--tensor-parallel-size") + 1] == "1"
    model_dir = tmp_path / ".cache/variants/qwen3-235b-tiny-dummy-full-TP2_EP2_auto-vllm"
    assert not list(model_dir.glob("*.safetensors"))  # the engine made its weights itself
    assert json.loads((model_dir / "config.json").read_text())["num_experts"] == 8
    assert "Loading weights took" in (results / rec["log_path"]).read_text() or "dummy" in (results / rec["log_path"]).read_text()
    assert rec["profile"]["extend"] and rec["profile"]["decode"]
