"""Command line: parse, call, print. No logic lives here.

Bad input (unknown model, malformed config, unwritable results directory,
missing engine) prints one line naming the problem and exits 2.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

import click

from . import __version__
from .cli_common import BadInput, bad_input, results_option
from .engines.base import default_engine, engine_classes, engine_names
from .matrix import Config, ConfigError, parse_config_name, parse_matrix, validate
from .presets import Preset, all_presets, get_preset
from .results.store import DEFAULT_DIR, ResultsStore, check_writable
from .runner import RunOptions


def _store(results: str | None, *, readonly: bool = False) -> ResultsStore:
    if readonly and results and not Path(results).is_dir():
        raise ValueError(f"{results} is not a results directory (it does not exist)")
    return ResultsStore(results, warn=lambda m: click.echo(f"moetrace: warning: {m}", err=True), readonly=readonly)


RUN_OPTIONS: list[Callable] = [
    results_option,
    click.option("--engine", type=click.Choice(engine_names()), default=None,
                 help=f"engine to launch [default: {default_engine('cuda')}; {default_engine('cpu')} with --device cpu "
                      "or --tiny]"),
    click.option("--device", type=click.Choice(["auto", "cuda", "cpu"]), default="auto", show_default=True),
    click.option("--config", "-c", "config_names", multiple=True,
                 help="run only these configs, by name (e.g. TP8_EP2_auto); default: the model's matrix"),
    click.option("--batch-size", "-b", "batch_sizes", type=int, multiple=True, help="batch sizes [default: 1]"),
    click.option("--input-len", type=int, default=4096, show_default=True),
    click.option("--output-len", type=int, default=512, show_default=True),
    click.option("--repeat", "-n", type=int, default=1, show_default=True, help="measured runs per batch size"),
    click.option("--seed", type=int, default=0, show_default=True, help="seed of the random prompts"),
    click.option("--no-warmup", is_flag=True),
    click.option("--launch-timeout", type=float, default=3600.0, show_default=True, help="seconds"),
    click.option("--request-timeout", type=float, default=300.0, show_default=True,
                 help="seconds without progress before a request counts as hung"),
    click.option("--no-profile", is_flag=True, help="skip trace capture"),
    click.option("--profile-steps", type=int, default=5, show_default=True),
    click.option("--profile-with-stack", is_flag=True),
    click.option("--profile-timeout", type=float, default=900.0, show_default=True),
    click.option("--engine-python", default=None,
                 help="Python interpreter of the engine's environment [default: "
                      + " or ".join(f"$MOETRACE_{n.upper()}_PYTHON" for n in engine_names())
                      + " for that engine, else $MOETRACE_ENGINE_PYTHON, else this Python]"),
    click.option("--launch-prefix", default="", help="words put before the engine command, e.g. 'docker exec sgl'"),
    click.option("--engine-arg", "engine_args", multiple=True,
                 help="extra engine argument, repeatable: --engine-arg=--mem-fraction-static=0.85"),
    click.option("--engine-env", "engine_env", multiple=True, help="KEY=VALUE for the engine's environment"),
    click.option("--base-url", default=None, help="measure a server that is already running; launch nothing"),
    click.option("--host", default="127.0.0.1", show_default=True, help="address the engine binds"),
    click.option("--port", type=int, default=None, help="engine port [default: a free one]"),
    click.option("--model-path", default=None, help="load this checkpoint instead of the preset's HF id"),
    click.option("--max-model-len", type=int, default=None),
    click.option("--gpu", default=None, help="GPU type for the planner (h100, h200, b200) [default: detect]"),
    click.option("--mem-fraction", type=float, default=None,
                 help="engine memory fraction: " + ", ".join(f"{c.label} {c.mem_fraction_flags[0]}" for c in
                                                             engine_classes().values() if c.mem_fraction_flags)),
    click.option("--no-skip-predicted", is_flag=True, help="launch configs the planner predicts will not fit"),
    click.option("--skip-succeeded", is_flag=True, help="resume: skip configs that already succeeded"),
    click.option("--only-failed", is_flag=True, help="resume: run only configs that failed"),
    click.option("--tiny", is_flag=True, help="use tiny random-weight variants of the models (CPU engine)"),
    click.option("--tiny-dir", default=".cache/tiny", show_default=True),
    click.option("--dry-run", is_flag=True, help="print the plan and the exact engine commands; launch nothing"),
    click.option("--show", "extra_columns", multiple=True,
                 type=click.Choice(["ttft", "itl_p99", "efficiency", "breakdown", "floor"]),
                 help="extra table columns (floor: ITL floor, kernels above it, idle, host/other, ms)"),
]


def run_options(fn: Callable) -> Callable:
    from .executors import executor_options
    for opt in reversed(RUN_OPTIONS):
        fn = opt(fn)
    return executor_options(fn)  # --executor local|slurm and the Slurm options


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="moetrace")
def main() -> None:
    """moetrace: benchmark and trace large MoE models on SGLang and vLLM."""


# ---------------------------------------------------------------- models
@main.command()
@bad_input
def models() -> None:
    """List the model presets."""
    from .plan.params import count_params
    rows = []
    for p in all_presets():
        pc = count_params(p.hf_config)
        rows.append([p.name, p.hf_id, f"{pc.total / 1e9:.1f}B", f"{pc.active / 1e9:.1f}B", p.precision,
                     p.script or "", ", ".join(c.name for c in parse_matrix(p.matrix))])
    from .report.tables import _md
    click.echo(_md(["model", "HF id", "total params", "active params", "native precision", "script",
                    "default configs"], rows))


# ---------------------------------------------------------------- run / sweep
def _options(kw: dict[str, Any]) -> RunOptions:
    engine = kw["engine"] or default_engine("cpu" if kw["device"] == "cpu" or kw["tiny"] else "cuda")
    device = kw["device"]
    if kw["tiny"] and device == "auto":
        device = "cpu"
    return RunOptions(
        engine=engine, device=device, batch_sizes=tuple(kw["batch_sizes"] or (1,)), input_len=kw["input_len"],
        output_len=kw["output_len"], repeat=kw["repeat"], seed=kw["seed"], warmup=not kw["no_warmup"],
        launch_timeout_s=kw["launch_timeout"], request_timeout_s=kw["request_timeout"],
        profile=not kw["no_profile"], profile_steps=kw["profile_steps"],
        profile_with_stack=kw["profile_with_stack"], profile_timeout_s=kw["profile_timeout"],
        engine_python=_engine_python(engine, kw["engine_python"]), launch_prefix=tuple(shlex.split(kw["launch_prefix"])),
        extra_args=tuple(_split_engine_args(kw["engine_args"])), engine_env=tuple(_env_pairs(kw["engine_env"])),
        base_url=kw["base_url"], host=kw["host"],
        port=kw["port"], model_path=kw["model_path"], max_model_len=kw["max_model_len"], gpu=kw["gpu"],
        skip_predicted=not kw["no_skip_predicted"], mem_fraction=kw["mem_fraction"])


def _engine_python(engine: str, given: str | None) -> str:
    """An engine may live in its own environment; each engine can have its own variable."""
    return (given or engine_classes()[engine].default_python() or os.environ.get("MOETRACE_ENGINE_PYTHON")
            or sys.executable)


def _split_engine_args(args: Sequence[str]) -> list[str]:
    out: list[str] = []
    for a in args:
        if a.startswith("--") and "=" in a:
            k, v = a.split("=", 1)
            out += [k, v]
        else:
            out += shlex.split(a)
    return out


def _env_pairs(items: Sequence[str]) -> list[tuple[str, str]]:
    out = []
    for it in items:
        k, sep, v = it.partition("=")
        if not sep or not k.isidentifier():
            raise ValueError(f"--engine-env {it!r}: expected KEY=VALUE")
        out.append((k, v))
    return out


def _check_values(opts: RunOptions) -> None:
    for name, v in (("input length", opts.input_len), ("output length", opts.output_len),
                    ("repeat", opts.repeat), ("profile steps", opts.profile_steps)):
        if v < 1:
            raise ValueError(f"{name} must be at least 1, got {v}")
    if any(b < 1 for b in opts.batch_sizes):
        raise ValueError(f"batch sizes must be at least 1, got {list(opts.batch_sizes)}")


def _check_engine(opts: RunOptions) -> None:
    """The engine must be importable by its interpreter (found without importing it)."""
    if opts.base_url:
        return
    module = engine_classes()[opts.engine].python_module or opts.engine
    code = f"import importlib.util,sys; sys.exit(0 if importlib.util.find_spec({module!r}) else 3)"
    try:
        rc = subprocess.run([*opts.launch_prefix, opts.engine_python, "-c", code], capture_output=True,
                            timeout=120).returncode
    except (OSError, subprocess.TimeoutExpired) as e:
        raise ValueError(f"cannot run the engine's Python {opts.engine_python!r}: {e}") from None
    if rc != 0:
        raise ValueError(f"engine {opts.engine!r} is not installed for {opts.engine_python} "
                         f"(give --engine-python, or install {opts.engine})")


def _targets(models: Sequence[str], config_names: Sequence[str], opts: RunOptions, kw: dict[str, Any],
             matrix: Sequence[Any] | None = None) -> list[tuple[Preset, list[Config]]]:
    from .engines.base import get_engine
    from .sweep import tiny_preset
    engine = get_engine(opts.engine)
    out = []
    for m in models:
        preset = get_preset(m)
        if kw["tiny"]:
            preset = tiny_preset(preset, Path(kw["tiny_dir"]))
        if config_names:
            configs = [parse_config_name(n) for n in config_names]
            parse_matrix(configs)  # duplicates
        else:
            configs = parse_matrix(matrix if matrix is not None else preset.matrix)
        validate(configs, backends=engine.moe_backends, engine=opts.engine, quantizations=engine.quantizations)
        out.append((preset, configs))
    if opts.base_url:
        _one_external_config(out, config_names)
    return out


def _one_external_config(targets: list[tuple[Preset, list[Config]]], config_names: Sequence[str]) -> None:
    """A server someone else started runs one model under one config: measuring it under
    every name of a matrix would record the same numbers as different configs."""
    names = [f"{p.name} {c.name}" + (f" (fallback {c.fallback.name})" if c.fallback else "")
             for p, cs in targets for c in cs]
    if not config_names or len(names) != 1 or "(fallback" in names[0]:
        listed = ", ".join(names[:4]) + (", ..." if len(names) > 4 else "")
        raise ValueError(f"--base-url measures one server, so one model and one config named with -c (the one that "
                         f"server runs), not a matrix: {listed}")


def _execute(models: Sequence[str], kw: dict[str, Any], matrix: Sequence[Any] | None = None) -> None:
    from .executors import make_executor
    from .sweep import plan_jobs, run_sweep
    opts = _options(kw)
    _check_values(opts)
    executor = make_executor(kw)  # None: this process runs the configs
    targets = _targets(models, kw["config_names"], opts, kw, matrix)
    if kw["dry_run"]:  # a dry run creates nothing: a read-only store, its directory only checked
        check_writable(Path(kw["results"] or DEFAULT_DIR))
        store = ResultsStore(kw["results"], readonly=True)
    else:
        store = _store(kw["results"])
    jobs = plan_jobs(targets, opts, store, skip_succeeded=kw["skip_succeeded"], only_failed=kw["only_failed"])
    if kw["dry_run"]:
        _print_dry_run(jobs, opts, store)
        if executor is not None:
            click.echo("\n".join(executor.dry_run_lines(jobs, opts, store.root)))
        return
    if executor is None and any(not (j.plan and j.plan.get("verdict") == "will_not_fit" and opts.skip_predicted)
                                for j in jobs):
        _check_engine(opts)  # only when something is launched here; Slurm nodes check their own
    # SIGTERM (a scheduler's cancel, `kill`) ends the run like Ctrl-C: the running config is
    # recorded as Interrupted and its engine stopped, instead of leaving an orphaned server.
    signal.signal(signal.SIGTERM, _terminate)
    try:
        outcome = run_sweep(jobs, opts, store, executor=executor, extra_columns=tuple(kw["extra_columns"]))
    except KeyboardInterrupt:
        click.echo("moetrace: interrupted; the running config was recorded as Interrupted and its server stopped",
                   err=True)
        sys.exit(130)
    del outcome


def _terminate(signum, frame) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _print_dry_run(jobs, opts: RunOptions, store: ResultsStore) -> None:
    from .engines.base import Engine, LaunchSpec, get_engine
    engine = get_engine(opts.engine)
    click.echo(f"# dry run: {len(jobs)} config(s), engine {opts.engine}, results in {store.root}")
    # planned for a GPU type: print what the GPU node will run, even from a host without one
    device = "cuda" if opts.device == "auto" and opts.gpu else opts.resolved_device()
    for j in jobs:
        verdict = f"  plan: {j.plan['verdict']} ({j.plan.get('reason', '')})" if j.plan else ""
        click.echo(f"\n{j.label}{verdict}")
        for c in [j.config.without_fallback()] + ([j.config.fallback] if j.config.fallback else []):
            spec = LaunchSpec(preset=j.preset, config=c, model_path=opts.model_path or j.preset.hf_id,
                              port=opts.port or 30000, host=opts.host, python=opts.engine_python,
                              prefix=list(opts.launch_prefix), extra_args=list(opts.extra_args),
                              profile_dir=Path(store.root / "attempts" / "<attempt>" / "profiler_raw")
                              if opts.profile else None, device=device,
                              max_model_len=opts.max_model_len, mem_fraction=opts.mem_fraction)
            env = engine.environment(spec)
            prefix = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())
            role = "fallback: " if c is j.config.fallback else ""
            click.echo(f"  {role}{prefix + ' ' if prefix else ''}{Engine.shell_line(engine.command(spec))}")


@main.command()
@click.argument("model")
@run_options
@bad_input
def run(model: str, **kw: Any) -> None:
    """Run one model's configs (its preset matrix, or --config NAME ...)."""
    _execute([model], kw)


@main.command()
@click.argument("models", nargs=-1)
@run_options
@bad_input
def sweep(models: Sequence[str], **kw: Any) -> None:
    """Run the matrices of several models (default: all six presets)."""
    _execute(models or [p.name for p in all_presets()], kw)


def script_main(model: str, configs: Sequence[Any], argv: Sequence[str] | None = None) -> None:
    """Entry point of the spec's per-model scripts: their CONFIGS list, the CLI's options."""
    try:
        parse_matrix(configs)  # fail on a malformed CONFIGS before anything else
    except ConfigError as e:
        BadInput(f"CONFIGS in {Path(sys.argv[0]).name}: {e}").show()
        sys.exit(2)

    @click.command(help=f"{model}: run the CONFIGS list of this script. Options as `moetrace run`.")
    @run_options
    @bad_input
    def script(**kw: Any) -> None:
        _execute([model], kw, matrix=configs)

    script.main(args=list(argv) if argv is not None else None, prog_name=Path(sys.argv[0]).name)


# ---------------------------------------------------------------- results
@main.command()
@results_option
@bad_input
def summary(results: str) -> None:
    """Print all results: successes by model, failures, counts."""
    from .report.tables import full_report
    store = _store(results, readonly=True)
    s, f = store.views()
    click.echo(full_report(s, f, base=store.root))


@main.command()
@results_option
@click.option("--show", "extra_columns", multiple=True, type=click.Choice(["ttft", "itl_p99", "efficiency",
                                                                          "breakdown", "floor"]))
@bad_input
def table(results: str, extra_columns: Sequence[str]) -> None:
    """Print the spec's tables of all successful results, grouped by model."""
    from .report.tables import model_tables
    store = _store(results, readonly=True)
    s, _ = store.views()
    click.echo(model_tables(s, base=store.root, extra=tuple(extra_columns)) or "no successful results")


@main.group()
def results() -> None:
    """Maintain the results directory."""


@results.command("rebuild")
@results_option
@bad_input
def results_rebuild(results: str) -> None:
    """Regenerate success_results.json and failure_results.json from the records."""
    store = _store(results)
    s, f = store.rebuild()
    click.echo(f"rebuilt {store.success_path} ({len(s)} entries) and {store.failure_path} ({len(f)} entries) "
               f"from {len(store.records())} records")


# ---------------------------------------------------------------- plan
def _gpu_arg(gpu: str | None, custom: str | None):
    from .plan import custom_gpu, detect_gpu
    if gpu == "custom" or custom:
        if not custom:
            raise ValueError("--gpu custom needs --custom-gpu MEM_GIB,HBM_TBPS,BF16_TFLOPS[,FP8_TFLOPS]")
        try:
            nums = [float(x) for x in custom.split(",")]
        except ValueError:
            raise ValueError(f"--custom-gpu {custom!r}: expected numbers MEM_GIB,HBM_TBPS,BF16_TFLOPS[,FP8_TFLOPS]") \
                from None
        if len(nums) not in (3, 4):
            raise ValueError(f"--custom-gpu {custom!r}: expected 3 or 4 numbers")
        return custom_gpu(*nums)
    return gpu or detect_gpu() or "h200"


@main.command()
@click.argument("models", nargs=-1)
@click.option("--gpu", default=None, help="h100, h200, b200 or custom [default: this machine's, else h200]")
@click.option("--custom-gpu", default=None, help="MEM_GIB,HBM_TBPS,BF16_TFLOPS[,FP8_TFLOPS] for --gpu custom")
@click.option("--gpus-per-node", type=int, default=8, show_default=True)
@click.option("--mem-fraction", type=float, default=None, help="engine memory fraction [default: the engine's]")
@click.option("--engine", type=click.Choice([n for n, c in engine_classes().items() if c.planner_memory]),
              default=default_engine("cuda"), show_default=True)
@click.option("--config", "-c", "config_names", multiple=True, help="plan only these configs")
@click.option("--batch-size", "-b", type=int, default=1, show_default=True)
@click.option("--input-len", type=int, default=4096, show_default=True)
@click.option("--output-len", type=int, default=512, show_default=True)
@click.option("--detail", is_flag=True, help="also the weights per part of the model")
@click.option("--check", is_flag=True, help="the planner's accuracy over all recorded outcomes")
@results_option
@bad_input
def plan(models, gpu, custom_gpu, gpus_per_node, mem_fraction, engine, config_names, batch_size, input_len,
         output_len, detail, check, results) -> None:
    """Will each config fit, and what is the hardware's floor for its latencies?"""
    from .plan import format_accuracy, format_plan_table, plan_config, planner_accuracy
    if check:
        click.echo(format_accuracy(planner_accuracy(_store(results, readonly=True).all_records())))
        return
    g = _gpu_arg(gpu, custom_gpu)
    plans = []
    for m in models or [p.name for p in all_presets()]:
        preset = get_preset(m)
        configs = [parse_config_name(n) for n in config_names] if config_names else parse_matrix(preset.matrix)
        plans += [plan_config(preset, c, gpu=g, batch=batch_size, input_len=input_len, output_len=output_len,
                              mem_fraction=mem_fraction, engine=engine, gpus_per_node=gpus_per_node)
                  for c in configs]
    click.echo(format_plan_table(plans, detail=detail))


# ---------------------------------------------------------------- tiny
@main.command()
@click.argument("model")
@click.option("--out", "-o", default=None, help="checkpoint directory [default: .cache/tiny/<model>]")
@click.option("--seed", type=int, default=0, show_default=True)
@bad_input
def tiny(model: str, out: str | None, seed: int) -> None:
    """Write a tiny random-weight checkpoint of MODEL's architecture."""
    from .tiny import write_tiny_checkpoint
    preset = get_preset(model)
    path = write_tiny_checkpoint(preset, Path(out or Path(".cache/tiny") / preset.slug), seed=seed)
    click.echo(str(path))


# ---------------------------------------------------------------- traces
@main.command()
@click.argument("traces", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--top", "top_n", type=int, default=15, show_default=True, help="kernels or ops to list")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
@click.option("--max-gib", type=float, default=4.0, show_default=True,
              help="refuse a trace larger than this once decompressed (gzip bombs)")
@bad_input
def analyze(traces: Sequence[str], top_n: int, as_json: bool, max_gib: float) -> None:
    """Where the time went in profiler traces (.json or .json.gz; several ranks at once)."""
    import json

    from .traces.analyze import analyze_trace, analyze_traces, format_summary
    from .traces.reader import TraceError
    limit = int(max_gib * (1 << 30))
    try:
        result = analyze_trace(traces[0], top_n=top_n, max_bytes=limit) if len(traces) == 1 else \
            analyze_traces(traces, top_n=top_n, max_bytes=limit)
    except TraceError as e:
        raise BadInput(str(e)) from None
    click.echo(json.dumps(result.to_dict(), indent=2) if as_json else format_summary(result, top_n=top_n))


# ---------------------------------------------------------------- reports
def _register() -> None:
    from .report.commands import compare, export, plot, report
    for cmd in (report, export, compare, plot):
        main.add_command(cmd)


_register()
