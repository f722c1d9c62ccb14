"""Parameter counts from an HF config: total, active per token, and per part.

"Active" follows the model cards' convention (DeepSeek's 37B, Qwen's 22B): every weight a
token passes through, embeddings and output head included, routed experts counted top-k of n.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .arch import PARTS, Arch, build_arch, inventory

__all__ = ["ParamCount", "count_params"]


@dataclass(frozen=True)
class ParamCount:
    total: int
    active: int
    parts: dict[str, int]           # total per part (PARTS, plus "mtp" when included)
    active_parts: dict[str, int]
    mtp: int = 0                    # MTP parameters (counted in total only when include_mtp)
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def active_without_embeddings(self) -> int:
        """Active parameters excluding the input embedding (a lookup, no matmul)."""
        return self.active - self.active_parts.get("embedding", 0)

    def to_dict(self) -> dict[str, Any]:
        return {"total": self.total, "active": self.active, "parts": dict(self.parts),
                "active_parts": dict(self.active_parts), "mtp": self.mtp, "notes": list(self.notes)}


def count_params(hf_config: dict[str, Any] | Arch, *, include_mtp: bool = False) -> ParamCount:
    arch = hf_config if isinstance(hf_config, Arch) else build_arch(hf_config)
    tensors = inventory(arch, include_mtp=True)
    parts = {p: 0 for p in PARTS}
    active = {p: 0 for p in PARTS}
    mtp = 0
    frac = arch.topk / arch.n_experts if arch.n_experts else 0.0
    for t in tensors:
        if t.mtp:
            mtp += t.params
            continue
        parts[t.part] += t.params
        active[t.part] += round(t.params * frac) if t.routed else t.params
    total = sum(parts.values())
    if include_mtp:
        parts["mtp"] = mtp
        total += mtp
    notes = list(arch.notes)
    if arch.mtp_layers and not include_mtp:
        notes.append(f"{arch.mtp_layers} MTP layer(s) ({mtp / 1e9:.2f}B) not counted; engines load them only "
                     "for speculative decoding")
    return ParamCount(total=total, active=sum(active.values()), parts=parts, active_parts=active, mtp=mtp,
                      notes=tuple(notes))
