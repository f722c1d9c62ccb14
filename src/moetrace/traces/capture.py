"""Engine-independent parts of trace capture: telling a profiler file's rank, and filing the
files under names that say model, config, stage and rank. Waiting until the files are complete
is ``engines/profiler.py``'s (the adapters wait; its helpers are named here too)."""

from __future__ import annotations

import shutil
from pathlib import Path

from ..engines.base import ProfileRequest
from ..engines.profiler import complete_traces, is_complete, snapshot, wait_for_files
from ..results.store import safe_name
from .names import FILED_PART, parse_trace_name

__all__ = ["snapshot", "wait_for_files", "is_complete", "rank_of", "rank_key", "complete_traces", "file_traces", "filed_name",
           "left_behind"]

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


def left_behind(raw: Path, req: ProfileRequest, wanted: tuple[str, ...]) -> dict[str, list[Path]]:
    """The complete traces a dead engine wrote: those of finished stages, and any other complete
    file in the raw folder (its stage from its name, else the stage that was in progress)."""
    files = {st: list(req.done.get(st, [])) for st in wanted}
    known = {p for fs in files.values() for p in fs}
    in_progress = next((st for st in wanted if st not in req.done), wanted[-1])
    for p in complete_traces(raw):
        if p in known:
            continue
        stage = (parse_trace_name(p.name).stage or "").lower() or in_progress
        stage = "extend" if stage == "extend" else ("decode" if stage == "decode" else in_progress)
        if stage in files:
            files[stage].append(p)
    return files
