"""Command line: parse, call, print. No logic lives here.

Bad input (unknown model, malformed config, unwritable results directory,
missing engine) prints one line naming the problem and exits 2.

Exit codes of ``run``, ``sweep`` and the per-model scripts (docs/fidelity.md):
0 every config succeeded (a failed primary whose fallback succeeded included), or was recorded as
predicted by the planner not to fit and not launched (``--skip-predicted``: that outcome is the
prediction, not a failure of the run); 3 some config that was attempted failed (each is recorded, and
the sweep went on; sweep.job_failed); 2 bad input; 130 interrupted.
``compare`` exits 1 when something regressed.
"""

from __future__ import annotations

import dataclasses

import shlex
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

import click

from . import __version__
from .cli_common import BadInput, bad_input, results_option
from .engines.registry import default_engine, engine_classes
from .errors import EXIT_CONFIGS_FAILED
from .matrix import Config, ConfigError, parse_config_name, parse_matrix, validate
from .presets import Preset, all_presets, get_preset
from .results.store import DEFAULT_DIR, ResultsStore, check_writable
from .report.data import METRIC, Row, load
from .options import RUN_OPTIONS as OPTION_SPECS, SHOW_COLUMNS, OptionSpec, RunOptions, from_cli as options_from_cli


def _store(results: str | None, *, readonly: bool = False) -> ResultsStore:
    if readonly and results and not Path(results).is_dir():
        raise ValueError(f"{results} is not a results directory (it does not exist)")
    return ResultsStore(results, warn=lambda m: click.echo(f"moetrace: warning: {m}", err=True), readonly=readonly)


def _click_option(spec: OptionSpec) -> Callable:
    """A run option of the table in options.py as a click option."""
    kw: dict[str, Any] = {"help": spec.help_text() or None, "show_default": spec.show_default}
    if spec.is_flag:
        kw["is_flag"] = True
    else:
        choices = spec.choices()
        kw["type"] = click.Choice(choices) if choices else spec.type
        kw["default"] = spec.cli_default()
        kw["multiple"] = spec.multiple
    return click.option(*spec.flags, spec.name, **kw)


RUN_OPTIONS: list[Callable] = [results_option, *(_click_option(spec) for spec in OPTION_SPECS)]


def _run_option(flag: str, **changes: Any) -> Callable:
    """A run option of the table, for another command, with what differs there."""
    spec = next(s for s in OPTION_SPECS if s.flags[0] == flag)
    return _click_option(dataclasses.replace(spec, **changes))


# where the configs run (executors/): local, or one Slurm job per config
EXECUTOR_OPTIONS: list[Callable] = [
    click.option("--executor", type=click.Choice(["local", "slurm"]), default="local", show_default=True,
                 help="run configs here, one after another, or as Slurm jobs (one per config)"),
    click.option("--partition", default=None, help="Slurm partition [default: the cluster's default]"),
    click.option("--gpus-per-node", type=int, default=8, show_default=True,
                 help="GPUs per Slurm node; a job asks for TP/nodes of them on each node (0: ask for none)"),
    click.option("--time", "slurm_time", default="4:00:00", show_default=True,
                 help="Slurm time limit per job (minutes, HH:MM:SS or D-HH:MM:SS)"),
    click.option("--slurm-arg", "slurm_args", multiple=True,
                 help="more sbatch options, repeatable: --slurm-arg account=abc --slurm-arg exclusive"),
    click.option("--slurm-setup", "slurm_setup", multiple=True,
                 help="shell line run in the job before moetrace, repeatable (e.g. 'module load cuda')"),
    click.option("--slurm-poll", type=float, default=10.0, show_default=True,
                 help="seconds between job state checks"),
]


def executor_options(fn: Callable) -> Callable:
    """The executor's click options, for ``moetrace run``/``sweep`` and the per-model scripts."""
    for opt in reversed(EXECUTOR_OPTIONS):
        fn = opt(fn)
    return fn


def run_options(fn: Callable) -> Callable:
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
    return options_from_cli(kw)


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
    from .engines.registry import get_engine
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
        if kw["weights"] != "checkpoint" or kw["layers"] or kw["one_rank"]:
            from .variants import variant_targets
            out += variant_targets(preset, configs, weights=kw["weights"], layers=kw["layers"],
                                   one_rank=kw["one_rank"], engine=opts.engine, cache=Path(".cache/variants"))
        else:
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
    store.check_engine(opts.engine)  # before anything runs: one engine's results per directory
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
    # Ctrl-C too, even where the shell that started moetrace ignored SIGINT (a background job of a script:
    # Python then leaves it ignored, and a Ctrl-C to moetrace's process would be lost, its engine not stopped)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        outcome = run_sweep(jobs, opts, store, executor=executor, extra_columns=tuple(kw["extra_columns"]))
    except KeyboardInterrupt:
        click.echo("moetrace: interrupted; the running config was recorded as Interrupted and its server stopped",
                   err=True)
        sys.exit(130)
    if outcome.failed_jobs:
        sys.exit(EXIT_CONFIGS_FAILED)


def _terminate(signum, frame) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _print_dry_run(jobs, opts: RunOptions, store: ResultsStore) -> None:
    from .engines.base import Engine, LaunchSpec
    from .engines.registry import get_engine
    from .attempt import launch_count, launch_options
    engine = get_engine(opts.engine)
    click.echo(f"# dry run: {len(jobs)} config(s), engine {opts.engine}, results in {store.root}")
    # planned for a GPU type: print what the GPU node will run, even from a host without one
    device = "cuda" if opts.device == "auto" and opts.gpu else opts.resolved_device()
    raw = store.root / "attempts" / "<attempt>" / "profiler_raw"
    for j in jobs:
        verdict = f"  plan: {j.plan['verdict']} ({j.plan.get('reason', '')})" if j.plan else ""
        click.echo(f"\n{j.label}{verdict}")
        for c in [j.config.without_fallback()] + ([j.config.fallback] if j.config.fallback else []):
            role = "fallback: " if c is j.config.fallback else ""
            measured, recorder = launch_options(engine, c, dataclasses.replace(opts, device=device))  # the GPU node's
            times = launch_count(c, opts)
            auto = opts.launches == "auto" and times > 1  # --launches auto: 2 to --max-launches, as the interval says
            first = role + (f"measured 2 to {times} times (--launches auto), launched each time as: " if auto else
                            f"measured {times} times, launched each time as: " if times > 1 else "")
            for label, o in ((first, measured), (f"{role}expert load (a second launch, recorder on): ", recorder)):
                if o is None:
                    continue
                spec = LaunchSpec.from_options(j.preset, c, o, port=opts.port or 30000, device=device, profile_dir=raw)
                env = engine.launch_environment(spec, o)
                prefix = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())
                click.echo(f"  {label}{prefix + ' ' if prefix else ''}{Engine.shell_line(engine.command(spec))}")


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
@click.option("--show", "extra_columns", multiple=True, type=click.Choice(SHOW_COLUMNS),
              help="extra columns, as for moetrace run (load: expert load, from --expert-load; backends: what the "
                   "engine ran)")
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
@_run_option("--gpu", help="h100, h200, b200 or custom [default: this machine's, else h200]")
@click.option("--custom-gpu", default=None, help="MEM_GIB,HBM_TBPS,BF16_TFLOPS[,FP8_TFLOPS] for --gpu custom")
@click.option("--gpus-per-node", type=int, default=8, show_default=True)
@_run_option("--mem-fraction", help="engine memory fraction [default: the engine's]")
@_run_option("--engine", type=tuple(n for n, c in engine_classes().items() if c.planner_memory),
             default=default_engine("cuda"), show_default=True, help="")
@_run_option("--config", help="plan only these configs")
@_run_option("--batch-size", param="batch_size", multiple=False, default=1, show_default=True, help="")
@_run_option("--input-len")
@_run_option("--output-len")
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


# ---------------------------------------------------------------- predict
@main.command()
@click.argument("model")
@_run_option("--config", help="predict only these configs [default: the matrix]")
@click.option("--gpu", type=click.Choice(["h100", "h200", "b200"]), default="h200", show_default=True,
              help="b200: no shipped record; scaled from H200 by the GPU rule")
@click.option("--engine", type=click.Choice(["sglang", "vllm"]), default="sglang", show_default=True)  # the evidence's
@_run_option("--input-len")
@_run_option("--output-len")
@click.option("--attention-backend", type=click.Choice(["default", "triton"]), default="default", show_default=True,
              help="the attention the engine runs (triton: SGLang's --attention-backend triton, scaled by the pair "
                   "measured on one GPU)")
@click.option("--json", "as_json", is_flag=True, help="one JSON object (ttft_ms, itl_ms, latency_s and the parts)")
@click.option("--evidence", "evidence_file", type=click.Path(dir_okay=False, exists=True), default=None,
              help="an evidence file of benchmarks/predict_evidence.py [default: the one that ships]")
@bad_input
def predict(model, config_names, gpu, engine, input_len, output_len, attention_backend, as_json, evidence_file) -> None:
    """Batch-1 TTFT, ITL and latency of each config from shipped one-GPU measurements (docs/predict.md)."""
    from .plan.predict import predict as predict_config
    from .plan.predict_evidence import load_evidence
    from .plan.predict_text import format_predictions, predictions_json
    if input_len < 1 or output_len < 1:
        raise BadInput("--input-len and --output-len must be positive")
    if attention_backend == "triton" and engine != "sglang":
        raise BadInput("--attention-backend triton is SGLang's: no pair of vLLM records with and without it is shipped")
    preset = get_preset(model)
    configs = [parse_config_name(n) for n in config_names] if config_names else parse_matrix(preset.matrix)
    from .engines.registry import get_engine
    eng = get_engine(engine)  # the configs `run` would accept, and only those (TP8_fp8 names a backend, not FP8)
    validate(configs, backends=eng.moe_backends, engine=engine, quantizations=eng.quantizations)
    ev = load_evidence(evidence_file) if evidence_file else None
    preds = [predict_config(preset, c, gpu=gpu, engine=engine, input_len=input_len, output_len=output_len,
                            evidence=ev, attention_backend=None if attention_backend == "default" else attention_backend)
             for c in configs]
    click.echo(predictions_json(preds) if as_json else format_predictions(preds))


# ---------------------------------------------------------------- tiny
@main.command()
@click.argument("model")
@click.option("--out", "-o", default=None, help="checkpoint directory [default: .cache/tiny/<model>]")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--hot-experts", type=int, default=0, show_default=True,
              help="plant a skewed router: experts 0..N-1 of every MoE layer win every token "
                   "(to check an expert-load measurement; routers with a selection bias only)")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="size override for the tiny config (layers=3, experts=16, hidden=4096, ...)")
@bad_input
def tiny(model: str, out: str | None, seed: int, hot_experts: int, overrides: tuple[str, ...]) -> None:
    """Write a tiny random-weight checkpoint of MODEL's architecture."""
    from .tiny import parse_overrides, write_tiny_checkpoint
    preset = get_preset(model)
    path = write_tiny_checkpoint(preset, Path(out or Path(".cache/tiny") / preset.slug), seed=seed,
                                 hot_experts=hot_experts, **parse_overrides(overrides))
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

    from .traces.analyze import analyze_trace, analyze_traces
    from .traces.report import format_summary
    from .traces.reader import TraceError
    limit = int(max_gib * (1 << 30))
    try:
        result = analyze_trace(traces[0], top_n=top_n, max_bytes=limit) if len(traces) == 1 else \
            analyze_traces(traces, top_n=top_n, max_bytes=limit)
    except TraceError as e:
        raise BadInput(str(e)) from None
    click.echo(json.dumps(result.to_dict(), indent=2) if as_json else format_summary(result, top_n=top_n))


# ---------------------------------------------------------------- reports: report, export, compare, plot
# The work is in report/ (data, html, export, compare, plots). Bad input prints one line and exits 2;
# ``compare`` exits 1 when it finds a regression.
def _report_warn(msg: str) -> None:
    click.echo(f"moetrace: warning: {msg}", err=True)


def _report_rows(results: str) -> list[Row]:
    return load(Path(results), warn=_report_warn)


# ---------------------------------------------------------------- report
@main.command("report")
@results_option
@click.option("--out", "-o", default=None, help="HTML file to write [default: <results>/report.html]")
@click.option("--title", default="moetrace report", show_default=True)
@bad_input
def report(results: str, out: str | None, title: str) -> None:
    """One self-contained HTML report (charts, failures, trace links) that opens offline."""
    from .report.html import write_html
    rows = _report_rows(results)
    path = write_html(rows, root=Path(results), out=Path(out) if out else Path(results) / "report.html",
                      title=title)
    click.echo(str(path))


# ---------------------------------------------------------------- export
@main.command("export")
@results_option
@click.option("--format", "-f", "fmt", type=click.Choice(["csv", "parquet", "latex", "markdown"]), default="csv",
              show_default=True)
@click.option("--out", "-o", default="-", show_default=True,
              help="file to write ('-' = standard output; Parquet needs a file)")
@click.option("--combined", is_flag=True, help="latex/markdown: one table for all models, not one per model")
@click.option("--no-failures", is_flag=True, help="latex/markdown: leave out configs that only failed")
@bad_input
def export(results: str, fmt: str, out: str, combined: bool, no_failures: bool) -> None:
    """Export the results: CSV or Parquet (one row per attempt, every metric), LaTeX
    (booktabs) or markdown tables."""
    from .report import export as ex
    if fmt == "parquet" and out == "-":
        raise BadInput("Parquet is binary: give --out FILE.parquet")
    rows = _report_rows(results)
    if fmt == "parquet":
        click.echo(str(ex.write_parquet(rows, Path(out))))
        return
    if fmt == "csv":
        text = ex.write_csv(rows)
    else:
        tables = ex.paper_tables(rows, combined=combined, failures=not no_failures)
        if not tables:
            raise BadInput(f"{results} has no results to put in a table")
        text = (ex.render_latex(tables, source=str(results)) if fmt == "latex" else ex.render_markdown(tables))
    if out == "-":
        click.echo(text, nl=False)
    else:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(text, encoding="utf-8")
        click.echo(out, err=True)


# ---------------------------------------------------------------- compare
@main.command("compare")
@click.argument("old")
@click.argument("new")
@click.option("--threshold", "-t", type=float, default=5.0, show_default=True,
              help="percent change in the worse direction that counts as a regression (beyond the noise band)")
@click.option("--metric", "-m", "metrics", multiple=True, type=click.Choice(sorted(METRIC)),
              help="metrics to compare [default: latency, TTFT, ITL, input and output throughput]")
@click.option("--fail-on-missing", is_flag=True, help="a key that succeeded in OLD and is missing from NEW fails too")
@click.option("--json", "as_json", is_flag=True, help="print JSON instead of markdown")
@click.option("--no-step-summary", is_flag=True, help="do not append the markdown to $GITHUB_STEP_SUMMARY")
@bad_input
def compare(old: str, new: str, threshold: float, metrics: Sequence[str], fail_on_missing: bool, as_json: bool,
            no_step_summary: bool) -> None:
    """Compare two results directories per key; exit 1 when anything regressed."""
    from .report import compare as cmp_mod
    from .report.tables import append_step_summary
    cmp = cmp_mod.compare_rows(_report_rows(old), _report_rows(new), threshold_pct=threshold,
                               metrics=tuple(metrics) or cmp_mod.DEFAULT_METRICS, old_name=old, new_name=new,
                               fail_on_missing=fail_on_missing)
    md = cmp_mod.render_markdown(cmp)
    click.echo(cmp_mod.to_json(cmp) if as_json else md, nl=False)
    if not no_step_summary:
        append_step_summary(md)
    if cmp.failed:
        sys.exit(1)


# ---------------------------------------------------------------- plot
@main.command("plot")
@results_option
@click.option("--out", "-o", default=None, help="folder for the figures [default: <results>/figures]")
@click.option("--format", "-f", "formats", multiple=True, type=click.Choice(["png", "svg"]),
              help="figure formats [default: png and svg]")
@bad_input
def plot(results: str, out: str | None, formats: Sequence[str]) -> None:
    """Static PNG and SVG figures of the report's charts (matplotlib), for a paper."""
    from .report.plots import PlotError, write_plots
    rows = _report_rows(results)
    try:
        files = write_plots(rows, Path(out) if out else Path(results) / "figures", formats=tuple(formats) or
                            ("png", "svg"))
    except PlotError as e:
        raise BadInput(str(e)) from None
    if not files:
        raise BadInput(f"{results} has no successful results to plot")
    for f in files:
        click.echo(str(f))
