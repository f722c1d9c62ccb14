"""Against a real vLLM CPU server that keeps its prefix cache (started with moetrace's own
command, without the dev mode that serves /reset_prefix_cache, so every flush fails), as a
user's --base-url server would: two attempts are both measured on their own prompts (no cached
prompt token, which the server reports), and the server's own TTFT and ITL are recorded beside
ours. On the code before the per-attempt nonce the second attempt's prompts were the first's."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import httpx
import pytest

from moetrace.engines.base import LaunchSpec
from moetrace.engines.process import ServerProcess, free_port
from moetrace.engines.vllm import VLLM
from moetrace.matrix import Config
from moetrace.presets import preset_from_checkpoint
from tests.conftest import moetrace, require_engine

pytestmark = pytest.mark.engine


@pytest.fixture(scope="module")
def kept_cache_server(tiny_dir):
    python = require_engine()
    ckpt = tiny_dir / "qwen3-235b"
    if not (ckpt / "config.json").exists():
        moetrace("tiny", "Qwen3-235B", "--out", str(ckpt), check=True)
    preset = preset_from_checkpoint(ckpt)
    eng, port = VLLM(), free_port()
    spec = LaunchSpec(preset=preset, config=Config(1), model_path=str(ckpt), port=port, python=python, device="cpu",
                      max_model_len=8192, extra_args=["--gpu-memory-utilization", "0.15"])
    env = {k: v for k, v in eng.environment(spec).items() if k != "VLLM_SERVER_DEV_MODE"}
    log = Path(tempfile.mkdtemp()) / "server.log"
    base = f"http://127.0.0.1:{port}"
    with ServerProcess(eng.command(spec), log_path=log, env=dict(os.environ, **env), port=port) as sp, \
            httpx.Client() as http:
        sp.wait_ready(lambda: eng.is_ready(http, base), timeout_s=600)
        yield base


def test_two_attempts_against_a_server_that_keeps_its_cache(kept_cache_server, tiny_dir, tmp_path):
    args = ("run", "Qwen3-235B", "--tiny", "--tiny-dir", str(tiny_dir), "-c", "TP1_auto", "--engine", "vllm",
            "--base-url", kept_cache_server,
            "--input-len", "512", "--output-len", "32", "--no-profile", "--no-warmup", "-r", str(tmp_path))
    moetrace(*args, check=True)
    moetrace(*args, check=True)
    recs = [json.loads(p.read_text()) for p in sorted((tmp_path / "records").glob("*.json"))]
    assert [r["status"] for r in recs] == ["success", "success"], [r.get("error") for r in recs]
    assert recs[0]["workload"]["prompt_nonce"] != recs[1]["workload"]["prompt_nonce"]
    for r in recs:
        m = r["runs"][0]["metrics"]
        assert m["cache_flushed"] is False  # no dev mode: the flush failed, and says so
        assert m["cached_tokens_reported"] is True and m["cached_prompt_tokens"] == 0  # the engine said: none
        assert r["engine"]["launched_by_moetrace"] is False
        # the server's own figures, beside ours
        assert m["server_timing"]["available"] is True and m["server_timing"]["itl_samples"] == 31
        assert m["server_itl_ms"] > 0 and m["server_ttft_ms"] > 0
        assert set(m["delivery"]) == {"burst_share", "longest_stall_ms", "stall_ratio", "bursty"}
        assert r["metrics"]["server_itl_ms"] == m["server_itl_ms"]  # one run: its value is the median
