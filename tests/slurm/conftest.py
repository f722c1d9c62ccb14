"""Fixtures of the Slurm executor's tests: a one-node Slurm cluster (scripts/slurm-local.sh),
the driver command, an environment with SGLang's argument parser, and small helpers.

With $CI set, a cluster or parser that cannot be had FAILS the tests instead of skipping them.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import pytest

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
SLURM_LOCAL = ROOT / "scripts" / "slurm-local.sh"
SLURM_DIR = os.environ.get("MOETRACE_SLURM_DIR", "/var/lib/moetrace-slurm")


def engine_python() -> str | None:
    """The vLLM CPU engine's interpreter (as the Makefile and tests/conftest.py find it)."""
    for p in (os.environ.get("MOETRACE_VLLM_PYTHON"), os.environ.get("MOETRACE_ENGINE_PYTHON"),
              str(ROOT / ".venv-engine" / "bin" / "python")):
        if p and Path(p).exists():
            return p
    return None


def unavailable(msg: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(msg)
    pytest.skip(msg)


def _status() -> bool:
    return subprocess.run(["bash", str(SLURM_LOCAL), "status"], capture_output=True, timeout=60).returncode == 0


@pytest.fixture(scope="session")
def slurm_cluster():
    """The local one-node cluster, started if it is not up (and stopped again at the end then)."""
    try:
        import submitit  # noqa: F401
    except ImportError:
        unavailable("submitit is not installed (pip install -e '.[slurm]')")
    os.environ["SLURM_CONF"] = f"{SLURM_DIR}/slurm.conf"
    started = False
    if not _status():
        if not shutil.which("slurmctld") and not Path("/usr/sbin/slurmctld").exists():
            unavailable("Slurm is not installed (scripts/setup-system.d/slurm.sh installs it)")
        if os.geteuid() != 0:
            unavailable("starting the local Slurm cluster needs root")
        cp = subprocess.run(["bash", str(SLURM_LOCAL), "start"], capture_output=True, text=True, timeout=180)
        if cp.returncode != 0 or not _status():
            unavailable(f"could not start the local Slurm cluster:\n{cp.stdout}\n{cp.stderr}")
        started = True
    yield {"partition": "debug"}
    if started:
        subprocess.run(["bash", str(SLURM_LOCAL), "stop"], capture_output=True, timeout=120)


def squeue_active(ids) -> dict[str, str]:
    """Jobs among ``ids`` that squeue lists as queued or running (its default view)."""
    ids = [str(i) for i in ids]
    if not ids:
        return {}
    cp = subprocess.run(["squeue", "--noheader", "--jobs", ",".join(ids), "--format", "%i|%T"],
                        capture_output=True, text=True, timeout=60)
    out = {}
    for line in cp.stdout.splitlines():
        i, _, st = line.strip().partition("|")
        if i in ids:
            out[i] = st
    return out


def job_state(jid: str) -> str:
    cp = subprocess.run(["squeue", "--noheader", "--states=all", "--jobs", str(jid), "--format", "%T"],
                        capture_output=True, text=True, timeout=60)
    return cp.stdout.strip()


def wait_until(cond: Callable[[], object], timeout: float, what: str, every: float = 1.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def registry(results: Path) -> dict[str, dict]:
    p = results / "slurm" / "jobs.json"
    return json.loads(p.read_text())["jobs"] if p.exists() else {}


def cli_has_executor() -> bool:
    exe = Path(sys.executable).with_name("moetrace")
    if not exe.exists():
        return False
    cp = subprocess.run([str(exe), "sweep", "--help"], capture_output=True, text=True, timeout=120)
    return "--executor" in cp.stdout


@pytest.fixture(scope="session")
def driver() -> list[str]:
    """How the tests start a sweep driver: `moetrace sweep` once cli.py has the executor options,
    until then tests/slurm/driver.py (the same calls as cli._execute, plus the executor)."""
    if cli_has_executor():
        return [str(Path(sys.executable).with_name("moetrace")), "sweep"]
    return [sys.executable, str(HERE / "driver.py")]


class Driver:
    """A driver process whose output goes to a file (so that it can be killed and read)."""

    def __init__(self, cmd: list[str], log: Path, env: dict | None = None):
        self.log = log
        self.f = open(log, "w")
        full = dict(os.environ, **(env or {}))
        if engine_python():
            full.setdefault("MOETRACE_ENGINE_PYTHON", engine_python())
        self.p = subprocess.Popen(cmd, stdout=self.f, stderr=subprocess.STDOUT, env=full, cwd=ROOT,
                                  start_new_session=True)

    def text(self) -> str:
        self.f.flush()
        return self.log.read_text()

    def wait(self, timeout: float) -> int:
        try:
            return self.p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"driver did not finish in {timeout:.0f} s:\n{self.text()[-4000:]}") from None

    def signal(self, sig: int) -> None:
        self.p.send_signal(sig)

    def kill(self) -> None:
        if self.p.poll() is None:
            self.p.kill()
            self.p.wait(30)

    def close(self) -> None:
        self.kill()
        self.f.close()


@pytest.fixture
def start_driver(tmp_path, driver):
    started: list[Driver] = []
    n = {"i": 0}

    def start(*args: str, env: dict | None = None) -> Driver:
        n["i"] += 1
        d = Driver([*driver, *args], tmp_path / f"driver{n['i']}.log", env)
        started.append(d)
        return d

    yield start
    for d in started:
        d.close()


def cancel_all(results: Path) -> None:
    """Leave no job of a test behind."""
    ids = list(registry(results))
    if ids:
        subprocess.run(["scancel", *ids], capture_output=True, timeout=60)


# ----------------------------------------------------------------------------- engines' parsers

SGLANG_HELPER = ROOT / "tests" / "engines" / "sglang_parse.py"


def sglang_parse(argvs: list[list[str]]) -> list[dict]:
    """SGLang 0.5.23's own parser over these argvs (what follows ``-m sglang.launch_server``),
    through tests/engines/sglang_parse.py in .venv-sglang (scripts/setup-sglang-parser.sh)."""
    py = Path(os.environ.get("MOETRACE_SGLANG_PYTHON") or ROOT / ".venv-sglang" / "bin" / "python")
    if not py.exists():
        unavailable("SGLang's parser is not installed: run scripts/setup-sglang-parser.sh (builds .venv-sglang)")
    cp = subprocess.run([str(py), str(SGLANG_HELPER)], input=json.dumps({"argvs": argvs}), capture_output=True,
                        text=True, timeout=600)
    assert cp.returncode == 0, cp.stderr[-3000:]
    return json.loads(cp.stdout)["results"]


VLLM_PARSE = r"""
import json, sys
from vllm.entrypoints.launchers.cli_args import make_arg_parser
from vllm.utils.argparse_utils import FlexibleArgumentParser
out = []
for argv in json.load(sys.stdin)["argvs"]:
    try:
        ns = make_arg_parser(FlexibleArgumentParser()).parse_args(argv)
        out.append({"exit_code": 0, "args": {k: v for k, v in vars(ns).items()
                                             if isinstance(v, (str, int, float, bool, type(None)))}})
    except SystemExit as e:
        out.append({"exit_code": e.code, "args": None})
print("@@" + json.dumps(out))
"""


def vllm_parse(argvs: list[list[str]]) -> list[dict]:
    """vLLM's own parser (``vllm serve`` and the OpenAI server module use the same
    ``make_arg_parser``) over these argvs, in the engine's environment."""
    py = engine_python()
    if py is None:
        unavailable("the vLLM CPU engine is not installed (scripts/setup.sh --engine)")
    cp = subprocess.run([py, "-c", VLLM_PARSE], input=json.dumps({"argvs": argvs}), capture_output=True,
                        text=True, timeout=600)
    assert cp.returncode == 0, cp.stderr[-3000:]
    return json.loads(cp.stdout.split("@@", 1)[1])
