"""Fidelity of moetrace's measurement (figures, no assertions).

On one vLLM server (the CPU build serving a tiny checkpoint by default), for the same
seeded token-id prompts:
  1. moetrace's client: TTFT and median ITL per request, and its CPU cost per streamed token;
  2. the server's own accounting: the deltas of its /metrics histograms
     (vllm:time_to_first_token_seconds, vllm:inter_token_latency_seconds) over our requests;
  3. a second, independent client: vLLM's own benchmark request function
     (vllm.benchmarks.lib.endpoint_request_func.async_request_openai_completions), run in the
     engine's Python on the same prompts.

    .venv/bin/python benchmarks/fidelity.py [--requests 10] [--model-dir DIR]
    .venv/bin/python benchmarks/fidelity.py --replay tests/data/streams/vllm_cpu_completions_bs1.sse
        (the client's cost only, on a recorded real stream; no engine needed)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from moetrace.bench.client import stream_batch  # noqa: E402
from moetrace.bench.metrics import run_metrics  # noqa: E402
from moetrace.bench.prompts import random_prompts  # noqa: E402
from moetrace.bench.server_metrics import histogram as server_histogram  # noqa: E402
from moetrace.engines.base import LaunchSpec  # noqa: E402
from moetrace.engines.process import ServerProcess, free_port  # noqa: E402
from moetrace.engines.vllm import VLLM  # noqa: E402
from moetrace.matrix import Config  # noqa: E402
from moetrace.presets import get_preset, preset_from_checkpoint  # noqa: E402
from moetrace.sweep import tiny_preset  # noqa: E402

VLLM_CLIENT = r"""
import asyncio, json, sys
import aiohttp
from vllm.benchmarks.lib.endpoint_request_func import RequestFuncInput, async_request_openai_completions
cfg = json.load(open(sys.argv[1]))
async def main():
    out = []
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=600)) as s:
        for p in cfg["prompts"]:
            r = await async_request_openai_completions(RequestFuncInput(
                prompt=p, api_url=cfg["url"], prompt_len=len(p), output_len=cfg["output_len"],
                model=cfg["model"], ignore_eos=True), s)
            out.append({"ok": r.success, "ttft": r.ttft, "itl": r.itl, "tokens": r.output_tokens, "err": r.error})
    print(json.dumps(out))
asyncio.run(main())
"""


def histogram(text: str, name: str) -> tuple[float, float, list[tuple[float, float]]]:
    """(sum, count, cumulative buckets) of a server histogram (the library's parser), zeros when absent."""
    return server_histogram(text, name) or (0.0, 0.0, [])


def _replay_server(port_q, body: bytes, gap_s: float) -> None:
    """Serve ``body`` (an SSE stream) event by event, ``gap_s`` apart, from another process,
    so that only the client's own CPU time is counted in the client's process."""
    from http.server import BaseHTTPRequestHandler, HTTPServer

    class H(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *a):
            pass

        def do_POST(self):
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Connection", "close")
            self.end_headers()
            for ev in body.split(b"\n\n"):
                if ev:
                    self.wfile.write(ev + b"\n\n")
                    self.wfile.flush()
                    time.sleep(gap_s)

    srv = HTTPServer(("127.0.0.1", 0), H)
    port_q.put(srv.server_address[1])
    srv.serve_forever()


def client_cost_us(raw: bytes, gap_s: float, parse) -> float:
    """moetrace's client CPU time per streamed token, on a real recorded stream replayed
    event by event (one network read per token, as from a live server)."""
    import multiprocessing as mp
    q = mp.Queue()
    p = mp.Process(target=_replay_server, args=(q, raw, gap_s), daemon=True)
    p.start()
    try:
        url = f"http://127.0.0.1:{q.get(timeout=30)}/v1/completions"
        costs = []
        with httpx.Client() as http:
            for _ in range(3):
                c0 = time.process_time()
                traces = stream_batch(http, url, {}, batch=1, parse=parse, request_timeout_s=60)
                costs.append((time.process_time() - c0) / traces[0].n_tokens * 1e6)
        return statistics.median(costs)
    finally:
        p.terminate()


def stretch_stream(raw: bytes, tokens: int) -> bytes:
    """A recorded vLLM stream of a few tokens made ``tokens`` long: its first event, its middle
    (one-token) events repeated in order, its last token event, the usage event with the new
    count, and [DONE]. Every event keeps the recorded bytes (sizes, fields) of the real server."""
    events = [e for e in raw.split(b"\n\n") if e.strip()]
    done = [e for e in events if e.strip() == b"data: [DONE]"]
    usage = [e for e in events if b'"usage"' in e and b'"choices":[]' in e]
    toks = [e for e in events if e not in done and e not in usage]
    if len(toks) < 3 or not done or not usage:
        raise ValueError("expected a recorded stream with at least 3 token events, a usage event and [DONE]")
    middle = toks[1:-1]
    body = [toks[0]] + [middle[i % len(middle)] for i in range(tokens - 2)] + [toks[-1]]
    u = json.loads(usage[0].split(b"data:", 1)[1])
    u["usage"]["completion_tokens"] = tokens
    u["usage"]["total_tokens"] = u["usage"]["prompt_tokens"] + tokens
    body += [b"data: " + json.dumps(u, separators=(",", ":")).encode(), done[0]]
    return b"\n\n".join(body) + b"\n\n"


def replay_only(path: Path, tokens: int, gap_ms: float) -> None:
    from moetrace.engines.vllm import parse_completion_chunk
    raw = stretch_stream(path.read_bytes(), tokens)
    cost = client_cost_us(raw, gap_ms / 1000, parse_completion_chunk)
    print(f"client CPU per streamed token: {cost:.1f} us ({100 * cost / 1000 / gap_ms:.2f}% of a {gap_ms} ms ITL); "
          f"{path.name} stretched to {tokens} tokens, replayed {gap_ms} ms apart, host {os.uname().nodename} "
          f"({os.cpu_count()} CPUs)")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--replay", type=Path, default=None,
                    help="measure only the client's cost, on this recorded vLLM stream (no engine)")
    ap.add_argument("--replay-gap-ms", type=float, default=2.9, help="gap between replayed events")
    ap.add_argument("--requests", type=int, default=10)
    ap.add_argument("--input-len", type=int, default=4096)
    ap.add_argument("--output-len", type=int, default=512)
    ap.add_argument("--model-dir", default=None, help="checkpoint (default: tiny Qwen3-235B)")
    ap.add_argument("--engine-python", default=os.environ.get("MOETRACE_ENGINE_PYTHON",
                                                             str(ROOT / ".venv-engine/bin/python")))
    a = ap.parse_args()
    if a.replay:
        replay_only(a.replay, a.output_len, a.replay_gap_ms)
        return

    preset = preset_from_checkpoint(Path(a.model_dir)) if a.model_dir else \
        tiny_preset(get_preset("Qwen3-235B"), ROOT / ".cache" / "tiny")
    eng = VLLM()
    port = free_port()
    spec = LaunchSpec(preset=preset, config=Config(1), model_path=preset.hf_id, port=port, python=a.engine_python,
                      device="cpu", max_model_len=8192, extra_args=["--gpu-memory-utilization", "0.15"])
    base = f"http://127.0.0.1:{port}"
    log = Path(tempfile.mkdtemp()) / "server.log"
    prompts = [random_prompts(batch=1, input_len=a.input_len, vocab_size=int(preset.hf_config["vocab_size"]),
                              seed=1000 + i)[0] for i in range(a.requests)]
    with ServerProcess(eng.command(spec), log_path=log, env=dict(os.environ, **eng.environment(spec)),
                       port=port) as sp, httpx.Client() as http:
        sp.wait_ready(lambda: eng.is_ready(http, base), timeout_s=600)
        model = eng.model_name(http, base)
        # warm-up, not counted anywhere
        _, body, parse = eng.generate([prompts[0][:256]], 16)
        stream_batch(http, base + "/v1/completions", dict(body, model=model), batch=1, parse=parse,
                     request_timeout_s=120)

        m0 = http.get(base + "/metrics").text
        ours, chunk_gaps = [], []
        raw_stream = b""
        for p in prompts:
            eng.flush_cache(http, base)
            _, body, parse = eng.generate([p], a.output_len)
            traces = stream_batch(http, base + "/v1/completions", dict(body, model=model), batch=1, parse=parse,
                                  request_timeout_s=120)
            ours.append(run_metrics(traces, input_len=a.input_len, output_len=a.output_len))
            stamps = sorted(set(traces[0].token_times))  # one stamp per chunk that carried tokens
            chunk_gaps.append(statistics.fmean(b - a_ for a_, b in zip(stamps, stamps[1:])) * 1000)
        m1 = http.get(base + "/metrics").text
        # one real stream of a full request, its bytes kept for the client-cost replay
        _, body, parse = eng.generate([prompts[0]], a.output_len)
        with http.stream("POST", base + "/v1/completions", json=dict(body, model=model), timeout=120) as r:
            raw_stream = b"".join(r.iter_bytes())

        # the second client on the same prompts (its own requests, after ours)
        cfg = Path(tempfile.mkdtemp()) / "cfg.json"
        cfg.write_text(json.dumps({"prompts": prompts, "url": base + "/v1/completions", "model": model,
                                   "output_len": a.output_len}))
        for _ in prompts:
            eng.flush_cache(http, base)
        cp = subprocess.run([a.engine_python, "-c", VLLM_CLIENT, str(cfg)], capture_output=True, text=True)
        theirs = json.loads(cp.stdout.strip().splitlines()[-1]) if cp.returncode == 0 else []
        if cp.returncode:
            print("vLLM client failed:", cp.stderr[-2000:])

    ttft_s = histogram(m1, "vllm:time_to_first_token_seconds"), histogram(m0, "vllm:time_to_first_token_seconds")
    itl_name = "vllm:inter_token_latency_seconds" if "vllm:inter_token_latency_seconds" in m1 \
        else "vllm:time_per_output_token_seconds"
    itl_s = histogram(m1, itl_name), histogram(m0, itl_name)
    srv_ttft_mean = (ttft_s[0][0] - ttft_s[1][0]) / max(ttft_s[0][1] - ttft_s[1][1], 1)
    srv_itl_mean = (itl_s[0][0] - itl_s[1][0]) / max(itl_s[0][1] - itl_s[1][1], 1)

    our_ttft = statistics.median(m["ttft_ms"] for m in ours)
    our_itl_med = statistics.median(m["itl_p50_ms"] for m in ours)
    our_itl_mean = statistics.median(m["itl_ms"] for m in ours)
    their_ttft = statistics.median(r["ttft"] * 1000 for r in theirs) if theirs else float("nan")
    their_itl_med = statistics.median(statistics.median(r["itl"]) * 1000 for r in theirs if r["itl"]) \
        if theirs else float("nan")
    their_itl_mean = statistics.median(statistics.fmean(r["itl"]) * 1000 for r in theirs if r["itl"]) \
        if theirs else float("nan")
    cost_us = client_cost_us(raw_stream, our_itl_mean / 1000, parse)

    def pct(a_: float, b: float) -> str:
        return f"{100 * (a_ - b) / b:+.1f}%" if b and b == b else "n/a"

    print(f"\nFidelity on vLLM {eng.version(a.engine_python)} (CPU), model {preset.name}, "
          f"{a.requests} requests of {a.input_len} in / {a.output_len} out, host {os.uname().nodename} "
          f"({os.cpu_count()} CPUs)\n")
    print("| figure | moetrace | server /metrics | vLLM bench client | moetrace vs server |")
    print("|---|---:|---:|---:|---:|")
    print(f"| TTFT median / server mean (ms) | {our_ttft:.2f} | {srv_ttft_mean * 1000:.2f} | {their_ttft:.2f} | "
          f"{pct(our_ttft, srv_ttft_mean * 1000)} |")
    print(f"| ITL mean (ms) | {our_itl_mean:.3f} | {srv_itl_mean * 1000:.3f} | {their_itl_mean:.3f} | "
          f"{pct(our_itl_mean, srv_itl_mean * 1000)} |")
    print(f"| ITL median (ms) | {our_itl_med:.3f} | n/a (histogram buckets too coarse) | {their_itl_med:.3f} | |")
    print(f"| ITL mean per chunk (ms; the vLLM client's unit) | {statistics.median(chunk_gaps):.3f} | | "
          f"{their_itl_mean:.3f} | |")
    print(f"| client CPU per streamed token (us; real stream replayed at the measured ITL) | {cost_us:.1f} | | | {100 * cost_us / 1000 / our_itl_mean:.1f}% "
          f"of ITL |")


if __name__ == "__main__":
    main()
