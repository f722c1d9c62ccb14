"""One streaming loop for every engine endpoint: send, stamp each server-sent
event's arrival with ``perf_counter``, and hand the JSON to the engine's chunk
parser, which says how many new tokens of which request it carried.

Framing follows the SSE format: ``data: <json>`` lines, blank lines between
events, ``:`` comment lines ignored, ``data: [DONE]`` at the end. Anything else
(non-JSON data, an error object, a missing ``[DONE]``, a short stream, an HTTP
error status, a broken connection) ends in an exception with the reason.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable

import httpx

from ..errors import BenchmarkFailure, RequestTimeout, ServerHTTPError
from .metrics import RequestTrace

__all__ = ["TokenEvent", "ChunkError", "stream_batch"]


@dataclass(frozen=True)
class TokenEvent:
    index: int  # which request of the batch
    new_tokens: int
    finish_reason: str | None = None


class ChunkError(Exception):
    """The server reported an error inside the stream."""


ChunkParser = Callable[[dict[str, Any], dict[str, Any]], Iterable[TokenEvent]]
"""parse(chunk, state): the events of one chunk. ``state`` persists over the stream; a parser
puts the server's ``usage`` there, and ``cached_tokens`` ({request index: prompt tokens the
engine's prefix cache served}) where the engine reports it."""


def _events(chunks: Iterable[bytes]) -> Iterable[tuple[float, bytes]]:
    """Yield (arrival stamp, data payload) for each ``data:`` line of an SSE byte stream.
    Works on raw bytes: a newline byte never occurs inside a UTF-8 sequence, and the JSON
    parser takes bytes, so no decoding layer runs per token."""
    buf = b""
    for chunk in chunks:
        stamp = time.perf_counter()
        buf += chunk
        *lines, buf = buf.split(b"\n")
        for line in lines:
            line = line.rstrip(b"\r")
            if line.startswith(b"data:"):
                yield stamp, line[5:].strip()
            # blank lines end an event; ':' comments and other fields (event:, id:, retry:) carry nothing we use
    if buf.startswith(b"data:"):
        yield time.perf_counter(), buf[5:].strip()


def stream_batch(http: httpx.Client, url: str, body: dict[str, Any], *, batch: int, parse: ChunkParser,
                 request_timeout_s: float, on_token: Callable[[int], None] | None = None) -> list[RequestTrace]:
    """Send one streaming request carrying ``batch`` prompts; return each request's token stamps.

    ``request_timeout_s`` bounds the wait for any single chunk (a hung server) and
    connection set-up; the whole request may take longer while tokens keep coming."""
    traces = [RequestTrace() for _ in range(batch)]
    state: dict[str, Any] = {}
    timeout = httpx.Timeout(request_timeout_s, connect=min(request_timeout_s, 30.0))
    done = False
    received = 0
    t_send = time.perf_counter()
    try:
        with http.stream("POST", url, json=body, timeout=timeout) as resp:
            if resp.status_code >= 400:
                text = resp.read().decode("utf-8", "replace")[:500]
                raise ServerHTTPError(f"HTTP {resp.status_code} from {url}: {text.strip()}")
            for stamp, data in _events(resp.iter_bytes()):
                if data == b"[DONE]":
                    done = True
                    break
                try:
                    obj = json.loads(data)
                except json.JSONDecodeError:
                    raise BenchmarkFailure(f"stream carried non-JSON data: {data[:120].decode('utf-8', 'replace')!r}") \
                        from None
                if not isinstance(obj, dict):
                    raise BenchmarkFailure(f"stream carried a non-object: {data[:120].decode('utf-8', 'replace')!r}")
                try:
                    events = list(parse(obj, state))
                except ChunkError as e:
                    raise ServerHTTPError(f"error in stream after {received} tokens: {e}") from None
                for ev in events:
                    if not 0 <= ev.index < batch:
                        raise BenchmarkFailure(f"stream named request {ev.index} of a batch of {batch}")
                    tr = traces[ev.index]
                    tr.token_times.extend([stamp - t_send] * ev.new_tokens)
                    if ev.finish_reason:
                        tr.finish_reason = ev.finish_reason
                    received += ev.new_tokens
                if on_token and events:
                    on_token(received)
    except httpx.TimeoutException as e:
        raise RequestTimeout(f"no data from the server for {request_timeout_s:.0f} s after {received} tokens "
                             f"({type(e).__name__})") from None
    except (httpx.TransportError, httpx.DecodingError) as e:
        raise BenchmarkFailure(f"connection broke after {received} tokens: {type(e).__name__}: {e}") from None
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
