"""Where a sweep's configs run: ``local`` (one after another in this process, the default,
``local.py``) or ``slurm`` (one Slurm job per config, see the ``slurm`` package; multi-node configs in
``multinode.py``). An executor has one method, ``execute`` (``local.Executor``).

The CLI (``cli.py``) defines the executor options and builds the executor with
``make_executor(kw)``; ``None`` means the local executor.
"""

from __future__ import annotations

from typing import Any

__all__ = ["make_executor"]

def make_executor(kw: dict[str, Any]):
    """The executor the options ask for; ``None`` for the local one. Raises ValueError on bad
    values (the CLI turns that into one line and exit code 2)."""
    if kw.get("executor", "local") in (None, "local"):
        for k, default in (("partition", None), ("slurm_args", ()), ("slurm_setup", ())):
            if kw.get(k) not in (None, default, [], ()):
                raise ValueError(f"--{k.replace('_', '-')} needs --executor slurm")
        return None
    if kw.get("base_url"):
        raise ValueError("--base-url measures a server that is already running; it cannot go with --executor slurm")
    from .slurm import SlurmExecutor, parse_slurm_args, parse_time
    if kw.get("gpus_per_node") is not None and kw["gpus_per_node"] < 0:
        raise ValueError(f"--gpus-per-node must be 0 or more, got {kw['gpus_per_node']}")
    import shutil
    if shutil.which("sbatch") is None:
        raise ValueError("--executor slurm: no sbatch on PATH (run the driver on a Slurm login node)")
    try:
        import submitit  # noqa: F401
    except ImportError:
        raise ValueError("--executor slurm needs submitit: pip install 'moetrace[slurm]'") from None
    return SlurmExecutor(partition=kw.get("partition"),
                         gpus_per_node=8 if kw.get("gpus_per_node") is None else int(kw["gpus_per_node"]),
                         time_min=parse_time(kw.get("slurm_time") or "4:00:00"),
                         slurm_args=parse_slurm_args(kw.get("slurm_args") or ()),
                         setup=list(kw.get("slurm_setup") or ()),
                         poll_s=float(kw.get("slurm_poll") or 10.0))
