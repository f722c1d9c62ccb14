"""Shared fixtures. Engine fixtures (a real vLLM CPU server) live in tests/engine_fixtures.py."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data"


@pytest.fixture
def store(tmp_path):
    from moetrace.results.store import ResultsStore
    warnings: list[str] = []
    s = ResultsStore(tmp_path / "results", warn=warnings.append)
    s.warnings = warnings  # type: ignore[attr-defined]
    return s


def pytest_report_header(config):
    return [f"python: {sys.executable}"]


# ----------------------------------------------------------------------------- the real engine
import os
import subprocess
from dataclasses import dataclass

ENGINE_ARGS = ["--engine-arg=--gpu-memory-utilization=0.15", "--max-model-len", "8192"]
SWEEP_MODELS = ["Qwen3-235B", "DeepSeek-V3.1"]


def engine_python() -> str | None:
    """The vLLM CPU engine's interpreter (scripts/setup.sh --engine builds .venv-engine)."""
    p = os.environ.get("MOETRACE_ENGINE_PYTHON") or str(ROOT / ".venv-engine" / "bin" / "python")
    return p if Path(p).exists() else None


def require_engine() -> str:
    p = engine_python()
    if p is None:
        msg = "the vLLM CPU engine is not installed (run scripts/setup.sh --engine)"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    return p


def engine_processes(marker: str | Path) -> list:
    """Live engine processes (vLLM servers and their workers) started for ``marker`` (a
    checkpoint directory in their command line). moetrace's own processes are not engines."""
    import psutil
    found = {}
    for p in psutil.process_iter(["cmdline"]):
        try:
            cmd = " ".join(p.info["cmdline"] or [])
            if str(marker) in cmd and "vllm" in cmd and "moetrace" not in Path((p.info["cmdline"] or [""])[0]).name:
                found[p.pid] = p
                for c in p.children(recursive=True):
                    found[c.pid] = c
        except psutil.Error:
            continue
    return [p for p in found.values() if _alive(p)]


def _alive(p) -> bool:
    import psutil
    try:
        return p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def moetrace(*args: str, check: bool = False, timeout: float = 1200, env: dict | None = None,
             cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run the real moetrace CLI as a user would."""
    exe = str(Path(sys.executable).with_name("moetrace"))
    cmd = [exe, *args] if Path(exe).exists() else [sys.executable, "-m", "moetrace.cli", *args]
    full_env = dict(os.environ, **(env or {}))
    if engine_python():
        full_env.setdefault("MOETRACE_ENGINE_PYTHON", engine_python())
    cp = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=full_env, cwd=cwd)
    if check and cp.returncode != 0:
        raise AssertionError(f"moetrace {' '.join(args)} exited {cp.returncode}\n{cp.stdout}\n{cp.stderr}")
    return cp


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory) -> Path:
    """Tiny checkpoints, generated once per test session by `moetrace tiny`."""
    d = tmp_path_factory.mktemp("tiny")
    return d


@dataclass
class SweepRun:
    results: Path
    tiny_dir: Path
    outputs: list[subprocess.CompletedProcess]

    @property
    def stdout(self) -> str:
        return "\n".join(o.stdout for o in self.outputs)


@pytest.fixture(scope="session")
def cpu_sweep(tmp_path_factory, tiny_dir) -> SweepRun:
    """One real sweep on the vLLM CPU engine, shared by every test that needs results.

    In order, into one results directory:
    1. DeepSeek-V3.1-tiny TP1_auto with too much memory asked for: a real startup OOM
       (later removed from failures by the sweep's success of the same key);
    2. the sweep of the tiny Qwen3-235B and DeepSeek-V3.1 matrices (TP1 auto and triton,
       TP2 auto): successes with extend and decode traces, and triton rejected on CPU
       (UnsupportedConfig); with --expert-load, which vLLM's CPU build cannot serve (the record says so);
    3. Qwen3-235B-tiny through a per-model script whose CONFIGS has a fallback,
       (None, "triton", None, "auto"): the primary TP1_triton fails (UnsupportedConfig), so
       the fallback TP1_auto runs (and succeeds); both attempts recorded;
    4. Qwen3-235B-tiny TP1_auto again with too much memory asked for: a real OOM after that
       key's success, which must not overwrite it.
    """
    require_engine()
    results = tmp_path_factory.mktemp("cpu_sweep") / "results"
    common = ["--results", str(results), "--tiny", "--tiny-dir", str(tiny_dir)]
    oom = ["--engine-arg=--gpu-memory-utilization=0.95", "--max-model-len", "8192", "--no-profile"]
    outs = [
        moetrace("run", "DeepSeek-V3.1", "-c", "TP1_auto", *common, *oom),
        moetrace("sweep", *SWEEP_MODELS, *common, *ENGINE_ARGS, "--profile-steps", "3", "--show", "breakdown",
                 "--expert-load"),
        run_script("Qwen3-235B", [(1, 1, [(None, "triton", None, "auto")])], *common, *ENGINE_ARGS,
                   "--profile-steps", "3"),
        moetrace("run", "Qwen3-235B", "-c", "TP1_auto", *common, *oom),
    ]
    return SweepRun(results, tiny_dir, outs)


def run_script(model: str, configs: list, *args: str, timeout: float = 1200) -> subprocess.CompletedProcess:
    """A per-model script as the spec's users write them (a CONFIGS list), run as `python3 script`."""
    import tempfile
    d = Path(tempfile.mkdtemp())
    script = d / "trace_custom.py"
    script.write_text(f"import sys\nsys.path.insert(0, {str(ROOT / 'src')!r})\n"
                      "from moetrace.cli import script_main\n"
                      f"CONFIGS = {configs!r}\n"
                      f"script_main({model!r}, CONFIGS)\n")
    env = dict(os.environ)
    if engine_python():
        env.setdefault("MOETRACE_ENGINE_PYTHON", engine_python())
    return subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True, timeout=timeout,
                          env=env)
