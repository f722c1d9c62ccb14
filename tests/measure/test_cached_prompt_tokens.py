"""A measured request served from the engine's prefix cache is caught from what the engine
reports in the stream. vLLM: streams recorded from a real vLLM CPU server started with
``--enable-prompt-tokens-details`` (the same prompt twice: 0, then 384 of 512 tokens cached;
tests/data/streams/README.md). SGLang: its documented stream (``meta_info.cached_tokens``,
../shared/docs/engines.md), the count altered."""

from __future__ import annotations

from pathlib import Path

import pytest

from moetrace.measure.client import stream_batch
from moetrace.measure.metrics import run_metrics
from moetrace.engines.sglang import parse_generate_chunk
from moetrace.engines.vllm import parse_completion_chunk
from moetrace.errors import BenchmarkFailure

from ..replay_server import Reply, ReplayServer

STREAMS = Path(__file__).resolve().parents[1] / "data" / "streams"


def _traces(body: bytes, parse, path: str):
    with ReplayServer(Reply(body)) as srv:
        return stream_batch(srv.url + path, {}, batch=1, parse=parse, request_timeout_s=10)


def test_vllm_first_request_reports_no_cached_tokens():
    traces = _traces((STREAMS / "vllm_cpu_cached_first.sse").read_bytes(), parse_completion_chunk, "/v1/completions")
    m = run_metrics(traces, input_len=512, output_len=16)
    assert traces[0].cached_tokens == 0 and m["cached_prompt_tokens"] == 0 and m["cached_tokens_reported"] is True


def test_vllm_repeated_prompt_served_from_the_cache_is_a_failure():
    traces = _traces((STREAMS / "vllm_cpu_cached_again.sse").read_bytes(), parse_completion_chunk, "/v1/completions")
    assert traces[0].cached_tokens == 384
    with pytest.raises(BenchmarkFailure, match=r"384 prompt tokens were served from the engine's prefix cache"):
        run_metrics(traces, input_len=512, output_len=16)


def test_vllm_without_the_details_flag_reports_nothing():
    traces = _traces((STREAMS / "vllm_cpu_completions_bs1.sse").read_bytes(), parse_completion_chunk,
                     "/v1/completions")
    m = run_metrics(traces, input_len=8, output_len=8)
    assert m["cached_prompt_tokens"] is None and m["cached_tokens_reported"] is False


def test_sglang_cached_tokens_from_meta_info():
    doc = (STREAMS / "sglang_generate_doc.sse").read_bytes()
    m = run_metrics(_traces(doc, parse_generate_chunk, "/generate"), input_len=8, output_len=8)
    assert m["cached_prompt_tokens"] == 0 and m["cached_tokens_reported"] is True
    hit = doc.replace(b'"cached_tokens": 0', b'"cached_tokens": 6')
    with pytest.raises(BenchmarkFailure, match=r"6 prompt tokens were served .* \(request 0: 6 of 8\)"):
        run_metrics(_traces(hit, parse_generate_chunk, "/generate"), input_len=8, output_len=8)
