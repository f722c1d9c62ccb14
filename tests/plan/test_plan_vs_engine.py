"""The planner's memory figures against a real engine (issue 5, section 4).

For every successful TP1 attempt of the ``cpu_sweep`` fixture (vLLM CPU 0.32 serving the tiny
Qwen3-235B and DeepSeek-V3.1 checkpoints), three figures of the weights are printed side by side:

* the planner's: ``plan_config(preset, "TP1_auto", engine="vllm").weights_per_gpu_bytes`` (equal to
  ``moetrace.plan.evidence.predict_weights`` in the checkpoint's dtype, bf16 here);
* the safetensors headers' exact byte count of the tensors the server loaded;
* what the server's own log states. vLLM's CPU build prints no ``Model loading took X GiB`` line
  (only the GPU model runner does); the one model-size figure in its log is
  ``Filesystem type for checkpoints: EXT4. Checkpoint size: 0.01 GiB. Available RAM: ...``,
  the size of the files it loads, printed ``%.2f``.

Bounds, and why:

* planner vs safetensors: **0 bytes**. Both are exact counts of the same tensors (the planner from
  the config, the headers from the file), so any difference at all is a tensor the planner
  misses or invents, or a wrong dtype: there is no rounding to allow for.
* planner vs log: **the log's own rounding**, 0.005 GiB (5.1 MiB) either way of the printed
  figure, after adding the files' header bytes (the log sums file sizes). This is all the log
  can confirm: on checkpoints of 11-18 MiB that is a band of about +-30-45%, and the % error
  printed against the rounded figure is mostly that rounding (docs/planner-proof.md).
* KV cache bytes per token, planner vs log (``Auto set (X/Y) GiB for KV cache`` over the exact
  ``CPU KV cache size: N tokens``): the predicted figure must lie in the interval that the
  rounding of X allows (about +-0.2-0.5% here). A second, finer, engine-computed figure.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from moetrace.plan import plan_config
from moetrace.plan.evidence import (
    GIB,
    compare_checkpoint,
    format_comparison_table,
    parse_kv_cache,
    parse_model_memory,
    predict_weights,
    safetensors_bytes,
)
from moetrace.presets import get_preset, preset_from_checkpoint

# Copied from a real run: vLLM CPU 0.32.0 serving the tiny Qwen3-235B (`moetrace sweep --tiny
# Qwen3-235B ... -c TP1_auto --engine-arg=--gpu-memory-utilization=0.15 --max-model-len 8192`),
# 2026-11-26, attempt 20261126T222925-Qwen3-235B-tiny-TP1_auto-aba23b, server.log.
REAL_QWEN3_TINY_LOG = """\
(Worker pid=27240) INFO 11-26 22:30:50 [weight_utils.py:1108] Filesystem type for checkpoints: EXT4. Checkpoint size: 0.01 GiB. Available RAM: 14.70 GiB.
(EngineCore pid=26940) INFO 11-26 22:30:59 [utils.py:347] Using LBHNC KV cache layout.
(Worker pid=27240) INFO 11-26 22:32:29 [cpu_worker.py:260] Auto set (2.22/21.09) GiB for KV cache on node 0, with 2.96 GiB requested memory for the worker. 0.74 GiB memory was consumed by non-kv usages.
(EngineCore pid=26940) INFO 11-26 22:32:29 [kv_cache_utils.py:2327] CPU KV cache size: 2,325,376 tokens, Maximum concurrency for 8,192 tokens per request: 283.86x
"""


def test_parser_reads_the_real_cpu_log_lines():
    m = parse_model_memory(REAL_QWEN3_TINY_LOG)
    assert m is not None and m.kind == "checkpoint_size"
    assert m.gib == 0.01 and m.resolution_gib == 0.005
    assert m.line.startswith("(Worker pid=27240) INFO") and m.line.endswith("Available RAM: 14.70 GiB.")
    kv = parse_kv_cache(REAL_QWEN3_TINY_LOG)
    assert kv is not None and (kv.gib, kv.tokens) == (2.22, 2_325_376)
    lo, hi = kv.bytes_per_token_range
    assert lo < 1024 < hi       # tiny Qwen3: 2 layers x 2 KV heads x (64 + 64) x 2 bytes
    assert round(kv.bytes_per_token, 1) == 1025.1


def test_parser_gpu_line_wins_and_absent_lines_give_none():
    # The GPU line's format, from vLLM 0.32's gpu_model_runner.py ("Model loading took %s GiB memory
    # and %.6f seconds", the GiB through format_gib = round(x, 2)); no GPU vLLM run was made here.
    gpu = ("(EngineCore_DP0 pid=1) INFO 11-26 10:00:00 [gpu_model_runner.py:5150] Model loading took 12.5 GiB "
           "memory and 3.141593 seconds\n")
    m = parse_model_memory(REAL_QWEN3_TINY_LOG + gpu)
    assert (m.kind, m.gib, m.resolution_gib) == ("model_loading", 12.5, 0.005)
    old = parse_model_memory("INFO 01-01 [model_runner.py:1] Loading model weights took 14.9595 GB\n")
    assert (old.kind, old.gib, old.resolution_gib) == ("model_loading", 14.9595, 0.00005)
    assert parse_model_memory("INFO nothing about memory\n") is None
    assert parse_kv_cache("Explicitly set (0.0/19.21) GiB for KV cache on node 0.\nCPU KV cache size: 0 tokens") is None
    assert parse_kv_cache(REAL_QWEN3_TINY_LOG.splitlines()[2]) is None   # size without tokens


def test_predictions_equal_plan_config_and_safetensors_on_a_tiny_checkpoint(tmp_path):
    from moetrace.tiny import write_tiny_checkpoint
    d = write_tiny_checkpoint(get_preset("DeepSeek-V3.1"), tmp_path / "ds")
    st = safetensors_bytes(d)
    cfg = json.loads((d / "config.json").read_text())
    plan = plan_config(preset_from_checkpoint(d), "TP1_auto", engine="vllm", gpu="h100")
    assert plan.weights_per_gpu_bytes == predict_weights(cfg, dtype="bf16").total == st.tensor_bytes
    assert st.by_dtype["F32"] == 2 * 16 * 4          # the router bias of 2 MoE layers x 16 experts, FP32
    wide = predict_weights(cfg, dtype="fp32").total  # an fp32 checkpoint: everything 4 bytes
    assert wide == 2 * st.tensor_bytes - st.by_dtype["F32"]
    c = compare_checkpoint(d, REAL_QWEN3_TINY_LOG)   # any log: the parse is attached as it is
    assert c.dtype == "bf16" and c.error_vs_safetensors_pct == 0.0
    assert c.logged.kind == "checkpoint_size"


def _tp1_successes(results: Path) -> list[dict]:
    recs = [json.loads(p.read_text()) for p in sorted((results / "records").glob("*.json"))]
    return [r for r in recs if r.get("status") == "success" and (r.get("config_detail") or {}).get("tp") == 1]


@pytest.mark.engine
def test_plan_weights_match_what_the_vllm_cpu_engine_loaded(cpu_sweep, capsys):
    rows, seen = [], set()
    for r in _tp1_successes(cpu_sweep.results):
        ckpt = Path(r["engine"]["model_path"])
        log = (cpu_sweep.results / r["attempt_dir"] / "server.log").read_text(errors="replace")
        c = compare_checkpoint(ckpt, log, name=r["model"])
        plan = plan_config(preset_from_checkpoint(ckpt), "TP1_auto", engine="vllm", gpu="h100")
        assert plan.weights_per_gpu_bytes == c.predicted_bytes, r["model"]
        if r["model"] in seen:
            continue
        seen.add(r["model"])
        rows.append(c)
    assert {c.name for c in rows} == {"Qwen3-235B-tiny", "DeepSeek-V3.1-tiny"}, cpu_sweep.stdout
    with capsys.disabled():
        print("\n\nPlanner vs vLLM CPU 0.32 (TP1, tiny bf16 checkpoints; the log states only the "
              "checkpoint size, to 0.01 GiB):\n" + format_comparison_table(rows) + "\n")
    for c in rows:
        assert c.dtype == "bf16"
        assert c.predicted_bytes == c.safetensors.tensor_bytes, c.to_dict()    # bound: 0 bytes
        assert c.logged is not None and c.logged.kind == "checkpoint_size", c.name
        ref = c.logged_reference_bytes
        assert abs(ref - c.logged.bytes) <= 0.005 * GIB, c.to_dict()          # bound: the log's rounding
        assert c.log_agrees
        assert c.kv_logged is not None and c.kv_agrees, c.to_dict()           # KV bytes/token in the log's interval
