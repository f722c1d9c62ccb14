"""Malformed streams, served by a real local HTTP server replaying byte sequences
recorded from the real vLLM CPU engine (and SGLang's documented format), then altered.
Each ends in BenchmarkFailure, ServerError or Timeout with the reason: never a crash,
never a number."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from moetrace.measure.client import stream_batch
from moetrace.measure.metrics import run_metrics
from moetrace.engines.sglang import parse_generate_chunk
from moetrace.engines.vllm import parse_completion_chunk
from moetrace.errors import BenchmarkFailure, RequestTimeout, ServerHTTPError
from moetrace.results.classify import classify

from ..replay_server import Reply, ReplayServer

STREAMS = Path(__file__).resolve().parents[1] / "data" / "streams"
VLLM_BS1 = (STREAMS / "vllm_cpu_completions_bs1.sse").read_bytes()
VLLM_BS2 = (STREAMS / "vllm_cpu_completions_bs2.sse").read_bytes()
SGL = (STREAMS / "sglang_generate_doc.sse").read_bytes()


def _run(reply: Reply, *, batch=1, parse=parse_completion_chunk, timeout=5.0, path="/v1/completions"):
    with ReplayServer(reply) as srv:
        return stream_batch(srv.url + path, {"prompt": [1, 2]}, batch=batch, parse=parse,
                            request_timeout_s=timeout)


def _events(raw: bytes) -> list[bytes]:
    return [e for e in raw.split(b"\n\n") if e]


def _outcome(exc: BaseException) -> str:
    return classify(exception=type(exc).__name__, message=str(exc)).error_type


def test_recorded_vllm_stream_counts_every_token():
    traces = _run(Reply(VLLM_BS1))
    assert traces[0].n_tokens == 8 and traces[0].finish_reason == "length"
    m = run_metrics(traces, input_len=8, output_len=8)
    assert m["output_tokens"] == 8 and m["ttft_ms"] > 0 and m["itl_p50_ms"] >= 0


def test_recorded_vllm_batch_of_two_interleaved():
    traces = _run(Reply(VLLM_BS2), batch=2)
    assert [t.n_tokens for t in traces] == [8, 8]


def test_sglang_documented_stream_uses_cumulative_counts():
    traces = _run(Reply(SGL), parse=parse_generate_chunk, path="/generate")
    assert traces[0].n_tokens == 8 and traces[0].finish_reason == "length"


def test_non_json_data_line():
    ev = _events(VLLM_BS1)
    ev.insert(3, b"data: {this is not json")
    with pytest.raises(BenchmarkFailure, match="non-JSON") as e:
        _run(Reply(b"\n\n".join(ev) + b"\n\n"))
    assert _outcome(e.value) == "BenchmarkFailure"


def test_no_done_marker():
    body = VLLM_BS1.replace(b"data: [DONE]", b"")
    with pytest.raises(BenchmarkFailure, match=r"without \[DONE\]"):
        _run(Reply(body))


def test_fewer_tokens_than_asked_is_never_a_number():
    ev = _events(VLLM_BS1)
    short = b"\n\n".join(ev[:3] + [b"data: [DONE]"]) + b"\n\n"
    traces = _run(Reply(short))
    with pytest.raises(BenchmarkFailure, match=r"ended after 3 of 8 tokens") as e:
        run_metrics(traces, input_len=8, output_len=8)
    assert _outcome(e.value) == "BenchmarkFailure"


def test_error_object_mid_stream_vllm():
    ev = _events(VLLM_BS1)
    ev.insert(4, b'data: {"error": {"message": "EngineCore encountered an issue", "type": "InternalServerError"}}')
    with pytest.raises(ServerHTTPError, match="after 4 tokens: EngineCore encountered an issue") as e:
        _run(Reply(b"\n\n".join(ev) + b"\n\n"))
    assert _outcome(e.value) == "ServerError"


def test_error_object_mid_stream_sglang_documented():
    raw = (STREAMS / "sglang_generate_error_doc.sse").read_bytes()
    with pytest.raises(ServerHTTPError, match="scheduler crashed"):
        _run(Reply(raw), parse=parse_generate_chunk, path="/generate")


def test_http_500():
    with pytest.raises(ServerHTTPError, match="HTTP 500") as e:
        _run(Reply(b'{"detail": "Internal Server Error"}', status=500, content_type="application/json"))
    assert _outcome(e.value) == "ServerError"


def test_recorded_http_400_too_long_prompt():
    status, _, body = (STREAMS / "vllm_cpu_too_long.http").read_text().partition("\n")
    with pytest.raises(ServerHTTPError, match="HTTP 400.*maximum context length"):
        _run(Reply(body.encode(), status=int(status), content_type="application/json"))


def test_connection_reset_mid_stream():
    cut = VLLM_BS1.index(b"data:", 600)
    with pytest.raises(BenchmarkFailure, match="connection broke") as e:
        _run(Reply(VLLM_BS1, reset_after=cut))
    assert _outcome(e.value) == "BenchmarkFailure"


def test_a_refused_connection_is_not_a_timeout():
    """A dead server refuses the connection at once: that is a broken connection (the runner then
    finds the engine dead and says ServerError), never "no data for N s"."""
    from moetrace.engines.process import free_port
    url = f"http://127.0.0.1:{free_port('127.0.0.1')}/v1/completions"
    with pytest.raises(BenchmarkFailure, match="connection broke after 0 tokens: could not connect") as e:
        stream_batch(url, {"prompt": [1, 2]}, batch=1, parse=parse_completion_chunk, request_timeout_s=300)
    assert _outcome(e.value) == "BenchmarkFailure"


def test_server_stops_sending_is_a_timeout():
    cut = VLLM_BS1.index(b"data:", 600)
    with pytest.raises(RequestTimeout, match=r"no data from the server for 1 s after \d+ tokens") as e:
        _run(Reply(VLLM_BS1, hang_after=cut), timeout=1.0)
    assert _outcome(e.value) == "Timeout"


def test_stream_naming_a_request_outside_the_batch():
    body = re.sub(rb'"index":0', b'"index":5', VLLM_BS1)
    with pytest.raises(BenchmarkFailure, match="request 5 of a batch of 1"):
        _run(Reply(body))


SGL_LOGS = STREAMS.parent / "sglang_doc_logs"


def test_sglang_abort_finish_reason_is_an_error_classified_oom():
    """SGLang ends a stream it aborts with finish_reason {"type": "abort", "message": ...} and
    [DONE] (tests/data/streams/README.md): an error carrying the message, not a short stream."""
    raw = (STREAMS / "sglang_generate_abort_oom_doc.sse").read_bytes()
    with pytest.raises(ServerHTTPError, match=r"after 3 tokens: .*Out of memory even after retracting all "
                                              r"other requests") as e:
        _run(Reply(raw), parse=parse_generate_chunk, path="/generate")
    c = classify(exception=type(e.value).__name__, message=str(e.value), phase="measure")
    assert c.error_type == "OOM" and "Out of memory even after retracting" in c.error_message


def test_sglang_abort_input_longer_than_the_kv_pool():
    raw = (STREAMS / "sglang_generate_abort_input_too_long_doc.sse").read_bytes()
    with pytest.raises(ServerHTTPError, match=r"Input length \(4096 tokens\) exceeds the maximum allowed") as e:
        _run(Reply(raw), parse=parse_generate_chunk, path="/generate")
    msg = str(e.value)
    # the startup log says the KV pool is what limits the input: an OOM (of the KV pool)
    log = (SGL_LOGS / "kv_pool_smaller_than_context.log").read_text()
    c = classify(exception="ServerHTTPError", message=msg, log_text=log, phase="warmup")
    assert c.error_type == "OOM" and "Input length (4096 tokens)" in c.error_message
    assert "KV pool holds 2999 tokens" in c.evidence
    # without that, the same abort (a context length shorter than the input) is a server-side refusal
    c = classify(exception="ServerHTTPError", message=msg, log_text="[2026-11-30 10:30:40] ready\n", phase="warmup")
    assert c.error_type == "ServerError" and "Input length (4096 tokens)" in c.error_message
