"""A server that dies during the warm-up request is classified from its log, like one that
dies while measured (it was recorded as a BenchmarkFailure "connection broke after 0 tokens").

The server is a stand-in for SGLang, a real process and a real HTTP server: it answers
readiness and /server_info, and on the first /generate writes the log lines of SGLang's
documented out-of-memory failure (tests/data/sglang_doc_logs/torch_oom.log, written from
../shared/docs/engines.md) and is killed, as a scheduler's CUDA OOM ends a real SGLang."""

from __future__ import annotations

import sys
from pathlib import Path

from moetrace.matrix import Config
from moetrace.presets import get_preset
from moetrace.results.store import ResultsStore
from moetrace.attempt import Progress, RunOptions, run_config

LOG = Path(__file__).resolve().parents[1] / "data" / "sglang_doc_logs" / "torch_oom.log"

STAND_IN = """#!{python}
import json, os, signal, sys
from http.server import BaseHTTPRequestHandler, HTTPServer
if sys.argv[1] == "-c":          # moetrace asking the engine's Python for its version
    sys.exit(0)
port = int(sys.argv[sys.argv.index("--port") + 1])
class H(BaseHTTPRequestHandler):
    def log_message(self, *a):
        pass
    def _json(self, obj):
        body = json.dumps(obj).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def do_GET(self):
        self._json({{"version": "0.5.17"}} if self.path == "/server_info" else {{}})
    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.path == "/flush_cache":
            return self._json({{}})
        sys.stderr.write(open({log!r}).read())
        sys.stderr.flush()
        os.kill(os.getpid(), signal.SIGKILL)
print("[2025-11-27 23:49:00] The server is fired up and ready to roll!", file=sys.stderr, flush=True)
HTTPServer(("127.0.0.1", port), H).serve_forever()
"""


def test_server_dying_in_the_warmup_is_classified_from_its_log(tmp_path):
    fake = tmp_path / "sglang-python"
    fake.write_text(STAND_IN.format(python=sys.executable, log=str(LOG)))
    fake.chmod(0o755)
    store = ResultsStore(tmp_path / "results", warn=lambda m: None)
    opts = RunOptions(engine="sglang", device="cuda", engine_python=str(fake), launch_timeout_s=30,
                      request_timeout_s=30, profile=False, grace_s=2)
    (rec,) = run_config(get_preset("Qwen3-235B"), Config(1), opts, store, progress=Progress(every_s=60))
    err = rec["error"]
    assert rec["status"] == "failure" and err["phase"] == "warmup", err
    assert err["type"] == "OOM", err
    assert "torch.OutOfMemoryError: CUDA out of memory" in err["message"]
    assert err["exit_code"] == -9 and err["log_path"]
