"""What a trace's file name and its step annotations say (engines.md, "Profiling").

SGLang writes ``{prefix-}{profile_id}-TP-{tp}[-DP-{dp}][-PP-{pp}][-EP-{ep}][-EXTEND|-DECODE].trace.json.gz``
per rank (``merged-{profile_id}...`` when merged; its profiler V2, ``sglang/srt/utils/profile_utils.py``
in 0.5.23, ends the name in ``-prefill`` / ``-decode`` instead, and adds ``-DP-``/``-PP-``/``-EP-`` only
when that size is above 1); vLLM writes
``dp{d}_pp{p}_tp{t}_dcp{c}_ep{e}_rank{r}.<ns>.pt.trace.json.gz`` per worker.
Steps are annotated ``step[EXTEND bs=N toks=M]`` / ``step[DECODE bs=N]`` (SGLang) and
``execute_context_N(tokens)_generation_M(tokens)`` (vLLM).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

__all__ = ["DECODE", "EXTEND", "MIXED", "TraceName", "parse_trace_name", "step_stage"]

EXTEND = "EXTEND"  # prefill
DECODE = "DECODE"
MIXED = "MIXED"  # a vLLM step holding both prefill and decode tokens

_SGLANG_PART = re.compile(r"-(TP|DP|PP|EP)-(\d+)")
_SGLANG_STAGE = re.compile(r"-(EXTEND|DECODE|prefill|decode)(?=[.-]|$)")
# moetrace's filed names: {model}__{config}__{engine}__{stage}__rank{r}[__{tp1-dp0-pp0-ep1...}].trace.json[.gz]
_FILED = re.compile(r"__(?P<engine>[a-z][a-z0-9_-]*?)__(?P<stage>extend|decode)__rank(?P<rank>\d+)"
                    r"(?:__(?P<parts>[a-z]+\d+(?:-[a-z]+\d+)*))?\.trace\.json(?:\.gz)?$")
FILED_PART = re.compile(r"([a-z]+)(\d+)")
_VLLM = re.compile(r"dp(\d+)_pp(\d+)_tp(\d+)_dcp(\d+)_ep(\d+)_rank(\d+)")
_ANY_RANK = re.compile(r"rank[-_]?(\d+)", re.IGNORECASE)
_STAGE_WORD = re.compile(r"(?:^|[_.-])(extend|prefill|decode)(?=[_.-]|$)", re.IGNORECASE)
_STAGE_WORDS = {"extend": "EXTEND", "prefill": "EXTEND", "decode": "DECODE"}
_SGLANG_STEP = re.compile(r"^step\[(EXTEND|DECODE|MIXED|IDLE)\b")  # SGLang ForwardMode names
_VLLM_STEP = re.compile(r"^execute_context_(\d+)\((\d+)\)_generation_(\d+)\((\d+)\)")


@dataclass(frozen=True)
class TraceName:
    engine: str | None  # "sglang" or "vllm" when the name has that engine's form
    rank: int | None
    stage: str | None  # EXTEND or DECODE for SGLang's per-stage files
    parallel: dict[str, int] = field(default_factory=dict)  # tp, dp, pp, ep, dcp ... as written in the name
    merged: bool = False


def parse_trace_name(file_name: str) -> TraceName:
    """Rank, parallel sizes and stage from a trace's file name (no directory)."""
    m = _FILED.search(file_name)
    if m:
        parts = {k: int(v) for k, v in FILED_PART.findall(m.group("parts") or "")}
        return TraceName(m.group("engine"), int(m.group("rank")), _STAGE_WORDS[m.group("stage")], parts)
    m = _VLLM.search(file_name)
    if m:
        dp, pp, tp, dcp, ep, rank = map(int, m.groups())
        return TraceName("vllm", rank, None, {"dp": dp, "pp": pp, "tp": tp, "dcp": dcp, "ep": ep})
    parts = {k.lower(): int(v) for k, v in _SGLANG_PART.findall(file_name)}
    stage = _SGLANG_STAGE.search(file_name)
    if "tp" in parts or file_name.startswith("merged-"):
        return TraceName("sglang", parts.get("tp"), _STAGE_WORDS[stage.group(1).lower()] if stage else None, parts,
                         merged=file_name.startswith("merged-"))
    m = _ANY_RANK.search(file_name)
    word = _STAGE_WORD.search(file_name)  # e.g. moetrace's own "{model}__{config}__decode__rank0..."
    return TraceName(None, int(m.group(1)) if m else None, _STAGE_WORDS[word.group(1).lower()] if word else None, {})


def step_stage(name: str) -> str | None:
    """EXTEND, DECODE, MIXED or IDLE when ``name`` is an engine step annotation, else None."""
    m = _SGLANG_STEP.match(name)
    if m:
        return m.group(1)
    m = _VLLM_STEP.match(name)
    if m:
        ctx, gen = int(m.group(1)), int(m.group(3))
        if ctx and gen:
            return MIXED
        if not ctx and not gen:
            return "IDLE"  # an empty step (nothing scheduled), as SGLang's IDLE forward mode
        return EXTEND if ctx else DECODE
    return None
