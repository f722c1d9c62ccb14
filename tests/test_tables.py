"""The spec's tables, cell by cell."""

from __future__ import annotations

import re
from pathlib import Path

from moetrace.report.tables import config_table, failure_table, full_report, model_tables, summary_lines

E = {"model": "Qwen3-235B", "config": "TP8_EP2_auto", "batch_size": 1, "input_len": 4096, "latency_s": 7.59,
     "input_throughput_tok_per_s": 15933.87, "output_throughput_tok_per_s": 69.81, "itl_ms": 14.32,
     "profile_extend": "attempts/a/traces/x extend.gz", "profile_decode": None,
     "breakdown": {"decode": {"moe": 41.0, "attention": 22.0, "communication": 18.0, "idle": 6.0, "other": 13.0}}}


def _rows(md: str) -> list[list[str]]:
    """Cells of each table line, split on unescaped pipes (as GitHub renders them)."""
    return [[c.strip() for c in re.split(r"(?<!\\)\|", line.strip()[1:-1])]
            for line in md.splitlines() if line.startswith("|")]


def test_config_table_cells():
    t = config_table(E, base=Path("res"))
    assert t.splitlines()[0] == "Qwen3-235B (TP8_EP2_auto)"
    header, sep, row = _rows(t)
    assert header == ["batch size", "input len", "latency (s)", "input throughput (tok/s)",
                      "output throughput (tok/s)", "ITL (ms)", "profile (extend)", "profile (decode)"]
    assert set(sep) == {"---"}
    assert row == ["1", "4096", "7.59", "15933.87", "69.81", "14.32",
                   "[trace](res/attempts/a/traces/x%20extend.gz)", "-"]


def test_extra_columns_and_grouping():
    other = dict(E, config="TP4_auto", latency_s=9.0)
    t = model_tables({"a": E, "b": other}, extra=("breakdown",))
    rows = _rows(t)
    assert rows[0][0] == "config" and rows[0][-1] == "decode breakdown"
    assert [r[0] for r in rows[2:]] == ["TP4_auto", "TP8_EP2_auto"]  # TP order
    assert rows[3][-1] == "moe 41%, attention 22%, communication 18%, other 13%"
    assert t.startswith("### Qwen3-235B")


def test_failures_and_summary():
    f = {"Qwen3-235B::TP8_EP2_auto": {"model": "Qwen3-235B", "config": "TP8_EP2_auto", "error_type": "OOM",
                                      "error_message": "CUDA out of memory | x", "log_path": "attempts/b/server.log"},
         "DeepSeek-V3.1::TP4_auto": {"model": "DeepSeek-V3.1", "config": "TP4_auto", "error_type": "OOM",
                                     "error_message": "predicted", "predicted": True}}
    s = {"Qwen3-235B::TP8_EP2_auto": E}
    rows = _rows(failure_table(f, s))
    assert rows[2] == ["DeepSeek-V3.1", "TP4_auto", "OOM", "predicted", "-", "predicted by the planner, not launched"]
    assert rows[3][3] == "CUDA out of memory \\| x"
    assert rows[3][5] == "last attempt failed, earlier success kept"
    assert summary_lines(s, f).splitlines() == ["✓ Successful: 1", "⚠ Failed: 2",
                                                "  (1 of the failed keys have an earlier success kept)"]
    rep = full_report(s, f)
    assert rep.index("## Results") < rep.index("## Failures") < rep.index("## Summary")


def test_bursty_itl_is_marked_with_a_footnote():
    from moetrace.report.tables import config_table, model_tables
    base = {"model": "M", "batch_size": 1, "input_len": 4096, "latency_s": 2.6, "input_throughput_tok_per_s": 6826.7,
            "output_throughput_tok_per_s": 257.6, "itl_ms": 3.88, "server_itl_ms": 2.91}
    burst = dict(base, config="TP8_auto", delivery={"burst_share": 0.998, "longest_stall_ms": 1980.0,
                                                    "stall_ratio": 141428.6, "bursty": True})
    steady = dict(base, config="TP4_auto", delivery={"burst_share": 0.0, "longest_stall_ms": 4.1, "stall_ratio": 1.4,
                                                     "bursty": False})
    out = model_tables({"M::TP8_auto": burst, "M::TP4_auto": steady})
    assert "| TP8_auto | 1 | 4096 | 2.60 | 6826.70 | 257.60 | 3.88 † |" in out
    assert "| TP4_auto | 1 | 4096 | 2.60 | 6826.70 | 257.60 | 3.88 |" in out
    (note,) = [line for line in out.splitlines() if line.startswith("†")]
    assert "M TP8_auto" in note and "100% of token gaps under 50 µs" in note and "1980 ms" in note
    assert "describes delivery, not generation" in note and "server's own mean ITL: 2.91 ms" in note
    assert "3.88 †" in config_table(burst) and "†" not in config_table(steady)


def test_a_row_measured_with_the_stdlib_json_decoder_is_noted():
    """Issue 23 §2: with only the vLLM bundle on a node orjson was missing and the client fell back to the
    stdlib decoder silently; the record says which decoder ran (host.measure_client) and the table notes it."""
    from moetrace.results.flat import success_entry
    from moetrace.results.record import Record
    rec = Record.new(model="M", config="TP1_auto", key="M::TP1_auto", status="success",
                     host={"measure_client": {"json": "json", "http": "urllib3 2.0"}},
                     workload={"batch_size": 1, "input_len": 4096, "output_len": 512}, metrics={"itl_ms": 3.0})
    e = success_entry(rec)
    assert e["client_json"] == "json"
    assert "Python's json decoder" in model_tables({"a": e}) and "M TP1_auto" in config_table(e)
    fast = success_entry(Record.new(model="M", config="TP1_auto", status="success",
                                    host={"measure_client": {"json": "orjson", "http": "urllib3 2.0"}}))
    assert "client_json" not in fast and "json decoder" not in model_tables({"a": dict(E)})


def test_the_record_names_the_clients_json_decoder():
    from moetrace.attempt.progress import host_facts
    from moetrace.measure import client
    facts = host_facts()["measure_client"]
    assert facts["json"] == client.JSON_DECODER and facts["http"].startswith("urllib3 ")
    try:
        import orjson  # noqa: F401
        assert facts["json"] == "orjson"
    except ImportError:
        assert facts["json"] == "json"
