"""Errors of `moetrace predict` against what one GPU measured (docs/predict.md, "Checks").

    PYTHONPATH=src python benchmarks/predict_check.py

1. Depth and GPU: the H100 depth scan (vLLM 0.25.0, Qwen3-235B at N = 10..14 layers, DeepSeek-V3.1 at
   N = 4, 6) predicted from the H200 2-layer slices alone (the depth scan held out).
2. TP2 from TP1: the 2-GPU records' per-layer compute (rank 0) and ITL predicted from TP1 records
   alone (TP2 records held out, except as the source of the collectives' and fixed parts' parameters,
   which makes TP2_auto partly circular; TP2_EP2 is not: its MoE time tests the EP-imbalance rule).
3. One rank at full depth: run 4's one-rank records (vLLM 0.25.0 on an H100, `--one-rank --routing balanced`,
   tests/data/gpu-4) predicted from runs 1-3 alone (H200 slices of 1-3 layers, TP1/TP2), as the run measured
   them (`as_one_rank`: each token's k / EP-groups local experts, no collectives).
"""

from __future__ import annotations

import copy
import dataclasses

from moetrace.plan.predict import predict
from moetrace.plan.predict_evidence import load_evidence
from moetrace.presets import get_preset


def _preset(name: str, **cfg):
    p = get_preset(name)
    return dataclasses.replace(p, hf_config={**p.hf_config, **cfg})


def depth() -> None:
    ev = copy.deepcopy(load_evidence())
    scans = {d["model"]: d for d in ev["depth_scans"]}
    ev["depth_scans"] = []
    print("| model | N layers | measured ITL p50 ms (H100) | predicted ms (from H200 slices) | error |")
    print("|---|---:|---:|---:|---:|")
    for model in ("Qwen3-235B", "DeepSeek-V3.1"):
        d = scans[model]
        for n, itl in zip(d["depths"], d["itl_p50_ms"]):
            if model == "Qwen3-235B" and n < 10:
                continue
            p = predict(_preset(model, num_hidden_layers=n), "TP1_auto", gpu="h100", engine="vllm", evidence=ev,
                        input_len=4096, output_len=512)
            if p.itl_ms is None:
                print(f"| {model} | {n} | {itl} | {p.verdict} | |")
                continue
            print(f"| {model} | {n} | {itl:.2f} | {p.itl_ms:.2f} | {100 * (p.itl_ms / itl - 1):+.1f}% |")
    p = predict(_preset("DeepSeek-V3.1", num_hidden_layers=6), "TP1_auto", gpu="h100", engine="vllm", evidence=ev)
    lay = sum(p.decode_layer_us["moe"].values())
    print(f"\nDeepSeek-V3.1 MoE decode layer on H100: predicted {lay:.1f} us "
          f"({ {g: round(v, 1) for g, v in p.decode_layer_us['moe'].items()} }), measured 280-300 us "
          f"({100 * (lay / 290 - 1):+.1f}% against 290)")
    p = predict(_preset("Qwen3-235B", num_hidden_layers=12), "TP1_auto", gpu="h100", engine="vllm", evidence=ev)
    lay = sum(p.decode_layer_us["moe"].values())
    print(f"Qwen3-235B decode layer on H100: predicted {lay:.1f} us "
          f"({ {g: round(v, 1) for g, v in p.decode_layer_us['moe'].items()} }), measured 211 us"
          f" ({100 * (lay / 211 - 1):+.1f}%)")


def tp2() -> None:
    full = load_evidence()
    ev = copy.deepcopy(full)
    ev["records"] = [r for r in ev["records"] if r["tp"] == 1]
    ev["depth_scans"] = []
    slice_cfg = {"num_hidden_layers": 2, "vocab_size": 32768}
    print("| engine | config | measured compute/layer us (rank 0) | predicted us | error | without attention: measured "
          "/ predicted / error | measured MoE us | predicted MoE us | measured ITL p50 ms | predicted ITL ms |")
    print("|---|---|---:|---:|---:|---|---:|---:|---:|---:|")
    for r in full["records"]:
        if r["tp"] != 2 or r["model"] != "Qwen3-235B":
            continue
        lay = r["stages"]["decode"]["layer_moe_us"]
        comp = sum(v for g, v in lay.items() if g != "communication")
        args = r.get("extra_args") or []
        backend = args[args.index("--attention-backend") + 1] if "--attention-backend" in args else None
        p = predict(_preset("Qwen3-235B", **slice_cfg), r["config"], gpu="h200", engine=r["engine"], evidence=ev,
                    attention_backend=backend)  # like for like: the attention the held-out record ran
        pl = p.decode_layer_us["moe"]
        pc = sum(pl.values())
        na, pna = comp - lay["attention"], pc - pl["attention"]
        print(f"| {r['engine']} | {r['config']}{' (recorder)' if r.get('expert_load') else ''}"
              f"{' (' + backend + ' attention)' if backend else ''} | {comp:.1f} | {pc:.1f} | "
              f"{100 * (pc / comp - 1):+.1f}% | {na:.1f} / {pna:.1f} / {100 * (pna / na - 1):+.1f}% | {lay['moe']:.1f} | "
              f"{pl['moe']:.1f} | {r['metrics']['itl_p50_ms']:.2f} | {p.itl_ms:.2f} |")


def ranks() -> None:
    """Two hold-outs: every one-rank record (the slices alone: no kernel-gap rule, which comes from the
    ranks), and the model's own one-rank records (the other model's rank gives the kernel gaps)."""
    full = load_evidence()
    slices = copy.deepcopy(full)
    slices["records"] = [r for r in slices["records"] if not r.get("one_rank")]
    print("| model | stands for | layers | GPU | measured ITL p50 ms | predicted ms, slices only | error | predicted ms, "
          "other model's rank too | error | measured us/layer (att / moe / gemm / other) | predicted us/layer | error "
          "| measured TTFT ms | predicted ms | error |")
    print("|---|---|---:|---|---:|---:|---:|---:|---:|---|---|---:|---:|---:|---:|")
    for r in full["records"]:
        if not r.get("one_rank"):
            continue
        others = copy.deepcopy(full)
        others["records"] = [x for x in others["records"] if not (x.get("one_rank") and x["model"] == r["model"])]
        n = r["shape"]["layers"][0]
        lay = r["stages"]["decode"]["layer_moe_us"]
        comp = sum(v for g, v in lay.items() if g != "communication")
        p, q = (predict(_preset(r["model"], num_hidden_layers=n), r["config"], gpu=r["gpu"], engine=r["engine"],
                        evidence=ev, as_one_rank=True) for ev in (slices, others))
        pl = p.decode_layer_us["moe"]
        pc = sum(pl.values())
        m = r["metrics"]
        fmt = lambda row: " / ".join(f"{row.get(g, 0.0):.1f}" for g in ("attention", "moe", "gemm", "other"))  # noqa: E731
        err = lambda x, y: f"{100 * (x / y - 1):+.1f}%"  # noqa: E731
        print(f"| {r['model']} | {r['config']} | {n} | {r['gpu'].upper()} | {m['itl_p50_ms']:.2f} | {p.itl_ms:.2f} | "
              f"{err(p.itl_ms, m['itl_p50_ms'])} | {q.itl_ms:.2f} | {err(q.itl_ms, m['itl_p50_ms'])} | {comp:.1f} "
              f"({fmt(lay)}) | {pc:.1f} ({fmt(pl)}) | {err(pc, comp)} | {m['ttft_ms']:.1f} | {p.ttft_ms:.1f} | "
              f"{err(p.ttft_ms, m['ttft_ms'])} |")


if __name__ == "__main__":
    depth()
    print()
    tp2()
    print()
    ranks()
