"""The measurements ``moetrace predict`` starts from, and the rules that pick and calibrate them.

The evidence is ``plan/data/predict_evidence.json``, written by ``benchmarks/predict_evidence.py``
from moetrace records (one entry a record: per stage the mean MoE layer and dense layer by kernel
group, the time outside the layers, the step's extent and busy time, collective calls) plus the
H100 depth-scan figures kept as text. This module:

* picks the base for a (model, engine, GPU, config): the records of that model measured on that
  engine and GPU, preferring the same TP/EP (a one-rank record of the config: *measured*), else
  TP1 (*scaled* by the TP/EP rule), else another GPU (*scaled* by the GPU rule), else the other
  engine (*scaled* by the engine rule); the engine's defaults are preferred (SGLang's FA3 over
  ``--attention-backend triton``; no expert recorder);
* fits each kernel group's fixed per-layer time (launches, routing, tiny kernels) from a pair of
  records of one model at TP1 and TP2 (bytes halve, the fixed part does not): ``f = 2 t(TP2) - t(TP1)``;
* gives the host floor of a step (ITL of host-bound records) and the host part of TTFT.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

__all__ = ["Base", "GROUPS", "default_attention_ratio", "engine_ratio", "fixed_parts", "host_floor_ms", "load_evidence", "select_base", "ttft_host_ms"]

GROUPS = ("attention", "moe", "gemm", "other")
DEFAULT_FIXED_US = {"attention": 14.0, "moe": 13.0, "gemm": 15.0, "other": 9.0}


@lru_cache(maxsize=4)
def load_evidence(path: str | None = None) -> dict[str, Any]:
    if path:
        return json.loads(Path(path).read_text())
    text = resources.files("moetrace.plan").joinpath("data/predict_evidence.json").read_text()
    return json.loads(text)


def _records(ev: dict[str, Any]) -> list[dict[str, Any]]:
    return [r for r in ev.get("records", []) if r.get("stages", {}).get("decode", {}).get("layer_moe_us")]


def _defaults_score(r: dict[str, Any]) -> int:
    """0 for a record run with the engine's defaults; higher for each departure."""
    args = " ".join(r.get("extra_args") or [])
    return (2 if "--attention-backend" in args else 0) + (1 if r.get("expert_load") else 0)


def _median_rows(rows: list[dict[str, float]]) -> dict[str, float]:
    return {g: statistics.median(r.get(g, 0.0) for r in rows) for g in GROUPS}


@dataclass
class Base:
    """Per-layer device times (us, by kernel group) of the records a prediction scales from."""
    model: str
    engine: str
    gpu: str
    tp: int
    ep: int
    backend: str
    decode_moe: dict[str, float]
    decode_dense: dict[str, float] | None
    decode_outside_us: float
    extend_moe: dict[str, float] | None
    extend_dense: dict[str, float] | None
    extend_outside_us: float
    input_len: int
    output_len: int
    vocab: int | None            # the measured model's vocabulary (slices cut it: their LM head is small)
    sources: list[str]
    spread: float                # relative spread (max-min)/median of the records' decode layer time
    how: str = "measured"        # measured | scaled
    rules: list[str] = field(default_factory=list)
    departures: list[str] = field(default_factory=list)    # flags the records ran with beyond the defaults
    one_rank: dict[str, Any] | None = None   # a one-rank record's shards (variants.py): moe_ep, moe_tp, top_k, ...
    ttft_host_ms: tuple[float, float, float] | None = None   # one-rank records: their own (median, min, max) of
    # TTFT less the prefill step's busy time (_own_ttft_host)


def _layer_total(r: dict[str, Any]) -> float:
    return sum(r["stages"]["decode"]["layer_moe_us"].get(g, 0.0) for g in GROUPS)


def _base_of(recs: list[dict[str, Any]]) -> Base:
    r0 = recs[0]
    dec = [r["stages"]["decode"] for r in recs]
    ext = [r["stages"].get("extend", {}) for r in recs]
    dense = [d["layer_dense_us"] for d in dec if d.get("layer_dense_us")]
    e_moe = [e["layer_moe_us"] for e in ext if e.get("layer_moe_us")]
    e_dense = [e["layer_dense_us"] for e in ext if e.get("layer_dense_us")]
    totals = [_layer_total(r) for r in recs]
    med = statistics.median(totals)
    return Base(
        model=r0["model"], engine=r0["engine"], gpu=r0["gpu"], tp=r0["tp"], ep=r0["ep"],
        backend=str(r0.get("config", "")).split("_")[-1],
        decode_moe=_median_rows([d["layer_moe_us"] for d in dec]),
        decode_dense=_median_rows(dense) if dense else None,
        decode_outside_us=statistics.median(sum((d.get("outside_us") or {}).values()) for d in dec),
        extend_moe=_median_rows(e_moe) if e_moe else None,
        extend_dense=_median_rows(e_dense) if e_dense else None,
        extend_outside_us=statistics.median(sum((e.get("outside_us") or {}).values()) for e in ext) if ext else 0.0,
        input_len=int(r0.get("input_len") or 4096), output_len=int(r0.get("output_len") or 512),
        vocab=(r0.get("shape") or {}).get("vocab"), sources=[r["source"] for r in recs],
        spread=(max(totals) - min(totals)) / med if med else 0.0, departures=_departures(r0),
        one_rank=r0.get("one_rank"), ttft_host_ms=_own_ttft_host(recs) if r0.get("one_rank") else None)


def _own_ttft_host(recs: list[dict[str, Any]]) -> tuple[float, float, float] | None:
    """(median, min, max) over a rank's records of TTFT less the prefill step's busy time: request handling,
    tokenization, scheduling and the step's own idle (vLLM 0.25.0 on an H100, Qwen3-235B's rank: 33.3, 26.0 and
    33.4 ms at 94, 48 and 24 layers: it does not grow with depth, so the cut records count too; the H200
    slices' is 11 ms, why is not established). The step's extent is not used: the profiler stretches a
    full-depth prefill (146 ms profiled against a 104 ms TTFT)."""
    vals = [r["metrics"]["ttft_ms"] - r["stages"]["extend"]["step_busy_us"] / 1e3 for r in recs
            if r["metrics"].get("ttft_ms") and (r["stages"].get("extend") or {}).get("step_busy_us")]
    return (statistics.median(vals), min(vals), max(vals)) if vals else None


def _departures(r: dict[str, Any]) -> list[str]:
    out = []
    args = r.get("extra_args") or []
    if "--attention-backend" in args:
        out.append("--attention-backend " + args[args.index("--attention-backend") + 1])
    if r.get("expert_load"):
        out.append("the expert recorder (~6 us a MoE layer, tests/data/gpu-3/README.md)")
    return out


def default_attention_ratio(engine: str, gpu: str, attn: str, ev: dict[str, Any] | None = None) -> tuple[float, str]:
    """Attention time with the engine's default backend over the Triton backend's, measured on one
    model that ran both ways on this engine (SGLang: FA3 vs Triton; MLA: DeepSeek-V3.1, GQA: Qwen3-235B)."""
    ev = ev or load_evidence()
    model = "DeepSeek-V3.1" if attn == "mla" else "Qwen3-235B"
    recs = [r for r in _records(ev) if (r["model"], r["engine"], r["gpu"], r["tp"]) == (model, engine, gpu, 1)]
    dflt = [r["stages"]["decode"]["layer_moe_us"]["attention"] for r in recs if _defaults_score(r) % 2 == 0
            and "--attention-backend" not in (r.get("extra_args") or [])]
    trit = [r["stages"]["decode"]["layer_moe_us"]["attention"] for r in recs
            if "--attention-backend" in (r.get("extra_args") or [])]
    if not dflt or not trit:
        return 1.0, "no pair measured"
    return statistics.median(dflt) / statistics.median(trit), f"default/triton attention on {model} {engine} {gpu.upper()}"


def _depth_scan_base(ev: dict[str, Any], model: str, engine: str, gpu: str) -> Base | None:
    """The H100 depth scan as a base (its per-layer split is given; its prefill split borrows the
    H200 slice's group shares of the same model and engine)."""
    for d in ev.get("depth_scans", []):
        if (d["model"], d["engine"], d["gpu"]) != (model, engine, gpu) or "decode_layer_us" not in d:
            continue
        ext = None
        same = [r for r in _records(ev) if (r["model"], r["engine"], r["tp"]) == (model, engine, 1)]
        shares = same[0]["stages"].get("extend", {}).get("layer_moe_us") if same else None
        if shares and d.get("prefill_layer_ms"):
            tot = sum(shares.get(g, 0.0) for g in GROUPS)
            ext = {g: d["prefill_layer_ms"] * 1e3 * shares.get(g, 0.0) / tot for g in GROUPS}
        return Base(model=model, engine=engine, gpu=gpu, tp=d["tp"], ep=d["ep"], backend="auto",
                    decode_moe={g: float(d["decode_layer_us"]["moe"].get(g, 0.0)) for g in GROUPS},
                    decode_dense=None, decode_outside_us=float(d["decode_outside_us"]), extend_moe=ext,
                    extend_dense=None, extend_outside_us=sum((same[0]["stages"].get("extend", {}).get("outside_us")
                                                              or {}).values()) if same else 0.0, input_len=int(d["input_len"]), output_len=int(d["output_len"]),
                    vocab=None, sources=[f"depth scan: {d['source']}"], spread=0.02)
    return None


def select_base(model: str, engine: str, gpu: str, tp: int, ep: int, backend: str = "auto",
                ev: dict[str, Any] | None = None) -> Base | None:
    """The best base for the target, in the order of the module docstring; None when the model
    has no record at all."""
    ev = ev or load_evidence()
    recs = [r for r in _records(ev) if r["model"] == model]
    if not recs:
        return None

    def pick(cands: list[dict[str, Any]]) -> list[dict[str, Any]]:
        best = min(_defaults_score(r) for r in cands)
        cands = [r for r in cands if _defaults_score(r) == best]
        same_backend = [r for r in cands if str(r.get("config", "")).endswith("_" + backend)]
        return same_backend or cands

    exact = [r for r in recs if (r["engine"], r["gpu"], r["tp"], r["ep"]) == (engine, gpu, tp, ep)]
    if exact and tp > 1:
        b = _base_of(pick(exact))
        b.how = "measured"
        return b
    ranks = [r for r in recs if (r["engine"], r["gpu"]) == (engine, gpu) and r.get("one_rank")]
    if ranks and tp > 2:   # one rank of another config at full depth: closer to a TP4/TP8 rank than a 2-layer
        # slice; TP1/TP2 keep the slices and depth scans they are checked against (docs/predict.md, section 8)
        near = min(abs(r["tp"] - tp) for r in ranks)
        b = _base_of(pick([r for r in ranks if abs(r["tp"] - tp) == near]))
        b.how = "scaled"
        return b
    tp1 = [r for r in recs if (r["engine"], r["gpu"], r["tp"]) == (engine, gpu, 1)]
    depth = _depth_scan_base(ev, model, engine, gpu)
    if depth is not None:     # full depth and real vocabulary beat a slice on the same GPU
        depth.how = "measured" if tp == 1 else "scaled"
        return depth
    if tp1:
        b = _base_of(pick(tp1))
        b.how = "measured" if tp == 1 else "scaled"
        return b
    for other_gpu in ("h200", "h100"):
        same = [r for r in recs if (r["engine"], r["gpu"], r["tp"]) == (engine, other_gpu, 1)]
        if same:
            b = _base_of(pick(same))
            b.how = "scaled"
            return b
    other = [r for r in recs if r["tp"] == 1 and r["engine"] != engine]
    if other:
        b = _base_of(pick(other))
        b.how = "scaled"
        return b
    return None


def engine_ratio(src: str, dst: str, gpu: str, attn: str, ev: dict[str, Any] | None = None) -> tuple[dict[str, float], str]:
    """Per-group factor dst/src measured on a model both engines ran at TP1 on ``gpu`` with the
    same attention kind (MLA: DeepSeek-V3.1; GQA: Qwen3-235B), engine defaults preferred."""
    ev = ev or load_evidence()
    model = "DeepSeek-V3.1" if attn == "mla" else "Qwen3-235B"
    a = select_base(model, src, gpu, 1, 1, ev=ev)
    b = select_base(model, dst, gpu, 1, 1, ev=ev)
    if a is None or b is None or a.engine != src or b.engine != dst:
        return {g: 1.0 for g in GROUPS}, f"no {dst}/{src} pair measured: factor 1"
    out = {g: (b.decode_moe[g] / a.decode_moe[g]) if a.decode_moe[g] > 0 else 1.0 for g in GROUPS}
    return out, f"{dst}/{src} per-group factors measured on {model} TP1 {gpu.upper()}"


def fixed_parts(engine: str, gpu: str, ev: dict[str, Any] | None = None) -> tuple[dict[str, float], str]:
    """Each group's fixed per-layer decode time, from a TP1/TP2 (no EP) pair of one model on
    this engine (GPU: this one, else any): ``2 t(TP2) - t(TP1)``, clamped to [0, 0.9 t(TP1)]."""
    ev = ev or load_evidence()
    for g_try in (gpu, "h200", "h100"):
        for model in ("Qwen3-235B", "DeepSeek-V3.1", "GLM-4.6"):
            recs = [r for r in _records(ev) if (r["model"], r["engine"], r["gpu"]) == (model, engine, g_try)]
            t1 = [r for r in recs if r["tp"] == 1 and not r.get("expert_load")]
            t2 = [r for r in recs if r["tp"] == 2 and r["ep"] == 1 and not r.get("expert_load")]
            if t1 and t2:
                a = _median_rows([r["stages"]["decode"]["layer_moe_us"] for r in t1])
                b = _median_rows([r["stages"]["decode"]["layer_moe_us"] for r in t2])
                out = {g: min(max(2 * b[g] - a[g], 0.0), 0.9 * a[g]) for g in GROUPS}
                out["attention"] = DEFAULT_FIXED_US["attention"] if out["attention"] <= 0 else out["attention"]
                return out, (f"fixed per-layer parts from {model} TP1 vs TP2 on {engine} {g_try.upper()} "
                             f"({len(t1)} + {len(t2)} records): " + ", ".join(f"{g} {v:.1f} us" for g, v in out.items()
                                                                  if g in ("moe", "gemm")))
    return dict(DEFAULT_FIXED_US), "fixed per-layer parts: defaults (no TP1/TP2 pair on this engine)"


def _host_bound(r: dict[str, Any]) -> bool:
    d = r["stages"]["decode"]
    return bool(d.get("step_extent_us")) and d.get("step_busy_us", 0) / d["step_extent_us"] < 0.6


def host_floor_ms(engine: str, gpu: str, tp: int, ev: dict[str, Any] | None = None) -> tuple[float, float, float, str]:
    """(median, min, max) ITL p50 of host-bound records (the device idles more than 40% of a
    step) of this engine: the time a step takes whatever the device does. TP > 1 uses TP2 records."""
    ev = ev or load_evidence()
    want_tp = 1 if tp == 1 else 2
    for g_try in (gpu, "h200", "h100"):
        vals = [r["metrics"]["itl_p50_ms"] for r in _records(ev) if r["engine"] == engine and r["gpu"] == g_try
                and r["tp"] == want_tp and _host_bound(r) and r["metrics"].get("itl_p50_ms")]
        for d in ev.get("depth_scans", []):   # the shallow end of a depth scan is host-bound
            if (d["engine"], d["gpu"], d["tp"]) == (engine, g_try, want_tp) and d.get("fit"):
                vals += [v for n, v in zip(d["depths"], d["itl_p50_ms"]) if n < d["fit"]["from_layers"]]
        if vals:
            return (statistics.median(vals), min(vals), max(vals),
                    f"{len(vals)} host-bound {engine} TP{want_tp} records on {g_try.upper()}")
    return 1.5, 1.0, 2.5, "no host-bound record: assumed 1.5 ms (1.0-2.5)"


def _rank_gap_us(r: dict[str, Any]) -> float | None:
    """A one-rank record's idle time a layer: (ITL p50 - the decode step's busy time - the step gap) / layers.
    The trace's own gaps are not used: the profiler stretches them (1.56 ms a profiled step against 0.59 ms
    unprofiled, Qwen3-235B's rank); kernel durations it leaves alone."""
    if not r.get("one_rank"):
        return None
    d = r["stages"].get("decode") or {}
    n = (r.get("shape") or {}).get("layers", [0])[0]
    if not (n and d.get("step_busy_us") and r["metrics"].get("itl_p50_ms")):
        return None
    return max(0.0, (r["metrics"]["itl_p50_ms"] - 0.05) * 1e3 - d["step_busy_us"]) / n


def layer_gap_us(engine: str, sources: list[str] | None = None,
                 ev: dict[str, Any] | None = None) -> tuple[float, float, float, str]:
    """GPU idle between a rank's kernels, per layer, at the small shards of TP >= 4: under CUDA graphs a
    kernel of 1-4 us ends before the next is dispatched (a 2-layer slice's step is host-bound and hides
    it; at TP1 the long kernels hide it: the H100 depth scan's ITL is its busy time + 0.05 ms). Measured on
    full-depth one-rank records: the base's own when it is one, else the engine's, else any engine's (said
    so). (median, min, max, how)."""
    ev = ev or load_evidence()
    ranks = [r for r in _records(ev) if r.get("one_rank") and _rank_gap_us(r) is not None]
    own = [_rank_gap_us(r) for r in ranks if sources and r["source"] in sources]
    if own:
        return (statistics.median(own), min(own), max(own),
                f"measured: this rank's ITL less its busy time, {len(own)} records")
    for pool, say in (([r for r in ranks if r["engine"] == engine], f"{engine} one-rank records"),
                      (ranks, f"one-rank records of {', '.join(sorted({r['engine'] for r in ranks}))} (none of {engine})")):
        vals = [_rank_gap_us(r) for r in pool]
        if vals:
            return (statistics.median(vals), min(vals), max(vals), f"median of {len(vals)} {say} "
                    f"({', '.join(sorted({r['gpu'].upper() for r in pool}))}): {min(vals):.1f}-{max(vals):.1f} us")
    return 0.0, 0.0, 0.0, "no one-rank record: none"


def ttft_host_ms(engine: str, gpu: str, ev: dict[str, Any] | None = None) -> tuple[float, float, float, str]:
    """(median, min, max) of TTFT less the prefill step's device extent: request handling,
    tokenization, scheduling and the first token's return, outside the prefill step."""
    ev = ev or load_evidence()
    for g_try in (gpu, "h200", "h100"):
        vals = [r["metrics"]["ttft_ms"] - r["stages"]["extend"]["step_extent_us"] / 1e3 for r in _records(ev)
                if r["engine"] == engine and r["gpu"] == g_try and r["metrics"].get("ttft_ms")
                and r["stages"].get("extend", {}).get("step_extent_us")
                and not r.get("one_rank")]   # the slices' figure; a full-depth rank carries its own (Base.ttft_host_ms)
        if vals:
            return (statistics.median(vals), min(vals), max(vals),
                    f"TTFT - prefill step extent over {len(vals)} {engine} records on {g_try.upper()}")
    return 12.0, 8.0, 20.0, "no record: assumed 12 ms (8-20)"
