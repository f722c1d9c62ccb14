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
from typing import Callable

from ..errors import ProfileError
from ..results.store import safe_name
from .names import FILED_PART, parse_trace_name

__all__ = ["snapshot", "wait_for_files", "is_complete", "rank_of", "rank_key", "complete_traces", "file_traces", "filed_name"]

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


def rank_of(path: Path) -> int | None:
    """The worker rank a profiler file's name says (SGLang: its TP rank; vLLM: its global rank)."""
    return parse_trace_name(path.name).rank


_PART_ORDER = ("pp", "dp", "tp", "dcp", "ep")


def rank_key(path: Path) -> tuple[str | None, int, str] | None:
    """(engine, rank, parts) of a per-rank profiler file, or None (a frontend trace, an unknown name).
    ``parts`` is every parallel index the name carries (``tp1-dp0-ep1``): SGLang adds ``-DP-d``,
    ``-PP-p`` and ``-EP-e`` to its names when those sizes are above 1, so two files of one TP rank
    differ only there and must never be filed under one name."""
    if "async_llm" in path.name:
        return None
    t = parse_trace_name(path.name)
    if t.rank is None:
        return None
    parts = "-".join(f"{k}{t.parallel[k]}" for k in sorted(t.parallel, key=lambda k: (
        _PART_ORDER.index(k) if k in _PART_ORDER else len(_PART_ORDER), k)))
    return t.engine, t.rank, parts


def _order(key: tuple[str | None, int, str]) -> tuple:
    """Rank 0 first: by pipeline stage, data-parallel rank, then rank."""
    parts = dict((k, int(v)) for k, v in FILED_PART.findall(key[2]))
    return (parts.get("pp", 0), parts.get("dp", 0), key[1], key[2])


def filed_name(model: str, config: str, engine: str | None, stage: str, rank: int, parts: str, ext: str) -> str:
    """``<model>__<config>__<engine>__<stage>__rank<r>[__<parts>]<ext>``: engine, stage, rank and every
    parallel index survive filing, so ``moetrace analyze`` tells them from the name alone."""
    tail = f"__{parts}" if parts else ""
    return (f"{safe_name(model)}__{safe_name(config)}__{safe_name(engine or 'unknown', 20).lower()}__{stage}"
            f"__rank{rank}{tail}{ext}")


def _free(target: Path) -> Path:
    n = 1
    out = target
    while out.exists():
        name = target.name
        cut = name.index(".trace.json")
        out = target.with_name(f"{name[:cut]}__{n}{name[cut:]}")
        n += 1
    return out


def file_traces(files: list[Path], dest: Path, *, model: str, config: str, stage: str,
                engine: str | None = None) -> list[Path]:
    """Move profiler files into ``dest`` as ``<model>__<config>__<engine>__<stage>__rank<r>__<parts>.trace.json[.gz]``.
    Files without a rank (a frontend trace) are kept with their own name after a stage prefix.
    Returns the new paths, rank 0 first, then by rank, then the rest. Never overwrites a file."""
    dest.mkdir(parents=True, exist_ok=True)
    ranked: list[tuple[tuple, Path]] = []
    for f in files:
        key = rank_key(f)
        ext = ".trace.json.gz" if f.name.endswith(".gz") else ".trace.json"
        if key is None:
            target = dest / (f"{safe_name(model)}__{safe_name(config)}__{safe_name(engine or 'unknown', 20).lower()}"
                             f"__{stage}__{safe_name(f.name, 120)}")
            order: tuple = (1 << 30,)
        else:
            name_engine, r, parts = key
            target = dest / filed_name(model, config, engine or name_engine, stage, r, parts, ext)
            order = _order(key)
        target = _free(target)
        shutil.move(str(f), target)
        ranked.append((order, target))
    return [p for _, p in sorted(ranked, key=lambda x: (x[0], str(x[1])))]
