"""The config matrix: what one engine launch is (TP, EP, MoE backend, quantization),
how it is named, and how the spec's ``CONFIGS`` lists expand into it.

Accepted entry forms (the spec's, plus the SGLang nightly scripts' fallback form)::

    (4, 1, ["auto"])                                   # TP4, EP1, auto backend
    (8, 2, ["auto", "triton_kernel"])                  # TP8, EP2, two backends
    (8, 2, [("fp8", "flashinfer_trtllm", None, "triton")])
          # (quantization, backend, fallback_quantization, fallback_backend):
          # the fallback runs only when the primary attempt fails
    (8, 2, [("auto", "triton", None, None), ("auto", None, None, None)])
          # the SGLang nightly scripts' own tuples: quantization "auto" = none,
          # backend None = SGLang's default ("auto")
    {"tp": 16, "ep": 2, "backends": ["auto"], "nodes": 2}   # a multi-node config

Names follow the spec: ``TP4_auto``, ``TP8_EP2_triton``, ``TP8_EP2_fp8_flashinfer_trtllm``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Iterable

__all__ = ["Config", "ConfigError", "parse_matrix", "parse_config_name", "validate"]


class ConfigError(ValueError):
    """A config entry that cannot run; the message is one line naming the entry."""


@dataclass(frozen=True)
class Config:
    tp: int
    ep: int = 1
    backend: str = "auto"
    quantization: str | None = None
    nodes: int = 1
    fallback: "Config | None" = None

    @property
    def name(self) -> str:
        parts = [f"TP{self.tp}"]
        if self.ep > 1:
            parts.append(f"EP{self.ep}")
        if self.nodes > 1:
            parts.append(f"N{self.nodes}")
        if self.quantization:
            parts.append(self.quantization)
        parts.append(self.backend)
        return "_".join(parts)

    @property
    def gpus(self) -> int:
        return self.tp

    def without_fallback(self) -> "Config":
        return replace(self, fallback=None)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"tp": self.tp, "ep": self.ep, "backend": self.backend,
                             "quantization": self.quantization, "nodes": self.nodes}
        if self.fallback:
            d["fallback"] = self.fallback.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Config":
        fb = d.get("fallback")
        return cls(tp=int(d["tp"]), ep=int(d.get("ep", 1)), backend=str(d.get("backend", "auto")),
                   quantization=d.get("quantization"), nodes=int(d.get("nodes", 1)),
                   fallback=cls.from_dict(fb) if fb else None)


def _pos_int(v: Any, what: str, entry: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise ConfigError(f"config {entry!r}: {what} must be a positive integer, got {v!r}")
    return v


def _quant(q: Any) -> Any:
    """A quantization of a config tuple: "auto" (the nightly scripts' word for none) is none."""
    return None if q in (None, "", "auto") else q


def _backend_items(tp: int, ep: int, nodes: int, items: Any, entry: Any) -> Iterable[Config]:
    if isinstance(items, (str, tuple, dict)):
        items = [items]
    if not isinstance(items, (list, tuple)) or not items:
        raise ConfigError(f"config {entry!r}: backends must be a non-empty list")
    for it in items:
        if isinstance(it, str):
            yield Config(tp, ep, it, None, nodes)
        elif isinstance(it, dict):
            fb = None
            if it.get("fallback_backend") or it.get("fallback_quantization"):
                fb = Config(tp, ep, it.get("fallback_backend") or it.get("backend", "auto"),
                            it.get("fallback_quantization"), nodes)
            yield Config(tp, ep, str(it.get("backend", "auto")), it.get("quantization"), nodes, fb)
        elif isinstance(it, (list, tuple)) and len(it) in (2, 4):
            quant, backend = _quant(it[0]), "auto" if it[1] is None else it[1]
            fb = None
            if len(it) == 4 and (_quant(it[2]) is not None or it[3] is not None):
                fb = Config(tp, ep, it[3] or backend, _quant(it[2]), nodes)
            if not isinstance(backend, str):
                raise ConfigError(f"config {entry!r}: backend {backend!r} is not a name")
            yield Config(tp, ep, backend, quant, nodes, fb)
        else:
            raise ConfigError(
                f"config {entry!r}: backend item {it!r} is neither a name nor "
                "(quantization, backend[, fallback_quantization, fallback_backend])")


def parse_matrix(entries: Iterable[Any]) -> list[Config]:
    """Expand a ``CONFIGS`` list into configs, checking shape and duplicates."""
    out: list[Config] = []
    seen: dict[str, Any] = {}
    for entry in entries:
        if isinstance(entry, Config):
            cfgs: Iterable[Config] = [entry]
        elif isinstance(entry, dict):
            tp = _pos_int(entry.get("tp"), "tp", entry)
            ep = _pos_int(entry.get("ep", 1), "ep", entry)
            nodes = _pos_int(entry.get("nodes", 1), "nodes", entry)
            cfgs = _backend_items(tp, ep, nodes, entry.get("backends", ["auto"]), entry)
        elif isinstance(entry, (list, tuple)) and len(entry) == 3:
            tp = _pos_int(entry[0], "tp", entry)
            ep = _pos_int(entry[1], "ep", entry)
            cfgs = _backend_items(tp, ep, 1, entry[2], entry)
        else:
            raise ConfigError(f"config {entry!r}: expected (tp, ep, [backends])")
        for c in cfgs:
            if c.tp % c.ep:
                raise ConfigError(f"config {c.name}: ep={c.ep} must divide tp={c.tp}")
            if c.tp % c.nodes:
                raise ConfigError(f"config {c.name}: nodes={c.nodes} must divide tp={c.tp}")
            if c.name in seen:
                raise ConfigError(f"config {c.name} appears twice (from {seen[c.name]!r} and {entry!r})")
            seen[c.name] = entry
            out.append(c)
    return out


def parse_config_name(name: str) -> Config:
    """``TP8_EP2_fp8_flashinfer_trtllm`` -> Config. Backend names may contain underscores;
    a quantization is recognised from a known list."""
    parts = name.split("_")
    if not parts or not parts[0].upper().startswith("TP") or not parts[0][2:].isdigit():
        raise ConfigError(f"config name {name!r}: expected TP<n>[_EP<n>][_N<nodes>][_<quant>]_<backend>")
    tp, ep, nodes, i = int(parts[0][2:]), 1, 1, 1
    if i < len(parts) and parts[i].upper().startswith("EP") and parts[i][2:].isdigit():
        ep, i = int(parts[i][2:]), i + 1
    if i < len(parts) and parts[i].upper().startswith("N") and parts[i][1:].isdigit():
        nodes, i = int(parts[i][1:]), i + 1
    quant = None
    for j in range(len(parts) - 1, i, -1):  # longest known quantization, leaving a backend after it
        if "_".join(parts[i:j]) in KNOWN_QUANTIZATIONS:
            quant, i = "_".join(parts[i:j]), j
            break
    backend = "_".join(parts[i:]) or "auto"
    cfg = Config(tp, ep, backend, quant, nodes)
    parse_matrix([cfg])  # shape checks
    if cfg.ep < 1 or cfg.tp % cfg.ep:
        raise ConfigError(f"config {name}: ep={ep} must divide tp={tp}")
    return cfg


# Names recognised as a quantization inside a config name (SGLang's --quantization choices and
# vLLM's common ones); whether the chosen engine accepts one is checked by ``validate``.
KNOWN_QUANTIZATIONS = frozenset((
    "awq", "fp8", "mxfp8", "gptq", "gptq_marlin", "awq_marlin", "bitsandbytes", "gguf", "modelopt", "modelopt_fp8",
    "modelopt_fp4", "nvfp4_online", "modelopt_mixed", "petit_nvfp4", "w8a8_int8", "w8a8_fp8", "moe_wna16",
    "w4afp8", "mxfp4", "auto-round", "auto-round-int8", "compressed-tensors", "modelslim", "mxfp_w4a8", "quark",
    "quark_int4fp8_moe", "quark_mxfp4", "mlx_q4", "mlx_q8", "unquant", "humming", "nvfp4", "fp4", "int4",
    "int8", "bf16", "fbgemm_fp8", "experts_int8", "torchao", "inc", "ptpc_fp8", "fp_quant"))


def validate(configs: Iterable[Config], *, backends: Iterable[str], engine: str,
             quantizations: Iterable[str] | None = None) -> None:
    """Engine-specific checks: every backend and quantization (of fallbacks too) is one the
    engine accepts."""
    valid = list(backends)
    quants = list(quantizations) if quantizations is not None else None
    for c in configs:
        for cc in (c, c.fallback):
            if cc is None:
                continue
            if cc.backend not in valid:
                raise ConfigError(
                    f"config {c.name}: MoE backend {cc.backend!r} is not accepted by {engine}; "
                    f"valid: {', '.join(valid)}")
            if quants is not None and cc.quantization and cc.quantization not in quants:
                raise ConfigError(
                    f"config {c.name}: quantization {cc.quantization!r} is not accepted by {engine}; "
                    f"valid: {', '.join(quants)}")
