"""The expert-load stage (``--expert-load``): one more request with the engine's expert recorder on,
counted per stage (measure/expert_load.py), in the measured launch or in a launch of its own
(``launch.launch_options`` says which). Returns the record's ``expert_load``; never fails the config."""

from __future__ import annotations

from typing import Any

import httpx

from ..engines.base import ExpertLoadRequest
from ..errors import MoetraceError
from ..plan.arch import routed_experts
from ..options import RunOptions
from ..results.classify import classify
from ..results.record import EngineInfo
from .context import Attempt
from .launch import Launch, start_engine
from .session import Session, guard_server


def expert_load(ctx: Attempt, session: Session, *, own_launch: bool) -> dict[str, Any]:
    """One more request of the workload with the engine's expert recorder on; what it counted, per
    stage. Never fails the config: the measured numbers stand, and the record says what went wrong
    (or that the engine has no recorder). ``own_launch``: the recorder runs in a launch of its own
    (:func:`expert_load_launch`), which classifies a failed capture from its log."""
    engine, opts = ctx.engine, ctx.opts
    bs = opts.batch_sizes[0]
    ctx.step(f"expert load of one request (bs={bs})")
    seed = opts.seed + 104_729
    absent = engine.expert_load_unavailable(ctx.device)
    if absent:  # e.g. vLLM's CPU build: the flag is refused, so nothing to ask the server
        ctx.progress.done("not exposed by the engine")
        return {"available": False, "reason": absent}
    req = ExpertLoadRequest(
        run=lambda: session.request(batch=bs, seed=seed, max_tokens=opts.output_len),  # guarded with the capture
        prompts=session.prompts(batch=bs, seed=seed), max_tokens=opts.output_len, model=session.model_name(),
        experts=routed_experts(ctx.preset.hf_config), timeout_s=opts.request_timeout_s)
    try:
        files = guard_server(lambda: engine.capture_expert_load(session.http, session.base_url,
                                                                ctx.adir / "expert_load", req),
                             session.server, session)
    except (MoetraceError, httpx.HTTPError) as e:
        if own_launch:
            raise
        ctx.progress.done(f"failed: {e}")
        return {"available": True, "error": f"{type(e).__name__}: {e}", "recorder_in_measured_launch": True}
    if files is None:
        ctx.progress.done("not exposed by the engine")
        return {"available": False, "reason": engine.expert_load_absent}
    out: dict[str, Any] = {"available": True, "source": engine.expert_load_source, "file": ctx.rel(files[-1]),
                           "recorder_in_measured_launch": not own_launch,
                           "batch_size": bs, "input_len": opts.input_len, "output_len": opts.output_len, "seed": seed}
    from ..measure.expert_load import check_planted, summarize  # numpy, only when there are counts
    try:
        top_k = int(ctx.preset.hf_config.get("num_experts_per_tok") or 0)
        out.update(summarize(engine.expert_counts(files[-1]), top_k=top_k, batch_size=bs,
                             ep_size=engine.ep_groups(ctx.config), replicas=engine.expert_load_replicas(ctx.config)))
    except Exception as e:  # a format we do not know: keep the file, say why
        out["error"] = f"could not read {files[-1].name}: {type(e).__name__}: {e}"
        ctx.progress.done(out["error"])
        return out
    if ctx.preset.facts.get("router"):
        out["planted"] = check_planted(out, ctx.preset.facts["router"])
    worst = max((s["imbalance_max"] for s in out["stages"].values()), default=0.0)
    ctx.progress.done(f"max/mean tokens per expert {worst:.2f}" +
                      (f", planted skew {'found' if out['planted']['ok'] else 'NOT found'}" if "planted" in out
                       else ""))
    return out


def no_recorder(ctx: Attempt) -> dict[str, Any]:
    """The field when the engine has no recorder to launch."""
    ctx.step("expert load")
    ctx.progress.done("not exposed by the engine")
    return {"available": False, "reason": ctx.engine.expert_load_unavailable(ctx.device)
            or ctx.engine.expert_load_absent}


def expert_load_launch(ctx: Attempt, opts: RunOptions) -> tuple[dict[str, Any], KeyboardInterrupt | None]:
    """The expert load counted in a launch of its own with the recorder on, after the measured launch
    stopped: launch, a short warm-up, :func:`expert_load`, stop. Nothing here fails the config: a failure
    (a launch the recorder breaks, a device-side assert) is this field's, classified from this launch's own
    log. Returns the field and, after Ctrl-C, the interrupt for the caller to raise once it has committed the
    measured records."""
    launch = Launch(EngineInfo(), {}, ctx.adir / "server-expert-load.log")  # kept apart from the record's engine
    out: dict[str, Any] = {"available": True, "recorder_in_measured_launch": False}
    interrupt = None
    try:
        start_engine(ctx, opts, launch, what=" for the expert recorder")
        session = launch.session = Session(ctx.engine, launch.base_url, ctx.preset, opts, launch.server)
        session.served_model = ctx.engine.model_name(session.http, session.base_url)
        ctx.step("warm-up of the recorder launch")
        session.warm_up()
        ctx.progress.done("ok")
        out.update(expert_load(ctx, session, own_launch=True))
    except (KeyboardInterrupt, Exception) as e:
        launch.stop()
        code = launch.exit_code(e)
        c = classify(exception=type(e).__name__, message=str(e), exit_code=code, log_text=launch.log_text(),
                     phase="expert_load")
        out.update(error=f"{c.error_type}: {c.error_message}", evidence=c.evidence, exception=type(e).__name__,
                   exit_code=code)
        ctx.progress.done(f"failed: {out['error']}")
        interrupt = e if isinstance(e, KeyboardInterrupt) else None
    finally:
        launch.close()
    info = launch.info
    out["launch"] = {"command": info.command, "env": info.env,
                     "log_path": ctx.rel(launch.log_path) if launch.log_path.exists() else None,
                     "launch_s": launch.times.get("launch_s"), "stop_s": launch.times.get("stop_s"),
                     "stop": info.stop.to_dict() if info.stop is not None else None}
    return out, interrupt

