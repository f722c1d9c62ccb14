"""Model presets: the six models of the spec as data, plus user-supplied models.

A preset says *what* to run (checkpoint, architecture, native precision, default
config matrix, engine extras). It holds no behaviour: the planner reads its
architecture, the engines read its extras, the sweep reads its matrix.

Users add a model without editing code, with a TOML or JSON file of the same
keys as ``data/models.toml`` (``arch`` may point at a config.json, or be left out
when ``hf_id`` is a local checkpoint directory), or by passing a local Hugging
Face checkpoint directory directly.
"""

from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

__all__ = ["Preset", "PresetError", "all_presets", "get_preset", "load_preset_file", "preset_from_checkpoint"]


class PresetError(ValueError):
    """A model name or model file that cannot be used; the message says why."""


@dataclass(frozen=True)
class Preset:
    name: str
    hf_id: str  # repository id or local checkpoint directory: what the engine loads
    hf_config: dict[str, Any]
    precision: str = "bf16"
    matrix: tuple = ()
    engine_args: dict[str, tuple[str, ...]] = field(default_factory=dict)
    script: str | None = None
    facts: dict[str, Any] = field(default_factory=dict)
    source: str = "builtin"

    def extra_args(self, engine: str) -> list[str]:
        return list(self.engine_args.get(engine, ()))

    @property
    def slug(self) -> str:
        """A file-name-safe form of the name (used for tiny checkpoints, script names)."""
        return "".join(c.lower() if c.isalnum() else "-" for c in self.name).strip("-")


def _data_dir() -> Path:
    return Path(str(resources.files("moetrace.presets") / "data"))


def _from_mapping(d: dict[str, Any], *, base: Path, source: str) -> Preset:
    try:
        name = str(d["name"])
        hf_id = str(d["hf_id"])
    except KeyError as e:
        raise PresetError(f"model file {source}: missing key {e.args[0]!r} (need name and hf_id)") from None
    arch = d.get("arch")
    facts: dict[str, Any] = {}
    if arch is None:
        cfg_path = Path(hf_id).expanduser() / "config.json"
        if not cfg_path.is_file():
            raise PresetError(f"model file {source}: no 'arch' given and {cfg_path} does not exist")
        hf_config = _read_json(cfg_path)
    elif isinstance(arch, dict):
        hf_config = arch
    else:
        p = Path(arch)
        p = p if p.is_absolute() else base / p
        data = _read_json(p)
        hf_config = data.get("hf_config", data)
        facts = data.get("facts", {})
    matrix = tuple(_matrix_entry(e, source) for e in d.get("matrix", [[1, 1, ["auto"]]]))
    engine_args = {k: tuple(str(a) for a in v) for k, v in d.get("engine_args", {}).items()}
    return Preset(
        name=name,
        hf_id=hf_id,
        hf_config=hf_config,
        precision=str(d.get("precision", _guess_precision(hf_config))),
        matrix=matrix,
        engine_args=engine_args,
        script=d.get("script"),
        facts=facts,
        source=source,
    )


def _matrix_entry(e: Any, source: str) -> tuple:
    if isinstance(e, dict):
        return (e.get("tp"), e.get("ep", 1), e.get("backends", ["auto"]))
    if isinstance(e, (list, tuple)) and len(e) == 3:
        return (e[0], e[1], e[2])
    raise PresetError(f"model file {source}: matrix entry {e!r} is not [tp, ep, [backends]]")


def _read_json(p: Path) -> dict[str, Any]:
    try:
        return json.loads(p.read_text())
    except FileNotFoundError:
        raise PresetError(f"file not found: {p}") from None
    except json.JSONDecodeError as e:
        raise PresetError(f"{p} is not valid JSON: {e}") from None


def _guess_precision(cfg: dict[str, Any]) -> str:
    q = cfg.get("quantization_config") or {}
    if q.get("quant_method") == "fp8":
        return "fp8"
    if q.get("quant_method") == "compressed-tensors":
        return "int4"
    return str(cfg.get("torch_dtype", "bf16")).replace("bfloat16", "bf16").replace("float16", "fp16")


_BUILTIN: dict[str, Preset] | None = None


def _builtins() -> dict[str, Preset]:
    global _BUILTIN  # a read-only cache of package data, filled once
    if _BUILTIN is None:
        data = tomllib.loads((_data_dir() / "models.toml").read_text())
        presets = [_from_mapping(m, base=_data_dir(), source="builtin") for m in data["model"]]
        _BUILTIN = {p.name: p for p in presets}
    return _BUILTIN


def all_presets() -> list[Preset]:
    return list(_builtins().values())


def _norm(s: str) -> str:
    return "".join(c for c in s.lower() if c.isalnum())


def get_preset(name: str) -> Preset:
    """A preset by display name, HF id, slug or script name (case and punctuation ignored),
    or a user model file (.toml/.json), or a local checkpoint directory."""
    p = Path(name).expanduser()
    if p.suffix in (".toml", ".json") and p.is_file():
        return load_preset_file(p)
    if p.is_dir() and (p / "config.json").is_file():
        return preset_from_checkpoint(p)
    key = _norm(name)
    for pr in _builtins().values():
        names = {pr.name, pr.hf_id, pr.hf_id.split("/")[-1], pr.slug, (pr.script or "").removesuffix(".py"),
                 (pr.script or "").removesuffix(".py").removeprefix("trace_")}
        if key in {_norm(n) for n in names if n}:
            return pr
    known = ", ".join(_builtins())
    raise PresetError(f"unknown model {name!r}; known: {known} (or give a model .toml/.json file or a checkpoint directory)")


def load_preset_file(path: Path) -> Preset:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise PresetError(f"cannot read model file {path}: {e.strerror}") from None
    try:
        d = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as e:
        raise PresetError(f"model file {path} does not parse: {e}") from None
    if "model" in d and isinstance(d["model"], list):  # same layout as models.toml, first entry
        d = d["model"][0]
    return _from_mapping(d, base=path.parent, source=str(path))


def preset_from_checkpoint(path: Path) -> Preset:
    path = Path(path).resolve()
    cfg = _read_json(path / "config.json")
    meta = _read_json(path / "moetrace.json") if (path / "moetrace.json").is_file() else {}
    return Preset(
        name=meta.get("name", path.name),
        hf_id=str(path),
        hf_config=cfg,
        precision=meta.get("precision", _guess_precision(cfg)),
        matrix=tuple(_matrix_entry(e, str(path)) for e in meta.get("matrix", [[1, 1, ["auto"]]])),
        engine_args={k: tuple(v) for k, v in meta.get("engine_args", {}).items()},
        facts={**meta.get("facts", {}), **({"router": meta["router"]} if meta.get("router") else {})},
        source=str(path),
    )
