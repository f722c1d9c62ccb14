"""One streaming loop for every engine endpoint: send, stamp each server-sent
event's arrival with ``perf_counter``, and hand the JSON to the engine's chunk
parser, which says how many new tokens of which request it carried.

Framing follows the SSE format: ``data: <json>`` lines, blank lines between
events, ``:`` comment lines ignored, ``data: [DONE]`` at the end. Anything else
(non-JSON data, an error object, a missing ``[DONE]``, a short stream, an HTTP
error status, a broken connection) ends in an exception with the reason.

The client's own cost per token is part of every ITL it measures, so the stream is read
with as little as possible between the socket and the stamp: HTTP/1.1 over a plain socket
(one ``recv`` per network read, chunked transfer decoded in place, no per-read layers of an
HTTP library: httpx cost 80 us per read here), JSON decoded by orjson where installed.
Figures: docs/fidelity.md.
"""

from __future__ import annotations

import json
import socket
import ssl
import time
from typing import Any, Callable, Iterable, Iterator, NamedTuple
from urllib.parse import urlsplit

import httpx

from ..errors import BenchmarkFailure, RequestTimeout, ServerHTTPError
from .metrics import RequestTrace

try:  # several times faster than json.loads on these small objects; same result
    from orjson import JSONDecodeError as _JSONError
    from orjson import loads as _loads
except ImportError:  # pragma: no cover - orjson is a dependency; the stdlib decoder is the fallback
    from json import JSONDecodeError as _JSONError
    from json import loads as _loads

__all__ = ["TokenEvent", "ChunkError", "stream_batch"]


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

_READ = 1 << 16


class _Response:
    """An HTTP/1.1 response read from a socket: status, headers, then the body as it arrives."""

    def __init__(self, url: str, body: bytes, timeout_s: float, connect_s: float):
        u = urlsplit(url)
        if u.scheme not in ("http", "https") or not u.hostname:
            raise ConnectionError(f"not an http(s) URL: {url!r}")
        port = u.port or (443 if u.scheme == "https" else 80)
        sock = socket.create_connection((u.hostname, port), timeout=connect_s)
        if u.scheme == "https":
            sock = ssl.create_default_context().wrap_socket(sock, server_hostname=u.hostname)
        sock.settimeout(timeout_s)  # bounds the wait for any single read (a hung server)
        self.sock = sock
        target = (u.path or "/") + (f"?{u.query}" if u.query else "")
        head = (f"POST {target} HTTP/1.1\r\nHost: {u.netloc}\r\nContent-Type: application/json\r\n"
                f"Accept: text/event-stream\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n")
        sock.sendall(head.encode("latin-1") + body)
        buf = b""
        while b"\r\n\r\n" not in buf:
            data = sock.recv(_READ)
            if not data:
                raise ConnectionError("the server closed the connection before answering")
            buf += data
        head_bytes, self.rest = buf.split(b"\r\n\r\n", 1)
        lines = head_bytes.decode("latin-1").split("\r\n")
        try:
            self.status = int(lines[0].split(" ", 2)[1])
        except (IndexError, ValueError):
            raise ConnectionError(f"not an HTTP response: {lines[0][:80]!r}") from None
        self.headers = {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:])}

    def chunks(self) -> Iterator[tuple[float, bytes]]:
        """(arrival stamp, body bytes) per network read, transfer encoding removed."""
        recv, stamp = self.sock.recv, time.perf_counter
        if "chunked" in self.headers.get("transfer-encoding", "").lower():
            yield from _dechunk(self.rest, recv, stamp)
            return
        try:
            length = int(self.headers["content-length"]) if "content-length" in self.headers else None
        except ValueError:
            raise ConnectionError(f"bad Content-Length {self.headers['content-length']!r}") from None
        got = len(self.rest)
        if self.rest:
            yield stamp(), self.rest
        while length is None or got < length:
            data = recv(_READ)
            if not data:
                if length is not None:
                    raise ConnectionError(f"the body ended after {got} of {length} bytes")
                return
            got += len(data)
            yield stamp(), data

    def read_all(self, limit: int = 4096) -> bytes:
        out = b""
        try:
            for _, data in self.chunks():
                out += data
                if len(out) >= limit:
                    break
        except (OSError, ValueError):
            pass
        return out

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


def _dechunk(raw: bytes, recv, stamp) -> Iterator[tuple[float, bytes]]:
    """Chunked transfer coding, decoded per read: whatever payload a read completed (a chunk
    may span reads, and a read may hold several chunks) is yielded with that read's stamp."""
    left = 0  # payload bytes still due in the current chunk
    crlf = False  # the CRLF after a chunk's payload is due
    t = stamp()
    while True:
        out = []
        while True:
            if left:
                piece = raw[:left]
                out.append(piece)
                left -= len(piece)
                raw = raw[len(piece):]
                if left:
                    break
                crlf = True
            if crlf:
                if len(raw) < 2:
                    break
                raw, crlf = raw[2:], False
            i = raw.find(b"\r\n")
            if i < 0:
                break
            try:
                size = int(raw[:i].split(b";", 1)[0], 16)
            except ValueError:
                raise ConnectionError(f"bad chunk size line {raw[:i][:40]!r}") from None
            raw = raw[i + 2:]
            if size == 0:  # the last chunk (trailers, if any, are not read)
                if out:
                    yield t, b"".join(out)
                return
            left = size
        if out:
            yield t, out[0] if len(out) == 1 else b"".join(out)
        data = recv(_READ)
        if not data:
            raise ConnectionError("the connection closed inside a chunked body")
        t = stamp()
        raw = raw + data if raw else data


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


def stream_batch(http: httpx.Client | None, url: str, body: dict[str, Any], *, batch: int, parse: ChunkParser,
                 request_timeout_s: float, on_token: Callable[[int], None] | None = None) -> list[RequestTrace]:
    """Send one streaming request carrying ``batch`` prompts; return each request's token stamps.

    ``request_timeout_s`` bounds the wait for any single read (a hung server) and connection
    set-up; the whole request may take longer while tokens keep coming. ``http`` is not used
    for the stream (see the module's note); callers pass their client for the other requests."""
    traces = [RequestTrace() for _ in range(batch)]
    times = [t.token_times for t in traces]
    state: dict[str, Any] = {}
    payload = json.dumps(body, separators=(",", ":")).encode()
    done = False
    received = 0
    resp: _Response | None = None
    t_send = time.perf_counter()
    try:
        resp = _Response(url, payload, request_timeout_s, min(request_timeout_s, 30.0))
        if resp.status >= 400:
            text = resp.read_all().decode("utf-8", "replace")[:500]
            raise ServerHTTPError(f"HTTP {resp.status} from {url}: {text.strip()}")
        buf = b""
        for stamp, chunk in resp.chunks():
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
                received = _one_event(data, stamp - t_send, parse, state, traces, times, batch, received, on_token)
            if done:
                break
        if not done and buf.startswith(b"data:"):  # a last line without its newline
            data = buf[5:].strip()
            if data == b"[DONE]":
                done = True
            else:
                received = _one_event(data, time.perf_counter() - t_send, parse, state, traces, times, batch,
                                      received, on_token)
    except (TimeoutError, socket.timeout) as e:
        raise RequestTimeout(f"no data from the server for {request_timeout_s:.0f} s after {received} tokens "
                             f"({type(e).__name__})") from None
    except OSError as e:  # refused, reset, closed early, malformed HTTP
        raise BenchmarkFailure(f"connection broke after {received} tokens: {type(e).__name__}: {e}") from None
    finally:
        if resp is not None:
            resp.close()  # closing the connection aborts the request on the server (a cancelled job)
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
