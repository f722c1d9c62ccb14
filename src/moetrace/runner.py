"""One config, start to finish: launch the engine, wait until ready, warm up,
measure, capture traces, stop, record (with --expert-load, a second launch with the
engine's expert recorder on counts the load: ``launch_options``). Every exit path stops the server and
writes a record; nothing here is fatal to a sweep except Ctrl-C, which is
recorded as Interrupted and then re-raised.

This is also the entry point a Slurm job runs on its node (``moetrace run``).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import os
import platform
import shutil
import socket
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

import httpx

from . import __version__
from .measure.client import stream_batch
from .measure.metrics import aggregate_runs, by_launch, run_metrics, settle_headline
from .measure.prompts import random_prompts
from .measure.server_metrics import server_timing
from .measure.telemetry import samples_between, summarise, telemetry_brief
from .engines.base import Engine, LaunchSpec, ProfileRequest
from .engines.process import ServerProcess, free_port, port_is_free, tail
from .engines.registry import get_engine
from .errors import LaunchError, MoetraceError, ServerDied
from .matrix import Config
from .options import RunOptions
from .presets import Preset
from .results.classify import classify
from .results.record import DEFAULT_WORKLOAD, Error, Record, Workload, now_iso, result_key, workload_suffix
from .results.store import ResultsStore, safe_name
from .traces.capture import complete_traces, file_traces

__all__ = ["RunOptions", "run_config", "launch_options", "Progress", "workload_suffix", "DEFAULT_WORKLOAD"]


class Progress:
    """Progress lines with elapsed time, on stderr. Quiet between updates on a non-terminal."""

    def __init__(self, stream=None, every_s: float = 10.0):
        self.stream = stream or sys.stderr
        self.every_s = every_s
        self.prefix = ""
        self._last = 0.0

    def step(self, text: str) -> None:
        self._t0 = time.monotonic()
        self._text = text
        self._emit(f"{self.prefix}{text}")

    def tick(self, elapsed: float, extra: str = "") -> None:
        now = time.monotonic()
        if now - self._last >= self.every_s:
            self._emit(f"{self.prefix}{self._text} ... {elapsed:.0f} s {extra}".rstrip())

    def done(self, text: str) -> None:
        self._emit(f"{self.prefix}{self._text}: {text} ({time.monotonic() - self._t0:.1f} s)")

    def _emit(self, line: str) -> None:
        self._last = time.monotonic()
        print(line, file=self.stream, flush=True)


def host_facts() -> dict[str, Any]:
    facts: dict[str, Any] = {"hostname": socket.gethostname(), "platform": platform.platform(),
                             "python": platform.python_version(), "cpus": os.cpu_count()}
    if shutil.which("nvidia-smi"):
        try:
            out = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version",
                                  "--format=csv,noheader"], capture_output=True, text=True, timeout=30).stdout
            facts["gpus"] = [dict(zip(("name", "memory", "driver"), (x.strip() for x in line.split(","))))
                             for line in out.strip().splitlines()]
        except (OSError, subprocess.TimeoutExpired):
            pass
    return facts


class _Job:
    """A request in a background thread, cancellable (closing its stream aborts it)."""

    def __init__(self, fn: Callable[[Callable[[int], None]], None], on_token: Callable[[int], None] | None):
        self.error: BaseException | None = None
        self.done = False
        self._cancel = threading.Event()

        def tok(n: int) -> None:
            if on_token:
                on_token(n)
            if self._cancel.is_set():
                raise _Cancelled()

        def body() -> None:
            try:
                fn(tok)
            except _Cancelled:
                pass
            except BaseException as e:  # reported to the caller through .error
                self.error = e
            finally:
                self.done = True

        self._t = threading.Thread(target=body, daemon=True)
        self._t.start()

    def cancel(self) -> None:
        self._cancel.set()

    def join(self, timeout: float | None = None) -> None:
        self._t.join(timeout)


class _Cancelled(Exception):
    pass


class Session:
    """A ready server, from the measurement's point of view."""

    def __init__(self, engine: Engine, base_url: str, preset: Preset, opts: RunOptions,
                 server: ServerProcess | None):
        self.engine, self.base_url, self.preset, self.opts, self.server = engine, base_url.rstrip("/"), preset, opts, server
        self.http = httpx.Client(timeout=opts.request_timeout_s)
        self.vocab = int(preset.hf_config.get("vocab_size", 32000))
        self.served_model: str | None = None
        self.nonce = uuid.uuid4().hex[:16]  # this attempt's prompts are its own (measure/prompts.py)

    def close(self) -> None:
        self.http.close()

    def request(self, *, batch: int, seed: int, max_tokens: int, input_len: int | None = None,
                on_token: Callable[[int], None] | None = None):
        prompts = random_prompts(batch=batch, input_len=input_len or self.opts.input_len, vocab_size=self.vocab,
                                 seed=seed, nonce=self.nonce)
        path, body, parse = self.engine.generate(prompts, max_tokens)
        if "model" in body and body["model"] is None:
            body["model"] = self.served_model or self.opts.model_path or self.preset.hf_id
        return stream_batch(self.base_url + path, body, batch=batch, parse=parse,
                            request_timeout_s=self.opts.request_timeout_s, on_token=on_token)

    def run_async(self, seed: int, max_tokens: int, on_token: Callable[[int], None] | None) -> _Job:
        return _Job(lambda tok: self.request(batch=1, seed=seed, max_tokens=max_tokens, on_token=tok), on_token)


def launch_options(engine: Engine, config: Config, opts: RunOptions) -> tuple[RunOptions, RunOptions | None]:
    """The options of the measured launch, and of the launch that counts the expert load (None: no such launch).

    The expert recorder's kernels sit in the CUDA graph of every decode step, recording or not (SGLang 0.5.17 on
    H200, GPU run 3: 5 kernels, ~6 µs per MoE layer per step), so with ``--expert-load`` the measured launch goes
    without the recorder and a second launch counts the load. Not with an external server (its flags are the
    user's) or a multi-node config (every node launches with the same options; rank 0 cannot relaunch alone):
    there the recorder stays in the measured launch, and the record says so."""
    if not opts.expert_load or opts.base_url or config.nodes > 1:
        return opts, None
    return replace(opts, expert_load=False), (opts if engine.expert_load_source else None)


def launch_count(config: Config, opts: RunOptions) -> int:
    """How many launches measure a config (``--launches``): more than one only where moetrace launches the
    engine alone (not an external server, not a multi-node config whose other nodes stay up for one launch)."""
    return 1 if opts.base_url or config.nodes > 1 else max(1, opts.launches)


def _attempt_id(preset: Preset, config: Config) -> str:
    stamp = _dt.datetime.now().strftime("%Y%m%dT%H%M%S")
    return f"{stamp}-{safe_name(preset.name, 40)}-{safe_name(config.name, 60)}-{uuid.uuid4().hex[:6]}"


def run_config(preset: Preset, config: Config, opts: RunOptions, store: ResultsStore, *,
               progress: Progress | None = None, role: str = "primary",
               plan: dict[str, Any] | None = None) -> list[Record]:
    """Run one config and commit one record per batch size (or one failure record).
    Returns the committed records."""
    progress = progress or Progress()
    engine = get_engine(opts.engine)
    attempt_id = _attempt_id(preset, config)
    adir = store.attempt_dir(attempt_id)
    rel = lambda p: str(Path(p).resolve().relative_to(store.root.resolve())) if p else None  # noqa: E731
    log_path = adir / "server.log"
    model_path = opts.model_path or preset.hf_id
    device = opts.resolved_device()
    phases: dict[str, float] = {}
    base = Record.new(
        attempt_id=attempt_id, model=preset.name, config=config.name, role=role, config_detail=config.to_dict(),
        moetrace_version=__version__, started_at=now_iso(), host=host_facts(), options=opts.to_dict(),
        attempt_dir=rel(adir), phases=phases,
        engine={"name": engine.name, "external": bool(opts.base_url), "launched_by_moetrace": not opts.base_url,
                "model_path": model_path, "device": device})
    if preset.facts.get("variant"):  # dummy weights, a cut depth, one rank (variants.py): what it stands for
        base["model_detail"] = preset.facts["variant"]
    if plan is not None:
        base.plan = plan
    first_key = result_key(preset.name, config.name,
                           workload_suffix(opts.batch_sizes[0], opts.input_len, opts.output_len))

    def commit_failure(exc: BaseException, phase: str, server: ServerProcess | None) -> list[Record]:
        code = _exit_code(exc, server)
        log_text = tail(log_path) if log_path.exists() else ""
        c = classify(exception=type(exc).__name__, message=str(exc), exit_code=code, log_text=log_text, phase=phase)
        rec = base.copy(key=first_key, status="failure", finished_at=now_iso(),
                        error=Error(type=c.error_type, message=c.error_message, evidence=c.evidence,
                                    exception=type(exc).__name__, exit_code=code, phase=phase,
                                    log_path=rel(log_path) if log_path.exists() else None))
        rec.plan_check = plan_check(plan, "failure", c.error_type)
        if not rec.engine.resolved and (resolved := engine.resolved_backends(log_text)):
            rec.engine.resolved = resolved
        return [store.commit(rec)]

    # Predicted not to fit: record without launching.
    if plan and plan.get("verdict") == "will_not_fit" and opts.skip_predicted and not opts.base_url:
        rec = base.copy(key=first_key, status="failure", finished_at=now_iso(), predicted=True,
                        error=Error(type="OOM", message=plan.get("reason", "predicted not to fit"), predicted=True,
                                    phase="plan"))
        progress.step(f"{preset.name} {config.name}")
        progress.done("skipped: predicted not to fit (use --no-skip-predicted to launch anyway)")
        return [store.commit(rec)]

    measured_opts, recorder_opts = launch_options(engine, config, opts)
    launches = launch_count(config, opts)
    server: ServerProcess | None = None
    session: Session | None = None
    phase = "launch"
    runs_of: dict[int, list[dict[str, Any]]] = {bs: [] for bs in opts.batch_sizes}
    try:
        for launch in range(1, launches + 1):
            phase = "launch"
            last = launch == launches
            if session is not None:  # the previous launch, measured: stopped before the next one starts
                session.close()
                session = None
                _stop(server, phases, base)
            # the last launch's log is the record's (its traces, its stop); earlier ones keep their own
            log_path = adir / ("server.log" if last else f"server-launch{launch}.log")
            if opts.base_url:
                base_url = opts.base_url
                base.engine.command = None
            else:
                server, base_url = _launch(engine, preset, config, measured_opts, store, adir, log_path, model_path,
                                           device, progress, base, phases,
                                           what=f" (launch {launch}/{launches})" if launches > 1 else "")
                if resolved := engine.resolved_backends(tail(log_path)):  # what the engine chose, as its log says
                    base.engine.resolved = resolved
            session = _open_session(engine, base_url, preset, opts, server, base)
            prompt_nonce = session.nonce

            if opts.warmup:
                phase = "warmup"
                progress.step(f"{preset.name} {config.name}: warm-up")
                t = time.monotonic()
                _warm_up(session, server, opts)
                phases["warmup_s"] = time.monotonic() - t
                progress.done("ok")

            phase = "measure"
            t = time.monotonic()
            for bs in opts.batch_sizes:
                runs_of[bs] += _measure(engine, session, server, preset, config, opts, bs, progress,
                                        launch=launch if launches > 1 else None, telemetry_csv=adir / "telemetry.csv")
            phases["measure_s"] = phases.get("measure_s", 0.0) + (time.monotonic() - t)  # over the launches

        if measured_opts.expert_load:  # the recorder is in this launch (an external server, multi-node)
            phase = "expert_load"
            t = time.monotonic()
            base.expert_load = _expert_load(engine, session, preset, config, opts, adir, progress, rel,
                                            own_launch=False)
            phases["expert_load_s"] = time.monotonic() - t

        profile: dict[str, Any] = {"enabled": opts.profile}
        if opts.profile:
            phase = "profile"
            t = time.monotonic()
            profile = _profile(engine, session, preset, config, opts, adir, progress, rel, server=server,
                               phases=phases, base=base)
            phases["profile_s"] = time.monotonic() - t
    except KeyboardInterrupt as e:
        _stop(server, phases, base)
        commit_failure(e, phase, server)
        raise
    except MoetraceError as e:
        _stop(server, phases, base)
        return commit_failure(e, phase, server)
    except Exception as e:  # an unexpected bug must cost one config, not the sweep
        _stop(server, phases, base)
        return commit_failure(e, phase, server)
    finally:
        if session:
            session.close()
    _stop(server, phases, base)
    measured = []
    for bs, runs in runs_of.items():
        metrics = [x["metrics"] for x in runs]
        agg = aggregate_runs(metrics)
        agg.update(by_launch(metrics, [x.get("launch", 1) for x in runs]))
        measured.append((bs, agg, runs))

    interrupt = None
    if recorder_opts is not None:
        t = time.monotonic()
        base.expert_load, interrupt = _expert_load_launch(engine, preset, config, recorder_opts, store, adir,
                                                          model_path, device, progress, rel)
        phases["expert_load_s"] = time.monotonic() - t
    elif opts.expert_load and not measured_opts.expert_load:  # no recorder: nothing to launch it for
        progress.step(f"{preset.name} {config.name}: expert load")
        progress.done("not exposed by the engine")
        base.expert_load = {"available": False, "reason": engine.expert_load_absent}

    out = []
    for bs, agg, runs in measured:
        rec = base.copy(key=result_key(preset.name, config.name, workload_suffix(bs, opts.input_len, opts.output_len)),
                        status="success", finished_at=now_iso(),
                        workload=Workload(batch_size=bs, input_len=opts.input_len, output_len=opts.output_len,
                                          repeat=opts.repeat, launches=launches, seed=opts.seed,
                                          prompt_nonce=prompt_nonce),
                        metrics=agg, runs=runs, profile=profile,
                        log_path=rel(log_path) if log_path.exists() else None,
                        plan_check=plan_check(plan, "success", None))
        _add_floors(rec, plan)
        if any("telemetry" in x for x in runs):
            rec["telemetry"] = telemetry_brief(runs, rel(adir / "telemetry.csv"))
        out.append(store.commit(rec))
    if interrupt is not None:
        raise interrupt
    return out


def _warm_up(session: Session, server: ServerProcess | None, opts: RunOptions) -> None:
    """One short request before anything is measured or counted (kernels built, caches warm)."""
    _guard_server(lambda: session.request(batch=opts.batch_sizes[0], seed=opts.seed + 999_983,
                                          max_tokens=min(16, opts.output_len)), server, session)


def _exit_code(exc: BaseException, server: ServerProcess | None) -> int | None:
    """The engine's exit code for a failure: the exception's, else the one the engine had before our stop
    (not the code of our own SIGTERM)."""
    code = getattr(exc, "exit_code", None)
    return server.exit_code_before_stop if code is None and server is not None else code


def _open_session(engine: Engine, base_url: str, preset: Preset, opts: RunOptions, server: ServerProcess | None,
                  base: Record) -> Session:
    """A session on the launched engine (or the external server), its facts into the record."""
    session = Session(engine, base_url, preset, opts, server)
    try:
        if opts.base_url and not engine.is_ready(session.http, session.base_url):
            raise LaunchError(f"no ready server at {opts.base_url} ({engine.ready_path} did not answer 200)")
        base.engine.server_info = engine.server_info(session.http, session.base_url)
        base.engine.version = _engine_version(engine, opts, base.engine.server_info, known=base.engine.version)
        session.served_model = engine.model_name(session.http, session.base_url)
    except BaseException:
        session.close()
        raise
    return session


def _measure(engine: Engine, session: Session, server: ServerProcess | None, preset: Preset, config: Config,
             opts: RunOptions, bs: int, progress: Progress, launch: int | None = None,
             telemetry_csv: Path | None = None) -> list[dict[str, Any]]:
    """The measured runs of one batch size in one launch: each after a cache flush, with the server's own
    timing beside ours, and on a GPU what the GPUs did during each run (``telemetry``: clocks, power,
    throttling; every sample in the attempt's ``telemetry.csv``)."""
    runs = []
    of = f" of launch {launch}" if launch else ""
    with _telemetry(config, opts, telemetry_csv) as sampler:
        for r in range(opts.repeat):
            t0 = time.time()
            runs.append(_one_run(engine, session, server, preset, config, opts, bs, r, launch, progress, of))
            if sampler is not None:
                window = samples_between(sampler.samples, t0, time.time())
                runs[-1]["telemetry"] = {"source": sampler.used, **summarise(window)}
    return runs


@contextlib.contextmanager
def _telemetry(config: Config, opts: RunOptions, csv_path: Path | None):
    """A GPU sampler over the measured runs when the engine runs on local GPUs, else None."""
    if opts.resolved_device() != "cuda" or opts.base_url or csv_path is None or config.nodes > 1:
        yield None
        return
    from .measure.telemetry import Sampler, config_gpus
    with open(csv_path, "a") as out:
        try:
            sampler = Sampler(gpus=config_gpus(config.tp, os.environ.get("CUDA_VISIBLE_DEVICES")), out=out).start()
        except (RuntimeError, ValueError, OSError):
            yield None  # no NVML and no nvidia-smi: the runs go on unsampled
            return
        try:
            yield sampler
        finally:
            sampler.stop()


def _one_run(engine: Engine, session: Session, server: ServerProcess | None, preset: Preset, config: Config,
             opts: RunOptions, bs: int, r: int, launch: int | None, progress: Progress, of: str) -> dict[str, Any]:
    progress.step(f"{preset.name} {config.name}: measure bs={bs} run {r + 1}/{opts.repeat}{of}")
    flushed = engine.flush_cache(session.http, session.base_url)
    before = engine.read_metrics(session.http, session.base_url)
    traces = _guard_server(lambda: session.request(batch=bs, seed=opts.seed + 7919 * r + bs,
                                                   max_tokens=opts.output_len), server, session)
    after = engine.read_metrics(session.http, session.base_url) if before is not None else None
    m = run_metrics(traces, input_len=opts.input_len, output_len=opts.output_len)
    m["cache_flushed"] = flushed
    m.update(server_timing(before, after, itl=engine.itl_metrics, ttft=engine.ttft_metrics))
    m = settle_headline(m, batch=bs, input_len=opts.input_len, output_len=opts.output_len)  # bursty: engine's timing
    progress.done(f"latency {m['latency_s']:.2f} s, TTFT {m['ttft_ms']:.1f} ms, "
                  f"ITL {m.get('itl_ms', float('nan')):.2f} ms")
    return {"metrics": m, "token_times": [tr.token_times for tr in traces]} | ({"launch": launch} if launch else {})


def plan_check(plan: dict[str, Any] | None, status: str, error_type: str | None) -> str | None:
    """A line when the real outcome contradicts the planner's prediction, else None."""
    if not plan:
        return None
    from .plan.check import contradiction
    return contradiction(plan, status, error_type)


def _add_floors(rec: Record, plan: dict[str, Any] | None) -> None:
    """The planner's floors and efficiency = floor / measured, into the metrics; and, when the
    profile has step times, where ITL and TTFT go against the floor (``profile.decomposition``)."""
    m = rec.metrics
    if plan:
        from .plan import floor_fields
        m.update({k: v for k, v in floor_fields(plan, itl_ms=m.itl_ms, ttft_ms=m.ttft_ms).items() if v is not None})
    if rec.profile is not None and rec.profile.step_times:
        from .traces.decompose import decompose
        rec.profile.decomposition = decompose(plan, m.to_dict(), rec.profile.step_times)  # per batch size


def _engine_version(engine: Engine, opts: RunOptions, info: dict[str, Any], known: str | None = None) -> str | None:
    """What the server says, else what its package metadata said before the launch."""
    for key in ("server_info", "version"):
        v = info.get(key)
        if isinstance(v, dict) and v.get("version"):
            return str(v["version"])
    if opts.base_url:
        return None
    return known or engine.version(opts.engine_python, list(opts.launch_prefix))


def _launch(engine: Engine, preset: Preset, config: Config, opts: RunOptions, store: ResultsStore, adir: Path,
            log_path: Path, model_path: str, device: str, progress: Progress, base: dict[str, Any],
            phases: dict[str, float], what: str = "") -> tuple[ServerProcess, str]:
    if opts.port is not None and not port_is_free(opts.port, opts.host):
        raise LaunchError(f"port {opts.port} on {opts.host} is already in use; choose another --port "
                          "or leave it out to use a free one")
    # the engine's version from its package metadata before the launch, so that a launch failure says it too
    base["engine"]["version"] = engine.version(opts.engine_python, list(opts.launch_prefix))
    attempts = 1 if opts.port is not None else 3  # a free port can be taken between choice and bind
    for attempt in range(attempts):
        port = opts.port or free_port(opts.host)
        spec = LaunchSpec.from_options(preset, config, opts, port=port, device=device,
                                       profile_dir=adir / "profiler_raw")
        cmd = engine.command(spec)
        routing = engine.balanced_routing_env if opts.routing == "balanced" else {}
        extra_env = {**engine.environment(spec), **routing, **dict(opts.engine_env)}
        env = dict(os.environ, **extra_env)
        base["engine"]["command"] = cmd
        base["engine"]["env"] = extra_env
        server = ServerProcess(cmd, log_path=log_path, env=env, port=port, host=opts.host,
                               registry=store.root / "running", label=f"{preset.name} {config.name}",
                               grace_s=opts.grace_s)
        progress.step(f"{preset.name} {config.name}: launching {engine.name}{what} on port {port}")
        t = time.monotonic()
        server.start()
        base_url = f"http://{opts.host}:{port}"
        probe_http = httpx.Client(timeout=5.0)
        try:
            server.wait_ready(lambda: engine.is_ready(probe_http, base_url), timeout_s=opts.launch_timeout_s,
                              on_wait=progress.tick)
        except BaseException as e:
            phases["launch_s"] = time.monotonic() - t
            _stop(server, phases, base)
            if isinstance(e, LaunchError) and attempt + 1 < attempts and \
                    "ddress already in use" in tail(log_path, 20_000):
                continue
            raise
        finally:
            probe_http.close()
        phases["launch_s"] = time.monotonic() - t
        progress.done("ready")
        return server, base_url
    raise AssertionError("unreachable")


def _guard_server(fn: Callable[[], Any], server: ServerProcess | None, session: Session) -> Any:
    """Run a request; if it fails and the server turns out dead or unhealthy, say so
    (a ServerError with the log) rather than blaming the stream."""
    before = server.alive_pids() if server else set()
    try:
        return fn()
    except MoetraceError as e:
        if server is None:
            raise
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline:
            code = server.exit_code()
            if code is not None:
                raise ServerDied(f"engine exited with code {code} during the request ({e})",
                                 log_path=server.log_path, exit_code=code) from e
            lost = before - server.alive_pids()
            if lost:
                raise ServerDied(f"engine process(es) {sorted(lost)} died during the request ({e})",
                                 log_path=server.log_path) from e
            time.sleep(0.25)
        if server.port and port_is_free(server.port, server.host):
            # nothing listens on the engine's port any more while its processes wind down (seen in CI: vLLM's
            # EngineCore killed before the request began, its API server still exiting after 5 s)
            raise ServerDied(f"engine stopped listening on port {server.port} ({e})", log_path=server.log_path) from e
        raise


def _stop(server: ServerProcess | None, phases: dict[str, float], base: dict[str, Any]) -> None:
    if server is None or server.stop_report is not None:
        return
    t = time.monotonic()
    rep = server.stop()
    phases["stop_s"] = time.monotonic() - t
    base["engine"]["stop"] = rep.to_dict()  # a Record (or a dict, in tests) reads like the JSON it writes
    if rep.survivors:
        print(f"WARNING: engine processes {rep.survivors} survived SIGKILL; see {server.log_path}", file=sys.stderr)


def _expert_load(engine: Engine, session: Session, preset: Preset, config: Config, opts: RunOptions, adir: Path,
                 progress: Progress, rel: Callable[[Any], str | None], *, own_launch: bool) -> dict[str, Any]:
    """One more request of the workload with the engine's expert recorder on; what it counted, per
    stage (measure/expert_load.py). Never fails the config: the measured numbers stand, and the
    record says what went wrong (or that the engine has no recorder). ``own_launch``: the recorder
    runs in a launch of its own (``_expert_load_launch``), which classifies a failed capture from its log."""
    bs = opts.batch_sizes[0]
    progress.step(f"{preset.name} {config.name}: expert load of one request (bs={bs})")
    seed = opts.seed + 104_729
    try:
        files = engine.capture_expert_load(
            session.http, session.base_url, adir / "expert_load",
            lambda: _guard_server(lambda: session.request(batch=bs, seed=seed, max_tokens=opts.output_len),
                                  session.server, session))
    except (MoetraceError, httpx.HTTPError) as e:
        if own_launch:
            raise
        progress.done(f"failed: {e}")
        return {"available": True, "error": f"{type(e).__name__}: {e}", "recorder_in_measured_launch": True}
    if files is None:
        progress.done("not exposed by the engine")
        return {"available": False, "reason": engine.expert_load_absent}
    out: dict[str, Any] = {"available": True, "source": engine.expert_load_source, "file": rel(files[-1]),
                           "recorder_in_measured_launch": not own_launch,
                           "batch_size": bs, "input_len": opts.input_len, "output_len": opts.output_len, "seed": seed}
    try:
        from .measure.expert_load import check_planted, read_torch_save, summarize
        data = read_torch_save(files[-1].read_bytes())
        top_k = int(preset.hf_config.get("num_experts_per_tok") or 0)
        out.update(summarize(data["logical_count"].array, top_k=top_k, batch_size=bs, ep_size=config.ep,
                             replicas=engine.expert_load_replicas(config)))
    except Exception as e:  # a format we do not know: keep the file, say why
        out["error"] = f"could not read {files[-1].name}: {type(e).__name__}: {e}"
        progress.done(out["error"])
        return out
    if preset.facts.get("router"):
        out["planted"] = check_planted(out, preset.facts["router"])
    worst = max((s["imbalance_max"] for s in out["stages"].values()), default=0.0)
    progress.done(f"max/mean tokens per expert {worst:.2f}" +
                  (f", planted skew {'found' if out['planted']['ok'] else 'NOT found'}" if "planted" in out else ""))
    return out


def _expert_load_launch(engine: Engine, preset: Preset, config: Config, opts: RunOptions, store: ResultsStore,
                        adir: Path, model_path: str, device: str, progress: Progress,
                        rel: Callable[[Any], str | None]) -> tuple[dict[str, Any], KeyboardInterrupt | None]:
    """The expert load counted in a launch of its own with the recorder on, after the measured launch
    stopped (``launch_options`` says why): launch, a short warm-up, ``_expert_load``, stop. Nothing here
    fails the config: a failure (a launch the recorder breaks, a device-side assert) is this field's,
    classified from this launch's own log. Returns the field and, after Ctrl-C, the interrupt for the
    caller to raise once it has committed the measured records."""
    log_path = adir / "server-expert-load.log"
    info: dict[str, Any] = {"engine": {}}  # what _launch and _stop say of this launch, kept apart from the record's
    times: dict[str, float] = {}
    out: dict[str, Any] = {"available": True, "recorder_in_measured_launch": False}
    server: ServerProcess | None = None
    session: Session | None = None
    interrupt = None
    try:
        server, base_url = _launch(engine, preset, config, opts, store, adir, log_path, model_path, device,
                                   progress, info, times, what=" for the expert recorder")
        session = Session(engine, base_url, preset, opts, server)
        session.served_model = engine.model_name(session.http, session.base_url)
        progress.step(f"{preset.name} {config.name}: warm-up of the recorder launch")
        _warm_up(session, server, opts)
        progress.done("ok")
        out.update(_expert_load(engine, session, preset, config, opts, adir, progress, rel, own_launch=True))
    except (KeyboardInterrupt, Exception) as e:
        _stop(server, times, info)
        code = _exit_code(e, server)
        c = classify(exception=type(e).__name__, message=str(e), exit_code=code,
                     log_text=tail(log_path) if log_path.exists() else "", phase="expert_load")
        out.update(error=f"{c.error_type}: {c.error_message}", evidence=c.evidence, exception=type(e).__name__,
                   exit_code=code)
        progress.done(f"failed: {out['error']}")
        interrupt = e if isinstance(e, KeyboardInterrupt) else None
    finally:
        if session:
            session.close()
    _stop(server, times, info)
    out["launch"] = {"command": info["engine"].get("command"), "env": info["engine"].get("env"),
                     "log_path": rel(log_path) if log_path.exists() else None, "launch_s": times.get("launch_s"),
                     "stop_s": times.get("stop_s"), "stop": info["engine"].get("stop")}
    return out, interrupt


def _profile(engine: Engine, session: Session, preset: Preset, config: Config, opts: RunOptions, adir: Path,
             progress: Progress, rel: Callable[[Any], str | None], *, server: ServerProcess | None = None,
             phases: dict[str, float] | None = None, base: dict[str, Any] | None = None) -> dict[str, Any]:
    """Capture extend and decode traces; a failure here is recorded, and the numbers kept.

    A stage whose trace holds no step of that stage is retried once with longer windows, then
    recorded as a failure naming the file. An engine that dies while profiling is a failure of
    that stage with the decisive log line; it is stopped (and how, recorded), and every complete
    trace it wrote is still filed and analysed."""
    raw = adir / "profiler_raw"
    raw.mkdir(parents=True, exist_ok=True)
    traces_dir = adir / "traces"
    progress.step(f"{preset.name} {config.name}: profiling {opts.profile_steps} steps per stage")
    watched = _engine_pids(server)

    def alive() -> bool:
        return _engine_death(server, watched, wait_s=0.0) is None

    def request(stages: tuple[str, ...], longer: bool) -> ProfileRequest:
        return ProfileRequest(
            out_dir=raw, steps=opts.profile_steps, with_stack=opts.profile_with_stack,
            run=lambda seed, max_tokens, on_token: session.request(batch=1, seed=opts.seed + 31 * seed,
                                                                  max_tokens=max_tokens, on_token=on_token),
            run_async=lambda seed, max_tokens, on_token: session.run_async(opts.seed + 31 * seed, max_tokens,
                                                                           on_token),
            expected_ranks=config.tp, timeout_s=opts.profile_timeout_s, stages=stages, longer=longer, alive=alive)

    out: dict[str, Any] = {"enabled": True, "steps": opts.profile_steps}
    errors: list[str] = []
    stages: dict[str, list[Path]] = {"extend": [], "decode": []}

    def capture(wanted: tuple[str, ...], longer: bool) -> dict[str, list[Path]] | None:
        """Run the engine's capture and file what it wrote; None when the engine died."""
        req = request(wanted, longer)
        try:
            files = engine.capture_profile(session.http, session.base_url, req)
        except (MoetraceError, httpx.HTTPError) as e:
            death = _engine_death(server, watched, wait_s=5.0)
            if death is None:
                errors.append(f"{type(e).__name__}: {e}")
                files = dict(req.done)
            else:
                out["engine_died"] = _engine_died(server, death, e, phases, base, rel)
                errors.append(f"{out['engine_died']['error_type']}: {out['engine_died']['message']}")
                files = _left_behind(raw, req, wanted)
                _file(files, wanted)
                return None
        _file(files, wanted)
        return files

    def _file(files: dict[str, list[Path]], wanted: tuple[str, ...]) -> None:
        for stage in ("extend", "decode"):
            if stage in wanted and files.get(stage):
                stages[stage] += file_traces(files[stage], traces_dir, model=preset.name, config=config.name,
                                             stage=stage, engine=engine.name)

    alive_after = capture(("extend", "decode"), False) is not None
    summaries, analysis_errors = _analyse(stages)
    empty = _empty(stages, summaries)
    if empty and alive_after:
        retry = tuple(st for st in ("extend", "decode") if st in empty)
        progress.done(f"no {'/'.join(retry)} step in {', '.join(p.name for st in retry for p in empty[st])}")
        progress.step(f"{preset.name} {config.name}: profiling {'/'.join(retry)} again with longer windows")
        rejected_dir = traces_dir / "rejected"
        rejected_dir.mkdir(parents=True, exist_ok=True)
        out["rejected"] = []
        for st in retry:
            for p in stages[st]:  # every file of the retried stage: the retry writes them all again
                dest = rejected_dir / p.name
                shutil.move(str(p), dest)
                out["rejected"].append({"stage": st, "trace": rel(dest),
                                        "reason": "no step of its stage" if p in empty[st] else "stage retried"})
            stages[st] = []
            for p in list(summaries):
                if p not in stages["extend"] + stages["decode"]:
                    summaries.pop(p)
        capture(retry, True)
        more, more_errors = _analyse({st: stages[st] for st in retry})
        summaries.update(more)
        analysis_errors += more_errors
        empty = _empty(stages, summaries)
        for st, files in empty.items():
            errors.append(f"{st}: " + ", ".join(f"{rel(p)} holds no {st.upper()} step" for p in files)
                          + " (also after a retry with longer windows)")
    elif empty:
        for st, files in empty.items():
            errors.append(f"{st}: " + ", ".join(f"{rel(p)} holds no {st.upper()} step" for p in files))
    for stage in ("extend", "decode"):
        files = stages[stage]
        # The stage's link is its first rank's trace, unless that trace holds no step of the stage.
        out[stage] = rel(files[0]) if files and files[0] not in empty.get(stage, []) else None
        out[f"{stage}_all"] = [rel(p) for p in files]
    out["other_files"] = [rel(p) for p in raw.rglob("*") if p.is_file()]
    out.update(_breakdowns(stages, summaries, empty, rel))
    out["analysis_error"] = "; ".join(analysis_errors) or None
    if errors:
        out["error"] = "; ".join(errors)
        progress.done(f"failed: {out['error']}")
    else:
        progress.done(f"{len(stages['extend'])} extend and {len(stages['decode'])} decode trace files")
    return out


_TRANSIENT = frozenset({"g++", "gcc", "cc", "c++", "cc1plus", "cc1", "as", "ld", "collect2", "nvcc", "ptxas", "cicc",
                        "ninja", "sh", "bash", "make", "cmake", "fatbinary", "nvlink"})


def _engine_pids(server: ServerProcess | None) -> set[int]:
    """The engine's own processes alive now, not the compilers it runs now and then (torch.compile,
    FlashInfer's JIT): one of these exiting is no death."""
    if server is None:
        return set()
    import psutil
    out = set()
    for pid in server.alive_pids():
        try:
            if psutil.Process(pid).name() not in _TRANSIENT:
                out.add(pid)
        except psutil.Error:
            continue
    return out


def _engine_death(server: ServerProcess | None, watched: set[int], wait_s: float) -> dict[str, Any] | None:
    """How the engine died (exit code, processes lost since profiling began), or None while it lives."""
    if server is None:
        return None
    deadline = time.monotonic() + wait_s
    while True:
        code = server.exit_code()
        lost = sorted(watched - server.alive_pids()) if watched else []
        if code is not None or lost:
            return {"exit_code": code, "lost_pids": lost}
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.25)


def _engine_died(server: ServerProcess | None, death: dict[str, Any], exc: BaseException,
                 phases: dict[str, float] | None, base: dict[str, Any] | None,
                 rel: Callable[[Any], str | None]) -> dict[str, Any]:
    """Classify an engine death during profiling from its log, stop what is left of its process
    tree, and say so. The benchmark numbers are not touched."""
    assert server is not None
    code = death["exit_code"]
    if death["lost_pids"] and code is None:
        time.sleep(1.0)  # the engine's own shutdown (SGLang kills its tree when a scheduler dies)
        code = server.exit_code()
    what = f"engine exited with code {code}" if code is not None else \
        f"engine process(es) {death['lost_pids']} died"
    c = classify(exception="ServerDied", message=f"{what} during profiling ({type(exc).__name__}: {exc})",
                 exit_code=code, log_text=tail(server.log_path), phase="profile")
    _stop(server, phases if phases is not None else {}, base if base is not None else {"engine": {}})
    rep = server.stop_report.to_dict() if server.stop_report else None
    return {"error_type": c.error_type, "message": c.error_message, "evidence": c.evidence, "exit_code": code,
            "lost_pids": death["lost_pids"], "exception": type(exc).__name__, "client_error": str(exc),
            "stop": rep, "log_path": rel(server.log_path) if server.log_path.exists() else None}


def _left_behind(raw: Path, req: ProfileRequest, wanted: tuple[str, ...]) -> dict[str, list[Path]]:
    """The complete traces a dead engine wrote: those of finished stages, and any other complete
    file in the raw folder (its stage from its name, else the stage that was in progress)."""
    from .traces.names import parse_trace_name
    files = {st: list(req.done.get(st, [])) for st in wanted}
    known = {p for fs in files.values() for p in fs}
    in_progress = next((st for st in wanted if st not in req.done), wanted[-1])
    for p in complete_traces(raw):
        if p in known:
            continue
        stage = (parse_trace_name(p.name).stage or "").lower() or in_progress
        stage = "extend" if stage == "extend" else ("decode" if stage == "decode" else in_progress)
        if stage in files:
            files[stage].append(p)
    return files


def _analyse(stages: dict[str, list[Path]]) -> tuple[dict[Path, Any], list[str]]:
    """One analysis per per-rank trace file (frontend files have no steps and are skipped)."""
    try:
        from .traces.analyze import analyze_trace
    except ImportError as e:  # analyzer not available: keep traces, say why
        return {}, [f"analyzer unavailable: {e}"]
    out: dict[Path, Any] = {}
    errors = []
    for stage, files in stages.items():
        for f in files:
            if "__rank" not in f.name:
                continue
            try:
                out[f] = analyze_trace(f)
            except Exception as e:  # a trace the analyzer cannot read must not cost the result
                errors.append(f"{stage}: {type(e).__name__}: {e}")
    return out, errors


def _empty(stages: dict[str, list[Path]], summaries: dict[Path, Any]) -> dict[str, list[Path]]:
    """Per stage, the per-rank files that hold no step of that stage (a profiling failure)."""
    from .traces.analyze import step_count
    out: dict[str, list[Path]] = {}
    for stage, files in stages.items():
        bad = [f for f in files if f in summaries and step_count(summaries[f], stage) == 0]
        if bad:
            out[stage] = bad
    return out


def _breakdowns(stages: dict[str, list[Path]], summaries: dict[Path, Any], empty: dict[str, list[Path]],
                rel: Callable[[Any], str | None]) -> dict[str, Any]:
    """Per stage: every rank's short breakdown and collective time, the rank the others wait for,
    and (``breakdown``, for tables) the first rank's breakdown."""
    from .traces.analyze import group_stages, short_breakdown, step_count
    from .traces.decompose import step_times_dict
    breakdown: dict[str, Any] = {}
    step_times: dict[str, Any] = {}
    by_rank: dict[str, Any] = {}
    bottleneck: dict[str, Any] = {}
    for stage, files in stages.items():
        ranked = [f for f in files if f in summaries and f not in empty.get(stage, [])]
        if not ranked:
            continue
        breakdown[stage] = short_breakdown(summaries[ranked[0]], stage)
        step_times[stage] = step_times_dict(summaries[ranked[0]], stage)
        groups = {g.stage: g for g in group_stages([summaries[f] for f in ranked])}
        g = groups.get(stage.upper())
        rows = []
        for f in ranked:
            t = summaries[f]
            row = next((r for r in g.rows if r.path == t.path), None) if g else None
            rows.append({"rank": t.rank, "parallel": t.parallel, "trace": rel(f), "steps": step_count(t, stage),
                         "breakdown": short_breakdown(t, stage),
                         "busy_ms": round(row.busy_us / 1000, 3) if row else None,
                         "collective_ms": round(row.collective_us / 1000, 3) if row else None,
                         "step_mean_ms": round(row.step_mean_us / 1000, 3) if row and row.step_mean_us else None})
        by_rank[stage] = rows
        if g is not None and len(g.rows) > 1:
            bottleneck[stage] = {"rank": g.bottleneck_rank, "longest_step_rank": g.slowest_rank}
    return {"breakdown": breakdown, "breakdown_by_rank": by_rank, "bottleneck": bottleneck,
            "step_times": {k: v for k, v in step_times.items() if v is not None}}

