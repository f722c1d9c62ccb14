"""What the engine ran in the tables (``--show backends``) and the note under a model's table when configs
that differ only in the MoE backend asked for ran the same backends, on the real GPU records
(tests/data/gpu-2/, tests/data/gpu-3/). Those records predate ``engine.resolved``: the table reads it from
each attempt's server log."""

from __future__ import annotations

import json
from pathlib import Path

from moetrace.engines.registry import engine_classes
from moetrace.report.tables import backend_notes, model_tables
from moetrace.results.flat import success_entry
from moetrace.results.record import Record

from ..test_tables import _rows

DATA = Path(__file__).resolve().parents[1] / "data"
NOISE = ("ran the same backends", "run-to-run spread")


def _entry(results: Path, attempt: str) -> dict:
    """A success's view entry as a record written today makes it: ``engine.resolved`` from its server log."""
    (rec,) = [r for p in sorted((results / "records").glob("*.json"))
              if (r := Record.from_dict(json.loads(p.read_text())))["attempt_id"] == attempt]
    assert rec.ok and rec.engine.resolved is None  # the record predates the field
    log = (results / rec.attempt_dir / "server.log").read_text(errors="replace")
    rec.engine.resolved = engine_classes()[rec.engine.name].resolved_backends(log)
    return success_entry(rec)


VLLM_DEEPSEEK_AUTO = _entry(DATA / "gpu-2" / "results", "20261130T083910-DeepSeek-V3.1-slice-TP1_auto-f81ce5")
VLLM_DEEPSEEK_TRITON = _entry(DATA / "gpu-3" / "results-vllm", "20261130T114418-DeepSeek-V3.1-slice-TP1_triton-4caddd")
SGLANG_DEEPSEEK_AUTO = _entry(DATA / "gpu-2" / "results", "20261130T083029-DeepSeek-V3.1-slice-TP1_auto-e439e2")
SGLANG_DEEPSEEK_TRITON = _entry(DATA / "gpu-2" / "results", "20261130T083327-DeepSeek-V3.1-slice-TP1_triton-c1b1a5")


def test_vllm_auto_and_triton_ran_the_same_backends():
    """vLLM 0.25.0 chose TRITON Fp8 for DeepSeek-V3.1 without --moe-backend, as with --moe-backend triton."""
    assert VLLM_DEEPSEEK_AUTO["resolved"] == VLLM_DEEPSEEK_TRITON["resolved"] == {
        "attention": "FLASH_ATTN_MLA", "mla_prefill": "FLASH_ATTN", "moe": "TRITON", "moe_kind": "Fp8",
        "moe_config": "default"}
    assert backend_notes("DeepSeek-V3.1-slice", [VLLM_DEEPSEEK_AUTO, VLLM_DEEPSEEK_TRITON]) == (
        "TP1_auto and TP1_triton of DeepSeek-V3.1-slice ran the same backends (vLLM's log: MoE TRITON Fp8, "
        "attention FLASH_ATTN_MLA): their difference is run-to-run spread.")


def test_no_note_where_the_log_names_different_backends_or_the_launches_differ():
    # SGLang's ServerArgs keeps auto as auto: its log does not say auto ran the Triton runner
    assert SGLANG_DEEPSEEK_AUTO["resolved"]["moe"] == "auto" and SGLANG_DEEPSEEK_TRITON["resolved"]["moe"] == "triton"
    assert backend_notes("DeepSeek-V3.1-slice", [SGLANG_DEEPSEEK_AUTO, SGLANG_DEEPSEEK_TRITON]) == ""
    # another engine, another TP, another workload, or no resolved backends: not the same launch
    for change in ({"engine": "sglang"}, {"config": "TP2_triton"}, {"batch_size": 8}):
        assert backend_notes("DeepSeek-V3.1-slice", [VLLM_DEEPSEEK_AUTO, dict(VLLM_DEEPSEEK_TRITON, **change)]) == ""
    unknown = {k: v for k, v in VLLM_DEEPSEEK_TRITON.items() if k != "resolved"}
    assert backend_notes("DeepSeek-V3.1-slice", [dict(VLLM_DEEPSEEK_AUTO, resolved={}), unknown]) == ""


def test_the_table_reads_an_old_records_server_log():
    """tests/data/gpu-2/results as it came back (views and records without ``resolved``): each row's backends
    from its attempt's server log, and the note for vLLM's Qwen3-235B TP1_auto and TP1_triton (TRITON
    Unquantized both). The view holds SGLang's DeepSeek TP1_triton beside vLLM's TP1_auto (keys have no
    engine), which the column shows; no note for them."""
    results = DATA / "gpu-2" / "results"
    success = json.loads((results / "success_results.json").read_text())
    assert not any("resolved" in e for e in success.values())
    text = model_tables(success, base=results, extra=("backends",))
    cells = {(model, row[0]): row[-2:] for model, table in zip(("DeepSeek", "Qwen3"), text.split("### ")[1:])
             for row in _rows(table)[2:]}
    assert cells == {("DeepSeek", "TP1_auto"): ["TRITON Fp8", "FLASH_ATTN_MLA"],
                     ("DeepSeek", "TP1_triton"): ["triton Fp8MoEMethod", "triton"],
                     ("Qwen3", "TP1_auto"): ["TRITON Unquantized", "FLASH_ATTN"],
                     ("Qwen3", "TP1_triton"): ["TRITON Unquantized", "FLASH_ATTN"],
                     ("Qwen3", "TP1_triton_kernel"): ["triton_kernel UnquantizedFusedMoEMethod", "triton"],
                     ("Qwen3", "TP2_EP2_auto"): ["TRITON Unquantized", "FLASH_ATTN"]}
    notes = [line for line in text.splitlines() if all(w in line for w in NOISE)]
    assert notes == ["TP1_auto and TP1_triton of Qwen3-235B-slice ran the same backends (vLLM's log: MoE TRITON "
                     "Unquantized, attention FLASH_ATTN): their difference is run-to-run spread."]
    assert "MoE backend" not in model_tables(success, base=results)  # the note stays, the column is asked for
    assert notes[0] in model_tables(success, base=results)


def test_an_entry_without_record_or_log_shows_nothing():
    e = {k: v for k, v in VLLM_DEEPSEEK_AUTO.items() if k not in ("resolved", "record")}
    rows = _rows(model_tables({"k": e}, extra=("backends",)))
    assert rows[0][-2:] == ["MoE backend", "attention backend"] and rows[2][-2:] == ["-", "-"]
