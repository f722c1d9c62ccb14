"""The streaming client reads HTTP/1.1 itself: chunked transfer coding as uvicorn (vLLM,
SGLang) sends it, with chunks that split events, several events per chunk, and chunk
extensions. The bytes are the recorded vLLM stream (tests/data/streams/README.md)."""

from __future__ import annotations

import socket
import threading
from pathlib import Path

import pytest

from moetrace.bench.client import stream_batch
from moetrace.engines.vllm import parse_completion_chunk
from moetrace.errors import BenchmarkFailure

STREAMS = Path(__file__).resolve().parents[1] / "data" / "streams"


def _serve(pieces: list[bytes], head: bytes) -> str:
    """A one-shot server that answers with ``head`` then writes ``pieces`` one by one."""
    srv = socket.create_server(("127.0.0.1", 0))

    def run() -> None:
        conn, _ = srv.accept()
        data = b""
        while b"\r\n\r\n" not in data:
            data += conn.recv(65536)
        conn.sendall(head)
        for p in pieces:
            conn.sendall(p)
        conn.close()
        srv.close()

    threading.Thread(target=run, daemon=True).start()
    return f"http://127.0.0.1:{srv.getsockname()[1]}/v1/completions"


CHUNKED = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"


def _chunk(b: bytes, ext: bytes = b"") -> bytes:
    return b"%x%s\r\n%s\r\n" % (len(b), ext, b)


def test_chunked_stream_split_anywhere_counts_every_token():
    body = (STREAMS / "vllm_cpu_completions_bs1.sse").read_bytes()
    events = [e + b"\n\n" for e in body.split(b"\n\n") if e]
    # one chunk per event (as uvicorn), then the same bytes cut into odd chunks and odd writes
    for chunks in ([_chunk(e) for e in events],
                   [_chunk(body[i:i + 97], b";x=1") for i in range(0, len(body), 97)]):
        wire = b"".join(chunks) + b"0\r\n\r\n"
        pieces = [wire[i:i + 53] for i in range(0, len(wire), 53)]
        traces = stream_batch(None, _serve(pieces, CHUNKED), {}, batch=1, parse=parse_completion_chunk,
                              request_timeout_s=10)
        assert traces[0].n_tokens == 8 and traces[0].finish_reason == "length"


def test_chunked_body_cut_short_is_a_failure():
    body = (STREAMS / "vllm_cpu_completions_bs1.sse").read_bytes()
    wire = _chunk(body)[: len(body) // 2]
    with pytest.raises(BenchmarkFailure, match=r"connection broke after \d+ tokens: .*closed inside a chunked body"):
        stream_batch(None, _serve([wire], CHUNKED), {}, batch=1, parse=parse_completion_chunk, request_timeout_s=10)


def test_content_length_body_and_an_error_status():
    body = (STREAMS / "vllm_cpu_completions_bs1.sse").read_bytes()
    head = b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % len(body)
    traces = stream_batch(None, _serve([body], head), {}, batch=1, parse=parse_completion_chunk, request_timeout_s=10)
    assert traces[0].n_tokens == 8
    from moetrace.errors import ServerHTTPError
    err = b'{"object":"error","message":"too long"}'
    with pytest.raises(ServerHTTPError, match="HTTP 400 from .*too long"):
        stream_batch(None, _serve([err], b"HTTP/1.1 400 Bad Request\r\ncontent-length: %d\r\n\r\n" % len(err)), {},
                     batch=1, parse=parse_completion_chunk, request_timeout_s=10)
