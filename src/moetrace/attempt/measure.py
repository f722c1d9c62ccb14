"""The measure stage: per launch (``--launches``), a warm-up, then ``--repeat`` runs of every batch
size, each with what the GPUs did meanwhile (telemetry, on local GPUs); returns the runs, per batch
size, as the record's ``runs`` hold them."""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path
from typing import Any, Iterator

from ..measure.metrics import aggregate_runs, by_launch, launches_verdict, run_metrics, settle_headline
from ..measure.server_metrics import server_timing
from ..measure.telemetry import samples_between, summarise
from ..options import RunOptions
from .context import Attempt, stage
from .launch import Launch, launch_count, measured_launch
from .session import Session

Runs = dict[int, list[dict[str, Any]]]  # batch size -> its runs, over the launches


def measure(ctx: Attempt, opts: RunOptions) -> Runs:
    """Launch (with ``opts``), warm up and measure, ``launch_count`` times. Every launch but the last is
    stopped before the next starts; the last stays up in ``ctx.live`` for the stages after this one."""
    launches = launch_count(ctx.config, ctx.opts)  # --launches auto: the cap
    auto = ctx.opts.launches == "auto" and launches > 1
    runs: Runs = {bs: [] for bs in ctx.opts.batch_sizes}
    for n in range(1, launches + 1):
        _one_launch(ctx, opts, runs, n, launches, auto)
        ctx.launches = n
        if auto and (why := launches_verdict(runs, n, target=ctx.opts.ci_target, cap=launches)):
            ctx.launches_stopped = why
            ctx.step("--launches auto")
            ctx.progress.done(f"{n} launches: {why}")
            _adopt_log(ctx.live, ctx.adir / "server.log")
            break
    return runs


def _adopt_log(live: Launch | None, path: Path) -> None:
    """``--launches auto``: the launch that turned out the last one gets the record's log name (its process keeps
    writing into the renamed file), as a fixed ``--launches N`` names its last launch's log from the start."""
    if live is None or not live.log_path.exists():
        return
    live.log_path.rename(path)
    live.log_path = path
    if live.server is not None:
        live.server.log_path = path


def _one_launch(ctx: Attempt, opts: RunOptions, runs: Runs, n: int, launches: int, auto: bool = False) -> None:
    """Launch ``n`` of ``launches`` (``auto``: of at most that many): start (the previous one stopped first),
    warm up, measure into ``runs``.

    Its timings go into ``phases`` (``launch_s``, ``warmup_s``, ``stop_s``: the last launch's, the one the
    record's log, traces and stop are of; ``measure_s``: summed over the launches) and, with two or more
    launches, into its own entry of ``phases.launches`` (``launch_s``, ``warmup_s``, ``measure_s``, ``stop_s``;
    a cold first launch took 104 s on an H100 where the next took 74 s)."""
    own: dict[str, float] | None = None
    if launches > 1:
        own = {}
        ctx.phases.setdefault("launches", []).append(own)
    with stage("launch"):
        if ctx.live is not None:  # the previous launch, measured: stopped before the next one starts
            ctx.live.close()
        # the last launch's log is the record's (its traces, its stop); earlier ones keep their own
        log = ctx.adir / ("server.log" if n == launches and not auto else f"server-launch{n}.log")
        ctx.live = Launch(ctx.base.engine, ctx.phases, log, own=own)
        what = f" (launch {n}, at most {launches})" if auto else f" (launch {n}/{launches})" if launches > 1 else ""
        measured_launch(ctx, opts, ctx.live, what)
    session = ctx.live.session
    assert session is not None
    if ctx.opts.warmup:
        with stage("warmup"), ctx.timed("warmup_s", into=own):
            ctx.step("warm-up")
            session.warm_up()
            ctx.progress.done("ok")
    with stage("measure"), ctx.timed("measure_s", add=True, into=own):  # over the launches
        for bs in ctx.opts.batch_sizes:
            runs[bs] += _runs(ctx, session, bs, launch=n if launches > 1 else None)


def aggregate(runs: Runs) -> dict[int, dict[str, Any]]:
    """Per batch size, the record's ``metrics``: the aggregate over its runs, and each launch's median."""
    out = {}
    for bs, rs in runs.items():
        metrics = [x["metrics"] for x in rs]
        agg = aggregate_runs(metrics)
        agg.update(by_launch(metrics, [x.get("launch", 1) for x in rs]))
        out[bs] = agg
    return out


def _runs(ctx: Attempt, session: Session, bs: int, launch: int | None = None) -> list[dict[str, Any]]:
    """The measured runs of one batch size in one launch: each after a cache flush, with the server's own
    timing beside ours, and on a GPU what the GPUs did during each run (``telemetry``: clocks, power,
    throttling; every sample in the attempt's ``telemetry.csv``)."""
    runs = []
    with _telemetry(ctx) as sampler:
        for r in range(ctx.opts.repeat):
            t0 = time.time()
            runs.append(_one_run(ctx, session, bs, r, launch))
            if sampler is not None:
                window = samples_between(sampler.samples, t0, time.time())
                runs[-1]["telemetry"] = {"source": sampler.used, **summarise(window)}
    return runs


@contextlib.contextmanager
def _telemetry(ctx: Attempt) -> Iterator[Any]:
    """A GPU sampler over the measured runs when the engine runs on local GPUs, else None."""
    opts, config = ctx.opts, ctx.config
    if opts.resolved_device() != "cuda" or opts.base_url or config.nodes > 1:
        yield None
        return
    from ..measure.telemetry import Sampler, config_gpus
    with open(ctx.adir / "telemetry.csv", "a") as out:
        try:
            sampler = Sampler(gpus=config_gpus(config.tp, os.environ.get("CUDA_VISIBLE_DEVICES")), out=out).start()
        except (RuntimeError, ValueError, OSError):
            yield None  # no NVML and no nvidia-smi: the runs go on unsampled
            return
        try:
            yield sampler
        finally:
            sampler.stop()


def _one_run(ctx: Attempt, session: Session, bs: int, r: int, launch: int | None) -> dict[str, Any]:
    """One measured run, after a cache flush, with the server's own timing beside ours."""
    engine, opts = ctx.engine, ctx.opts
    of = f" of launch {launch}" if launch else ""
    ctx.step(f"measure bs={bs} run {r + 1}/{opts.repeat}{of}")
    flushed = engine.flush_cache(session.http, session.base_url)
    before = engine.read_metrics(session.http, session.base_url)
    traces = session.guarded(batch=bs, seed=opts.seed + 7919 * r + bs, max_tokens=opts.output_len)
    after = engine.read_metrics(session.http, session.base_url) if before is not None else None
    m = run_metrics(traces, input_len=opts.input_len, output_len=opts.output_len)
    m["cache_flushed"] = flushed
    m.update(server_timing(before, after, itl=engine.itl_metrics, ttft=engine.ttft_metrics))
    m = settle_headline(m, batch=bs, input_len=opts.input_len, output_len=opts.output_len)  # bursty: engine's timing
    ctx.progress.done(f"latency {m['latency_s']:.2f} s, TTFT {m['ttft_ms']:.1f} ms, "
                      f"ITL {m.get('itl_ms', float('nan')):.2f} ms")
    return {"metrics": m, "token_times": [tr.token_times for tr in traces]} | ({"launch": launch} if launch else {})
