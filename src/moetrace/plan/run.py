"""The planner's verdict for a run: the plan of one config under the run's options (the engine,
the workload, the memory fraction the engine is really given). The sweep plans every job with
it, and the local executor a fallback before it runs."""

from __future__ import annotations

from typing import Any

__all__ = ["plan_for", "engine_mem_fraction"]


def plan_for(preset: Any, config: Any, opts: Any) -> dict[str, Any] | None:
    """The planner's verdict and floors for this config, when a GPU type is known.
    Tiny checkpoints on the CPU engine have no GPU to plan for."""
    gpu = opts.gpu
    if gpu is None:
        if opts.resolved_device() != "cuda":
            return None
        from .hardware import detect_gpu
        gpu = detect_gpu()
        if gpu is None:
            return None
    from .planner import plan_config
    p = plan_config(preset, config, gpu=gpu, batch=opts.batch_sizes[0], input_len=opts.input_len,
                    output_len=opts.output_len, mem_fraction=engine_mem_fraction(preset, opts), engine=opts.engine)
    return p.to_dict()


def engine_mem_fraction(preset: Any, opts: Any) -> float | None:
    """The memory fraction the engine is given, whichever flag carried it: the engine's own flag
    in the preset's or the user's engine arguments (they come last in the command, so they win),
    else ``--mem-fraction``; None: the engine's default."""
    from ..engines.registry import get_engine
    engine = get_engine(opts.engine)
    given = engine.given_mem_fraction([*preset.extra_args(opts.engine), *opts.extra_args])
    return given if given is not None else opts.mem_fraction
