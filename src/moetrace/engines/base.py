"""The engine interface: what moetrace needs from an inference engine, and nothing else.

An adapter turns a (preset, config) into a command line and environment, says how
to tell the server is ready, how to ask for a streamed batch of token-id prompts
and read its chunks, how to flush the prefix cache, what the server says about
itself, and how to capture an extend and a decode trace. Process management,
measurement and recording are the same for every engine and live elsewhere.
"""

from __future__ import annotations

import re
import shlex
import subprocess
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterable

import httpx

from ..measure.client import ChunkParser
from ..matrix import Config
from ..presets import Preset
from .profiler import TraceName

__all__ = ["Engine", "ExpertLoadRequest", "LaunchSpec", "ProfileRequest", "register", "ENGINES"]


@dataclass
class LaunchSpec:
    """Everything an adapter needs to build one launch command."""

    preset: Preset
    config: Config
    model_path: str
    port: int
    host: str = "127.0.0.1"
    python: str = "python3"  # the engine's interpreter (it may live in another environment)
    prefix: list[str] = field(default_factory=list)  # e.g. ["srun", ...] or ["docker", "exec", "sglang"]
    extra_args: list[str] = field(default_factory=list)  # the user's extras, last so they win
    profile_dir: Path | None = None
    profile_with_stack: bool = False
    profile_steps: int = 5  # decode steps a profiler window holds, where the engine bounds windows by iterations
    device: str = "cuda"  # "cuda" or "cpu"
    max_model_len: int | None = None
    mem_fraction: float | None = None  # --mem-fraction: the engine's own memory-fraction flag
    expert_load_dir: Path | None = None  # --expert-load: where the engine's expert recorder writes
    engine_version: str | None = None  # the engine package's version where the launcher read it (Engine.version)
    # multi-node: one process per node
    nnodes: int = 1
    node_rank: int = 0
    dist_init_addr: str | None = None

    @classmethod
    def from_options(cls, preset: Preset, config: Config, opts: Any, *, port: int, device: str,
                     profile_dir: Path | None = None, node_rank: int = 0,
                     dist_init_addr: str | None = None) -> "LaunchSpec":
        """The one place a launch is built from the run options (``options.RunOptions``): the
        runner's launch, each node of a multi-node launch, and the dry run."""
        return cls(preset=preset, config=config, model_path=opts.model_path or preset.hf_id, port=port,
                   host=opts.host, python=opts.engine_python, prefix=list(opts.launch_prefix),
                   extra_args=list(opts.extra_args), profile_dir=profile_dir if opts.profile else None,
                   profile_with_stack=opts.profile_with_stack, profile_steps=opts.profile_steps, device=device,
                   max_model_len=opts.max_model_len,
                   mem_fraction=opts.mem_fraction, nnodes=config.nodes,
                   # beside profiler_raw/ in the attempt's directory
                   expert_load_dir=Path(profile_dir).parent / "expert_load"
                   if opts.expert_load and profile_dir is not None else None,
                   node_rank=node_rank, dist_init_addr=dist_init_addr)


@dataclass
class ProfileRequest:
    """How the trace step asks the measurement layer for traffic while a profiler runs."""

    out_dir: Path  # where this engine's raw files land
    steps: int
    with_stack: bool
    run: Callable[[int, int, Callable[[int], None] | None], None]
    """run(batch_prompts_seed, max_tokens, on_token): send one streamed request and wait for it."""
    run_async: Callable[[int, int, Callable[[int], None] | None], Any]
    """Same, in a thread; returns a job with .join(), .cancel(), .done and .error."""
    expected_ranks: int = 1
    timeout_s: float = 600.0
    stages: tuple[str, ...] = ("extend", "decode")
    """The stages wanted; an engine that profiles both at once (SGLang by stage) may return both."""
    longer: bool = False
    """A retry after a trace without a step of its stage: hold each window open longer."""
    alive: Callable[[], bool] | None = None
    """False once the engine died: waiting for trace files stops at once."""
    done: dict[str, list[Path]] = field(default_factory=dict)
    """Filled as each stage's files are complete, so that files written before a failure are still known."""


@dataclass(frozen=True)
class ExpertLoadRequest:
    """The request whose expert load is counted: calling it sends it as measured (streamed) and waits; an engine
    that returns the routing only in a whole (non-streamed) response sends ``prompts`` itself."""

    run: Callable[[], Any]
    prompts: list[list[int]]
    max_tokens: int
    model: str
    experts: int  # routed experts of the model (the counts' last dimension)
    timeout_s: float = 600.0

    def __call__(self) -> Any:
        return self.run()


class Engine(ABC):
    """One inference engine. Everything moetrace knows about an engine is here: its launch
    command and multi-node flags, the choices the CLI offers, what the planner assumes about its
    memory, and the names of its profiler files and step annotations. A new engine is one
    module in this package defining a subclass decorated with ``@register(name)``; the registry
    (``engines/registry.py``) finds it."""

    name: ClassVar[str]
    label: ClassVar[str] = ""  # the engine's name as its users write it (SGLang, vLLM), for messages
    python_module: ClassVar[str] = ""  # the module its interpreter must find (checked before a launch)
    default_for: ClassVar[tuple[str, ...]] = ()  # devices ("cuda", "cpu") on which --engine defaults to it
    moe_backends: ClassVar[tuple[str, ...]]
    quantizations: ClassVar[tuple[str, ...] | None] = None  # None: the engine's list is not checked
    ready_path: ClassVar[str]
    mem_fraction_flags: ClassVar[tuple[str, ...]] = ()  # the engine's memory-fraction flag, then its aliases
    # the engine's own per-token timing on its Prometheus page (measure/server_metrics.py), newest name first
    metrics_path: ClassVar[str] = "/metrics"
    itl_metrics: ClassVar[tuple[str, ...]] = ()
    ttft_metrics: ClassVar[tuple[str, ...]] = ()
    # flags that make the engine fill the weights itself (random, no checkpoint read): --weights dummy
    dummy_load_args: ClassVar[tuple[str, ...]] = ()
    # environment of the engine's uniform routing simulator (--routing balanced); empty: it has none
    balanced_routing_env: ClassVar[dict[str, str]] = {}

    @abstractmethod
    def command(self, spec: LaunchSpec) -> list[str]:
        """The argument list that starts one server process (no shell involved)."""

    def environment(self, spec: LaunchSpec) -> dict[str, str]:
        """Variables to add to the server's environment."""
        return {}

    def launch_environment(self, spec: LaunchSpec, opts: Any) -> dict[str, str]:
        """Everything a launch adds to the server's environment, in the one order every launcher uses (the
        attempt's launch, each node of a multi-node launch, the dry run): the adapter's own variables, the
        balanced-routing switch (``--routing balanced``), then the user's ``--engine-env`` (last, so it wins)."""
        routing = self.balanced_routing_env if getattr(opts, "routing", "model") == "balanced" else {}
        return {**self.environment(spec), **routing, **dict(getattr(opts, "engine_env", ()) or ())}

    @abstractmethod
    def generate(self, prompts: list[list[int]], max_tokens: int) -> tuple[str, dict[str, Any], ChunkParser]:
        """(path, JSON body, chunk parser) of one streamed request for a batch of prompts."""

    @abstractmethod
    def flush_cache(self, http: httpx.Client, base_url: str) -> bool:
        """Empty the prefix cache; True when the server confirmed."""

    @abstractmethod
    def server_info(self, http: httpx.Client, base_url: str) -> dict[str, Any]:
        """What the server reports about itself (version, arguments), best effort."""

    @abstractmethod
    def capture_profile(self, http: httpx.Client, base_url: str, req: ProfileRequest) -> dict[str, list[Path]]:
        """Run profiled traffic and return {'extend': [files], 'decode': [files]}, rank 0 first."""

    # ---- failure classification (results/classify.py): (error class, regex) its server log says
    log_rules: ClassVar[tuple[tuple[str, str], ...]] = ()  # tried after the generic out-of-memory rule
    weak_log_rules: ClassVar[tuple[tuple[str, str], ...]] = ()  # tried last: decisive when nothing else is
    # its own words when it ran out of memory (regexes): kept first, beside PyTorch's "CUDA out of memory" line
    oom_log_lines: ClassVar[tuple[str, ...]] = ()

    # ---- expert load (--expert-load; measure/expert_load.py reads what comes back)
    expert_load_absent: ClassVar[str] = "this engine exposes no per-expert token counts to moetrace"
    """Why the engine records no expert load, said in the record when --expert-load is asked for."""
    expert_load_source: ClassVar[str] = ""

    def expert_load_replicas(self, config: Config) -> int:
        """How many times the recorder counts each routed token (measure/expert_load.py ``replicas``)."""
        return 1

    def expert_load_unavailable(self, device: str) -> str | None:
        """Why this engine counts no expert load on ``device`` (said in the record), or None when it does."""
        return None if self.expert_load_source else self.expert_load_absent

    def capture_expert_load(self, http: httpx.Client, base_url: str, out_dir: Path,
                            run: ExpertLoadRequest) -> list[Path] | None:
        """Record expert load around ``run()`` (one request of the workload, as measured) and
        return the files the engine's recorder wrote into ``out_dir``; None (the default) when the engine has no
        recorder, which the record says with ``expert_load_absent``."""
        return None

    @classmethod
    def expert_counts(cls, path: Path) -> Any:
        """The counts in a file ``capture_expert_load`` returned: tokens per (forward pass, layer,
        logical expert), an array of shape [passes, layers, experts] (measure/expert_load.py)."""
        raise ValueError(f"{cls.label} writes no expert-load files moetrace reads")  # by design: no recorder

    def read_metrics(self, http: httpx.Client, base_url: str) -> str | None:
        """The server's Prometheus metrics page, or None when it has none."""
        if not self.itl_metrics and not self.ttft_metrics:
            return None
        try:
            r = http.get(base_url + self.metrics_path, timeout=10)
        except httpx.HTTPError:
            return None
        return r.text if r.status_code == 200 else None

    @classmethod
    def resolved_backends(cls, log_text: str) -> dict[str, str]:
        """What the server log says the engine chose at launch (the record's ``engine.resolved``):
        at least ``moe`` and ``attention`` where the log names them, in the engine's own words,
        and only what the log states; {} (the default) for an engine whose log this does not read."""
        return {}

    def model_name(self, http: httpx.Client, base_url: str) -> str | None:
        """The name the server serves its model under, when requests must name it."""
        return None

    def is_ready(self, http: httpx.Client, base_url: str) -> bool:
        try:
            return http.get(base_url + self.ready_path, timeout=5.0).status_code == 200
        except httpx.HTTPError:
            return False

    def version(self, python: str, prefix: list[str] | None = None) -> str | None:
        """The engine package's version in its own environment (no heavy import)."""
        code = ("import importlib.metadata as m\n"
                f"for n in {self.dist_names!r}:\n"
                "    try: print(m.version(n)); break\n"
                "    except m.PackageNotFoundError: pass\n")
        try:
            out = subprocess.run([*(prefix or []), python, "-c", code], capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return out.stdout.strip() or None

    dist_names: ClassVar[tuple[str, ...]] = ()

    # ---- what the planner assumes (plan/planner.py); None: the planner cannot plan for this engine
    planner_memory: ClassVar[str | None] = None
    """The planner's memory model that matches the engine: "static" (a fraction of the memory left after
    the CUDA context holds weights and KV cache; activations and graphs live in the rest, SGLang) or
    "utilization" (a fraction of all memory holds weights, peak activations and KV cache, vLLM)."""
    default_mem_fraction: ClassVar[float | None] = None  # None: the planner's model computes the engine's own
    planner_ep_is_tp: ClassVar[bool] = False  # EP > 1 spreads the experts over the whole TP group (vLLM)

    @classmethod
    def ep_groups(cls, config: Config) -> int:
        """The EP ranks a config's experts are spread over: its EP, or the whole TP group where the engine puts EP
        over it (``planner_ep_is_tp``: vLLM's --enable-expert-parallel makes TP8_EP2 eight EP ranks)."""
        return config.tp if (cls.planner_ep_is_tp and config.ep > 1) else config.ep
    planner_load_extras: ClassVar[bool] = False  # tensors built at load time (SGLang's absorbed MLA copies)

    # ---- multi-node
    def dist_init_args(self, host: str, port: int) -> list[str]:
        """The arguments that point an engine process at the first node of a multi-node launch."""
        raise ValueError(f"no multi-node launch for engine {self.name!r}")

    # ---- profiler files and step annotations (traces/names.py asks every engine)
    @classmethod
    def parse_trace_name(cls, file_name: str) -> TraceName | None:
        """A ``TraceName`` (``engines/profiler.py``) when ``file_name`` has the form of this engine's profiler
        files, else None."""
        return None

    @classmethod
    def step_stage(cls, name: str) -> str | None:
        """EXTEND, DECODE, MIXED or IDLE when ``name`` is this engine's step annotation, else None."""
        return None

    @classmethod
    def default_python(cls) -> str | None:
        """The engine's interpreter from the environment: ``$MOETRACE_<NAME>_PYTHON``."""
        import os
        return os.environ.get(f"MOETRACE_{cls.name.upper()}_PYTHON")

    def mem_fraction_args(self, spec: LaunchSpec) -> list[str]:
        """``--mem-fraction`` as the engine's own flag (before the preset's and the user's
        arguments, so that theirs win as they would in the engine's parser)."""
        if spec.mem_fraction is None or not self.mem_fraction_flags:
            return []
        return [self.mem_fraction_flags[0], f"{spec.mem_fraction:g}"]

    def given_mem_fraction(self, args: Iterable[str]) -> float | None:
        """The memory fraction an argument list gives the engine: the last value of its flag
        (``--flag V`` or ``--flag=V``; vLLM also takes underscores), as its parser reads it."""
        flags = {f.replace("_", "-") for f in self.mem_fraction_flags}
        found = None
        args = list(args)
        for i, a in enumerate(args):
            key, eq, val = a.partition("=")
            if key.replace("_", "-") not in flags:
                continue
            if not eq:
                val = args[i + 1] if i + 1 < len(args) else ""
            try:
                found = float(val)
            except ValueError:
                continue
        return found

    @staticmethod
    def shell_line(cmd: Iterable[str]) -> str:
        """The command as a user would paste it (for logs and --dry-run only; never executed)."""
        return shlex.join(list(cmd))


ENGINES: dict[str, type[Engine]] = {}
"""Every adapter imported so far, by name (``engines/registry.py`` imports them all)."""


def moe_config_used(log_text: str, default: re.Pattern[str], tuned: re.Pattern[str]) -> str | None:
    """``default`` where the engine says it found no tuned MoE kernel config for a shape, else the name of
    the tuned file it says it loaded (``tuned``'s group 1), else None (``resolved_backends``)."""
    if default.search(log_text):
        return "default"
    m = tuned.search(log_text)
    return Path(m[1]).name if m else None


def register(name: str) -> Callable[[type[Engine]], type[Engine]]:
    """The class decorator an adapter module puts on its ``Engine``: the adapter's name (of
    ``--engine``, records and trace files) and its entry in ``ENGINES``."""
    def deco(cls: type[Engine]) -> type[Engine]:
        cls.name = name
        ENGINES[name] = cls
        return cls
    return deco
