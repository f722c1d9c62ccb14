"""The planner's weight bytes against a real allocation at real width, on a GPU.

For each case, a few layers of one of the six architectures at its real width (the preset's real
``config.json`` with ``num_hidden_layers`` cut to ``--layers``; embeddings, final norm and LM head
kept) are built on the GPU with random weights, and ``torch.cuda.memory_allocated()`` after the
load is printed next to the planner's prediction for the same config
(``moetrace.plan.evidence.predict_weights``, i.e. ``weights_per_gpu`` at TP1, what ``plan_config``
uses), in total, without embedding and head, and per part.

Two ways of loading:

* ``tensors``: one GPU tensor per checkpoint tensor, as ``moetrace.tiny.tensor_specs`` lists the
  real checkpoints' names and shapes (checked against vLLM's loaders; since the layout was made
  one description, this list comes from the planner's ``moetrace.plan.arch.checkpoint_tensors``,
  so it checks the byte formulas and the allocator, not the layout), in the checkpoint's
  storage format: BF16, or for ``fp8`` FP8-E4M3 weights plus one FP32 ``weight_scale_inv`` per
  128 x 128 block, as DeepSeek-V3.1 ships;
* ``transformers`` (independent of the planner): the Hugging Face model class (``AutoModelForCausalLM.from_config``) built
  under ``torch.device("cuda")`` in BF16, when transformers is installed and knows the
  model type (buffers such as rotary ``inv_freq`` are counted too: they are real memory).

Also measured: the CUDA context (device memory in use after ``torch.cuda.init()`` and one cuBLAS
matmul, from ``cudaMemGetInfo``), against the planner's 1.0 GiB allowance at TP1.

    PYTHONPATH=src python3 benchmarks/gpu/plan_memory.py --out $OUT/plan_memory.json
    CPU dry run (tiny widths, no allocator figures):
    PYTHONPATH=src python benchmarks/gpu/plan_memory.py --device cpu --tiny --out /tmp/pm.json
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))

from moetrace.plan.arch import build_arch  # noqa: E402
from moetrace.plan.evidence import predict_weights  # noqa: E402
from moetrace.presets import get_preset  # noqa: E402
from moetrace.tiny import tensor_specs, tiny_hf_config  # noqa: E402

GIB = 2**30
CASES = {
    # name: (preset, storage)
    "qwen3-235b-bf16": ("Qwen3-235B", "bf16"),
    "deepseek-v3.1-bf16": ("DeepSeek-V3.1", "bf16"),
    "deepseek-v3.1-fp8": ("DeepSeek-V3.1", "fp8"),
}


def case_config(preset_name: str, storage: str, layers: int, tiny: bool) -> dict[str, Any]:
    cfg = copy.deepcopy(get_preset(preset_name).hf_config)
    if tiny:
        cfg = tiny_hf_config(cfg)
    cfg["num_hidden_layers"] = layers
    cfg.pop("auto_map", None)
    cfg["num_nextn_predict_layers"] = 0
    if storage == "bf16":
        cfg.pop("quantization_config", None)
    elif storage == "fp8":
        q = (get_preset(preset_name).hf_config.get("quantization_config") or {})
        if q.get("quant_method") != "fp8":
            raise SystemExit(f"{preset_name} is not an fp8 checkpoint")
        cfg["quantization_config"] = q
    return cfg


def part_of(name: str) -> str:
    """The planner's part (moetrace.plan.arch.PARTS) of a checkpoint tensor, by its name."""
    if name.startswith("model.embed_tokens"):
        return "embedding"
    if name.startswith("lm_head"):
        return "lm_head"
    if ".experts." in name:
        return "routed_experts"
    if "shared_expert" in name:
        return "shared_experts"
    if name.endswith(".gate.weight") or "e_score_correction_bias" in name:
        return "router"
    if "norm" in name:
        return "norms"
    if ".self_attn." in name:
        return "attention"
    if ".mlp." in name:
        return "dense_mlp"
    return "other"


def fp8_skipped(module: str, q: dict[str, Any]) -> bool:
    skip = q.get("modules_to_not_convert") or []
    parts = module.split(".")
    return any(s in parts or module.endswith(s) for s in skip)


def plan_tensors(cfg: dict[str, Any], torch: Any) -> list[tuple[str, tuple[int, ...], Any]]:
    """(name, shape, torch dtype) of every tensor the checkpoint of ``cfg`` stores."""
    q = cfg.get("quantization_config") or {}
    fp8 = q.get("quant_method") == "fp8"
    blk = tuple(q.get("weight_block_size") or (128, 128))
    out = []
    for s in tensor_specs(cfg):
        if s.kind == "ebias":
            out.append((s.name, s.shape, torch.float32))
        elif s.kind == "linear" and fp8 and not fp8_skipped(s.module, q):
            out.append((s.name, s.shape, torch.float8_e4m3fn))
            r, c = s.shape
            out.append((s.module + ".weight_scale_inv", (math.ceil(r / blk[0]), math.ceil(c / blk[1])), torch.float32))
        else:
            out.append((s.name, s.shape, torch.bfloat16))
    return out


class Mem:
    def __init__(self, torch: Any, device: str) -> None:
        self.torch, self.cuda = torch, device == "cuda"

    def snap(self) -> dict[str, int]:
        if not self.cuda:
            return {"allocated": 0, "reserved": 0, "device_used": 0}
        t = self.torch
        t.cuda.synchronize()
        free, total = t.cuda.mem_get_info()
        return {"allocated": t.cuda.memory_allocated(), "reserved": t.cuda.memory_reserved(),
                "device_used": total - free}

    @staticmethod
    def delta(a: dict[str, int], b: dict[str, int]) -> dict[str, int]:
        return {k: b[k] - a[k] for k in a}


def load_tensors(cfg: dict[str, Any], torch: Any, device: str, mem: Mem) -> dict[str, Any]:
    specs = plan_tensors(cfg, torch)
    before = mem.snap()
    t0 = time.perf_counter()
    held, by_part = [], {}
    nbytes = 0
    for name, shape, dt in specs:
        x = torch.empty(shape, dtype=dt, device=device)
        if dt == torch.float8_e4m3fn:
            x.view(torch.uint8).random_(0, 120)   # finite e4m3 codes
        else:
            x.normal_(0.0, 0.02)
        held.append(x)
        b = x.numel() * x.element_size()
        nbytes += b
        by_part[part_of(name)] = by_part.get(part_of(name), 0) + b
    after = mem.snap()
    out = {"method": "tensors", "n_tensors": len(specs), "tensor_bytes": nbytes, "parts": by_part,
           "seconds": round(time.perf_counter() - t0, 3), **{f"{k}_bytes": v for k, v in Mem.delta(before, after).items()}}
    del held
    if mem.cuda:
        torch.cuda.empty_cache()
    return out


def load_transformers(cfg: dict[str, Any], torch: Any, device: str, mem: Mem) -> dict[str, Any]:
    try:
        import transformers
        from transformers import AutoConfig, AutoModelForCausalLM
    except Exception as e:  # noqa: BLE001
        return {"method": "transformers", "error": f"transformers not importable: {e}"}
    c = dict(cfg)
    c.pop("quantization_config", None)
    c.pop("architectures", None)
    mt = c.pop("model_type")
    try:
        hf = AutoConfig.for_model(mt, **c)
    except Exception as e:  # noqa: BLE001
        return {"method": "transformers", "error": f"AutoConfig.for_model({mt!r}): {type(e).__name__}: {e}"}
    before = mem.snap()
    t0 = time.perf_counter()
    try:
        old = torch.get_default_dtype()
        torch.set_default_dtype(torch.bfloat16)
        try:
            with torch.device(device):
                model = AutoModelForCausalLM.from_config(hf)  # default dtype bf16 above
        finally:
            torch.set_default_dtype(old)
    except Exception as e:  # noqa: BLE001
        return {"method": "transformers", "error": f"from_config: {type(e).__name__}: {str(e)[:400]}"}
    after = mem.snap()
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    buffers = sum(b.numel() * b.element_size() for b in model.buffers())
    off = sorted({str(p.device) for p in model.parameters()})
    out = {"method": "transformers", "transformers": transformers.__version__, "class": type(model).__name__,
           "param_bytes": params, "buffer_bytes": buffers, "param_devices": off,
           "n_params": sum(p.numel() for p in model.parameters()),
           "seconds": round(time.perf_counter() - t0, 3), **{f"{k}_bytes": v for k, v in Mem.delta(before, after).items()}}
    del model
    if mem.cuda:
        torch.cuda.empty_cache()
    return out


def context(torch: Any, device: str) -> dict[str, Any]:
    if device != "cuda":
        return {}
    torch.cuda.init()
    free, total = torch.cuda.mem_get_info()
    at_init = total - free
    a = torch.randn(1024, 1024, device="cuda", dtype=torch.bfloat16)
    (a @ a).sum().item()
    del a
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    free, total = torch.cuda.mem_get_info()
    return {"total_bytes": total, "used_after_init_bytes": at_init, "used_after_cublas_bytes": total - free,
            "planner_context_tp1_bytes": GIB}


def env(torch: Any, device: str) -> dict[str, Any]:
    e: dict[str, Any] = {"python": sys.version.split()[0], "torch": torch.__version__, "platform": platform.platform()}
    if device == "cuda":
        e["device_name"] = torch.cuda.get_device_name(0)
        e["cuda"] = torch.version.cuda
        try:
            e["nvidia_smi"] = subprocess.run(
                ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                capture_output=True, text=True, timeout=20).stdout.strip()
        except Exception as ex:  # noqa: BLE001
            e["nvidia_smi"] = f"unavailable: {ex}"
    return e


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True, help="JSON file to write (rewritten after each case)")
    ap.add_argument("--cases", nargs="*", default=list(CASES), choices=list(CASES))
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    ap.add_argument("--tiny", action="store_true", help="tiny widths (a CPU dry run of the script)")
    ap.add_argument("--no-transformers", action="store_true")
    ap.add_argument("--budget-s", type=float, default=170.0, help="skip what would start after this many seconds")
    args = ap.parse_args()

    import torch

    t_start = time.perf_counter()
    if args.device == "cuda" and not torch.cuda.is_available():
        print("no CUDA device", file=sys.stderr)
        return 2
    doc: dict[str, Any] = {"env": env(torch, args.device), "context": context(torch, args.device),
                           "layers": args.layers, "tiny": args.tiny, "cases": []}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    mem = Mem(torch, args.device)
    print(json.dumps({"env": doc["env"], "context": doc["context"]}), flush=True)
    for name in args.cases:
        preset, storage = CASES[name]
        cfg = case_config(preset, storage, args.layers, args.tiny)
        a = build_arch(cfg)
        w = predict_weights(cfg, tp=1, engine="vllm")
        emb = w.parts.get("embedding", 0.0) + w.parts.get("lm_head", 0.0)
        case: dict[str, Any] = {
            "case": name, "preset": preset, "storage": storage, "layers": args.layers,
            "dense_layers": a.dense_layers, "moe_layers": a.moe_layers,
            "shape": {"hidden": a.hidden, "vocab": a.vocab, "attn": a.attn, "heads": a.n_heads,
                      "kv_heads": a.n_kv_heads, "head_dim": a.head_dim, "experts": a.n_experts,
                      "moe_inter": a.moe_inter, "dense_inter": a.dense_inter, "shared_inter": a.shared_inter},
            "predicted_bytes": int(round(w.total)), "predicted_without_embeddings_bytes": int(round(w.total - emb)),
            "predicted_parts": {k: int(round(v)) for k, v in w.parts.items()}, "loads": [],
        }
        methods = ["tensors"] + ([] if args.no_transformers or storage != "bf16" else ["transformers"])
        for m in methods:
            if time.perf_counter() - t_start > args.budget_s:
                case["loads"].append({"method": m, "error": "skipped: time budget"})
                continue
            r = (load_tensors if m == "tensors" else load_transformers)(cfg, torch, args.device, mem)
            if "allocated_bytes" in r and args.device == "cuda":
                meas = r["allocated_bytes"]
                r["error_pct"] = 100.0 * (w.total - meas) / meas if meas else None
                if m == "tensors":
                    m_emb = r["parts"].get("embedding", 0) + r["parts"].get("lm_head", 0)
                    r["allocated_without_embeddings_bytes"] = meas - m_emb
                    r["error_without_embeddings_pct"] = 100.0 * (w.total - emb - (meas - m_emb)) / (meas - m_emb)
            case["loads"].append(r)
            print(json.dumps({"case": name, "predicted_bytes": case["predicted_bytes"], **r}), flush=True)
        doc["cases"].append(case)
        doc["seconds"] = round(time.perf_counter() - t_start, 1)
        out.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"wrote {out} in {doc.get('seconds')} s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
