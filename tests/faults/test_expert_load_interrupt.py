"""Ctrl-C during --expert-load's second launch (the one with the recorder on, attempt.launch.launch_options):
that launch is stopped, the measured numbers are committed with an expert_load that says it was
interrupted, and the interrupt goes on to the sweep.

The engine is a stand-in for vLLM, a real process and a real HTTP server, launched twice by the
runner: it answers readiness and replays a recorded vLLM CPU stream
(tests/data/streams/vllm_cpu_completions_bs1.sse, 8 tokens). The adapter claims a recorder whose
capture is where the interrupt comes."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pytest

from moetrace.attempt import run as runner
from moetrace.engines.vllm import VLLM
from moetrace.matrix import Config
from moetrace.presets import get_preset
from moetrace.results.store import ResultsStore
from moetrace.attempt import Progress, RunOptions, run_config
from tests.conftest import DATA

STAND_IN = """#!{python}
import sys, time
from http.server import BaseHTTPRequestHandler, HTTPServer
if sys.argv[1] == "-c":          # moetrace asking the engine's Python for its version
    sys.exit(0)
port = int(sys.argv[sys.argv.index("--port") + 1])
STREAM = open({stream!r}, "rb").read()
class H(BaseHTTPRequestHandler):
    def log_message(self, *a):
        pass
    def _send(self, body, kind="application/json"):
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def do_GET(self):
        self._send(b"{{}}")
    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.path != "/v1/completions":
            return self._send(b"{{}}")
        self.send_response(200)  # the recorded events 20 ms apart, as generated (one burst is no measurement)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Content-Length", str(len(STREAM)))
        self.end_headers()
        for event in STREAM.split(b"\\n\\n"):
            if event:
                self.wfile.write(event + b"\\n\\n")
                self.wfile.flush()
                time.sleep(0.02)
print("stand-in ready", file=sys.stderr, flush=True)
HTTPServer(("127.0.0.1", port), H).serve_forever()
"""


class InterruptedRecorder(VLLM):
    expert_load_source = "a stand-in recorder"

    def expert_load_unavailable(self, device):
        return None  # a recorder on this CPU machine too

    def capture_expert_load(self, http, base_url, out_dir, run):
        raise KeyboardInterrupt


def test_ctrl_c_in_the_recorder_launch_keeps_the_measured_numbers(tmp_path, monkeypatch):
    fake = tmp_path / "vllm-python"
    fake.write_text(STAND_IN.format(python=sys.executable,
                                    stream=str(DATA / "streams" / "vllm_cpu_completions_bs1.sse")))
    fake.chmod(0o755)
    monkeypatch.setattr(runner, "get_engine", lambda name: InterruptedRecorder())
    store = ResultsStore(tmp_path / "results", warn=lambda m: None)
    opts = RunOptions(engine="vllm", device="cpu", engine_python=str(fake), input_len=8, output_len=8,
                      profile=False, expert_load=True, launch_timeout_s=30, request_timeout_s=30, grace_s=2)
    with pytest.raises(KeyboardInterrupt):
        run_config(get_preset("Qwen3-235B"), Config(1), opts, store, progress=Progress(stream=io.StringIO()))
    (rec,) = store.records()
    assert rec["status"] == "success" and rec["metrics"]["output_tokens"] == 8
    el = rec["expert_load"]
    assert el["error"].startswith("Interrupted: ") and el["exception"] == "KeyboardInterrupt", el
    assert el["recorder_in_measured_launch"] is False
    assert el["launch"]["stop"]["survivors"] == [] and el["launch"]["command"] != rec["engine"]["command"]
    assert Path(store.root / el["launch"]["log_path"]).read_text().endswith("stand-in ready\n")
    assert not list((store.root / "running").iterdir())
