"""Engine-independent parts of trace capture: waiting until profiler files are
complete (not half-written), telling their rank, and filing them under names that
say model, config, stage and rank."""

from __future__ import annotations

import gzip
import os
import re
import shutil
import time
import zlib
from pathlib import Path

from ..errors import ProfileError
from ..results.store import safe_name

__all__ = ["snapshot", "wait_for_files", "is_complete", "rank_of", "file_traces"]

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


def _is_trace(p: Path) -> bool:
    return p.is_file() and p.name.endswith(_TRACE_SUFFIXES) and not p.name.startswith(".")


def wait_for_files(d: Path, before: set[Path], *, expect: int, timeout_s: float,
                   match: re.Pattern[str] | None = None, settle_s: float = 1.0) -> list[Path]:
    """Wait until at least ``expect`` new trace files (optionally matching) are in ``d``,
    each complete and of stable size. Raises ProfileError at the timeout."""
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
        if time.monotonic() > deadline:
            raise ProfileError(f"profiler wrote {len(stable)} complete of {expect} expected trace files "
                               f"in {d} within {timeout_s:.0f} s (found: {[p.name for p in new]})")
        time.sleep(settle_s)


_RANK_PATTERNS = (
    re.compile(r"-TP-(\d+)"),              # SGLang: {id}-TP-{tp}[-DP-..][-EP-..]-EXTEND.trace.json.gz
    re.compile(r"(?:^|_)rank(\d+)\b"),     # vLLM: dp0_pp0_tp0_dcp0_ep0_rank0.<ns>.pt.trace.json.gz
    re.compile(r"(?:^|_)tp(\d+)(?:_|\b)"),
)


def rank_of(path: Path) -> int | None:
    for pat in _RANK_PATTERNS:
        m = pat.search(path.name)
        if m:
            return int(m.group(1))
    return None


def file_traces(files: list[Path], dest: Path, *, model: str, config: str, stage: str) -> list[Path]:
    """Move profiler files into ``dest`` as ``<model>__<config>__<stage>__rank<r>.trace.json[.gz]``.
    Files without a rank (a frontend trace) are kept with their own name after a stage prefix.
    Returns the new paths, rank 0 first, then by rank, then the rest."""
    dest.mkdir(parents=True, exist_ok=True)
    ranked: list[tuple[int, Path]] = []
    for f in files:
        r = rank_of(f)
        ext = ".trace.json.gz" if f.name.endswith(".gz") else ".trace.json"
        if r is None or "async_llm" in f.name:
            target = dest / f"{safe_name(model)}__{safe_name(config)}__{stage}__{safe_name(f.name, 120)}"
            r = 1 << 30
        else:
            target = dest / f"{safe_name(model)}__{safe_name(config)}__{stage}__rank{r}{ext}"
        shutil.move(str(f), target)
        ranked.append((r, target))
    return [p for _, p in sorted(ranked)]
