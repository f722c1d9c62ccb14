"""The profile stage: capture extend and decode traces, file them, summarise them (traces/summary.py);
returns the record's ``profile``. A failure here is recorded, and the numbers kept.

A stage whose trace holds no step of that stage is retried once with longer windows, then recorded
as a failure naming the file. An engine that dies while profiling is a failure of that stage with
the decisive log line; it is stopped (and how, recorded), and every complete trace it wrote is still
filed and analysed."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

import httpx

from ..engines.base import ProfileRequest
from ..engines.process import ServerProcess, tail
from ..errors import MoetraceError
from ..results.classify import classify
from ..traces.capture import file_traces, left_behind
from ..traces.summary import analyse, breakdowns, empty_files
from .context import Attempt
from .launch import Launch

STAGES = ("extend", "decode")


def profile(ctx: Attempt, launch: Launch) -> dict[str, Any]:
    """Capture, retry the stages whose traces hold no step, summarise."""
    p = _Capture(ctx, launch)
    ctx.step(f"profiling {ctx.opts.profile_steps} steps per stage")
    alive_after = p.capture(STAGES, longer=False)
    summaries, analysis_errors = analyse(p.stages)
    empty = empty_files(p.stages, summaries)
    if empty and alive_after:
        retry = tuple(st for st in STAGES if st in empty)
        ctx.progress.done(f"no {'/'.join(retry)} step in {', '.join(f.name for st in retry for f in empty[st])}")
        ctx.step(f"profiling {'/'.join(retry)} again with longer windows")
        p.reject(retry, empty)
        summaries = {f: s for f, s in summaries.items() if f in p.stages["extend"] + p.stages["decode"]}
        p.capture(retry, longer=True)
        more, more_errors = analyse({st: p.stages[st] for st in retry})
        summaries.update(more)
        analysis_errors += more_errors
        empty = empty_files(p.stages, summaries)
    p.errors += [f"{st}: " + ", ".join(f"{ctx.rel(f)} holds no {st.upper()} step" for f in files)
                 + (" (also after a retry with longer windows)" if alive_after else "")
                 for st, files in empty.items()]
    return p.result(summaries, empty, analysis_errors)


class _Capture:
    """The traces filed so far per stage, the errors met, and the record's ``profile`` being built."""

    def __init__(self, ctx: Attempt, launch: Launch):
        self.ctx, self.launch = ctx, launch
        self.raw = ctx.adir / "profiler_raw"
        self.raw.mkdir(parents=True, exist_ok=True)
        self.traces_dir = ctx.adir / "traces"
        self.watched = _engine_pids(launch.server)
        self.out: dict[str, Any] = {"enabled": True, "steps": ctx.opts.profile_steps}
        self.errors: list[str] = []
        self.stages: dict[str, list[Path]] = {st: [] for st in STAGES}

    def request(self, stages: tuple[str, ...], longer: bool) -> ProfileRequest:
        opts, session = self.ctx.opts, self.launch.session
        return ProfileRequest(
            out_dir=self.raw, steps=opts.profile_steps, with_stack=opts.profile_with_stack,
            run=lambda seed, max_tokens, on_token: session.request(batch=1, seed=opts.seed + 31 * seed,
                                                                  max_tokens=max_tokens, on_token=on_token),
            run_async=lambda seed, max_tokens, on_token: session.run_async(opts.seed + 31 * seed, max_tokens,
                                                                           on_token),
            expected_ranks=self.ctx.config.tp, timeout_s=opts.profile_timeout_s, stages=stages, longer=longer,
            alive=lambda: _engine_death(self.launch.server, self.watched, wait_s=0.0) is None)

    def capture(self, wanted: tuple[str, ...], longer: bool) -> bool:
        """Run the engine's capture and file what it wrote; False when the engine died."""
        req = self.request(wanted, longer)
        session, server = self.launch.session, self.launch.server
        try:
            files = self.ctx.engine.capture_profile(session.http, session.base_url, req)
        except (MoetraceError, httpx.HTTPError) as e:
            death = _engine_death(server, self.watched, wait_s=5.0)
            if death is None:
                self.errors.append(f"{type(e).__name__}: {e}")
                files = dict(req.done)
            else:
                died = self.out["engine_died"] = _engine_died(self.ctx, self.launch, death, e)
                self.errors.append(f"{died['error_type']}: {died['message']}")
                self.file(left_behind(self.raw, req, wanted), wanted)
                return False
        self.file(files, wanted)
        return True

    def file(self, files: dict[str, list[Path]], wanted: tuple[str, ...]) -> None:
        ctx = self.ctx
        for stage in STAGES:
            if stage in wanted and files.get(stage):
                self.stages[stage] += file_traces(files[stage], self.traces_dir, model=ctx.preset.name,
                                                  config=ctx.config.name, stage=stage, engine=ctx.engine.name)

    def reject(self, retry: tuple[str, ...], empty: dict[str, list[Path]]) -> None:
        """Move every file of the retried stages to ``traces/rejected`` (the retry writes them all again)."""
        rejected_dir = self.traces_dir / "rejected"
        rejected_dir.mkdir(parents=True, exist_ok=True)
        self.out["rejected"] = []
        for st in retry:
            for f in self.stages[st]:
                dest = rejected_dir / f.name
                shutil.move(str(f), dest)
                self.out["rejected"].append({"stage": st, "trace": self.ctx.rel(dest),
                                             "reason": "no step of its stage" if f in empty[st] else "stage retried"})
            self.stages[st] = []

    def result(self, summaries: dict[Path, Any], empty: dict[str, list[Path]],
               analysis_errors: list[str]) -> dict[str, Any]:
        ctx, out, stages = self.ctx, self.out, self.stages
        for stage in STAGES:
            files = stages[stage]
            # The stage's link is its first rank's trace, unless that trace holds no step of the stage.
            out[stage] = ctx.rel(files[0]) if files and files[0] not in empty.get(stage, []) else None
            out[f"{stage}_all"] = [ctx.rel(f) for f in files]
        out["other_files"] = [ctx.rel(f) for f in self.raw.rglob("*") if f.is_file()]
        out.update(breakdowns(stages, summaries, empty, ctx.rel))
        out["analysis_error"] = "; ".join(analysis_errors) or None
        if self.errors:
            out["error"] = "; ".join(self.errors)
            ctx.progress.done(f"failed: {out['error']}")
        else:
            ctx.progress.done(f"{len(stages['extend'])} extend and {len(stages['decode'])} decode trace files")
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


def _engine_died(ctx: Attempt, launch: Launch, death: dict[str, Any], exc: BaseException) -> dict[str, Any]:
    """Classify an engine death during profiling from its log, stop what is left of its process
    tree, and say so. The benchmark numbers are not touched."""
    server = launch.server
    assert server is not None
    code = death["exit_code"]
    if death["lost_pids"] and code is None:
        time.sleep(1.0)  # the engine's own shutdown (SGLang kills its tree when a scheduler dies)
        code = server.exit_code()
    what = f"engine exited with code {code}" if code is not None else \
        f"engine process(es) {death['lost_pids']} died"
    c = classify(exception="ServerDied", message=f"{what} during profiling ({type(exc).__name__}: {exc})",
                 exit_code=code, log_text=tail(server.log_path), phase="profile")
    launch.stop()
    rep = server.stop_report.to_dict() if server.stop_report else None
    return {"error_type": c.error_type, "message": c.error_message, "evidence": c.evidence, "exit_code": code,
            "lost_pids": death["lost_pids"], "exception": type(exc).__name__, "client_error": str(exc),
            "stop": rep, "log_path": ctx.rel(server.log_path) if server.log_path.exists() else None}
