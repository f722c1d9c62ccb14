"""SGLang adapter (the engine the spec's users run on their H200 nodes).

Facts from ../shared/docs/engines.md and SGLang's own argument parser (the tests
parse every generated command with ``sglang.srt.server_args.ServerArgs``):
``--tp``/``--ep``/``--moe-runner-backend``; native ``POST /generate`` streams
``data: {json}`` chunks whose ``meta_info.completion_tokens`` counts tokens so far;
``/flush_cache``; ``/server_info`` (older: ``/get_server_info``); profiling by stage
with ``/start_profile`` {profile_by_stage, num_steps}, one file per rank and stage:
``{profile_id}-TP-{tp}[-DP-..][-PP-..][-EP-..]-EXTEND|DECODE.trace.json.gz`` (profiler V2:
``-prefill|-decode``).

Ran against live SGLang 0.5.17 servers on H200 (1 and 2 GPUs; tests/data/gpu*/, read by tests/gpu/):
launch, stream, flush, metrics, profiling by stage, the expert recorder, failures. None runs on the CPU
test machines (SGLang has no CPU build there); its command lines are parsed by SGLang 0.5.23's own parser.
"""

from __future__ import annotations

import re
import time
import zipfile
from pathlib import Path
from typing import Any, ClassVar, Iterable

import httpx

from ..measure.client import ChunkError, TokenEvent
from ..errors import ProfileError
from ..matrix import Config
from .base import Engine, ExpertLoadRequest, LaunchSpec, ProfileRequest, register, moe_config_used
from .profiler import DECODE, EXTEND, STAGE_WORDS, TraceName, snapshot, wait_for_files

# SGLang 0.5.23's --moe-runner-backend choices, in its order (MOE_RUNNER_BACKEND_CHOICES in
# sglang/srt/arg_groups/choices.py; SGLang plugins may add more). tests/engines/test_sglang_cmdline.py
# asserts this equals the choices of the installed parser (scripts/setup-sglang-parser.sh).
SGLANG_MOE_BACKENDS = (
    "auto", "deep_gemm", "triton", "triton_kernel", "flashinfer_trtllm", "experimental_sgl_trtllm",
    "flashinfer_trtllm_routed", "flashinfer_cutlass", "flashinfer_mxfp4", "flashinfer_cutedsl",
    "flashinfer_megamoe", "cutlass", "aiter", "marlin", "humming", "experimental_sgl_marlin",
    "lora_cutedsl", "lora_triton", "lora_marlin", "hpc_ops", "megamoe", "intel_xpu",
)


# SGLang 0.5.23 --quantization choices (tests/engines checks them against the parser).
SGLANG_QUANTIZATIONS = (
    "awq", "fp8", "mxfp8", "gptq", "gptq_marlin", "awq_marlin", "bitsandbytes", "gguf", "modelopt", "modelopt_fp8",
    "modelopt_fp4", "nvfp4_online", "modelopt_mixed", "petit_nvfp4", "w8a8_int8", "w8a8_fp8", "moe_wna16",
    "w4afp8", "mxfp4", "auto-round", "auto-round-int8", "compressed-tensors", "modelslim", "mxfp_w4a8", "quark",
    "quark_int4fp8_moe", "quark_mxfp4", "mlx_q4", "mlx_q8", "unquant", "humming",
)


def parse_generate_chunk(obj: dict[str, Any], state: dict[str, Any]) -> Iterable[TokenEvent]:
    """A native ``/generate`` stream chunk: ``meta_info.completion_tokens`` is cumulative per
    request (``index`` says which, for a batch); errors arrive as ``{"error": {...}}``, or as a
    last chunk whose ``finish_reason`` is ``{"type": "abort", "message": ...}`` (SGLang's
    ``FINISH_ABORT.to_json``: out of memory after retraction, an input longer than the KV pool)."""
    if "error" in obj:
        err = obj["error"]
        raise ChunkError(err.get("message", str(err)) if isinstance(err, dict) else str(err))
    meta = obj.get("meta_info") or {}
    idx = int(obj.get("index", 0))
    seen = state.setdefault("seen", {})
    total = meta.get("completion_tokens")
    if total is None:
        return
    new = int(total) - seen.get(idx, 0)
    seen[idx] = int(total)
    fin = meta.get("finish_reason")
    if isinstance(fin, dict):
        if fin.get("type") == "abort":  # the scheduler gave up on the request (FINISH_ABORT): an error
            code = f" (status {fin['status_code']})" if fin.get("status_code") else ""
            raise ChunkError(f"request aborted by the server{code}: {fin.get('message') or 'Aborted'}")
        fin = fin.get("type")
    if isinstance(meta.get("cached_tokens"), int):  # prompt tokens served by the radix cache
        state.setdefault("cached_tokens", {})[idx] = meta["cached_tokens"]
    if "e2e_latency" in meta:
        state.setdefault("e2e_latency", {})[idx] = meta["e2e_latency"]
    if new > 0 or fin:
        yield TokenEvent(idx, max(new, 0), fin)


# {prefix-}{profile_id}-TP-{tp}[-DP-{dp}][-PP-{pp}][-EP-{ep}][-EXTEND|-DECODE].trace.json.gz per rank
# (``merged-{profile_id}...`` when merged; profiler V2 ends in -prefill / -decode and writes -DP-/-PP-/-EP-
# only when that size is above 1); steps are annotated ``step[EXTEND bs=N toks=M]`` / ``step[DECODE bs=N]``.
_NAME_PART = re.compile(r"-(TP|DP|PP|EP)-(\d+)")
_NAME_STAGE = re.compile(r"-(EXTEND|DECODE|prefill|decode)(?=[.-]|$)")
_STEP = re.compile(r"^step\[(EXTEND|DECODE|MIXED|IDLE)\b")  # SGLang ForwardMode names


# What SGLang logs of its choices (resolved_backends): 0.5.17 on H200s (tests/data/gpu*/).
_SERVER_ARGS = re.compile(r"server_args=ServerArgs\((.*)\)")
_ARGS = (("attention", "attention_backend"), ("prefill_attention", "prefill_attention_backend"),
         ("decode_attention", "decode_attention_backend"), ("moe", "moe_runner_backend"))
_MOE_KIND = re.compile(r"moe_runner_backend=\w+, quant_method=(\w+)")
_MOE_CONFIG_DEFAULT = re.compile(r"Using default MoE kernel config\.")
_MOE_CONFIG = re.compile(r"Using MoE kernel config from (\S+\.json)")


@register("sglang")
class SGLang(Engine):
    label = "SGLang"
    python_module = "sglang"
    default_for = ("cuda",)
    log_rules = (
        ("OOM", r"Not enough memory\. Please try to increase --mem-fraction-static"),
        # the KV-pool allocator and retraction (mem_cache/allocation.py, managers/schedule_batch.py), and a
        # scheduler killed while loading: -9 is SIGKILL, the OS OOM killer (entrypoints/engine.py)
        ("OOM", r"(?:Prefill|Decode) out of memory\. Try to lower|Out of memory\. Try to lower"
                r"|Out of memory even after retracting"),
        ("OOM", r"scheduler died during initialization \(exit code: -9\)"),
    )
    # its own words about a CUDA OOM, kept before PyTorch's line (engines.md: the capture's advice follows it)
    oom_log_lines = (r"Capture cuda graph failed",)
    # retracting requests for KV room: a warning it survives, so weaker evidence than a crash; decisive
    # when nothing else is (a timeout while it kept retracting)
    weak_log_rules = (("OOM", r"KV cache pool is full"),)
    planner_memory = "static"  # --mem-fraction-static of the memory after the CUDA context
    planner_load_extras = True  # absorbed MLA copies (w_kc, w_vc) built at load time
    moe_backends = SGLANG_MOE_BACKENDS
    quantizations = SGLANG_QUANTIZATIONS
    ready_path = "/health_generate"
    balanced_routing_env = {"SGLANG_SIMULATE_UNIFORM_EXPERTS": "1"}  # SGLang 0.5.17 srt/environ.py, layers/moe/topk.py
    dummy_load_args = ("--load-format", "dummy")  # SGLang 0.5.17 `--load-format dummy` (LoadFormat.DUMMY)
    mem_fraction_flags = ("--mem-fraction-static",)
    itl_metrics = ("sglang:inter_token_latency_seconds", "sglang:time_per_output_token_seconds")  # --enable-metrics
    ttft_metrics = ("sglang:time_to_first_token_seconds",)
    dist_names = ("sglang",)

    def command(self, spec: LaunchSpec) -> list[str]:
        c = spec.config
        cmd = [*spec.prefix, spec.python, "-m", "sglang.launch_server", "--model-path", spec.model_path,
               "--host", spec.host, "--port", str(spec.port), "--tp", str(c.tp)]
        if c.ep > 1:
            cmd += ["--ep", str(c.ep)]
        if c.backend != "auto":
            cmd += ["--moe-runner-backend", c.backend]
        if c.quantization:
            cmd += ["--quantization", c.quantization]
        if spec.max_model_len:
            cmd += ["--context-length", str(spec.max_model_len)]
        if c.nodes > 1:
            cmd += ["--nnodes", str(c.nodes), "--node-rank", str(spec.node_rank)]
            if spec.dist_init_addr:
                cmd += ["--dist-init-addr", spec.dist_init_addr]
        if spec.device == "cpu":
            cmd += ["--device", "cpu"]
        cmd.append("--enable-metrics")  # /metrics: the server's own TTFT and ITL histograms, recorded beside ours
        if spec.expert_load_dir is not None:  # per forward pass: tokens per (layer, logical expert), summed over ranks
            cmd += ["--expert-distribution-recorder-mode", "stat", "--expert-distribution-recorder-buffer-size", "-1"]
        cmd += [*self.mem_fraction_args(spec), *spec.preset.extra_args("sglang"), *spec.extra_args]
        return cmd

    def dist_init_args(self, host: str, port: int) -> list[str]:
        return ["--dist-init-addr", f"{host}:{port}"]

    @classmethod
    def resolved_backends(cls, log_text: str) -> dict[str, str]:
        """SGLang's choices as its log states them:

        - ``attention`` (and ``prefill_attention``, ``decode_attention`` where set), ``moe``: the
          ``attention_backend`` (``prefill_...``, ``decode_...``), ``moe_runner_backend`` of the
          ``server_args=ServerArgs(...)`` line, which SGLang prints after filling its defaults (``Attention backend not specified. Use fa3 backend by
          default.``, then ``attention_backend='fa3'``). ``moe`` stays ``auto`` where SGLang left the choice to
          the MoE layer: 0.5.17 logs no line naming the runner an ``auto`` became.
        - ``moe_kind``: ``quant_method`` of ``FlashInfer TRTLLM MoE deferred finalize is disabled
          (moe_runner_backend=auto, quant_method=Fp8MoEMethod).``
        - ``moe_config``: ``default`` where ``Using default MoE kernel config. Performance might be
          sub-optimal! Config file not found at .../moe_runner/triton_utils/configs/...`` (the Triton MoE
          kernels without a tuned config for a shape), else the file of ``Using MoE kernel config from <file>``."""
        out: dict[str, str] = {}
        if args := _SERVER_ARGS.search(log_text):
            for key, arg in _ARGS:
                if m := re.search(rf"(?:^|, ){arg}='([^']*)'", args[1]):
                    out[key] = m[1]
        if m := _MOE_KIND.search(log_text):
            out["moe_kind"] = m[1]
        if used := moe_config_used(log_text, _MOE_CONFIG_DEFAULT, _MOE_CONFIG):
            out["moe_config"] = used
        return out

    @classmethod
    def parse_trace_name(cls, file_name: str) -> TraceName | None:
        parts = {k.lower(): int(v) for k, v in _NAME_PART.findall(file_name)}
        if "tp" not in parts and not file_name.startswith("merged-"):
            return None
        stage = _NAME_STAGE.search(file_name)
        return TraceName("sglang", parts.get("tp"), STAGE_WORDS[stage.group(1).lower()] if stage else None, parts,
                         merged=file_name.startswith("merged-"))

    @classmethod
    def step_stage(cls, name: str) -> str | None:
        m = _STEP.match(name)
        return m.group(1) if m else None

    def environment(self, spec: LaunchSpec) -> dict[str, str]:
        env = {}
        if spec.profile_dir is not None:
            env["SGLANG_TORCH_PROFILER_DIR"] = str(Path(spec.profile_dir).resolve())
        if not spec.profile_with_stack:
            env["SGLANG_PROFILE_WITH_STACK"] = "False"  # works around a PyTorch bug (engines.md)
        if spec.expert_load_dir is not None:  # where /dump_expert_distribution_record writes (rank 0)
            env["SGLANG_EXPERT_DISTRIBUTION_RECORDER_DIR"] = str(Path(spec.expert_load_dir).resolve())
        return env

    expert_load_source: ClassVar[str] = "SGLang expert distribution recorder (stat)"

    def expert_load_replicas(self, config: Config) -> int:
        return config.tp  # every rank of the TP group routes every token; the dump sums the ranks

    def capture_expert_load(self, http: httpx.Client, base_url: str, out_dir: Path,
                            run: ExpertLoadRequest) -> list[Path]:
        """SGLang's expert distribution recorder (``--expert-distribution-recorder-mode stat``,
        0.5.17 ``sglang/srt/eplb/expert_distribution.py``): between ``/start_expert_distribution_record``
        and ``/stop_expert_distribution_record`` it keeps, per forward pass, the tokens each logical
        expert of each layer received (all ranks summed); ``/dump_expert_distribution_record`` makes
        rank 0 ``torch.save`` {rank, logical_count [passes, layers, experts], ...} as
        ``expert_distribution_recorder_<time>.pt`` in ``$SGLANG_EXPERT_DISTRIBUTION_RECORDER_DIR``."""
        out_dir.mkdir(parents=True, exist_ok=True)
        before = snapshot(out_dir)
        for path in ("/start_expert_distribution_record", None, "/stop_expert_distribution_record",
                     "/dump_expert_distribution_record"):
            if path is None:
                run()
                continue
            r = http.post(base_url + path, timeout=120)
            if r.status_code != 200:
                raise ProfileError(f"POST {path} answered {r.status_code}: {r.text[:200]}")
        deadline = time.monotonic() + 60  # rank 0 writes it before the dump call returns; allow for a slow disk
        while True:
            new = sorted(p for p in snapshot(out_dir) - before if EXPERT_FILE.match(p.name) and zipfile.is_zipfile(p))
            if new:  # torch.save writes a zip archive; its central directory comes last
                return new
            if time.monotonic() > deadline:
                raise ProfileError(f"SGLang's expert distribution recorder wrote no complete "
                                   f"expert_distribution_recorder_*.pt into {out_dir} within 60 s")
            time.sleep(0.5)

    @classmethod
    def expert_counts(cls, path: Path) -> Any:
        """``logical_count`` of the recorder's dump, read without torch."""
        from ..measure.expert_load import read_torch_save
        return read_torch_save(path.read_bytes())["logical_count"].array

    def generate(self, prompts: list[list[int]], max_tokens: int):
        # stream_interval 1: one chunk per decode step whatever the server's --stream-interval (a per-request
        # sampling parameter in SGLang 0.5.23, sampling_params.py; the server's default applies when absent)
        body = {"input_ids": prompts if len(prompts) > 1 else prompts[0],
                "sampling_params": {"temperature": 0.0, "max_new_tokens": max_tokens, "ignore_eos": True,
                                    "stream_interval": 1},
                "stream": True}
        return "/generate", body, parse_generate_chunk

    flush_wait_s: ClassVar[float] = 10.0  # the server waits this long for running requests (?timeout=)
    flush_retry_s: ClassVar[float] = 10.0  # and we retry its 400 this long (servers without ?timeout=)

    def flush_cache(self, http: httpx.Client, base_url: str) -> bool:
        """SGLang flushes only when no request runs and answers 400 otherwise (a profiled or
        aborted request may still be finishing). Recent versions wait for idle up to
        ``?timeout=`` seconds (http_server.py flush_cache, 0.5.23); older ones ignore it, so a
        400 is retried briefly."""
        deadline = time.monotonic() + self.flush_retry_s
        while True:
            try:
                r = http.post(base_url + "/flush_cache", params={"timeout": self.flush_wait_s},
                              timeout=self.flush_wait_s + 30)
            except httpx.HTTPError:
                return False
            if r.status_code == 200:
                return True
            if r.status_code != 400 or time.monotonic() >= deadline:
                return False
            time.sleep(0.5)

    def server_info(self, http: httpx.Client, base_url: str) -> dict[str, Any]:
        for path in ("/server_info", "/get_server_info"):
            try:
                r = http.get(base_url + path, timeout=10)
                if r.status_code == 200:
                    return {"server_info": r.json()}
            except (httpx.HTTPError, ValueError):
                continue
        try:
            r = http.get(base_url + "/v1/models", timeout=10)
            return {"v1_models": r.json()} if r.status_code == 200 else {}
        except (httpx.HTTPError, ValueError):
            return {}

    def capture_profile(self, http: httpx.Client, base_url: str, req: ProfileRequest) -> dict[str, list[Path]]:
        """One profiling session by stage; SGLang stops it by itself.

        SGLang's by-stage extend trace holds one prefill, whatever ``num_steps`` says: the first
        decode step flushes it (profiler V1, 0.5.17, seen on H200; V2 stops a stage when the
        forward mode changes). So one request is enough: its prefill is the extend trace and its
        own decode tokens are the decode steps. The decode stage stops after ``num_steps`` + 1
        decode steps, and a request of N tokens has N - 1 of them, hence ``max_new_tokens`` =
        ``num_steps`` + a margin. A retry (``req.longer``) doubles both.

        ``with_stack`` and ``record_shapes`` are sent explicitly: SGLang's own default for a
        missing ``with_stack`` is on (``_ProfilerTorch``: ``with_stack if not None else True``),
        which makes traces several times larger and trips a PyTorch bug (engines.md);
        ``record_shapes`` stays off (``--profile-with-stack`` turns the stacks on)."""
        steps = req.steps * (2 if req.longer else 1)
        max_new = steps + DECODE_MARGIN * (2 if req.longer else 1)
        before = snapshot(req.out_dir)
        body = {"output_dir": str(req.out_dir.resolve()), "num_steps": steps, "profile_by_stage": True,
                "activities": ["CPU", "GPU"], "with_stack": req.with_stack, "record_shapes": False}
        r = http.post(base_url + "/start_profile", json=body, timeout=120)
        if r.status_code != 200:
            raise ProfileError(f"POST /start_profile answered {r.status_code}: {r.text[:200]}")
        req.run(100, max_new, None)
        ranks = req.expected_ranks
        files = wait_for_files(req.out_dir, before, expect=2 * ranks, timeout_s=req.timeout_s, match=STAGE_FILE,
                               alive=req.alive)
        stage = {f: STAGE_WORDS[STAGE_FILE.search(f.name).group(1).lower()] for f in files}  # all match it
        out = {"extend": [f for f in files if stage[f] == EXTEND], "decode": [f for f in files if stage[f] == DECODE]}
        req.done.update(out)
        return out


# The per-stage files of profiler V1 (-EXTEND, -DECODE) and V2 (-prefill, -decode; 0.5.23
# sglang/srt/utils/profile_utils.py, ``output_suffix=f"-{stage}"``).
EXPERT_FILE = re.compile(r"^expert_distribution_recorder_[\d.]+\.pt$")
STAGE_FILE = re.compile(r"-(EXTEND|DECODE|prefill|decode)\.trace\.json(\.gz)?$")
DECODE_MARGIN = 8  # decode tokens beyond num_steps + 1, so that the decode stage surely ends
