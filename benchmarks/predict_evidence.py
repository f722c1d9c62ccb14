"""Build the evidence `moetrace predict` predicts from: src/moetrace/plan/data/predict_evidence.json.

    PYTHONPATH=src python benchmarks/predict_evidence.py [RESULTS_DIR ...] [--out PATH]

Reads every success record of the results directories given (default: the GPU runs in
tests/data: gpu, gpu-2, gpu-3 and, when it lands, gpu-4), re-reads their rank traces with
moetrace's own analyzer (traces/layers.py: per-layer group times, the step outside the layers,
device busy and gaps, each collective call) and writes one small JSON entry per record: the
model, engine and version, GPU kind, config, its measured ITL/TTFT, and per stage the mean MoE
layer, the mean dense layer, the outside-the-layers time, the step's extent/busy/gaps and, at
TP > 1, the all-reduce per-call times (per call the fastest rank: the one that did not wait).

Figures that exist only as text (the H100 depth scan of /work/shared/gpu-engines/README.md, which
does not ship) are kept in DEPTH_SCANS below with their source string and copied as they are.
Re-run this script after new records land (run 4: one-rank full-depth records) and commit the
JSON it writes; `moetrace predict` reads only that file.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DIRS = ("tests/data/gpu", "tests/data/gpu-2", "tests/data/gpu-3", "tests/data/gpu-4")
OUT = ROOT / "src/moetrace/plan/data/predict_evidence.json"
SCHEMA = 1

# Figures seen only as text: the vLLM 0.25.0 dummy-loader depth scan on one H100 (real widths,
# num_hidden_layers cut to N). Per decode layer and per step outside the layers, in microseconds.
DEPTH_SCANS: list[dict[str, Any]] = [
    {
        "id": "h100-depth-qwen3-235b",
        "source": "vLLM 0.25.0 dummy loader, H100, 2026-12-06 (shared/gpu-engines/README.md, depth scan)",
        "model": "Qwen3-235B", "engine": "vllm", "version": "0.25.0", "gpu": "h100", "tp": 1, "ep": 1,
        "depths": [2, 4, 6, 8, 10, 11, 12, 13, 14],
        "itl_p50_ms": [2.28, 2.18, 2.03, 2.29, 2.55, 2.75, 2.96, 3.16, 3.37],
        "fit": {"from_layers": 10, "itl_intercept_ms": 0.47, "itl_per_layer_ms": 0.207, "rms_ms": 0.002,
                "busy_intercept_ms": 0.42, "busy_per_layer_ms": 0.207},
        "decode_layer_us": {"moe": {"attention": 18.0, "moe": 112.0, "gemm": 61.0, "other": 12.0}},
        "decode_outside_us": 450.0,
        "prefill_layer_ms": 4.6, "input_len": 4096, "output_len": 512,
        "notes": "host-bound (GPU idle 35-61% of a decode step) below 10 layers",
    },
    {
        "id": "h100-depth-deepseek-v3.1",
        "source": "vLLM 0.25.0 dummy loader, H100, 2026-12-06 (shared/gpu-engines/README.md, depth scan)",
        "model": "DeepSeek-V3.1", "engine": "vllm", "version": "0.25.0", "gpu": "h100", "tp": 1, "ep": 1,
        "depths": [4, 6], "itl_p50_ms": [1.96, 2.53],
        "decode_moe_layer_us_total": 290.0, "decode_moe_layer_us_range": [280.0, 300.0],
        "input_len": 4096, "output_len": 512,
        "notes": "first 3 layers dense; N=4 has 1 MoE layer, N=6 has 3; no tuned fp8 MoE config on H100",
    },
]

# Which kernel each engine's collectives ran, as the run READMEs name them (tests/data/gpu*/README.md).
ALGORITHMS = {
    ("vllm", "decode"): "custom one-shot all-reduce (cross_device_reduce_1stage)",
    ("vllm", "extend"): "NCCL ring LL (ncclDevKernel_AllReduce_Sum_bf16_RING_LL)",
    ("sglang", "decode"): "FlashInfer one-shot Lamport all-reduce fusion (allreduce_fusion_kernel_oneshot_lamport)",
    ("sglang", "extend"): "NCCL ring LL (ncclDevKernel_AllReduce_Sum_bf16_RING_LL)",
}


def _gpu_key(record: dict[str, Any]) -> str | None:
    from moetrace.plan.hardware import parse_nvidia_smi
    gpus = (record.get("host") or {}).get("gpus") or []
    if not gpus:
        return (record.get("options") or {}).get("gpu")
    return parse_nvidia_smi(f"{gpus[0].get('name', '')}, {gpus[0].get('memory', '')}")


def _model_name(name: str) -> str:
    for suffix in ("-hot-slice", "-slice"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def _slice_config(results_dir: Path, run_model: str) -> dict[str, Any]:
    """The slice's config.json (its vocabulary is cut: its LM head is not the model's)."""
    for meta in sorted(results_dir.parent.glob("slices/*/moetrace.json")):
        try:
            if json.loads(meta.read_text()).get("name") == run_model:
                cfg = json.loads((meta.parent / "config.json").read_text())
                return {"vocab": cfg.get("vocab_size"), "hidden": cfg.get("hidden_size"),
                        "layers": cfg.get("num_hidden_layers"), "slice": str(meta.parent.relative_to(ROOT))}
        except (OSError, ValueError):
            continue
    return {}


def _stage_key(stage: str) -> str:
    return "decode" if stage.upper() == "DECODE" else "extend"


def _rows(layers: Any) -> dict[str, Any]:
    """Mean group times of the MoE layers and of the dense layers, and the outside row."""
    out: dict[str, Any] = {"layers_per_step": layers.layers_per_step, "steps": layers.steps}
    for kind in ("moe", "dense"):
        rows = [r for r in layers.rows if r.kind == kind]
        if rows:
            out[f"layer_{kind}_us"] = {g: round(statistics.fmean(r.group_us[g] for r in rows), 2)
                                       for g in rows[0].group_us}
            out[f"n_{kind}"] = len(rows)
    if layers.outside is not None:
        out["outside_us"] = {g: round(v, 2) for g, v in layers.outside.group_us.items()}
    return out


def _analyze_rank(path: Path) -> dict[str, Any]:
    from moetrace.traces.analyze import analyze_trace
    s = analyze_trace(path)
    out: dict[str, Any] = {}
    for stage, lay in s.layers.items():
        key = _stage_key(stage)
        out[key] = _rows(lay)
        st = s.step_times.get(stage)
        if st is not None:
            out[key].update(step_extent_us=round(st.extent_us, 2), step_busy_us=round(st.busy_us, 2),
                            step_gaps_us=round(st.gaps_us, 2))
        cm = s.comm.get(stage)
        if cm is not None and cm.calls:
            out[key]["comm_calls"] = cm.call_us
            out[key]["comm_by_kind"] = cm.by_kind
    return out


def _fastest_calls(ranks: list[dict[str, Any]], stage: str) -> dict[str, Any] | None:
    """Per collective call, the fastest rank's duration (the others waited in it), then per-step
    call counts and the median: the collective's own time."""
    lists = [r.get(stage, {}).get("comm_calls") for r in ranks]
    lists = [x for x in lists if x]
    if len(lists) < 2:
        return None
    steps = min(len(x) for x in lists)
    per_call: list[float] = []
    counts = []
    for i in range(steps):
        calls = [x[i] for x in lists]
        n = min(len(c) for c in calls)
        counts.append(n)
        per_call += [min(c[j] for c in calls) for j in range(n)]
    if not per_call:
        return None
    per_call.sort()
    return {"calls_per_step": statistics.median(counts), "call_us_median": round(statistics.median(per_call), 2),
            "call_us_p10": round(per_call[len(per_call) // 10], 2),
            "call_us_p90": round(per_call[(9 * len(per_call)) // 10], 2), "n": len(per_call)}


def _variant(e: dict[str, Any], r: dict[str, Any]) -> None:
    """A record of a model variant (variants.py: dummy weights, a cut depth, one rank of a config):
    what it stands for. A one-rank record runs at TP1 the shapes of one rank of ``stands_for``; its
    collectives, the wait for the busiest EP rank and the router's full width are left out, its
    local top-k is the uniform expectation (rounded), its shared expert is wider than the real rank's."""
    md = r.get("model_detail") or {}
    if not md:
        return
    e["model"] = md.get("of") or e["model"]
    e["weights"] = md.get("weights")
    e["routing"] = (r.get("options") or {}).get("routing")
    e["shape"] = {"layers": md.get("layers")}   # the real vocabulary (cut only in slices): LM head as the model's
    one = md.get("one_rank")
    if one:
        e.update(config=one.get("stands_for"), tp=int(one["tp"]), ep=int(one["ep"]), run_config=r.get("config"))
        e["one_rank"] = {k: one.get(k) for k in ("moe_ep", "moe_tp", "top_k", "expert_width", "routed_experts",
                                                 "shared_expert_extra_params")}
        e["left_out"] = md.get("left_out")


def entry(record_path: Path, root: Path) -> dict[str, Any] | None:
    r = json.loads(record_path.read_text())
    if r.get("status") != "success":
        return None
    results_dir = record_path.parent.parent
    prof = r.get("profile") or {}
    cfg = r.get("config_detail") or {}
    eng = r.get("engine") or {}
    m = r.get("metrics") or {}
    e: dict[str, Any] = {
        "id": f"{record_path.relative_to(root).parent.parent}/{r.get('attempt_id')}",
        "source": str(record_path.relative_to(root)),
        "model": _model_name(str(r.get("model"))), "run_model": r.get("model"), "config": r.get("config"),
        "engine": eng.get("name") or (r.get("options") or {}).get("engine"), "version": eng.get("version"),
        "gpu": _gpu_key(r), "tp": cfg.get("tp", 1), "ep": cfg.get("ep", 1),
        "extra_args": (r.get("options") or {}).get("extra_args") or [],
        "expert_load": bool((r.get("options") or {}).get("expert_load")),
        "shape": _slice_config(results_dir, str(r.get("model"))),
        "started_at": r.get("started_at"),
        "input_len": (r.get("workload") or {}).get("input_len"),
        "output_len": (r.get("workload") or {}).get("output_len"),
        "metrics": {k: round(float(m[k]), 4) for k in ("itl_p50_ms", "itl_ms", "ttft_ms", "latency_s")
                    if m.get(k) is not None},
    }
    _variant(e, r)
    ranks = []
    for stage in ("decode", "extend"):
        for i, rel in enumerate(prof.get(f"{stage}_all") or []):
            p = results_dir / rel
            if not p.exists():
                continue
            while len(ranks) <= i:
                ranks.append({})
            try:
                a = _analyze_rank(p)
            except Exception as exc:  # a broken trace: say so, keep the record's metrics
                e.setdefault("problems", []).append(f"{rel}: {exc}")
                continue
            if stage in a:
                ranks[i][stage] = a[stage]
    if ranks and ranks[0]:
        r0 = ranks[0]
        e["stages"] = {s: {k: v for k, v in r0[s].items() if k not in ("comm_calls",)} for s in r0}
        for s in ("decode", "extend"):
            fc = _fastest_calls(ranks, s)
            if fc is not None:
                fc["algorithm"] = ALGORITHMS.get((e["engine"], s))
                e.setdefault("collectives", {})[s] = fc
    return e


def build(dirs: list[Path], root: Path) -> dict[str, Any]:
    entries = []
    for d in dirs:
        for rec in sorted(d.glob("results*/records/*.json")) + sorted(d.glob("records/*.json")):
            x = entry(rec, root)
            if x is not None and x.get("stages"):
                entries.append(x)
    return {"schema": SCHEMA, "built_by": "benchmarks/predict_evidence.py",
            "note": "per-rank device times from moetrace records; re-run the script to add records",
            "records": entries, "depth_scans": DEPTH_SCANS}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dirs", nargs="*", help="results directories (default: tests/data/gpu*)")
    ap.add_argument("--out", default=str(OUT))
    a = ap.parse_args(argv)
    dirs = [Path(d) for d in a.dirs] if a.dirs else [ROOT / d for d in DEFAULT_DIRS if (ROOT / d).exists()]
    data = build([d.resolve() for d in dirs], ROOT)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(data, indent=1, sort_keys=False) + "\n")
    print(f"{len(data['records'])} records, {len(data['depth_scans'])} depth scans -> {a.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
