"""One streaming loop for every engine endpoint: send, stamp each server-sent
event's arrival with ``perf_counter``, and hand the JSON to the engine's chunk
parser, which says how many new tokens of which request it carried.

Framing follows the SSE format: ``data: <json>`` lines, blank lines between
events, ``:`` comment lines ignored, ``data: [DONE]`` at the end. Anything else
(non-JSON data, an error object, a missing ``[DONE]``, a short stream, an HTTP
error status, a broken connection) ends in an exception with the reason.

The client's own cost per token is part of every ITL it measures, so as little as possible runs
between the network and the stamp: urllib3's chunk reader (one piece per HTTP chunk, which is one
event from vLLM's and SGLang's servers; 52 us a token on the replayed stream where httpx's stream
cost 150 us), SSE lines split on bytes, JSON decoded by orjson where installed, and no per-event
allocation beyond the decoded object. Figures: docs/fidelity.md.
"""

from __future__ import annotations

import json
import time
from typing import Any, Callable, Iterable, NamedTuple

import urllib3

from ..errors import BenchmarkFailure, RequestTimeout, ServerHTTPError
from .metrics import RequestTrace

try:  # several times faster than json.loads on these small objects; same result
    from orjson import JSONDecodeError as _JSONError
    from orjson import loads as _loads
    JSON_DECODER = "orjson"
except ImportError:  # pragma: no cover - orjson is a dependency; the stdlib decoder is the fallback
    from json import JSONDecodeError as _JSONError
    from json import loads as _loads
    JSON_DECODER = "json"

__all__ = ["TokenEvent", "ChunkError", "stream_batch", "client_facts", "JSON_DECODER"]


def client_facts() -> dict[str, str]:
    """What decodes and reads the measured streams in this process (the record's ``host.measure_client``):
    ``json`` is ``"orjson"``, or ``"json"`` where orjson is missing and the stdlib decoder stands in (7.3 us
    an event against orjson's 2.0 us on a 2-core VM, docs/fidelity.md: part of every ITL measured);
    ``http`` is urllib3's chunk reader, with its version."""
    return {"json": JSON_DECODER, "http": f"urllib3 {urllib3.__version__}"}


class TokenEvent(NamedTuple):  # a tuple: built once per streamed event, so it must be cheap
    index: int  # which request of the batch
    new_tokens: int
    finish_reason: str | None = None


class ChunkError(Exception):
    """The server reported an error inside the stream."""


ChunkParser = Callable[[dict[str, Any], dict[str, Any]], Iterable[TokenEvent]]
"""parse(chunk, state): the events of one chunk. ``state`` persists over the stream; a parser
puts the server's ``usage`` there, and ``cached_tokens`` ({request index: prompt tokens the
engine's prefix cache served}) where the engine reports it."""

def _one_event(data: bytes, t: float, parse: ChunkParser, state: dict[str, Any], traces: list[RequestTrace],
               times: list[list[float]], batch: int, received: int, on_token: Callable[[int], None] | None) -> int:
    """Decode one event's JSON, count its tokens at stamp ``t``; returns the new total."""
    try:
        obj = _loads(data)
    except _JSONError:
        raise BenchmarkFailure(f"stream carried non-JSON data: {data[:120].decode('utf-8', 'replace')!r}") from None
    if not isinstance(obj, dict):
        raise BenchmarkFailure(f"stream carried a non-object: {data[:120].decode('utf-8', 'replace')!r}")
    before = received
    try:
        for index, n, fin in parse(obj, state):
            if not 0 <= index < batch:
                raise BenchmarkFailure(f"stream named request {index} of a batch of {batch}")
            if n == 1:
                times[index].append(t)
            elif n:
                times[index].extend([t] * n)
            if fin:
                traces[index].finish_reason = fin
            received += n
    except ChunkError as e:
        raise ServerHTTPError(f"error in stream after {received} tokens: {e}") from None
    if on_token and received != before:
        on_token(received)
    return received


def _reads(resp: urllib3.BaseHTTPResponse):
    """The body as the network delivers it: one piece per HTTP chunk (how engines' servers send
    each event), or per socket read when the body is not chunked."""
    if resp.chunked:
        yield from resp.read_chunked(decode_content=False)
        return
    while data := resp.read1(1 << 16):
        yield data


def stream_batch(url: str, body: dict[str, Any], *, batch: int, parse: ChunkParser, request_timeout_s: float,
                 on_token: Callable[[int], None] | None = None) -> list[RequestTrace]:
    """Send one streaming request carrying ``batch`` prompts; return each request's token stamps.

    ``request_timeout_s`` bounds the wait for any single read (a hung server) and connection
    set-up; the whole request may take longer while tokens keep coming. Each stream has its own
    connection, closed at the end: closing it early (an exception from ``on_token``) aborts the
    request on the server."""
    traces = [RequestTrace() for _ in range(batch)]
    times = [t.token_times for t in traces]
    state: dict[str, Any] = {}
    payload = json.dumps(body, separators=(",", ":")).encode()
    timeout = urllib3.Timeout(connect=min(request_timeout_s, 30.0), read=request_timeout_s)
    pool = urllib3.PoolManager(num_pools=1, maxsize=1, retries=False, timeout=timeout)
    headers = {"Content-Type": "application/json", "Accept": "text/event-stream"}
    done = False
    received = 0
    stamp = time.perf_counter
    resp = None
    t_send = stamp()
    try:
        resp = pool.request("POST", url, body=payload, headers=headers, preload_content=False, redirect=False)
        if resp.status >= 400:
            text = resp.read(4096).decode("utf-8", "replace")[:500]
            raise ServerHTTPError(f"HTTP {resp.status} from {url}: {text.strip()}")
        buf = b""
        for chunk in _reads(resp):
            t = stamp() - t_send
            # SSE framing, on raw bytes (a newline byte never occurs inside a UTF-8 sequence and the JSON
            # decoder takes bytes): ``data:`` lines; this loop runs once per network read
            if b"\n" not in chunk:
                buf += chunk
                continue
            *lines, buf = (buf + chunk).split(b"\n") if buf else chunk.split(b"\n")
            for line in lines:
                if line[:5] != b"data:":
                    continue  # blank lines end an event; ':' comments and other fields carry nothing we use
                data = line[5:].strip()
                if data == b"[DONE]":
                    done = True
                    break
                received = _one_event(data, t, parse, state, traces, times, batch, received, on_token)
            if done:
                break
        if not done and buf.startswith(b"data:"):  # a last line without its newline
            data = buf[5:].strip()
            if data == b"[DONE]":
                done = True
            else:
                received = _one_event(data, stamp() - t_send, parse, state, traces, times, batch, received, on_token)
    except urllib3.exceptions.NewConnectionError as e:  # refused (a dead server); urllib3 files it under timeouts
        raise BenchmarkFailure(f"connection broke after {received} tokens: could not connect: {e}") from None
    except (urllib3.exceptions.ReadTimeoutError, urllib3.exceptions.ConnectTimeoutError, TimeoutError) as e:
        raise RequestTimeout(f"no data from the server for {request_timeout_s:.0f} s after {received} tokens "
                             f"({type(e).__name__})") from None
    except (urllib3.exceptions.HTTPError, OSError) as e:  # refused, reset, closed early, malformed HTTP
        raise BenchmarkFailure(f"connection broke after {received} tokens: {type(e).__name__}: {e}") from None
    finally:
        if resp is not None:
            resp.close()
        pool.clear()
    if not done:
        raise BenchmarkFailure(f"stream ended without [DONE] after {received} tokens")
    usage = state.get("usage") or {}
    if isinstance(usage.get("completion_tokens"), int) and usage["completion_tokens"] != received:
        raise BenchmarkFailure(f"stream carried {received} tokens but the server's usage says "
                               f"{usage['completion_tokens']}")
    for idx, n in (state.get("cached_tokens") or {}).items():  # set by the parser where the engine reports it
        if 0 <= idx < batch and isinstance(n, int):
            traces[idx].cached_tokens = n
    return traces
