"""Profile a MoE decoder at a real model's layer shapes and write engine-style traces.

This is a stand-in for an engine, not an engine: a plain PyTorch Qwen3-MoE-style decoder
(GQA attention through torch SDPA, router gate + top-k, token permute, grouped expert GEMMs
through ``torch._grouped_mm`` (CUTLASS on Hopper), unpermute, tensor-parallel all-reduce over
NCCL), profiled with ``torch.profiler`` and annotated the way the engines annotate their steps:

* ``--style sglang``: ``step[EXTEND bs=1 toks=4096]`` / ``step[DECODE bs=1]``, one trace per
  stage and rank, named ``{prefix}-{profile_id}-TP-{rank}-EXTEND.trace.json.gz`` (engines.md).
* ``--style vllm``: ``execute_context_1(2048)_generation_0(0)`` (prefill chunked by 2048) and
  ``execute_context_0(0)_generation_1(1)``, one trace per rank named
  ``dp0_pp0_tp{r}_dcp0_ep0_rank{r}.{ns}.pt.trace.json.gz``.

Shapes come from the preset's real ``config.json`` (default Qwen3-235B-A22B) divided by
``--shard-tp`` (heads and expert intermediate size, as one TP shard holds them). ``--tiny``
swaps in a small config for CPU runs. Weights are random; routing is therefore near uniform.

Single GPU:  python3 benchmarks/gpu/moe_layer_trace.py --out DIR
Two GPUs:    python3 -m torch.distributed.run --nproc-per-node 2 benchmarks/gpu/moe_layer_trace.py \
                 --shard-tp 2 --out DIR
CPU:         python benchmarks/gpu/moe_layer_trace.py --device cpu --tiny --style vllm --out DIR
Big trace:   add ``--only decode --decode-steps 500 --layers 16 --no-gzip`` (weights are reused
             across layers beyond ``--weight-sets``, so memory stays small).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import shutil
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile, record_function

REPO = Path(__file__).resolve().parents[2]
PRESETS = REPO / "src" / "moetrace" / "presets" / "data"


@dataclass(frozen=True)
class Shape:
    model: str
    hidden: int
    heads: int  # query heads in this shard
    kv_heads: int  # key/value heads in this shard (replicated when tp > kv heads)
    head_dim: int
    experts: int
    top_k: int
    moe_inter: int  # expert intermediate size in this shard
    vocab: int  # lm_head rows in this shard
    rope_theta: float
    shard_tp: int


def load_shape(preset: str, shard_tp: int, tiny: bool) -> Shape:
    if tiny:  # the tiny random Qwen3-MoE of engines.md: hidden 128, 8 experts, top-2
        return Shape("tiny-qwen3-moe", 128, 4, 2, 32, 8, 2, 64, 2048, 1e6, 1)
    cfg = json.loads((PRESETS / f"{preset}.json").read_text())["hf_config"]
    heads, kv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    return Shape(
        model=preset,
        hidden=cfg["hidden_size"],
        heads=heads // shard_tp,
        kv_heads=max(kv // shard_tp, 1),
        head_dim=cfg.get("head_dim") or cfg["hidden_size"] // heads,
        experts=cfg["num_experts"],
        top_k=cfg["num_experts_per_tok"],
        moe_inter=cfg["moe_intermediate_size"] // shard_tp,
        vocab=cfg["vocab_size"] // shard_tp,
        rope_theta=float(cfg.get("rope_theta", 1e6)),
        shard_tp=shard_tp,
    )


class Layer:
    """One decoder layer's weights (a TP shard) and its KV cache."""

    def __init__(self, s: Shape, max_len: int, dev: torch.device, dtype: torch.dtype) -> None:
        def w(*shape: int) -> torch.Tensor:
            return torch.empty(*shape, device=dev, dtype=dtype).normal_(0, 0.02)

        qkv_out = (s.heads + 2 * s.kv_heads) * s.head_dim
        self.w_qkv = w(qkv_out, s.hidden)
        self.w_o = w(s.hidden, s.heads * s.head_dim)
        self.q_norm = torch.ones(s.head_dim, device=dev, dtype=dtype)
        self.k_norm = torch.ones(s.head_dim, device=dev, dtype=dtype)
        self.ln1 = torch.ones(s.hidden, device=dev, dtype=dtype)
        self.ln2 = torch.ones(s.hidden, device=dev, dtype=dtype)
        self.w_gate = w(s.experts, s.hidden)
        self.w13 = w(s.experts, 2 * s.moe_inter, s.hidden)  # gate and up, stacked
        self.w2 = w(s.experts, s.hidden, s.moe_inter)
        self.k_cache = torch.zeros(1, s.kv_heads, max_len, s.head_dim, device=dev, dtype=dtype)
        self.v_cache = torch.zeros_like(self.k_cache)


def rope_cache(pos: torch.Tensor, head_dim: int, theta: float, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    half = head_dim // 2
    inv = 1.0 / (theta ** (torch.arange(0, half, device=pos.device, dtype=torch.float32) / half))
    ang = pos.float()[:, None] * inv[None, :]
    return ang.cos().to(dtype), ang.sin().to(dtype)


def rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)


def all_reduce(x: torch.Tensor) -> torch.Tensor:
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(x)
    return x


def attention(s: Shape, L: Layer, x: torch.Tensor, start: int,
              cos_sin: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    n = x.shape[0]
    h = F.rms_norm(x, (s.hidden,), L.ln1, 1e-6)
    qkv = h @ L.w_qkv.t()
    q, k, v = qkv.split([s.heads * s.head_dim, s.kv_heads * s.head_dim, s.kv_heads * s.head_dim], -1)
    q = F.rms_norm(q.view(n, s.heads, s.head_dim), (s.head_dim,), L.q_norm, 1e-6)
    k = F.rms_norm(k.view(n, s.kv_heads, s.head_dim), (s.head_dim,), L.k_norm, 1e-6)
    q, k = rope(q.transpose(0, 1), *cos_sin), rope(k.transpose(0, 1), *cos_sin)
    end = start + n
    L.k_cache[0, :, start:end] = k
    L.v_cache[0, :, start:end] = v.view(n, s.kv_heads, s.head_dim).transpose(0, 1)
    o = F.scaled_dot_product_attention(
        q.unsqueeze(0), L.k_cache[:, :, :end], L.v_cache[:, :, :end],
        is_causal=n > 1 and start == 0, enable_gqa=True,
    )
    o = o[0].transpose(0, 1).reshape(n, s.heads * s.head_dim) @ L.w_o.t()
    return x + all_reduce(o)


def grouped_mm(a: torch.Tensor, w: torch.Tensor, offs: torch.Tensor, looped: bool) -> torch.Tensor:
    """Token-sorted rows times one weight matrix per expert; ``w`` is (E, out, in)."""
    if not looped:
        return torch._grouped_mm(a, w.transpose(-2, -1), offs=offs)
    out, lo = a.new_empty(a.shape[0], w.shape[1]), 0
    for e, hi in enumerate(offs.tolist()):
        if hi > lo:
            out[lo:hi] = a[lo:hi] @ w[e].t()
        lo = hi
    return out


def moe(s: Shape, L: Layer, x: torch.Tensor, looped: bool) -> torch.Tensor:
    h = F.rms_norm(x, (s.hidden,), L.ln2, 1e-6)
    # routing: gate GEMM, softmax, top-k, renormalise (Qwen3: norm_topk_prob)
    probs = torch.softmax((h @ L.w_gate.t()).float(), dim=-1)
    topw, topi = torch.topk(probs, s.top_k, dim=-1)
    topw = (topw / topw.sum(-1, keepdim=True)).to(x.dtype)
    # permute: sort (token, slot) pairs by expert, cumulative offsets per expert
    flat = topi.flatten()
    order = torch.argsort(flat, stable=True)
    offs = torch.cumsum(torch.bincount(flat, minlength=s.experts), 0).to(torch.int32)
    token_of = order // s.top_k
    rows = h.index_select(0, token_of)
    # expert GEMMs: gate/up, SiLU-and-mul, down
    gu = grouped_mm(rows, L.w13, offs, looped)
    act = F.silu(gu[:, : s.moe_inter]) * gu[:, s.moe_inter :]
    down = grouped_mm(act, L.w2, offs, looped)
    # unpermute: weight by router probabilities and scatter-add back to tokens
    down = down * topw.flatten()[order].unsqueeze(-1)
    out = torch.zeros_like(x).index_add_(0, token_of, down)
    return x + all_reduce(out)


class Model:
    def __init__(self, s: Shape, layers: int, weight_sets: int, max_len: int,
                 dev: torch.device, dtype: torch.dtype, looped: bool) -> None:
        self.s, self.dev, self.looped = s, dev, looped
        sets = [Layer(s, max_len, dev, dtype) for _ in range(min(weight_sets, layers))]
        self.layers = [sets[i % len(sets)] for i in range(layers)]
        self.embed = torch.empty(s.vocab * s.shard_tp, s.hidden, device=dev, dtype=dtype).normal_(0, 0.02)
        self.lm_head = torch.empty(s.vocab, s.hidden, device=dev, dtype=dtype).normal_(0, 0.02)
        self.ln_f = torch.ones(s.hidden, device=dev, dtype=dtype)

    def forward(self, ids: list[int], start: int) -> int:
        """One engine step: copy inputs in, run the layers, sample one token, copy it out."""
        tok = torch.tensor(ids, dtype=torch.long).to(self.dev, non_blocking=True)
        pos = torch.arange(start, start + len(ids), dtype=torch.long).to(self.dev, non_blocking=True)
        cos_sin = rope_cache(pos, self.s.head_dim, self.s.rope_theta, self.embed.dtype)
        x = self.embed[tok]
        for L in self.layers:
            x = moe(self.s, L, attention(self.s, L, x, start, cos_sin), self.looped)
        h = F.rms_norm(x[-1:], (self.s.hidden,), self.ln_f, 1e-6)
        logits = (h @ self.lm_head.t()).float()
        if dist.is_initialized() and dist.get_world_size() > 1:  # gather the vocab shards
            parts = [torch.empty_like(logits) for _ in range(dist.get_world_size())]
            dist.all_gather(parts, logits)
            logits = torch.cat(parts, dim=-1)
        probs = torch.softmax(logits / 0.7, dim=-1)
        nxt = torch.multinomial(probs, 1)
        return int(nxt.cpu()) % (self.s.vocab * self.s.shard_tp)


def step_names(style: str, prefill: int, chunk: int) -> tuple[list[tuple[str, int, int]], str]:
    """(name, start, tokens) of each prefill step, and the decode step's name."""
    if style == "sglang":
        return [(f"step[EXTEND bs=1 toks={prefill}]", 0, prefill)], "step[DECODE bs=1]"
    chunks = [(i, min(chunk, prefill - i)) for i in range(0, prefill, chunk)]
    pre = [(f"execute_context_1({n})_generation_0(0)", i, n) for i, n in chunks]
    return pre, "execute_context_0(0)_generation_1(1)"


def sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    if dist.is_initialized():
        dist.barrier()


def trace_name(style: str, prefix: str, rank: int, stage: str | None) -> str:
    if style == "sglang":
        return f"{prefix}-{int(time.time())}-TP-{rank}-{stage}.trace.json"
    return f"dp0_pp0_tp{rank}_dcp0_ep0_rank{rank}.{time.time_ns()}.pt.trace.json"


def profiled(dev: torch.device):
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if dev.type == "cuda" else [])
    return profile(activities=acts, record_shapes=False, with_stack=False)


def export(prof, path: Path, use_gzip: bool) -> Path:
    prof.export_chrome_trace(str(path))
    if not use_gzip:
        return path
    gz = path.with_name(path.name + ".gz")
    with open(path, "rb") as src, gzip.open(gz, "wb", compresslevel=6) as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
    path.unlink()
    return gz


def versions(dev: torch.device) -> dict:
    info = {"torch": torch.__version__, "python": platform.python_version(), "device": str(dev)}
    if dev.type == "cuda":
        p = torch.cuda.get_device_properties(dev)
        info |= {"gpu": p.name, "gpu_count": torch.cuda.device_count(), "sm_count": p.multi_processor_count,
                 "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version(),
                 "nccl": ".".join(map(str, torch.cuda.nccl.version()))}
        try:
            info["driver"] = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                            capture_output=True, text=True, timeout=20).stdout.split()[0]
        except (OSError, IndexError, subprocess.SubprocessError):
            pass
    else:
        info["cpu"] = platform.processor() or platform.machine()
    return info


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--preset", default="qwen3-235b")
    ap.add_argument("--shard-tp", type=int, default=1, help="shapes of one shard of this TP size")
    ap.add_argument("--tiny", action="store_true", help="a tiny config (CPU runs)")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--weight-sets", type=int, default=4, help="distinct layer weights, reused cyclically")
    ap.add_argument("--prefill-tokens", type=int, default=4096)
    ap.add_argument("--chunk", type=int, default=2048, help="vLLM-style prefill chunk")
    ap.add_argument("--decode-steps", type=int, default=8)
    ap.add_argument("--style", choices=["sglang", "vllm"], default="sglang")
    ap.add_argument("--only", choices=["both", "prefill", "decode"], default="both")
    ap.add_argument("--prefix", default="moe-layer")
    ap.add_argument("--looped", action="store_true", help="loop over experts instead of torch._grouped_mm")
    ap.add_argument("--no-gzip", action="store_true")
    args = ap.parse_args()

    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    dev = torch.device(args.device)
    if dev.type == "cuda":
        dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(dev)
    if world > 1:
        cuda = dev.type == "cuda"
        dist.init_process_group("nccl" if cuda else "gloo", device_id=dev if cuda else None)
    shape = load_shape(args.preset, args.shard_tp, args.tiny)
    dtype = torch.bfloat16
    torch.manual_seed(1234 + rank)
    model = Model(shape, args.layers, args.weight_sets, args.prefill_tokens + args.decode_steps + 8,
                  dev, dtype, args.looped)
    prefill, decode_name = step_names(args.style, args.prefill_tokens, args.chunk)
    ids = [int(i) for i in torch.randint(0, shape.vocab, (args.prefill_tokens,))]
    args.out.mkdir(parents=True, exist_ok=True)

    def run_prefill() -> int:
        nxt = 0
        for name, start, n in prefill:
            with record_function(name):
                nxt = model.forward(ids[start:start + n], start)
        return nxt

    def run_decode(first: int, steps: int) -> None:
        nxt = first
        for i in range(steps):
            with record_function(decode_name):
                nxt = model.forward([nxt], args.prefill_tokens + i)

    with torch.inference_mode():
        run_decode(run_prefill(), 2)  # warm-up: kernels chosen, caches allocated
        sync(dev)
        written: list[Path] = []
        stages = {"both": ["EXTEND", "DECODE"], "prefill": ["EXTEND"], "decode": ["DECODE"]}[args.only]
        if args.style == "vllm":  # one trace per rank, both kinds of step in it
            with profiled(dev) as prof:
                first = run_prefill() if "EXTEND" in stages else 1
                if "DECODE" in stages:
                    run_decode(first, args.decode_steps)
                sync(dev)
            written.append(export(prof, args.out / trace_name("vllm", args.prefix, rank, None), not args.no_gzip))
        else:  # SGLang's profile_by_stage: one trace per stage
            first = 1
            for stage in stages:
                with profiled(dev) as prof:
                    if stage == "EXTEND":
                        first = run_prefill()
                    else:
                        run_decode(first, args.decode_steps)
                    sync(dev)
                path = args.out / trace_name("sglang", args.prefix, rank, stage)
                written.append(export(prof, path, not args.no_gzip))

    meta = {"recorded_by": "benchmarks/gpu/moe_layer_trace.py", "args": {k: str(v) for k, v in vars(args).items()},
            "shape": asdict(shape), "world_size": world, "rank": rank, "expert_gemm":
            "looped torch.matmul" if args.looped else "torch._grouped_mm", "versions": versions(dev),
            "files": [p.name for p in written], "recorded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    (args.out / f"meta-rank{rank}.json").write_text(json.dumps(meta, indent=1))
    print(json.dumps(meta))
    if dist.is_initialized():
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
