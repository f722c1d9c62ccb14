"""How vllm_cpu_cached_*.sse and vllm_cpu_metrics_{before,after}.txt were recorded (run by hand,
not by the tests): one real vLLM CPU server started with moetrace's own command (so with
--enable-prompt-tokens-details) serving a tiny checkpoint, no dev mode (its prefix cache is kept),
the same 512-token prompt sent twice for 16 tokens, and /metrics read before and after.

    PYTHONPATH=src .venv/bin/python tests/data/streams/record_vllm_numbers.py TINY_CHECKPOINT_DIR ENGINE_PYTHON
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import httpx

from moetrace.measure.prompts import random_prompts
from moetrace.engines.base import LaunchSpec
from moetrace.engines.process import ServerProcess, free_port
from moetrace.engines.vllm import VLLM
from moetrace.matrix import Config
from moetrace.presets import preset_from_checkpoint

OUT = Path(__file__).resolve().parent


def main() -> None:
    ckpt, python = Path(sys.argv[1]), sys.argv[2]
    preset = preset_from_checkpoint(ckpt)
    eng, port = VLLM(), free_port()
    spec = LaunchSpec(preset=preset, config=Config(1), model_path=str(ckpt), port=port, python=python, device="cpu",
                      max_model_len=8192, extra_args=["--gpu-memory-utilization", "0.15"])
    base = f"http://127.0.0.1:{port}"
    log = Path(tempfile.mkdtemp()) / "server.log"
    env = {k: v for k, v in eng.environment(spec).items() if k != "VLLM_SERVER_DEV_MODE"}
    prompt = random_prompts(batch=1, input_len=512, vocab_size=int(preset.hf_config["vocab_size"]), seed=1)[0]
    with ServerProcess(eng.command(spec), log_path=log, env=dict(__import__("os").environ, **env), port=port) as sp, \
            httpx.Client(timeout=120) as http:
        sp.wait_ready(lambda: eng.is_ready(http, base), timeout_s=600)
        _, body, _ = eng.generate([prompt], 16)
        body["model"] = eng.model_name(http, base)
        (OUT / "vllm_cpu_metrics_before.txt").write_text(http.get(base + "/metrics").text)
        for name in ("vllm_cpu_cached_first.sse", "vllm_cpu_cached_again.sse"):
            with http.stream("POST", base + "/v1/completions", json=body) as r:
                (OUT / name).write_bytes(b"".join(r.iter_bytes()))
            if name.endswith("first.sse"):
                (OUT / "vllm_cpu_metrics_after.txt").write_text(http.get(base + "/metrics").text)
    print("recorded; server log:", log)


if __name__ == "__main__":
    main()
