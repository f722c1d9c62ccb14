"""What every stage of an attempt reads (:class:`Attempt`), and the error a stage raises
(:class:`StageError`: the failure and the phase it happened in)."""

from __future__ import annotations

import datetime as _dt
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from .. import __version__
from ..engines.base import Engine
from ..matrix import Config
from ..options import RunOptions
from ..presets import Preset
from ..results.record import Record, now_iso, result_key, workload_suffix
from ..results.store import ResultsStore, safe_name
from .progress import Progress, host_facts

if TYPE_CHECKING:
    from .launch import Launch


class StageError(Exception):
    """A stage failed: ``cause`` is what was raised, ``phase`` the record's ``error.phase``."""

    def __init__(self, phase: str, cause: BaseException):
        super().__init__(f"{phase}: {cause}")
        self.phase, self.cause = phase, cause


@contextmanager
def stage(phase: str) -> Iterator[None]:
    """Tag whatever the block raises with ``phase`` (Ctrl-C included)."""
    try:
        yield
    except StageError:
        raise
    except (KeyboardInterrupt, Exception) as e:
        raise StageError(phase, e) from e


@dataclass
class Attempt:
    """One config's attempt: its inputs, where it writes, and the record fields every record of it shares
    (``base``; its ``engine`` part is the launches', its ``phases`` the stages' timings)."""

    preset: Preset
    config: Config
    opts: RunOptions
    store: ResultsStore
    engine: Engine
    progress: Progress
    plan: dict[str, Any] | None = None
    attempt_id: str = ""
    adir: Path = Path()
    phases: dict[str, Any] = field(default_factory=dict)  # seconds per stage; ``launches``: per launch
    base: Record = field(default_factory=Record)
    live: Launch | None = None  # the launch in use: a failure is classified from its exit code and log
    launches: int | None = None  # the launches measured (--launches auto: decided as they go)
    launches_stopped: str | None = None  # --launches auto: why no more (measure/metrics.py launches_verdict)

    @classmethod
    def start(cls, preset: Preset, config: Config, opts: RunOptions, store: ResultsStore, engine: Engine,
              progress: Progress, *, role: str, plan: dict[str, Any] | None) -> Attempt:
        """A new attempt: its id, its directory, its base record."""
        stamp = _dt.datetime.now().strftime("%Y%m%dT%H%M%S")
        attempt_id = f"{stamp}-{safe_name(preset.name, 40)}-{safe_name(config.name, 60)}-{uuid.uuid4().hex[:6]}"
        ctx = cls(preset, config, opts, store, engine, progress, plan, attempt_id, store.attempt_dir(attempt_id))
        ctx.base = Record.new(
            attempt_id=attempt_id, model=preset.name, config=config.name, role=role, config_detail=config.to_dict(),
            moetrace_version=__version__, started_at=now_iso(), host=host_facts(), options=opts.to_dict(),
            attempt_dir=ctx.rel(ctx.adir), phases=ctx.phases,
            engine={"name": engine.name, "external": bool(opts.base_url), "launched_by_moetrace": not opts.base_url,
                    "model_path": ctx.model_path, "device": ctx.device})
        if preset.facts.get("variant"):  # dummy weights, a cut depth, one rank (variants.py): what it stands for
            ctx.base.model_detail = preset.facts["variant"]
        if plan is not None:
            ctx.base.plan = plan
        return ctx

    @property
    def model_path(self) -> str:
        return self.opts.model_path or self.preset.hf_id

    @property
    def device(self) -> str:
        return self.opts.resolved_device()

    def rel(self, p: Any) -> str | None:
        """A path as the record names it: relative to the results directory."""
        return str(Path(p).resolve().relative_to(self.store.root.resolve())) if p else None

    def key(self, batch: int) -> str:
        """The result key of one batch size."""
        return result_key(self.preset.name, self.config.name,
                          workload_suffix(batch, self.opts.input_len, self.opts.output_len))

    def step(self, text: str) -> None:
        """A progress line about this config."""
        self.progress.step(f"{self.preset.name} {self.config.name}: {text}")

    @contextmanager
    def timed(self, name: str, add: bool = False, into: dict[str, float] | None = None) -> Iterator[None]:
        """The block's seconds into ``phases[name]`` when it ends without an error (``add``: added to what is there),
        and into ``into[name]`` (one launch's entry of ``phases.launches``) where given."""
        t = time.monotonic()
        yield
        dt = time.monotonic() - t
        self.phases[name] = (self.phases.get(name, 0.0) if add else 0.0) + dt
        if into is not None:
            into[name] = dt
