"""One config, start to finish, as its list of stages: launch and measure, expert load, profile,
stop, record. Every exit path stops the server and writes a record; nothing here is fatal to a
sweep except Ctrl-C, which is recorded as Interrupted and then re-raised."""

from __future__ import annotations

from typing import Any

from ..engines.registry import get_engine
from ..matrix import Config
from ..options import RunOptions
from ..presets import Preset
from ..results.record import Record
from ..results.store import ResultsStore
from .context import Attempt, StageError, stage
from .expert_load import expert_load, expert_load_launch, no_recorder
from .launch import launch_options
from .measure import measure
from .outcome import failure, predicted_failure, successes
from .profile import profile
from .progress import Progress


def run_config(preset: Preset, config: Config, opts: RunOptions, store: ResultsStore, *,
               progress: Progress | None = None, role: str = "primary",
               plan: dict[str, Any] | None = None) -> list[Record]:
    """Run one config and commit one record per batch size (or one failure record).
    Returns the committed records."""
    ctx = Attempt.start(preset, config, opts, store, get_engine(opts.engine), progress or Progress(),
                        role=role, plan=plan)
    if (skipped := predicted_failure(ctx)) is not None:
        return [store.commit(skipped)]
    measured_opts, recorder_opts = launch_options(ctx.engine, config, opts)
    try:
        runs = measure(ctx, measured_opts)
        nonce = ctx.live.session.nonce if ctx.live and ctx.live.session else None
        if measured_opts.expert_load:  # the recorder is in this launch (an external server, multi-node)
            with stage("expert_load"), ctx.timed("expert_load_s"):
                ctx.base.expert_load = expert_load(ctx, ctx.live.session, own_launch=False)
        prof: dict[str, Any] = {"enabled": opts.profile}
        if opts.profile:
            with stage("profile"), ctx.timed("profile_s"):
                prof = profile(ctx, ctx.live)
    except StageError as e:
        if ctx.live is not None:
            ctx.live.close()
        rec = store.commit(failure(ctx, e))
        if isinstance(e.cause, KeyboardInterrupt):
            raise e.cause from None
        return [rec]
    finally:
        if ctx.live is not None:
            ctx.live.close()
    interrupt = None
    if recorder_opts is not None:
        with ctx.timed("expert_load_s"):
            ctx.base.expert_load, interrupt = expert_load_launch(ctx, recorder_opts)
    elif opts.expert_load and not measured_opts.expert_load:  # no recorder: nothing to launch it for
        ctx.base.expert_load = no_recorder(ctx)
    out = [store.commit(rec) for rec in successes(ctx, runs, prof, nonce)]
    if interrupt is not None:
        raise interrupt
    return out
