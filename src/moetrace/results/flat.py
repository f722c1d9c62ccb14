"""A record flattened, once, for everything that shows records: the spec's two view files
(:func:`success_entry`, :func:`failure_entry`, written by the store) and the report's rows
(``report/data.py``: :func:`~moetrace.report.data.row_from_record`, behind the tables, the HTML
report, plots and export).

:func:`flat` reads each value of a record from its part once, as written (unrounded, uncleaned);
the view entries round it the spec's way, the rows keep the numbers and clean the rest. So a
field means the same thing in a view file and in a table (``tests/results/test_flat.py`` holds
both to what the real records under ``tests/data`` gave before).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .record import Record

__all__ = ["Flat", "flat", "success_entry", "failure_entry", "expert_load_brief"]


@dataclass(frozen=True)
class Flat:
    """One attempt record's values, each from where the record keeps it; None where absent."""

    key: str                                   # Record.the_key
    model: str | None
    config: str | None
    status: str | None
    seq: int | None
    config_detail: dict[str, Any]              # {} where absent
    workload: tuple[int | None, int | None, int | None]  # Record.workload_triple
    repeat: int | None                         # the workload's
    launches: int | None                       # the workload's (--launches)
    metrics: dict[str, Any]                    # the aggregate as written, every key
    runs: tuple[tuple[dict[str, Any], int | None], ...]  # each repetition's metrics and launch
    engine: str | None
    engine_version: str | None
    device: str | None
    resolved: dict[str, str] | None            # what the engine chose (its server log)
    client_json: str | None                    # the client's JSON decoder (host.measure_client), when not orjson
    finished_at: str | None
    last_updated: str                          # finished_at, or now
    attempt_id: str | None
    record_path: str | None
    profile_extend: str | None
    profile_decode: str | None
    traces: dict[str, tuple[str, ...]]         # stage -> every trace file
    breakdown: dict[str, Any] | None
    decomposition: dict[str, Any] | None
    profile_error: str | None
    analysis_error: str | None
    error_type: str | None
    error_message: str | None
    error_phase: str | None
    error_evidence: str | None                 # one text
    error_log_path: str | None
    error_predicted: bool | None
    log_path: str | None
    expert_load: dict[str, Any] | None
    predicted: bool = False                    # Record.was_predicted
    imported: bool = False
    error_keys: frozenset[str] = field(default_factory=frozenset)  # the keys the error part has


def flat(rec: Record | dict[str, Any]) -> Flat:
    rec = Record.of(rec)
    w, prof, err, engine = rec.the_workload, rec.the_profile, rec.the_error, rec.the_engine
    return Flat(
        key=rec.the_key, model=rec.model, config=rec.config, status=rec.status, seq=rec.seq,
        config_detail=rec.config_detail if isinstance(rec.config_detail, dict) else {},
        workload=rec.workload_triple(), repeat=w.repeat, launches=w.launches, metrics=rec.the_metrics.to_dict(),
        runs=tuple((r.metrics.to_dict() if r.metrics is not None else {}, r.launch) for r in rec.the_runs),
        engine=engine.name, engine_version=engine.version, device=engine.device, resolved=engine.resolved,
        client_json=_client_json(rec.host),
        finished_at=rec.finished_at, last_updated=rec.last_updated(), attempt_id=rec.attempt_id,
        record_path=rec.record_path, profile_extend=prof.extend, profile_decode=prof.decode,
        traces={stage: tuple(files) for stage in ("extend", "decode") if (files := prof.traces(stage))},
        breakdown=prof.breakdown, decomposition=prof.decomposition, profile_error=prof.error,
        analysis_error=prof.analysis_error, error_type=err.type, error_message=err.message, error_phase=err.phase,
        error_evidence=err.evidence_text(), error_log_path=err.log_path, error_predicted=err.predicted,
        log_path=rec.log_path, expert_load=rec.expert_load if isinstance(rec.expert_load, dict) else None,
        predicted=rec.was_predicted, imported=bool(rec.imported), error_keys=frozenset(err.to_dict()))


def _client_json(host: Any) -> str | None:
    client = host.get("measure_client") if isinstance(host, dict) else None
    return client["json"] if isinstance(client, dict) and client.get("json") not in (None, "orjson") else None


# ------------------------------------------------------------------ the spec's view entries
def _r2(x: Any) -> Any:
    return round(x, 2) if isinstance(x, float) else x


_EXTRA_METRICS = ("ttft_ms", "itl_p50_ms", "itl_p90_ms", "itl_p99_ms", "output_tokens", "repeat",
                  "latency_s_min", "latency_s_max", "itl_floor_ms", "ttft_floor_ms",
                  "itl_efficiency", "ttft_efficiency", "server_itl_ms", "server_ttft_ms", "headline", "client")


def success_entry(rec: Record | Flat | dict[str, Any]) -> dict[str, Any]:
    """The spec's success entry (rounded to 2 decimals), plus extra fields."""
    f = rec if isinstance(rec, Flat) else flat(rec)
    m = f.metrics
    e: dict[str, Any] = {"model": f.model, "config": f.config, "batch_size": f.workload[0],
                         "input_len": f.workload[1], "output_len": f.workload[2]}
    e.update({k: _r2(m.get(k)) for k in ("latency_s", "input_throughput_tok_per_s", "output_throughput_tok_per_s",
                                         "itl_ms")})
    e["last_updated"] = f.last_updated
    e.update({k: _r2(m[k]) for k in _EXTRA_METRICS if m.get(k) is not None})
    if f.launches and f.launches > 1:  # --launches: each launch's median (measure/metrics.py by_launch)
        e["launches"] = f.launches
        e.update({k: [_r2(x) for x in m[k]] for k in ("ttft_ms_by_launch", "itl_ms_by_launch") if m.get(k)})
    ci = {k: v for k, v in m.items() if k.endswith("_ci95") or k == "ci_method"}  # measure/metrics.py
    e.update({k: [_r2(x) for x in v] if isinstance(v, list) else v for k, v in ci.items()})
    if m.get("delivery"):  # the stream came in bursts: its ITL describes delivery (measure/metrics.py)
        e["delivery"] = m["delivery"]
    e["profile_extend"] = f.profile_extend
    e["profile_decode"] = f.profile_decode
    if f.breakdown:
        e["breakdown"] = f.breakdown
    if f.decomposition:
        e["decomposition"] = f.decomposition
    if f.profile_error:
        e["profile_error"] = f.profile_error
    if f.expert_load is not None:
        e["expert_load"] = expert_load_brief(f.expert_load)
    if f.resolved:  # what the engine chose (--show backends, the tables' notes)
        e["resolved"] = f.resolved
    if f.client_json:  # the stdlib decoder measured the stream: the tables' notes say so
        e["client_json"] = f.client_json
    return _tail_fields(e, f)


def expert_load_brief(el: dict[str, Any]) -> dict[str, Any]:
    """What a view keeps of a record's ``expert_load`` (``--show load``): the same keys, less the
    per-expert and per-layer tables, which stay in the record (the HTML report draws them)."""
    out = {k: el[k] for k in ("available", "reason", "error", "experts", "top_k", "ep_size") if k in el}
    stages = {st: {k: s[k] for k in ("passes", "tokens", "imbalance_max", "ep_rank_imbalance") if k in s}
              for st, s in (el.get("stages") or {}).items() if isinstance(s, dict)}
    if stages:
        out["stages"] = stages
    if isinstance(el.get("planted"), dict):
        out["planted"] = {k: el["planted"][k] for k in ("ok", "expected_imbalance") if k in el["planted"]}
    return out


def failure_entry(rec: Record | Flat | dict[str, Any]) -> dict[str, Any]:
    f = rec if isinstance(rec, Flat) else flat(rec)
    e: dict[str, Any] = {
        "model": f.model,
        "config": f.config,
        "error_message": f.error_message if "message" in f.error_keys else "",
        "error_type": f.error_type if "type" in f.error_keys else "Unknown",
        "last_updated": f.last_updated,
    }
    for k, v in (("log_path", f.error_log_path), ("phase", f.error_phase), ("predicted", f.error_predicted)):
        if v is not None:
            e[k] = v
    return _tail_fields(e, f)


def _tail_fields(e: dict[str, Any], f: Flat) -> dict[str, Any]:
    e["engine"] = f.engine
    e["attempt_id"] = f.attempt_id
    e["record"] = f.record_path
    return e
