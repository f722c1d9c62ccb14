"""What a trace's file name and its step annotations say (engines.md, "Profiling").

moetrace's own filed names are read here; each engine's profiler file names and step
annotations are read by its adapter (``Engine.parse_trace_name`` / ``Engine.step_stage`` in
``moetrace/engines/<engine>.py``), which this module asks in turn, through the engine registry.
The traces sit above the engines: an adapter imports nothing of ``traces/`` (``TraceName`` and
the stage words are ``engines/profiler.py``'s, re-exported here).
"""

from __future__ import annotations

import re

from ..engines.profiler import DECODE, EXTEND, MIXED, STAGE_WORDS, TraceName
from ..engines.registry import engine_classes

__all__ = ["DECODE", "EXTEND", "MIXED", "STAGE_WORDS", "TraceName", "parse_trace_name", "step_stage"]

# moetrace's filed names: {model}__{config}__{engine}__{stage}__rank{r}[__{tp1-dp0-pp0-ep1...}].trace.json[.gz]
_FILED = re.compile(r"__(?P<engine>[a-z][a-z0-9_-]*?)__(?P<stage>extend|decode)__rank(?P<rank>\d+)"
                    r"(?:__(?P<parts>[a-z]+\d+(?:-[a-z]+\d+)*))?\.trace\.json(?:\.gz)?$")
FILED_PART = re.compile(r"([a-z]+)(\d+)")
_ANY_RANK = re.compile(r"rank[-_]?(\d+)", re.IGNORECASE)
_STAGE_WORD = re.compile(r"(?:^|[_.-])(extend|prefill|decode)(?=[_.-]|$)", re.IGNORECASE)


def parse_trace_name(file_name: str) -> TraceName:
    """Rank, parallel sizes and stage from a trace's file name (no directory)."""
    m = _FILED.search(file_name)
    if m:
        parts = {k: int(v) for k, v in FILED_PART.findall(m.group("parts") or "")}
        return TraceName(m.group("engine"), int(m.group("rank")), STAGE_WORDS[m.group("stage")], parts)
    for parse in _engines()[0]:
        name = parse(file_name)
        if name is not None:
            return name
    m = _ANY_RANK.search(file_name)
    word = _STAGE_WORD.search(file_name)  # e.g. moetrace's own "{model}__{config}__decode__rank0..."
    return TraceName(None, int(m.group(1)) if m else None, STAGE_WORDS[word.group(1).lower()] if word else None, {})


def step_stage(name: str) -> str | None:
    """EXTEND, DECODE, MIXED or IDLE when ``name`` is an engine step annotation, else None."""
    for stage_of in _engines()[1]:
        stage = stage_of(name)
        if stage is not None:
            return stage
    return None


_ENGINES: list[tuple[tuple, tuple]] = []


def _engines() -> tuple[tuple, tuple]:
    """Every engine's file-name and step-annotation readers, looked up once."""
    if not _ENGINES:
        classes = list(engine_classes().values())
        _ENGINES.append((tuple(c.parse_trace_name for c in classes), tuple(c.step_stage for c in classes)))
    return _ENGINES[0]
