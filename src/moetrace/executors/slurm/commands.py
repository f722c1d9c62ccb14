"""The node-side command line of a Slurm job (``moetrace run MODEL -c CONFIG --results DIR
<options>``, its options from ``options.node_flags``), how moetrace is started on the node, and
the parsing of the Slurm options (``--time``, ``--slurm-arg``)."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import Any, Iterable

from ...matrix import Config


def parse_time(text: str | int | float) -> int:
    """Slurm's time formats (``MM``, ``MM:SS``, ``HH:MM:SS``, ``D-HH``, ``D-HH:MM``,
    ``D-HH:MM:SS``) as whole minutes, rounded up (submitit takes minutes)."""
    if isinstance(text, (int, float)):
        if text <= 0:
            raise ValueError(f"--time must be positive, got {text}")
        return int(-(-text // 1))
    s = str(text).strip()
    m = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", s)
    if not m:
        raise ValueError(f"--time {text!r}: expected minutes, MM:SS, HH:MM:SS or D-HH[:MM[:SS]]")
    days, a, b, c = (int(x) if x is not None else None for x in m.groups())
    if days is not None:  # D-HH[:MM[:SS]]
        secs = days * 86400 + a * 3600 + (b or 0) * 60 + (c or 0)
    elif c is not None:  # HH:MM:SS
        secs = a * 3600 + b * 60 + c
    elif b is not None:  # MM:SS
        secs = a * 60 + b
    else:  # MM
        secs = a * 60
    if secs <= 0:
        raise ValueError(f"--time {text!r} must be positive")
    return -(-secs // 60)


def parse_slurm_args(items: Iterable[str]) -> dict[str, Any]:
    """``--slurm-arg`` values: ``KEY=VALUE`` or a bare ``KEY`` (a flag), with or without leading
    dashes: ``account=abc``, ``--qos=high``, ``exclusive``, ``constraint=h200``."""
    out: dict[str, Any] = {}
    for it in items:
        k, sep, v = str(it).strip().partition("=")
        k = k.strip().lstrip("-").replace("_", "-")
        if not k or not re.fullmatch(r"[A-Za-z][A-Za-z0-9-]*", k):
            raise ValueError(f"--slurm-arg {it!r}: expected KEY=VALUE or KEY (an sbatch option)")
        out[k.replace("-", "_")] = v if sep else True
    return out


def _package_root() -> Path:
    """The folder this ``moetrace`` package is imported from (``src/`` of a checkout)."""
    return Path(__file__).resolve().parents[3]


def moetrace_exe() -> list[str]:
    """How this installation's ``moetrace`` is started: the console script next to this Python,
    else this Python with this package's folder on its path (the per-model scripts run from a
    checkout without installing)."""
    exe = Path(sys.executable).with_name("moetrace")
    if exe.exists():
        return [str(exe)]
    return [sys.executable, "-c", f"import sys; sys.path.insert(0, {str(_package_root())!r}); "
            "from moetrace.cli import main; sys.exit(main())"]


def model_arg(preset: Any) -> str:
    """The MODEL argument that names this preset on the node: a built-in by name, a model file
    or a checkpoint directory (tiny variants) by absolute path."""
    src = getattr(preset, "source", None)
    if src and src != "builtin" and Path(src).exists():
        return str(Path(src).resolve())
    return preset.name


def run_command(job: Any, opts: Any, results_dir: str | os.PathLike[str], *, config: Config | None = None,
                exe: list[str] | None = None) -> list[str]:
    """The ``moetrace run`` command line that runs ``job`` (its ``config``, or the one given: a
    fallback) with ``opts`` on a node: explicit flags for every option that differs from the
    CLI's defaults, so the node runs what the user asked for whatever its environment says."""
    from ...options import node_flags
    config = config or job.config.without_fallback()
    return [*(exe or moetrace_exe()), "run", model_arg(job.preset), "-c", config.name,
            "--results", str(Path(results_dir).resolve()), *node_flags(opts)]
