"""moetrace's imports form no cycle: every import statement counts, those inside functions too
(a lazy import only hides a cycle), and so do the package ``__init__``s an import runs and a
module that imports its package's modules by walking it (the engine registry). Imports under
``if TYPE_CHECKING:`` never run and do not count."""

from __future__ import annotations

import ast
import graphlib
from pathlib import Path

import moetrace

SRC = Path(moetrace.__file__).parent


def modules() -> dict[str, tuple[Path, bool]]:
    out = {}
    for p in SRC.rglob("*.py"):
        parts = list(p.relative_to(SRC.parent).with_suffix("").parts)
        is_pkg = parts[-1] == "__init__"
        out[".".join(parts[:-1] if is_pkg else parts)] = (p, is_pkg)
    return out


def import_graph() -> dict[str, set[str]]:
    """module -> the moetrace modules importing it runs (its own package __init__s aside)."""
    mods = modules()
    graph: dict[str, set[str]] = {}
    for mod, (path, is_pkg) in mods.items():
        text = path.read_text()
        tree = ast.parse(text)
        typing_only = {id(n) for node in ast.walk(tree)
                       if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
                       for b in node.body for n in ast.walk(b)}
        package = mod if is_pkg else mod.rpartition(".")[0]
        targets: set[str] = set()
        if "pkgutil.iter_modules" in text:
            targets |= {m for m in mods if m.rpartition(".")[0] == package}
        for node in ast.walk(tree):
            if id(node) in typing_only:
                continue
            if isinstance(node, ast.Import):
                targets |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    base = ".".join(up + ([node.module] if node.module else []))
                targets |= {base} | {f"{base}.{a.name}" for a in node.names}
        deps = set()
        for t in targets:
            while t not in mods and "." in t:
                t = t.rpartition(".")[0]
            while t in mods and t != mod and not mod.startswith(t + "."):
                deps.add(t)  # the module and the package __init__s above it
                t = t.rpartition(".")[0]
        graph[mod] = deps
    return graph


def test_no_import_cycle():
    graph = import_graph()
    try:
        order = list(graphlib.TopologicalSorter(graph).static_order())
    except graphlib.CycleError as e:
        raise AssertionError(f"import cycle: {' -> '.join(e.args[1])}") from None
    assert len(graph) > 50 and "moetrace.engines.sglang" in graph["moetrace.engines.registry"]  # walked
    assert order.index("moetrace.engines.sglang") < order.index("moetrace.traces.names")


def test_adapters_import_nothing_of_traces():
    graph = import_graph()
    for adapter in ("moetrace.engines.sglang", "moetrace.engines.vllm", "moetrace.engines.base"):
        assert not {m for m in graph[adapter] if m.startswith("moetrace.traces")}, adapter


def test_adapters_import_nothing_of_results():
    """The classifier asks the registry for the adapters' log rules: the adapters stay below it."""
    graph = import_graph()
    for adapter in ("moetrace.engines.sglang", "moetrace.engines.vllm", "moetrace.engines.base"):
        assert not {m for m in graph[adapter] if m.startswith("moetrace.results")}, adapter
