"""Cache flushes that are confirmed or retried, and requests that pin what the numbers depend
on. The servers here are httpx mock transports answering as the engines' sources say they do:
SGLang 0.5.23 ``/flush_cache`` (http_server.py: ``timeout`` query parameter, 200 or 400) and
vLLM 0.32.0 ``/reset_prefix_cache`` (serve/dev/cache/api_router.py: 200 with ``{"success": bool}``)."""

from __future__ import annotations

import httpx

from moetrace.engines.base import LaunchSpec
from moetrace.engines.sglang import SGLang
from moetrace.engines.vllm import VLLM
from moetrace.matrix import Config
from moetrace.presets import get_preset


def _client(answers: list[httpx.Response], seen: list[httpx.Request]) -> httpx.Client:
    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return answers.pop(0) if len(answers) > 1 else answers[0]
    return httpx.Client(transport=httpx.MockTransport(handler))


def test_sglang_flush_asks_the_server_to_wait_and_retries_its_400():
    seen: list[httpx.Request] = []
    busy = httpx.Response(400, text="Flush cache failed.\n")
    with _client([busy, busy, httpx.Response(200, text="Cache flushed.\n")], seen) as http:
        assert SGLang().flush_cache(http, "http://sgl") is True
    assert len(seen) == 3 and all(r.url.path == "/flush_cache" and float(r.url.params["timeout"]) > 0 for r in seen)


def test_sglang_flush_that_never_succeeds_is_reported_not_assumed():
    eng = SGLang()
    eng.flush_retry_s = 1.0
    seen: list[httpx.Request] = []
    with _client([httpx.Response(400)], seen) as http:
        assert eng.flush_cache(http, "http://sgl") is False
    assert len(seen) >= 2  # retried before giving up


def test_vllm_reset_answering_success_false_is_not_a_flush():
    seen: list[httpx.Request] = []
    with _client([httpx.Response(200, json={"success": False}), httpx.Response(200, json={"success": True})],
                 seen) as http:
        assert VLLM().flush_cache(http, "http://vllm") is True
    assert len(seen) == 2
    eng = VLLM()
    eng.flush_retry_s = 1.0
    with _client([httpx.Response(200, json={"success": False})], []) as http:
        assert eng.flush_cache(http, "http://vllm") is False
    seen.clear()
    with _client([httpx.Response(404)], seen) as http:  # not in dev mode: nothing to retry
        assert VLLM().flush_cache(http, "http://vllm") is False
    assert len(seen) == 1
    with _client([httpx.Response(200)], []) as http:  # older vLLM: 200, no body
        assert VLLM().flush_cache(http, "http://vllm") is True


def test_sglang_request_pins_one_chunk_per_step():
    _, body, _ = SGLang().generate([[1, 2, 3]], 8)
    assert body["sampling_params"]["stream_interval"] == 1


def test_launch_commands_ask_for_cache_and_timing_reports():
    p = get_preset("Qwen3-235B")
    spec = LaunchSpec(preset=p, config=Config(8, 2), model_path=p.hf_id, port=30000)
    assert "--enable-prompt-tokens-details" in VLLM().command(spec)  # usage.prompt_tokens_details.cached_tokens
    assert "--enable-metrics" in SGLang().command(spec)  # /metrics with the server's TTFT and ITL histograms
