"""The run options, defined once.

``RunOptions`` is what a run needs; ``RUN_OPTIONS`` is the table of the command-line options
of ``moetrace run``/``sweep`` and the per-model scripts: each entry names its flag, the field of
``RunOptions`` it sets (or none: an option of the command line only), its type, default and help,
how the command line's value becomes the field's, and how the field's value is spelled back as
flags for the node-side ``moetrace run`` of a Slurm job. From this table come the click options
(``cli.py``), ``RunOptions`` from the parsed command line (``from_cli``) and the node's command
(``node_flags``). No click here: the table is data.

Adding an option: a field in ``RunOptions`` and one ``OptionSpec`` in ``RUN_OPTIONS``.
"""

from __future__ import annotations

import os
import shlex
import shutil
import sys
from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import Any, Callable, Sequence

from .results.record import DEFAULT_INPUT_LEN, DEFAULT_OUTPUT_LEN

__all__ = ["RunOptions", "OptionSpec", "RUN_OPTIONS", "SHOW_COLUMNS", "from_cli", "from_dict", "node_flags",
           "engine_python"]

# --show: extra table columns
SHOW_COLUMNS = ("ttft", "itl_p99", "efficiency", "breakdown", "floor", "load", "backends", "launches")


@dataclass
class RunOptions:
    engine: str = "sglang"
    batch_sizes: tuple[int, ...] = (1,)
    input_len: int = DEFAULT_INPUT_LEN  # the spec's workload (results/record.py)
    output_len: int = DEFAULT_OUTPUT_LEN
    repeat: int = 1
    launches: int | str = 1  # engine launches per config, each measured `repeat` times (the launch-to-launch spread);
    # "auto": launches until the ITL p50's 95% interval over launch means is within ci_target, at most max_launches
    ci_target: float = 0.05  # --launches auto: the interval's half-width relative to its centre
    max_launches: int = 5  # --launches auto: the cap
    warmup: bool = True
    seed: int = 0
    launch_timeout_s: float = 3600.0  # loading a 1T-parameter model can take over 20 minutes
    request_timeout_s: float = 300.0
    profile: bool = True
    profile_steps: int = 5
    profile_with_stack: bool = False
    profile_timeout_s: float = 900.0
    expert_load: bool = False  # record how tokens were routed, with the engine's own recorder
    engine_python: str = field(default_factory=lambda: os.environ.get("MOETRACE_ENGINE_PYTHON", sys.executable))
    launch_prefix: tuple[str, ...] = ()
    extra_args: tuple[str, ...] = ()
    engine_env: tuple[tuple[str, str], ...] = ()  # extra environment for the engine, e.g. NCCL settings
    base_url: str | None = None
    host: str = "127.0.0.1"
    port: int | None = None
    device: str = "auto"  # auto | cuda | cpu
    model_path: str | None = None
    max_model_len: int | None = None
    gpu: str | None = None  # planner's GPU type; None = detect
    skip_predicted: bool = True
    mem_fraction: float | None = None
    grace_s: float = 20.0
    routing: str = "model"  # model: the model's router; balanced: the engine's uniform routing simulator

    def resolved_device(self) -> str:
        if self.device != "auto":
            return self.device
        return "cuda" if shutil.which("nvidia-smi") else "cpu"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["batch_sizes"] = list(self.batch_sizes)
        return d


_DEFAULTS = {f.name: f.default for f in fields(RunOptions) if f.default is not MISSING}


@dataclass(frozen=True)
class OptionSpec:
    """One command-line option of a run."""

    flags: tuple[str, ...]  # the long flag first, then its short form
    field: str | None = None  # the RunOptions field it sets; None: the command line's own
    param: str | None = None  # the parsed value's name, when not the flag's
    type: Any = None  # int, float, str; a tuple of choices, or a callable returning them
    default: Any = None  # the command line's default (the field's own default when it has one and this is None)
    help: str | Callable[[], str] = ""
    multiple: bool = False
    is_flag: bool = False  # a switch; ``negates``: it sets its field to False
    negates: bool = False
    show_default: bool = False
    parse: Callable[[Any, dict[str, Any]], Any] | None = None  # (command-line value, all values) -> field value
    spell: Callable[[Any], list[str]] | None = None  # field value -> flags for the node, replacing the default rule
    always: bool = False  # the node's command spells it out even at its default

    @property
    def name(self) -> str:
        return self.param or self.flags[0].lstrip("-").replace("-", "_")

    def cli_default(self) -> Any:
        if self.is_flag:
            return False
        if self.multiple:
            return ()
        if self.default is not None or self.field is None or not self.show_default:
            return self.default
        return _DEFAULTS.get(self.field)

    def choices(self) -> tuple[str, ...] | None:
        t = self.type() if callable(self.type) and not isinstance(self.type, type) else self.type
        return tuple(t) if isinstance(t, (tuple, list)) else None

    def help_text(self) -> str:
        return self.help() if callable(self.help) else self.help


# ------------------------------------------------------------------ how values cross the command line
def engine_python(engine: str, given: str | None) -> str:
    """An engine may live in its own environment; each engine can have its own variable."""
    from .engines.registry import engine_classes
    return (given or engine_classes()[engine].default_python() or os.environ.get("MOETRACE_ENGINE_PYTHON")
            or sys.executable)


def _engine(value: str | None, kw: dict[str, Any]) -> str:
    from .engines.registry import default_engine
    return value or default_engine("cpu" if kw["device"] == "cpu" or kw.get("tiny") else "cuda")


def _device(value: str, kw: dict[str, Any]) -> str:
    return "cpu" if kw.get("tiny") and value == "auto" else value


def _launches(value: Any, kw: dict[str, Any]) -> int | str:
    if str(value).strip().lower() == "auto":
        return "auto"
    try:
        n = int(value)
    except (TypeError, ValueError):
        raise ValueError(f"--launches {value}: a number of launches, or auto") from None
    if n < 1:
        raise ValueError(f"--launches {n}: at least one launch")
    return n


def _ci_target(value: float, kw: dict[str, Any]) -> float:
    if not 0 < value < 1:
        raise ValueError(f"--ci-target {value}: a fraction of the ITL p50 between 0 and 1 (0.05: +-5%)")
    return value


def _max_launches(value: int, kw: dict[str, Any]) -> int:
    if value < 2:
        raise ValueError(f"--max-launches {value}: at least 2 (--launches auto measures two launches or more)")
    return value


def split_engine_args(args: Sequence[str]) -> list[str]:
    out: list[str] = []
    for a in args:
        if a.startswith("--") and "=" in a:
            k, v = a.split("=", 1)
            out += [k, v]
        else:
            out += shlex.split(a)
    return out


def env_pairs(items: Sequence[str]) -> list[tuple[str, str]]:
    out = []
    for it in items:
        k, sep, v = it.partition("=")
        if not sep or not k.isidentifier():
            raise ValueError(f"--engine-env {it!r}: expected KEY=VALUE")
        out.append((k, v))
    return out


def _engine_arg_flags(args: Sequence[str]) -> list[str]:
    out = []
    for a in args:
        # One token each. The CLI splits '--k=v' at '=' and shell-splits anything else, so a
        # token that itself looks like '--k=v' is quoted to come back whole.
        q = shlex.quote(a)
        if q.startswith("--") and "=" in q:
            q = "'" + a.replace("'", "'\"'\"'") + "'"
        out.append(f"--engine-arg={q}")
    return out


def _num(v: Any) -> str:
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)


def _engine_names() -> list[str]:
    from .engines.registry import engine_names
    return engine_names()


def _engine_help() -> str:
    from .engines.registry import default_engine
    return f"engine to launch [default: {default_engine('cuda')}; {default_engine('cpu')} with --device cpu or --tiny]"


def _python_help() -> str:
    return ("Python interpreter of the engine's environment [default: "
            + " or ".join(f"$MOETRACE_{n.upper()}_PYTHON" for n in _engine_names())
            + " for that engine, else $MOETRACE_ENGINE_PYTHON, else this Python]")


def _mem_fraction_help() -> str:
    from .engines.registry import engine_classes
    return "engine memory fraction: " + ", ".join(f"{c.label} {c.mem_fraction_flags[0]}"
                                                  for c in engine_classes().values() if c.mem_fraction_flags)


S = OptionSpec
RUN_OPTIONS: tuple[OptionSpec, ...] = (
    S(("--engine",), "engine", type=_engine_names, help=_engine_help, parse=_engine, always=True),
    S(("--device",), "device", type=("auto", "cuda", "cpu"), show_default=True, parse=_device, always=True),
    S(("--config", "-c"), None, param="config_names", multiple=True,
      help="run only these configs, by name (e.g. TP8_EP2_auto); default: the model's matrix"),
    S(("--batch-size", "-b"), "batch_sizes", param="batch_sizes", type=int, multiple=True, help="batch sizes [default: 1]",
      parse=lambda v, kw: tuple(v or (1,)), spell=lambda v: [w for b in v for w in ("--batch-size", str(b))]),
    S(("--input-len",), "input_len", type=int, show_default=True),
    S(("--output-len",), "output_len", type=int, show_default=True),
    S(("--repeat", "-n"), "repeat", type=int, show_default=True, help="measured runs per batch size"),
    S(("--launches",), "launches", type=str, show_default=True, parse=_launches,
      help="launch the engine this many times per config and measure each (--repeat runs): one launch's "
           "figure moved 20%% between launches on H200 (docs/runs.md); the traces are of the last launch. "
           "auto: launch until the ITL p50's 95%% interval over launch means is within --ci-target, "
           "at least 2 launches, at most --max-launches"),
    S(("--ci-target",), "ci_target", type=float, show_default=True, parse=_ci_target,
      help="--launches auto: stop when the ITL p50's 95%% interval is within this fraction of it (0.05: +-5%%)"),
    S(("--max-launches",), "max_launches", type=int, show_default=True, parse=_max_launches,
      help="--launches auto: stop after this many launches whatever the interval"),
    S(("--seed",), "seed", type=int, show_default=True, help="seed of the random prompts"),
    S(("--no-warmup",), "warmup", is_flag=True, negates=True),
    S(("--launch-timeout",), "launch_timeout_s", type=float, show_default=True, help="seconds"),
    S(("--request-timeout",), "request_timeout_s", type=float, show_default=True,
      help="seconds without progress before a request counts as hung"),
    S(("--no-profile",), "profile", is_flag=True, negates=True, help="skip trace capture"),
    S(("--profile-steps",), "profile_steps", type=int, show_default=True),
    S(("--profile-with-stack",), "profile_with_stack", is_flag=True),
    S(("--profile-timeout",), "profile_timeout_s", type=float, show_default=True),
    S(("--expert-load",), "expert_load", is_flag=True,
      help="record tokens per expert per layer (prefill and decode) with the engine's own recorder, in a "
           "second launch of each config (SGLang's recorder adds kernels to every decode step, so the measured "
           "launch goes without it; an external server or a multi-node config keeps it in the measured one)"),
    S(("--engine-python",), "engine_python", help=_python_help, always=True,
      parse=lambda v, kw: engine_python(_engine(kw["engine"], kw), v)),
    S(("--launch-prefix",), "launch_prefix", default="", help="words put before the engine command, e.g. 'docker exec sgl'",
      parse=lambda v, kw: tuple(shlex.split(v)), spell=lambda v: ["--launch-prefix", shlex.join(v)] if v else []),
    S(("--engine-arg",), "extra_args", param="engine_args", multiple=True,
      help="extra engine argument, repeatable: --engine-arg=--mem-fraction-static=0.85",
      parse=lambda v, kw: tuple(split_engine_args(v)), spell=_engine_arg_flags),
    S(("--engine-env",), "engine_env", param="engine_env", multiple=True, help="KEY=VALUE for the engine's environment",
      parse=lambda v, kw: tuple(env_pairs(v)), spell=lambda v: [w for k, x in v for w in ("--engine-env", f"{k}={x}")]),
    S(("--base-url",), "base_url", help="measure a server that is already running; launch nothing"),
    S(("--host",), "host", type=str, show_default=True, help="address the engine binds"),
    S(("--port",), "port", type=int, help="engine port [default: a free one]"),
    S(("--model-path",), "model_path", help="load this checkpoint instead of the preset's HF id"),
    S(("--max-model-len",), "max_model_len", type=int),
    S(("--gpu",), "gpu", help="GPU type for the planner (h100, h200, b200) [default: detect]"),
    S(("--mem-fraction",), "mem_fraction", type=float, help=_mem_fraction_help),
    S(("--no-skip-predicted",), "skip_predicted", is_flag=True, negates=True,
      help="launch configs the planner predicts will not fit"),
    S(("--skip-succeeded",), None, is_flag=True, help="resume: skip configs that already succeeded"),
    S(("--only-failed",), None, is_flag=True, help="resume: run only configs that failed"),
    S(("--tiny",), None, is_flag=True, help="use tiny random-weight variants of the models (CPU engine)"),
    S(("--tiny-dir",), None, default=".cache/tiny", show_default=True),
    S(("--weights",), None, type=("checkpoint", "dummy"), default="checkpoint", show_default=True,
      help="dummy: no weight files; moetrace writes the model's directory (real config, a tokenizer of its "
           "vocabulary) and the engine fills the weights itself (--load-format dummy); records say so"),
    S(("--layers",), None, type=int, help="decoder layers to run (leading dense layers kept) [default: all]; "
      "with --weights dummy"),
    S(("--routing",), "routing", type=("model", "balanced"), show_default=True,
      help="balanced: the engine's benchmark-only uniform expert assignment (vLLM "
           "VLLM_MOE_ROUTING_SIMULATION_STRATEGY=uniform_random, SGLang SGLANG_SIMULATE_UNIFORM_EXPERTS=1) "
           "instead of the router: dummy weights' random routers collapse onto a few experts"),
    S(("--one-rank",), None, is_flag=True,
      help="run one rank of each config on one GPU: its per-GPU shapes (heads, experts and widths / TP and EP, "
           "by the engine's rules) at TP1; the record names the config it stands for and what it leaves out "
           "(collectives, EP imbalance)"),
    S(("--dry-run",), None, is_flag=True, help="print the plan and the exact engine commands; launch nothing"),
    S(("--show",), None, param="extra_columns", multiple=True, type=SHOW_COLUMNS,
      help="extra table columns (floor: ITL floor, kernels above it, idle, host/other, ms; load: busiest "
           "expert's tokens over the mean expert's, worst MoE layer, extend and decode, and over EP ranks; "
           "needs --expert-load; backends: the MoE and attention backend the engine's log says it ran)"),
)
del S


def from_cli(kw: dict[str, Any]) -> RunOptions:
    """RunOptions from the parsed command line (click's values, by parameter name)."""
    values: dict[str, Any] = {}
    for spec in RUN_OPTIONS:
        if spec.field is None:
            continue
        v = kw[spec.name]
        if spec.parse is not None:
            v = spec.parse(v, kw)
        elif spec.negates:
            v = not v
        values[spec.field] = v
    return RunOptions(**values)


def from_dict(d: dict[str, Any]) -> RunOptions:
    """RunOptions from its ``to_dict`` (a job description's JSON): tuples back, unknown keys dropped."""
    d = dict(d)
    for k in ("batch_sizes", "launch_prefix", "extra_args"):
        if k in d and d[k] is not None:
            d[k] = tuple(d[k])
    if "engine_env" in d and d["engine_env"] is not None:
        d["engine_env"] = tuple(tuple(x) for x in d["engine_env"])
    known = {f.name for f in fields(RunOptions)}
    return RunOptions(**{k: v for k, v in d.items() if k in known})


def node_flags(opts: Any) -> list[str]:
    """The flags that make the node's ``moetrace run`` run with ``opts``: every option that differs
    from the command line's defaults (and those marked ``always``), so the node runs what the user
    asked for whatever its environment says."""
    out: list[str] = []
    for spec in RUN_OPTIONS:
        if spec.field is None:
            continue
        v = getattr(opts, spec.field)
        if spec.spell is not None:
            out += spec.spell(v)
        elif spec.is_flag:
            if bool(v) == (not spec.negates):  # the switch was given: its field is not the unswitched value
                out.append(spec.flags[0])
        elif spec.always or v != _DEFAULTS.get(spec.field):
            if v is not None:
                out += [spec.flags[0], _num(v)]
    return out
