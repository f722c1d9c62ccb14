"""What the engine ran, read from its server log (``Engine.resolved_backends``): on every real server log of
the GPU runs (vLLM 0.25.0 and SGLang 0.5.17 on H200s, runs 1-3; vLLM's full-depth ranks on an H100, run 4;
tests/data/gpu*/) and the vLLM CPU logs
(vLLM CPU 0.32.0, tests/data/logs/)."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

from moetrace.engines.sglang import SGLang
from moetrace.engines.vllm import VLLM

DATA = Path(__file__).resolve().parents[1] / "data"
GPU_LOGS = sorted(DATA.glob("gpu*/results*/attempts/*/server.log"))


def _logs(engine_module: str) -> list[Path]:
    return [p for p in GPU_LOGS if engine_module in p.read_text(errors="replace").splitlines()[0]]


VLLM_LOGS, SGLANG_LOGS = _logs("-m vllm."), _logs("-m sglang.")
# vLLM launches that ended before the model was built: compressed_tensors missing (run 1), interrupted (run 2)
VLLM_BEFORE_MODEL = {"20261130T051519-DeepSeek-V3.1-slice-TP1_auto-576626",
                     "20261130T051608-DeepSeek-V3.1-slice-TP1_triton-0a0427",
                     "20261130T082905-DeepSeek-V3.1-slice-TP1_triton-028b6f"}


def _id(p: Path) -> str:
    return f"{p.parents[2].parent.name}/{p.parents[2].name}/{p.parent.name}"


def test_every_gpu_log_is_one_engines():
    assert len(VLLM_LOGS) == 25 + 4 and len(SGLANG_LOGS) == 23   # run 4: the four ranks it measured
    assert len(GPU_LOGS) == len(VLLM_LOGS) + len(SGLANG_LOGS)


@pytest.mark.parametrize("log", VLLM_LOGS, ids=_id)
def test_vllm_gpu_log(log):
    """vLLM 0.25.0 ran the same MoE kernels with and without ``--moe-backend triton``: TRITON for the fp8
    DeepSeek-V3.1 and MiniMax-M2 slices, TRITON Unquantized for the bf16 ones, MARLIN for Kimi's int4."""
    text = log.read_text(errors="replace")
    got = VLLM.resolved_backends(text)
    if log.parent.name in VLLM_BEFORE_MODEL:
        assert got == {}
        return
    model = re.search(r"serve /tmp/(?:slices/|gpu-sweep/ranks/\.cache/variants/)([a-z0-9.]+(?:-[a-z0-9.]+)*?)"
                      r"(?:-dummy-\S+)?\s", text)[1]
    mla = model in ("deepseek-v3.1", "kimi-k2-thinking")
    assert got["attention"] == ("FLASH_ATTN_MLA" if mla else "FLASH_ATTN")
    assert got.get("mla_prefill") == ("FLASH_ATTN" if mla else None)
    kind = {"deepseek-v3.1": "Fp8", "minimax-m2": "Fp8", "kimi-k2-thinking": "WNA16"}.get(model, "Unquantized")
    assert (got["moe"], got["moe_kind"]) == ("MARLIN" if kind == "WNA16" else "TRITON", kind)
    assert "moe_experts" not in got  # the CPU build's line


def test_vllm_moe_config_default_or_the_tuned_file():
    """Only Qwen3-235B at TP2 (768 columns an expert) found a tuned Triton config on the H200; run 4's ranks on the
    H100 (16 and 32 local experts) found none either."""
    configs = {_id(p): VLLM.resolved_backends(p.read_text(errors="replace")).get("moe_config") for p in VLLM_LOGS}
    tuned = {k: v for k, v in configs.items() if v not in (None, "default")}
    assert tuned == {"gpu/results/20261130T052907-Qwen3-235B-slice-TP2_auto-b73625":
                     "E=128,N=768,device_name=NVIDIA_H200.json"}
    assert list(configs.values()).count("default") == 16 + 4


@pytest.mark.parametrize("log", SGLANG_LOGS, ids=_id)
def test_sglang_gpu_log(log):
    """The ServerArgs line's attention and MoE runner (FA3 where SGLang chose its default, Triton where the
    sweep asked for it; the runner as asked, ``auto`` left as is), the MoE method's quantization."""
    text = log.read_text(errors="replace")
    got = SGLang.resolved_backends(text)
    asked = re.search(r"--moe-runner-backend (\S+)", text.splitlines()[0])
    assert got["attention"] == ("fa3" if log.parents[2].name == "results-fa3" else "triton")
    assert got["moe"] == (asked[1] if asked else "auto")
    assert got["moe_kind"] == ("Fp8MoEMethod" if "DeepSeek" in log.parent.name else "UnquantizedFusedMoEMethod")
    assert "prefill_attention" not in got and "decode_attention" not in got  # None in every ServerArgs


def test_sglang_fa3_default_is_what_the_log_says():
    (log,) = [p for p in SGLANG_LOGS if "results-fa3" in str(p) and "DeepSeek" in p.parent.name]
    text = log.read_text()
    assert "Attention backend not specified. Use fa3 backend by default." in text
    assert SGLang.resolved_backends(text) == {"attention": "fa3", "moe": "auto", "moe_kind": "Fp8MoEMethod",
                                              "moe_config": "default"}


def test_sglang_moe_config():
    """The Triton runner's configs: default (untuned) everywhere but Qwen3-235B at TP2 without EP;
    triton_kernel (the triton_kernels library) looks up none."""
    by_id = {_id(p): SGLang.resolved_backends(p.read_text(errors="replace")).get("moe_config") for p in SGLANG_LOGS}
    assert by_id["gpu/results/20261130T053758-Qwen3-235B-slice-TP2_auto-6dbaaa"] == \
        "E=128,N=768,device_name=NVIDIA_H200.json"
    assert by_id["gpu-2/results/20261130T083457-Qwen3-235B-slice-TP1_triton_kernel-8bd54a"] is None


def test_each_parser_reads_only_its_engines_log():
    for log in VLLM_LOGS:
        assert SGLang.resolved_backends(log.read_text(errors="replace")) == {}
    for log in SGLANG_LOGS:
        assert VLLM.resolved_backends(log.read_text(errors="replace")) == {}


CPU = {
    # tiny DeepSeek-V3.1, ready: MLA attention on the CPU, the CPU MoE experts
    "vllm_cpu_ok_sigterm_group_shutdown.log": {"attention": "CPU_MLA", "mla_prefill": "CPU_SDPA_MLA", "moe": "CPU",
                                               "moe_kind": "Unquantized", "moe_experts": "CPUUnquantizedExperts"},
    # tiny Qwen3-235B: the CPU build logs no attention backend for a model without MLA
    "vllm_cpu_kv_cache_too_small.log": {"moe": "CPU", "moe_kind": "Unquantized",
                                        "moe_experts": "CPUUnquantizedExperts"},
    # int4 experts: the method is logged, no MoE backend was found
    "vllm_cpu_int4_moe_no_backend.log": {"attention": "CPU_MLA", "mla_prefill": "CPU_SDPA_MLA"},
    # --moe-backend triton on the CPU: refused before any backend was chosen
    "vllm_cpu_moe_backend_unsupported.log": {},
    "vllm_cpu_bad_arg.log": {},
    "vllm_cpu_port_in_use.log": {},
}


@pytest.mark.parametrize("name", sorted(CPU))
def test_vllm_cpu_log(name):
    assert VLLM.resolved_backends((DATA / "logs" / name).read_text()) == CPU[name]


def test_every_vllm_cpu_log_names_the_cpu_moe_backend_or_none():
    for log in sorted((DATA / "logs").glob("vllm_cpu_*.log")):
        got = VLLM.resolved_backends(log.read_text())
        assert got.get("moe") in (None, "CPU") and got.get("attention") in (None, "CPU_MLA"), log.name


# ----------------------------------------------------------------------------- into the record
STAND_IN = """#!{python}
import json, os, signal, sys
from http.server import BaseHTTPRequestHandler, HTTPServer
if sys.argv[1] == "-c":          # moetrace asking the engine's Python for its version
    sys.exit(0)
sys.stderr.write(open({startup!r}).read())
sys.stderr.flush()
if {exit_at_launch!r}:
    sys.exit(1)
class H(BaseHTTPRequestHandler):
    def log_message(self, *a):
        pass
    def do_GET(self):
        body = json.dumps({{"version": "0.5.17"}}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def do_POST(self):
        os.kill(os.getpid(), signal.SIGKILL)  # the warm-up request: the engine dies
HTTPServer(("127.0.0.1", int(sys.argv[sys.argv.index("--port") + 1])), H).serve_forever()
"""


@pytest.mark.parametrize("exit_at_launch", [False, True], ids=["after-ready", "launch-failure"])
def test_the_record_says_what_the_engine_chose(tmp_path, exit_at_launch):
    """A stand-in for SGLang that logs the startup of the real FA3 run (tests/data/gpu-2/results-fa3), then
    dies in the warm-up (the record's ``resolved`` was read once the server was ready) or exits before it is
    ready (read from the failure's log)."""
    from moetrace.matrix import Config
    from moetrace.presets import get_preset
    from moetrace.results.store import ResultsStore
    from moetrace.attempt import Progress, RunOptions, run_config

    (log,) = [p for p in SGLANG_LOGS if "results-fa3" in str(p) and "DeepSeek" in p.parent.name]
    lines = log.read_text().splitlines(keepends=True)
    startup = tmp_path / "startup.log"
    startup.write_text("".join(lines[1:next(i for i, x in enumerate(lines) if "Started server process" in x)]))
    fake = tmp_path / "sglang-python"
    fake.write_text(STAND_IN.format(python=sys.executable, startup=str(startup), exit_at_launch=exit_at_launch))
    fake.chmod(0o755)
    opts = RunOptions(engine="sglang", device="cuda", engine_python=str(fake), launch_timeout_s=30,
                      request_timeout_s=30, profile=False, grace_s=2)
    store = ResultsStore(tmp_path / "results", warn=lambda m: None)
    (rec,) = run_config(get_preset("DeepSeek-V3.1"), Config(1), opts, store, progress=Progress(every_s=60))
    assert rec.status == "failure" and rec.error.phase == ("launch" if exit_at_launch else "warmup")
    assert rec.engine.resolved == {"attention": "fa3", "moe": "auto", "moe_kind": "Fp8MoEMethod",
                                   "moe_config": "default"}
    assert json.loads((store.root / rec.record_path).read_text())["engine"]["resolved"] == rec.engine.resolved
