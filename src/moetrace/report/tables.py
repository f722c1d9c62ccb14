"""The spec's markdown tables, rendered from the views (never from live objects).

Per config::

    Model (variant)
    | batch size | input len | latency (s) | input throughput (tok/s) | output throughput (tok/s) | ITL (ms) | profile (extend) | profile (decode) |
    | --- | ... |
    | 1 | 4096 | 7.59 | 15933.87 | 69.81 | 14.32 | [trace](...) | [trace](...) |

At the end: all successes grouped by model, the failures with their classes, and
the spec's summary counts. Valid GitHub markdown (a header separator row, pipes
in cells escaped).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, Iterable

from ..engines.registry import engine_classes
from ..matrix import ConfigError, parse_config_name
from ..results.flat import expert_load_brief
from ..results.record import Record
from ..text import num, pct
from .data import expert_load_note, row_from_record
from .significance import CI_METHOD_WORDS, interval_text, significance_lines

__all__ = ["config_table", "model_tables", "failure_table", "profile_failure_table", "summary_lines", "full_report",
           "append_step_summary", "backend_notes", "SPEC_COLUMNS"]

SPEC_COLUMNS = ("batch size", "input len", "latency (s)", "input throughput (tok/s)",
                "output throughput (tok/s)", "ITL (ms)", "profile (extend)", "profile (decode)")


def _cell(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.2f}"
    return str(v).replace("|", "\\|").replace("\n", " ")


def _md(header: Iterable[str], rows: Iterable[Iterable[Any]]) -> str:
    header = list(header)
    lines = ["| " + " | ".join(_cell(h) for h in header) + " |",
             "| " + " | ".join("---" for _ in header) + " |"]
    lines += ["| " + " | ".join(c if isinstance(c, _Raw) else _cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


class _Raw(str):
    """A cell that is already markdown (a link)."""


def _link(path: str | None, base: Path | None, failed: bool = False) -> str:
    if not path:
        return _Raw("profile failed" if failed else "-")
    target = str(base / path) if base is not None and not os.path.isabs(path) else path
    return _Raw(f"[trace]({target.replace(' ', '%20')})")


BURST_MARK = "†"


def _bursty(e: dict[str, Any]) -> bool:
    return bool((e.get("delivery") or {}).get("bursty"))


def _ci(e: dict[str, Any], key: str) -> Any:
    """A metric's cell: ``value (lo-hi)`` where the entry has its 95% interval (``<key>_ci95``), else the
    value as the spec's tables always showed it."""
    v, ci = e.get(key), e.get(f"{key}_ci95")
    return interval_text(_cell(v), ci) if v is not None and ci else v


def _itl(e: dict[str, Any]) -> Any:
    """The ITL cell; marked when the stream came in bursts (its ITL describes delivery)."""
    v = _ci(e, "itl_ms")
    return f"{_cell(v)} {BURST_MARK}" if _bursty(e) and v is not None else v


def interval_note(entries: Iterable[dict[str, Any]]) -> str:
    """The line under a table whose cells carry intervals: what they are and how they were made."""
    with_ci = [e for e in entries if any(k.endswith("_ci95") and e[k] for k in e)]
    methods = dict.fromkeys(CI_METHOD_WORDS.get(e.get("ci_method"), "?") for e in with_ci)
    return f"In parentheses: 95% confidence intervals ({'; '.join(methods)}; docs/fidelity.md)." if methods else ""


def significance_note(entries: Iterable[dict[str, Any]], base: Path | None) -> str:
    """Each pair of configs one dimension apart (MoE backend, EP, TP), tested (report/significance.py);
    from the records the entries name (their runs), so nothing without ``base``."""
    rows = [row_from_record(rec) for e in entries if (rec := _record(e, base)) is not None]
    lines = [f"- {line}" for line in significance_lines(rows)]
    return "\n".join(["Differences between configs one dimension apart (Welch's t-test, 5%):", *lines]) if lines else ""


def burst_notes(entries: Iterable[dict[str, Any]]) -> str:
    """The footnote under a table with marked ITL cells, one line per marked row."""
    lines = []
    for e in entries:
        if not _bursty(e):
            continue
        d = e["delivery"]
        burst = (f"{BURST_MARK} {e['model']} {e['config']}: the stream arrived in bursts "
                 f"({100 * d['burst_share']:.0f}% of token gaps under 50 µs, longest stall "
                 f"{d['longest_stall_ms']:.0f} ms = {d['stall_ratio']:.0f}× the median gap)")
        client = e.get("client") or {}
        if e.get("headline") == "engine":
            seen = f" (the client saw ITL {client['itl_ms']:.3f} ms)" if isinstance(client.get("itl_ms"), (int, float)) else ""
            lines.append(f"{burst}, so TTFT, ITL and the throughputs are the engine's own timing from its /metrics"
                         f"{seen}.")
        else:  # records from before the headline was settled: the client's delivery figures
            server = f"; the server's own mean ITL: {e['server_itl_ms']:.2f} ms" if e.get("server_itl_ms") else ""
            lines.append(f"{burst}, so its ITL describes delivery, not generation{server}.")
    return "\n\n".join(lines)


def client_notes(entries: Iterable[dict[str, Any]]) -> str:
    """A line under a table whose rows the client measured with the stdlib JSON decoder (orjson missing):
    about 5 us more per streamed event, inside every ITL (docs/fidelity.md)."""
    slow = [f"{e['model']} {e['config']}" for e in entries if e.get("client_json") == "json"]
    if not slow:
        return ""
    return (f"Measured with Python's json decoder, orjson missing on the measuring host: {', '.join(slow)} "
            "(about 5 µs more client time per streamed token inside each ITL; docs/fidelity.md).")


def _spec_row(e: dict[str, Any], base: Path | None, extra: tuple[str, ...]) -> list[Any]:
    if any(k in LOAD_COLUMNS for k in _columns(extra)):
        e = _with_expert_load(e, base)
    failed = bool(e.get("profile_error"))
    row = [e.get("batch_size"), e.get("input_len"), _ci(e, "latency_s"), _ci(e, "input_throughput_tok_per_s"),
           _ci(e, "output_throughput_tok_per_s"), _itl(e), _link(e.get("profile_extend"), base, failed),
           _link(e.get("profile_decode"), base, failed)]
    return row + [_extra(e, k) for k in _columns(extra)]


EXTRA_COLUMNS = {
    "ttft": ("TTFT (ms)", lambda e: _ci(e, "ttft_ms")),
    "itl_p99": ("ITL p99 (ms)", lambda e: _ci(e, "itl_p99_ms")),
    "efficiency": ("ITL eff.", lambda e: pct(e.get("itl_efficiency"))),
    "breakdown": ("decode breakdown", lambda e: _breakdown_text((e.get("breakdown") or {}).get("decode"))),
    # --show floor: where the ITL goes against the floor (traces/decompose.py), from the decode trace
    "floor_ms": ("ITL floor ms", lambda e: _dec(e, "floor_ms")),
    "above_floor_ms": ("kernels above floor ms", lambda e: _dec(e, "above_floor_ms")),
    "idle_ms": ("idle in steps ms", lambda e: _dec(e, "idle_ms")),
    "host_other_ms": ("host/other ms", lambda e: _dec(e, "host_other_ms")),
    # --show load: how the tokens of one request were routed (--expert-load; measure/expert_load.py)
    "load_extend": ("expert max/mean (extend)", lambda e: _load(e, "extend")),
    "load_decode": ("expert max/mean (decode)", lambda e: _load(e, "decode")),
    "load_ep": ("EP-rank max/mean", lambda e: _load(e, "ep")),
    # --show backends: what the engine ran, as its server log says (engine.resolved of the record)
    "moe_backend": ("MoE backend", lambda e: _resolved(e.get("resolved"), "moe", "moe_kind")),
    "attention_backend": ("attention backend", lambda e: _resolved(e.get("resolved"), "attention")),
    # --show launches: each engine launch's median ITL (--launches; one launch moved 20% on H200)
    "launches": ("ITL by launch (ms)", lambda e: " / ".join(f"{x:.2f}" for x in e.get("itl_ms_by_launch") or [])),
}
LOAD_COLUMNS = ("load_extend", "load_decode", "load_ep")
# a --show choice that stands for several columns
COLUMN_SETS = {"floor": ("floor_ms", "above_floor_ms", "idle_ms", "host_other_ms"), "load": LOAD_COLUMNS,
               "backends": ("moe_backend", "attention_backend")}


def _columns(extra: Iterable[str]) -> list[str]:
    return [c for k in extra for c in COLUMN_SETS.get(k, (k,))]


def _dec(e: dict[str, Any], key: str) -> str | None:
    v = ((e.get("decomposition") or {}).get("decode") or {}).get(key)
    return None if v is None else f"{v:.3f}"


def _load(e: dict[str, Any], col: str) -> str:
    """A --show load cell: the busiest expert's tokens over the mean expert's in the worst MoE layer
    of a stage ("extend", "decode"), or ("ep") the busiest EP rank's over the mean rank's, worst
    layer and stage, where EP > 1 ("-" at EP 1). Empty when the run did not record expert load;
    "n/a (why)" where the engine exposes none, "failed (why)" where recording it failed."""
    el = e.get("expert_load")
    if not isinstance(el, dict):
        return ""
    if note := expert_load_note(el):
        return note if col == "extend" else note.split(" ", 1)[0]
    stages = el.get("stages") or {}
    if col == "ep":
        vals = [num(s.get("ep_rank_imbalance")) for s in stages.values() if isinstance(s, dict)]
        vals = [v for v in vals if v is not None]
        return f"{max(vals):.2f}" if vals and (num(el.get("ep_size")) or 1) > 1 else "-"
    v = num((stages.get(col) or {}).get("imbalance_max"))
    return "-" if v is None else f"{v:.2f}"


def _resolved(resolved: dict[str, str] | None, *keys: str) -> str | None:
    """A --show backends cell: the engine's words for what it chose ("TRITON Fp8"); None where unknown."""
    r = resolved or {}
    return " ".join(r[k] for k in keys if r.get(k)) or None


def _inside(base: Path, rel: str) -> Path | None:
    path = (Path(base) / rel).resolve()
    return path if path.is_relative_to(Path(base).resolve()) else None


def _record(e: dict[str, Any], base: Path | None) -> Record | None:
    """The record a view entry names (inside ``base``), for a field views did not keep when it was written."""
    path = _inside(base, str(e["record"])) if base is not None and e.get("record") else None
    try:
        return Record.from_dict(json.loads(path.read_text(encoding="utf-8"))) if path else None
    except (OSError, ValueError):
        return None


def _with_expert_load(e: dict[str, Any], base: Path | None) -> dict[str, Any]:
    """The entry with its record's expert load, for a view written before views kept it."""
    if "expert_load" in e or (rec := _record(e, base)) is None:
        return e
    return dict(e, expert_load=expert_load_brief(rec.expert_load)) if isinstance(rec.expert_load, dict) else e


def _with_resolved(e: dict[str, Any], base: Path | None) -> dict[str, Any]:
    """The entry with what its engine chose (``resolved``), for a view written before views kept it: from
    its record, or, where the record is older than ``engine.resolved``, read from the attempt's server log
    by the engine's adapter (``Engine.resolved_backends``)."""
    if "resolved" in e or (rec := _record(e, base)) is None:
        return e
    resolved, engine = rec.the_engine.resolved, engine_classes().get(str(rec.the_engine.name))
    if not resolved and engine and rec.log_path and (log := _inside(base, rec.log_path)) and log.is_file():
        resolved = engine.resolved_backends(log.read_text(encoding="utf-8", errors="replace"))
    return dict(e, resolved=resolved) if resolved else e


def backend_notes(model: str, entries: Iterable[dict[str, Any]]) -> str:
    """A line under a model's table for configs that differ only in the MoE backend asked for (same engine,
    TP, EP, nodes, quantization and workload) while the engine's log says it ran the very same backends:
    what tells their numbers apart is run-to-run spread, not the backend."""
    same: dict[tuple, list[str]] = {}
    for e in entries:
        resolved = e.get("resolved") or {}
        try:
            c = parse_config_name(e["config"])
        except ConfigError:
            continue
        if resolved.get("moe"):
            key = (e.get("engine"), c.tp, c.ep, c.nodes, c.quantization, e.get("batch_size"), e.get("input_len"),
                   e.get("output_len"), tuple(sorted(resolved.items())))
            same.setdefault(key, []).append(e["config"])
    lines = []
    for key, configs in same.items():
        if len(configs) < 2:
            continue
        engine, resolved = engine_classes().get(str(key[0])), dict(key[-1])
        ran = ", ".join(f"{what} {v}" for what, v in (("MoE", _resolved(resolved, "moe", "moe_kind")),
                                                      ("attention", _resolved(resolved, "attention"))) if v)
        lines.append(f"{' and '.join(configs)} of {model} ran the same backends "
                     f"({engine.label if engine else key[0]}'s log: {ran}): their difference is run-to-run spread.")
    return "\n\n".join(lines)


def _breakdown_text(b: dict[str, float] | None, top: int = 4) -> str | None:
    if not b:
        return None
    items = sorted(b.items(), key=lambda kv: -kv[1])[:top]
    return ", ".join(f"{k} {v:.0f}%" for k, v in items)


def _extra(e: dict[str, Any], key: str) -> Any:
    return EXTRA_COLUMNS[key][1](e)


def config_table(e: dict[str, Any], *, base: Path | None = None, extra: tuple[str, ...] = ()) -> str:
    """The spec's per-config table: title line, then one row."""
    header = list(SPEC_COLUMNS) + [EXTRA_COLUMNS[k][0] for k in _columns(extra)]
    text = f"{e['model']} ({e['config']})\n\n" + _md(header, [_spec_row(e, base, extra)])
    notes = "\n\n".join(n for n in (burst_notes([e]), interval_note([e]), client_notes([e])) if n)
    if notes:
        text += f"\n\n{notes}"
    if e.get("profile_error"):
        text += f"\n\nprofiling failed: {_cell(e['profile_error'])}"
    return text


def profile_failure_table(success: dict[str, dict[str, Any]]) -> str:
    """Successes whose profiling failed (the numbers stand; a trace is missing or holds no step)."""
    rows = [[e.get("model"), e.get("config"), e.get("profile_error")]
            for _, e in sorted(success.items()) if e.get("profile_error")]
    return _md(["model", "config", "profiling error"], rows) if rows else ""


def model_tables(success: dict[str, dict[str, Any]], *, base: Path | None = None,
                 extra: tuple[str, ...] = ()) -> str:
    """All successes grouped by model, one row per config."""
    by_model: dict[str, list[dict[str, Any]]] = {}
    for e in success.values():
        by_model.setdefault(e["model"], []).append(e)
    header = ["config"] + list(SPEC_COLUMNS) + [EXTRA_COLUMNS[k][0] for k in _columns(extra)]
    out = []
    for model in sorted(by_model):
        entries = [_with_resolved(e, base) for e in sorted(by_model[model], key=_config_order)]
        rows = [[e["config"]] + _spec_row(e, base, extra) for e in entries]
        notes = "\n\n".join(n for n in (burst_notes(entries), interval_note(entries), client_notes(entries),
                                          backend_notes(model, entries), significance_note(entries, base)) if n)
        out.append(f"### {model}\n\n" + _md(header, rows) + (f"\n\n{notes}" if notes else ""))
    return "\n\n".join(out)


def _config_order(e: dict[str, Any]) -> tuple:
    m = re.match(r"TP(\d+)(?:_EP(\d+))?", e.get("config", ""))
    return (int(m.group(1)), int(m.group(2) or 1), e["config"]) if m else (1 << 30, 0, e.get("config", ""))


def failure_table(failure: dict[str, dict[str, Any]], success: dict[str, dict[str, Any]]) -> str:
    rows = []
    for key in sorted(failure):
        f = failure[key]
        note = "last attempt failed, earlier success kept" if key in success else ""
        if f.get("predicted"):
            note = (note + "; " if note else "") + "predicted by the planner, not launched"
        rows.append([f.get("model"), f.get("config"), f.get("error_type"), f.get("error_message"),
                     f.get("log_path") or "-", note])
    return _md(["model", "config", "error type", "error message", "log", "note"], rows)


def summary_lines(success: dict, failure: dict) -> str:
    kept = sum(1 for k in failure if k in success)
    lines = [f"✓ Successful: {len(success)}", f"⚠ Failed: {len(failure)}"]
    if kept:
        lines.append(f"  ({kept} of the failed keys have an earlier success kept)")
    return "\n".join(lines)


def full_report(success: dict, failure: dict, *, base: Path | None = None, extra: tuple[str, ...] = ()) -> str:
    parts = ["## Results", model_tables(success, base=base, extra=extra) or "_no successful results_"]
    if prof := profile_failure_table(success):
        parts += ["## Profiling failures", prof]
    if failure:
        parts += ["## Failures", failure_table(failure, success)]
    parts += ["## Summary", summary_lines(success, failure)]
    return "\n\n".join(parts) + "\n"


def append_step_summary(text: str) -> None:
    """Append to $GITHUB_STEP_SUMMARY when running in GitHub Actions."""
    path = os.environ.get("GITHUB_STEP_SUMMARY")
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write(text + "\n")
