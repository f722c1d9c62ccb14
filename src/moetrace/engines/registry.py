"""The engine registry: every adapter module of this package, found by walking it.

The adapters (``engines/<engine>.py``) import ``base`` and register themselves there
(``@register``); this module imports them all on first use, so nothing below it (``base``, the
adapters, ``profiler``) imports it, and the import graph has no cycle. What the rest of moetrace
knows about the engines (the CLI's choices and defaults, the planner's memory model, multi-node
flags, trace-file names) it asks here.
"""

from __future__ import annotations

import importlib
import pkgutil

from . import base
from .base import Engine

__all__ = ["engine_classes", "engine_names", "default_engine", "get_engine"]

_NOT_ADAPTERS = {"base", "process", "profiler", "registry"}


def engine_classes() -> dict[str, type[Engine]]:
    """Every engine, by name: the modules of this package that are not infrastructure are
    imported once, and each registers its adapter (``@register``)."""
    if not _loaded:
        package = importlib.import_module(__name__.rpartition(".")[0])
        for m in pkgutil.iter_modules(package.__path__):
            if m.name not in _NOT_ADAPTERS and not m.name.startswith("_"):
                importlib.import_module(f"{package.__name__}.{m.name}")
        _loaded.append(True)
    return dict(sorted(base.ENGINES.items()))


_loaded: list[bool] = []


def engine_names() -> list[str]:
    return list(engine_classes())


def default_engine(device: str) -> str:
    """The engine ``--engine`` defaults to on a device ("cuda" or "cpu")."""
    for name, cls in engine_classes().items():
        if device in cls.default_for:
            return name
    return engine_names()[0]


def get_engine(name: str) -> Engine:
    engine_classes()
    try:
        return base.ENGINES[name]()
    except KeyError:
        raise ValueError(f"unknown engine {name!r}; known: {', '.join(sorted(base.ENGINES))}") from None
