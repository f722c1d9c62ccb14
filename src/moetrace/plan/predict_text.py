"""The text view of ``moetrace predict`` (one block a config) and its JSON form."""

from __future__ import annotations

import json
from typing import Any, Sequence

from .predict import Prediction

__all__ = ["format_predictions", "predictions_json"]


def _band(b: tuple[float, float] | None, unit: str, nd: int = 2) -> str:
    return f"band {b[0]:.{nd}f}-{b[1]:.{nd}f} {unit}" if b else ""


def _block(p: Prediction) -> list[str]:
    head = (f"{p.model} {p.config} on {p.gpu_label} x{p.tp}, {p.engine}, batch 1, {p.input_len} in / "
            f"{p.output_len} out: {p.verdict.replace('_', ' ')}")
    out = [head]
    if p.itl_ms is None:
        out.append(f"  {p.reason}")
        out += [f"  note: {n}" for n in p.notes]
        return out
    out.append(f"  ITL p50  {p.itl_ms:7.2f} ms   {_band(p.itl_band_ms, 'ms')}   (roofline floor {p.floor_itl_ms:.2f} ms)")
    out.append(f"  TTFT     {p.ttft_ms:7.1f} ms   {_band(p.ttft_band_ms, 'ms', 1)}")
    out.append(f"  latency  {p.latency_s:7.2f} s    {_band(p.latency_band_s, 's')}   = TTFT + {p.output_len - 1} x ITL")
    out.append("  decode step, one rank:")
    out += [f"    {q.ms:8.3f} ms  {q.name} [{q.kind}]: {q.detail}" for q in p.decode_parts]
    out.append("  prefill, one rank:")
    out += [f"    {q.ms:8.3f} ms  {q.name} [{q.kind}]: {q.detail}" for q in p.prefill_parts]
    out.append("  rules:")
    out += [f"    - {r}" for r in p.rules]
    out.append(f"  evidence ({p.evidence.get('how')}): " + "; ".join(p.evidence.get("sources", [])[:4])
               + (f" (+{len(p.evidence['sources']) - 4} more)" if len(p.evidence.get("sources", [])) > 4 else ""))
    out.append(f"  host floor: {p.evidence.get('host_floor')}; TTFT host part: {p.evidence.get('ttft_host')}")
    out += [f"  note: {n}" for n in p.notes]
    return out


def format_predictions(preds: Sequence[Prediction]) -> str:
    lines: list[str] = []
    for p in preds:
        lines += _block(p) + [""]
    lines.append("measured: from a record of this rank; scaled: from records of the model by the stated rules; "
                 "modelled: collectives (docs/predict.md). The band re-runs the model with every assumption at "
                 "its optimistic and pessimistic end.")
    return "\n".join(lines)


def predictions_json(preds: Sequence[Prediction]) -> str:
    """One object for one config, else {"predictions": [...]}."""
    items: list[dict[str, Any]] = [p.to_dict() for p in preds]
    return json.dumps(items[0] if len(items) == 1 else {"predictions": items}, indent=1)
