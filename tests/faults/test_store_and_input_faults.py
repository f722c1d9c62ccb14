"""Faults of the disk and of hostile input: a full disk, names that try to leave the results
directory or run something, servers binding beyond loopback, and gzip bombs."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from moetrace.engines.base import LaunchSpec
from moetrace.engines.process import ServerProcess
from moetrace.engines.sglang import SGLang
from moetrace.engines.vllm import VLLM
from moetrace.errors import StoreError
from moetrace.matrix import Config
from moetrace.presets import get_preset
from moetrace.results.store import ResultsStore
from moetrace.traces.capture import file_traces

from tests.conftest import moetrace


@pytest.fixture
def small_disk(tmp_path):
    """A 256 KiB tmpfs: a disk that fills up (needs root, as in CI)."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    cp = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mnt)], capture_output=True, text=True)
    if cp.returncode != 0:
        if os.environ.get("CI"):
            pytest.fail(f"cannot mount a tmpfs in CI: {cp.stderr.strip()}")
        pytest.skip(f"cannot mount a tmpfs here: {cp.stderr.strip()}")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_disk_full_is_a_clear_error_and_previous_files_are_intact(small_disk):
    st = ResultsStore(small_disk / "r", warn=lambda m: None)
    pad = "x" * 8000
    committed = 0
    with pytest.raises(StoreError) as e:
        for i in range(1000):
            st.commit({"model": "M", "config": f"TP{i % 4 + 1}_auto", "key": f"M::TP{i % 4 + 1}_auto",
                       "status": "failure", "error": {"type": "OOM", "message": "m"}, "pad": pad})
            committed += 1
    assert "No space left on device" in str(e.value) and "previous file is intact" in str(e.value)
    assert committed > 3
    failures = json.loads(st.failure_path.read_text())  # still parses
    assert set(failures) <= {f"M::TP{k}_auto" for k in range(1, 5)}
    for rec in (small_disk / "r" / "records").glob("*.json"):
        json.loads(rec.read_text())
    assert not list((small_disk / "r").glob(".*.tmp")) and not list((small_disk / "r" / "records").glob(".*.tmp"))


HOSTILE = ["../../../../tmp/escape", "a/b", "x; touch /tmp/moetrace-pwned", "$(touch /tmp/moetrace-pwned)", "..", " sp ace "]


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_names_stay_inside_the_results_directory(tmp_path, name):
    st = ResultsStore(tmp_path / "r", warn=lambda m: None)
    d = st.attempt_dir(f"20260101T000000-{name}-{name}")
    assert d.resolve().is_relative_to((tmp_path / "r" / "attempts").resolve())
    rec = st.commit({"model": name, "config": name, "key": f"{name}::{name}", "status": "failure",
                     "error": {"type": "Unknown", "message": name}})
    assert (st.root / rec["record_path"]).resolve().is_relative_to(st.root.resolve())
    src = tmp_path / "t.trace.json.gz"
    src.write_bytes(gzip.compress(b"{}"))
    (out,) = file_traces([src], d / "traces", model=name, config=name, stage="decode")
    assert out.resolve().is_relative_to(d.resolve())
    assert not Path("/tmp/moetrace-pwned").exists()


def test_commands_are_argument_lists_never_shell_strings(tmp_path):
    marker = tmp_path / "pwned"
    arg = f"$(touch {marker}); touch {marker}"
    sp = ServerProcess([sys.executable, "-c", "import sys; print(sys.argv[1])", arg], log_path=tmp_path / "log")
    with sp:
        sp.proc.wait(10)
    assert not marker.exists()
    assert arg in (tmp_path / "log").read_text()


def test_hostile_model_name_in_a_user_file_is_inert_in_the_engine_command(tmp_path):
    f = tmp_path / "m.toml"
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({"architectures": ["X"], "vocab_size": 10}))
    f.write_text(f'name = "evil; rm -rf ~"\nhf_id = "$(touch {tmp_path}/pwned)"\narch = "c.json"\n')
    p = get_preset(str(f))
    for eng in (SGLang(), VLLM()):
        cmd = eng.command(LaunchSpec(preset=p, config=Config(1), model_path=p.hf_id, port=1, python="py"))
        assert p.hf_id in cmd  # one argument, passed as is, to a process started without a shell


def test_servers_bind_loopback_unless_told(tmp_path):
    p = get_preset("GLM-4.6")
    for eng in (SGLang(), VLLM()):
        cmd = eng.command(LaunchSpec(preset=p, config=Config(8, 2), model_path=p.hf_id, port=30000))
        assert cmd[cmd.index("--host") + 1] == "127.0.0.1"
    cp = moetrace("run", "GLM-4.6", "--dry-run", "--engine", "sglang", "--host", "0.0.0.0", "-r", str(tmp_path))
    assert "--host 0.0.0.0" in cp.stdout


def test_gzip_bomb_trace_is_refused_with_a_clear_error(tmp_path):
    bomb = tmp_path / "bomb.trace.json.gz"
    with gzip.open(bomb, "wb", compresslevel=9) as g:
        g.write(b'{"traceEvents": [')
        chunk = b" " * (1 << 20)
        for _ in range(64):  # 64 MiB of blanks in a ~64 KiB file
            g.write(chunk)
    assert bomb.stat().st_size < 1 << 20
    cp = moetrace("analyze", str(bomb), "--max-gib", "0.01")
    assert cp.returncode == 2 and "bomb.trace.json.gz" in cp.stderr and "Traceback" not in cp.stderr
