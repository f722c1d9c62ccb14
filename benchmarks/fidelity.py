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

from moetrace.measure.client import stream_batch  # noqa: E402
from moetrace.measure.metrics import run_metrics  # noqa: E402
from moetrace.measure.prompts import random_prompts  # noqa: E402
from moetrace.measure.server_metrics import histogram as server_histogram  # noqa: E402
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
    """Serve ``body`` (an SSE stream) event by event, ``gap_s`` apart, one HTTP chunk per event (as
    uvicorn does), from another process, so that only the client's own CPU time is counted in the
    client's process."""
    from http.server import BaseHTTPRequestHandler, HTTPServer

    class H(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *a):
            pass

        def do_POST(self):
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Transfer-Encoding", "chunked")  # as vLLM's and SGLang's uvicorn send a stream
            self.end_headers()
            for ev in body.split(b"\n\n"):
                if ev:
                    ev += b"\n\n"
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(ev), ev))
                    self.wfile.flush()
                    time.sleep(gap_s)
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()

    srv = HTTPServer(("127.0.0.1", 0), H)
    port_q.put(srv.server_address[1])
    srv.serve_forever()


def client_cost_us(raw: bytes, gap_s: float, parse) -> dict[str, float]:
    """moetrace's client CPU time per streamed token, on a real recorded stream replayed
    event by event (one network read per token, as from a live server): total, user and system
    time, and the same for a bare socket that only reads the bytes (the floor any
    Python client pays per network read: the kernel's wake-up and copy), median of 5 runs each."""
    import multiprocessing as mp
    import resource
    import socket
    q = mp.Queue()
    p = mp.Process(target=_replay_server, args=(q, raw, gap_s), daemon=True)
    p.start()
    try:
        port = q.get(timeout=30)
        url = f"http://127.0.0.1:{port}/v1/completions"

        def bare() -> int:
            s = socket.create_connection(("127.0.0.1", port))
            s.settimeout(60)
            s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 2\r\n\r\n{}")
            while True:
                d = s.recv(1 << 16)
                if not d or d.endswith(b"0\r\n\r\n"):
                    break
            s.close()
            return raw.count(b'"token_ids"')


        def ours() -> int:
            return stream_batch(url, {}, batch=1, parse=parse, request_timeout_s=60)[0].n_tokens

        out: dict[str, float] = {}
        for name, fn in (("bare", bare), ("client", ours)):
            runs = []
            for _ in range(5):
                r0, c0 = resource.getrusage(resource.RUSAGE_SELF), time.process_time()
                n = fn()
                r1, c1 = resource.getrusage(resource.RUSAGE_SELF), time.process_time()
                runs.append(((c1 - c0) / n * 1e6, (r1.ru_utime - r0.ru_utime) / n * 1e6,
                             (r1.ru_stime - r0.ru_stime) / n * 1e6))
            out[f"{name}_us"] = statistics.median(t for t, _, _ in runs)  # CLOCK_PROCESS_CPUTIME_ID: exact
            out[f"{name}_user_us"] = statistics.median(u for _, u, _ in runs)  # getrusage: its split
            out[f"{name}_sys_us"] = statistics.median(s_ for _, _, s_ in runs)
        return out
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
    c = client_cost_us(raw, gap_ms / 1000, parse_completion_chunk)
    above = c["client_us"] - c["bare_us"]
    print(f"client CPU per streamed token: {c['client_us']:.1f} us (user {c['client_user_us']:.1f}, system "
          f"{c['client_sys_us']:.1f}); a bare socket reading the same stream: {c['bare_us']:.1f} us (user "
          f"{c['bare_user_us']:.1f}, system {c['bare_sys_us']:.1f}); moetrace above the bare read: {above:.1f} us "
          f"({100 * above / 1000 / gap_ms:.2f}% of a {gap_ms} ms ITL; all of it {100 * c['client_us'] / 1000 / gap_ms:.2f}%). "
          f"{path.name} stretched to {tokens} tokens, one HTTP chunk per event {gap_ms} ms apart, host "
          f"{os.uname().nodename} ({os.cpu_count()} CPUs)")


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
        stream_batch(base + "/v1/completions", dict(body, model=model), batch=1, parse=parse,
                     request_timeout_s=120)

        m0 = http.get(base + "/metrics").text
        ours, chunk_gaps = [], []
        raw_stream = b""
        for p in prompts:
            eng.flush_cache(http, base)
            _, body, parse = eng.generate([p], a.output_len)
            traces = stream_batch(base + "/v1/completions", dict(body, model=model), batch=1, parse=parse,
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
    cost_us = client_cost_us(raw_stream, our_itl_mean / 1000, parse)["client_us"]

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
