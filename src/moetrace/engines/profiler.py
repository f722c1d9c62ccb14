"""What an engine's profiler leaves behind, said once for every engine: the stages of a step,
what a profiler file's name says (``TraceName``), and waiting until the files are complete (not
half-written).

Adapters (``engines/<engine>.py``) build these in ``parse_trace_name``, ``step_stage`` and
``capture_profile``; ``traces/`` reads them. This module imports nothing of the engines or the
traces, so that both can import it.
"""

from __future__ import annotations

import gzip
import os
import re
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ..errors import ProfileError

__all__ = ["DECODE", "EXTEND", "MIXED", "STAGE_WORDS", "TraceName", "snapshot", "is_complete", "complete_traces",
           "wait_for_files"]

EXTEND = "EXTEND"  # prefill
DECODE = "DECODE"
MIXED = "MIXED"  # a vLLM step holding both prefill and decode tokens
STAGE_WORDS = {"extend": "EXTEND", "prefill": "EXTEND", "decode": "DECODE"}  # as file names write them


@dataclass(frozen=True)
class TraceName:
    engine: str | None  # the engine whose file-name form the name has (an adapter's name)
    rank: int | None
    stage: str | None  # EXTEND or DECODE for SGLang's per-stage files
    parallel: dict[str, int] = field(default_factory=dict)  # tp, dp, pp, ep, dcp ... as written in the name
    merged: bool = False


_TRACE_SUFFIXES = (".trace.json.gz", ".trace.json", ".pt.trace.json.gz", ".pt.trace.json")


def snapshot(d: Path) -> set[Path]:
    return set(d.rglob("*")) if d.is_dir() else set()


def is_complete(path: Path) -> bool:
    """A .gz file whose deflate stream ends properly, or a .json file that ends with its
    closing bracket. Streaming check: memory stays small for traces of any size."""
    try:
        if path.suffix == ".gz":
            d = zlib.decompressobj(16 + zlib.MAX_WBITS)
            with open(path, "rb") as f:
                while chunk := f.read(1 << 20):
                    d.decompress(chunk, 0)
                    while d.unconsumed_tail:
                        d.decompress(d.unconsumed_tail, 0)
            return d.eof
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 64))
            return f.read().rstrip().endswith((b"}", b"]"))
    except (OSError, zlib.error, EOFError, gzip.BadGzipFile):
        return False


def complete_traces(d: Path) -> list[Path]:
    """Trace files in ``d`` (recursively) that are complete now: what a dead engine left behind."""
    return sorted(p for p in snapshot(d) if _is_trace(p) and p.stat().st_size > 0 and is_complete(p))


def _is_trace(p: Path) -> bool:
    return p.is_file() and p.name.endswith(_TRACE_SUFFIXES) and not p.name.startswith(".")


def wait_for_files(d: Path, before: set[Path], *, expect: int, timeout_s: float,
                   match: re.Pattern[str] | None = None, settle_s: float = 1.0,
                   alive: Callable[[], bool] | None = None) -> list[Path]:
    """Wait until at least ``expect`` new trace files (optionally matching) are in ``d``,
    each complete and of stable size. Raises ProfileError at the timeout, or as soon as
    ``alive()`` says the engine died (a dead engine writes no more files)."""
    deadline = time.monotonic() + timeout_s
    sizes: dict[Path, int] = {}
    while True:
        new = sorted(p for p in snapshot(d) - before if _is_trace(p) and (match is None or match.search(p.name)))
        stable = []
        for p in new:
            try:
                size = p.stat().st_size
            except OSError:
                continue
            if size > 0 and sizes.get(p) == size and is_complete(p):
                stable.append(p)
            sizes[p] = size
        if len(new) >= expect and len(stable) == len(new):
            return new
        if alive is not None and not alive():
            raise ProfileError(f"the engine died while moetrace waited for trace files: {len(stable)} complete "
                               f"of {expect} expected in {d} (found: {[p.name for p in new]})")
        if time.monotonic() > deadline:
            raise ProfileError(f"profiler wrote {len(stable)} complete of {expect} expected trace files "
                               f"in {d} within {timeout_s:.0f} s (found: {[p.name for p in new]})")
        time.sleep(settle_s)
