"""The launch stage: start the engine (or reach the external server), open a session on it, and
stop it. A :class:`Launch` writes one part, the engine's (:class:`EngineInfo`), and its timings."""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx

from ..engines.base import Engine, LaunchSpec
from ..engines.process import ServerProcess, free_port, port_is_free, tail
from ..errors import LaunchError
from ..matrix import Config
from ..options import RunOptions
from ..results.record import EngineInfo, Stop
from .context import Attempt
from .session import Session


def launch_options(engine: Engine, config: Config, opts: RunOptions) -> tuple[RunOptions, RunOptions | None]:
    """The options of the measured launch, and of the launch that counts the expert load (None: no such launch).

    The expert recorder's kernels sit in the CUDA graph of every decode step, recording or not (SGLang 0.5.17 on
    H200, GPU run 3: 5 kernels, ~6 µs per MoE layer per step), so with ``--expert-load`` the measured launch goes
    without the recorder and a second launch counts the load. Not with an external server (its flags are the
    user's) or a multi-node config (every node launches with the same options; rank 0 cannot relaunch alone):
    there the recorder stays in the measured launch, and the record says so."""
    if not opts.expert_load or opts.base_url or config.nodes > 1:
        return opts, None
    return replace(opts, expert_load=False), (opts if engine.expert_load_unavailable(opts.resolved_device()) is None
                                              else None)


def launch_count(config: Config, opts: RunOptions) -> int:
    """How many launches measure a config (``--launches``): more than one only where moetrace launches the
    engine alone (not an external server, not a multi-node config whose other nodes stay up for one launch).
    ``--launches auto``: the most it may take (``--max-launches``); the measure stage stops earlier when the
    interval is narrow enough."""
    if opts.base_url or config.nodes > 1:
        return 1
    return max(2, opts.max_launches) if opts.launches == "auto" else max(1, int(opts.launches))


@dataclass
class Launch:
    """One engine launch (or the external server): its process, log and session, and what the record says of
    it (``info``, the engine part; ``times``: ``launch_s`` and ``stop_s``, written over by each launch into the
    attempt's ``phases``; ``own``: this launch's alone, one entry of ``phases.launches`` with ``--launches N``)."""

    info: EngineInfo
    times: dict[str, Any]
    log_path: Path
    server: ServerProcess | None = None
    base_url: str = ""
    session: Session | None = None
    own: dict[str, float] | None = None

    def note(self, name: str, seconds: float) -> None:
        """A timing of this launch, into ``times`` and ``own``."""
        self.times[name] = seconds
        if self.own is not None:
            self.own[name] = seconds

    def stop(self) -> None:
        """Stop the engine (once), its report into ``info.stop``."""
        server = self.server
        if server is None or server.stop_report is not None:
            return
        t = time.monotonic()
        rep = server.stop()
        self.note("stop_s", time.monotonic() - t)
        self.info.stop = Stop.from_dict(rep.to_dict())
        if rep.survivors:
            print(f"WARNING: engine processes {rep.survivors} survived SIGKILL; see {server.log_path}",
                  file=sys.stderr)

    def close(self) -> None:
        """Close the session, then stop the engine."""
        if self.session is not None:
            self.session.close()
            self.session = None
        self.stop()

    def exit_code(self, exc: BaseException) -> int | None:
        """The engine's exit code for a failure: the exception's, else the one the engine had before our stop
        (not the code of our own SIGTERM)."""
        code = getattr(exc, "exit_code", None)
        return self.server.exit_code_before_stop if code is None and self.server is not None else code

    def log_text(self) -> str:
        return tail(self.log_path) if self.log_path.exists() else ""


def start_engine(ctx: Attempt, opts: RunOptions, launch: Launch, what: str = "") -> None:
    """Start the engine with ``opts`` and wait until it is ready (``launch.server``, ``launch.base_url``); a port taken between our
    choice and the engine's bind is tried again with another."""
    engine, preset, config = ctx.engine, ctx.preset, ctx.config
    if opts.port is not None and not port_is_free(opts.port, opts.host):
        raise LaunchError(f"port {opts.port} on {opts.host} is already in use; choose another --port "
                          "or leave it out to use a free one")
    # the engine's version from its package metadata before the launch, so that a launch failure says it too
    launch.info.version = engine.version(opts.engine_python, list(opts.launch_prefix))
    attempts = 1 if opts.port is not None else 3  # a free port can be taken between choice and bind
    for attempt in range(attempts):
        port = opts.port or free_port(opts.host)
        spec = LaunchSpec.from_options(preset, config, opts, port=port, device=ctx.device,
                                       profile_dir=ctx.adir / "profiler_raw")
        spec.engine_version = launch.info.version
        cmd = engine.command(spec)
        extra_env = engine.launch_environment(spec, opts)
        launch.info.command = cmd
        launch.info.env = extra_env
        launch.server = ServerProcess(cmd, log_path=launch.log_path, env=dict(os.environ, **extra_env), port=port,
                                      host=opts.host, registry=ctx.store.root / "running",
                                      label=f"{preset.name} {config.name}", grace_s=opts.grace_s)
        ctx.step(f"launching {engine.name}{what} on port {port}")
        t = time.monotonic()
        launch.server.start()
        base_url = launch.base_url = f"http://{opts.host}:{port}"
        probe_http = httpx.Client(timeout=5.0)
        try:
            launch.server.wait_ready(lambda: engine.is_ready(probe_http, base_url), timeout_s=opts.launch_timeout_s,
                                     on_wait=ctx.progress.tick)
        except BaseException as e:
            launch.note("launch_s", time.monotonic() - t)
            launch.stop()
            launch.server = None  # a launch that never became ready: a failure's exit code is the exception's
            if isinstance(e, LaunchError) and attempt + 1 < attempts and \
                    "ddress already in use" in tail(launch.log_path, 20_000):
                continue
            raise
        finally:
            probe_http.close()
        launch.note("launch_s", time.monotonic() - t)
        ctx.progress.done("ready")
        return
    raise AssertionError("unreachable")


def measured_launch(ctx: Attempt, opts: RunOptions, launch: Launch, what: str) -> None:
    """A launch to measure (or the external server): started, its session open, the server's facts and what
    the engine chose (its log's backends) in ``launch.info``."""
    engine = ctx.engine
    if ctx.opts.base_url:
        launch.base_url = ctx.opts.base_url
        launch.info.command = None
    else:
        start_engine(ctx, opts, launch, what)
        if resolved := engine.resolved_backends(tail(launch.log_path)):  # what the engine chose, as its log says
            launch.info.resolved = resolved
    session = launch.session = Session(engine, launch.base_url, ctx.preset, ctx.opts, launch.server)
    if ctx.opts.base_url and not engine.is_ready(session.http, session.base_url):
        raise LaunchError(f"no ready server at {ctx.opts.base_url} ({engine.ready_path} did not answer 200)")
    launch.info.server_info = engine.server_info(session.http, session.base_url)
    launch.info.version = engine_version(engine, ctx.opts, launch.info.server_info, known=launch.info.version)
    session.served_model = engine.model_name(session.http, session.base_url)


def engine_version(engine: Engine, opts: RunOptions, info: dict, known: str | None = None) -> str | None:
    """What the server says, else what its package metadata said before the launch."""
    for key in ("server_info", "version"):
        v = info.get(key)
        if isinstance(v, dict) and v.get("version"):
            return str(v["version"])
    if opts.base_url:
        return None
    return known or engine.version(opts.engine_python, list(opts.launch_prefix))
